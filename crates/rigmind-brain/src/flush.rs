//! The group commit of a submission's ready tasks, off the brain's loop.
//!
//! A submission writes its ready tasks into `queue/` unflushed, so that workers see
//! them at once; what makes that crash-safe is its manifest
//! (`private_tasks/<batch>/.ready.json`, flushed and committed with the batch
//! record), which lists every one of them. Once all are written the manifest is
//! renamed to `.queued.json` (see [`crate::submit`]), and this module's thread
//! flushes the files (`fdatasync` each, then the directories) and only then removes
//! the manifest. Until it is gone a restarted brain repairs, from the manifest, any
//! listed file that a power loss left torn or empty in `queue/`.
//!
//! On this project's VM one `fdatasync` costs ~3.5 ms, so flushing a 100,000-task
//! submission takes minutes of disk time: on the loop it kept every task out of
//! the queue until the last flush, here it only delays the manifest's removal.

use std::path::PathBuf;
use std::sync::mpsc;

use rigmind_queue::fsio;

/// What the flushing thread is asked to do, in order.
enum Job {
    /// Flush these files (a file already moved on, claimed by a worker, is skipped:
    /// its new place is its claimer's to flush).
    Files(Vec<PathBuf>),
    /// Everything sent before is written: flush these directories and then remove
    /// the manifest (kept when a flush failed, for a restart to repair from).
    Seal {
        manifest: PathBuf,
        dirs: Vec<PathBuf>,
    },
}

/// The handle on the flushing thread; dropping it lets the thread finish what it
/// was given and end.
#[derive(Debug)]
pub struct Flusher {
    tx: mpsc::Sender<Job>,
}

impl Flusher {
    /// Starts the thread.
    pub fn start() -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("rigmind-flush".into())
            .spawn(move || run(rx))
            .expect("a thread can be started");
        Self { tx }
    }

    /// Files written unflushed, to be flushed in the background.
    pub fn files(&self, paths: Vec<PathBuf>) {
        if !paths.is_empty() {
            let _ = self.tx.send(Job::Files(paths));
        }
    }

    /// Once every file given before is flushed: flush `dirs`, remove `manifest`.
    pub fn seal(&self, manifest: PathBuf, dirs: Vec<PathBuf>) {
        let _ = self.tx.send(Job::Seal { manifest, dirs });
    }
}

fn run(rx: mpsc::Receiver<Job>) {
    let mut failed = false;
    for job in rx {
        match job {
            Job::Files(paths) => {
                if let Err(e) = fsio::sync_files(&paths) {
                    tracing::warn!("{e}; the manifest stays for a restart to repair from");
                    failed = true;
                }
            }
            Job::Seal { manifest, dirs } => {
                let dirs_ok = dirs
                    .iter()
                    .all(|d| fsio::sync_dir(d).map_err(|e| tracing::warn!("{e}")).is_ok());
                if dirs_ok && !failed {
                    if let Err(e) = fsio::remove_if_exists(&manifest) {
                        tracing::warn!("{e}");
                    }
                }
                failed = false;
            }
        }
    }
}
