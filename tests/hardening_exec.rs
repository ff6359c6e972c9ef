//! Issue 9, slice A, end to end: for_each values reach the shell as data, every
//! process a task starts ends with it, and task logs say why a task was killed and
//! stay within their cap.

mod common;

use std::path::Path;

use common::{eventually, running, text, Rig};
use rigmind_testkit::HOSTILE_NAMES;

/// A plan with one cpu task per `(name, command)`, each over `inputs/*`.
fn fan_out_plan(tasks: &[(&str, &str)]) -> String {
    let mut plan = String::from("# Plan: hostile\n\n");
    for (name, cmd) in tasks {
        plan.push_str(&format!(
            "## Task: {name}\n- task_class: cpu\n- for_each: inputs/*\n- command:\n  ```bash\n  {cmd}\n  ```\n\n"
        ));
    }
    plan
}

/// Every path under `dir` named `PWNED`.
fn pwned_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_name() == "PWNED" {
            found.push(p.clone());
        }
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(pwned_under(&p));
        }
    }
    found
}

#[test]
fn hostile_file_names_are_data_in_every_quoting_style() {
    let rig = Rig::new();
    for name in HOSTILE_NAMES {
        rig.write(&format!("inputs/{name}"), "x");
    }
    std::fs::create_dir_all(rig.dir.path().join("out")).unwrap();
    // What each task writes, from the item (`inputs/NAME`) and its stem.
    type Want = fn(&str, &str) -> String;
    let tasks: &[(&str, &str, Want)] = &[
        ("bare", "printf %s {item} > out/bare-{index}", |i, _| i.into()),
        ("dq", "printf %s \"{item}\" > \"out/dq-{index}\"", |i, _| {
            i.into()
        }),
        ("sq", "printf %s '{item}' > 'out/sq-{index}'", |i, _| i.into()),
        ("ansi", "printf %s $'{item}' > out/ansi-{index}", |i, _| {
            i.into()
        }),
        (
            "subst",
            "printf %s \"$(basename {item})\" > out/subst-{index}",
            |i, _| i.trim_start_matches("inputs/").into(),
        ),
        (
            "tick",
            "printf %s \"`printf %s '{item}'`\" > out/tick-{index}",
            |i, _| i.into(),
        ),
        (
            "stems",
            "printf '%s|%s|%s|%s' {stem} \"{stem}\" '{stem}' \"$(printf %s {stem})\" > out/stems-{index}",
            |_, s| [s, s, s, s].join("|"),
        ),
        (
            "env",
            "printf '%s|%s|%s' \"$RIGMIND_ITEM\" \"$RIGMIND_STEM\" \"$RIGMIND_INDEX\" > out/env-{index}",
            |i, s| format!("{i}|{s}|"),
        ),
    ];
    let spec: Vec<(&str, &str)> = tasks.iter().map(|(n, c, _)| (*n, *c)).collect();
    let plan = rig.write("hostile.md", &fan_out_plan(&spec));

    let out = rig.rigmind(&["run", plan.to_str().unwrap()]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        pwned_under(rig.dir.path()),
        Vec::<std::path::PathBuf>::new(),
        "a payload ran\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        !Path::new("PWNED").exists(),
        "a payload ran in the test's cwd"
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );

    // Items are sorted as strings, so the index of each is known.
    let mut items: Vec<String> = HOSTILE_NAMES
        .iter()
        .map(|n| format!("inputs/{n}"))
        .collect();
    items.sort();
    for (index, item) in items.iter().enumerate() {
        let stem = Path::new(item).file_stem().unwrap().to_str().unwrap();
        for (name, _, want) in tasks {
            let got = std::fs::read_to_string(rig.dir.path().join(format!("out/{name}-{index}")))
                .unwrap_or_else(|e| panic!("{name} for {item:?}: {e}"));
            let mut want = want(item, stem);
            if *name == "env" {
                want.push_str(&index.to_string());
            }
            assert_eq!(got, want, "task {name} for item {item:?}");
        }
    }
    // The task file holds what bash ran: the references, never the values.
    let done = rig.tasks_in("complete");
    let bare = done
        .iter()
        .find(|t| t["plan_task_id"] == "bare" && t["index"] == 0)
        .expect("bare[0] in complete/");
    assert_eq!(
        bare["command"], "printf %s \"${RIGMIND_ITEM}\" > out/bare-0",
        "{bare}"
    );
    assert_eq!(bare["item"], items[0].as_str());
    assert!(bare["stem"].is_string(), "{bare}");
}

#[test]
fn the_readme_example_command_is_safe_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.starts_with("- command:") && l.contains("{item}"))
        .expect("the README's fan-out example");
    let cmd = line
        .trim_start_matches("- command:")
        .trim()
        .trim_matches('`')
        .replace("python scripts/transcribe.py", "cat");
    let rig = Rig::new();
    for name in ["x\"; touch PWNED; echo \".mp3", "$(touch PWNED).mp3"] {
        rig.write(&format!("inputs/{name}"), name);
    }
    std::fs::create_dir_all(rig.dir.path().join("out")).unwrap();
    let plan = rig.write(
        "readme.md",
        &format!(
            "# Plan: readme\n\n## Task: transcribe\n- task_class: cpu\n- for_each: `inputs/*.mp3`\n- command: `{cmd}`\n"
        ),
    );
    let out = rig.rigmind(&["run", plan.to_str().unwrap()]);
    assert!(pwned_under(rig.dir.path()).is_empty(), "a payload ran");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let copied = std::fs::read_to_string(rig.dir.path().join("out/$(touch PWNED).txt")).unwrap();
    assert_eq!(copied, "$(touch PWNED).mp3");
}

/// Runs `plan` on a brain and one worker (`env` for both) and waits for the batch.
fn run_plan(rig: &mut Rig, plan_text: &str) -> String {
    let plan = rig.write("plan.md", plan_text);
    rig.start_brain();
    rig.start_worker("w1", &[]);
    let batch = rig.submit(&plan);
    rig.wait(&batch);
    batch
}

/// The pid a task wrote into `rel`.
fn pid_in(rig: &Rig, rel: &str) -> String {
    std::fs::read_to_string(rig.dir.path().join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
        .trim()
        .to_string()
}

fn daemons_end_with_their_task(no_cgroup: bool) {
    let mut rig = Rig::new();
    if no_cgroup {
        rig.env.push(("RIGMIND_NO_CGROUP".into(), "1".into()));
    }
    let plan = concat!(
        "# Plan: daemons\n\n",
        "## Task: hangs\n- task_class: cpu\n- timeout: 1s\n- retries: 0\n",
        "- command: `setsid sleep 300 & echo $! > hangs.pid; sleep 60`\n\n",
        "## Task: exits\n- task_class: cpu\n",
        "- command: `setsid sleep 300 & echo $! > exits.pid; exit 0`\n",
    );
    run_plan(&mut rig, plan);
    // Both tasks are filed: their processes were ended before that.
    for (task, dir) in [("hangs", "failed"), ("exits", "complete")] {
        let t = rig.task(dir, task);
        let pid = pid_in(&rig, &format!("{task}.pid"));
        assert!(
            !running(&pid),
            "{task}: its setsid sleep {pid} survived ({t})"
        );
    }
    let hangs = rig.task("failed", "hangs");
    assert_eq!(hangs["failure_kind"], "timeout");
    let log = std::fs::read_to_string(hangs["log_path"].as_str().unwrap()).unwrap();
    let last = log.lines().last().unwrap_or("");
    assert!(
        last.starts_with("--- rigmind: killed at ")
            && last
                .ends_with(": timeout after 1s (SIGTERM to its processes, SIGKILL 2 s later) ---"),
        "{log}"
    );
    // The worker said once which mechanism it uses.
    let said = std::fs::read_to_string(rig.dir.path().join("w1.stderr")).unwrap();
    let lines: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("task containment:"))
        .collect();
    assert_eq!(lines.len(), 1, "{said}");
    if no_cgroup {
        assert!(lines[0].contains("RIGMIND_NO_CGROUP is set"), "{said}");
    } else if !lines[0].contains("a cgroup per task") {
        eprintln!(
            "this machine has no usable cgroups; the fallback was tested: {}",
            lines[0]
        );
    }
}

#[test]
fn daemons_end_with_their_task_in_a_cgroup() {
    daemons_end_with_their_task(false);
}

#[test]
fn daemons_end_with_their_task_by_marker() {
    daemons_end_with_their_task(true);
}

#[test]
fn task_logs_are_capped_by_rig_toml() {
    let mut rig = Rig::new();
    std::fs::create_dir_all(rig.root()).unwrap();
    std::fs::write(rig.root().join("rig.toml"), "[logs]\nmax_task_log_mb = 1\n").unwrap();
    let plan = concat!(
        "# Plan: loud\n\n## Task: loud\n- task_class: cpu\n",
        "- command: `echo FIRST; head -c 3000000 /dev/zero | tr '\\0' x; echo; echo LAST`\n",
    );
    run_plan(&mut rig, plan);
    let t = rig.task("complete", "loud");
    let log = std::fs::read_to_string(t["log_path"].as_str().unwrap()).unwrap();
    assert!(log.len() < 1024 * 1024 + 1000, "{} bytes", log.len());
    let head: String = log
        .lines()
        .take(2)
        .map(|l| &l[..l.len().min(20)])
        .collect::<Vec<_>>()
        .join("|");
    assert!(head.contains("|FIRST"), "{head}");
    assert!(log.ends_with("xxx\nLAST\n"), "{}", &log[log.len() - 20..]);
    let cut = 3_000_000 + 6 + 1 + 5 - 1024 * 1024;
    assert!(
        log.contains(&format!(
            "\n--- rigmind: {cut} bytes cut here (log cap 1 MB) ---\n"
        )),
        "no cut line"
    );
}

#[test]
fn validate_refuses_nul_bytes_and_zero_timeouts_with_their_lines() {
    let rig = Rig::new();
    let plan = rig.write(
        "bad.md",
        "# p\n## a\n- task_class: cpu\n- command: echo a\0b\n- timeout: 0\n",
    );
    let out = rig.rigmind(&["validate", plan.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let p = plan.display();
    assert!(
        stderr.contains(&format!("{p}:4: field 'command' holds a NUL byte")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{p}:5: timeout must be more than 0, not '0'")),
        "{stderr}"
    );

    std::fs::create_dir_all(rig.root()).unwrap();
    std::fs::write(
        rig.root().join("rig.toml"),
        "[defaults]\ntimeout = \"0s\"\n",
    )
    .unwrap();
    let good = rig.write("good.md", "# p\n## a\n- task_class: cpu\n- command: true\n");
    let out = rig.rigmind(&["validate", good.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("rig.toml:2: defaults.timeout: must be more than 0"),
        "{stderr}"
    );
}

#[test]
fn a_cancelled_task_s_log_says_it_was_killed_and_why() {
    let mut rig = Rig::new();
    rig.start_brain();
    rig.start_worker("w1", &[]);
    let plan = rig.write(
        "cancel.md",
        "# Plan: cancel\n\n## Task: long\n- task_class: cpu\n- command: `setsid sleep 300 & echo $! > long.pid; sleep 60`\n",
    );
    let batch = rig.submit(&plan);
    let pid = rig.await_line("long.pid");
    let out = rig.rigmind(&["cancel", &batch]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(rig.wait(&batch), 1);
    assert!(
        !running(&pid),
        "the setsid sleep {pid} of a cancelled task survived"
    );
    let t = rig.task("failed", "long");
    assert_eq!(t["failure_kind"], "cancelled");
    let log = std::fs::read_to_string(t["log_path"].as_str().unwrap()).unwrap();
    assert!(
        log.lines().any(|l| l.starts_with("--- rigmind: killed at ")
            && l.ends_with(
                ": its batch was cancelled (SIGKILL to all its processes, by the brain) ---"
            )),
        "{log}"
    );
}

/// Kills whatever is left in a cgroup the test made and removes it, with the
/// (emptied) task cgroups in it, when the test ends, passed or not.
struct TestCgroup(std::path::PathBuf);
impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("cgroup.kill"), "1");
        std::thread::sleep(std::time::Duration::from_millis(200));
        for e in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            let _ = std::fs::remove_dir(e.path());
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_dead_worker_s_task_cgroup_is_killed_though_the_worker_ran_in_another_cgroup() {
    let test = "a_dead_worker_s_task_cgroup_is_killed_though_the_worker_ran_in_another_cgroup";
    let how = rigmind_exec::mechanism();
    let rigmind_exec::Mechanism::Cgroup { parent } = how else {
        common::skip(test, &format!("no writable cgroup v2 here ({how})"));
        return;
    };
    // The worker's own cgroup: a child of the test's (and the brain's).
    let home = parent.join(format!("rigmind-test-{}-worker", std::process::id()));
    std::fs::create_dir(&home).unwrap();
    let _home = TestCgroup(home.clone());
    let mut rig = Rig::started(&[]);
    rig.start_worker_in_cgroup("w1", &home);
    // The daemon drops the task's marker: only the task's cgroup can find it.
    let plan = rig.write(
        "escape.md",
        "# Plan: escape\n\n## Task: hide\n- task_class: cpu\n- retries: 0\n- command: `env -u RIGMIND_TASK_ID setsid sleep 300 & echo $! > bg.pid; sleep 300`\n",
    );
    rig.submit(&plan);
    let bg = rig.await_line("bg.pid");
    assert!(running(&bg));
    let its = std::fs::read_to_string(format!("/proc/{}/cgroup", bg.trim())).unwrap();
    assert!(its.contains("-worker/rigmind-task-"), "{its}");
    rig.kill9("w1");
    eventually(30, "the brain to file the task as lost", || {
        !rig.decisions_with(&["decision=lost", "task=hide"])
            .is_empty()
    });
    eventually(10, "the dead worker's escaped daemon to die", || {
        !running(&bg)
    });
    let t = rig.task("failed", "hide");
    assert!(
        t["cgroup"]
            .as_str()
            .unwrap()
            .starts_with(home.to_str().unwrap()),
        "{t}"
    );
}
