//! A real rig for end-to-end tests: the real `brain`, `worker` and `rigmind`
//! binaries on a temporary root. Processes are killed when the rig is dropped.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub mod gpu;

// The helpers every test binary may use; each binary uses only some of them.
#[allow(unused_imports)]
pub use rigmind_testkit::{eventually, running, skip, wait_exit};

pub const RIGMIND: &str = env!("CARGO_BIN_EXE_rigmind");
pub const BRAIN: &str = env!("CARGO_BIN_EXE_brain");
pub const WORKER: &str = env!("CARGO_BIN_EXE_worker");

pub struct Rig {
    pub dir: tempfile::TempDir,
    pub children: Vec<(String, Child)>,
    /// Environment given to every process the rig starts.
    pub env: Vec<(String, String)>,
}

impl Rig {
    /// A fresh temp dir holding `root/` (the shared root) and room for plans.
    pub fn new() -> Self {
        Rig {
            dir: tempfile::tempdir().expect("temp dir"),
            children: Vec::new(),
            env: Vec::new(),
        }
    }

    /// A fresh rig with its brain and then one worker per id (no extra options)
    /// started: the usual beginning of a test.
    pub fn started(workers: &[&str]) -> Self {
        let mut rig = Rig::new();
        rig.start_brain();
        for id in workers {
            rig.start_worker(id, &[]);
        }
        rig
    }

    /// Writes `rig_toml` as the root's rig.toml, then starts the brain and one
    /// worker per id (no extra options).
    pub fn start_with_config(&mut self, rig_toml: &str, workers: &[&str]) {
        self.write("root/rig.toml", rig_toml);
        self.start_brain();
        for id in workers {
            self.start_worker(id, &[]);
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Writes a file under the temp dir (e.g. a plan) and returns its path.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Copies a fixture from tests/fixtures into the temp dir.
    pub fn fixture(&self, name: &str) -> PathBuf {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(name),
        )
        .unwrap();
        self.write(name, &text)
    }

    /// Copies a fixture into the temp dir and submits it: the batch id.
    pub fn submit_fixture(&self, name: &str) -> String {
        self.submit(&self.fixture(name))
    }

    /// The temp dir as text: the `workdir` of hand-written tasks.
    pub fn workdir(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// `tasks/queue` of the root, once a started process has made it (waits up to
    /// 10 s).
    pub fn queue_dir(&self) -> PathBuf {
        let queue = self.root().join("tasks/queue");
        eventually(10, "a process to make the root", || queue.is_dir());
        queue
    }

    fn spawn(&mut self, what: &str, exe: &str, args: &[&str]) {
        let log = std::fs::File::create(self.dir.path().join(format!("{what}.stderr"))).unwrap();
        let child = Command::new(exe)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(args)
            .arg("--root")
            .arg(self.root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        self.children.push((what.to_string(), child));
    }

    pub fn start_brain(&mut self) {
        self.start_brain_with(&[]);
    }

    /// Starts the brain with more options (e.g. `--metrics-addr`).
    pub fn start_brain_with(&mut self, extra: &[&str]) {
        let mut args = vec!["--rescan", "0.5"];
        args.extend_from_slice(extra);
        self.spawn("brain", BRAIN, &args);
    }

    pub fn start_worker(&mut self, id: &str, extra: &[&str]) {
        let mut args = vec!["--id", id, "--rescan", "0.5"];
        args.extend_from_slice(extra);
        self.spawn(id, WORKER, &args);
    }

    /// Starts a worker that runs in cgroup v2 directory `cgroup` (it joins before
    /// the worker's program starts), not in the test's: a worker in another cgroup
    /// than the brain.
    pub fn start_worker_in_cgroup(&mut self, id: &str, cgroup: &Path) {
        let procs = cgroup.join("cgroup.procs");
        let join = "echo $$ > \"$0\" && exec \"$@\"";
        let procs = procs.to_str().unwrap();
        let args = ["-c", join, procs, WORKER, "--id", id, "--rescan", "0.5"];
        self.spawn(id, "/bin/sh", &args);
    }

    /// Waits (up to 10 s) for a file a task writes under the temp dir, and reads it.
    pub fn await_file(&self, rel: &str) -> String {
        let path = self.dir.path().join(rel);
        eventually(10, rel, || path.exists());
        std::fs::read_to_string(&path).unwrap()
    }

    /// Waits (up to 10 s) for a file a task writes a line to (`echo $! > pid`), and
    /// reads it: a shell creates the file before it writes, so existing is not enough.
    pub fn await_line(&self, rel: &str) -> String {
        let path = self.dir.path().join(rel);
        eventually(10, rel, || {
            std::fs::read_to_string(&path).is_ok_and(|s| s.ends_with('\n'))
        });
        std::fs::read_to_string(&path).unwrap()
    }

    /// Runs `rigmind ARGS --root ROOT` to its end.
    pub fn rigmind(&self, args: &[&str]) -> Output {
        Command::new(RIGMIND)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(args)
            .arg("--root")
            .arg(self.root())
            .current_dir(self.dir.path())
            .output()
            .expect("run rigmind")
    }

    /// `rigmind submit PLAN`: the batch id (the last line of stdout).
    pub fn submit(&self, plan: &Path) -> String {
        let out = self.rigmind(&["submit", plan.to_str().unwrap()]);
        assert!(out.status.success(), "submit failed: {}", text(&out.stderr));
        text(&out.stdout).lines().last().unwrap().trim().to_string()
    }

    /// `rigmind wait BATCH --timeout 60`: its exit code.
    pub fn wait(&self, batch: &str) -> i32 {
        let out = self.rigmind(&["wait", batch, "--timeout", "60"]);
        out.status.code().unwrap_or(-1)
    }

    /// Sends SIGTERM to a started process and waits (up to 20 s) for its exit code.
    pub fn stop(&mut self, what: &str) -> Option<i32> {
        self.signal(what, libc::SIGTERM)
    }

    /// Sends `sig` to a started process and waits (up to 20 s) for its exit code;
    /// None when `what` was not started (or a signal ended it).
    pub fn signal(&mut self, what: &str, sig: i32) -> Option<i32> {
        let i = self.children.iter().position(|(w, _)| w == what)?;
        let (_, mut child) = self.children.remove(i);
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
        wait_exit(&mut child, 20, &format!("{what} (signal {sig})")).code()
    }

    /// kill -9 a started process (no chance to clean up), and reap it.
    pub fn kill9(&mut self, what: &str) {
        let i = self
            .children
            .iter()
            .position(|(w, _)| w == what)
            .unwrap_or_else(|| panic!("{what} is not running"));
        let (_, mut child) = self.children.remove(i);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Whether every started process is still running.
    pub fn all_alive(&mut self) -> bool {
        self.children
            .iter_mut()
            .all(|(_, c)| matches!(c.try_wait(), Ok(None)))
    }

    pub fn names_in(&self, dir: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.root().join("tasks").join(dir))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The task files of a directory, parsed.
    pub fn tasks_in(&self, dir: &str) -> Vec<serde_json::Value> {
        // A file may move on between the listing and the read: skip it.
        self.names_in(dir)
            .iter()
            .filter_map(|n| {
                let p = self.root().join("tasks").join(dir).join(n);
                serde_json::from_slice(&std::fs::read(&p).ok()?).ok()
            })
            .collect()
    }

    /// The task of `dir` with this name.
    pub fn task(&self, dir: &str, name: &str) -> serde_json::Value {
        self.tasks_in(dir)
            .into_iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("no task {name} in {dir}: {:?}", self.names_in(dir)))
    }

    pub fn decisions(&self) -> Vec<String> {
        std::fs::read_to_string(self.root().join("logs/brain_decisions.log"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// Decision lines containing every one of `needles`.
    pub fn decisions_with(&self, needles: &[&str]) -> Vec<String> {
        self.decisions()
            .into_iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .collect()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Every file below `dir`, depth first; a folder that cannot be read (gone
/// meanwhile) adds nothing.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
