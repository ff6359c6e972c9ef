//! File-system events for the task directories, reduced to what matters.
//!
//! Only changes to a directory's contents wake anyone: a file created, renamed in or
//! out, removed, or written and closed. Reading a file raises open/close events too;
//! passing those on would let two processes that read each other's files wake each
//! other forever. When the kernel drops events (inotify queue overflow) the receiver
//! is told to rescan, since only a full listing tells the truth then.

use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::Watcher;
use tokio::sync::mpsc;

/// What a watcher reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// These paths may have appeared, changed or gone.
    Paths(Vec<PathBuf>),
    /// Events were lost: list the directories again.
    Rescan,
}

/// A running watcher; dropping it stops the events.
pub struct DirWatcher {
    _watcher: notify::RecommendedWatcher,
}

/// A watch could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("watching {path}: {source}")]
pub struct WatchError {
    pub path: PathBuf,
    #[source]
    pub source: notify::Error,
}

/// Watches `dirs` (not recursively); changes arrive on the returned channel.
pub fn watch_dirs(
    dirs: &[PathBuf],
) -> Result<(DirWatcher, mpsc::UnboundedReceiver<Change>), WatchError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let change = match ev {
            Ok(ev) if ev.need_rescan() => Some(Change::Rescan),
            Ok(ev) if changes_contents(&ev.kind) => {
                let paths: Vec<PathBuf> =
                    ev.paths.into_iter().filter(|p| !is_temporary(p)).collect();
                (!paths.is_empty()).then_some(Change::Paths(paths))
            }
            Ok(_) => None,
            Err(_) => Some(Change::Rescan),
        };
        if let Some(c) = change {
            let _ = tx.send(c);
        }
    })
    .map_err(|source| WatchError {
        path: dirs.first().cloned().unwrap_or_default(),
        source,
    })?;
    for d in dirs {
        watcher
            .watch(d, notify::RecursiveMode::NonRecursive)
            .map_err(|source| WatchError {
                path: d.clone(),
                source,
            })?;
    }
    Ok((DirWatcher { _watcher: watcher }, rx))
}

/// True for events that change what a directory holds or what a file says.
fn changes_contents(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Name(_)) | EventKind::Modify(ModifyKind::Data(_)) => true,
        EventKind::Modify(ModifyKind::Any) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) | EventKind::Any | EventKind::Other => true,
    }
}

/// Our own write-beside files (dot-names) are never worth a wake-up.
fn is_temporary(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn reading_a_file_wakes_nobody_but_writing_does() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.json");
        std::fs::write(&f, b"{}").unwrap();
        let (_w, mut rx) = watch_dirs(&[dir.path().to_path_buf()]).unwrap();
        for _ in 0..5 {
            let _ = std::fs::read(&f).unwrap();
        }
        let quiet = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
        assert!(quiet.is_err(), "a read woke the watcher: {quiet:?}");
        crate::fsio::write_atomic(&dir.path().join("b.json"), b"{}", crate::fsio::Sync::None)
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap();
        assert_eq!(got, Some(Change::Paths(vec![dir.path().join("b.json")])));
    }
}
