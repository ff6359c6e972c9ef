//! `rigmind gate`: the rig's rules for a command run outside the queue. It takes a
//! slot of a concurrency group (and reserves RAM) under the claim lock the workers
//! claim under, counting the same holders (`rigmind_queue::holders`), checks the
//! safety gates, runs the command and frees everything when the command ends or the
//! gate dies (`rigmind_queue::gates`: liveness by lock, so `kill -9` frees the slot).
//! The decision is `rigmind_decide::gate::refusals`.

use std::collections::BTreeMap;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use rigmind_config::RigConfig;
use rigmind_decide::gate::{refusals, GateAsk, GateFacts};
use rigmind_queue::claim::QueueLock;
use rigmind_queue::gates::{GateHold, GateRecord};
use rigmind_queue::holders::{compile_matches, group_holders};
use rigmind_queue::Layout;

use crate::args::GateArgs;

/// How often a waiting gate looks again (a freed slot raises no event it hears).
const POLL: Duration = Duration::from_millis(500);

/// `rigmind gate [--group G] [--mem-mb N] [--wait|--no-wait|--check] -- CMD ARGS...`
pub fn gate(a: GateArgs) -> Result<i32> {
    let layout = Layout::new(&a.root.root);
    // A gate may be the first to use a root: the claim lock lives in it.
    layout.ensure()?;
    let config = RigConfig::load(&layout.rig_toml())?;
    if let Some(g) = a
        .group
        .as_deref()
        .filter(|g| !config.groups.contains_key(*g))
    {
        let known: Vec<&str> = config.groups.keys().map(String::as_str).collect();
        eprintln!(
            "rigmind gate: group '{g}' is not in {}'s [groups] (known: {})",
            layout.rig_toml().display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
        return Ok(2);
    }
    let ask = GateAsk {
        group: a.group.clone(),
        mem_mb: a.mem_mb,
    };
    let gate = Gate {
        layout,
        matches: compile_matches(&config.group_match),
        config,
        ask,
    };
    if a.check {
        let why = gate.try_take(None)?.err().unwrap_or_default();
        for r in &why {
            println!("{r}");
        }
        return Ok(i32::from(!why.is_empty()));
    }
    let mut said: Vec<String> = Vec::new();
    let hold = loop {
        // A fresh record each look: `started_at` is when the slot was taken.
        let record = GateRecord::new(a.group.clone(), a.mem_mb, a.command.clone());
        match gate.try_take(Some(&record))? {
            Ok(hold) => break hold.context("the gate file was not written")?,
            Err(why) if a.no_wait => {
                for r in &why {
                    eprintln!("rigmind gate: {r}");
                }
                return Ok(1);
            }
            Err(why) => {
                if why != said {
                    eprintln!("rigmind gate: waiting: {}", why.join("; "));
                    said = why;
                }
                std::thread::sleep(POLL);
            }
        }
    };
    let code = run(&a.command);
    drop(hold);
    code
}

struct Gate {
    layout: Layout,
    config: RigConfig,
    matches: BTreeMap<String, regex::Regex>,
    ask: GateAsk,
}

impl Gate {
    /// Counts, judges and (given a record) takes the slot in one step under the
    /// claim lock. `Ok(Ok(hold))`: it may start (no hold for a check);
    /// `Ok(Err(reasons))`: it may not.
    fn try_take(
        &self,
        record: Option<&GateRecord>,
    ) -> Result<Result<Option<GateHold>, Vec<String>>> {
        // The sensors are read outside the lock: they take a while and need no lock.
        let host = rigmind_gpu::read_host_memory().ok();
        let cpu = rigmind_gpu::read_cpu_temp();
        let unknown = rigmind_gpu::HostMemory {
            ram_total_mb: u64::MAX,
            ram_available_mb: u64::MAX,
            swap_total_mb: 0,
            swap_used_mb: 0,
        };
        let safety = rigmind_gpu::safety_violations(
            &self.config.safety,
            host.as_ref().unwrap_or(&unknown),
            None,
            cpu.as_ref(),
        );
        let mut lock = QueueLock::open(&self.layout)?;
        lock.with(|| -> Result<_> {
            let facts = GateFacts {
                limits: self.config.groups.clone(),
                holders: group_holders(&self.layout, &self.matches)?,
                safety,
                ram_available_mb: host.map(|h| h.ram_available_mb),
                min_free_ram_mb: self.config.safety.min_free_ram_mb,
                reserved: rigmind_queue::memory::holders_now(&self.layout),
            };
            let why = refusals(&self.ask, &facts);
            if !why.is_empty() {
                return Ok(Err(why));
            }
            Ok(Ok(record
                .map(|r| GateHold::take(&self.layout, r))
                .transpose()?))
        })?
    }
}

/// The command's pid, for the signal handlers to pass signals on to.
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn pass_on(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Runs the command with the gate's stdio; returns its exit code (128 + N when a
/// signal N ended it). The command dies with the gate (`PR_SET_PDEATHSIG`), so a
/// slot freed by a dead gate is not still in use. SIGTERM and SIGHUP sent to the
/// gate are passed on; SIGINT and SIGQUIT (a terminal's Ctrl-C reaches the command
/// itself) are ignored by the gate while the command runs, as `system()` does.
fn run(command: &[String]) -> Result<i32> {
    let (prog, args) = command
        .split_first()
        .context("rigmind gate: no command after --")?;
    let mut cmd = std::process::Command::new(prog);
    cmd.args(args);
    let gate_pid = std::process::id();
    // SAFETY: prctl and getppid are async-signal-safe; nothing else runs between
    // fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The gate may have died before the prctl: then go at once.
            if u32::try_from(libc::getppid()).ok() != Some(gate_pid) {
                libc::_exit(137);
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("rigmind gate: cannot run {prog:?}"))?;
    CHILD.store(child.id() as i32, Ordering::SeqCst);
    // SAFETY: installing handlers that only call kill, and ignoring two signals.
    unsafe {
        let handler: extern "C" fn(libc::c_int) = pass_on;
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
        libc::signal(libc::SIGHUP, handler as libc::sighandler_t);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
    let status = child
        .wait()
        .with_context(|| format!("rigmind gate: waiting for {prog:?}"))?;
    Ok(status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1))
}
