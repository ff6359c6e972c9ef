//! Whole-file writes that no reader ever sees half done.
//!
//! Every state file is written beside its place under a dot-name (which `ls` and every
//! reader skip), flushed to disk, then renamed in. A rename is atomic, so a reader sees
//! the old file or the new one, never a mix; the flush before it means a crash cannot
//! leave a renamed-in file empty. The directory itself is flushed only where the
//! caller asks ([`Sync::Dir`]): on ext4 and xfs the journal already keeps renames in
//! order, so a crash can lose only the newest moves, never reorder them, and the
//! expensive directory flush is kept for results.
//!
//! Every read of a file under the root goes through [`read_regular`] (or
//! [`open_regular`]): anyone can `mkfifo` a name in a shared directory, and a plain
//! `open` of a FIFO blocks until a writer comes, so one stray FIFO would hang the
//! brain, every worker and `rigmind status`. Opening with `O_NONBLOCK | O_NOFOLLOW`
//! and checking the type with `fstat` refuses such entries at once, with a reason.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::QueueError;

/// How durable a write must be before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// No flush: for heartbeats and records that are rewritten all the time.
    None,
    /// The file's data is on disk before it is renamed in.
    Data,
    /// As `Data`, and the directory entry too: the write survives a power cut.
    Dir,
}

/// Writes `bytes` to `path` atomically (write beside, flush, rename).
pub fn write_atomic(path: &Path, bytes: &[u8], sync: Sync) -> Result<(), QueueError> {
    write_atomic_with(path, sync, |f| f.write_all(bytes))
}

/// [`write_atomic`] of what `fill` writes into the new file: a big file (a
/// submission's manifest) need not be held whole in memory.
pub fn write_atomic_with(
    path: &Path,
    sync: Sync,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<(), QueueError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    write_atomic_via(path, dir, sync, fill).map(|_| ())
}

/// [`write_atomic_with`] with the temporary file in `tmp_dir` instead of beside
/// `path`: a watched directory then sees one event for the new file (the rename)
/// instead of the four of a create, write, close and rename, which keeps the
/// kernel's event queue from overflowing when thousands of files arrive at once.
/// Where `tmp_dir` is on another filesystem, the temporary is copied beside `path`
/// before the rename ([`move_across`]): slower, and as safe. Gives the stamp of
/// the file written, as [`stamp`] would read it at `path` (a rename keeps a file's
/// inode, length and modification time); `None` if it could not be read.
pub fn write_atomic_via(
    path: &Path,
    tmp_dir: &Path,
    sync: Sync,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<Option<FileStamp>, QueueError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = tmp_dir.join(format!(".{file_name}.{}.tmp", temporary_id()));
    let result = (|| {
        // Never writable by others, whatever the umask: a task file others may
        // write is refused by the workers (crate::access), so an open umask (000)
        // must not make every file rigmind writes one of those.
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o664)
            .open(&tmp)
            .map_err(|e| QueueError::io("create", &tmp, e))?;
        fill(&mut f).map_err(|e| QueueError::io("write", &tmp, e))?;
        if sync != Sync::None {
            f.sync_data()
                .map_err(|e| QueueError::io("flush", &tmp, e))?;
        }
        let mut written = f.metadata().ok().map(|m| stamp_of(&m));
        drop(f);
        match fs::rename(&tmp, path) {
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                move_across(&tmp, dir, path, sync)?;
                // A copy: a new inode.
                written = stamp(path);
            }
            r => r.map_err(|e| QueueError::io("rename into", path, e))?,
        }
        if sync == Sync::Dir {
            sync_dir(dir)?;
        }
        Ok(written)
    })();
    if result.is_err() {
        // Nothing half-written may stay behind (a full disk leaves a short tmp file).
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The rename of [`write_atomic_via`] when `tmp_dir` is on another filesystem than
/// `path` (a root whose `tasks/` is mounted apart from `brain/`): the temporary is
/// copied beside `path` first (flushed as asked), then renamed in.
fn move_across(tmp: &Path, dir: &Path, path: &Path, sync: Sync) -> Result<(), QueueError> {
    let beside = dir.join(tmp.file_name().unwrap_or_default());
    let result = (|| {
        fs::copy(tmp, &beside).map_err(|e| QueueError::io("copy", &beside, e))?;
        if sync != Sync::None {
            File::open(&beside)
                .and_then(|f| f.sync_data())
                .map_err(|e| QueueError::io("flush", &beside, e))?;
        }
        fs::rename(&beside, path).map_err(|e| QueueError::io("rename into", path, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&beside);
    }
    let _ = fs::remove_file(tmp);
    result
}

/// What tells one version of a file from another without reading it: its inode
/// (a rename over it is a new one), length and modification time (a rewrite in
/// place changes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

/// The stamp of the file at `path` now; None when there is none.
pub fn stamp(path: &Path) -> Option<FileStamp> {
    fs::metadata(path).ok().map(|m| stamp_of(&m))
}

fn stamp_of(m: &fs::Metadata) -> FileStamp {
    use std::os::unix::fs::MetadataExt;
    FileStamp {
        ino: m.ino(),
        len: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    }
}

/// What makes a temporary's name unique: this process's id, a random number
/// drawn once per process (a crashed writer's leftover under a reused pid never
/// clashes) and a count. Two syscalls a file cheaper than a fresh UUID and a
/// `getpid` each time, which a 100,000-task submission felt.
fn temporary_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static PROCESS: OnceLock<(u32, String)> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let (pid, nonce) = PROCESS.get_or_init(|| {
        let id = uuid::Uuid::new_v4().simple().to_string();
        (std::process::id(), id[..12].to_string())
    });
    format!("{pid}.{nonce}{}", COUNT.fetch_add(1, Ordering::Relaxed))
}

/// Removes the temporaries ([`write_atomic_via`]'s `.NAME.PID.ID.tmp`) that a
/// writer killed mid-write left in `dir`; gives how many. Only for a directory
/// whose writers are all known to be dead (a brain's private directories at its
/// start: its life lock says no other brain runs).
pub fn remove_temporaries(dir: &Path) -> Result<usize, QueueError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(QueueError::io("list", dir, e)),
    };
    let mut removed = 0;
    for entry in rd.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(".tmp") {
            remove_if_exists(&entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Moves a file to another directory with new contents, so that at every instant
/// it is in exactly one place: rewritten where it is (atomically), then renamed.
/// For moves against the usual order (failed → queue), where leaving a copy in both
/// places after a crash would let the older state win.
pub fn rewrite_and_move(from: &Path, to_dir: &Path, bytes: &[u8]) -> Result<PathBuf, QueueError> {
    write_atomic(from, bytes, Sync::Data)?;
    let to = to_dir.join(from.file_name().unwrap_or_default());
    fs::rename(from, &to).map_err(|e| QueueError::io("move", from, e))?;
    Ok(to)
}

/// Flushes files written with [`Sync::None`] as one group, then their directories.
/// A file that is gone by then is skipped.
///
/// Each file's data is flushed on its own (`fdatasync`: with delayed allocation a
/// journal commit alone does not write a new file's data), ~3.5 ms a file on this
/// project's VM; the directories once each. This flushes nobody else's data, as
/// `syncfs` would.
pub fn sync_group(paths: &[PathBuf]) -> Result<(), QueueError> {
    sync_files(paths)?;
    let mut dirs: Vec<&Path> = Vec::new();
    for d in paths.iter().filter_map(|p| p.parent()) {
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    for d in dirs {
        sync_dir(d)?;
    }
    Ok(())
}

/// Flushes the data of files written with [`Sync::None`], not their directories;
/// a file that is gone by then is skipped. All are asked to be written first
/// (`sync_file_range`, which waits for nothing), so the disk gets them as one
/// stream and each `fdatasync` after finds its data already on its way.
pub fn sync_files(paths: &[PathBuf]) -> Result<(), QueueError> {
    let open = |p: &PathBuf| {
        // Non-blocking: a FIFO put in a file's place must not hang the flush.
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(p)
    };
    for chunk in paths.chunks(1024) {
        let files: Vec<(&PathBuf, std::io::Result<File>)> =
            chunk.iter().map(|p| (p, open(p))).collect();
        for f in files.iter().filter_map(|(_, f)| f.as_ref().ok()) {
            // SAFETY: a plain syscall on an open descriptor; no memory is passed.
            unsafe {
                libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
            }
        }
        for (p, f) in files {
            match f.and_then(|f| f.sync_data()) {
                Ok(()) => {}
                // Already moved on by someone else (a claim): its new place is theirs.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(QueueError::io("flush", p, e)),
            }
        }
    }
    Ok(())
}

/// Flushes a directory's entries to disk.
pub fn sync_dir(dir: &Path) -> Result<(), QueueError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| QueueError::io("flush directory", dir, e))
}

/// The largest file of the root that is read whole: a task file is a few KB, so a
/// file past this is refused without reading it (a 200 MB file re-read on every
/// rescan would cost a core).
pub const MAX_READ_BYTES: u64 = 4 << 20;

/// What a directory entry is, in words, when it is not a regular file.
pub fn kind_of(ft: fs::FileType) -> &'static str {
    if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() || ft.is_block_device() {
        "a device"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else {
        "not a file"
    }
}

/// Opens a file of the root without ever blocking on it: `O_NONBLOCK` (a FIFO
/// opens at once, or fails with `ENXIO` when opened for writing without a
/// reader), `O_NOFOLLOW` (a symbolic link is refused), then `fstat` refuses
/// anything but a regular file. `what` names the file's kind in the error
/// ("task file", "log"); the error is [`QueueError::Invalid`] with the reason
/// "not a regular file (a FIFO)".
pub fn open_regular(
    path: &Path,
    opts: &mut OpenOptions,
    what: &'static str,
) -> Result<File, QueueError> {
    let not_regular = |kind: &str| QueueError::Invalid {
        path: path.to_path_buf(),
        what,
        reason: format!("not a regular file ({kind})"),
    };
    let f = match opts
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(not_regular("a symbolic link"))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Err(not_regular("a FIFO")),
        Err(e) => return Err(QueueError::io("open", path, e)),
    };
    let meta = f.metadata().map_err(|e| QueueError::io("stat", path, e))?;
    if !meta.is_file() {
        return Err(not_regular(kind_of(meta.file_type())));
    }
    Ok(f)
}

/// Reads a whole regular file of at most [`MAX_READ_BYTES`], naming the path on
/// error; anything else (a FIFO, a socket, a link, a huge file) is refused without
/// reading it, as [`QueueError::Invalid`] of kind `what`.
pub fn read_regular(path: &Path, what: &'static str) -> Result<Vec<u8>, QueueError> {
    let mut f = open_regular(path, OpenOptions::new().read(true), what)?;
    let len = f
        .metadata()
        .map_err(|e| QueueError::io("stat", path, e))?
        .len();
    if len > MAX_READ_BYTES {
        return Err(QueueError::Invalid {
            path: path.to_path_buf(),
            what,
            reason: too_big(len),
        });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // One byte past the limit tells a file that grew since the fstat.
    Read::by_ref(&mut f)
        .take(MAX_READ_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| QueueError::io("read", path, e))?;
    if bytes.len() as u64 > MAX_READ_BYTES {
        return Err(QueueError::Invalid {
            path: path.to_path_buf(),
            what,
            reason: too_big(bytes.len() as u64),
        });
    }
    Ok(bytes)
}

/// The reason given for a file past [`MAX_READ_BYTES`].
pub fn too_big(len: u64) -> String {
    format!(
        "too big ({len} bytes; a task or state file is at most {} MiB)",
        MAX_READ_BYTES >> 20
    )
}

/// Reads a whole file of the root ([`read_regular`] for any kind of file).
pub fn read(path: &Path) -> Result<Vec<u8>, QueueError> {
    read_regular(path, "file")
}

/// Opens (creating it if needed) a lock file of the root for writing, refusing
/// anything but a regular file instead of blocking on it.
pub fn open_lock(path: &Path) -> Result<File, QueueError> {
    open_regular(
        path,
        OpenOptions::new().create(true).truncate(false).write(true),
        "lock file",
    )
}

/// Removes a file; one that is already gone is not an error.
pub fn remove_if_exists(path: &Path) -> Result<(), QueueError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(QueueError::io("remove", path, e))
        }
        _ => Ok(()),
    }
}

/// Renames `from` to `to` (replacing it), unless `from` does not exist.
pub fn rename_if_exists(from: &Path, to: &Path) -> Result<(), QueueError> {
    match fs::rename(from, to) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(QueueError::io("rename", from, e))
        }
        _ => Ok(()),
    }
}

/// The visible entries of a directory (no dot-files, no temporaries), sorted.
pub fn list_names(dir: &Path) -> Result<Vec<String>, QueueError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(QueueError::io("list", dir, e)),
    };
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| QueueError::io("list", dir, e))?;
        if let Some(name) = entry.file_name().to_str() {
            if !name.starts_with('.') {
                names.push(name.to_string());
            }
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// Appends one line to a log with a single `write` on an `O_APPEND` file, so that
/// lines from several processes never interleave.
pub fn append_line(path: &Path, line: &str) -> Result<(), QueueError> {
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    let mut f = open_regular(path, OpenOptions::new().create(true).append(true), "log")?;
    f.write_all(buf.as_bytes())
        .map_err(|e| QueueError::io("append to", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one", Sync::Data).unwrap();
        write_atomic(&p, b"two", Sync::Dir).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let all: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(all.len(), 1, "temporaries left behind");
        assert_eq!(list_names(dir.path()).unwrap(), vec!["a.json"]);
    }

    #[test]
    fn a_write_via_another_directory_leaves_its_temporary_nowhere() {
        let dir = tempfile::tempdir().unwrap();
        let (watched, tmp) = (dir.path().join("queue"), dir.path().join("private"));
        fs::create_dir_all(&watched).unwrap();
        fs::create_dir_all(&tmp).unwrap();
        let p = watched.join("a.json");
        write_atomic_via(&p, &tmp, Sync::None, |f| f.write_all(b"one")).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(fs::read_dir(&watched).unwrap().count(), 1);
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    }

    #[test]
    fn temporaries_of_a_killed_writer_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        for name in [".a.json.12.ab.tmp", ".ready.json", "b.json", ".notes"] {
            fs::write(dir.path().join(name), b"x").unwrap();
        }
        assert_eq!(remove_temporaries(dir.path()).unwrap(), 1);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".notes", ".ready.json", "b.json"]);
        assert_eq!(remove_temporaries(&dir.path().join("gone")).unwrap(), 0);
    }

    #[test]
    fn failed_write_names_the_path_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing-dir").join("a.json");
        let err = write_atomic(&p, b"x", Sync::Data).unwrap_err();
        assert!(err.to_string().contains("missing-dir"), "{err}");
    }
}
