//! No starvation: with aging (`[scheduling] aging_seconds_per_level`), a stream of
//! priority-7 work cannot hold a priority-1 task back beyond the aging bound; with
//! aging off it waits for all of it.

use std::path::Path;

use rigmind_config::RigConfig;
use rigmind_plan::ExpandDefaults;
use rigmind_sim::{simulate, RmPolicy, SegmentKind};

const PLAN: &str = "# Plan: starve

## Task: low
- task_class: script
- priority: 1
- estimate: 60s
- command: `true`

## Task: high
- task_class: script
- priority: 7
- for_each: [01, 02, 03, 04, 05, 06, 07, 08, 09, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40]
- estimate: 60s
- command: `true`
";

/// When `low` starts on one GPU with this aging.
fn low_starts(aging: &str) -> f64 {
    let rig = format!(
        "[scheduling]\naging_seconds_per_level = {aging}\n\n[[gpu]]\nindex = 0\nworker = \"gpu0\"\n"
    );
    let rig = RigConfig::parse(Path::new("rig.toml"), &rig).expect("rig parses");
    let p = rigmind_plan::parse_str(Path::new("/nonexistent/plan.md"), PLAN).expect("plan parses");
    let plan = rigmind_plan::expand(&p, &ExpandDefaults::default()).expect("plan expands");
    let r = simulate(&plan, &rig, RmPolicy::Adaptive).expect("it finishes");
    r.gpus[0]
        .segments
        .iter()
        .find(|s| matches!(&s.kind, SegmentKind::Task { name, .. } if name == "low"))
        .expect("low ran")
        .start
}

#[test]
fn aging_bounds_how_long_a_low_priority_task_waits() {
    // Off: behind all 40 priority-7 tasks.
    assert_eq!(low_starts("0"), 2400.0);
    // 60 s a level: priority 1 reaches 9 (where the priority-7 tasks are by then,
    // and it is older) after 8 levels, 480 s; it starts when the task running then
    // ends.
    let at = low_starts("60");
    assert!(at <= 8.0 * 60.0 + 60.0, "{at}");
    assert!(at >= 8.0 * 60.0, "{at}");
}
