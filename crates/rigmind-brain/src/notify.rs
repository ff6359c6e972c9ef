//! `[notify] command`: run with `sh -c` when a batch ends and when an alert is
//! raised or cleared, with the event in its environment (docs/operations.md lists
//! the variables). The brain's loop never waits for it: each run is a task of its
//! own, killed after `[notify] timeout`, whose end is logged
//! (`decision=notify ... exit=N`) and reported back for the metrics.

use std::process::Stdio;
use std::time::Duration;

use rigmind_decide::alerts::AlertAction;
use rigmind_queue::batch::BatchRecord;
use rigmind_queue::logs::{Decision, Logs};
use tokio::sync::mpsc;

/// One event for the command: its `RIGMIND_EVENT` word and its variables.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub name: &'static str,
    pub vars: Vec<(&'static str, String)>,
}

impl Event {
    /// A batch that ended: `batch_failed` when it failed, else `batch_finished`
    /// (complete or cancelled: `RIGMIND_BATCH_STATE` says which).
    pub fn batch(r: &BatchRecord) -> Self {
        let state = r.state.as_str();
        let name = if state == "failed" {
            "batch_failed"
        } else {
            "batch_finished"
        };
        let c = r.counts;
        Self {
            name,
            vars: vec![
                ("RIGMIND_BATCH", r.batch_id.clone()),
                ("RIGMIND_BATCH_NAME", r.name.clone()),
                ("RIGMIND_BATCH_STATE", state.to_string()),
                ("RIGMIND_COMPLETE", c.complete.to_string()),
                ("RIGMIND_FAILED", c.failed.to_string()),
                ("RIGMIND_TOTAL", c.total.to_string()),
                (
                    "RIGMIND_REASON",
                    format!(
                        "batch {} {state}: {}/{} complete, {} failed",
                        r.batch_id, c.complete, c.total, c.failed
                    ),
                ),
            ],
        }
    }

    /// An alert raised or cleared.
    pub fn alert(a: &AlertAction) -> Self {
        let (state, alert) = match a {
            AlertAction::Raise(a) => ("raised", a),
            AlertAction::Clear(a) => ("cleared", a),
        };
        let mut vars = vec![
            ("RIGMIND_ALERT_KIND", alert.kind.as_str().to_string()),
            ("RIGMIND_ALERT_SUBJECT", alert.subject.clone()),
            ("RIGMIND_ALERT_STATE", state.to_string()),
            ("RIGMIND_REASON", alert.reason.clone()),
        ];
        // A task_failing alert's subject is BATCH/TASK.
        if let Some((batch, _)) = alert.subject.split_once('/') {
            vars.push(("RIGMIND_BATCH", batch.to_string()));
        }
        Self {
            name: "alert",
            vars,
        }
    }
}

/// Runs the command for events; the results come back on a channel.
pub struct Notifier {
    root: std::path::PathBuf,
    done_tx: mpsc::UnboundedSender<(String, bool)>,
    done_rx: mpsc::UnboundedReceiver<(String, bool)>,
}

impl Notifier {
    pub fn new(root: &std::path::Path) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Self {
            root: root.to_path_buf(),
            done_tx,
            done_rx,
        }
    }

    /// Starts `command` for `event` in the background (nothing when no command is
    /// set).
    pub fn send(&self, notify: &rigmind_config::Notify, logs: &Logs, event: Event) {
        let Some(command) = notify.command.clone() else {
            return;
        };
        let timeout = Duration::from_secs_f64(notify.timeout_secs.max(0.001));
        let root = self.root.clone();
        let logs = logs.clone();
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let (exit, ok) = run(&command, &root, &event, timeout).await;
            let _ = logs.decision(
                &Decision::new("notify")
                    .kv("event", event.name)
                    .kv("exit", &exit)
                    .kv("reason", "ran [notify] command"),
            );
            if !ok {
                tracing::warn!("[notify] command for {}: {exit}", event.name);
            }
            let _ = done.send((event.name.to_string(), ok));
        });
    }

    /// The runs that ended since the last call: (event, exited 0).
    pub fn finished(&mut self) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        while let Ok(r) = self.done_rx.try_recv() {
            out.push(r);
        }
        out
    }
}

/// Runs the command once; its exit in words (`0`, `3`, `signal 9`, `timeout`,
/// `spawn failed: ...`) and whether it exited 0.
async fn run(
    command: &str,
    root: &std::path::Path,
    event: &Event,
    timeout: Duration,
) -> (String, bool) {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .env("RIGMIND_EVENT", event.name)
        .env("RIGMIND_ROOT", root)
        .envs(event.vars.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return (format!("spawn failed: {e}"), false),
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(st)) => match st.code() {
            Some(c) => (c.to_string(), c == 0),
            None => ("signal".to_string(), false),
        },
        Ok(Err(e)) => (format!("wait failed: {e}"), false),
        Err(_) => {
            let _ = child.kill().await;
            (
                format!("timeout after {:.0}s, killed", timeout.as_secs_f64()),
                false,
            )
        }
    }
}
