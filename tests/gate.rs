//! `rigmind gate` and the CPU temperature gate, end to end: the real binaries, real
//! child processes, a fake CPU sensor tree (`RIGMIND_SYS_ROOT`) on a temp root.
//!
//! - a gate and queued tasks of one group (one slot) never overlap: each writes
//!   start/end lines to one journal, which must alternate;
//! - a `kill -9`ed gate frees its slot (and its command dies with it);
//! - `--check` and `--no-wait` exit 0/1 with the reasons;
//! - a process whose command line matches a group's `match` holds the group, for
//!   workers and gates;
//! - a CPU over `max_cpu_temp_c` holds a script claim while a cpu task runs, and
//!   `rigmind status` says why.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use common::{eventually, running, text, wait_exit, Rig, RIGMIND};

/// `rigmind gate --root ROOT ARGS` (ARGS may end with `-- CMD...`), run in the temp
/// dir, with the rig's environment.
fn gate_cmd(rig: &Rig, args: &[&str]) -> Command {
    let mut c = Command::new(RIGMIND);
    c.arg("gate")
        .arg("--root")
        .arg(rig.root())
        .args(args)
        .envs(rig.env.iter().map(|(k, v)| (k, v)))
        .current_dir(rig.dir.path());
    c
}

fn gate_run(rig: &Rig, args: &[&str]) -> Output {
    gate_cmd(rig, args).output().expect("run rigmind gate")
}

fn gate_spawn(rig: &Rig, args: &[&str]) -> Child {
    gate_cmd(rig, args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rigmind gate")
}

/// Waits for one gate file under the root: its pid.
fn await_gate_file(rig: &Rig) -> u64 {
    let dir = rig.root().join("gates");
    let mut pid = 0;
    eventually(10, "a gate file", || {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return false;
        };
        rd.flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .any(|v| {
                pid = v["pid"].as_u64().unwrap_or(0);
                pid > 0
            })
    });
    pid
}

/// A plan of `n` cpu tasks of group `wl`, each journalling its start and end.
fn group_plan(rig: &Rig, n: usize, hold_secs: f64) -> std::path::PathBuf {
    let items: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
    rig.write(
        "plan.md",
        &format!(
            "# Plan: grouped\n\n## Task: work\n- task_class: cpu\n- group: wl\n- for_each: [{}]\n- command: `echo \"start $RIGMIND_STEM\" >> journal.txt; sleep {hold_secs}; echo \"end $RIGMIND_STEM\" >> journal.txt`\n",
            items.join(", ")
        ),
    )
}

/// Submits one task of group `wl` while its only slot is held (`held`: by what),
/// checks that it waits, calls `free`, and waits for the batch to complete.
fn submit_held_then_freed(rig: &Rig, held: &str, free: impl FnOnce()) {
    let batch = rig.submit(&group_plan(rig, 1, 0.0));
    let queued = || {
        rig.tasks_in("queue")
            .iter()
            .any(|t| t["name"] == "work[t0]")
    };
    eventually(10, "the task to be queued", queued);
    // The worker has had several rescans (0.5 s) to take the task: the slot holds it.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(queued(), "a task ran while {held}");
    free();
    assert_eq!(rig.wait(&batch), 0, "the slot stayed taken after: {held}");
}

/// Asserts the journal alternates `start X` / `end X`: nothing overlapped.
fn assert_no_overlap(journal: &str, expect_runs: usize) {
    let lines: Vec<&str> = journal.lines().collect();
    assert_eq!(lines.len(), 2 * expect_runs, "journal:\n{journal}");
    for pair in lines.chunks(2) {
        let who = pair[0].strip_prefix("start ").unwrap_or_else(|| {
            panic!("two runs of the group overlapped at {pair:?}; journal:\n{journal}")
        });
        assert_eq!(
            pair[1],
            format!("end {who}"),
            "two runs of the group overlapped; journal:\n{journal}"
        );
    }
}

#[test]
fn a_gate_and_queued_tasks_of_one_group_never_overlap() {
    let mut rig = Rig::new();
    rig.write("root/rig.toml", "[groups]\nwl = 1\n");
    rig.start_brain();
    rig.start_worker("w1", &["--classes", "cpu"]);
    rig.start_worker("w2", &["--classes", "cpu"]);
    rig.queue_dir();
    let batch = rig.submit(&group_plan(&rig, 4, 0.3));
    let body = "echo \"start $0\" >> journal.txt; sleep 0.3; echo \"end $0\" >> journal.txt";
    let mut gates: Vec<Child> = (0..3)
        .map(|i| {
            let name = format!("g{i}");
            gate_spawn(&rig, &["--group", "wl", "--", "bash", "-c", body, &name])
        })
        .collect();
    assert_eq!(rig.wait(&batch), 0, "the batch did not complete");
    for g in &mut gates {
        assert!(wait_exit(g, 60, "a gate").success());
    }
    let journal = std::fs::read_to_string(rig.dir.path().join("journal.txt")).unwrap();
    assert_no_overlap(&journal, 7);
    assert!(journal.contains("start g0") && journal.contains("start t3"));
}

#[test]
fn a_killed_gate_frees_its_slot_and_its_command_dies_with_it() {
    let mut rig = Rig::new();
    rig.write("root/rig.toml", "[groups]\nwl = 1\n");
    rig.start_brain();
    rig.start_worker("w1", &["--classes", "cpu"]);
    rig.queue_dir();
    let mut gate = gate_spawn(
        &rig,
        &[
            "--group",
            "wl",
            "--",
            "bash",
            "-c",
            "echo $$ > cmd.pid; exec sleep 60",
        ],
    );
    await_gate_file(&rig);
    let cmd_pid = rig.await_line("cmd.pid");
    submit_held_then_freed(&rig, "a gate held the group's only slot", || {
        gate.kill().unwrap();
        gate.wait().unwrap();
    });
    eventually(10, "the gate's command to die with it", || {
        !running(&cmd_pid)
    });
    assert!(
        std::fs::read_dir(rig.root().join("gates"))
            .unwrap()
            .flatten()
            .next()
            .is_none(),
        "the dead gate's file was not removed"
    );
}

#[test]
fn check_and_no_wait_exit_1_with_the_reasons() {
    let rig = Rig::new();
    rig.write("root/rig.toml", "[groups]\nwl = 1\n");
    let check = gate_run(&rig, &["--check", "--group", "wl"]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stderr));
    assert_eq!(text(&check.stdout), "");
    // The command's exit status is the gate's.
    let seven = gate_run(&rig, &["--group", "wl", "--", "sh", "-c", "exit 7"]);
    assert_eq!(seven.status.code(), Some(7));

    let mut holder = gate_spawn(&rig, &["--group", "wl", "--", "sleep", "60"]);
    let pid = await_gate_file(&rig);
    let check = gate_run(&rig, &["--check", "--group", "wl"]);
    assert_eq!(check.status.code(), Some(1));
    assert_eq!(
        text(&check.stdout).trim(),
        format!("group wl: 1 of 1 slots taken: gate pid {pid} (sleep 60)")
    );
    let no_wait = gate_run(&rig, &["--no-wait", "--group", "wl", "--", "touch", "ran"]);
    assert_eq!(no_wait.status.code(), Some(1));
    assert!(
        text(&no_wait.stderr).contains("group wl: 1 of 1 slots taken"),
        "{}",
        text(&no_wait.stderr)
    );
    assert!(
        !rig.dir.path().join("ran").exists(),
        "--no-wait ran its command"
    );
    let status = rig.rigmind(&["status"]);
    assert!(
        text(&status.stdout).contains(&format!("gate pid {pid} (group wl")),
        "{}",
        text(&status.stdout)
    );
    // Other groups and no group are free; RAM beyond the box is refused.
    let no_group = gate_run(&rig, &["--check"]);
    assert_eq!(no_group.status.code(), Some(0));
    let huge = gate_run(&rig, &["--check", "--mem-mb", "999999999"]);
    assert_eq!(huge.status.code(), Some(1));
    assert!(text(&huge.stdout).starts_with("RAM: needs 999999999 MB"));
    let unknown = gate_run(&rig, &["--check", "--group", "nope"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(text(&unknown.stderr).contains("'nope' is not in"));
    holder.kill().unwrap();
    holder.wait().unwrap();
    let check = gate_run(&rig, &["--check", "--group", "wl"]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stdout));
}

#[test]
fn a_matching_foreign_process_holds_the_group() {
    let mut rig = Rig::new();
    rig.write(
        "root/rig.toml",
        "[groups]\nwl = { slots = 1, match = \"whisper.*large\" }\n",
    );
    let mut foreign = Command::new("bash")
        .args(["-c", "exec -a whisper-large sleep 60"])
        .spawn()
        .unwrap();
    let pid = foreign.id();
    eventually(10, "the foreign process to take its name", || {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"whisper-large"))
    });
    let check = gate_run(&rig, &["--check", "--group", "wl"]);
    assert_eq!(check.status.code(), Some(1));
    assert_eq!(
        text(&check.stdout).trim(),
        format!("group wl: 1 of 1 slots taken: process {pid} (whisper-large 60)")
    );
    // A gate whose own command matches does not hold itself back.
    let own = gate_run(
        &rig,
        &["--check", "--group", "wl", "--", "whisper", "large"],
    );
    assert_eq!(own.status.code(), Some(1));
    assert_eq!(
        text(&own.stdout),
        text(&check.stdout),
        "only the foreign process holds"
    );

    rig.start_brain();
    rig.start_worker("w1", &["--classes", "cpu"]);
    rig.queue_dir();
    submit_held_then_freed(&rig, "a matching process held the group", || {
        foreign.kill().unwrap();
        foreign.wait().unwrap();
    });
}

/// A `/sys` tree with one coretemp package sensor at `celsius`.
fn fake_sensor(sys: &Path, celsius: u32) {
    let dev = sys.join("class/hwmon/hwmon0");
    std::fs::create_dir_all(&dev).unwrap();
    std::fs::write(dev.join("name"), "coretemp\n").unwrap();
    std::fs::write(dev.join("temp1_label"), "Package id 0\n").unwrap();
    std::fs::write(dev.join("temp1_input"), format!("{}\n", celsius * 1000)).unwrap();
}

#[test]
fn a_hot_cpu_holds_heavy_claims_while_cpu_work_goes_on() {
    let mut rig = Rig::new();
    let sys = rig.dir.path().join("sys");
    fake_sensor(&sys, 97);
    rig.env
        .push(("RIGMIND_SYS_ROOT".into(), sys.display().to_string()));
    rig.write("root/rig.toml", "[safety]\nmax_cpu_temp_c = 90\n");
    rig.start_brain();
    rig.start_worker("w1", &["--classes", "cpu,script"]);
    rig.queue_dir();
    let plan = rig.write(
        "hot.md",
        "# Plan: hot\n\n## Task: heavy\n- task_class: script\n- command: `echo heavy > heavy.txt`\n\n## Task: light\n- task_class: cpu\n- command: `echo light > light.txt`\n",
    );
    let batch = rig.submit(&plan);
    rig.await_file("light.txt");
    eventually(10, "the script task to be queued", || {
        rig.tasks_in("queue").iter().any(|t| t["name"] == "heavy")
    });
    // The worker looks again every second while a gate holds: still held.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        !rig.dir.path().join("heavy.txt").exists(),
        "heavy work ran on a hot CPU"
    );
    let status = text(&rig.rigmind(&["status"]).stdout);
    assert!(
        status.contains("gate: CPU at 97 C > max_cpu_temp_c 90"),
        "{status}"
    );
    assert!(
        status.contains("CPU temperature: 97 C (coretemp Package id 0) > max_cpu_temp_c 90"),
        "{status}"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rig.root().join("workers/w1.json")).unwrap())
            .unwrap();
    assert_eq!(state["cpu_temp"]["celsius"], 97.0);
    let check = gate_run(&rig, &["--check"]);
    assert_eq!(check.status.code(), Some(1));
    assert_eq!(
        text(&check.stdout).trim(),
        "CPU at 97 C > max_cpu_temp_c 90"
    );
    // Cooled down: the held work runs.
    fake_sensor(&sys, 60);
    assert_eq!(rig.wait(&batch), 0);
    assert!(rig.dir.path().join("heavy.txt").exists());
}

#[test]
fn without_a_sensor_the_gate_passes_and_status_says_so() {
    let mut rig = Rig::new();
    let sys = rig.dir.path().join("empty-sys");
    std::fs::create_dir_all(&sys).unwrap();
    rig.env
        .push(("RIGMIND_SYS_ROOT".into(), sys.display().to_string()));
    rig.write("root/rig.toml", "[safety]\nmax_cpu_temp_c = 1\n");
    std::fs::create_dir_all(rig.root().join("tasks")).unwrap();
    let status = text(&rig.rigmind(&["status"]).stdout);
    assert!(status.contains("CPU temperature: no sensor"), "{status}");
    let check = gate_run(&rig, &["--check"]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stdout));
}

/// A gate's `--mem-mb` and the tasks' `mem_mb` are reservations in one count: a
/// task that would not fit beside a gate waits for it, and a gate that would not
/// fit beside a running task is refused. The host's RAM is a fake `/proc/meminfo`
/// (12 GB available).
#[test]
fn a_gate_s_memory_and_the_tasks_memory_are_one_count() {
    let mut rig = Rig::new();
    let meminfo = rig.write(
        "meminfo",
        "MemTotal: 16777216 kB\nMemAvailable: 12582912 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n",
    );
    rig.env
        .push(("RIGMIND_MEMINFO".into(), meminfo.display().to_string()));
    rig.write("root/rig.toml", "[safety]\nmin_free_ram_mb = 1024\n");
    rig.start_brain();
    rig.start_worker("w1", &["--classes", "cpu"]);
    rig.queue_dir();
    let mut gate = gate_spawn(&rig, &["--mem-mb", "8000", "--", "sleep", "60"]);
    await_gate_file(&rig);
    let plan = rig.write(
        "mem.md",
        "# Plan: mem\n\n## Task: big\n- task_class: cpu\n- mem_mb: 8000\n- command: `sleep 60`\n",
    );
    rig.submit(&plan);
    let in_dir = |dir: &str| rig.tasks_in(dir).iter().any(|t| t["name"] == "big");
    eventually(10, "the 8 GB task to be queued", || in_dir("queue"));
    // Several rescans (0.5 s) later it still waits: 12 GB - 8 GB - 1 GB < 8 GB.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(in_dir("queue"), "the task ran beside the gate's 8 GB");
    gate.kill().unwrap();
    gate.wait().unwrap();
    eventually(20, "the task to start once the gate is gone", || {
        in_dir("processing")
    });
    let out = gate_run(&rig, &["--check", "--mem-mb", "8000"]);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("RAM: needs 8000 MB"), "{said}");
    let out = gate_run(&rig, &["--check", "--mem-mb", "1000"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}
