//! Operating the rig (issue 15, points 4 to 6) on real binaries and a real root:
//! the brain's alerts and `[notify]` command, its Prometheus metrics (the file and
//! `--metrics-addr` scraped over loopback HTTP, checked by our own parser and by
//! `promtool` where installed), `/health`, and the systemd units.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;

use common::{eventually, skip, Rig};

/// A port free now on loopback.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `GET path` over a real TCP connection: (status line, body).
fn get(port: u16, path: &str) -> Option<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

/// One sample: its name, labels and value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the text exposition format strictly enough to catch what Prometheus
/// refuses: every sample belongs to a family declared by `# TYPE` before it, names
/// and labels are well formed, values are numbers, histograms are cumulative and
/// end in `+Inf` equal to `_count`.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(["gauge", "counter", "histogram"].contains(&kind), "{line}");
            assert!(
                types.insert(name.into(), kind.into()).is_none(),
                "TYPE twice: {line}"
            );
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.trim().is_empty(), "blank line in the exposition");
        let (series, value) = line.rsplit_once(' ').expect("sample value");
        let v = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("not a number: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, parse_labels(l.strip_suffix('}').expect("labels close"))),
            None => (series, BTreeMap::new()),
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && name.starts_with("rigmind_"),
            "metric name: {line}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "sample before its TYPE: {line}");
        if types[family] == "counter" {
            assert!(
                family.ends_with("_total"),
                "a counter's name ends in _total: {line}"
            );
        }
        samples.push((name.to_string(), labels, v));
    }
    check_histograms(&samples);
    samples
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (k, after) = rest.split_once("=\"").expect("label=\"value\"");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("label value closes") {
                (i, '"') => break i,
                (_, '\\') => value.push(chars.next().expect("escape").1),
                (_, c) => value.push(c),
            }
        };
        assert!(
            out.insert(k.to_string(), value).is_none(),
            "label twice in {text}"
        );
        rest = after[end + 1..].trim_start_matches(',');
    }
    out
}

fn check_histograms(samples: &[Sample]) {
    let mut buckets: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut counts: BTreeMap<String, f64> = BTreeMap::new();
    for (name, labels, v) in samples {
        let mut key_labels = labels.clone();
        key_labels.remove("le");
        let key = format!(
            "{}{key_labels:?}",
            name.trim_end_matches("_bucket").trim_end_matches("_count")
        );
        if name.ends_with("_bucket") {
            let le = match labels["le"].as_str() {
                "+Inf" => f64::INFINITY,
                s => s.parse().unwrap(),
            };
            buckets.entry(key).or_default().push((le, *v));
        } else if name.ends_with("_count") {
            counts.insert(key, *v);
        }
    }
    for (key, b) in buckets {
        assert!(
            b.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{key}: not cumulative"
        );
        let last = b.last().unwrap();
        assert!(last.0.is_infinite(), "{key}: no +Inf bucket");
        assert_eq!(Some(&last.1), counts.get(&key), "{key}: +Inf is not _count");
    }
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.2)
}

/// `promtool check metrics` on `text`, where promtool is installed.
fn promtool_check(test: &str, text: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        skip(test, "promtool is not installed (apt install prometheus); checked with the test's own parser only");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics refused the exposition:\n{said}\n{text}"
    );
    // promtool also lints (names, units); it prints nothing when all is well.
    assert!(said.trim().is_empty(), "promtool's lint findings:\n{said}");
}

/// The variables a notify run wrote to `notify/<event>.<n>.env`, by event.
fn notified(rig: &Rig) -> Vec<BTreeMap<String, String>> {
    let dir = rig.dir.path().join("notify");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        out.push(
            text.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
    }
    out
}

const PLAN: &str = "# Plan: ops

## Task: ok
- task_class: cpu
- command: `echo fine`

## Task: bad
- task_class: cpu
- retries: 1
- command: `exit 3`
";

const STUCK: &str = "# Plan: stuck

## Task: needs-a-script-worker
- task_class: script
- command: `true`
";

#[test]
fn alerts_notify_and_metrics_on_a_running_rig() {
    let test = "operations::alerts_notify_and_metrics_on_a_running_rig";
    let mut rig = Rig::new();
    let notify_dir = rig.dir.path().join("notify");
    std::fs::create_dir_all(&notify_dir).unwrap();
    // Each run writes its RIGMIND_ variables to a file of its own.
    let toml = format!(
        "[alerts]\nstalled_after = 2\n\n[notify]\ncommand = 'env | grep \"^RIGMIND_\" > \"{}/$RIGMIND_EVENT.$$.env\"'\n",
        notify_dir.display()
    );
    rig.write("root/rig.toml", &toml);
    let port = free_port();
    rig.start_brain_with(&["--metrics-addr", &format!("127.0.0.1:{port}")]);
    rig.start_worker("w1", &["--classes", "cpu"]);
    rig.start_worker("w2", &["--classes", "cpu"]);
    let batch = rig.submit(&rig.write("ops.md", PLAN));
    assert_eq!(
        rig.wait(&batch),
        1,
        "the batch fails: 'bad' fails on both attempts"
    );

    // A batch that failed: batch_failed, with its counts.
    eventually(20, "a batch_failed notification", || {
        notified(&rig).iter().any(|e| {
            e.get("RIGMIND_EVENT").map(String::as_str) == Some("batch_failed")
                && e.get("RIGMIND_BATCH") == Some(&batch)
                && e.get("RIGMIND_FAILED").map(String::as_str) == Some("1")
                && e.get("RIGMIND_TOTAL").map(String::as_str) == Some("2")
        })
    });
    // The same task failing on every retry: one alert, logged and notified.
    let subject = format!("subject={batch}/bad");
    eventually(20, "a task_failing alert", || {
        rig.decisions_with(&["decision=alert ", "kind=task_failing", &subject])
            .len()
            == 1
    });
    eventually(20, "the alert's notification", || {
        notified(&rig).iter().any(|e| {
            e.get("RIGMIND_ALERT_KIND").map(String::as_str) == Some("task_failing")
                && e.get("RIGMIND_ALERT_STATE").map(String::as_str) == Some("raised")
        })
    });
    let alerts = std::fs::read_to_string(rig.root().join("brain/alerts.json")).unwrap();
    assert!(alerts.contains("task_failing"), "{alerts}");

    // /metrics over loopback HTTP: the counters saw 1 complete and 2 failures.
    let mut body = String::new();
    eventually(20, "the counters in /metrics", || {
        let Some((status, text)) = get(port, "/metrics") else {
            return false;
        };
        assert!(status.contains("200"), "{status}");
        let s = parse_exposition(&text);
        body = text;
        value(
            &s,
            "rigmind_tasks_finished_total",
            &[("class", "cpu"), ("outcome", "complete")],
        ) == Some(1.0)
            && value(
                &s,
                "rigmind_tasks_finished_total",
                &[("class", "cpu"), ("outcome", "worker_failure")],
            ) == Some(2.0)
            && value(
                &s,
                "rigmind_task_duration_seconds_count",
                &[("class", "cpu")],
            ) == Some(3.0)
    });
    let s = parse_exposition(&body);
    assert_eq!(
        value(
            &s,
            "rigmind_tasks",
            &[("class", "cpu"), ("state", "failed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "rigmind_worker_up", &[("worker", "w1")]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "rigmind_alerts", &[("kind", "task_failing")]),
        Some(1.0)
    );
    promtool_check(test, &body);

    // The file for node_exporter's textfile collector: the same format.
    let file = rig.root().join("metrics/rigmind.prom");
    eventually(20, "metrics/rigmind.prom", || file.is_file());
    let text = std::fs::read_to_string(&file).unwrap();
    parse_exposition(&text);
    promtool_check(test, &text);

    let (status, health) = get(port, "/health").expect("/health answers");
    assert!(status.contains("200"), "{status}");
    let h: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(h["up"], true, "{h}");
    assert_eq!(h["workers_alive"], 2, "{h}");
    assert!(h["queue"]["queued"].is_object(), "{h}");
    assert!(get(port, "/nothing").unwrap().0.contains("404"));

    // A queue that does not move while workers idle: no worker takes script work.
    let stuck = rig.submit(&rig.write("stuck.md", STUCK));
    eventually(30, "a queue_stalled alert", || {
        rig.decisions_with(&["decision=alert ", "kind=queue_stalled"])
            .len()
            == 1
    });
    assert!(rig.rigmind(&["cancel", &stuck]).status.success());
    eventually(30, "the stall cleared once the queue emptied", || {
        rig.decisions_with(&["decision=alert_cleared", "kind=queue_stalled"])
            .len()
            == 1
    });
    eventually(
        20,
        "a batch_finished notification for the cancelled batch",
        || {
            notified(&rig).iter().any(|e| {
                e.get("RIGMIND_EVENT").map(String::as_str) == Some("batch_finished")
                    && e.get("RIGMIND_BATCH_STATE").map(String::as_str) == Some("cancelled")
            })
        },
    );

    // A worker killed without stopping: worker_lost.
    rig.kill9("w2");
    eventually(30, "a worker_lost alert", || {
        rig.decisions_with(&["decision=alert ", "kind=worker_lost", "subject=w2"])
            .len()
            == 1
    });
    eventually(20, "notify's exits logged", || {
        rig.decisions_with(&["decision=notify", "exit=0"]).len() >= 4
    });

    // A restarted brain does not raise what is raised already.
    rig.stop("brain");
    rig.start_brain();
    eventually(20, "the new brain's heartbeat", || {
        rig.decisions_with(&["decision=start"]).len() == 2
    });
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(
        rig.decisions_with(&["decision=alert ", "kind=worker_lost"])
            .len(),
        1
    );
    assert_eq!(
        rig.decisions_with(&["decision=alert ", "kind=task_failing"])
            .len(),
        1
    );
}

#[test]
fn a_hot_card_raises_an_alert_and_shows_in_the_metrics() {
    let mut rig = Rig::new();
    let readings = rig.dir.path().join("gpus");
    std::fs::create_dir_all(readings.join("0")).unwrap();
    std::fs::write(readings.join("0/temp_c"), "95").unwrap();
    rig.env.push(("RIGMIND_FAKE_GPUS".into(), "1x8000".into()));
    rig.env.push((
        "RIGMIND_FAKE_GPU_DIR".into(),
        readings.display().to_string(),
    ));
    let port = free_port();
    rig.start_brain_with(&["--metrics-addr", &format!("127.0.0.1:{port}")]);
    rig.start_worker("gpu0", &["--gpu", "0"]);
    eventually(30, "a gpu_hot alert", || {
        rig.decisions_with(&["decision=alert ", "kind=gpu_hot", "subject=gpu0"])
            .len()
            == 1
    });
    eventually(20, "the card's gauges", || {
        let Some((_, text)) = get(port, "/metrics") else {
            return false;
        };
        let s = parse_exposition(&text);
        value(
            &s,
            "rigmind_gpu_temperature_celsius",
            &[("worker", "gpu0"), ("gpu", "0")],
        ) == Some(95.0)
            && value(&s, "rigmind_gpu_memory_total_bytes", &[("worker", "gpu0")])
                == Some(8000.0 * 1024.0 * 1024.0)
    });
    // Just under the limit is not cool enough (the margin keeps it from flapping).
    std::fs::write(readings.join("0/temp_c"), "40").unwrap();
    eventually(30, "the alert cleared", || {
        rig.decisions_with(&["decision=alert_cleared", "kind=gpu_hot"])
            .len()
            == 1
    });
}

/// The unit files pass `systemd-analyze verify` (where it is installed), with the
/// binaries they name stood in by real paths.
#[test]
fn the_systemd_units_verify() {
    let test = "operations::the_systemd_units_verify";
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd");
    let brain = std::fs::read_to_string(units.join("rigmind-brain.service")).unwrap();
    let worker = std::fs::read_to_string(units.join("rigmind-worker@.service")).unwrap();
    // What the recovery design relies on (docs/operations.md, "systemd").
    for (name, text) in [("brain", &brain), ("worker", &worker)] {
        assert!(
            text.contains("Restart=always"),
            "{name}: restarted whatever its exit"
        );
        assert!(
            text.contains("KillMode=mixed"),
            "{name}: SIGTERM to the main process only"
        );
    }
    assert!(
        worker.contains("--grace 30") && worker.contains("TimeoutStopSec=45"),
        "stop timeout past --grace"
    );
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        skip(test, "systemd-analyze is not installed");
        return;
    }
    // The units name /usr/local/bin/{brain,worker}: verify copies pointing at the
    // binaries just built (verify checks that ExecStart's program exists).
    let dir = tempfile::tempdir().unwrap();
    let fix = |t: &str| {
        t.replace("/usr/local/bin/brain", env!("CARGO_BIN_EXE_brain"))
            .replace("/usr/local/bin/worker", env!("CARGO_BIN_EXE_worker"))
    };
    std::fs::write(dir.path().join("rigmind-brain.service"), fix(&brain)).unwrap();
    std::fs::write(dir.path().join("rigmind-worker@.service"), fix(&worker)).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.path().join("rigmind-brain.service"))
        .arg(dir.path().join("rigmind-worker@0.service"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Without a running systemd (a container) verify still parses the units; what
    // it says about the unit files themselves must be nothing.
    let about_units: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("rigmind-brain.service") || l.contains("rigmind-worker@"))
        .collect();
    assert!(about_units.is_empty(), "systemd-analyze verify:\n{said}");
}

/// `rigmind run` on a terminal draws a bar; piped, it prints its timed lines as
/// before (the tests and scripts that read them see no change).
#[test]
fn run_draws_a_bar_on_a_terminal_and_lines_when_piped() {
    let test = "operations::run_draws_a_bar_on_a_terminal_and_lines_when_piped";
    let rig = Rig::new();
    let plan = rig.write(
        "two.md",
        "# Plan: two\n\n## Task: a\n- task_class: cpu\n- command: `sleep 0.5`\n\n## Task: b\n- task_class: cpu\n- depends_on: a\n- command: `true`\n",
    );
    let root = rig.root();
    let piped = rig.rigmind(&["run", plan.to_str().unwrap(), "--workers", "1"]);
    let err = common::text(&piped.stderr);
    assert!(piped.status.success(), "{err}");
    assert!(
        err.contains("s] batch ") && err.contains("'two': 2/2 complete"),
        "{err}"
    );
    if Command::new("script").arg("--version").output().is_err() {
        skip(
            test,
            "script (util-linux) is not installed: no terminal to run under",
        );
        return;
    }
    // `script` gives the command a pseudo-terminal and copies what it draws.
    let line = format!(
        "{} run {} --workers 1 --root {}",
        common::RIGMIND,
        plan.display(),
        root.display()
    );
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .env("COLUMNS", "120")
        .output()
        .unwrap();
    let screen = common::text(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(
        screen.contains("2/2") && screen.contains("[=="),
        "no bar drawn:\n{screen}"
    );
    assert!(
        !screen.contains("s] batch "),
        "lines printed on a terminal:\n{screen}"
    );
    assert!(screen.contains("complete"), "the summary:\n{screen}");
}
