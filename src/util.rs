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

/// Makes glibc's malloc keep freed memory for reuse, once per process.
///
/// By default glibc hands every freed block above its mmap threshold (128 KiB, adapting up to
/// 32 MiB) back to the operating system, and trims the top of the heap once 128 KiB are free
/// there; a forward pass or a training step, which allocates and frees tensors of megabytes at
/// every op, then pays a page fault and a zeroed page for every 4 KiB of every fresh tensor
/// (in a profile of crosscoder training, 11% of the time in page faults and page clearing).
/// puppetlens raises the mmap threshold to its maximum (32 MiB) and the trim threshold to
/// 1 GiB when it loads a model or trains a dictionary, as the caching allocators of ML runtimes
/// do: the resident memory then stays near its peak. Measured (benches/dictionary.rs, BENCHMARKS.md):
/// crosscoder training 1.7x faster. `PUPPETLENS_MALLOC=default` leaves malloc as it is; a program
/// with its own global allocator is not affected either way.
pub(crate) fn tune_malloc() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var("PUPPETLENS_MALLOC").is_ok_and(|v| v == "default") {
            return;
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only sets two of glibc's malloc parameters; it is called before or
        // between allocations like any other libc call and has no memory-safety preconditions.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        }
    });
}

/// Quotes a CSV field when needed (RFC 4180).
pub(crate) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// An exclusive lock on a file, held until dropped (the operating system releases it when the
/// process ends, however it ends).
pub(crate) struct FileLock {
    _file: std::fs::File,
}

/// Takes the exclusive lock on `path` (created if absent). When another process holds it, says so
/// on stderr (naming `what`) and waits for it.
pub(crate) fn lock_file(path: &Path, what: &str) -> Result<FileLock> {
    use fs2::FileExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    match FileExt::try_lock_exclusive(&file) {
        Ok(()) => {}
        Err(e) if e.kind() == fs2::lock_contended_error().kind() => {
            crate::progress::note(&format!(
                "puppetlens: another process is writing {what}; waiting for its lock ({})",
                path.display()
            ));
            FileExt::lock_exclusive(&file).map_err(|e| Error::io(path, e))?;
        }
        Err(e) => return Err(Error::io(path, e)),
    }
    Ok(FileLock { _file: file })
}

/// Removes the leftovers of killed writers in `dir`: hidden entries whose names start with one of
/// `prefixes` (call it only while holding the lock that every writer of `dir` takes).
pub(crate) fn remove_stale(dir: &Path, prefixes: &[&str]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if prefixes.iter().any(|p| name.starts_with(p)) {
            let path = entry.path();
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
    }
}

/// Replaces the directory `dir` as a unit: `fill` writes a fresh sibling directory, which then
/// takes `dir`'s place (the old one is moved aside and removed). A reader sees the old files or
/// the new ones, never a mix; a run killed between the two renames leaves `dir` absent and its
/// previous contents in a hidden sibling. `dir` must be absent or hold only files named in
/// `owned` (so that nothing else is ever deleted).
pub(crate) fn atomic_write_dir(
    dir: &Path,
    owned: &[&str],
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    if dir.exists() {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !owned.contains(&name.as_str()) {
                return Err(Error::InvalidArgument {
                    name: dir.display().to_string(),
                    msg: format!(
                        "holds `{name}`, which puppetlens did not write here; choose an empty or new directory"
                    ),
                });
            }
        }
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tag = format!("{}-{n}", std::process::id());
    let tmp = parent.join(format!(".{name}.tmp-{tag}"));
    let old = parent.join(format!(".{name}.old-{tag}"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let had_old = match std::fs::rename(dir, &old) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(Error::io(dir, e));
        }
    };
    std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
    if had_old {
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(())
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
/// is a terminal (hidden in CI logs and pipes); or, when a program installed one, reports to the
/// sink of [`crate::progress`] instead.
pub(crate) struct Progress {
    bar: indicatif::ProgressBar,
    label: String,
    total: usize,
    done: usize,
    /// The sink at creation, when `on` (a silenced stage reports nothing).
    sink: Option<std::sync::Arc<dyn Fn(&crate::progress::Event) + Send + Sync>>,
    finished: bool,
}

impl Progress {
    /// A bar of `total` steps labelled `label`.
    pub(crate) fn new(label: &str, total: usize, on: bool) -> Self {
        use crate::progress::Event;
        let sink = if on { crate::progress::sink() } else { None };
        let bar = if on && sink.is_none() {
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
        if let Some(s) = &sink {
            s(&Event::Start { label, total });
        }
        Self {
            bar,
            label: label.to_string(),
            total,
            done: 0,
            sink,
            finished: false,
        }
    }

    /// `n` more steps done.
    pub(crate) fn advance(&mut self, n: usize) {
        self.done += n;
        self.bar.inc(n as u64);
        if let Some(s) = &self.sink {
            s(&crate::progress::Event::Advance {
                label: &self.label,
                done: self.done,
                total: self.total,
            });
        }
    }

    /// A line on stderr (or the sink), printed above the bar when it is drawn.
    pub(crate) fn say(&self, msg: &str) {
        if !self.bar.is_hidden() {
            self.bar.println(msg);
        } else {
            crate::progress::note(msg);
        }
    }

    /// Leaves the finished bar on the terminal.
    pub(crate) fn finish(&mut self) {
        self.bar.finish();
        self.report_finish();
    }

    fn report_finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        if let Some(s) = &self.sink {
            s(&crate::progress::Event::Finish {
                label: &self.label,
                done: self.done,
                total: self.total,
            });
        }
    }
}

impl Drop for Progress {
    /// A stage left early (an error) still ends in the sink.
    fn drop(&mut self) {
        self.report_finish();
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
