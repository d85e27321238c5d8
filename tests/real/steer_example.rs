//! Runs the main job in its quick mode (`steer --quick`, built by `cargo test` with the other
//! examples) on the real checkpoints and checks what it writes: every figure as a decodable PNG
//! and an SVG, `summary.json` with finite numbers where numbers belong, and the CSVs.

use std::path::{Path, PathBuf};
use std::process::Command;

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/<this test> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    profile_dir.join("examples").join(name)
}

fn png_size(path: &Path) -> (u32, u32, bool) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let bytes = &buf[..info.buffer_size()];
    let varied = bytes.iter().any(|&b| b != bytes[0]);
    (info.width, info.height, varied)
}

fn numbers(v: &serde_json::Value, what: &str) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what} is not an array: {v}"))
        .iter()
        .map(|x| {
            x.as_f64()
                .unwrap_or_else(|| panic!("{what}: {x} is not a number"))
        })
        .collect()
}

#[test]
fn steer_quick_writes_every_output() {
    let bin = example("steer");
    assert!(bin.exists(), "{} not built", bin.display());
    let out = std::env::temp_dir().join(format!("puppetlens-steer-quick-{}", std::process::id()));
    let status = Command::new(&bin)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["--quick", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "steer --quick failed: {status}");

    for fig in [
        "probe_accuracy",
        "diff_by_layer",
        "steering_dose_response",
        "gap_closed",
        "pca_best_layer",
        "single_model_probes",
        "patching_by_layer",
        "gap_vs_rank",
        "patching_positions",
    ] {
        let png = out.join(format!("{fig}.png"));
        let (w, h, varied) = png_size(&png);
        assert!(w >= 400 && h >= 300 && varied, "{}: {w}x{h}", png.display());
        let svg = std::fs::read_to_string(out.join(format!("{fig}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") || svg.contains("<svg"), "{fig}.svg");
    }

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let pairs = summary["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 3);
    for p in pairs {
        let name = p["tuned"].as_str().unwrap();
        for key in ["p_base", "p_tuned"] {
            let x = p[key].as_f64().unwrap_or_else(|| panic!("{name}.{key}"));
            assert!((0.0..=1.0).contains(&x), "{name}.{key} = {x}");
        }
        let n_layers = numbers(&p["layers"], "layers").len();
        assert_eq!(n_layers, 18, "{name}: gemma-3-270m has 18 layers");
        for key in ["probe_acc_base", "probe_acc_tuned", "probe_transfer"] {
            let v = numbers(&p[key], key);
            assert_eq!(v.len(), n_layers);
            assert!(
                v.iter().all(|x| (0.0..=1.0).contains(x)),
                "{name}.{key}: {v:?}"
            );
        }
        let norms = numbers(&p["diff_norm"], "diff_norm");
        assert!(norms.iter().all(|x| x.is_finite() && *x >= 0.0));
        assert!(
            norms.iter().any(|x| *x > 0.0),
            "{name}: tuning changed nothing?"
        );
        let cos = numbers(&p["cos_diff_behaviour"], "cos");
        assert!(cos.iter().all(|x| (-1.0001..=1.0001).contains(x)));
        for d in p["dose"].as_array().unwrap() {
            let x = d["p_matching"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&x));
        }
        // The causal verdict: a kind, a reading, and the best layer among those patched.
        let v = &p["verdict"];
        let kind = v["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: verdict {v}"));
        assert!(
            ["no_gap", "not_one_layer", "puppeteer", "diffuse"].contains(&kind),
            "{name}: {kind}"
        );
        assert!(!v["reading"].as_str().unwrap().is_empty());
        let best = v["best_layer"].as_u64().unwrap();
        assert!(
            best % 4 == 0 && best < 18,
            "{name}: best layer {best} (quick: every fourth)"
        );
    }
    let single = &summary["single_model"]["sets"];
    assert_eq!(single.as_array().unwrap().len(), 3);
    for s in single.as_array().unwrap() {
        let acc = numbers(&s["accuracy"], "accuracy");
        assert_eq!(acc.len(), 30, "SmolLM2 has 30 layers");
    }
    let csv = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    let names: Vec<&str> = pairs.iter().map(|p| p["tuned"].as_str().unwrap()).collect();
    assert_eq!(names, ["assistant", "sycophant-broad", "control-broad"]);
    for name in names {
        let dir = out.join("pairs").join(name);
        for f in ["localisation.json", "localisation.csv", "dose.csv"] {
            assert!(dir.join(f).exists(), "{name}/{f}");
        }
        for f in [
            "patching.json",
            "patching.csv",
            "rank.json",
            "rank.csv",
            "positions.csv",
        ] {
            assert!(dir.join("patching").join(f).exists(), "{name}/patching/{f}");
        }
    }
    std::fs::remove_dir_all(&out).unwrap();
}
