//! Seeded mutations of seed files: binary (bit flips, interesting values in length and count
//! fields, truncation at structural boundaries), JSON (missing and duplicated keys, hostile values,
//! deep nesting), text (lines dropped, duplicated, cut; invalid UTF-8) and Jinja (loops without
//! end, huge repeats, recursion, file access).

use serde_json::Value;

/// splitmix64.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next() % den < num
    }
}

/// A little-endian length or count field of a binary seed.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub at: usize,
    pub width: usize,
}

/// How a seed file is mutated.
#[derive(Clone, Debug)]
pub enum Kind {
    /// Binary, with its length/count fields and structural boundaries.
    Binary {
        fields: Vec<Field>,
        cuts: Vec<usize>,
    },
    /// A safetensors file: an 8-byte header length, a JSON header, then data.
    Safetensors,
    Json,
    /// JSON whose string at `key` is a Jinja template.
    JsonTemplate {
        key: String,
    },
    Jsonl,
    Text,
    Template,
}

const WORDS: &[u64] = &[
    0,
    1,
    2,
    3,
    7,
    0xff,
    0x100,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 32,
    1 << 40,
    1 << 62,
    i64::MAX as u64,
    i64::MIN as u64,
    u64::MAX,
    u64::MAX - 1,
];

const BAD_UTF8: &[&[u8]] = &[
    b"\xff",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xe2\x82",
    b"\x00",
];

/// One mutation of `seed`, and what it did.
pub fn mutate(seed: &[u8], kind: &Kind, rng: &mut Rng) -> (Vec<u8>, String) {
    // A few cases of every kind get only raw bit flips or a cut, whatever the format.
    if rng.chance(1, 10) {
        return raw(seed, &[], &[], rng);
    }
    match kind {
        Kind::Binary { fields, cuts } => raw(seed, fields, cuts, rng),
        Kind::Safetensors => safetensors(seed, rng),
        Kind::Json => json_text(seed, rng),
        Kind::JsonTemplate { key } => {
            if rng.chance(1, 2) {
                if let Ok(Value::Object(mut o)) = serde_json::from_slice::<Value>(seed) {
                    if let Some(Value::String(t)) = o.get(key) {
                        let (t, what) = template(t.as_bytes(), rng);
                        o.insert(
                            key.clone(),
                            Value::String(String::from_utf8_lossy(&t).into_owned()),
                        );
                        return (
                            serde_json::to_vec(&Value::Object(o)).unwrap_or_default(),
                            format!("template in `{key}`: {what}"),
                        );
                    }
                }
            }
            json_text(seed, rng)
        }
        Kind::Jsonl => jsonl(seed, rng),
        Kind::Text => text(seed, rng),
        Kind::Template => template(seed, rng),
    }
}

fn write_word(v: &mut [u8], f: Field, x: u64) {
    let b = x.to_le_bytes();
    let end = (f.at + f.width).min(v.len());
    if f.at < end {
        v[f.at..end].copy_from_slice(&b[..end - f.at]);
    }
}

fn raw(seed: &[u8], fields: &[Field], cuts: &[usize], rng: &mut Rng) -> (Vec<u8>, String) {
    let mut v = seed.to_vec();
    let len = v.len();
    let op = if fields.is_empty() {
        [0, 1, 3, 4, 5, 6][rng.below(6)]
    } else {
        rng.below(8)
    };
    match op {
        0 => {
            let n = 1 + rng.below(8);
            for _ in 0..n {
                if len > 0 {
                    let i = rng.below(len);
                    v[i] ^= 1 << rng.below(8);
                }
            }
            (v, format!("{n} bit flips"))
        }
        1 => {
            if len > 0 {
                let i = rng.below(len);
                v[i] = *rng.pick(&[0u8, 0xff, 0x7f, 0x80, 0x01]);
            }
            (v, "byte set".into())
        }
        2 | 7 => {
            let f = *rng.pick(fields);
            let x = if rng.chance(1, 3) {
                // Sizes near the file's.
                (len as u64)
                    .wrapping_add(rng.below(5) as u64)
                    .wrapping_sub(2)
            } else {
                *rng.pick(WORDS)
            };
            write_word(&mut v, f, x);
            (v, format!("field at {} (u{}) = {x}", f.at, f.width * 8))
        }
        3 => {
            let at = if !cuts.is_empty() && rng.chance(3, 4) {
                let c = *rng.pick(cuts);
                (c + rng.below(3)).saturating_sub(1).min(len)
            } else {
                rng.below(len + 1)
            };
            v.truncate(at);
            (v, format!("cut at {at}"))
        }
        4 => {
            let at = rng.below(len + 1);
            let n = (1 + rng.below(64)).min(len - at.min(len));
            v.drain(at..at + n);
            (v, format!("deleted {n} bytes at {at}"))
        }
        5 => {
            let at = rng.below(len + 1);
            let n = (1 + rng.below(64)).min(len - at.min(len));
            let chunk: Vec<u8> = v[at..at + n].to_vec();
            let to = rng.below(v.len() + 1);
            v.splice(to..to, chunk);
            (v, format!("duplicated {n} bytes of {at} at {to}"))
        }
        _ => {
            let at = rng.below(len + 1);
            let bad = *rng.pick(BAD_UTF8);
            v.splice(at..at, bad.iter().copied());
            (v, format!("invalid UTF-8 at {at}"))
        }
    }
}

fn safetensors(seed: &[u8], rng: &mut Rng) -> (Vec<u8>, String) {
    if seed.len() < 8 {
        return raw(seed, &[], &[], rng);
    }
    let n = u64::from_le_bytes(seed[..8].try_into().unwrap_or([0; 8])) as usize;
    let n = n.min(seed.len() - 8);
    match rng.below(4) {
        0 => raw(
            seed,
            &[Field { at: 0, width: 8 }],
            &[8, 8 + n, seed.len()],
            rng,
        ),
        1 => {
            // Mutate the JSON header and keep the length field right.
            let (h, what) = json_text(&seed[8..8 + n], rng);
            let mut v = (h.len() as u64).to_le_bytes().to_vec();
            v.extend_from_slice(&h);
            v.extend_from_slice(&seed[8 + n..]);
            (v, format!("header: {what}"))
        }
        2 => {
            // Mutate the header and leave the stale length.
            let (h, what) = json_text(&seed[8..8 + n], rng);
            let mut v = seed[..8].to_vec();
            v.extend_from_slice(&h);
            v.extend_from_slice(&seed[8 + n..]);
            (v, format!("header, stale length: {what}"))
        }
        _ => {
            let mut v = seed.to_vec();
            let cut = 8 + n + rng.below(seed.len() - 8 - n + 1);
            v.truncate(cut);
            (v, format!("data cut at {cut}"))
        }
    }
}

/// Paths (object keys and array indices) of every node, preorder.
fn nodes(v: &Value, path: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(path.clone());
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                path.push(Step::Key(k.clone()));
                nodes(x, path, out);
                path.pop();
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate().take(64) {
                path.push(Step::Index(i));
                nodes(x, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Index(usize),
}

fn node_mut<'a>(v: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    let mut cur = v;
    for s in path {
        cur = match (s, cur) {
            (Step::Key(k), Value::Object(o)) => o.get_mut(k)?,
            (Step::Index(i), Value::Array(a)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn hostile(rng: &mut Rng) -> (String, &'static str) {
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    match rng.below(18) {
        0 => ("-1".into(), "-1"),
        1 => ("0".into(), "0"),
        2 => ("1e308".into(), "1e308"),
        3 => ("-1e308".into(), "-1e308"),
        4 => ("1e400".into(), "1e400"),
        5 => ("18446744073709551615".into(), "u64::MAX"),
        6 => ("18446744073709551616".into(), "u64::MAX+1"),
        7 => ("-9223372036854775809".into(), "i64::MIN-1"),
        8 => ("4294967296".into(), "2^32"),
        9 => ("\"\"".into(), "\"\""),
        10 => ("null".into(), "null"),
        11 => ("true".into(), "true"),
        12 => ("[]".into(), "[]"),
        13 => ("{}".into(), "{}"),
        14 => (deep(100), "100-deep array"),
        15 => (deep(100_000), "100000-deep array"),
        16 => (format!("\"{}\"", "x".repeat(100_000)), "100 kB string"),
        _ => ("1.5".into(), "1.5"),
    }
}

/// Serializes `v`, writing `extra` (raw JSON text) for the node at `target`.
fn write_with(v: &Value, path: &mut Vec<usize>, target: &[usize], mode: &Edit, out: &mut String) {
    let here = path.as_slice() == target;
    match v {
        Value::Object(o) => {
            out.push('{');
            let mut first = true;
            if here {
                let Edit::DupKey(k, x) = mode;
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push(':');
                out.push_str(x);
                first = false;
            }
            for (i, (k, x)) in o.iter().enumerate() {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push(':');
                path.push(i);
                write_with(x, path, target, mode, out);
                path.pop();
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                path.push(i);
                write_with(x, path, target, mode, out);
                path.pop();
            }
            out.push(']');
        }
        other => out.push_str(&serde_json::to_string(other).unwrap_or_default()),
    }
}

enum Edit {
    DupKey(String, String),
}

fn json_text(seed: &[u8], rng: &mut Rng) -> (Vec<u8>, String) {
    let Ok(mut v) = serde_json::from_slice::<Value>(seed) else {
        return text(seed, rng);
    };
    let mut all = Vec::new();
    nodes(&v, &mut Vec::new(), &mut all);
    match rng.below(7) {
        0 | 1 => {
            // A node replaced by a hostile value (written as text: some are not valid serde values).
            let path = rng.pick(&all).clone();
            let (x, what) = hostile(rng);
            let marker = "\u{1}PUPPETLENS_FUZZ\u{1}";
            if let Some(n) = node_mut(&mut v, &path) {
                *n = Value::String(marker.into());
            }
            let t = serde_json::to_string(&v).unwrap_or_default();
            let t = t.replacen(&serde_json::to_string(marker).unwrap_or_default(), &x, 1);
            (t.into_bytes(), format!("{path:?} = {what}"))
        }
        2 => {
            // A key removed.
            let keyed: Vec<&Vec<Step>> = all
                .iter()
                .filter(|p| matches!(p.last(), Some(Step::Key(_))))
                .collect();
            if keyed.is_empty() {
                return text(seed, rng);
            }
            let path = (*rng.pick(&keyed)).clone();
            if let (Some(Step::Key(k)), Some(parent)) =
                (path.last(), node_mut(&mut v, &path[..path.len() - 1]))
            {
                if let Value::Object(o) = parent {
                    o.remove(k);
                }
            }
            (
                serde_json::to_vec(&v).unwrap_or_default(),
                format!("removed {path:?}"),
            )
        }
        3 => {
            // A key duplicated with another value (serde_json keeps the last one).
            let mut flat = Vec::new();
            flat_paths(&v, &mut Vec::new(), &mut flat);
            let objects: Vec<&Vec<usize>> =
                flat.iter().filter(|(_, o)| *o).map(|(p, _)| p).collect();
            if objects.is_empty() {
                return text(seed, rng);
            }
            let target = (*rng.pick(&objects)).clone();
            let key = first_key(&v, &target).unwrap_or_else(|| "model_type".into());
            let (x, what) = hostile(rng);
            let mut out = String::new();
            write_with(
                &v,
                &mut Vec::new(),
                &target,
                &Edit::DupKey(key.clone(), x),
                &mut out,
            );
            (out.into_bytes(), format!("duplicated key `{key}` = {what}"))
        }
        4 => {
            // Cut at a token boundary.
            let cuts: Vec<usize> = seed
                .iter()
                .enumerate()
                .filter(|(_, b)| matches!(b, b',' | b':' | b'{' | b'}' | b'[' | b']' | b'"'))
                .map(|(i, _)| i)
                .collect();
            let at = if cuts.is_empty() {
                rng.below(seed.len() + 1)
            } else {
                *rng.pick(&cuts)
            };
            (seed[..at].to_vec(), format!("cut at token boundary {at}"))
        }
        5 => {
            // Invalid UTF-8 inside a string.
            let quotes: Vec<usize> = seed
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'"')
                .map(|(i, _)| i + 1)
                .collect();
            let at = if quotes.is_empty() {
                rng.below(seed.len() + 1)
            } else {
                *rng.pick(&quotes)
            };
            let mut out = seed.to_vec();
            let bad = *rng.pick(BAD_UTF8);
            out.splice(at..at, bad.iter().copied());
            (out, format!("invalid UTF-8 at {at}"))
        }
        _ => {
            // The whole document nested deep.
            let n = *rng.pick(&[64usize, 200, 10_000, 1_000_000]);
            let mut out = "[".repeat(n).into_bytes();
            out.extend_from_slice(seed);
            out.extend_from_slice("]".repeat(n).as_bytes());
            (out, format!("nested {n} deep"))
        }
    }
}

/// Index paths of every node, with whether it is an object.
fn flat_paths(v: &Value, path: &mut Vec<usize>, out: &mut Vec<(Vec<usize>, bool)>) {
    out.push((path.clone(), v.is_object()));
    match v {
        Value::Object(o) => {
            for (i, x) in o.values().enumerate() {
                path.push(i);
                flat_paths(x, path, out);
                path.pop();
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate().take(64) {
                path.push(i);
                flat_paths(x, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn first_key(v: &Value, path: &[usize]) -> Option<String> {
    let mut cur = v;
    for &i in path {
        cur = match cur {
            Value::Object(o) => o.values().nth(i)?,
            Value::Array(a) => a.get(i)?,
            _ => return None,
        };
    }
    match cur {
        Value::Object(o) => {
            let n = o.len();
            o.keys().nth(n / 2).cloned()
        }
        _ => None,
    }
}

fn jsonl(seed: &[u8], rng: &mut Rng) -> (Vec<u8>, String) {
    let text_s = String::from_utf8_lossy(seed).into_owned();
    let mut lines: Vec<String> = text_s.lines().map(str::to_string).collect();
    if lines.is_empty() || rng.chance(1, 3) {
        return text(seed, rng);
    }
    let i = rng.below(lines.len());
    let (m, what) = json_text(lines[i].as_bytes(), rng);
    lines[i] = String::from_utf8_lossy(&m).replace('\n', " ");
    let mut out = lines.join("\n").into_bytes();
    if rng.chance(1, 8) {
        // Raw bytes (invalid UTF-8) survive in one line.
        let bad = *rng.pick(BAD_UTF8);
        out.extend_from_slice(bad);
    }
    (out, format!("line {}: {what}", i + 1))
}

fn text(seed: &[u8], rng: &mut Rng) -> (Vec<u8>, String) {
    let mut lines: Vec<Vec<u8>> = seed.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    let n = lines.len();
    let what = match rng.below(9) {
        0 => {
            let i = rng.below(n);
            lines.remove(i);
            format!("dropped line {}", i + 1)
        }
        1 => {
            let i = rng.below(n);
            let l = lines[i].clone();
            lines.insert(i, l);
            format!("duplicated line {}", i + 1)
        }
        2 => {
            let i = rng.below(n);
            let l = &mut lines[i];
            let at = rng.below(l.len() + 1);
            l.truncate(at);
            format!("cut line {} at {at}", i + 1)
        }
        3 => {
            let i = rng.below(n);
            let bad = *rng.pick(BAD_UTF8);
            let l = &mut lines[i];
            let at = rng.below(l.len() + 1);
            l.splice(at..at, bad.iter().copied());
            format!("invalid UTF-8 in line {}", i + 1)
        }
        4 => {
            let i = rng.below(n + 1);
            const JUNK: &[&[u8]] = &[
                b"",
                b",,,,",
                b"\"",
                b"\"unterminated,1",
                b"{",
                b"[",
                b"null",
                b"a,b,c,d,e,f,g,h",
                b"\r",
                b"\x00\x00\x00",
                b"statement,label",
                b"\"x\"\"y\",1,a,train",
            ];
            let junk: &[u8] = *rng.pick(JUNK);
            lines.insert(i.min(lines.len()), junk.to_vec());
            format!(
                "inserted {:?} at line {}",
                String::from_utf8_lossy(junk),
                i + 1
            )
        }
        5 => {
            let i = rng.below(n);
            lines[i].extend(std::iter::repeat_n(b'a', 1 << 20));
            format!("line {} + 1 MiB", i + 1)
        }
        6 => {
            for l in &mut lines {
                l.push(b'\r');
            }
            "CRLF".into()
        }
        7 => {
            let i = rng.below(n);
            let j = rng.below(n);
            lines.swap(i, j);
            format!("swapped lines {} and {}", i + 1, j + 1)
        }
        _ => return raw(seed, &[], &[], rng),
    };
    (lines.join(&b'\n'), what)
}

const TEMPLATE_BITS: &[&str] = &[
    "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{{ 'x' * 100000000 }}",
    "{% set s = 'x' * 1000000 %}{% for i in range(1000) %}{{ s }}{% endfor %}",
    "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "{% include '/etc/passwd' %}",
    "{% import 'x.j2' as x %}",
    "{{ raise_exception('hostile') }}",
    "{{ messages[99999999].content }}",
    "{{ messages[0].content * 99999999 }}",
    "{% set ns = namespace(x=[]) %}{% for i in range(100000) %}{% set ns.x = ns.x + [i] %}{% endfor %}",
    "{%",
    "{{",
    "{% endfor %}",
    "{% if %}",
    "{{ ((((((((((((((((((((((((((((((((((((((((1)))))))))))))))))))))))))))))))))))))))) }}",
    "{{ env }}{{ config }}{{ self }}",
    "{{ range(10000000) | list | length }}",
    "{{ messages | tojson }}",
    "\u{0}",
];

fn template(seed: &[u8], rng: &mut Rng) -> (Vec<u8>, String) {
    if rng.chance(1, 4) {
        return text(seed, rng);
    }
    let mut v = seed.to_vec();
    let at = rng.below(v.len() + 1);
    let bit = *rng.pick(TEMPLATE_BITS);
    let deep;
    let bit = if rng.chance(1, 10) {
        let n = *rng.pick(&[200usize, 10_000]);
        deep = format!("{}{}", "{% if true %}".repeat(n), "{% endif %}".repeat(n));
        deep.as_str()
    } else {
        bit
    };
    v.splice(at..at, bit.bytes());
    (
        v,
        format!("inserted {:?} at {at}", &bit[..bit.len().min(40)]),
    )
}
