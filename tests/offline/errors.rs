//! Bad input gives a typed `puppetlens::Error` naming the culprit (file, field, tensor, layer,
//! hook point, shape), never a panic. Every case builds its own tiny checkpoint in a temp dir.

use crate::common_tiny;

use std::path::Path;

use crate::common_tiny::{set, unset, write_hf, write_llama_gguf, TempDir, Tiny};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use puppetlens::{
    hook_fn, AddVector, Batch, Error, GenerateOptions, HookPoint, Hooks, LoadOptions, Model, Patch,
    ProjectOut,
};

fn load(path: &Path) -> Result<Model, Error> {
    Model::load(path, &LoadOptions::default())
}

/// A tiny Llama as a Hugging Face directory with `max_position_embeddings = ctx`.
fn tiny_llama_dir(tag: &str, ctx: usize) -> (TempDir, Model) {
    let t = Tiny::llama();
    let dir = TempDir::new(tag);
    let mut j = t.base_json("llama");
    set(&mut j, "max_position_embeddings", ctx.into());
    write_hf(dir.path(), &j, &t.tensors(1));
    let model = load(dir.path()).expect("tiny llama loads");
    (dir, model)
}

/// Asserts `err` displays every one of `needles`.
fn assert_names(err: &Error, needles: &[&str]) {
    let msg = err.to_string();
    for n in needles {
        assert!(msg.contains(n), "error message {msg:?} does not name {n:?}");
    }
    println!("ok: {msg}");
}

// ---------------------------------------------------------------------------------------------
// Files

#[test]
fn missing_file_is_io_error_naming_the_path() {
    let err = load(Path::new("/nonexistent/x.gguf")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert_names(&err, &["/nonexistent/x.gguf"]);

    // A directory without config.json names config.json.
    let dir = TempDir::new("noconfig");
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert_names(&err, &["config.json"]);
}

#[test]
fn directory_without_safetensors_is_checkpoint_error() {
    let t = Tiny::llama();
    let dir = TempDir::new("nost");
    std::fs::write(dir.join("config.json"), t.base_json("llama").to_string()).unwrap();
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Checkpoint { .. }), "{err:?}");
    assert_names(&err, &[&dir.path().display().to_string()]);
}

#[test]
fn truncated_gguf_is_checkpoint_error_naming_file_and_tensor() {
    let dir = TempDir::new("gguf-trunc");
    let path = dir.join("tiny.gguf");
    let names = write_llama_gguf(&path, &Tiny::llama(), "llama", 7);
    // The intact file loads and runs.
    let model = load(&path).expect("tiny GGUF loads");
    let logits = model
        .forward(&Batch::single(&[1, 2, 3]).unwrap(), &mut Hooks::new())
        .unwrap();
    assert_eq!(logits.dims(), &[1, 3, 300]);
    let bytes = std::fs::read(&path).unwrap();

    // (a) Cut inside the header (the metadata table).
    let cut = dir.join("cut-header.gguf");
    std::fs::write(&cut, &bytes[..100]).unwrap();
    let err = load(&cut).unwrap_err();
    assert!(matches!(err, Error::Checkpoint { .. }), "{err:?}");
    assert_names(&err, &["cut-header.gguf"]);

    // Cut just after the magic, and an empty file.
    for (name, len) in [("cut-magic.gguf", 6), ("empty.gguf", 0)] {
        let cut = dir.join(name);
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let err = load(&cut).unwrap_err();
        assert!(matches!(err, Error::Checkpoint { .. }), "{name}: {err:?}");
        assert_names(&err, &[name]);
    }

    // (b) Cut inside the tensor data: the last tensor in the file (a 64-float norm, 256 bytes,
    // unpadded) loses its last 100 bytes.
    let last = names.last().unwrap();
    let cut = dir.join("cut-data.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let err = load(&cut).unwrap_err();
    assert!(matches!(err, Error::Checkpoint { .. }), "{err:?}");
    assert_names(&err, &["cut-data.gguf", last]);
}

#[test]
fn corrupt_gguf_is_checkpoint_error() {
    let dir = TempDir::new("gguf-corrupt");
    let path = dir.join("garbage.gguf");
    std::fs::write(
        &path,
        b"this is not a gguf file at all, only garbage bytes......",
    )
    .unwrap();
    let err = load(&path).unwrap_err();
    assert!(matches!(err, Error::Checkpoint { .. }), "{err:?}");
    assert_names(&err, &["garbage.gguf"]);

    // A valid file whose magic is overwritten.
    let good = dir.join("good.gguf");
    write_llama_gguf(&good, &Tiny::llama(), "llama", 7);
    let mut bytes = std::fs::read(&good).unwrap();
    bytes[..4].copy_from_slice(b"GGML");
    let bad = dir.join("badmagic.gguf");
    std::fs::write(&bad, &bytes).unwrap();
    let err = load(&bad).unwrap_err();
    assert!(matches!(err, Error::Checkpoint { .. }), "{err:?}");
    assert_names(&err, &["badmagic.gguf"]);

    // A tensor count far larger than the file can hold.
    let mut bytes = std::fs::read(&good).unwrap();
    bytes[8..16].copy_from_slice(&(u32::MAX as u64).to_le_bytes());
    let bad = dir.join("badcount.gguf");
    std::fs::write(&bad, &bytes).unwrap();
    let err = load(&bad).unwrap_err();
    assert!(matches!(err, Error::Checkpoint { .. }), "{err:?}");
    assert_names(&err, &["badcount.gguf"]);
}

#[test]
fn unknown_architecture_names_it() {
    // GGUF.
    let dir = TempDir::new("arch");
    let path = dir.join("neo.gguf");
    write_llama_gguf(&path, &Tiny::llama(), "gpt-neo-9000", 7);
    let err = load(&path).unwrap_err();
    assert!(matches!(err, Error::UnknownArchitecture { .. }), "{err:?}");
    assert_names(&err, &["gpt-neo-9000", "neo.gguf"]);

    // config.json.
    let t = Tiny::llama();
    let hf = TempDir::new("arch-hf");
    write_hf(hf.path(), &t.base_json("gpt-neo-9000"), &t.tensors(1));
    let err = load(hf.path()).unwrap_err();
    assert!(matches!(err, Error::UnknownArchitecture { .. }), "{err:?}");
    assert_names(&err, &["gpt-neo-9000", "config.json"]);
}

#[test]
fn unsupported_safetensors_dtype_names_the_tensor() {
    let t = Tiny::llama();
    let dir = TempDir::new("i64");
    let mut ts = t.tensors(1);
    let name = "model.layers.1.self_attn.k_proj.weight";
    ts.insert(
        name.into(),
        Tensor::zeros((64, 64), DType::I64, &Device::Cpu).unwrap(),
    );
    write_hf(dir.path(), &t.base_json("llama"), &ts);
    let err = load(dir.path()).unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedTensorType { .. }),
        "{err:?}"
    );
    assert_names(&err, &[name, "I64"]);
}

/// Position of the GGUF tensor-info record of `name` (its u64 length prefix) in `bytes`.
fn find_tensor_info(bytes: &[u8], name: &str) -> usize {
    let mut pat = (name.len() as u64).to_le_bytes().to_vec();
    pat.extend_from_slice(name.as_bytes());
    let hits: Vec<usize> = bytes
        .windows(pat.len())
        .enumerate()
        .filter(|(_, w)| *w == &pat[..])
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "tensor info of {name} found {} times",
        hits.len()
    );
    hits[0]
}

#[test]
fn unknown_gguf_tensor_type_is_unsupported_tensor_type() {
    let dir = TempDir::new("gguf-dtype");
    let path = dir.join("tiny.gguf");
    write_llama_gguf(&path, &Tiny::llama(), "llama", 7);
    let mut bytes = std::fs::read(&path).unwrap();
    let name = "blk.0.attn_q.weight";
    let rec = find_tensor_info(&bytes, name);
    let n_dims_at = rec + 8 + name.len();
    let n_dims = u32::from_le_bytes(bytes[n_dims_at..n_dims_at + 4].try_into().unwrap()) as usize;
    assert_eq!(n_dims, 2);
    let dims: Vec<u64> = (0..n_dims)
        .map(|i| {
            u64::from_le_bytes(
                bytes[n_dims_at + 4 + 8 * i..n_dims_at + 12 + 8 * i]
                    .try_into()
                    .unwrap(),
            )
        })
        .collect();
    assert_eq!(dims, vec![64, 64], "GGUF stores dims innermost first");
    let dtype_at = n_dims_at + 4 + 8 * n_dims;
    let dtype = u32::from_le_bytes(bytes[dtype_at..dtype_at + 4].try_into().unwrap());
    assert_eq!(dtype, 0, "found the dtype field (ggml type 0 is F32)");
    bytes[dtype_at..dtype_at + 4].copy_from_slice(&99u32.to_le_bytes());
    let bad = dir.join("dtype99.gguf");
    std::fs::write(&bad, &bytes).unwrap();
    let err = load(&bad).unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedTensorType { .. }),
        "{err:?}"
    );
    // candle's GGUF reader does not report which tensor held the bad type id, so the message can
    // name only the file and the id (see the report).
    assert_names(&err, &["dtype99.gguf", "99"]);
}

#[test]
fn missing_tensor_names_it() {
    let t = Tiny::llama();
    let name = "model.layers.1.mlp.up_proj.weight";
    let dir = TempDir::new("missing");
    let mut ts = t.tensors(1);
    ts.remove(name);
    write_hf(dir.path(), &t.base_json("llama"), &ts);
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, Error::MissingTensor { .. }), "{err:?}");
    assert_names(&err, &[name]);

    // Qwen2 without the q bias it needs.
    let mut q = Tiny::llama();
    q.qkv_bias = true;
    let name = "model.layers.0.self_attn.q_proj.bias";
    let dir = TempDir::new("missing-bias");
    let mut ts = q.tensors(1);
    ts.remove(name);
    write_hf(dir.path(), &q.base_json("qwen2"), &ts);
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, Error::MissingTensor { .. }), "{err:?}");
    assert_names(&err, &[name]);

    // GGUF: the message gives both names.
    let dir = TempDir::new("missing-gguf");
    let t = Tiny::llama();
    let ts = t.tensors(3);
    let mut q: Vec<(String, QTensor)> = ts
        .iter()
        .map(|(n, x)| {
            (
                common_tiny::llama_gguf_name(n),
                QTensor::quantize(x, GgmlDType::F32).unwrap(),
            )
        })
        .collect();
    q.retain(|(n, _)| n != "blk.1.ffn_up.weight");
    let md = common_tiny::llama_gguf_metadata(&t, "llama", 64);
    let md_refs: Vec<(&str, &gguf_file::Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let q_refs: Vec<(&str, &QTensor)> = q.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let path = dir.join("missing.gguf");
    gguf_file::write(
        &mut std::fs::File::create(&path).unwrap(),
        &md_refs,
        &q_refs,
    )
    .unwrap();
    let err = load(&path).unwrap_err();
    assert!(matches!(err, Error::MissingTensor { .. }), "{err:?}");
    assert_names(
        &err,
        &[
            "model.layers.1.mlp.up_proj.weight",
            "blk.1.ffn_up.weight",
            "missing.gguf",
        ],
    );
}

#[test]
fn wrong_tensor_shape_is_shape_error() {
    let t = Tiny::llama();
    let name = "model.layers.0.self_attn.o_proj.weight";
    let dir = TempDir::new("shape");
    let mut ts = t.tensors(1);
    ts.insert(
        name.into(),
        Tensor::zeros((64, 63), DType::F32, &Device::Cpu).unwrap(),
    );
    write_hf(dir.path(), &t.base_json("llama"), &ts);
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err:?}");
    assert_names(&err, &[name, "[64, 64]", "[64, 63]"]);

    // The embedding disagreeing with config.json's vocab_size.
    let dir = TempDir::new("shape-embed");
    let mut j = t.base_json("llama");
    set(&mut j, "vocab_size", 301.into());
    write_hf(dir.path(), &j, &t.tensors(1));
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err:?}");
    assert_names(&err, &["model.embed_tokens.weight", "301"]);

    // A 1-D embedding.
    let dir = TempDir::new("shape-embed1d");
    let mut ts = t.tensors(1);
    ts.insert(
        "model.embed_tokens.weight".into(),
        Tensor::zeros(300 * 64, DType::F32, &Device::Cpu).unwrap(),
    );
    write_hf(dir.path(), &t.base_json("llama"), &ts);
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err:?}");
    assert_names(&err, &["model.embed_tokens.weight"]);
}

#[test]
fn missing_or_bad_config_field_names_it() {
    let t = Tiny::llama();
    let dir = TempDir::new("nofield");
    let mut j = t.base_json("llama");
    unset(&mut j, "hidden_size");
    write_hf(dir.path(), &j, &t.tensors(1));
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
    assert_names(&err, &["hidden_size", "config.json"]);

    // Wrong type.
    let dir = TempDir::new("badfield");
    let mut j = t.base_json("llama");
    set(&mut j, "num_attention_heads", "four".into());
    write_hf(dir.path(), &j, &t.tensors(1));
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
    assert_names(&err, &["num_attention_heads"]);

    // No model_type at all.
    let dir = TempDir::new("notype");
    let mut j = t.base_json("llama");
    unset(&mut j, "model_type");
    write_hf(dir.path(), &j, &t.tensors(1));
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
    assert_names(&err, &["model_type"]);

    // Not JSON.
    let dir = TempDir::new("notjson");
    write_hf(dir.path(), &t.base_json("llama"), &t.tensors(1));
    std::fs::write(dir.join("config.json"), "{ not json").unwrap();
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
    assert_names(&err, &["config.json"]);

    // GGUF metadata without the block count.
    let dir = TempDir::new("gguf-nofield");
    let t = Tiny::llama();
    let ts = t.tensors(3);
    let q: Vec<(String, QTensor)> = ts
        .iter()
        .map(|(n, x)| {
            (
                common_tiny::llama_gguf_name(n),
                QTensor::quantize(x, GgmlDType::F32).unwrap(),
            )
        })
        .collect();
    let mut md = common_tiny::llama_gguf_metadata(&t, "llama", 64);
    md.retain(|(k, _)| k != "llama.block_count");
    let md_refs: Vec<(&str, &gguf_file::Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let q_refs: Vec<(&str, &QTensor)> = q.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let path = dir.join("noblocks.gguf");
    gguf_file::write(
        &mut std::fs::File::create(&path).unwrap(),
        &md_refs,
        &q_refs,
    )
    .unwrap();
    let err = load(&path).unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
    assert_names(&err, &["llama.block_count", "noblocks.gguf"]);
}

// ---------------------------------------------------------------------------------------------
// Prompts and batches

#[test]
fn prompt_longer_than_context_in_forward() {
    let (_dir, model) = tiny_llama_dir("ctx", 16);
    let ids: Vec<u32> = (1..=20).collect();
    let err = model
        .forward(&Batch::single(&ids).unwrap(), &mut Hooks::new())
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::PromptTooLong {
                index: 0,
                len: 20,
                max: 16
            }
        ),
        "{err:?}"
    );
    assert_names(&err, &["20", "16"]);
    // The second prompt of a batch is the one named.
    let batch = Batch::new(&[vec![1u32, 2, 3], ids.clone()]).unwrap();
    let err = model.forward_last(&batch, &mut Hooks::new()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::PromptTooLong {
                index: 1,
                len: 20,
                max: 16
            }
        ),
        "{err:?}"
    );
    // Exactly the context is fine.
    let ok: Vec<u32> = (1..=16).collect();
    model
        .forward(&Batch::single(&ok).unwrap(), &mut Hooks::new())
        .unwrap();
}

#[test]

fn prompt_longer_than_context_in_generate() {
    let (_dir, model) = tiny_llama_dir("ctx-gen", 16);
    let ids: Vec<u32> = (1..=20).collect();
    for kv_cache in [true, false] {
        let opts = GenerateOptions {
            kv_cache,
            ..GenerateOptions::greedy(4)
        };
        let res = model.generate(std::slice::from_ref(&ids), &opts, &mut Hooks::new());
        let err = res.expect_err("a 20-token prompt with a context of 16 must be an error");
        assert!(
            matches!(
                err,
                Error::PromptTooLong {
                    index: 0,
                    len: 20,
                    max: 16
                }
            ),
            "{err:?}"
        );
    }
}

#[test]
fn generation_stops_at_the_context() {
    // Not an error: a prompt shorter than the context generates until the context is full.
    let (_dir, model) = tiny_llama_dir("ctx-full", 16);
    let ids: Vec<u32> = (1..=12).collect();
    for kv_cache in [true, false] {
        let opts = GenerateOptions {
            kv_cache,
            ..GenerateOptions::greedy(10)
        };
        let out = model
            .generate(std::slice::from_ref(&ids), &opts, &mut Hooks::new())
            .unwrap();
        assert_eq!(out[0].len(), 4, "kv_cache={kv_cache}");
    }
}

#[test]
fn empty_prompt_and_empty_batch() {
    let err = Batch::new(&[vec![1u32, 2], vec![]]).unwrap_err();
    assert!(matches!(err, Error::EmptyPrompt { index: 1 }), "{err:?}");
    assert_names(&err, &["prompt 1"]);
    let err = Batch::single(&[]).unwrap_err();
    assert!(matches!(err, Error::EmptyPrompt { index: 0 }), "{err:?}");

    let none: &[Vec<u32>] = &[];
    let err = Batch::new(none).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    assert_names(&err, &["prompts"]);

    let (_dir, model) = tiny_llama_dir("empty", 64);
    let err = model
        .generate(
            &[Vec::<u32>::new()],
            &GenerateOptions::greedy(3),
            &mut Hooks::new(),
        )
        .unwrap_err();
    assert!(matches!(err, Error::EmptyPrompt { index: 0 }), "{err:?}");
    let err = model
        .generate(none, &GenerateOptions::greedy(3), &mut Hooks::new())
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
}

#[test]
fn token_out_of_vocabulary() {
    let (_dir, model) = tiny_llama_dir("vocab", 64);
    let batch = Batch::new(&[vec![1u32, 2], vec![5u32, 300, 7]]).unwrap();
    let err = model.forward(&batch, &mut Hooks::new()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TokenOutOfRange {
                index: 1,
                id: 300,
                vocab: 300
            }
        ),
        "{err:?}"
    );
    assert_names(&err, &["300", "prompt 1"]);
    let err = model
        .generate(
            &[vec![u32::MAX]],
            &GenerateOptions::greedy(2),
            &mut Hooks::new(),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::TokenOutOfRange {
                index: 0,
                id: u32::MAX,
                vocab: 300
            }
        ),
        "{err:?}"
    );
    // The last valid id is fine.
    model
        .forward(&Batch::single(&[299]).unwrap(), &mut Hooks::new())
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Hooks

#[test]
fn layer_out_of_range_and_bad_hook_names() {
    let (_dir, model) = tiny_llama_dir("layer", 64);
    let batch = Batch::single(&[1, 2, 3]).unwrap();
    let mut hooks = Hooks::new();
    hooks.add(HookPoint::ResidPost(99), hook_fn(|_, _| Ok(None)));
    let err = model.forward(&batch, &mut hooks).unwrap_err();
    assert!(
        matches!(
            err,
            Error::LayerOutOfRange {
                layer: 99,
                n_layers: 2
            }
        ),
        "{err:?}"
    );
    assert_names(&err, &["99", "2"]);
    // The first layer past the end, through every entry point.
    let mut hooks = Hooks::new();
    hooks.add(HookPoint::AttnOut(2), hook_fn(|_, _| Ok(None)));
    let err = model.run_hooks(&batch, &mut hooks).unwrap_err();
    assert!(
        matches!(
            err,
            Error::LayerOutOfRange {
                layer: 2,
                n_layers: 2
            }
        ),
        "{err:?}"
    );
    let err = model
        .generate(&[vec![1u32, 2]], &GenerateOptions::greedy(2), &mut hooks)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::LayerOutOfRange {
                layer: 2,
                n_layers: 2
            }
        ),
        "{err:?}"
    );

    for bad in [
        "blocks.x.hook_resid_post",
        "blocks..hook_resid_post",
        "blocks.1.hook_nope",
        "blocks.-1.hook_resid_post",
        "blocks.99999999999999999999999.hook_resid_post",
        "hook_embed ",
        "",
    ] {
        let err = bad.parse::<HookPoint>().unwrap_err();
        assert!(matches!(err, Error::BadHookName { .. }), "{bad:?}: {err:?}");
        assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
    }
}

#[test]
fn wrong_width_vectors_name_the_hook_point() {
    let (_dir, model) = tiny_llama_dir("width", 64);
    let batch = Batch::single(&[1, 2, 3]).unwrap();
    let v63 = Tensor::ones(63, DType::F32, &Device::Cpu).unwrap();

    let mut hooks = Hooks::new();
    hooks.add(HookPoint::ResidPost(1), AddVector::new(v63.clone(), 1.0));
    let err = model.forward(&batch, &mut hooks).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err:?}");
    assert_names(&err, &["blocks.1.hook_resid_post", "[64]", "[63]"]);

    let mut hooks = Hooks::new();
    hooks.add(HookPoint::ResidMid(0), ProjectOut::new(&v63).unwrap());
    let err = model.forward(&batch, &mut hooks).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err:?}");
    assert_names(&err, &["blocks.0.hook_resid_mid", "[63]"]);

    // A [1, 64] "vector" is not a [64] one.
    let v1x64 = Tensor::ones((1, 64), DType::F32, &Device::Cpu).unwrap();
    let mut hooks = Hooks::new();
    hooks.add(HookPoint::Embed, AddVector::new(v1x64, 1.0));
    let err = model.forward(&batch, &mut hooks).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err:?}");
    assert_names(&err, &["hook_embed"]);

    // A patch source of the wrong shape.
    let src = Tensor::zeros((1, 3, 32), DType::F32, &Device::Cpu).unwrap();
    let mut hooks = Hooks::new();
    hooks.add(HookPoint::ResidPre(1), Patch::new(src));
    let err = model.forward(&batch, &mut hooks).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err:?}");
    assert_names(&err, &["blocks.1.hook_resid_pre"]);
}

#[test]
fn hook_returning_wrong_shape_is_shape_error() {
    let (_dir, model) = tiny_llama_dir("hookshape", 64);
    let batch = Batch::single(&[1, 2, 3]).unwrap();
    let mut hooks = Hooks::new();
    hooks.add(
        HookPoint::MlpOut(0),
        hook_fn(|x, _| Ok(Some(x.narrow(1, 0, 2)?))),
    );
    let err = model.forward(&batch, &mut hooks).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err:?}");
    assert_names(&err, &["blocks.0.hook_mlp_out", "[1, 3, 64]", "[1, 2, 64]"]);

    // Wrong dtype from a closure.
    let mut hooks = Hooks::new();
    hooks.add(
        HookPoint::FinalNorm,
        hook_fn(|x, _| Ok(Some(x.to_dtype(DType::F64)?))),
    );
    let err = model.forward(&batch, &mut hooks).unwrap_err();
    assert!(matches!(err, Error::DtypeOrDevice { .. }), "{err:?}");
    assert_names(&err, &["ln_final.hook_normalized", "F64"]);

    // A hook's own error comes back unchanged.
    let mut hooks = Hooks::new();
    hooks.add(
        HookPoint::ResidPre(0),
        hook_fn(|_, _| {
            Err(Error::InvalidArgument {
                name: "mine".into(),
                msg: "from the hook".into(),
            })
        }),
    );
    let err = model.forward(&batch, &mut hooks).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument { name, .. } if name == "mine"),
        "{err:?}"
    );
}

#[test]
fn wrong_dtype_vector_is_dtype_error() {
    let (_dir, model) = tiny_llama_dir("dtype", 64);
    let batch = Batch::single(&[1, 2, 3]).unwrap();
    let v = Tensor::ones(64, DType::F64, &Device::Cpu).unwrap();

    let mut hooks = Hooks::new();
    hooks.add(HookPoint::ResidPost(0), AddVector::new(v.clone(), 1.0));
    let err = model.forward(&batch, &mut hooks).unwrap_err();
    assert!(matches!(err, Error::DtypeOrDevice { .. }), "{err:?}");
    assert_names(&err, &["blocks.0.hook_resid_post", "F32", "F64"]);

    let mut hooks = Hooks::new();
    hooks.add(HookPoint::ResidPost(0), ProjectOut::new(&v).unwrap());
    let err = model.forward(&batch, &mut hooks).unwrap_err();
    assert!(matches!(err, Error::DtypeOrDevice { .. }), "{err:?}");
    assert_names(&err, &["blocks.0.hook_resid_post", "F64"]);

    let src = Tensor::zeros((1, 3, 64), DType::F64, &Device::Cpu).unwrap();
    let mut hooks = Hooks::new();
    hooks.add(HookPoint::ResidPost(1), Patch::new(src));
    let err = model.forward(&batch, &mut hooks).unwrap_err();
    assert!(matches!(err, Error::DtypeOrDevice { .. }), "{err:?}");
    assert_names(&err, &["blocks.1.hook_resid_post", "F64"]);
}

/// Only built with `--features cuda` (needs a GPU): a vector on the GPU steering a CPU model.
#[cfg(feature = "cuda")]
#[test]
fn wrong_device_vector_is_dtype_or_device_error() {
    let (_dir, model) = tiny_llama_dir("device", 64);
    let batch = Batch::single(&[1, 2, 3]).unwrap();
    let gpu = Device::new_cuda(0).expect("a CUDA device");
    let v = Tensor::ones(64, DType::F32, &gpu).unwrap();
    let mut hooks = Hooks::new();
    hooks.add(HookPoint::ResidPost(0), AddVector::new(v.clone(), 1.0));
    let err = model.forward(&batch, &mut hooks).unwrap_err();
    assert!(matches!(err, Error::DtypeOrDevice { .. }), "{err:?}");
    assert_names(&err, &["blocks.0.hook_resid_post", "device"]);
    let mut hooks = Hooks::new();
    hooks.add(HookPoint::ResidPost(0), ProjectOut::new(&v).unwrap());
    let err = model.forward(&batch, &mut hooks).unwrap_err();
    assert!(matches!(err, Error::DtypeOrDevice { .. }), "{err:?}");
}

#[test]
fn project_out_zero_vector_is_invalid_argument() {
    let z = Tensor::zeros(64, DType::F32, &Device::Cpu).unwrap();
    let err = ProjectOut::new(&z).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    assert_names(&err, &["direction"]);
    let nan = Tensor::new(&[f32::NAN, 1.0], &Device::Cpu).unwrap();
    let err = ProjectOut::new(&nan).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
}

#[test]
fn bad_generation_options_are_invalid_arguments() {
    let (_dir, model) = tiny_llama_dir("genopts", 64);
    for t in [-1.0, f64::NAN, f64::INFINITY] {
        let opts = GenerateOptions {
            temperature: t,
            ..GenerateOptions::greedy(2)
        };
        let err = model
            .generate(&[vec![1u32, 2]], &opts, &mut Hooks::new())
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{t}: {err:?}");
        assert_names(&err, &["temperature"]);
    }
}
