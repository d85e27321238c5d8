//! A bounded GGUF header reader.
//!
//! GGUF files come from anywhere, so every count and length in the header is checked before
//! anything is allocated: a string or array may not claim more bytes than remain in the file, a
//! tensor's shape may not overflow, its data must lie inside the file, and the alignment must be a
//! power of two. Duplicate metadata keys and tensor names are rejected (which one would win is
//! undefined). The result is candle's [`Content`], so tensors are read with candle's
//! [`TensorInfo::read`](candle_core::quantized::gguf_file::TensorInfo::read).
//!
//! Limits (llama.cpp's where it has one): strings up to 1 GiB, arrays nested at most 8 deep,
//! tensors of at most 4 dimensions and 2^40 elements.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, TensorInfo, Value, VersionedMagic};
use candle_core::quantized::GgmlDType;

use crate::{Error, Result};

const MAX_STRING: u64 = 1 << 30;
const MAX_DEPTH: usize = 8;
const MAX_DIMS: u32 = 4;
const MAX_ELEMS: u64 = 1 << 40;
const MAX_ALIGNMENT: u64 = 1 << 16;
const DEFAULT_ALIGNMENT: u64 = 32;

/// Reads the header of the GGUF file at `path`; returns it with a reader over the file.
pub(crate) fn read(path: &Path) -> Result<(Content, BufReader<File>)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut r = Reader {
        inner: BufReader::new(file),
        pos: 0,
        size,
        path: path.to_path_buf(),
        magic: VersionedMagic::GgufV3,
    };
    let content = r.content()?;
    let mut reader = r.inner;
    reader
        .seek(SeekFrom::Start(0))
        .map_err(|e| Error::io(path, e))?;
    Ok((content, reader))
}

struct Reader {
    inner: BufReader<File>,
    pos: u64,
    size: u64,
    path: PathBuf,
    magic: VersionedMagic,
}

/// The GGUF value type ids (`gguf_type` in llama.cpp).
#[derive(Clone, Copy, Debug)]
enum Kind {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    Str,
    Array,
    U64,
    I64,
    F64,
}

impl Reader {
    fn bad(&self, msg: impl Into<String>) -> Error {
        Error::Checkpoint {
            path: self.path.clone(),
            msg: msg.into(),
        }
    }

    fn remaining(&self) -> u64 {
        self.size.saturating_sub(self.pos)
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        if self.remaining() < N as u64 {
            return Err(self.bad(format!(
                "truncated at byte {} while reading {what}",
                self.pos
            )));
        }
        self.inner
            .read_exact(&mut b)
            .map_err(|e| self.bad(format!("reading {what} at byte {}: {e}", self.pos)))?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes::<4>(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes::<8>(what)?))
    }

    /// A length or count: u32 in GGUF v1, u64 after.
    fn len(&mut self, what: &str) -> Result<u64> {
        match self.magic {
            VersionedMagic::GgufV1 => Ok(self.u32(what)? as u64),
            _ => self.u64(what),
        }
    }

    fn prefix(&self) -> u64 {
        match self.magic {
            VersionedMagic::GgufV1 => 4,
            _ => 8,
        }
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let at = self.pos;
        let n = self.len(what)?;
        if n > MAX_STRING || n > self.remaining() {
            return Err(self.bad(format!(
                "{what} at byte {at} claims {n} bytes, but {} remain in the file",
                self.remaining()
            )));
        }
        let mut v = vec![0u8; n as usize];
        self.inner
            .read_exact(&mut v)
            .map_err(|e| self.bad(format!("reading {what} at byte {at}: {e}")))?;
        self.pos += n;
        // As candle does: trailing NULs are dropped and invalid UTF-8 is replaced (real files have both).
        while v.last() == Some(&0) {
            v.pop();
        }
        Ok(String::from_utf8_lossy(&v).into_owned())
    }

    fn kind(&mut self, what: &str) -> Result<Kind> {
        let at = self.pos;
        let id = self.u32(what)?;
        Ok(match id {
            0 => Kind::U8,
            1 => Kind::I8,
            2 => Kind::U16,
            3 => Kind::I16,
            4 => Kind::U32,
            5 => Kind::I32,
            6 => Kind::F32,
            7 => Kind::Bool,
            8 => Kind::Str,
            9 => Kind::Array,
            10 => Kind::U64,
            11 => Kind::I64,
            12 => Kind::F64,
            other => {
                return Err(self.bad(format!("{what} at byte {at}: unknown value type {other}")))
            }
        })
    }

    /// The fewest bytes one value of `k` takes on disk.
    fn min_size(&self, k: Kind) -> u64 {
        match k {
            Kind::U8 | Kind::I8 | Kind::Bool => 1,
            Kind::U16 | Kind::I16 => 2,
            Kind::U32 | Kind::I32 | Kind::F32 => 4,
            Kind::U64 | Kind::I64 | Kind::F64 => 8,
            Kind::Str => self.prefix(),
            Kind::Array => 4 + self.prefix(),
        }
    }

    fn value(&mut self, k: Kind, key: &str, depth: usize) -> Result<Value> {
        Ok(match k {
            Kind::U8 => Value::U8(self.bytes::<1>(key)?[0]),
            Kind::I8 => Value::I8(self.bytes::<1>(key)?[0] as i8),
            Kind::U16 => Value::U16(u16::from_le_bytes(self.bytes::<2>(key)?)),
            Kind::I16 => Value::I16(i16::from_le_bytes(self.bytes::<2>(key)?)),
            Kind::U32 => Value::U32(self.u32(key)?),
            Kind::I32 => Value::I32(i32::from_le_bytes(self.bytes::<4>(key)?)),
            Kind::F32 => Value::F32(f32::from_le_bytes(self.bytes::<4>(key)?)),
            Kind::U64 => Value::U64(self.u64(key)?),
            Kind::I64 => Value::I64(i64::from_le_bytes(self.bytes::<8>(key)?)),
            Kind::F64 => Value::F64(f64::from_le_bytes(self.bytes::<8>(key)?)),
            Kind::Bool => match self.bytes::<1>(key)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => {
                    return Err(
                        self.bad(format!("metadata `{key}`: bool byte {b} (must be 0 or 1)"))
                    )
                }
            },
            Kind::Str => Value::String(self.string(&format!("metadata `{key}`"))?),
            Kind::Array => {
                if depth >= MAX_DEPTH {
                    return Err(self.bad(format!(
                        "metadata `{key}`: arrays nested deeper than {MAX_DEPTH}"
                    )));
                }
                let elem = self.kind(&format!("metadata `{key}` element type"))?;
                let at = self.pos;
                let n = self.len(&format!("metadata `{key}` length"))?;
                let need = n.saturating_mul(self.min_size(elem));
                if need > self.remaining() {
                    return Err(self.bad(format!(
                        "metadata `{key}` at byte {at}: an array of {n} elements needs at least {need} bytes, but {} remain",
                        self.remaining()
                    )));
                }
                // `need` fits in the file, so `n` is bounded by the file's size.
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(elem, key, depth + 1)?);
                }
                Value::Array(v)
            }
        })
    }

    fn content(&mut self) -> Result<Content> {
        let magic = self.u32("the magic")?;
        if magic != 0x4655_4747 && magic != 0x4747_5546 {
            return Err(self.bad(format!("not a GGUF file (magic 0x{magic:08x})")));
        }
        self.magic = match self.u32("the version")? {
            1 => VersionedMagic::GgufV1,
            2 => VersionedMagic::GgufV2,
            3 => VersionedMagic::GgufV3,
            v => return Err(self.bad(format!("unsupported GGUF version {v}"))),
        };
        let n_tensors = self.len("the tensor count")?;
        let n_kv = self.len("the metadata count")?;
        let p = self.prefix();
        let need = n_kv
            .saturating_mul(p + 4 + 1)
            .saturating_add(n_tensors.saturating_mul(p + 4 + 4 + 8));
        if need > self.remaining() {
            return Err(self.bad(format!(
                "the header declares {n_tensors} tensors and {n_kv} metadata entries, which need at least {need} bytes, but {} remain",
                self.remaining()
            )));
        }
        let mut metadata = HashMap::new();
        for _ in 0..n_kv {
            let key = self.string("a metadata key")?;
            let k = self.kind(&format!("metadata `{key}` type"))?;
            let v = self.value(k, &key, 0)?;
            if metadata.insert(key.clone(), v).is_some() {
                return Err(self.bad(format!("metadata key `{key}` appears twice")));
            }
        }
        let mut infos: Vec<(String, TensorInfo, u64)> = Vec::new();
        let mut names = std::collections::HashSet::new();
        for _ in 0..n_tensors {
            let name = self.string("a tensor name")?;
            let n_dims = self.u32(&format!("tensor `{name}` rank"))?;
            if n_dims > MAX_DIMS {
                return Err(self.bad(format!(
                    "tensor `{name}` has {n_dims} dimensions (at most {MAX_DIMS})"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(self.len(&format!("tensor `{name}` shape"))?);
            }
            let elems = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .filter(|&n| n <= MAX_ELEMS)
                .ok_or_else(|| {
                    self.bad(format!(
                        "tensor `{name}` has shape {dims:?}, more than 2^40 elements"
                    ))
                })?;
            let type_at = self.pos;
            let id = self.u32(&format!("tensor `{name}` type"))?;
            let dtype = ggml_dtype(id).ok_or_else(|| Error::UnsupportedTensorType {
                path: self.path.clone(),
                name: name.clone(),
                dtype: format!("ggml type id {id} (at byte {type_at})"),
            })?;
            let offset = self.u64(&format!("tensor `{name}` offset"))?;
            let block = dtype.block_size() as u64;
            if elems % block != 0 {
                return Err(self.bad(format!(
                    "tensor `{name}`: {elems} elements is not a whole number of {dtype:?} blocks of {block}"
                )));
            }
            let bytes = elems / block * dtype.type_size() as u64;
            if !names.insert(name.clone()) {
                return Err(self.bad(format!("tensor `{name}` appears twice")));
            }
            dims.reverse(); // GGUF stores the innermost dimension first
            let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
            infos.push((
                name,
                TensorInfo {
                    ggml_dtype: dtype,
                    shape: candle_core::Shape::from(shape),
                    offset,
                },
                bytes,
            ));
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => {
                let a = match v {
                    Value::U8(x) => Some(*x as u64),
                    Value::U16(x) => Some(*x as u64),
                    Value::U32(x) => Some(*x as u64),
                    Value::U64(x) => Some(*x),
                    Value::I8(x) => u64::try_from(*x).ok(),
                    Value::I16(x) => u64::try_from(*x).ok(),
                    Value::I32(x) => u64::try_from(*x).ok(),
                    Value::I64(x) => u64::try_from(*x).ok(),
                    _ => None,
                };
                match a {
                    Some(a) if a.is_power_of_two() && a <= MAX_ALIGNMENT => a,
                    _ => {
                        return Err(Error::Config {
                            path: self.path.clone(),
                            field: "general.alignment".into(),
                            msg: format!("{v:?} (must be a power of two up to {MAX_ALIGNMENT})"),
                        })
                    }
                }
            }
        };
        let data_offset = self.pos.div_ceil(alignment) * alignment;
        for (name, info, bytes) in &infos {
            let start = data_offset.checked_add(info.offset);
            let end = start.and_then(|s| s.checked_add(*bytes));
            if !matches!(end, Some(e) if e <= self.size) {
                return Err(self.bad(format!(
                    "tensor `{name}` needs {bytes} bytes at offset {} of the data, past the end of the file ({} bytes)",
                    info.offset, self.size
                )));
            }
        }
        Ok(Content {
            magic: self.magic,
            metadata,
            tensor_infos: infos.into_iter().map(|(n, i, _)| (n, i)).collect(),
            tensor_data_offset: data_offset,
        })
    }
}

/// candle's type for a ggml type id (`GgmlDType::from_u32` is private to candle).
fn ggml_dtype(id: u32) -> Option<GgmlDType> {
    Some(match id {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        9 => GgmlDType::Q8_1,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        15 => GgmlDType::Q8K,
        30 => GgmlDType::BF16,
        _ => return None,
    })
}
