//! Life locks: a lock file that a process holds for its whole life
//! (`brain/brain.lock`, `workers/<id>.lock`), and the probe that asks whether
//! anyone holds one now.
//!
//! The kernel drops a lock when its holder dies, however it dies, so a lock that
//! can be taken means nobody alive holds it: that is how the CLI and the brain tell a
//! live brain or worker from a dead one (docs/architecture.md, "Dead workers").

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::QueueError;
use crate::fsio;

/// A life lock held by this process until the value is dropped.
#[derive(Debug)]
pub struct LifeLock {
    /// The open lock file; the lock lives as long as this descriptor (see
    /// [`LifeLock::try_acquire`]).
    _file: fd_lock::RwLock<File>,
    path: PathBuf,
}

impl LifeLock {
    /// Opens (creating it if needed) the lock file at `path` and takes its lock
    /// without waiting. `Ok(None)`: another process holds it (or the lock cannot be
    /// taken at all); an error: the file cannot be opened (named in it).
    pub fn try_acquire(path: &Path) -> Result<Option<Self>, QueueError> {
        let mut lock = fd_lock::RwLock::new(fsio::open_lock(path)?);
        match lock.try_write() {
            // The guard would borrow the lock; forgetting it keeps the lock taken
            // (its drop is what would unlock), and the kernel releases it when the
            // descriptor closes, with this value or with the process.
            Ok(guard) => std::mem::forget(guard),
            Err(_) => return Ok(None),
        }
        Ok(Some(Self {
            _file: lock,
            path: path.to_path_buf(),
        }))
    }

    /// The lock file held.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tells whether a process holds the lock file at `path` (a live worker or
    /// brain). Returns `None` when the file does not exist.
    pub fn is_held(path: &Path) -> Option<bool> {
        // Non-blocking: a FIFO under the lock's name must not hang the probe. One that
        // is not a regular file is no live holder's lock.
        let file =
            match fsio::open_regular(path, std::fs::OpenOptions::new().write(true), "lock file") {
                Ok(f) => f,
                Err(QueueError::Invalid { .. }) => return Some(false),
                Err(_) => return None,
            };
        let mut lock = fd_lock::RwLock::new(file);
        let held = lock.try_write().is_err();
        Some(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_for_the_value_s_life_and_probed_from_outside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        assert_eq!(LifeLock::is_held(&path), None);
        let lock = LifeLock::try_acquire(&path).unwrap().expect("free lock");
        assert_eq!(lock.path(), path);
        assert_eq!(LifeLock::is_held(&path), Some(true));
        assert!(LifeLock::try_acquire(&path).unwrap().is_none());
        drop(lock);
        assert_eq!(LifeLock::is_held(&path), Some(false));
        assert!(LifeLock::try_acquire(&path).unwrap().is_some());
    }

    #[test]
    fn a_lock_that_is_not_a_file_has_no_live_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.lock");
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(LifeLock::is_held(&path), Some(false));
        let err = LifeLock::try_acquire(&path).unwrap_err();
        assert!(err.to_string().contains("d.lock"), "{err}");
    }
}
