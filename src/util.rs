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
    tmp.set_file_name(format!(".{name}.tmp{}", std::process::id()));
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

/// Writes bytes atomically.
pub(crate) fn atomic_write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    atomic_write(path, |tmp| {
        std::fs::write(tmp, bytes).map_err(|e| Error::io(tmp, e))
    })
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
