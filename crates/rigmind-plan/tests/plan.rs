//! Behaviour of the plan.md parser and expander, rule by rule.

use std::fs;
use std::path::{Path, PathBuf};

use rigmind_plan::{
    expand, load, parse_file, parse_str, ExpandDefaults, ExpandedPlan, ForEach, Plan, PlanError,
    Severity,
};
use rigmind_types::{Executor, TaskClass};

const PATH: &str = "plans/x/plan.md";

fn parse(text: &str) -> Result<Plan, PlanError> {
    parse_str(Path::new(PATH), text)
}

fn ok(text: &str) -> Plan {
    match parse(text) {
        Ok(p) => p,
        Err(e) => panic!("plan should parse:\n{e}"),
    }
}

fn ok_expanded(text: &str) -> ExpandedPlan {
    let plan = ok(text);
    match expand(&plan, &ExpandDefaults::default()) {
        Ok(p) => p,
        Err(e) => panic!("plan should expand:\n{e}"),
    }
}

/// Errors of a plan that fails to parse, as (line, message).
fn errors(text: &str) -> Vec<(usize, String)> {
    let e = parse(text).expect_err("plan should be rejected");
    e.diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| (d.line, d.message.clone()))
        .collect()
}

/// Asserts exactly one error, at `line`, containing `needle`.
#[track_caller]
fn assert_error(text: &str, line: usize, needle: &str) {
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
    assert_eq!(errs[0].0, line, "wrong line for {errs:#?}");
    assert!(
        errs[0].1.contains(needle),
        "{:?} does not contain {needle:?}",
        errs[0].1
    );
}

/// Asserts one error at `line` containing `needle` after parse + expand.
#[track_caller]
fn assert_expand_error(dir: Option<&Path>, text: &str, line: usize, needle: &str) {
    let path = dir.map_or_else(|| PathBuf::from(PATH), |d| d.join("plan.md"));
    let plan = parse_str(&path, text).unwrap_or_else(|e| panic!("should parse:\n{e}"));
    let e = expand(&plan, &ExpandDefaults::default()).expect_err("should not expand");
    let errs: Vec<_> = e
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
    assert_eq!(errs[0].line, line, "wrong line for {errs:#?}");
    assert!(
        errs[0].message.contains(needle),
        "{:?} does not contain {needle:?}",
        errs[0].message
    );
}

fn warnings(plan: &Plan) -> Vec<(usize, String)> {
    plan.warnings
        .iter()
        .map(|d| (d.line, d.message.clone()))
        .collect()
}

fn fixture(name: &str) -> String {
    fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

// ---------------------------------------------------------------- the spec's example

#[test]
fn spec_example_parses_and_expands() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("inputs")).unwrap();
    fs::write(dir.path().join("inputs/ep2.mp3"), b"").unwrap();
    fs::write(dir.path().join("inputs/ep1.mp3"), b"").unwrap();
    fs::write(dir.path().join("inputs/notes.txt"), b"").unwrap();
    let path = dir.path().join("plan.md");
    fs::write(&path, fixture("spec_example.md")).unwrap();

    let plan = parse_file(&path).unwrap();
    assert_eq!(plan.name, "podcast-batch");
    assert_eq!(
        plan.description,
        "Free text here is the plan's description. It is kept, never executed."
    );
    assert_eq!(plan.dir, dir.path());
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    let names: Vec<_> = plan.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["init", "transcribe", "summarize", "report"]);
    let transcribe = &plan.tasks[1];
    assert_eq!(transcribe.line, 15);
    assert_eq!(
        transcribe.for_each,
        Some(ForEach::Glob("inputs/*.mp3".into()))
    );
    assert_eq!(transcribe.for_each_line, 18);
    assert_eq!(transcribe.depends_on_line, 17);
    assert_eq!(
        transcribe.command.as_deref(),
        Some(r#"python scripts/transcribe.py "{item}" > "out/transcripts/{stem}.txt""#)
    );

    let ex = load(&path).unwrap();
    let jobs: Vec<_> = ex.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(
        jobs,
        [
            "init",
            "transcribe[ep1]",
            "transcribe[ep2]",
            "summarize[ep1]",
            "summarize[ep2]",
            "report"
        ]
    );
    let init = &ex.jobs[0];
    assert_eq!(
        init.command.as_deref(),
        Some("mkdir -p out/transcripts out/summaries")
    );
    assert_eq!(init.task_class, TaskClass::Cpu);
    assert!(init.depends_on.is_empty());
    assert_eq!(init.timeout_secs, 1800.0);
    assert_eq!(init.retries, 3);
    assert_eq!(init.priority, 5);
    assert_eq!(init.llm.model.as_deref(), Some("qwen2.5:7b"));

    let t1 = &ex.jobs[1];
    assert_eq!(t1.plan_task_id, "transcribe");
    assert_eq!(t1.line, 15);
    assert_eq!(t1.task_class, TaskClass::Script);
    assert!(!t1.class_inferred);
    assert_eq!(t1.item.as_deref(), Some("inputs/ep1.mp3"));
    assert_eq!(t1.index, Some(0));
    assert_eq!(t1.stem.as_deref(), Some("ep1"));
    assert_eq!(
        t1.command.as_deref(),
        Some(
            r#"python scripts/transcribe.py "${RIGMIND_ITEM}" > "out/transcripts/${RIGMIND_STEM}.txt""#
        )
    );
    assert_eq!(t1.depends_on, [0]);
    assert_eq!(t1.depends_on_names, ["init"]);
    assert_eq!(t1.group.as_deref(), Some("whisper_large"));
    assert_eq!(t1.vram_mb, Some(3000));
    assert_eq!(ex.jobs[2].item.as_deref(), Some("inputs/ep2.mp3"));
    assert_eq!(ex.jobs[2].depends_on, [0]);

    let s2 = &ex.jobs[4];
    assert_eq!(s2.task_class, TaskClass::Llm);
    assert_eq!(s2.depends_on, [2]);
    assert_eq!(s2.depends_on_names, ["transcribe[ep2]"]);
    assert_eq!(
        s2.llm.prompt.as_deref(),
        Some("Summarize the transcript below in five bullet points.")
    );
    assert_eq!(
        s2.llm.prompt_file.as_deref(),
        Some("out/transcripts/ep2.txt")
    );
    assert_eq!(s2.llm.output.as_deref(), Some("out/summaries/ep2.md"));
    assert_eq!(s2.index, Some(1));

    let report = &ex.jobs[5];
    assert_eq!(report.depends_on, [3, 4]);
    assert_eq!(report.depends_on_names, ["summarize"]);
    assert_eq!(
        report.command.as_deref(),
        Some("cat out/summaries/*.md > out/report.md")
    );
    assert!(ex.warnings.is_empty());
}

#[test]
fn all_errors_are_collected_in_line_order() {
    let e = parse(&fixture("bad_fields.md")).unwrap_err();
    let got: Vec<_> = e
        .diagnostics
        .iter()
        .map(|d| (d.line, d.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (4, "'command' cannot be set in Defaults"),
            (10, "unknown field 'depend_on' (did you mean 'depends_on'?)"),
            (11, "priority 10 is reserved for resource tasks"),
            (13, "task 'b' has no prompt (llm tasks need one)"),
            (15, "task 'b' depends on unknown task 'c'"),
        ]
    );
}

#[test]
fn display_names_file_and_line() {
    let text = "# p\n\n## Task: transcribe\n- task_class: cpu\n- command: x\n\n## Task: summarize\n- task_class: cpu\n- command: y\n- depends_on: transcibe\n";
    let e = parse(text).unwrap_err();
    assert_eq!(
        e.to_string(),
        "plans/x/plan.md:10: task 'summarize' depends on unknown task 'transcibe' (did you mean 'transcribe'?)"
    );
}

#[test]
fn errors_come_before_warnings() {
    let text = "## Task: a\n- command: echo\n\n## Task: b\n- task_class: cpu\n";
    let e = parse(text).unwrap_err();
    let sev: Vec<_> = e.diagnostics.iter().map(|d| (d.severity, d.line)).collect();
    assert_eq!(
        sev,
        [
            (Severity::Error, 4),
            (Severity::Warning, 1),
            (Severity::Warning, 1)
        ]
    );
    assert_eq!(e.diagnostics[0].path, Path::new(PATH));
}

// ---------------------------------------------------------------- names and sections

#[test]
fn plan_name_and_description() {
    let p = ok("# plan:   My Plan  \n\nLine one *kept*.\n\nLine two.\n\n## a\n- task_class: cpu\n- command: x\n");
    assert_eq!(p.name, "My Plan");
    assert_eq!(p.description, "Line one *kept*.\n\nLine two.");
    assert!(p.warnings.is_empty());
    assert_eq!(p.tasks[0].name, "a");
}

#[test]
fn no_h1_is_a_warning_and_uses_the_file_stem() {
    let p = ok("## Task: a\n- task_class: cpu\n- command: x\n");
    assert_eq!(p.name, "plan");
    assert_eq!(p.dir, Path::new("plans/x"));
    let w = warnings(&p);
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].0, 1);
    assert!(w[0].1.contains("no level-1 heading"), "{w:?}");
}

#[test]
fn bad_task_names() {
    assert_error(
        "# p\n\n## Task: a b\n- task_class: cpu\n- command: x\n",
        3,
        "task name 'a b' may only contain",
    );
    let p = ok("# p\n## Task: a_b-c.d9\n- task_class: cpu\n- command: x\n");
    assert_eq!(p.tasks[0].name, "a_b-c.d9");
    let p = ok("# p\n## TASK:__init__\n- task_class: cpu\n- command: x\n");
    assert_eq!(p.tasks[0].name, "__init__");
}

#[test]
fn duplicate_task_names() {
    assert_error(
        "# p\n\n## a\n- task_class: cpu\n- command: x\n\n## Task: a\n- task_class: cpu\n- command: y\n",
        7,
        "duplicate task name 'a' (first defined at line 3)",
    );
}

#[test]
fn second_defaults_section() {
    assert_error("# p\n## Defaults\n- retries: 1\n## defaults\n- retries: 2\n## a\n- task_class: cpu\n- command: x\n", 4, "second Defaults section");
}

#[test]
fn zero_tasks() {
    assert_error("# p\n\nJust prose.\n", 1, "plan has no tasks");
    assert_error("", 1, "plan has no tasks");
    assert_error("# p\n## Defaults\n- retries: 1\n", 1, "plan has no tasks");
}

#[test]
fn first_bullet_list_is_fields_rest_is_notes() {
    let text = "# p\n\n## Task: a\nSome prose first.\n\n- task_class: cpu\n- command: echo\n\n### Notes\n- not: a field\n\nMore prose.\n";
    let p = ok(text);
    let t = &p.tasks[0];
    assert_eq!(t.command.as_deref(), Some("echo"));
    assert!(t.notes.contains("Some prose first."), "{:?}", t.notes);
    assert!(t.notes.contains("### Notes"));
    assert!(t.notes.contains("- not: a field"));
    assert!(t.notes.contains("More prose."));
    // A list after a deeper heading is the field list when it is the first one.
    let p = ok("# p\n## a\n### Fields\n- task_class: cpu\n- command: x\n");
    assert_eq!(p.tasks[0].command.as_deref(), Some("x"));
    // Ordered lists are not field lists.
    assert_error(
        "# p\n## a\n1. task_class: cpu\n",
        2,
        "task 'a' has no command",
    );
}

// ---------------------------------------------------------------- items and values

#[test]
fn item_without_key() {
    assert_error(
        "# p\n## a\n- task_class: cpu\n- command: x\n- just text\n",
        5,
        "is not 'key: value'",
    );
    assert_error(
        "# p\n## a\n- task_class: cpu\n- command: x\n- : x\n",
        5,
        "no key",
    );
}

#[test]
fn unknown_field_with_suggestion() {
    assert_error(
        "# p\n## a\n- task_class: cpu\n- command: x\n- depend_on: b\n",
        5,
        "unknown field 'depend_on' (did you mean 'depends_on'?)",
    );
    let errs = errors("# p\n## a\n- task_class: cpu\n- command: x\n- colour: red\n");
    assert_eq!(errs, [(5, "unknown field 'colour'".to_string())]);
}

#[test]
fn duplicate_field() {
    assert_error(
        "# p\n## a\n- task_class: cpu\n- command: x\n- Command: y\n",
        5,
        "field 'command' is set twice (first at line 4)",
    );
}

#[test]
fn keys_are_case_insensitive_and_trimmed() {
    let p = ok(
        "# p\n## a\n-   TASK_CLASS  : CPU\n- Command: echo hi\n- PRIORITY: 7\n- **retries**: 2\n",
    );
    let t = &p.tasks[0];
    assert_eq!(t.task_class, Some(TaskClass::Cpu));
    assert_eq!(t.command.as_deref(), Some("echo hi"));
    assert_eq!(t.priority, 7);
    assert_eq!(t.retries, Some(2));
}

#[test]
fn raw_values_survive_markdown_emphasis() {
    let p = ok(
        "# p\n## a\n- task_class: cpu\n- command: ls *.txt | grep _a_ | sed 's/**/x/' \\* <b>\n",
    );
    assert_eq!(
        p.tasks[0].command.as_deref(),
        Some("ls *.txt | grep _a_ | sed 's/**/x/' \\* <b>")
    );
}

#[test]
fn continuation_lines_are_joined() {
    let p = ok("# p\n## a\n- task_class: llm\n- prompt: first line\n    second *line*\n  third\n- model: m\n");
    assert_eq!(
        p.tasks[0].llm.prompt.as_deref(),
        Some("first line\nsecond *line*\nthird")
    );
    assert_eq!(p.tasks[0].llm.model.as_deref(), Some("m"));
}

#[test]
fn inline_code_is_unwrapped() {
    let p = ok("# p\n## a\n- task_class: cpu\n- command: `` echo `x` ``\n- output: `out/{a}.md`\n");
    assert_eq!(p.tasks[0].command.as_deref(), Some("echo `x`"));
    assert_eq!(p.tasks[0].llm.output.as_deref(), Some("out/{a}.md"));
    // Two code spans are not one: kept as written.
    let p = ok("# p\n## a\n- task_class: cpu\n- command: `a` && `b`\n");
    assert_eq!(p.tasks[0].command.as_deref(), Some("`a` && `b`"));
}

#[test]
fn fenced_blocks_backticks_and_tildes() {
    let text = "# p\n## a\n- task_class: cpu\n- command:\n  ```bash\n  for f in *.txt; do\n    echo \"$f\"\n  done\n  ```\n## b\n- task_class: llm\n- prompt:\n  ~~~text\n  Say *hi*.\n\n  Then stop.\n  ~~~\n- system:\n  ````\n  ```nested```\n  ````\n";
    let p = ok(text);
    assert_eq!(
        p.tasks[0].command.as_deref(),
        Some("for f in *.txt; do\n  echo \"$f\"\ndone")
    );
    assert_eq!(
        p.tasks[1].llm.prompt.as_deref(),
        Some("Say *hi*.\n\nThen stop.")
    );
    assert_eq!(p.tasks[1].llm.system.as_deref(), Some("```nested```"));
}

#[test]
fn loose_lists_work_too() {
    let p = ok("# p\n## a\n- task_class: cpu\n\n- command:\n\n  ```\n  echo hi\n  ```\n\n- depends_on:\n\n  - b\n\n## b\n- task_class: cpu\n- command: x\n");
    assert_eq!(p.tasks[0].command.as_deref(), Some("echo hi"));
    assert_eq!(p.tasks[0].depends_on, ["b"]);
}

#[test]
fn nested_list_values() {
    let text = "# p\n## a\n- task_class: cpu\n- command: x\n- depends_on:\n  - `b`\n  - c\n- env:\n  - `A=1,2`\n  - B_2 = two words\n- for_each:\n  - x.txt\n  - `dir/y z.txt`\n## b\n- task_class: cpu\n- command: x\n## c\n- task_class: cpu\n- command: x\n";
    let p = ok(text);
    let t = &p.tasks[0];
    assert_eq!(t.depends_on, ["b", "c"]);
    assert_eq!(t.depends_on_line, 5);
    assert_eq!(
        t.env,
        [
            ("A".to_string(), "1,2".to_string()),
            ("B_2".to_string(), "two words".to_string())
        ]
    );
    assert_eq!(
        t.for_each,
        Some(ForEach::List(vec!["x.txt".into(), "dir/y z.txt".into()]))
    );
    assert_eq!(t.for_each_line, 11);
}

#[test]
fn comma_separated_values() {
    let p = ok("# p\n## a\n- task_class: cpu\n- command: x\n- depends_on: b, `c` ,b\n- env: A=1, _B=x=y\n## b\n- task_class: cpu\n- command: x\n## c\n- task_class: cpu\n- command: x\n");
    assert_eq!(p.tasks[0].depends_on, ["b", "c", "b"]);
    assert_eq!(
        p.tasks[0].env,
        [
            ("A".to_string(), "1".to_string()),
            ("_B".to_string(), "x=y".to_string())
        ]
    );
    let ex = expand(&p, &ExpandDefaults::default()).unwrap();
    assert_eq!(ex.jobs[0].depends_on, [1, 2]);
    assert_eq!(ex.jobs[0].depends_on_names, ["b", "c"]);
}

#[test]
fn empty_value() {
    assert_error(
        "# p\n## a\n- task_class: cpu\n- command: x\n- model:\n",
        5,
        "field 'model' has no value",
    );
    assert_error(
        "# p\n## a\n- task_class: cpu\n- command:\n",
        4,
        "field 'command' has no value",
    );
    assert_error(
        "# p\n## a\n- task_class: cpu\n- command: x\n- group: ``  ``\n",
        5,
        "field 'group' has no value",
    );
}

// ---------------------------------------------------------------- fields

#[test]
fn task_class_values() {
    assert_error(
        "# p\n## a\n- task_class: resource\n- command: x\n",
        3,
        "reserved for the brain",
    );
    assert_error(
        "# p\n## a\n- task_class: gpu\n- command: x\n",
        3,
        "unknown task class 'gpu'",
    );
    let p = ok("# p\n## a\n- task_class: Script\n- command: x\n");
    assert_eq!(p.tasks[0].task_class, Some(TaskClass::Script));
}

#[test]
fn priorities() {
    assert_error(
        "# p\n## a\n- task_class: cpu\n- command: x\n- priority: 10\n",
        5,
        "priority 10 is reserved for resource tasks",
    );
    assert_error(
        "# p\n## a\n- task_class: cpu\n- command: x\n- priority: 0\n",
        5,
        "bad priority '0'",
    );
    assert_error(
        "# p\n## a\n- task_class: cpu\n- command: x\n- priority: high\n",
        5,
        "bad priority 'high'",
    );
    assert_eq!(
        ok("# p\n## a\n- task_class: cpu\n- command: x\n- priority: 9\n").tasks[0].priority,
        9
    );
    assert_eq!(
        ok("# p\n## a\n- task_class: cpu\n- command: x\n").tasks[0].priority,
        5
    );
}

#[test]
fn durations_and_retries() {
    assert_error(
        "# p\n## a\n- task_class: cpu\n- command: x\n- timeout: soon\n",
        5,
        "bad duration",
    );
    assert_error(
        "# p\n## a\n- task_class: cpu\n- command: x\n- estimate: 3 parsecs\n",
        5,
        "bad duration",
    );
    assert_error(
        "# p\n## a\n- task_class: cpu\n- command: x\n- retries: -1\n",
        5,
        "bad retries '-1'",
    );
    let t = &ok("# p\n## a\n- task_class: cpu\n- command: x\n- timeout: 90s\n- estimate: 2h\n- retries: 0\n").tasks[0];
    assert_eq!(t.timeout_secs, Some(90.0));
    assert_eq!(t.estimate_secs, Some(7200.0));
    assert_eq!(t.retries, Some(0));
    let t = &ok("# p\n## a\n- task_class: cpu\n- command: x\n").tasks[0];
    assert_eq!((t.timeout_secs, t.retries), (None, None));
    let ex = expand(
        &ok("# p\n## a\n- task_class: cpu\n- command: x\n"),
        &ExpandDefaults {
            timeout_secs: 60.0,
            retries: 7,
        },
    )
    .unwrap();
    assert_eq!((ex.jobs[0].timeout_secs, ex.jobs[0].retries), (60.0, 7));
}

#[test]
fn executors() {
    let t = &ok("# p\n## a\n- task_class: cpu\n- command: x\n- executor: Brain\n").tasks[0];
    assert_eq!(t.executor, Executor::Brain);
    assert_eq!(
        ok("# p\n## a\n- task_class: cpu\n- command: x\n").tasks[0].executor,
        Executor::Worker
    );
    assert_error(
        "# p\n## a\n- task_class: script\n- command: x\n- executor: brain\n",
        5,
        "only for cpu tasks",
    );
    assert_error(
        "# p\n## a\n- executor: brain\n- command: whisper a.mp3\n",
        3,
        "only for cpu tasks, and this one is script",
    );
    assert_error(
        "# p\n## a\n- executor: robot\n- task_class: cpu\n- command: x\n",
        3,
        "unknown executor 'robot'",
    );
    // From Defaults: reported at the task heading.
    assert_error(
        "# p\n## Defaults\n- executor: brain\n## a\n- task_class: llm\n- prompt: hi\n",
        4,
        "executor 'brain' (set in Defaults)",
    );
}

#[test]
fn group_and_vram() {
    assert_error(
        "# p\n## a\n- task_class: cpu\n- command: x\n- group: big gpu\n",
        5,
        "group 'big gpu'",
    );
    assert_error(
        "# p\n## a\n- task_class: cpu\n- command: x\n- vram_mb: 0\n",
        5,
        "bad vram_mb '0'",
    );
    assert_error(
        "# p\n## a\n- task_class: cpu\n- command: x\n- vram_mb: 3GB\n",
        5,
        "bad vram_mb",
    );
    let t = &ok(
        "# p\n## a\n- task_class: cpu\n- command: x\n- group: `whisper_large`\n- vram_mb: 3000\n",
    )
    .tasks[0];
    assert_eq!(t.group.as_deref(), Some("whisper_large"));
    assert_eq!(t.vram_mb, Some(3000));
}

#[test]
fn memory_fields_read_from_the_task_or_its_defaults() {
    assert_error(
        "# p\n## a\n- task_class: cpu\n- command: x\n- mem_mb: 0\n",
        5,
        "bad mem_mb '0'",
    );
    assert_error(
        "# p\n## a\n- task_class: cpu\n- command: x\n- mem_limit_mb: 2GB\n",
        5,
        "bad mem_limit_mb '2GB'",
    );
    let p = ok_expanded(
        "# p\n## Defaults\n- mem_mb: 500\n## a\n- task_class: cpu\n- command: x\n- mem_mb: 9000\n- mem_limit_mb: 12000\n## b\n- task_class: cpu\n- command: y\n",
    );
    let (a, b) = (&p.jobs[0], &p.jobs[1]);
    assert_eq!((a.mem_mb, a.mem_limit_mb), (Some(9000), Some(12000)));
    assert_eq!(
        (b.mem_mb, b.mem_limit_mb),
        (Some(500), None),
        "from Defaults"
    );
}

#[test]
fn for_each_forms() {
    let fe = |v: &str| {
        ok(&format!(
            "# p\n## a\n- task_class: cpu\n- command: x\n- for_each: {v}\n"
        ))
        .tasks[0]
            .for_each
            .clone()
    };
    assert_eq!(
        fe("inputs/*.mp3"),
        Some(ForEach::Glob("inputs/*.mp3".into()))
    );
    assert_eq!(
        fe("`data/**/*_x_*.csv`"),
        Some(ForEach::Glob("data/**/*_x_*.csv".into()))
    );
    assert_eq!(
        fe("[a, \"b, c\", 'd' ,e.txt]"),
        Some(ForEach::List(vec![
            "a".into(),
            "b, c".into(),
            "d".into(),
            "e.txt".into()
        ]))
    );
    assert_eq!(
        fe("`[x, y]`"),
        Some(ForEach::List(vec!["x".into(), "y".into()]))
    );
}

#[test]
fn env_values() {
    assert_error(
        "# p\n## a\n- task_class: cpu\n- command: x\n- env: 1A=x\n",
        5,
        "env name '1A'",
    );
    assert_error(
        "# p\n## a\n- task_class: cpu\n- command: x\n- env: novalue\n",
        5,
        "env entry 'novalue' is not KEY=value",
    );
    assert_error(
        "# p\n## a\n- task_class: cpu\n- command: x\n- env:\n  - A-B=1\n",
        5,
        "env name 'A-B'",
    );
}

#[test]
fn sensitive_and_strings() {
    let t = &ok("# p\n## a\n- task_class: llm\n- prompt: p\n- sensitive: YES\n- model: `qwen2.5:7b`\n- system: be brief\n- prompt_file: in.txt\n- output: out.md\n").tasks[0];
    assert!(t.llm.sensitive);
    assert_eq!(t.llm.model.as_deref(), Some("qwen2.5:7b"));
    assert_eq!(t.llm.system.as_deref(), Some("be brief"));
    assert_eq!(t.llm.prompt_file.as_deref(), Some("in.txt"));
    assert_eq!(t.llm.output.as_deref(), Some("out.md"));
    assert!(
        !ok("# p\n## a\n- task_class: cpu\n- command: x\n- sensitive: no\n").tasks[0]
            .llm
            .sensitive
    );
    assert!(
        !ok("# p\n## a\n- task_class: cpu\n- command: x\n- sensitive: False\n").tasks[0]
            .llm
            .sensitive
    );
    assert_error(
        "# p\n## a\n- task_class: cpu\n- command: x\n- sensitive: maybe\n",
        5,
        "sensitive must be true or false",
    );
}

// ---------------------------------------------------------------- Defaults

#[test]
fn defaults_apply_unless_the_task_sets_the_field() {
    let text = "# p\n## a\n- command: echo a\n## Defaults\n- task_class: cpu\n- priority: 3\n- timeout: 1h\n- retries: 1\n- group: g\n- vram_mb: 10\n- env: A=1\n- model: m\n- system: s\n- sensitive: true\n- estimate: 5m\n- executor: brain\n## b\n- command: echo b\n- priority: 8\n- env: B=2\n- sensitive: no\n- executor: worker\n- task_class: script\n";
    let p = ok(text);
    let a = &p.tasks[0];
    assert_eq!(a.task_class, Some(TaskClass::Cpu));
    assert_eq!(a.priority, 3);
    assert_eq!(a.timeout_secs, Some(3600.0));
    assert_eq!(a.retries, Some(1));
    assert_eq!(a.group.as_deref(), Some("g"));
    assert_eq!(a.vram_mb, Some(10));
    assert_eq!(a.env, [("A".to_string(), "1".to_string())]);
    assert_eq!(a.llm.model.as_deref(), Some("m"));
    assert_eq!(a.llm.system.as_deref(), Some("s"));
    assert!(a.llm.sensitive);
    assert_eq!(a.estimate_secs, Some(300.0));
    assert_eq!(a.executor, Executor::Brain);
    let b = &p.tasks[1];
    assert_eq!(b.task_class, Some(TaskClass::Script));
    assert_eq!(b.priority, 8);
    assert_eq!(b.env, [("B".to_string(), "2".to_string())]);
    assert!(!b.llm.sensitive);
    assert_eq!(b.executor, Executor::Worker);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let ex = expand(&p, &ExpandDefaults::default()).unwrap();
    assert!(!ex.jobs[0].class_inferred);
}

#[test]
fn fields_not_allowed_in_defaults() {
    for (key, value) in [
        ("depends_on", "a"),
        ("for_each", "*.txt"),
        ("command", "x"),
        ("prompt", "x"),
        ("prompt_file", "x"),
        ("output", "x"),
    ] {
        assert_error(
            &format!("# p\n## Defaults\n- {key}: {value}\n## a\n- task_class: cpu\n- command: x\n"),
            3,
            &format!("'{key}' cannot be set in Defaults"),
        );
    }
    assert_error(
        "# p\n## Defaults\n- timout: 1m\n## a\n- task_class: cpu\n- command: x\n",
        3,
        "did you mean 'timeout'?",
    );
}

// ---------------------------------------------------------------- requirements and classes

#[test]
fn required_command_and_prompt() {
    assert_error(
        "# p\n\n## Task: x\n- task_class: cpu\n",
        3,
        "task 'x' has no command (cpu and script tasks need one)",
    );
    assert_error(
        "# p\n\n## Task: x\n- task_class: script\n- prompt: hi\n",
        3,
        "task 'x' has no command (cpu and script tasks need one)",
    );
    assert_error(
        "# p\n\n## Task: x\n- task_class: llm\n- command: echo\n",
        3,
        "task 'x' has no prompt (llm tasks need one)",
    );
    assert_error(
        "# p\n\n## Task: x\nno fields at all\n",
        3,
        "task 'x' has no command",
    );
}

#[test]
fn llm_command_is_ignored_with_a_warning() {
    let p = ok("# p\n## a\n- task_class: llm\n- prompt: hi\n- command: echo\n");
    assert_eq!(
        warnings(&p),
        [(5, "task 'a': command is ignored for llm tasks".to_string())]
    );
}

#[test]
fn missing_class_is_inferred_with_a_warning() {
    let text = "# p\n## a\n- command: python whisper.py x\n## b\n- command: ls\n## c\n- prompt: say hi\n## d\n- for_each: [gpu.txt, plain.txt]\n- command: cat {item}\n";
    let p = ok(text);
    assert_eq!(
        warnings(&p),
        [
            (
                2,
                "task 'a' has no task_class; inferred 'script' from its command".to_string()
            ),
            (
                4,
                "task 'b' has no task_class; inferred 'cpu' from its command".to_string()
            ),
            (
                6,
                "task 'c' has no task_class; inferred 'llm' from its prompt".to_string()
            ),
            (
                8,
                "task 'd' has no task_class; inferred 'cpu' from its command".to_string()
            ),
        ]
    );
    assert!(p.tasks.iter().all(|t| t.task_class.is_none()));
    let ex = expand(&p, &ExpandDefaults::default()).unwrap();
    let classes: Vec<_> = ex
        .jobs
        .iter()
        .map(|j| (j.name.as_str(), j.task_class, j.class_inferred))
        .collect();
    assert_eq!(
        classes,
        [
            ("a", TaskClass::Script, true),
            ("b", TaskClass::Cpu, true),
            ("c", TaskClass::Llm, true),
            // inferred from the substituted command
            ("d[gpu]", TaskClass::Script, true),
            ("d[plain]", TaskClass::Cpu, true),
        ]
    );
    assert_eq!(ex.warnings.len(), 4);
}

// ---------------------------------------------------------------- dependencies

#[test]
fn unknown_dependency_with_suggestion() {
    assert_error(
        "# p\n## transcribe\n- task_class: cpu\n- command: x\n## summarize\n- task_class: cpu\n- command: y\n- depends_on:\n  - init\n",
        8,
        "task 'summarize' depends on unknown task 'init'",
    );
}

#[test]
fn self_dependency() {
    assert_error(
        "# p\n## a\n- task_class: cpu\n- command: x\n- depends_on: a\n",
        2,
        "task 'a' depends on itself (a -> a)",
    );
}

#[test]
fn cycles_are_spelled_out_once() {
    let text = "# p\n## x\n- task_class: cpu\n- command: x\n## a\n- task_class: cpu\n- command: x\n- depends_on: b\n## b\n- task_class: cpu\n- command: x\n- depends_on: c, x\n## c\n- task_class: cpu\n- command: x\n- depends_on: a\n";
    assert_error(text, 5, "dependency cycle: a -> b -> c -> a");
    // Two separate cycles, each once.
    let text = "# p\n## a\n- task_class: cpu\n- command: x\n- depends_on: b\n## b\n- task_class: cpu\n- command: x\n- depends_on: a\n## c\n- task_class: cpu\n- command: x\n- depends_on: d\n## d\n- task_class: cpu\n- command: x\n- depends_on: c\n";
    let errs = errors(text);
    assert_eq!(
        errs,
        [
            (2, "dependency cycle: a -> b -> a".to_string()),
            (10, "dependency cycle: c -> d -> c".to_string())
        ]
    );
}

fn four_tasks(dir: &Path, a_fe: &str, b_fe: &str) -> ExpandedPlan {
    let text = format!(
        "# p\n## one\n- task_class: cpu\n- command: echo\n## a\n- task_class: cpu\n- depends_on: one\n{a_fe}- command: echo {{item}}\n## b\n- task_class: cpu\n- depends_on: a\n{b_fe}- command: echo {{stem}}\n## all\n- task_class: cpu\n- depends_on: b, one\n- command: echo done\n"
    );
    let plan = parse_str(&dir.join("plan.md"), &text).unwrap();
    expand(&plan, &ExpandDefaults::default()).unwrap()
}

#[test]
fn dependency_rules() {
    let dir = tempfile::tempdir().unwrap();
    // Same for_each: item-wise; dependent fans out: each waits for the one; fan-in.
    let ex = four_tasks(
        dir.path(),
        "- for_each: [x/p.txt, y/q.txt]\n",
        "- for_each: [x/p.txt, y/q.txt]\n",
    );
    let names: Vec<_> = ex.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["one", "a[p]", "a[q]", "b[p]", "b[q]", "all"]);
    assert_eq!(ex.jobs[1].depends_on, [0]);
    assert_eq!(ex.jobs[2].depends_on_names, ["one"]);
    assert_eq!(ex.jobs[3].depends_on, [1]);
    assert_eq!(ex.jobs[4].depends_on, [2]);
    assert_eq!(ex.jobs[4].depends_on_names, ["a[q]"]);
    assert_eq!(ex.jobs[5].depends_on, [0, 3, 4]);
    assert_eq!(ex.jobs[5].depends_on_names, ["b", "one"]);
    assert!(ex.warnings.is_empty());

    // Different for_each values: all items, with a warning at the depends_on line.
    let ex = four_tasks(
        dir.path(),
        "- for_each: [p.txt, q.txt]\n",
        "- for_each: [p.txt, r.txt, s.txt]\n",
    );
    assert_eq!(ex.jobs.len(), 7);
    for j in &ex.jobs[3..6] {
        assert_eq!(j.depends_on, [1, 2]);
        assert_eq!(j.depends_on_names, ["a"]);
    }
    assert_eq!(ex.warnings.len(), 1);
    assert_eq!(ex.warnings[0].line, 12);
    assert!(ex.warnings[0].message.contains("different for_each values"));

    // Dependency fans out, dependent does not: fan-in.
    let ex = four_tasks(dir.path(), "- for_each: [p.txt, q.txt, r.txt]\n", "");
    assert_eq!(ex.jobs[4].name, "b");
    assert_eq!(ex.jobs[4].depends_on, [1, 2, 3]);
    assert_eq!(ex.jobs[4].depends_on_names, ["a"]);
    assert_eq!(ex.jobs[4].command.as_deref(), Some("echo {stem}"));
    assert_eq!(ex.jobs[4].item, None);
}

// ---------------------------------------------------------------- for_each expansion

#[test]
fn globs_are_relative_sorted_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("in/sub")).unwrap();
    for f in ["in/b.wav", "in/a.wav", "in/sub/c.wav", "in/skip.txt"] {
        fs::write(dir.path().join(f), b"").unwrap();
    }
    let path = dir.path().join("plan.md");
    let plan = parse_str(&path, "# p\n## t\n- task_class: cpu\n- for_each: `in/**/*.wav`\n- command: echo {index} {item} {stem}\n").unwrap();
    let ex = expand(&plan, &ExpandDefaults::default()).unwrap();
    let got: Vec<_> = ex
        .jobs
        .iter()
        .map(|j| {
            (
                j.name.as_str(),
                j.item.as_deref().unwrap(),
                j.stem.as_deref().unwrap(),
                j.command.as_deref().unwrap(),
            )
        })
        .collect();
    // The command refers to the values through the environment (never pastes them).
    let cmd = |i: usize| format!("echo {i} \"${{RIGMIND_ITEM}}\" \"${{RIGMIND_STEM}}\"");
    assert_eq!(
        got,
        [
            ("t[a]", "in/a.wav", "a", cmd(0).as_str()),
            ("t[b]", "in/b.wav", "b", cmd(1).as_str()),
            ("t[c]", "in/sub/c.wav", "c", cmd(2).as_str()),
        ]
    );

    assert_expand_error(
        Some(dir.path()),
        "# p\n## t\n- task_class: cpu\n- command: x\n- for_each: in/*.mp3\n",
        5,
        "for_each glob 'in/*.mp3' matched no files",
    );
    assert_expand_error(
        None,
        "# p\n## t\n- task_class: cpu\n- command: x\n- for_each: []\n",
        5,
        "for_each list is empty",
    );
    assert_expand_error(
        None,
        "# p\n## t\n- task_class: cpu\n- command: x\n- for_each: [a/ep1.mp3, b/ep1.wav]\n",
        5,
        "items 'a/ep1.mp3' and 'b/ep1.wav' have the same stem 'ep1'",
    );
}

#[test]
fn placeholders_only_in_fanned_out_tasks_and_listed_fields() {
    let text = "# p\n## plain\n- task_class: cpu\n- command: awk '{print $1}' {item}\n- output: {stem}\n## fan\n- task_class: llm\n- for_each: [a.txt, 'b c.md']\n- prompt: P {item} {stem} {index} {print $1} {other}\n- prompt_file: f/{stem}\n- output: o/{stem}.md\n- system: S {item}\n- model: M{stem}\n- env: K={item}, L={index}\n";
    let ex = ok_expanded(text);
    let plain = &ex.jobs[0];
    assert_eq!(plain.command.as_deref(), Some("awk '{print $1}' {item}"));
    assert_eq!(plain.llm.output.as_deref(), Some("{stem}"));
    let b = &ex.jobs[2];
    assert_eq!(b.name, "fan[b c]");
    assert_eq!(
        b.llm.prompt.as_deref(),
        Some("P b c.md b c 1 {print $1} {other}")
    );
    assert_eq!(b.llm.prompt_file.as_deref(), Some("f/b c"));
    assert_eq!(b.llm.output.as_deref(), Some("o/b c.md"));
    assert_eq!(b.llm.system.as_deref(), Some("S {item}"));
    assert_eq!(b.llm.model.as_deref(), Some("M{stem}"));
    assert_eq!(
        b.env,
        [
            ("K".to_string(), "b c.md".to_string()),
            ("L".to_string(), "1".to_string())
        ]
    );
    assert_eq!((b.item.as_deref(), b.index), (Some("b c.md"), Some(1)));
}

#[test]
fn commands_that_cannot_take_a_value_safely_are_refused_at_their_line() {
    let heredoc = "# p\n## t\n- task_class: cpu\n- for_each: [a, b]\n- command:\n  ```bash\n  python - <<'EOF'\n  print(\"{item}\")\n  EOF\n  ```\n";
    assert_expand_error(None, heredoc, 5, "quoted heredoc (<<'EOF')");
    assert_expand_error(None, heredoc, 5, "$RIGMIND_ITEM");
    assert_expand_error(
        None,
        "# p\n## t\n- task_class: cpu\n- for_each: [a]\n- command: echo ${stem}\n",
        5,
        "'${stem}' in the command is ambiguous",
    );
    // Without for_each nothing is substituted, so nothing is refused.
    let ex = ok_expanded(&heredoc.replace("- for_each: [a, b]\n", ""));
    assert!(ex.jobs[0].command.as_deref().unwrap().contains("{item}"));
    // An unquoted heredoc gets the reference.
    let ex = ok_expanded(&heredoc.replace("<<'EOF'", "<<EOF"));
    assert_eq!(
        ex.jobs[1].command.as_deref(),
        Some("python - <<EOF\nprint(\"${RIGMIND_ITEM}\")\nEOF")
    );
}

#[test]
fn nul_bytes_and_zero_timeouts_are_refused_at_their_line() {
    assert_error(
        "# p\n## a\n- task_class: cpu\n- command: echo a\0b\n",
        4,
        "field 'command' holds a NUL byte",
    );
    // In a code block: the line of the NUL itself.
    assert_error(
        "# p\n## a\n- task_class: cpu\n- command:\n  ```\n  echo 1\n  echo \0\n  ```\n",
        7,
        "field 'command' holds a NUL byte",
    );
    for (field, value) in [("env", "A=\0"), ("prompt_file", "x\0y"), ("output", "\0")] {
        assert_error(
            &format!("# p\n## a\n- task_class: cpu\n- command: x\n- {field}: {value}\n"),
            5,
            &format!("field '{field}' holds a NUL byte"),
        );
    }
    assert_error(
        "# p\n## a\n- task_class: cpu\n- for_each: [a, b\0c]\n- command: x\n",
        4,
        "NUL byte",
    );
    for zero in ["0", "0s", "0m", "0.0"] {
        assert_error(
            &format!("# p\n## a\n- task_class: cpu\n- command: x\n- timeout: {zero}\n"),
            5,
            &format!("timeout must be more than 0, not '{zero}'"),
        );
    }
    assert_error(
        "# p\n## Defaults\n- timeout: 0\n## a\n- task_class: cpu\n- command: x\n",
        3,
        "timeout must be more than 0",
    );
}

#[test]
fn big_fan_out_is_linear() {
    let n = 20_000;
    let items: Vec<String> = (0..n).map(|i| format!("in/f{i}.txt")).collect();
    let list = format!("[{}]", items.join(", "));
    let text = format!(
        "# big\n## init\n- task_class: cpu\n- command: true\n## work\n- task_class: cpu\n- depends_on: init\n- for_each: {list}\n- command: wc {{item}}\n## post\n- task_class: cpu\n- depends_on: work\n- for_each: {list}\n- command: echo {{stem}}\n## gather\n- task_class: cpu\n- depends_on: work, post\n- command: echo done\n"
    );
    let ex = ok_expanded(&text);
    assert_eq!(ex.jobs.len(), 1 + 2 * n + 1);
    let work = |i: usize| 1 + i;
    let post = |i: usize| 1 + n + i;
    assert_eq!(ex.jobs[work(0)].depends_on, [0]);
    assert_eq!(ex.jobs[work(19_999)].name, "work[f19999]");
    assert_eq!(ex.jobs[post(123)].depends_on, [work(123)]);
    assert_eq!(ex.jobs[post(123)].depends_on_names, ["work[f123]"]);
    assert_eq!(
        ex.jobs[post(123)].command.as_deref(),
        Some("echo \"${RIGMIND_STEM}\"")
    );
    assert_eq!(ex.jobs[post(123)].stem.as_deref(), Some("f123"));
    let gather = ex.jobs.last().unwrap();
    assert_eq!(gather.depends_on.len(), 2 * n);
    assert_eq!(gather.depends_on[0], 1);
    assert_eq!(*gather.depends_on.last().unwrap(), 2 * n);
    assert_eq!(gather.depends_on_names, ["work", "post"]);
}

// ---------------------------------------------------------------- files

#[test]
fn non_utf8_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.md");
    fs::write(&path, b"# p\n\n## a\n- command: caf\xe9\n").unwrap();
    let e = parse_file(&path).unwrap_err();
    assert_eq!(e.diagnostics.len(), 1);
    assert_eq!(e.diagnostics[0].line, 1);
    assert_eq!(
        e.diagnostics[0].message,
        "not UTF-8: invalid byte at line 4"
    );
    assert_eq!(e.diagnostics[0].path, path);
}

#[test]
fn unreadable_file() {
    let path = Path::new("/nonexistent/dir/plan.md");
    let e = parse_file(path).unwrap_err();
    assert_eq!(e.diagnostics.len(), 1);
    assert!(
        e.diagnostics[0]
            .message
            .contains("/nonexistent/dir/plan.md"),
        "{}",
        e
    );
}

#[test]
fn crlf_and_bom() {
    let p = ok("\u{feff}# p\r\n\r\n## a\r\n- task_class: cpu\r\n- command:\r\n  ```\r\n  echo 1\r\n  echo 2\r\n  ```\r\n");
    assert_eq!(p.name, "p");
    assert_eq!(p.tasks[0].line, 3);
    assert_eq!(p.tasks[0].command.as_deref(), Some("echo 1\necho 2"));
}

#[test]
fn glob_fan_out_with_item_wise_and_fan_in_dependents() {
    let n = 2_000;
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("in")).unwrap();
    for i in 0..n {
        fs::write(dir.path().join(format!("in/f{i:05}.txt")), b"").unwrap();
    }
    let text = "# g\n## work\n- task_class: cpu\n- for_each: `in/*.txt`\n- command: wc {item}\n## post\n- task_class: cpu\n- depends_on: work\n- for_each: `in/*.txt`\n- command: echo {stem}\n## gather\n- task_class: cpu\n- depends_on: post\n- command: echo done\n";
    let plan = parse_str(&dir.path().join("plan.md"), text).unwrap();
    let ex = expand(&plan, &ExpandDefaults::default()).unwrap();
    assert_eq!(ex.jobs.len(), 2 * n + 1);
    assert_eq!(ex.jobs[0].item.as_deref(), Some("in/f00000.txt"));
    assert_eq!(ex.jobs[n + 7].name, "post[f00007]");
    assert_eq!(ex.jobs[n + 7].depends_on, [7]);
    assert_eq!(ex.jobs[2 * n].depends_on, (n..2 * n).collect::<Vec<_>>());
}
