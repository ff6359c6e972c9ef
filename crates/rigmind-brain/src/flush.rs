//! The group commits of the brain's writes into `queue/`, off the brain's loop.
//!
//! **Submissions.** A submission writes its ready tasks into `queue/` unflushed, so
//! that workers see them at once; what makes that crash-safe is its manifest
//! (`private_tasks/<batch>/.ready.json`, flushed and committed with the batch
//! record), which lists every one of them. Once all are written the manifest is
//! renamed to `.queued.json` (see [`crate::submit`]), and this module's thread
//! flushes the files (`fdatasync` each, then the directories) and only then removes
//! the manifest. Until it is gone a restarted brain repairs, from the manifest, any
//! listed file that a power loss left torn or empty in `queue/`.
//!
//! **Releases.** A released dependent is written into `queue/` unflushed too, and
//! its private copy (`private_tasks/<batch>/<file>`, flushed at the submission)
//! stays until this thread has flushed the queue copy (or, if a worker claimed it
//! meanwhile, the copy in `processing/`) and `queue/` itself; the thread then hands
//! the names back ([`Flusher::flushed`]) and the brain's loop removes the private
//! copies of the jobs that are still past pending. Until then a power cut finds the
//! task whole in one of its two places; a restart flushes the later valid copy the
//! same way before it removes the private one (`finish_release_flush`), and a torn
//! queue copy is moved aside and the task released again from its private copy.
//!
//! On this project's VM one `fdatasync` costs ~3.5 ms, so flushing a 100,000-task
//! submission takes minutes of disk time: on the loop it kept every task out of
//! the queue until the last flush, here it only delays the manifest's removal (and
//! for releases, the private copies' removal).

use std::path::PathBuf;
use std::sync::mpsc;

use rigmind_queue::{fsio, Layout, TaskDir};

/// A released task: its batch and file name.
pub type ReleasedFile = (String, String);

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
    /// Released tasks written unflushed into `queue/`: flush each where it is now
    /// (`queue/`, or `processing/` once claimed; a result is its runner's to
    /// flush), then `queue/`, then hand the names back.
    Released(Vec<ReleasedFile>),
    /// Answer once everything sent before is done.
    Barrier(mpsc::Sender<()>),
}

/// The handle on the flushing thread; dropping it lets the thread finish what it
/// was given and end.
#[derive(Debug)]
pub struct Flusher {
    tx: mpsc::Sender<Job>,
    /// Released tasks whose queue copies are flushed.
    flushed: mpsc::Receiver<Vec<ReleasedFile>>,
}

impl Flusher {
    /// Starts the thread for the task directories of `layout`.
    pub fn start(layout: &Layout) -> Self {
        let (tx, rx) = mpsc::channel();
        let (done_tx, flushed) = mpsc::channel();
        let dirs = Dirs::of(layout);
        std::thread::Builder::new()
            .name("rigmind-flush".into())
            .spawn(move || run(rx, &dirs, &done_tx))
            .expect("a thread can be started");
        Self { tx, flushed }
    }

    /// Released tasks written unflushed into `queue/`, to be flushed in the
    /// background and then handed back by [`Flusher::flushed`].
    pub fn released(&self, files: Vec<ReleasedFile>) {
        if !files.is_empty() {
            let _ = self.tx.send(Job::Released(files));
        }
    }

    /// The released tasks flushed since the last call (their private copies may go).
    pub fn flushed(&self) -> Vec<ReleasedFile> {
        self.flushed.try_iter().flatten().collect()
    }

    /// Blocks until everything given before is done, or `limit` has passed (a
    /// brain stopping: what is left then is safe on disk for a restart to finish,
    /// so a stop on a slow disk need not wait for minutes of flushes). True when
    /// everything was done.
    pub fn wait_idle(&self, limit: std::time::Duration) -> bool {
        let (tx, rx) = mpsc::channel();
        self.tx.send(Job::Barrier(tx)).is_ok() && rx.recv_timeout(limit).is_ok()
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

/// The directories a released task may be in while its flush is due.
pub(crate) struct Dirs {
    queue: PathBuf,
    processing: PathBuf,
}

impl Dirs {
    pub(crate) fn of(layout: &Layout) -> Self {
        Self {
            queue: layout.dir(TaskDir::Queue),
            processing: layout.dir(TaskDir::Processing),
        }
    }
}

fn run(rx: mpsc::Receiver<Job>, dirs: &Dirs, done: &mpsc::Sender<Vec<ReleasedFile>>) {
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
            Job::Released(files) => match flush_released(dirs, &files) {
                Ok(()) => {
                    let _ = done.send(files);
                }
                Err(e) => tracing::warn!(
                    "{e}; the private copies of {} released task(s) stay until a restart resolves them",
                    files.len()
                ),
            },
            Job::Barrier(reply) => {
                let _ = reply.send(());
            }
        }
    }
}

/// Flushes released tasks where they are now, then `queue/`'s entries (also what a
/// restart does for the releases its last brain had not flushed:
/// `crate::rebuild`). A claim is a bare rename, so a task claimed before its flush
/// is flushed in `processing/`.
pub(crate) fn flush_released(
    dirs: &Dirs,
    files: &[ReleasedFile],
) -> Result<(), rigmind_queue::QueueError> {
    let in_queue: Vec<PathBuf> = files.iter().map(|(_, n)| dirs.queue.join(n)).collect();
    fsio::sync_files(&in_queue)?;
    // Claimed before their flush: flushed in processing/ (a file claimed after
    // it was opened above was flushed through its descriptor already).
    let claimed: Vec<PathBuf> = files
        .iter()
        .filter(|(_, n)| !dirs.queue.join(n).exists())
        .map(|(_, n)| dirs.processing.join(n))
        .collect();
    fsio::sync_files(&claimed)?;
    fsio::sync_dir(&dirs.queue)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_files_come_back_once_flushed_wherever_they_went() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.ensure().unwrap();
        let queue = layout.dir(TaskDir::Queue);
        let processing = layout.dir(TaskDir::Processing);
        std::fs::write(queue.join("a.json"), b"{}").unwrap();
        // Claimed before the flush: flushed in processing/.
        std::fs::write(processing.join("b.json"), b"{}").unwrap();
        // Finished and gone on: its runner's to flush.
        let files: Vec<ReleasedFile> = ["a.json", "b.json", "c.json"]
            .iter()
            .map(|n| ("ab12cd".to_string(), n.to_string()))
            .collect();
        let flusher = Flusher::start(&layout);
        assert!(flusher.flushed().is_empty());
        flusher.released(files.clone());
        assert!(flusher.wait_idle(std::time::Duration::from_secs(30)));
        assert_eq!(flusher.flushed(), files);
        assert!(flusher.flushed().is_empty(), "handed back once");
    }

    #[test]
    fn a_failed_flush_hands_nothing_back() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.ensure().unwrap();
        // queue/ itself gone: its flush fails, the private copies must stay.
        std::fs::remove_dir_all(layout.dir(TaskDir::Queue)).unwrap();
        let flusher = Flusher::start(&layout);
        flusher.released(vec![("ab12cd".into(), "a.json".into())]);
        assert!(flusher.wait_idle(std::time::Duration::from_secs(30)));
        assert!(flusher.flushed().is_empty());
    }
}
