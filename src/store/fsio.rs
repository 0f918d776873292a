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

/// The directory `path` is in: `.` for a bare file name, whose `parent()` is empty.
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
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

/// How many times a write starts again when its temporary file vanished before the rename.
const ATTEMPTS: usize = 8;

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync of the directory.
/// Readers see either the old file (or none) or the complete new one. Every store file is
/// written this way; it is public for caches and side files that want the same guarantee.
///
/// Another process that starts on the same run removes the temporary files it finds (a killed
/// writer's leftovers), and it cannot tell a live writer's from a dead one's on shared
/// storage; a writer whose temporary file was removed before its rename writes it again (up to
/// 8 times), so two processes featurising the same blocks at once (a double submit) both
/// succeed and leave the same bytes.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, bytes, &|_| {})
}

/// [`write_atomic`] calling `before_rename` with the temporary file's path before each rename
/// (tests remove it there, as a concurrent clean-up would).
fn write_atomic_with(path: &Path, bytes: &[u8], before_rename: &dyn Fn(&Path)) -> Result<()> {
    for attempt in 1.. {
        let tmp = write_temp(path, bytes)?;
        before_rename(&tmp);
        match fs::rename(&tmp, path) {
            Ok(()) => break,
            Err(e) if vanished(&e, &tmp) && attempt < ATTEMPTS => continue,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(io_err(path, e));
            }
        }
    }
    sync_dir(parent_dir(path))
}

/// True when `e` says that the temporary file `tmp` is gone (removed by another process's
/// clean-up), rather than a real failure of the target.
fn vanished(e: &std::io::Error, tmp: &Path) -> bool {
    e.kind() == std::io::ErrorKind::NotFound && !tmp.exists()
}

/// Creates `path` with `bytes` only if it does not exist (atomically, also across processes
/// on shared storage: temporary file, then a hard link, which fails if the name is taken).
/// Returns `false` if the file already existed (and leaves it untouched).
pub(crate) fn create_exclusive(path: &Path, bytes: &[u8]) -> Result<bool> {
    for attempt in 1.. {
        let tmp = write_temp(path, bytes)?;
        let res = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        match res {
            Ok(()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            // The temporary file was removed by a concurrent clean-up: write it again.
            Err(e) if vanished(&e, &tmp) && attempt < ATTEMPTS => continue,
            Err(e) => return Err(io_err(path, e)),
        }
    }
    sync_dir(parent_dir(path))?;
    Ok(true)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_bare_file_name_is_in_the_current_directory() {
        assert_eq!(parent_dir(Path::new("top.html")), Path::new("."));
        assert_eq!(parent_dir(Path::new("out/top.html")), Path::new("out"));
        assert_eq!(parent_dir(Path::new("/top.html")), Path::new("/"));
    }

    #[test]
    fn a_write_whose_temporary_file_is_removed_writes_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("block-0.feat");
        let removed = Cell::new(0);
        // A concurrent process's clean-up removes the temporary file twice before the rename.
        let remove = |tmp: &Path| {
            if removed.get() < 2 {
                fs::remove_file(tmp).unwrap();
                removed.set(removed.get() + 1);
            }
        };
        write_atomic_with(&path, b"features", &remove).unwrap();
        assert_eq!(removed.get(), 2);
        assert_eq!(fs::read(&path).unwrap(), b"features");
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn a_write_whose_temporary_file_always_vanishes_fails_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("block-0.feat");
        let remove = |tmp: &Path| fs::remove_file(tmp).unwrap();
        match write_atomic_with(&path, b"features", &remove) {
            Err(Error::Io { path: p, source }) => {
                assert_eq!(p, path);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("expected Error::Io, got {other:?}"),
        }
        assert!(!path.exists());
    }

    #[test]
    fn exclusive_creation_refuses_a_taken_name_and_keeps_the_first_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.trak");
        assert!(create_exclusive(&path, b"first").unwrap());
        assert!(!create_exclusive(&path, b"second").unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"first");
    }
}
