//! The seed corpus (real files written by puppetlens itself, the project's datasets, the shipped
//! GGUFs' headers) and the loader each target runs.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use puppetlens::extract::{self, ExtractOptions, Site, StoreMeta};
use puppetlens::lora::{Adapter, LoraConfig};
use puppetlens::{data, train, ActivationCache, Batch, ChatMessage, HookPoint, Hooks, LoadOptions};
use puppetlens::{Model, SteeringVector, Tokenizer};

use crate::common_tiny::{llama_gguf_metadata, llama_gguf_name, write_hf, Rng as WeightRng, Tiny};
use crate::mutate::{Field, Kind};

/// One seed file of a target.
pub struct SeedFile {
    pub name: String,
    pub bytes: Vec<u8>,
    pub kind: Kind,
}

type Loader = Box<dyn Fn(&Path) -> puppetlens::Result<()> + Send + Sync>;

/// A loader and the files it reads from its directory.
pub struct Target {
    pub name: String,
    pub files: Vec<SeedFile>,
    /// Relative share of the cases.
    pub weight: usize,
    pub run: Loader,
}

/// ChatML, as SmolLM2 writes it (used when the real checkpoints are not in the cache).
const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

fn tiny() -> Tiny {
    Tiny {
        vocab: TOKENS.len(),
        d_model: 16,
        n_layers: 2,
        n_heads: 2,
        n_kv_heads: 2,
        head_dim: 8,
        d_mlp: 32,
        ..Tiny::llama()
    }
}

const TOKENS: &[&str] = &[
    "<s>",
    "</s>",
    "<|im_start|>",
    "<|im_end|>",
    "a",
    "b",
    "c",
    "d",
    "e",
    "f",
    "g",
    "h",
    "i",
    "j",
    "k",
    "l",
    "m",
    "n",
    "o",
    "p",
    "q",
    "r",
    "s",
    "t",
    "u",
    "v",
    "w",
    "x",
    "y",
    "z",
    "Ġ",
    "Ċ",
    "hi",
    "Ġhi",
];

fn tokenizer_metadata(template: &str) -> Vec<(String, gguf_file::Value)> {
    use gguf_file::Value as V;
    let strings = |v: &[&str]| V::Array(v.iter().map(|s| V::String(s.to_string())).collect());
    let types: Vec<gguf_file::Value> = TOKENS
        .iter()
        .enumerate()
        .map(|(i, _)| V::I32(if i < 4 { 3 } else { 1 }))
        .collect();
    vec![
        ("tokenizer.ggml.model".into(), V::String("gpt2".into())),
        ("tokenizer.ggml.tokens".into(), strings(TOKENS)),
        ("tokenizer.ggml.token_type".into(), V::Array(types)),
        ("tokenizer.ggml.merges".into(), strings(&["h i", "Ġ hi"])),
        ("tokenizer.ggml.bos_token_id".into(), V::U32(0)),
        ("tokenizer.ggml.eos_token_id".into(), V::U32(3)),
        ("tokenizer.ggml.add_bos_token".into(), V::Bool(true)),
        ("tokenizer.chat_template".into(), V::String(template.into())),
    ]
}

/// Length/count fields and structural boundaries of a GGUF file (v2/v3), found by walking it.
pub fn gguf_fields(b: &[u8]) -> (Vec<Field>, Vec<usize>) {
    let mut fields = vec![Field { at: 8, width: 8 }, Field { at: 16, width: 8 }];
    let mut cuts = vec![0, 4, 8, 16, 24];
    let u32_at = |i: usize| {
        b.get(i..i + 4)
            .map(|s| u32::from_le_bytes(s.try_into().unwrap_or([0; 4])))
    };
    let u64_at = |i: usize| {
        b.get(i..i + 8)
            .map(|s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
    };
    let (Some(nt), Some(nkv)) = (u64_at(8), u64_at(16)) else {
        return (fields, cuts);
    };
    let mut p = 24usize;
    // Skips a value of type `t` at `p`, recording its fields.
    fn value(b: &[u8], p: &mut usize, t: u32, fields: &mut Vec<Field>, depth: usize) -> Option<()> {
        let size = match t {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4 | 5 | 6 => 4,
            10..=12 => 8,
            8 => {
                fields.push(Field { at: *p, width: 8 });
                let n = u64::from_le_bytes(b.get(*p..*p + 8)?.try_into().ok()?) as usize;
                8 + n
            }
            9 if depth < 4 => {
                fields.push(Field { at: *p, width: 4 });
                let et = u32::from_le_bytes(b.get(*p..*p + 4)?.try_into().ok()?);
                fields.push(Field {
                    at: *p + 4,
                    width: 8,
                });
                let n = u64::from_le_bytes(b.get(*p + 4..*p + 12)?.try_into().ok()?);
                *p += 12;
                for _ in 0..n {
                    value(b, p, et, fields, depth + 1)?;
                }
                return Some(());
            }
            _ => return None,
        };
        *p += size;
        (*p <= b.len()).then_some(())
    }
    for _ in 0..nkv {
        if value(&b[..], &mut p, 8, &mut fields, 0).is_none() {
            return (fields, cuts);
        }
        cuts.push(p);
        fields.push(Field { at: p, width: 4 });
        let Some(t) = u32_at(p) else {
            return (fields, cuts);
        };
        p += 4;
        if value(&b[..], &mut p, t, &mut fields, 0).is_none() {
            return (fields, cuts);
        }
        cuts.push(p);
    }
    for _ in 0..nt {
        if value(&b[..], &mut p, 8, &mut fields, 0).is_none() {
            return (fields, cuts);
        }
        fields.push(Field { at: p, width: 4 });
        let Some(nd) = u32_at(p) else {
            return (fields, cuts);
        };
        p += 4;
        for _ in 0..nd.min(8) {
            fields.push(Field { at: p, width: 8 });
            p += 8;
        }
        fields.push(Field { at: p, width: 4 });
        fields.push(Field {
            at: p + 4,
            width: 8,
        });
        p += 12;
        cuts.push(p);
    }
    cuts.push(p.div_ceil(32) * 32);
    cuts.push(b.len());
    fields.retain(|f| f.at + f.width <= b.len());
    (fields, cuts)
}

fn gguf_kind(bytes: &[u8]) -> Kind {
    let (fields, cuts) = gguf_fields(bytes);
    Kind::Binary { fields, cuts }
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The first `n` lines of a project file (read, never copied into the repository).
fn head(path: &str, n: usize) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out: String = text.lines().take(n).collect::<Vec<_>>().join("\n");
    out.push('\n');
    out.into_bytes()
}

fn forward3(m: &Model) -> puppetlens::Result<()> {
    let n = m.config().vocab_size.min(TOKENS.len()) as u32;
    let ids: Vec<u32> = (0..3).map(|i| i % n.max(1)).collect();
    m.forward(&Batch::single(&ids)?, &mut Hooks::new())?;
    Ok(())
}

fn use_tokenizer(tok: &Tokenizer) -> puppetlens::Result<()> {
    let ids = tok.encode("hi hi abc")?;
    let _ = tok.decode(&ids);
    let _ = tok.encode_chat(&[ChatMessage::user("hi there")], true);
    Ok(())
}

/// The shipped checkpoints found in the cache (none are fetched here).
pub fn cached_checkpoints() -> Vec<(String, std::path::PathBuf)> {
    puppetlens::fetch::KNOWN
        .iter()
        .map(|m| (m.name.to_string(), puppetlens::fetch::model_path(m)))
        .filter(|(_, p)| p.is_file())
        .collect()
}

/// Writes the seed files under `dir` and returns every target.
pub fn targets(dir: &Path) -> Vec<Target> {
    let t = tiny();
    let tensors = t.tensors(11);
    let mut out = Vec::new();
    let real = cached_checkpoints();
    let mut templates = vec![("chatml".to_string(), CHATML.to_string())];
    for (name, path) in &real {
        if let Ok(tok) = Tokenizer::from_gguf_path(path) {
            if let Some(tmpl) = tok.chat_template() {
                templates.push((name.clone(), tmpl.to_string()));
            }
        }
    }

    // A tiny llama GGUF with a tokenizer and a chat template: model + tokenizer.
    let gguf_path = dir.join("tiny.gguf");
    {
        let mut names: Vec<&String> = tensors.keys().collect();
        names.sort();
        let q: Vec<(String, QTensor)> = names
            .iter()
            .map(|n| {
                (
                    llama_gguf_name(n),
                    QTensor::quantize(&tensors[*n], GgmlDType::F32).unwrap(),
                )
            })
            .collect();
        let mut md = llama_gguf_metadata(&t, "llama", 64);
        md.extend(tokenizer_metadata(&templates[templates.len() - 1].1));
        md.push(("general.alignment".into(), gguf_file::Value::U32(32)));
        let md_refs: Vec<(&str, &gguf_file::Value)> =
            md.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let q_refs: Vec<(&str, &QTensor)> = q.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut f = std::fs::File::create(&gguf_path).unwrap();
        gguf_file::write(&mut f, &md_refs, &q_refs).unwrap();
    }
    let bytes = std::fs::read(&gguf_path).unwrap();
    out.push(Target {
        name: "gguf".into(),
        files: vec![SeedFile {
            name: "model.gguf".into(),
            kind: gguf_kind(&bytes),
            bytes,
        }],
        weight: 14,
        run: Box::new(|d| {
            let p = d.join("model.gguf");
            let model = Model::load(&p, &LoadOptions::default());
            let tok = Tokenizer::from_gguf_path(&p);
            if let Ok(m) = &model {
                forward3(m)?;
                let q = LoadOptions {
                    keep_quantized: true,
                    ..LoadOptions::default()
                };
                forward3(&Model::load(&p, &q)?)?;
            }
            use_tokenizer(&tok?)?;
            model.map(|_| ())
        }),
    });
    let base = Model::load(&gguf_path, &LoadOptions::default()).expect("the tiny GGUF loads");
    let tok = Tokenizer::from_gguf_path(&gguf_path).expect("its tokenizer builds");

    // The shipped GGUFs' headers: (a) the header and 4 KiB of data, (b) the metadata alone.
    for (name, path) in &real {
        let (content, _) = {
            let mut f = std::fs::File::open(path).unwrap();
            (gguf_file::Content::read(&mut f).unwrap(), ())
        };
        let mut full = std::fs::read(path).unwrap();
        full.truncate(content.tensor_data_offset as usize + 4096);
        let (fields, cuts) = gguf_fields(&full);
        let md_end = cuts
            .iter()
            .copied()
            .filter(|&c| c > 24)
            .nth((2 * content.metadata.len()).saturating_sub(1))
            .unwrap_or(full.len());
        let mut md_only = full[..md_end].to_vec();
        md_only[8..16].copy_from_slice(&0u64.to_le_bytes());
        let weight = if name.contains("gemma") { 1 } else { 2 };
        out.push(Target {
            name: format!("gguf-header-{name}"),
            files: vec![SeedFile {
                name: "model.gguf".into(),
                bytes: full,
                kind: Kind::Binary { fields, cuts },
            }],
            weight,
            run: Box::new(|d| {
                Model::load(d.join("model.gguf"), &LoadOptions::default()).map(|_| ())
            }),
        });
        out.push(Target {
            name: format!("gguf-metadata-{name}"),
            files: vec![SeedFile {
                name: "model.gguf".into(),
                kind: gguf_kind(&md_only),
                bytes: md_only,
            }],
            weight,
            run: Box::new(|d| {
                let p = d.join("model.gguf");
                let _ = Model::load(&p, &LoadOptions::default());
                use_tokenizer(&Tokenizer::from_gguf_path(&p)?)
            }),
        });
    }

    // A Hugging Face directory: config.json, model.safetensors, tokenizer files.
    let hf = dir.join("hf");
    std::fs::create_dir_all(&hf).unwrap();
    write_hf(&hf, &t.base_json("llama"), &tensors);
    tok.save_hf_dir(&hf).unwrap();
    out.push(Target {
        name: "hf-dir".into(),
        files: vec![
            SeedFile {
                name: "config.json".into(),
                bytes: read(&hf, "config.json"),
                kind: Kind::Json,
            },
            SeedFile {
                name: "model.safetensors".into(),
                bytes: read(&hf, "model.safetensors"),
                kind: Kind::Safetensors,
            },
            SeedFile {
                name: "tokenizer.json".into(),
                bytes: read(&hf, "tokenizer.json"),
                kind: Kind::Json,
            },
            SeedFile {
                name: "tokenizer_config.json".into(),
                bytes: read(&hf, "tokenizer_config.json"),
                kind: Kind::JsonTemplate {
                    key: "chat_template".into(),
                },
            },
        ],
        weight: 14,
        run: Box::new(|d| {
            let (m, tok) = puppetlens::load(d)?;
            forward3(&m)?;
            use_tokenizer(&tok)
        }),
    });

    // Tokenizer directories with each real chat template, and a chat_template.jinja.
    for (name, tmpl) in &templates {
        let mut t2 = tok.clone();
        t2.set_chat_template(Some(tmpl.clone()));
        let d = dir.join(format!("tok-{name}"));
        t2.save_hf_dir(&d).unwrap();
        out.push(Target {
            name: format!("tokenizer-{name}"),
            files: vec![
                SeedFile {
                    name: "tokenizer.json".into(),
                    bytes: read(&d, "tokenizer.json"),
                    kind: Kind::Json,
                },
                SeedFile {
                    name: "tokenizer_config.json".into(),
                    bytes: read(&d, "tokenizer_config.json"),
                    kind: Kind::JsonTemplate {
                        key: "chat_template".into(),
                    },
                },
                SeedFile {
                    name: "chat_template.jinja".into(),
                    bytes: tmpl.clone().into_bytes(),
                    kind: Kind::Template,
                },
            ],
            weight: 6,
            run: Box::new(|d| use_tokenizer(&Tokenizer::from_hf_dir(d)?)),
        });
    }
    // A real tokenizer.json (SmolLM2's, large): few cases.
    if let Some((_, path)) = real.iter().find(|(n, _)| n.contains("smollm2")) {
        let d = dir.join("tok-real");
        Tokenizer::from_gguf_path(path)
            .unwrap()
            .save_hf_dir(&d)
            .unwrap();
        out.push(Target {
            name: "tokenizer-json-smollm2".into(),
            files: vec![
                SeedFile {
                    name: "tokenizer.json".into(),
                    bytes: read(&d, "tokenizer.json"),
                    kind: Kind::Json,
                },
                SeedFile {
                    name: "tokenizer_config.json".into(),
                    bytes: read(&d, "tokenizer_config.json"),
                    kind: Kind::Json,
                },
            ],
            weight: 1,
            run: Box::new(|d| use_tokenizer(&Tokenizer::from_hf_dir(d)?)),
        });
    }

    // A PEFT adapter, attached to the tiny model.
    let ad = dir.join("adapter");
    let cfg = LoraConfig {
        rank: 2,
        ..Default::default()
    };
    Adapter::init(&base, &cfg, 5).unwrap().save(&ad).unwrap();
    {
        let base = base.clone();
        out.push(Target {
            name: "adapter".into(),
            files: vec![
                SeedFile {
                    name: "adapter_config.json".into(),
                    bytes: read(&ad, "adapter_config.json"),
                    kind: Kind::Json,
                },
                SeedFile {
                    name: "adapter_model.safetensors".into(),
                    bytes: read(&ad, "adapter_model.safetensors"),
                    kind: Kind::Safetensors,
                },
            ],
            weight: 8,
            run: Box::new(move |d| {
                let a = Adapter::load(d, &Device::Cpu)?;
                forward3(&base.with_adapter(&a)?)
            }),
        });
    }

    // An activation store: store.json and three shards.
    let st = dir.join("store");
    let prompts: Vec<Vec<u32>> = (0..6u32).map(|i| vec![0, 4 + i, 5 + i, 6]).collect();
    let mut eo = ExtractOptions::resid_post(&base, Site::Last);
    eo.shard_size = 2;
    eo.progress = false;
    extract::extract_to_dir(&base, &prompts, &eo, &st, &StoreMeta::default()).unwrap();
    let mut files = vec![SeedFile {
        name: "store.json".into(),
        bytes: read(&st, "store.json"),
        kind: Kind::Json,
    }];
    for s in 0..3 {
        let n = format!("shard-{s:05}.safetensors");
        files.push(SeedFile {
            bytes: read(&st, &n),
            name: n,
            kind: Kind::Safetensors,
        });
    }
    out.push(Target {
        name: "store".into(),
        files,
        weight: 8,
        run: Box::new(|d| extract::load_store(d).map(|_| ())),
    });

    // A steering vector, its llama.cpp control-vector GGUF, an activation cache.
    let mut r = WeightRng::new(3);
    let dirs: BTreeMap<usize, Tensor> = (0..2)
        .map(|l| (l, r.tensor(&[t.d_model], 0.0, 1.0)))
        .collect();
    let v = SteeringVector::new(dirs, "mean_diff")
        .unwrap()
        .with_meta("model", "tiny");
    v.save(dir.join("v.safetensors")).unwrap();
    v.only(&[1])
        .unwrap()
        .to_control_vector_gguf(dir.join("cv.gguf"), "llama")
        .unwrap();
    {
        let base = base.clone();
        out.push(Target {
            name: "vector".into(),
            files: vec![SeedFile {
                name: "v.safetensors".into(),
                bytes: read(dir, "v.safetensors"),
                kind: Kind::Safetensors,
            }],
            weight: 6,
            run: Box::new(move |d| SteeringVector::load(d.join("v.safetensors"))?.check(&base)),
        });
    }
    let cv = read(dir, "cv.gguf");
    {
        let base = base.clone();
        out.push(Target {
            name: "control-vector".into(),
            files: vec![SeedFile {
                name: "cv.gguf".into(),
                kind: gguf_kind(&cv),
                bytes: cv,
            }],
            weight: 6,
            run: Box::new(move |d| {
                SteeringVector::from_control_vector_gguf(d.join("cv.gguf"))?.check(&base)
            }),
        });
    }
    let (_, cache) = base
        .run_with_cache(&Batch::single(&[0, 4, 5]).unwrap(), |p| {
            matches!(p, HookPoint::ResidPost(_))
        })
        .unwrap();
    cache.save(dir.join("cache.safetensors")).unwrap();
    out.push(Target {
        name: "activation-cache".into(),
        files: vec![SeedFile {
            name: "cache.safetensors".into(),
            bytes: read(dir, "cache.safetensors"),
            kind: Kind::Safetensors,
        }],
        weight: 3,
        run: Box::new(|d| {
            ActivationCache::load(d.join("cache.safetensors"), &Device::Cpu).map(|_| ())
        }),
    });

    // Every dataset format the data module reads, and the training data.
    let ab = head("probes/sycophancy_ab.jsonl", 6);
    let ab_list = {
        let items: Vec<serde_json::Value> = String::from_utf8_lossy(&ab)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        serde_json::to_vec_pretty(&items).unwrap()
    };
    // ShareGPT: the first three conversations of the real file (cached by `puppetlens fetch`) as
    // a whole list (truncation mutations cut it as the packaged file is cut).
    let sharegpt = {
        let path = puppetlens::fetch::data_path(puppetlens::fetch::known_data("sharegpt").unwrap());
        let mut bytes = vec![0u8; 1 << 16];
        let n = std::io::Read::read(
            &mut std::fs::File::open(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (run `puppetlens fetch`)", path.display())),
            &mut bytes,
        )
        .unwrap();
        bytes.truncate(n);
        let mut ends = 0;
        let mut cut = bytes.len();
        // The end of the third record: `}` closing an element of the top-level list.
        let mut depth = 0i32;
        let mut in_str = false;
        let mut esc = false;
        for (i, &c) in bytes.iter().enumerate() {
            match (in_str, esc, c) {
                (true, true, _) => esc = false,
                (true, false, b'\\') => esc = true,
                (true, false, b'"') => in_str = false,
                (true, false, _) => {}
                (false, _, b'"') => in_str = true,
                (false, _, b'[' | b'{') => depth += 1,
                (false, _, b']' | b'}') => {
                    depth -= 1;
                    if depth == 1 && c == b'}' {
                        ends += 1;
                        if ends == 3 {
                            cut = i + 1;
                            break;
                        }
                    }
                }
                _ => {}
            }
        }
        assert!(
            ends == 3,
            "fewer than three conversations in the first 64 KiB"
        );
        bytes.truncate(cut);
        bytes.extend_from_slice(b"\n]\n");
        bytes
    };
    type DataLoader = fn(&Path) -> puppetlens::Result<()>;
    let sets: Vec<(&str, &str, Vec<u8>, Kind, DataLoader)> = vec![
        ("data-ab-jsonl", "ab.jsonl", ab, Kind::Jsonl, |p| data::load_ab_json(p).map(|_| ())),
        ("data-ab-json", "ab.json", ab_list, Kind::Json, |p| data::load_ab_json(p).map(|_| ())),
        ("data-pairs", "pairs.jsonl", head("probes/persona_stage_actor.jsonl", 6), Kind::Jsonl, |p| {
            data::load_pairs_jsonl(p).map(|_| ())
        }),
        ("data-labeled-instructions", "instr.jsonl", head("probes/refusal_requests.jsonl", 8), Kind::Jsonl, |p| {
            data::load_labeled_instructions(p, "harmful").map(|_| ())
        }),
        ("data-instructions", "instr.jsonl", head("probes/refusal_requests.jsonl", 8), Kind::Jsonl, |p| {
            data::load_instructions(p).map(|_| ())
        }),
        ("data-instructions-txt", "instr.txt", b"How do I bake bread?\nWrite a poem.\n\nName three rivers.\n".to_vec(), Kind::Text, |p| {
            data::load_instructions(p).map(|_| ())
        }),
        ("data-csv", "tf.csv", head("probes/true_false.csv", 9), Kind::Text, |p| {
            data::load_labeled_csv(p)?;
            data::load_split_tags(p).map(|_| ())
        }),
        ("data-sharegpt", "sharegpt.json", sharegpt, Kind::Json, |p| {
            let chats = data::load_sharegpt(p)?;
            chats.first_user_turns(&data::TurnFilter::default());
            Ok(())
        }),
        ("data-split-tags", "pairs.jsonl", head("probes/persona_stage_actor.jsonl", 6), Kind::Jsonl, |p| {
            data::load_split_tags(p).map(|_| ())
        }),
        (
            "train-sft",
            "sft.jsonl",
            b"{\"ids\": [0, 4, 5, 6, 7], \"prompt_len\": 2}\n{\"ids\": [0, 8, 9], \"prompt_len\": 1}\n".to_vec(),
            Kind::Jsonl,
            |p| train::load_sft_jsonl(p).map(|_| ()),
        ),
        (
            "train-dpo",
            "dpo.jsonl",
            b"{\"prompt\": [0, 4], \"chosen\": [5], \"rejected\": [6]}\n{\"prompt\": [0], \"chosen\": [7, 8], \"rejected\": [9]}\n".to_vec(),
            Kind::Jsonl,
            |p| train::load_dpo_jsonl(p).map(|_| ()),
        ),
    ];
    for (name, file, bytes, kind, f) in sets {
        let file_name = file.to_string();
        out.push(Target {
            name: name.into(),
            files: vec![SeedFile {
                name: file.into(),
                bytes,
                kind,
            }],
            weight: 3,
            run: Box::new(move |d| f(&d.join(&file_name))),
        });
    }
    out
}
