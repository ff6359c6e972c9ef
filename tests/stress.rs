//! Many workers racing, and kill -9 at random: every task runs exactly once (or
//! again only when its worker was killed), never before its dependencies.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{eventually, text, Rig};

fn wait_long(rig: &Rig, batch: &str) -> i32 {
    let out = rig.rigmind(&["wait", batch, "--timeout", "240"]);
    assert!(out.status.code().is_some(), "{}", text(&out.stderr));
    out.status.code().unwrap()
}

#[test]
fn eight_workers_3000_tasks_each_runs_exactly_once() {
    let mut rig = Rig::new();
    rig.start_brain();
    for i in 1..=8 {
        rig.start_worker(&format!("w{i}"), &[]);
    }
    let plan = rig.fixture("race.md");
    let batch = rig.submit(&plan);
    assert_eq!(wait_long(&rig, &batch), 0);
    let runs = std::fs::read_to_string(rig.dir.path().join("runs.txt")).unwrap();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for line in runs.lines() {
        *counts.entry(line).or_default() += 1;
    }
    assert_eq!(counts.len(), 3000, "distinct tasks that ran");
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "ran more than once: {twice:?}");
    let complete = rig
        .names_in("complete")
        .into_iter()
        .filter(|n| n.contains(&batch))
        .count();
    assert_eq!(complete, 3001, "3000 tasks and the execute_plan");
    assert!(rig.names_in("failed").is_empty());
    // Every worker took part, and they are all still alive.
    let done: BTreeSet<String> = rig
        .tasks_in("complete")
        .iter()
        .filter_map(|t| t["worker_id"].as_str().map(String::from))
        .collect();
    assert!(done.len() >= 2, "only {done:?} ran tasks");
    assert!(rig.all_alive());
}

/// A small deterministic generator: the same kills in the same order every run.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn chaos_kill_nine_brain_and_workers_nothing_lost_nothing_early() {
    let mut rig = Rig::new();
    rig.start_brain();
    let workers = ["w1", "w2", "w3"];
    for w in workers {
        rig.start_worker(w, &[]);
    }
    let plan = rig.fixture("chaos.md");
    let batch = rig.submit(&plan);
    let mut rng = Lcg(0x5eed);
    let mut killed_holding: BTreeSet<String> = BTreeSet::new();
    let (mut brain_kills, mut worker_kills) = (0, 0);
    for _ in 0..36 {
        std::thread::sleep(std::time::Duration::from_millis(150 + rng.next(400)));
        if rng.next(3) == 0 {
            rig.kill9("brain");
            brain_kills += 1;
            rig.start_brain();
        } else {
            let w = workers[rng.next(3) as usize];
            rig.kill9(w);
            worker_kills += 1;
            // What it held (claimed, running, or being filed) may run again.
            for t in rig.tasks_in("processing") {
                let held = t["worker_id"].as_str().is_none_or(|id| id == w);
                if held {
                    killed_holding.insert(t["name"].as_str().unwrap().to_string());
                }
            }
            rig.start_worker(w, &[]);
        }
    }
    let code = wait_long(&rig, &batch);
    if code != 0 {
        let keep = rig.dir.path().join("..").join("chaos-failed");
        let _ = std::process::Command::new("cp")
            .arg("-a")
            .arg(rig.dir.path())
            .arg(&keep)
            .status();
        panic!(
            "wait exited {code}; the whole rig is copied to {}",
            keep.display()
        );
    }
    eprintln!("chaos: {brain_kills} brain kills, {worker_kills} worker kills, {} tasks held by killed workers", killed_holding.len());

    // Every task is in complete/ exactly once, and nowhere else.
    let ours = |d: &str| -> Vec<String> {
        rig.names_in(d)
            .into_iter()
            .filter(|n| n.contains(&batch))
            .collect()
    };
    assert_eq!(
        ours("complete").len(),
        603,
        "602 tasks and the execute_plan"
    );
    for d in ["queue", "processing", "failed"] {
        assert!(ours(d).is_empty(), "{d}: {:?}", ours(d));
    }
    let private = std::fs::read_dir(rig.root().join("brain/private_tasks").join(&batch))
        .unwrap()
        .count();
    assert_eq!(private, 0);

    // The journal: each task started once, or more only if its worker was killed.
    let journal = std::fs::read_to_string(rig.dir.path().join("journal.txt")).unwrap();
    let mut first_start: BTreeMap<String, usize> = BTreeMap::new();
    let mut first_end: BTreeMap<String, usize> = BTreeMap::new();
    let mut starts: BTreeMap<String, usize> = BTreeMap::new();
    for (i, line) in journal.lines().enumerate() {
        let mut parts = line.split_whitespace();
        let (kind, name) = (parts.next().unwrap(), parts.next().unwrap().to_string());
        match kind {
            "start" => {
                first_start.entry(name.clone()).or_insert(i);
                *starts.entry(name).or_default() += 1;
            }
            "end" => {
                first_end.entry(name).or_insert(i);
            }
            other => panic!("journal line {i}: {other}"),
        }
    }
    assert_eq!(first_end.len(), 602, "every task finished at least once");
    let extra: Vec<(&String, &usize)> = starts.iter().filter(|(_, n)| **n > 1).collect();
    for (name, n) in &extra {
        assert!(
            killed_holding.contains(*name),
            "{name} ran {n} times but no killed worker held it"
        );
    }
    eprintln!(
        "chaos: {} tasks ran again after their worker was killed",
        extra.len()
    );

    // No task started before each of its dependencies had finished once.
    let deps_of = |name: &str| -> Vec<String> {
        let item = |s: &str| s[s.find('[').unwrap()..].to_string();
        match name.chars().next().unwrap() {
            _ if name == "seed" => vec![],
            _ if name == "fanin" => (1..=200).map(|i| format!("c[{i}]")).collect(),
            'a' => vec!["seed".into()],
            'b' => vec![format!("a{}", item(name))],
            'c' => vec![format!("b{}", item(name))],
            _ => panic!("{name}"),
        }
    };
    for (name, start) in &first_start {
        for dep in deps_of(name) {
            let end = first_end[&dep];
            assert!(
                end < *start,
                "{name} started (line {start}) before {dep} ended (line {end})"
            );
        }
    }
    assert!(rig.all_alive());
    eventually(5, "status to answer", || {
        rig.rigmind(&["status"]).status.success()
    });
}
