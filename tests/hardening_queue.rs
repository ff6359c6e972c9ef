//! Hardening of the queue files and the brain's reading of them (issue 9, slice B):
//! FIFOs, long names, huge files, hand-dropped and duplicate tasks, vanished
//! files — each with the real binaries on a real root.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, text, Rig, RIGMIND};

/// Makes a FIFO at `path` (its directory created first).
fn mkfifo(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o644) },
        0,
        "mkfifo {path:?}"
    );
}

/// Runs `rigmind ARGS --root ROOT` and fails the test if it does not end within
/// 30 s (it would hang on a FIFO): its exit code and stdout.
fn rigmind_within(rig: &Rig, args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(RIGMIND)
        .args(args)
        .arg("--root")
        .arg(rig.root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("rigmind {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

fn is_regular(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file())
}

#[test]
fn fifos_in_the_root_hang_nobody() {
    let mut rig = Rig::new();
    let root = rig.root();
    mkfifo(&root.join("tasks/queue/p05-00000001-ab12cd-x.json"));
    mkfifo(&root.join("workers/ghost.json"));
    mkfifo(&root.join("brain/batches/ab12cd.json"));
    mkfifo(&root.join("logs/brain_decisions.log"));
    rig.start_brain();
    rig.start_worker("w1", &[]);
    // The log FIFO is moved aside at the brain's first decision (reading it from
    // here before that would hang the test itself).
    eventually(30, "a regular decisions log", || {
        is_regular(&root.join("logs/brain_decisions.log"))
    });
    assert!(root.join("logs/brain_decisions.log.not-a-file").exists());
    let (code, out, err) = rigmind_within(&rig, &["status", "--json"]);
    assert_eq!(code, 0, "status: {err}");
    assert!(out.contains("\"queues\""), "{out}");

    let plan = rig.fixture("chain.md");
    let batch = rig.submit(&plan);
    assert_eq!(rig.wait(&batch), 0);
    eventually(30, "the queue FIFO moved to rejected/", || {
        rig.names_in("rejected")
            .contains(&"p05-00000001-ab12cd-x.json".to_string())
    });
    let q = rig.decisions_with(&["decision=quarantine", "p05-00000001-ab12cd-x.json"]);
    assert!(
        q.iter().any(|l| l.contains("not a regular file (a FIFO)")),
        "{q:?}"
    );
    let skipped = rig.decisions_with(&["decision=skip_batch"]);
    assert!(
        skipped
            .iter()
            .any(|l| l.contains("ab12cd.json") && l.contains("a FIFO")),
        "{skipped:?}"
    );
    let (code, _, err) = rigmind_within(&rig, &["status"]);
    assert_eq!(code, 0, "status: {err}");
    assert!(rig.all_alive());
}

#[test]
fn status_of_a_missing_root_is_an_error_and_creates_nothing() {
    let rig = Rig::new();
    let (code, _, err) = rigmind_within(&rig, &["status"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(rig.root().to_str().unwrap()), "{err}");
    assert!(!rig.root().exists());
}
