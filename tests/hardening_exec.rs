//! Issue 9, slice A, end to end: for_each values reach the shell as data, every
//! process a task starts ends with it, and task logs say why a task was killed and
//! stay within their cap.

mod common;

use std::path::Path;

use common::{eventually, running, text, Rig};

/// Names a hostile folder may hold; each would run `touch PWNED` if pasted raw.
const HOSTILE: &[&str] = &[
    "x\"; touch PWNED; echo \".txt",
    "$(touch PWNED).txt",
    "`touch PWNED`.txt",
    "a'b;touch PWNED;'.txt",
    "new\nline.txt",
    "*",
    "sp a ces.txt",
    "back\\slash\\.txt",
    "-n.txt",
    "{stem} $HOME.txt",
];

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
    for name in HOSTILE {
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
    let mut items: Vec<String> = HOSTILE.iter().map(|n| format!("inputs/{n}")).collect();
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

/// Reads the pid a task wrote, once it is there.
fn pid_in(rig: &Rig, rel: &str) -> String {
    let path = rig.dir.path().join(rel);
    eventually(30, rel, || {
        std::fs::read_to_string(&path).is_ok_and(|s| s.ends_with('\n'))
    });
    std::fs::read_to_string(&path).unwrap().trim().to_string()
}

#[allow(dead_code)]
fn is_running(pid: &str) -> bool {
    running(pid)
}
