//! Small shared helpers.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Writes a file atomically: `write` fills a temporary file beside `path`, then it is renamed.
pub(crate) fn atomic_write(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
    }
    let mut tmp: PathBuf = path.to_path_buf();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique per process and call, so that concurrent writers of one path never share a file.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tmp.set_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()));
    let res = write(&tmp);
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return res;
    }
    // Some writers (safetensors) create private temporary files; the output is an ordinary file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Writes `bytes` to `path` atomically: through a temporary file beside it and a rename, so that
/// a reader (or a run killed half-way) never sees a half-written file. Creates the parent
/// directory. Used for every output file puppetlens writes.
///
/// ```
/// let path = std::env::temp_dir().join("puppetlens-doc-write-atomic.csv");
/// puppetlens::write_atomic(&path, b"layer,p\n0,0.5\n")?;
/// assert_eq!(std::fs::read_to_string(&path).unwrap(), "layer,p\n0,0.5\n");
/// # Ok::<(), puppetlens::Error>(())
/// ```
pub fn atomic_write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    atomic_write(path, |tmp| {
        std::fs::write(tmp, bytes).map_err(|e| Error::io(tmp, e))
    })
}

/// A progress bar on stderr with the rate and an ETA (indicatif), drawn only when `on` and stderr
/// is a terminal (hidden in CI logs and pipes).
pub(crate) struct Progress(indicatif::ProgressBar);

impl Progress {
    /// A bar of `total` steps labelled `label`.
    pub(crate) fn new(label: &str, total: usize, on: bool) -> Self {
        let bar = if on {
            indicatif::ProgressBar::new(total as u64)
        } else {
            indicatif::ProgressBar::hidden()
        };
        let style = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} ({per_sec}, ETA {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(label.to_string());
        Self(bar)
    }

    /// `n` more steps done.
    pub(crate) fn advance(&mut self, n: usize) {
        self.0.inc(n as u64);
    }

    /// A line on stderr, printed above the bar when it is drawn.
    pub(crate) fn say(&self, msg: &str) {
        if self.0.is_hidden() {
            eprintln!("{msg}");
        } else {
            self.0.println(msg);
        }
    }

    /// Leaves the finished bar on the terminal.
    pub(crate) fn finish(&self) {
        self.0.finish();
    }
}

/// Indices of items grouped into batches of similar length (sorted by length, stable), so that
/// left padding wastes little compute. Callers restore the original order.
pub(crate) fn length_batches(lens: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let mut idx: Vec<usize> = (0..lens.len()).collect();
    idx.sort_by_key(|&i| lens[i]);
    idx.chunks(batch_size.max(1)).map(|c| c.to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_batches_group_similar_lengths_and_cover_everything() {
        let b = length_batches(&[5, 1, 4, 1, 9], 2);
        assert_eq!(b, vec![vec![1, 3], vec![2, 0], vec![4]]);
    }
}
