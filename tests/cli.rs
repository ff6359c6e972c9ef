//! The `rigmind` command line on its own: for every command, a bad argument (clap's
//! exit 2, naming the argument) and the command's own errors and exit codes as the
//! README documents them. What other files already cover is not repeated here:
//! `wait`'s 2 on an unknown batch, `run --workers`, missing plans for
//! run/submit/validate and worker ids (`worker_stop_and_cli.rs`); `validate` 0/1
//! (`daemons.rs`); `cancel` of an unknown batch (`cancel_release.rs`).

mod common;

use std::process::{Command, Output};

use common::{text, Rig, RIGMIND};
use serde_json::Value;

/// The commands `rigmind --help` lists.
const COMMANDS: [&str; 16] = [
    "run",
    "submit",
    "wait",
    "status",
    "validate",
    "retry",
    "cancel",
    "gpus",
    "simulate",
    "report",
    "logs",
    "drain",
    "resume",
    "completions",
    "brain",
    "worker",
];

/// `rigmind ARGS` with the rig's root as `RIGMIND_ROOT` (not `--root`, which
/// `gpus` does not take) and `env` on top, in the rig's temp dir.
fn rigmind(rig: &Rig, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(RIGMIND)
        .args(args)
        .env("RIGMIND_ROOT", rig.root())
        .env_remove("RIGMIND_FAKE_GPUS")
        .envs(env.iter().copied())
        .current_dir(rig.dir.path())
        .output()
        .expect("run rigmind")
}

/// Asserts the exit code, showing stderr when it differs; returns stderr.
fn exits(out: &Output, code: i32, what: &str) -> String {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{what}: {err}");
    err
}

/// `p.md`: plan 'p', one cpu task with an estimate.
fn one_task_plan(rig: &Rig) -> std::path::PathBuf {
    rig.write(
        "p.md",
        "# Plan: p\n\n## Task: a\n- task_class: cpu\n- estimate: 5s\n- command: `true`\n",
    )
}

#[test]
fn every_command_refuses_an_unknown_argument_with_exit_2_naming_it() {
    let rig = Rig::new();
    for c in COMMANDS {
        let err = exits(&rigmind(&rig, &[c, "--bogus"], &[]), 2, c);
        assert!(err.contains("unexpected argument '--bogus'"), "{c}: {err}");
        assert!(
            err.contains(&format!("rigmind {c}")),
            "{c}: no usage: {err}"
        );
    }
    let err = exits(&rigmind(&rig, &["frobnicate"], &[]), 2, "frobnicate");
    assert!(
        err.contains("unrecognized subcommand 'frobnicate'"),
        "{err}"
    );
    let err = exits(&rigmind(&rig, &[], &[]), 2, "no command");
    assert!(err.contains("Usage: rigmind <COMMAND>"), "{err}");
}

#[test]
fn missing_conflicting_and_malformed_arguments_are_named_with_exit_2() {
    let rig = Rig::new();
    let cases: [(&[&str], &str); 13] = [
        (&["run"], "<PLAN>"),
        (&["submit"], "<PLAN>"),
        (&["wait"], "<BATCH>"),
        (&["validate"], "<PLANS>"),
        (&["retry"], "<TASK>"),
        (&["cancel"], "<BATCH>"),
        (&["simulate", "p.md"], "--rig <RIG>"),
        (&["worker"], "--id <ID>"),
        (&["retry", "x", "--batch", "y"], "'--batch <BATCH>'"),
        (
            &["wait", "abc", "--timeout", "soon"],
            "'--timeout <TIMEOUT>'",
        ),
        (
            &["cancel", "abc", "--timeout", "x"],
            "'--timeout <TIMEOUT>'",
        ),
        (&["brain", "--rescan", "x"], "'--rescan <RESCAN>'"),
        (
            &["worker", "--id", "w", "--grace", "x"],
            "'--grace <GRACE>'",
        ),
    ];
    for (args, names) in cases {
        let err = exits(&rigmind(&rig, args, &[]), 2, &args.join(" "));
        assert!(err.contains(names), "{args:?} should name {names}: {err}");
    }
}

#[test]
fn status_of_a_root_never_set_up_exits_2_and_its_json_has_every_section() {
    let rig = Rig::new();
    for args in [&["status"][..], &["status", "--json"]] {
        let err = exits(&rigmind(&rig, args, &[]), 2, "status of no root");
        assert!(
            err.contains("is not a rigmind root (no tasks/ directory)"),
            "{err}"
        );
    }
    // A submission without a brain sets the root up; status reads it.
    rig.submit(&one_task_plan(&rig));
    let out = rigmind(&rig, &["status", "--json"], &[]);
    exits(&out, 0, "status --json");
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(j["brain"].is_null(), "{j}");
    for d in ["queue", "processing", "complete", "failed"] {
        assert!(j["queues"][d].is_object(), "queues.{d}: {j}");
    }
    assert_eq!(j["requests"], 1, "{j}");
    assert!(j["rejected"].is_number() && j["lost"].is_array(), "{j}");
    assert!(j["workers"].as_array().is_some_and(|w| w.is_empty()), "{j}");
    assert!(j["batches"].is_array(), "{j}");
    assert!(
        j["root"].as_str().is_some_and(|r| r.ends_with("root")),
        "{j}"
    );
}

#[test]
fn retry_of_nothing_failed_exits_1_and_says_where_it_looked() {
    let rig = Rig::new();
    let err = exits(&rigmind(&rig, &["retry", "nosuch"], &[]), 1, "retry");
    assert!(
        err.contains("no failed task 'nosuch'") && err.contains("tasks/failed"),
        "{err}"
    );
    let out = rigmind(&rig, &["retry", "--batch", "abcdef"], &[]);
    exits(&out, 1, "retry --batch");
    assert!(
        text(&out.stdout).contains("batch abcdef: no failed task to retry"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn simulate_exits_0_on_a_plan_it_can_finish_and_1_naming_what_is_wrong() {
    let rig = Rig::new();
    let plan = one_task_plan(&rig);
    let p = plan.to_str().unwrap();
    rig.write("rig.toml", "[[gpu]]\nindex = 0\nworker = \"g0\"\n");
    // A rig file that is not there has no [[gpu]] to simulate.
    let err = exits(
        &rigmind(&rig, &["simulate", p, "--rig", "missing.toml"], &[]),
        1,
        "missing rig",
    );
    assert!(
        err.contains("missing.toml") && err.contains("no [[gpu]] entry"),
        "{err}"
    );
    let err = exits(
        &rigmind(&rig, &["simulate", "nope.md", "--rig", "rig.toml"], &[]),
        1,
        "missing plan",
    );
    assert!(err.contains("cannot read plan nope.md"), "{err}");
    let args = ["simulate", p, "--rig", "rig.toml", "--policy", "nonsense"];
    let err = exits(&rigmind(&rig, &args, &[]), 1, "bad policy");
    assert!(err.contains("unknown policy 'nonsense'"), "{err}");

    let out = rigmind(&rig, &["simulate", p, "--rig", "rig.toml", "--json"], &[]);
    exits(&out, 0, "simulate --json");
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["plan"], "p", "{j}");
    assert_eq!(j["policies"][0]["policy"], "adaptive", "{j}");
    assert!(j["policies"][0]["makespan_s"].is_number(), "{j}");

    // With --noise the JSON says what each job really took, for a live replay.
    let noisy = ["simulate", p, "--rig", "rig.toml", "--json", "--noise", "3"];
    let out = rigmind(&rig, &noisy, &[]);
    exits(&out, 0, "simulate --noise --json");
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    let truth = j["truth"].as_array().expect("truth");
    assert_eq!(truth.len(), 1, "{j}");
    assert!(
        truth[0]["name"].is_string() && truth[0]["secs"].as_f64().unwrap() > 0.0,
        "{j}"
    );
    let (makespan, secs) = (
        j["policies"][0]["makespan_s"].as_f64(),
        truth[0]["secs"].as_f64(),
    );
    // The simulator counts whole microseconds.
    assert!(
        (makespan.unwrap() - secs.unwrap()).abs() < 1e-5,
        "one task: the makespan is its true time: {j}"
    );
}

#[test]
fn gpus_lists_fake_gpus_and_without_nvml_exits_1_pointing_at_the_fake() {
    let rig = Rig::new();
    let fake = [("RIGMIND_FAKE_GPUS", "2x8000")];
    let out = rigmind(&rig, &["gpus", "--json"], &fake);
    exits(&out, 0, "gpus --json");
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    let gpus = j.as_array().unwrap();
    assert_eq!(gpus.len(), 2, "{j}");
    assert_eq!(gpus[1]["index"], 1, "{j}");
    assert_eq!(gpus[1]["memory_total_mb"], 8000, "{j}");
    assert!(gpus[0]["uuid"]
        .as_str()
        .is_some_and(|u| u.starts_with("GPU-")));
    let out = rigmind(&rig, &["gpus"], &fake);
    exits(&out, 0, "gpus");
    assert!(text(&out.stdout).contains("(fake telemetry)"));

    let bad = [("RIGMIND_FAKE_GPUS", "garbage")];
    let err = exits(&rigmind(&rig, &["gpus"], &bad), 1, "bad fake spec");
    assert!(
        err.contains("bad RIGMIND_FAKE_GPUS value \"garbage\""),
        "{err}"
    );
    // An empty value counts as unset: NVML, which this machine may lack.
    let out = rigmind(&rig, &["gpus"], &[("RIGMIND_FAKE_GPUS", "")]);
    if !out.status.success() {
        let err = exits(&out, 1, "gpus without NVML");
        assert!(
            err.contains("NVML") && err.contains("RIGMIND_FAKE_GPUS=2x6144"),
            "{err}"
        );
    }
}

#[test]
fn worker_refuses_classes_it_cannot_take_with_exit_1() {
    let rig = Rig::new();
    let args = ["worker", "--id", "w", "--classes", "resource"];
    let err = exits(&rigmind(&rig, &args, &[]), 1, "resource class");
    assert!(
        err.contains("worker 'w': class 'resource' is the brain's"),
        "{err}"
    );
    let args = ["worker", "--id", "w", "--classes", "cpu,bogus"];
    let err = exits(&rigmind(&rig, &args, &[]), 1, "unknown class");
    assert!(
        err.contains("worker 'w': unknown task class 'bogus'"),
        "{err}"
    );
}

#[test]
fn run_refuses_llm_work_without_an_llm_worker_before_starting_anything() {
    let rig = Rig::new();
    let plan = rig.fixture("gpu_mixed.md");
    let args = ["run", plan.to_str().unwrap(), "--workers", "1"];
    let err = exits(&rigmind(&rig, &args, &[]), 1, "llm without a server");
    assert!(
        err.contains(
            "llm task(s) no [[endpoint]] serves, and no GPU worker here has an LLM server"
        ) && err.contains("nothing was started"),
        "{err}"
    );
    assert!(!rig.root().join("logs/brain.log").exists(), "{err}");
    let out = rigmind(&rig, &["status", "--json"], &[]);
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["requests"], 0, "nothing was submitted: {j}");
}

#[test]
fn submit_warns_of_llm_work_only_when_nothing_in_rig_toml_serves_it() {
    let rig = Rig::new();
    let plan = rig.fixture("gpu_mixed.md");
    let args = ["submit", plan.to_str().unwrap()];
    let err = exits(&rigmind(&rig, &args, &[]), 0, "submit without a server");
    assert!(
        err.contains("llm task(s) that no [[endpoint]] serves, and no [[gpu]]"),
        "{err}"
    );
    rig.write(
        "root/rig.toml",
        "[[gpu]]\nindex = 0\nworker = \"gpu0\"\nllama_server = \"http://127.0.0.1:9\"\n",
    );
    let err = exits(&rigmind(&rig, &args, &[]), 0, "submit with a card's server");
    assert!(!err.contains("warning"), "{err}");
}

#[test]
fn completions_are_scripts_their_shells_accept() {
    let rig = Rig::new();
    let out = rigmind(&rig, &["completions", "bash"], &[]);
    exits(&out, 0, "completions bash");
    let script = text(&out.stdout);
    for c in COMMANDS {
        assert!(script.contains(c), "bash completion lacks '{c}'");
    }
    assert!(script.contains("--metrics-addr"), "flags are completed too");
    let path = rig.write("rigmind.bash", &script);
    let check = Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .expect("run bash -n");
    assert!(
        check.status.success(),
        "bash -n refused it: {}",
        text(&check.stderr)
    );
    for shell in ["zsh", "fish"] {
        let out = rigmind(&rig, &["completions", shell], &[]);
        exits(&out, 0, shell);
        assert!(text(&out.stdout).contains("rigmind"), "{shell}");
    }
    let err = exits(&rigmind(&rig, &["completions", "tcsh"], &[]), 2, "tcsh");
    assert!(err.contains("invalid value 'tcsh'"), "{err}");
}
