//! Nothing lost: dead and restarted workers, bad files, hand-written tasks,
//! cancellation, retries of a batch, lost events — with real processes.

mod common;

use common::{eventually, running, text, Rig};

fn wait_running(rig: &Rig, suffix: &str) {
    eventually(20, &format!("{suffix} to run"), || {
        rig.names_in("processing")
            .iter()
            .any(|n| n.ends_with(suffix))
    });
}

#[test]
fn a_killed_worker_s_task_is_requeued_and_its_commands_die() {
    let mut rig = Rig::started(&["w1"]);
    let batch = rig.submit_fixture("lost.md");
    wait_running(&rig, "-hangs_once.json");
    let bg = rig.await_line("bg.pid");
    assert!(running(&bg));
    rig.kill9("w1");
    // The OOM killer's way: the worker is gone, its command is not (yet).
    assert!(
        running(&bg),
        "the command should outlive its worker until the brain acts"
    );
    rig.start_worker("w2", &[]);
    assert_eq!(rig.wait(&batch), 0);
    assert!(!running(&bg), "the dead worker's command still runs");
    let lost = rig.decisions_with(&["decision=lost", "task=hangs_once", "worker=w1"]);
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert!(
        lost[0].contains("worker w1 is dead (its lock is free)"),
        "{lost:?}"
    );
    assert!(!lost[0].contains("killed_processes=0"), "{lost:?}");
    assert_eq!(
        rig.decisions_with(&["decision=retry", "task=hangs_once"])
            .len(),
        1
    );
    let t = rig.task("complete", "hangs_once");
    assert_eq!(t["worker_id"], "w2");
    assert_eq!(t["retry_count"], 1);
    assert!(t["last_error"]
        .as_str()
        .unwrap()
        .contains("worker w1 is dead"));
}

#[test]
fn a_worker_restarted_under_the_same_id_does_not_hide_its_lost_task() {
    let mut rig = Rig::started(&["w1"]);
    let batch = rig.submit_fixture("lost.md");
    wait_running(&rig, "-hangs_once.json");
    // Killed once the command runs: killed between its claim and its start record,
    // the task is found only after the claim grace ("never started"), another path.
    rig.await_line("bg.pid");
    rig.kill9("w1");
    rig.start_worker("w1", &[]);
    assert_eq!(rig.wait(&batch), 0);
    let lost = rig.decisions_with(&["decision=lost", "task=hangs_once"]);
    assert_eq!(lost.len(), 1, "{lost:?}");
    // Either probe can see it first: the free lock, or the new session.
    assert!(
        lost[0].contains("was restarted") || lost[0].contains("is dead"),
        "{lost:?}"
    );
}

#[test]
fn garbage_in_every_directory_is_quarantined_and_the_batch_completes() {
    let mut rig = Rig::started(&["w1", "w2"]);
    let batch = rig.submit_fixture("order.md");
    let tasks = rig.root().join("tasks");
    let private = rig.root().join("brain/private_tasks").join(&batch);
    eventually(20, "the brain to take the plan", || {
        rig.root()
            .join(format!("brain/batches/{batch}.json"))
            .exists()
    });
    let mut dropped = Vec::new();
    let mut drop = |dir: &std::path::Path, name: &str, bytes: &[u8]| {
        std::fs::write(dir.join(name), bytes).unwrap();
        dropped.push(name.to_string());
    };
    for d in ["queue", "processing", "complete", "failed"] {
        let dir = tasks.join(d);
        drop(&dir, &format!("notes-{d}.txt"), b"just some notes");
        drop(&dir, &format!("empty-{d}.json"), b"");
        drop(
            &dir,
            &format!("binary-{d}.json"),
            &[0, 159, 146, 150, 255, 0],
        );
        drop(&dir, &format!("fields-{d}.json"), br#"{"hello": "world"}"#);
        drop(
            &dir,
            &format!("p05-99999999-{batch}-truncated_{d}.json"),
            br#"{"task_id": "x", "batch_id": "#,
        );
        std::fs::create_dir(dir.join(format!("adir-{d}"))).unwrap();
        drop(
            &dir,
            &format!("adir-{d}/inside.txt"),
            b"a directory is not a task",
        );
    }
    drop(&private, "junk.json", b"{{{");
    // A name that is not UTF-8.
    {
        use std::os::unix::ffi::OsStrExt;
        let odd = std::ffi::OsStr::from_bytes(b"odd-\xff-name.json");
        std::fs::write(tasks.join("queue").join(odd), b"{}").unwrap();
    }
    assert_eq!(rig.wait(&batch), 0);
    // Everything dropped is moved aside (after it settles) and named in the log.
    eventually(20, "every dropped file to be quarantined", || {
        let rejected = std::fs::read_dir(tasks.join("rejected")).unwrap().count();
        rejected > dropped.len()
    });
    let dropped: Vec<String> = dropped
        .into_iter()
        .map(|n| n.split('/').next().unwrap().to_string())
        .collect();
    for name in &dropped {
        assert!(
            tasks.join("rejected").join(name).exists(),
            "{name} not in rejected/"
        );
        let lines = rig.decisions_with(&["decision=quarantine", name.as_str()]);
        assert_eq!(lines.len(), 1, "{name}: {lines:?}");
    }
    assert!(rig.decisions_with(&["decision=quarantine", "odd-"]).len() == 1);
    let bytes = std::fs::read(tasks.join("rejected/binary-queue.json")).unwrap();
    assert_eq!(
        bytes,
        [0, 159, 146, 150, 255, 0],
        "quarantine keeps the bytes"
    );
    assert!(rig.all_alive(), "a process died on garbage");
    let out = rig.rigmind(&["status", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(s["rejected"].as_u64().unwrap() >= dropped.len() as u64);
}

#[test]
fn a_known_task_whose_file_is_ruined_fails_as_a_definition_error() {
    // No worker yet: the released task waits in the queue, where a hand ruins it.
    let mut rig = Rig::started(&[]);
    let batch = rig.submit_fixture("gated.md");
    eventually(20, "needs_flag to be queued", || {
        rig.names_in("queue")
            .iter()
            .any(|n| n.ends_with("-needs_flag.json"))
    });
    let name = rig
        .names_in("queue")
        .into_iter()
        .find(|n| n.ends_with("-needs_flag.json"))
        .unwrap();
    std::fs::write(
        rig.root().join("tasks/queue").join(&name),
        b"{\"task_id\": ",
    )
    .unwrap();
    rig.start_worker("w1", &[]);
    assert_eq!(rig.wait(&batch), 1);
    let t = rig.task("failed", "needs_flag");
    assert_eq!(t["failure_kind"], "definition_error");
    assert!(t["error"].as_str().unwrap().contains("rejected"), "{t}");
    assert_eq!(
        rig.task("failed", "follows")["failure_kind"],
        "dependency_failed"
    );
    assert!(rig.root().join("tasks/rejected").join(&name).exists());
}

#[test]
fn a_task_file_without_a_class_is_fixed_or_left_failed_with_the_reason() {
    let mut rig = Rig::new();
    rig.start_brain();
    rig.start_worker("w1", &["--classes", "cpu,script"]);
    let queue = rig.queue_dir();
    let workdir = rig.workdir();
    let fixable = format!(
        r#"{{"task_id": "hand-1", "batch_id": "handmade", "name": "embed_by_hand",
            "status": "queued", "command": "echo pretend embedding > embedded.txt",
            "workdir": "{workdir}"}}"#
    );
    let unfixable = r#"{"task_id": "hand-2", "batch_id": "handmade", "name": "nothing",
                        "status": "queued"}"#;
    std::fs::write(
        queue.join("p05-00000001-handmade-embed_by_hand.json"),
        fixable,
    )
    .unwrap();
    std::fs::write(queue.join("p05-00000002-handmade-nothing.json"), unfixable).unwrap();
    eventually(20, "the fixed task to complete", || {
        rig.names_in("complete")
            .iter()
            .any(|n| n.contains("embed_by_hand"))
    });
    let t = rig.task("complete", "embed_by_hand");
    assert_eq!(t["task_class"], "script");
    assert_eq!(t["fix_applied"], "task_class inferred as script");
    assert_eq!(
        std::fs::read_to_string(rig.dir.path().join("embedded.txt")).unwrap(),
        "pretend embedding\n"
    );
    assert!(
        rig.decisions_with(&["decision=fail", "task=embed_by_hand", "definition_error"])
            .len()
            == 1
    );
    assert!(
        rig.decisions_with(&["decision=fix", "task=embed_by_hand"])
            .len()
            == 1
    );
    eventually(20, "the unfixable task to stay failed", || {
        rig.names_in("failed").iter().any(|n| n.contains("nothing"))
    });
    let t = rig.task("failed", "nothing");
    assert_eq!(t["failure_kind"], "definition_error");
    assert!(
        t["error"]
            .as_str()
            .unwrap()
            .contains("no command or prompt"),
        "{t}"
    );
}

#[test]
fn cancel_kills_what_runs_and_records_everything_as_cancelled() {
    let rig = Rig::started(&["w1"]);
    let batch = rig.submit_fixture("cancel.md");
    wait_running(&rig, "-long.json");
    let bg = rig.await_line("bg.pid");
    let out = rig.rigmind(&["cancel", &batch]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("cancelled"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        !running(&bg),
        "the cancelled task's process group still runs"
    );
    let failed = rig.tasks_in("failed");
    let ours: Vec<&serde_json::Value> = failed
        .iter()
        .filter(|t| t["batch_id"] == batch.as_str())
        .collect();
    assert_eq!(ours.len(), 5, "{ours:?}");
    assert!(
        ours.iter().all(|t| t["failure_kind"] == "cancelled"),
        "{ours:?}"
    );
    assert!(!rig.dir.path().join("never.txt").exists());
    assert_eq!(rig.decisions_with(&["decision=kill", "task=long"]).len(), 1);
    assert_eq!(
        rig.decisions_with(&["decision=retry", &batch]).len(),
        0,
        "a cancelled task was retried"
    );
    assert_eq!(
        rig.decisions_with(&["decision=batch_done", &batch, "state=cancelled"])
            .len(),
        1
    );
    assert_eq!(rig.wait(&batch), 1);
    let out = rig.rigmind(&["retry", "--batch", &batch]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("was cancelled"));
}

#[test]
fn retry_batch_requeues_every_failed_task_and_their_dependents_follow() {
    let rig = Rig::started(&["w1"]);
    let batch = rig.submit_fixture("twofail.md");
    assert_eq!(rig.wait(&batch), 1);
    std::fs::write(rig.dir.path().join("flag-x"), "").unwrap();
    std::fs::write(rig.dir.path().join("flag-y"), "").unwrap();
    let out = rig.rigmind(&["retry", "--batch", &batch]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("requeued 2 failed task(s)"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(rig.wait(&batch), 0);
    assert!(rig.dir.path().join("sum.txt").exists());
}

#[test]
fn a_restarted_brain_resolves_a_task_found_in_two_places() {
    let mut rig = Rig::started(&["w1"]);
    let plan = rig.fixture("gated.md");
    std::fs::write(rig.dir.path().join("flag"), "").unwrap();
    let batch = rig.submit(&plan);
    assert_eq!(rig.wait(&batch), 0);
    rig.kill9("brain");
    rig.kill9("w1");
    // A crash between writing a result and removing the claim leaves both.
    let name = rig
        .names_in("complete")
        .into_iter()
        .find(|n| n.ends_with("-follows.json"))
        .unwrap();
    let done = rig.root().join("tasks/complete").join(&name);
    std::fs::copy(&done, rig.root().join("tasks/processing").join(&name)).unwrap();
    rig.start_brain();
    eventually(20, "the stale copy to go", || {
        !rig.root().join("tasks/processing").join(&name).exists()
    });
    let lines = rig.decisions_with(&["decision=resolve_duplicate", "task=follows"]);
    // A copy made by hand is created, then written: either step may be seen.
    assert!(!lines.is_empty(), "{lines:?}");
    assert!(lines
        .iter()
        .all(|l| l.contains("kept=complete") && l.contains("removed=processing")));
    assert!(done.exists());
    assert_eq!(rig.wait(&batch), 0);
}

#[test]
fn lost_events_do_not_leave_tasks_waiting() {
    let mut rig = Rig::started(&["w1", "w2"]);
    let plan = rig.fixture("order.md");
    let queue = rig.queue_dir();
    // Far more events than the kernel queues (16384 by default) while the batch
    // runs: creating and removing files faster than anyone can read the events.
    let spam = {
        let queue = queue.clone();
        std::thread::spawn(move || {
            for i in 0..40_000 {
                let p = queue.join(format!(".spam-{i}"));
                let _ = std::fs::write(&p, b"");
                let _ = std::fs::remove_file(&p);
            }
        })
    };
    let batch = rig.submit(&plan);
    spam.join().unwrap();
    assert_eq!(rig.wait(&batch), 0);
    assert!(rig.all_alive());
}

/// Unmounts (lazily, as processes may still hold files) when dropped.
struct Mount(std::path::PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_disk_loses_nothing_and_everything_resumes_when_space_returns() {
    let mut rig = Rig::new();
    let root = rig.root();
    std::fs::create_dir_all(&root).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&root)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        common::skip(
            "a_full_disk_loses_nothing_and_everything_resumes_when_space_returns",
            "this machine does not let the test mount a small tmpfs (needs root)",
        );
        return;
    }
    let _unmount = Mount(root.clone());
    rig.start_brain();
    rig.start_worker("w1", &[]);
    // The task ends only once the disk is full (`disk-full`, beside the plan, off
    // the small disk): on a loaded machine a fixed sleep could end, and its result
    // be filed, before the filler is done.
    let plan = rig.write(
        "long_task.md",
        "# Plan: long_task\n\n## Task: long\n- task_class: cpu\n\
         - command: `until [ -f disk-full ]; do sleep 0.05; done; echo finished > long.txt`\n",
    );
    let batch = rig.submit(&plan);
    wait_running(&rig, "-long.json");
    // Fill the disk while the task runs: its result cannot be written.
    let filler = root.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    std::fs::write(rig.dir.path().join("disk-full"), "").unwrap();
    eventually(20, "the command to finish", || {
        rig.dir.path().join("long.txt").exists()
    });
    // The worker's own word that it tried to file the result and could not.
    eventually(20, "the worker to say the result cannot be filed", || {
        std::fs::read_to_string(rig.dir.path().join("w1.stderr"))
            .is_ok_and(|s| s.contains("filing the result") && s.contains("will retry"))
    });
    assert!(
        rig.names_in("processing")
            .iter()
            .any(|n| n.ends_with("-long.json")),
        "the task should wait in processing/ while its result cannot be written"
    );
    assert!(!rig
        .names_in("complete")
        .iter()
        .any(|n| n.ends_with("-long.json")));
    let stderr = std::fs::read_to_string(rig.dir.path().join("w1.stderr")).unwrap();
    assert!(
        stderr.contains("No space left on device") && stderr.contains("tasks/complete"),
        "the error should name the path: {stderr}"
    );
    assert!(rig.all_alive());
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(rig.wait(&batch), 0);
    let done: Vec<String> = rig
        .names_in("complete")
        .into_iter()
        .filter(|n| n.ends_with("-long.json"))
        .collect();
    assert_eq!(done.len(), 1);
    // Nothing half-written was left behind anywhere.
    for d in ["queue", "processing", "complete", "failed"] {
        let leftovers: Vec<_> = std::fs::read_dir(root.join("tasks").join(d))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{d}: {leftovers:?}");
    }
    rig.stop("w1");
    rig.stop("brain");
}

#[test]
fn a_task_moved_into_the_queue_before_its_dependency_is_held_back() {
    let rig = Rig::started(&["w1", "w2"]);
    let batch = rig.submit_fixture("gated.md");
    assert_eq!(rig.wait(&batch), 1);
    let name_of = |suffix: &str| {
        rig.names_in("failed")
            .into_iter()
            .find(|n| n.ends_with(suffix))
            .unwrap()
    };
    // By hand, the dependent first: its dependency has not run again.
    let follows = name_of("-follows.json");
    std::fs::rename(
        rig.root().join("tasks/failed").join(&follows),
        rig.root().join("tasks/queue").join(&follows),
    )
    .unwrap();
    eventually(20, "the dependent to be held back", || {
        rig.decisions_with(&["decision=hold_back", "task=follows"])
            .len()
            == 1
    });
    // The brain moved it out of the queue under the claim lock: it waits in
    // private_tasks/, where no worker claims.
    assert!(
        rig.root()
            .join("brain/private_tasks")
            .join(&batch)
            .join(&follows)
            .exists(),
        "it should wait in private_tasks/"
    );
    assert!(
        !rig.dir.path().join("followed.txt").exists(),
        "it ran before its dependency"
    );
    // Now the dependency, fixed, by hand too: both run, in order.
    std::fs::write(rig.dir.path().join("flag"), "").unwrap();
    let needs = name_of("-needs_flag.json");
    std::fs::rename(
        rig.root().join("tasks/failed").join(&needs),
        rig.root().join("tasks/queue").join(&needs),
    )
    .unwrap();
    assert_eq!(rig.wait(&batch), 0);
    assert!(rig.dir.path().join("followed.txt").exists());
    assert_eq!(
        rig.decisions_with(&["decision=accept", "task=needs_flag"])
            .len(),
        1
    );
    let t = rig.task("complete", "needs_flag");
    assert!(
        t["failure_kind"].is_null() && t["error"].is_null(),
        "stale failure kept: {t}"
    );
}

#[test]
fn a_stale_copy_left_by_a_dead_runner_is_removed_while_running() {
    let rig = Rig::started(&["w1"]);
    let plan = rig.fixture("gated.md");
    std::fs::write(rig.dir.path().join("flag"), "").unwrap();
    let batch = rig.submit(&plan);
    assert_eq!(rig.wait(&batch), 0);
    // A runner killed between writing its result and removing its claim.
    let name = rig
        .names_in("complete")
        .into_iter()
        .find(|n| n.ends_with("-follows.json"))
        .unwrap();
    std::fs::copy(
        rig.root().join("tasks/complete").join(&name),
        rig.root().join("tasks/processing").join(&name),
    )
    .unwrap();
    eventually(20, "the stale copy to go", || {
        rig.names_in("processing").is_empty()
    });
    let lines = rig.decisions_with(&[
        "decision=resolve_duplicate",
        "task=follows",
        "removed=processing",
    ]);
    assert!(!lines.is_empty());
    assert_eq!(rig.wait(&batch), 0);
}

/// A plan whose `follows` waits on a task the brain runs itself, so that it is
/// released with no worker there to claim it.
const BEHIND: &str = "# Plan: behind

## Task: gate
- task_class: cpu
- executor: brain
- command: `true`

## Task: follows
- task_class: cpu
- depends_on: gate
- for_each: [1, 2, 3]
- command: `echo {item} > out-{item}.txt`
";

fn released(rig: &Rig) -> Vec<String> {
    rig.names_in("queue")
        .into_iter()
        .filter(|n| n.contains("-follows"))
        .collect()
}

fn private_names(rig: &Rig, batch: &str) -> Vec<String> {
    std::fs::read_dir(rig.root().join("brain/private_tasks").join(batch))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

/// Submits BEHIND as plan `name` and waits until its three are released, with
/// `before` released already; gives the batch.
fn submit_behind(rig: &Rig, name: &str, before: usize) -> String {
    let plan = rig.write(
        &format!("{name}.md"),
        &BEHIND.replace("# Plan: behind", &format!("# Plan: {name}")),
    );
    let batch = rig.submit(&plan);
    eventually(20, "the three to be released", || {
        released(rig).len() == before + 3
    });
    batch
}

#[test]
fn released_tasks_keep_no_private_copy_once_flushed_nor_after_a_clean_stop() {
    let mut rig = Rig::started(&[]);
    let batch = submit_behind(&rig, "behind", 0);
    // The loop removes a private copy once the flusher has flushed its queue copy.
    eventually(20, "the private copies to go", || {
        private_names(&rig, &batch).is_empty()
    });
    // A second batch, stopped as soon as its tasks are out: the stop waits for the
    // flush and removes the copies itself.
    let batch2 = submit_behind(&rig, "behind2", 3);
    assert_eq!(rig.stop("brain"), Some(0));
    assert_eq!(private_names(&rig, &batch2), Vec::<String>::new());
    rig.start_brain();
    rig.start_worker("w1", &[]);
    assert_eq!(rig.wait(&batch), 0);
    assert_eq!(rig.wait(&batch2), 0);
    assert!(rig
        .decisions_with(&["decision=resolve_duplicate"])
        .is_empty());
}

#[test]
fn a_release_torn_by_a_power_cut_runs_again_from_its_private_copy() {
    let mut rig = Rig::started(&[]);
    let batch = submit_behind(&rig, "behind", 0);
    rig.kill9("brain");
    // What a power cut between the release and its flush leaves: the queue copy
    // empty (its data never written), the private copy still there.
    let name = released(&rig).remove(0);
    let queued = rig.root().join("tasks/queue").join(&name);
    let private = rig
        .root()
        .join("brain/private_tasks")
        .join(&batch)
        .join(&name);
    if !private.exists() {
        std::fs::copy(&queued, &private).unwrap();
    }
    std::fs::write(&queued, b"").unwrap();
    // And the temporary of a write the kill cut short (written in the private
    // directory, renamed into queue/): removed at the start.
    let tmp = private.with_file_name(format!(".{name}.4242.0123abcd.tmp"));
    std::fs::write(&tmp, b"{\"half\": ").unwrap();
    rig.start_brain();
    rig.start_worker("w1", &[]);
    assert_eq!(rig.wait(&batch), 0);
    for item in 1..=3 {
        let out = rig.dir.path().join(format!("out-{item}.txt"));
        assert!(out.exists(), "{} missing", out.display());
    }
    // The torn copy was moved aside and the task released again from its private copy.
    assert_eq!(rig.decisions_with(&["decision=quarantine"]).len(), 1);
    let releases = rig.decisions_with(&["decision=release", "plan_task_id=follows"]);
    assert_eq!(releases.len(), 4, "{releases:#?}");
    assert!(private_names(&rig, &batch).is_empty());
    assert!(!tmp.exists(), "{} left", tmp.display());
}
