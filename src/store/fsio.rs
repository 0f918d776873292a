//! File-system primitives of the store: whole-file reads, atomic writes (temporary file,
//! fsync, rename, fsync of the directory), exclusive creation (hard link), temporary names and
//! their clean-up.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// [`Error::Io`] naming `path`.
pub(crate) fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a whole file.
pub(crate) fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    read_bytes_into(path, &mut buf)?;
    Ok(buf)
}

/// Reads a whole file into `buf` (cleared first; its allocation is reused, and sized from
/// the file's length so that it is not grown step by step).
pub(crate) fn read_bytes_into(path: &Path, buf: &mut Vec<u8>) -> Result<()> {
    let mut f = File::open(path).map_err(|e| io_err(path, e))?;
    let len = f.metadata().map_err(|e| io_err(path, e))?.len();
    buf.clear();
    buf.reserve(usize::try_from(len).unwrap_or(0));
    f.read_to_end(buf).map_err(|e| io_err(path, e))?;
    Ok(())
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh temporary name next to `path`: `<name>.tmp-<pid>-<counter>`.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}-{n}", std::process::id()));
    path.with_file_name(name)
}

/// True for names made by [`temp_path`].
pub(crate) fn is_temp_name(name: &str) -> bool {
    name.contains(".tmp-")
}

fn write_temp(path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let tmp = temp_path(path);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| io_err(&tmp, e))?;
    let res = f.write_all(bytes).and_then(|_| f.sync_all());
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(&tmp, e));
    }
    Ok(tmp)
}

/// Makes a rename or link in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    // Directories cannot be opened for syncing on every platform; where they can, a failure
    // is a real I/O error.
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync of the directory.
/// Readers see either the old file (or none) or the complete new one. Every store file is
/// written this way; it is public for caches and side files that want the same guarantee.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = write_temp(path, bytes)?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(path, e));
    }
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Creates `path` with `bytes` only if it does not exist (atomically, also across processes
/// on shared storage: temporary file, then a hard link, which fails if the name is taken).
/// Returns `false` if the file already existed (and leaves it untouched).
pub(crate) fn create_exclusive(path: &Path, bytes: &[u8]) -> Result<bool> {
    let tmp = write_temp(path, bytes)?;
    let res = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match res {
        Ok(()) => {
            sync_dir(path.parent().unwrap_or(Path::new(".")))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_err(path, e)),
    }
}

/// Removes the temporary files in `dir` (left by killed writers) whose names satisfy `which`.
pub(crate) fn remove_temps(dir: &Path, which: impl Fn(&str) -> bool) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_temp_name(name) && which(name) && entry.path().is_file() {
            let p = entry.path();
            fs::remove_file(&p).map_err(|e| io_err(&p, e))?;
        }
    }
    Ok(())
}
