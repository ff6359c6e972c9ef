//! A locked-down root (`rigmind init --group`), the files it refuses, and what a
//! task may not inherit: the real binaries on a real temporary root.
//!
//! Ownership needs root's rights (`chown` to a stranger); where the tests do not
//! run as root, those parts say they skipped.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::{eventually, skip, text, Rig};

/// A group every Debian-like system has, which the tests' user need not be in.
const GROUP: &str = "daemon";
/// A user id no /etc/passwd lists: a stranger to every group.
const STRANGER: u32 = 4242;

fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

fn gid_of(group: &str) -> Option<u32> {
    rigmind_queue::access::group_id(group)
}

/// A hand task (not yet let in by a brain) that writes `marker` under the temp dir.
fn hand_task(rig: &Rig, id: &str, marker: &str) -> String {
    format!(
        r#"{{"task_id": "{id}", "batch_id": "handmade", "name": "{id}",
            "task_class": "cpu", "status": "queued",
            "command": "touch {marker}", "workdir": "{}"}}"#,
        rig.workdir()
    )
}

/// The decision lines that quarantined the file named `file`.
fn quarantined(rig: &Rig, file: &str) -> Vec<String> {
    rig.decisions_with(&["decision=quarantine", file])
}

#[test]
fn init_locks_the_root_down_and_the_processes_keep_it_so() {
    let Some(gid) = gid_of(GROUP) else {
        return skip(
            "init_locks_the_root_down",
            "no 'daemon' group in /etc/group",
        );
    };
    if !is_root() {
        return skip(
            "init_locks_the_root_down",
            "giving files a group needs root here",
        );
    }
    let mut rig = Rig::new();
    let out = rig.rigmind(&["init", "--group", GROUP]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("locked down to group daemon"),
        "{}",
        text(&out.stdout)
    );
    let root = std::fs::metadata(rig.root()).unwrap();
    assert_eq!(root.mode() & 0o7777, 0o2770, "the root's mode");
    assert_eq!(root.gid(), gid);
    for d in ["tasks/queue", "tasks/rejected", "logs/tasks", "workers"] {
        let m = std::fs::metadata(rig.root().join(d)).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o2770, "{d}");
        assert_eq!(m.gid(), gid, "{d}");
    }

    // A process with a loose umask still leaves nothing for others.
    // SAFETY: umask(2) only swaps the process's mask.
    let old = unsafe { libc::umask(0o000) };
    rig.start_brain();
    rig.start_worker("w1", &[]);
    unsafe { libc::umask(old) };
    let plan = rig.write(
        "plan.md",
        "# p\n\n## t\n- task_class: cpu\n- command: echo hi\n",
    );
    let batch = rig.submit(&plan);
    assert_eq!(rig.wait(&batch), 0);
    let made: Vec<_> = common::walk(&rig.root())
        .into_iter()
        .filter(|p| !p.ends_with("rig.toml"))
        .collect();
    assert!(made.len() > 5, "{made:?}");
    for p in made {
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert_eq!(m.mode() & 0o007, 0, "{} is open to others", p.display());
        assert_eq!(m.gid(), gid, "{} lost the root's group", p.display());
    }
}

#[test]
fn init_names_a_group_that_does_not_exist() {
    let rig = Rig::new();
    let out = rig.rigmind(&["init", "--group", "no-such-group-rigmind"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("there is no group 'no-such-group-rigmind'"),
        "{}",
        text(&out.stderr)
    );
}

/// Every bad file of the battery is moved to `rejected/` with its reason, nothing
/// it asks for runs, and a plan submitted after them still completes.
#[test]
fn the_bad_input_battery_is_refused_with_reasons_and_nothing_hangs() {
    let locked = is_root() && gid_of(GROUP).is_some();
    let mut rig = Rig::new();
    if locked {
        let out = rig.rigmind(&["init", "--group", GROUP]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    } else {
        skip(
            "battery: foreign owner",
            "not root (or no 'daemon' group): the stranger-owned file is left out",
        );
    }
    rig.start_brain();
    rig.start_worker("w1", &[]);
    let queue = rig.queue_dir();
    let dir = rig.dir.path().to_path_buf();

    let mut expect: Vec<(&str, &str)> = Vec::new();
    let put = |name: &str, body: String| {
        let p = queue.join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    // Writable by others.
    let p = put(
        "p05-00000001-handmade-open.json",
        hand_task(&rig, "open", "ran-open"),
    );
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
    expect.push((
        "p05-00000001-handmade-open.json",
        "writable by others (mode 0666)",
    ));
    // A task id that would put its log outside logs/tasks/.
    put(
        "p05-00000002-handmade-dots.json",
        hand_task(&rig, "../../escape", "ran-dots"),
    );
    expect.push((
        "p05-00000002-handmade-dots.json",
        "task_id '../../escape' contains '/'",
    ));
    // A symbolic link, a FIFO and a 1 GB file (sparse: nothing is written).
    let target = rig.write("elsewhere.json", &hand_task(&rig, "linked", "ran-link"));
    std::os::unix::fs::symlink(&target, queue.join("p05-00000003-handmade-link.json")).unwrap();
    expect.push((
        "p05-00000003-handmade-link.json",
        "not a regular file (a symbolic link)",
    ));
    let fifo = std::ffi::CString::new(
        queue
            .join("p05-00000004-handmade-fifo.json")
            .to_str()
            .unwrap(),
    )
    .unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    expect.push((
        "p05-00000004-handmade-fifo.json",
        "not a regular file (a FIFO)",
    ));
    let big = std::fs::File::create(queue.join("p05-00000005-handmade-big.json")).unwrap();
    big.set_len(1 << 30).unwrap();
    expect.push((
        "p05-00000005-handmade-big.json",
        "too big (1073741824 bytes",
    ));
    if locked {
        let p = put(
            "p05-00000006-handmade-stranger.json",
            hand_task(&rig, "stranger", "ran-stranger"),
        );
        std::os::unix::fs::chown(&p, Some(STRANGER), None).unwrap();
        expect.push((
            "p05-00000006-handmade-stranger.json",
            "owned by uid 4242, who is not a member of the root's group daemon",
        ));
    }

    for (file, reason) in &expect {
        eventually(30, &format!("{file} to be quarantined"), || {
            rig.root()
                .join("tasks/rejected")
                .join(file)
                .symlink_metadata()
                .is_ok()
        });
        let lines = quarantined(&rig, file);
        assert!(
            lines.iter().any(|l| l.contains(reason)),
            "{file}: no reason '{reason}' in {lines:?}"
        );
    }
    // A good plan still runs after all that, and nothing the bad files asked for ran.
    let plan = rig.write(
        "plan.md",
        "# p\n\n## good\n- task_class: cpu\n- command: touch ran-good\n",
    );
    let batch = rig.submit(&plan);
    assert_eq!(rig.wait(&batch), 0);
    assert!(dir.join("ran-good").exists());
    for m in ["ran-open", "ran-dots", "ran-link", "ran-stranger"] {
        assert!(!dir.join(m).exists(), "{m}: a refused file ran");
    }
    assert!(!rig.root().join("escape.log").exists());
    assert!(rig.all_alive(), "a process died on the battery");
}

/// A file that claims the brain let it in, but that others may write, is refused
/// by the worker that claims it: moved aside, not run.
#[test]
fn a_worker_refuses_a_released_task_file_that_others_may_write() {
    let mut rig = Rig::new();
    rig.start_worker("w1", &[]);
    let queue = rig.queue_dir();
    let body = hand_task(&rig, "sneaky", "ran-sneaky").replace(
        "\"status\": \"queued\"",
        "\"status\": \"queued\", \"released_by\": \"brain\"",
    );
    // Made open before it is moved in: a worker claims a released file at once.
    let p = rig.write("sneaky.json", &body);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o646)).unwrap();
    std::fs::rename(&p, queue.join("p05-00000001-handmade-sneaky.json")).unwrap();
    eventually(20, "the worker to move it aside", || {
        rig.root()
            .join("tasks/rejected/p05-00000001-handmade-sneaky.json")
            .exists()
    });
    assert!(!rig.dir.path().join("ran-sneaky").exists());
    let log = std::fs::read_to_string(rig.dir.path().join("w1.stderr")).unwrap();
    assert!(log.contains("writable by others (mode 0646)"), "{log}");
}

/// `[security] scrub_env` and the endpoints' key variables never reach a task.
#[test]
fn secrets_named_in_rig_toml_are_not_in_a_task_s_environment() {
    let mut rig = Rig::new();
    rig.env = vec![
        ("MY_SECRET".into(), "s3cret".into()),
        ("HF_TOKEN".into(), "hf_x".into()),
        ("OPENAI_API_KEY".into(), "sk-x".into()),
        ("KEEP_ME".into(), "ok".into()),
    ];
    rig.start_with_config(
        "[security]\nscrub_env = [\"MY_SECRET\", \"*_TOKEN\"]\n\n\
         [[endpoint]]\nname = \"o\"\napi = \"openai\"\nurl = \"http://127.0.0.1:9/v1\"\n\
         models = [\"m\"]\napi_key_env = \"OPENAI_API_KEY\"\n",
        &["w1"],
    );
    let plan = rig.write(
        "plan.md",
        "# p\n\n## env\n- task_class: cpu\n- command: env > env.txt\n",
    );
    let batch = rig.submit(&plan);
    assert_eq!(rig.wait(&batch), 0);
    let env = std::fs::read_to_string(rig.dir.path().join("env.txt")).unwrap();
    assert!(env.contains("KEEP_ME=ok"), "{env}");
    for secret in ["MY_SECRET", "HF_TOKEN", "OPENAI_API_KEY"] {
        assert!(!env.contains(secret), "{secret} reached the task:\n{env}");
    }
}

/// An `output` outside the plan's directory is an error naming the line, unless
/// the plan says `write_outside: true`.
#[test]
fn validate_refuses_an_output_outside_the_plan_s_directory() {
    let rig = Rig::new();
    let bad = rig.write(
        "plan.md",
        "# p\n\n## s\n- task_class: llm\n- prompt: hi\n- output: ../../etc/x.md\n",
    );
    let out = rig.rigmind(&["validate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(said.contains(":6:") || said.contains("line 6"), "{said}");
    assert!(
        said.contains("climbs out of the plan's directory"),
        "{said}"
    );
    let ok = rig.write(
        "ok.md",
        "# p\n\n## s\n- task_class: llm\n- prompt: hi\n- output: ../../tmp/x.md\n- write_outside: true\n",
    );
    let out = rig.rigmind(&["validate", ok.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

/// An open umask (000) does not make rigmind's own task files writable by others,
/// which the workers would refuse: a plan still runs to its end.
#[test]
fn an_open_umask_does_not_make_rigmind_refuse_its_own_files() {
    let rig = Rig::new();
    let plan = rig.write(
        "plan.md",
        "# p\n\n## a\n- task_class: cpu\n- command: touch ran-a\n\n## b\n- task_class: cpu\n- depends_on: a\n- command: touch ran-b\n",
    );
    let out = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg("umask 000 && exec \"$0\" run \"$1\" --root \"$2\"")
        .arg(common::RIGMIND)
        .arg(&plan)
        .arg(rig.root())
        .current_dir(rig.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(rig.dir.path().join("ran-b").exists());
    assert!(
        rig.names_in("rejected").is_empty(),
        "{:?}",
        rig.names_in("rejected")
    );
    for f in common::walk(&rig.root().join("tasks/complete")) {
        let mode = std::fs::metadata(&f).unwrap().mode();
        assert_eq!(mode & 0o002, 0, "{} is writable by others", f.display());
    }
}
