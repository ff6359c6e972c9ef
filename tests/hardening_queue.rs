//! Hardening of the queue files and the brain's reading of them (issue 9, slice B):
//! FIFOs, long names, huge files, hand-dropped and duplicate tasks, vanished
//! files — each with the real binaries on a real root.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{eventually, text, wait_exit, Rig, RIGMIND};

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
    wait_exit(&mut child, 30, &format!("rigmind {args:?}"));
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

/// The batch record of `batch`, parsed.
fn record(rig: &Rig, batch: &str) -> serde_json::Value {
    let p = rig.root().join(format!("brain/batches/{batch}.json"));
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn long_task_names_and_long_for_each_file_names_complete() {
    let mut rig = Rig::new();
    let long = "t".repeat(300);
    let stem = "s".repeat(246);
    rig.write(&format!("in/{stem}.txt"), "x");
    let plan = rig.write(
        "long.md",
        &format!(
            "# Plan: long\n\n## Task: {long}\n- task_class: cpu\n- command: `echo one`\n\n\
             ## Task: each\n- task_class: cpu\n- depends_on: {long}\n- for_each: in/*.txt\n\
             - command: `echo {{stem}} > done.txt`\n"
        ),
    );
    let out = rig.rigmind(&["validate", plan.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    rig.start_brain();
    rig.start_worker("w1", &[]);
    let batch = rig.submit(&plan);
    assert_eq!(rig.wait(&batch), 0);
    assert_eq!(rig.await_file("done.txt").trim(), stem);
    let names = rig.names_in("complete");
    assert!(names.iter().all(|n| n.len() < 255), "{names:?}");
    assert_eq!(rig.task("complete", &long)["name"], long.as_str());
    rig.task("complete", &format!("each[{stem}]"));
    let r = record(&rig, &batch);
    assert_eq!(
        (r["counts"]["total"].as_u64(), r["state"].as_str()),
        (Some(2), Some("complete"))
    );
    // A restarted brain reads the cut names back as the full ones.
    rig.stop("brain");
    rig.start_brain();
    eventually(30, "the brain's second start", || {
        rig.decisions_with(&["decision=start"]).len() == 2
    });
    let r = record(&rig, &batch);
    assert_eq!(
        (r["counts"]["complete"].as_u64(), r["state"].as_str()),
        (Some(2), Some("complete"))
    );
}

#[test]
fn a_batch_the_brain_cannot_rebuild_fails_alone() {
    let mut rig = Rig::new();
    rig.start_brain();
    // No worker: the chain's later tasks wait in private_tasks/.
    let broken = rig.submit(&rig.fixture("chain.md"));
    let private = rig.root().join(format!("brain/private_tasks/{broken}"));
    // The submission is done (and its batch record written) only at its submit line;
    // the private directory appears before that.
    eventually(30, "the chain's submission", || {
        !rig.decisions_with(&["decision=submit", &format!("batch={broken}")])
            .is_empty()
    });
    assert!(private.is_dir(), "{}", private.display());
    rig.stop("brain");
    std::fs::remove_dir_all(&private).unwrap();
    std::fs::write(&private, "not a directory").unwrap();
    rig.start_brain();
    rig.start_worker("w1", &[]);
    let plan = rig.write(
        "other/one.md",
        "# Plan: one\n\n## Task: a\n- task_class: cpu\n- command: `true`\n",
    );
    let other = rig.submit(&plan);
    assert_eq!(rig.wait(&other), 0);
    let failed = rig.decisions_with(&["decision=batch_failed", &format!("batch={broken}")]);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("reason="), "{failed:?}");
    assert!(
        failed[0].contains(&format!("private_tasks/{broken}")),
        "{failed:?}"
    );
    assert_eq!(record(&rig, &broken)["state"], "failed");
}

const ONCE: &str = "# Plan: once\n\n## Task: slow\n- task_class: cpu\n- retries: 1\n\
    - command: `if [ -f once ]; then echo again; else touch once; sleep SECS; fi`\n\n\
    ## Task: after\n- task_class: cpu\n- depends_on: slow\n- command: `echo after > after.txt`\n";

/// Waits until `slow` runs and its start record (with its process group) is in
/// processing/: removing the file before that would race the worker's write.
fn await_slow_started(rig: &Rig) {
    rig.await_file("once");
    eventually(30, "slow's start record", || {
        rig.tasks_in("processing")
            .iter()
            .any(|t| t["name"] == "slow" && t["pgid"].is_number())
    });
}

/// `slow`'s file name in processing/.
fn running_slow_file(rig: &Rig) -> String {
    rig.names_in("processing")
        .into_iter()
        .find(|n| n.ends_with("-slow.json"))
        .expect("slow runs")
}

/// Removes `slow`'s file from processing/.
fn remove_running_slow(rig: &Rig) {
    let dir = rig.root().join("tasks/processing");
    std::fs::remove_file(dir.join(running_slow_file(rig))).unwrap();
}

/// `worker_says`: what the worker that ran the first attempt logs when it finds
/// its file gone (or, after a restart, replaced by the re-created task).
fn assert_slow_retried_and_total_kept(rig: &Rig, batch: &str, reason: &str, worker_says: &str) {
    assert_eq!(rig.wait(batch), 0);
    let lost = rig.decisions_with(&["decision=lost", "task=slow"]);
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert!(lost[0].contains(reason), "{lost:?}");
    assert_eq!(
        rig.decisions_with(&["decision=retry", "task=slow"]).len(),
        1
    );
    let slow = rig.task("complete", "slow");
    assert_eq!(slow["retry_count"], 1);
    let after = rig.task("complete", "after");
    assert!(after["started_at"].as_str() >= slow["finished_at"].as_str());
    let r = record(rig, batch);
    assert_eq!(r["counts"]["total"], 2);
    assert_eq!(r["counts"]["complete"], 2);
    // The worker that ran the first attempt found its file gone and filed nothing.
    eventually(30, "the worker's word on the vanished file", || {
        std::fs::read_to_string(rig.dir.path().join("w1.stderr"))
            .unwrap_or_default()
            .contains(worker_says)
    });
}

#[test]
fn a_running_task_whose_file_is_removed_is_lost_and_retried() {
    let mut rig = Rig::new();
    rig.start_brain();
    rig.start_worker("w1", &[]);
    let plan = rig.write("once.md", &ONCE.replace("SECS", "60"));
    let batch = rig.submit(&plan);
    await_slow_started(&rig);
    remove_running_slow(&rig);
    assert_slow_retried_and_total_kept(
        &rig,
        &batch,
        "reason=\"file removed from processing/\"",
        "gone from processing/",
    );
}

#[test]
fn a_task_removed_while_the_brain_is_down_is_recreated_and_retried() {
    let mut rig = Rig::new();
    rig.start_brain();
    rig.start_worker("w1", &[]);
    let plan = rig.write("once.md", &ONCE.replace("SECS", "4"));
    let batch = rig.submit(&plan);
    await_slow_started(&rig);
    rig.stop("brain");
    remove_running_slow(&rig);
    rig.start_brain();
    assert_slow_retried_and_total_kept(
        &rig,
        &batch,
        "found in no directory",
        "result is discarded",
    );
}

/// ONCE (`slow` sleeping `secs`) with an independent task `side` first, of the given
/// estimate: at 1 s it is numbered after `slow` and `after` (a shorter chain behind
/// it), at 1000 s before them.
fn once_beside(side_estimate: &str, secs: &str) -> String {
    ONCE.replace("SECS", secs).replace(
        "# Plan: once\n\n",
        &format!(
            "# Plan: once\n\n## Task: side\n- task_class: cpu\n- estimate: {side_estimate}\n- command: `true`\n\n"
        ),
    )
}

/// The task re-created for `slow` keeps the file name its job had, though the plan
/// now numbers its tasks otherwise; it is retried and the batch completes whole.
fn assert_renumbered_slow_retried(rig: &Rig, batch: &str, slow_file: &str, reason: &str) {
    assert_eq!(rig.wait(batch), 0);
    let lost = rig.decisions_with(&["decision=lost", "task=slow"]);
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert!(lost[0].contains(reason), "{lost:?}");
    let slow = rig.task("complete", "slow");
    assert_eq!(slow["retry_count"], 1, "{slow}");
    let r = record(rig, batch);
    assert_eq!(r["counts"]["total"], 3);
    assert_eq!(r["counts"]["complete"], 3);
    assert!(
        rig.names_in("complete").iter().any(|n| n == slow_file),
        "slow ends under its job's own file name {slow_file}: {:?}",
        rig.names_in("complete")
    );
}

#[test]
fn a_lost_task_is_recreated_under_its_own_name_after_the_plans_estimates_change() {
    // The claim order follows the estimates, so editing one renumbers the plan: the
    // job's file name, not today's numbering, names the re-created task.
    let mut rig = Rig::new();
    rig.start_brain();
    rig.start_worker("w1", &[]);
    let plan = rig.write("once.md", &once_beside("1s", "60"));
    let batch = rig.submit(&plan);
    await_slow_started(&rig);
    let slow_file = running_slow_file(&rig);
    rig.write("once.md", &once_beside("1000s", "60"));
    remove_running_slow(&rig);
    assert_renumbered_slow_retried(&rig, &batch, &slow_file, "file removed from processing/");
}

#[test]
fn a_task_removed_while_the_brain_is_down_is_recreated_after_the_plans_estimates_change() {
    let mut rig = Rig::new();
    rig.start_brain();
    rig.start_worker("w1", &[]);
    let plan = rig.write("once.md", &once_beside("1s", "4"));
    let batch = rig.submit(&plan);
    await_slow_started(&rig);
    let slow_file = running_slow_file(&rig);
    rig.stop("brain");
    rig.write("once.md", &once_beside("1000s", "4"));
    remove_running_slow(&rig);
    rig.start_brain();
    assert_renumbered_slow_retried(&rig, &batch, &slow_file, "found in no directory");
}

#[test]
fn a_copy_of_a_completed_task_put_back_in_the_queue_does_not_run_again() {
    let mut rig = Rig::new();
    rig.start_brain();
    rig.start_worker("w1", &[]);
    let plan = rig.write(
        "twice.md",
        "# Plan: twice\n\n## Task: count\n- task_class: cpu\n- command: `echo ran >> ran.txt`\n",
    );
    let batch = rig.submit(&plan);
    assert_eq!(rig.wait(&batch), 0);
    let done = rig.names_in("complete");
    let file = done.iter().find(|n| n.ends_with("-count.json")).unwrap();
    std::fs::copy(
        rig.root().join("tasks/complete").join(file),
        rig.root().join("tasks/queue/copy-of-count.json"),
    )
    .unwrap();
    eventually(30, "the copy moved to rejected/", || {
        rig.names_in("rejected")
            .contains(&"copy-of-count.json".to_string())
    });
    let q = rig.decisions_with(&["decision=quarantine", "copy-of-count.json"]);
    assert_eq!(q.len(), 1, "{q:?}");
    assert!(q[0].contains(&format!("complete/{file}")), "{q:?}");
    assert_eq!(rig.await_file("ran.txt"), "ran\n");
    assert_eq!(rig.names_in("complete").len(), done.len());
}

/// Bytes the process has read (`rchar` of /proc/PID/io).
fn rchar(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Waits for the brain's next heartbeat (brain.json rewritten): a clock of the
/// brain's own, several rescans long.
fn next_heartbeat(rig: &Rig) {
    let p = rig.root().join("brain/brain.json");
    let read = || std::fs::read_to_string(&p).unwrap_or_default();
    let before = read();
    eventually(30, "a brain heartbeat", || {
        let now = read();
        !now.is_empty() && now != before
    });
}

#[test]
fn large_files_in_complete_are_not_read_on_every_rescan() {
    let mut rig = Rig::new();
    let complete = rig.root().join("tasks/complete");
    std::fs::create_dir_all(&complete).unwrap();
    // Over the size limit: never read. Under it, but valid and no known task's:
    // read once, then known by its stamp.
    std::fs::write(complete.join("huge.json"), vec![b' '; 6 << 20]).unwrap();
    let pad = "x".repeat(3 << 20);
    let hand = format!(
        "{{\"task_id\":\"h1\",\"batch_id\":\"zz\",\"name\":\"hand\",\"status\":\"complete\",\"pad\":\"{pad}\"}}"
    );
    std::fs::write(complete.join("hand.json"), hand).unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(60);
    for f in ["huge.json", "hand.json"] {
        std::fs::File::options()
            .write(true)
            .open(complete.join(f))
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    rig.start_brain();
    let pid = rig
        .children
        .iter()
        .find(|(w, _)| w == "brain")
        .unwrap()
        .1
        .id();
    next_heartbeat(&rig);
    let before = rchar(pid);
    // Two heartbeats (5 s each) span about twenty rescans (every 0.5 s).
    next_heartbeat(&rig);
    next_heartbeat(&rig);
    let read = rchar(pid) - before;
    assert!(
        read < 3 << 20,
        "the brain read {read} bytes across its rescans"
    );
    assert!(complete.join("huge.json").exists() && complete.join("hand.json").exists());
    let stderr = std::fs::read_to_string(rig.dir.path().join("brain.stderr")).unwrap();
    assert_eq!(stderr.matches("huge.json").count(), 1, "{stderr}");
}

/// The instant at the start of a decision line (`<RFC 3339> decision=...`).
fn line_time(line: &str) -> chrono::DateTime<chrono::Utc> {
    let ts = line.split_whitespace().next().unwrap_or_default();
    chrono::DateTime::parse_from_rfc3339(ts)
        .unwrap_or_else(|e| panic!("no time at the start of {line:?}: {e}"))
        .into()
}

#[test]
fn a_hand_dropped_task_is_logged_with_its_owner_before_it_runs() {
    let mut rig = Rig::new();
    rig.start_worker("w1", &[]);
    let queue = rig.queue_dir();
    let workdir = rig.workdir();
    let hand = format!(
        r#"{{"task_id": "hand-1", "batch_id": "handmade", "name": "by_hand",
            "task_class": "cpu", "status": "queued",
            "command": "echo ran > by_hand.txt", "workdir": "{workdir}"}}"#
    );
    let dropped_at = chrono::Utc::now();
    std::fs::write(queue.join("p05-00000001-handmade-by_hand.json"), hand).unwrap();
    // With no brain to log it, the worker leaves it alone: shown once the worker
    // has published a heartbeat well after the drop (it rescans every 0.5 s).
    let worker_file = rig.root().join("workers/w1.json");
    eventually(20, "a worker heartbeat 1 s after the drop", || {
        std::fs::read(&worker_file)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|w| w["heartbeat_at"].as_str().map(str::to_string))
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
            .is_some_and(|t| t > dropped_at + chrono::Duration::seconds(1))
    });
    assert_eq!(
        rig.names_in("queue").len(),
        1,
        "it ran before any brain logged it"
    );
    assert!(!rig.dir.path().join("by_hand.txt").exists());

    rig.start_brain();
    eventually(20, "the hand task to complete", || {
        rig.dir.path().join("by_hand.txt").exists() && rig.names_in("complete").len() == 1
    });
    let lines = rig.decisions_with(&["decision=hand_task", "task=by_hand"]);
    assert_eq!(lines.len(), 1, "{:?}", rig.decisions());
    // SAFETY: getuid(2) reads this process's user id; no memory involved.
    let uid = unsafe { libc::getuid() };
    assert!(
        lines[0].contains("owner=") && lines[0].contains(&format!("uid {uid})")),
        "{}",
        lines[0]
    );
    let t = rig.task("complete", "by_hand");
    assert!(
        t["released_by"].as_str().unwrap().starts_with("hand ("),
        "{t}"
    );
    let started: chrono::DateTime<chrono::Utc> =
        chrono::DateTime::parse_from_rfc3339(t["started_at"].as_str().unwrap())
            .unwrap()
            .into();
    assert!(
        line_time(&lines[0]) <= started,
        "logged after it started: {}",
        lines[0]
    );
}

/// A root whose `tasks/` is on another filesystem than its `brain/` (here: a tmpfs
/// under /dev/shm). The brain writes the temporaries of its queue files in
/// `brain/private_tasks/<batch>/` and renames them into `tasks/queue/`; across
/// filesystems that rename fails (EXDEV), and the file is moved beside its place
/// first. Submitted tasks and released ones both run.
#[test]
fn tasks_on_another_filesystem_than_the_brain_still_run() {
    use std::os::unix::fs::MetadataExt;
    let test = "tasks_on_another_filesystem_than_the_brain_still_run";
    let Ok(apart) = tempfile::tempdir_in("/dev/shm") else {
        return common::skip(test, "no writable /dev/shm here");
    };
    let rig = Rig::new();
    let root = rig.root();
    std::fs::create_dir_all(&root).unwrap();
    let dev = |p: &Path| std::fs::metadata(p).unwrap().dev();
    if dev(apart.path()) == dev(&root) {
        return common::skip(test, "/dev/shm is on the same filesystem as the temp dir");
    }
    std::os::unix::fs::symlink(apart.path(), root.join("tasks")).unwrap();
    let mut rig = rig;
    rig.start_brain();
    rig.start_worker("w1", &[]);
    let plan = rig.write(
        "apart.md",
        "# Plan: apart\n\n## Task: first\n- task_class: cpu\n- command: `echo 1 > first.txt`\n\n\
         ## Task: then\n- task_class: cpu\n- depends_on: first\n- for_each: [a, b]\n\
         - command: `echo {item} > then-{item}.txt`\n",
    );
    let batch = rig.submit(&plan);
    assert_eq!(rig.wait(&batch), 0);
    for f in ["first.txt", "then-a.txt", "then-b.txt"] {
        assert!(rig.dir.path().join(f).exists(), "{f} missing");
    }
    // No temporary is left on either side.
    let left: Vec<_> = common::walk(&root)
        .into_iter()
        .chain(common::walk(apart.path()))
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
