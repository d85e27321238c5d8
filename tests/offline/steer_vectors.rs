//! SteeringVector: construction methods on planted data, arithmetic, save/load and llama.cpp
//! control-vector GGUF round trips, bad input.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use puppetlens::extract::Activations;
use puppetlens::steer::cosine;
use puppetlens::{Error, HookPoint, SteeringVector};

const D: usize = 16;

/// Paired activations with a planted direction `u` separating positives from negatives, plus noise
/// that is larger than the signal in one other direction (so PCA of raw activations would fail).
fn planted(n: usize, layers: usize, seed: u64) -> (Activations, Activations, Tensor) {
    let dev = Device::Cpu;
    let mut u = vec![0f32; D];
    u[3] = 1.0;
    u[7] = 1.0;
    let u = Tensor::new(u.as_slice(), &dev).unwrap();
    let u = (&u / 2f64.sqrt()).unwrap();
    let mut pos = BTreeMap::new();
    let mut neg = BTreeMap::new();
    for l in 0..layers {
        // Deterministic pseudo-noise per (seed, layer).
        let noise = |k: u64| {
            let v: Vec<f32> = (0..n * D)
                .map(|i| {
                    let x = ((i as u64 + 1) * 2654435761 + k * 97 + seed * 131 + l as u64 * 7919)
                        % 10007;
                    x as f32 / 10007.0 - 0.5
                })
                .collect();
            Tensor::from_vec(v, (n, D), &dev).unwrap()
        };
        let shared = (noise(1) * 4.0).unwrap(); // large, shared by both members of a pair
        let strength = (l + 1) as f64;
        let p = (&shared
            + (noise(2) * 0.2)
                .unwrap()
                .broadcast_add(&(&u * strength).unwrap())
                .unwrap())
        .unwrap();
        let q = (&shared + (noise(3) * 0.2).unwrap()).unwrap();
        pos.insert(HookPoint::ResidPost(l), p);
        neg.insert(HookPoint::ResidPost(l), q);
    }
    (Activations::from_map(pos), Activations::from_map(neg), u)
}

#[test]
fn methods_recover_a_planted_direction_with_the_behaviour_sign() {
    let (pos, neg, u) = planted(64, 3, 1);
    for v in [
        SteeringVector::mean_diff(&pos, &neg, 3).unwrap(),
        SteeringVector::pca_diff(&pos, &neg, 3).unwrap(),
        SteeringVector::pca_center(&pos, &neg, 3).unwrap(),
    ] {
        for l in 0..3 {
            let c = cosine(v.get(l).unwrap(), &u).unwrap();
            // The planted shift is (l+1) against pair noise of std ~0.08: recovery is near exact.
            assert!(c > 0.95, "{} layer {l}: cosine {c}", v.method);
        }
        let norms = v.norms().unwrap();
        assert!(
            norms[&0] < norms[&2],
            "{}: norm grows with the planted strength",
            v.method
        );
    }
}

#[test]
fn arithmetic_is_layerwise() {
    let (pos, neg, _) = planted(8, 2, 2);
    let v = SteeringVector::mean_diff(&pos, &neg, 2).unwrap();
    let twice = &v * 2.0;
    let back = (&twice - &v).unwrap();
    let zero = (&back - &v).unwrap();
    for l in 0..2 {
        let z: Vec<f32> = zero.get(l).unwrap().to_vec1().unwrap();
        assert!(z.iter().all(|x| x.abs() < 1e-5));
    }
    let neg_v = -&v;
    let sum = (&neg_v + &v).unwrap();
    assert!(sum.norms().unwrap().values().all(|n| *n < 1e-5));
    assert_eq!(
        (0.5f32 * &v).norms().unwrap()[&1],
        v.norms().unwrap()[&1] * 0.5
    );
    // A layer on one side only counts as zero on the other.
    let only1 = v.only(&[1]).unwrap();
    let mixed = (&v - &only1).unwrap();
    assert!(mixed.norms().unwrap()[&1] < 1e-6);
    assert!((mixed.norms().unwrap()[&0] - v.norms().unwrap()[&0]).abs() < 1e-6);
    // Widths must match.
    let mut d = BTreeMap::new();
    d.insert(
        0,
        Tensor::zeros(D + 1, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let wide = SteeringVector::new(d, "wide").unwrap();
    assert!(matches!(&v + &wide, Err(Error::Shape { .. })));
}

#[test]
fn save_load_and_control_vector_gguf_round_trip() {
    let (pos, neg, _) = planted(8, 4, 3);
    let v = SteeringVector::mean_diff(&pos, &neg, 4)
        .unwrap()
        .with_meta("dataset", "planted");
    let dir = std::env::temp_dir().join(format!("puppetlens-steer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let st = dir.join("v.safetensors");
    v.save(&st).unwrap();
    let back = SteeringVector::load(&st).unwrap();
    assert_eq!(back.method, "mean_diff");
    assert_eq!(
        back.meta.get("dataset").map(String::as_str),
        Some("planted")
    );
    for l in 0..4 {
        assert_eq!(
            back.get(l).unwrap().to_vec1::<f32>().unwrap(),
            v.get(l).unwrap().to_vec1::<f32>().unwrap()
        );
    }
    // llama.cpp cannot steer block 0.
    let gg = dir.join("v.gguf");
    assert!(matches!(
        v.to_control_vector_gguf(&gg, "llama"),
        Err(Error::InvalidArgument { .. })
    ));
    let v13 = v.only(&[1, 2, 3]).unwrap();
    v13.to_control_vector_gguf(&gg, "llama").unwrap();
    let (content, _) = {
        let mut f = std::fs::File::open(&gg).unwrap();
        (
            candle_core::quantized::gguf_file::Content::read(&mut f).unwrap(),
            (),
        )
    };
    assert_eq!(
        content.metadata["controlvector.layer_count"]
            .to_u32()
            .unwrap(),
        3
    );
    assert_eq!(
        content.metadata["controlvector.model_hint"]
            .to_string()
            .unwrap(),
        "llama"
    );
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    assert_eq!(names, ["direction.1", "direction.2", "direction.3"]);
    let g = SteeringVector::from_control_vector_gguf(&gg).unwrap();
    assert_eq!(g.layers(), vec![1, 2, 3]);
    for l in 1..4 {
        assert_eq!(
            g.get(l).unwrap().to_vec1::<f32>().unwrap(),
            v.get(l).unwrap().to_vec1::<f32>().unwrap()
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_vectors_are_refused() {
    let mut d = BTreeMap::new();
    d.insert(
        0,
        Tensor::zeros((2, D), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    assert!(matches!(
        SteeringVector::new(d, "x"),
        Err(Error::Shape { .. })
    ));
    let mut d = BTreeMap::new();
    d.insert(0, Tensor::new(&[f32::NAN, 0.0], &Device::Cpu).unwrap());
    assert!(matches!(
        SteeringVector::new(d, "x"),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        SteeringVector::new(BTreeMap::new(), "x"),
        Err(Error::InvalidArgument { .. })
    ));
    let missing = std::env::temp_dir().join("puppetlens-no-such-vector.safetensors");
    assert!(matches!(
        SteeringVector::load(&missing),
        Err(Error::Io { .. })
    ));
}
