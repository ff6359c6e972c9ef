//! The fake server's state: which models exist, which are loaded, their expiry
//! timers, the optional VRAM holder child per loaded model, the fake-VRAM file and
//! the request log.
//!
//! Loads and unloads are serialised on one async lock (Ollama's scheduler also
//! loads one runner at a time), so a request that arrives while its model is being
//! loaded or unloaded simply waits for that to finish and then sees the result.
//! A model is never expired while a request is using it.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::AbortHandle;

use crate::keep_alive::KeepAlive;
use crate::text::fake_digest;
use crate::FakeOptions;

/// How long a `--hold-vram-cmd` child may take to print "ready" (Ollama's own
/// default load timeout is 5 minutes).
const HOLDER_READY_TIMEOUT: Duration = Duration::from_secs(300);
/// How long an unload waits for the holder's process group to exit after SIGTERM
/// before it sends SIGKILL.
const HOLDER_TERM_GRACE: Duration = Duration::from_secs(10);

/// What a request was, for the request log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestKind {
    /// A generate or chat request with no prompt/messages: load the model.
    Load,
    /// A generate or chat request with no prompt/messages and `keep_alive` 0.
    Unload,
    /// `POST /api/generate` with a prompt.
    Generate,
    /// `POST /api/chat` with messages.
    Chat,
    /// `GET /api/ps`.
    Ps,
    /// `GET /api/version`.
    Version,
    /// `GET /api/tags`.
    Tags,
    /// Anything else.
    Other,
}

/// One line of the request log (in memory, and in `--request-log` as JSON lines).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// When the request arrived (RFC 3339, milliseconds, UTC). Records are written
    /// in the order their response status was decided.
    pub t: String,
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// The `model` of the request body, when it had one.
    pub model: Option<String>,
    /// What the request was.
    pub kind: RequestKind,
    /// The HTTP status answered.
    pub status: u16,
}

/// Errors while loading a model in the fake.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The `--hold-vram-cmd` child could not be started.
    #[error("model {model}: cannot start hold-vram command {cmd:?}: {source}")]
    Spawn {
        model: String,
        cmd: String,
        source: io::Error,
    },
    /// The child exited (or closed stdout) before printing "ready".
    #[error("llama runner process has terminated: {status} (fake-ollama hold-vram command for model {model})")]
    Exited { model: String, status: String },
    /// The child did not print "ready" in time.
    #[error("timed out waiting for llama runner to start (fake-ollama hold-vram command for model {model}, {after:?})")]
    ReadyTimeout { model: String, after: Duration },
}

/// A model the fake "has pulled".
#[derive(Debug, Clone)]
pub struct ModelEntry {
    /// Canonical name with tag, e.g. `qwen2.5:7b`.
    pub name: String,
    pub digest: String,
    pub size: u64,
    pub family: String,
    pub parameter_size: String,
    pub modified_at: String,
}

impl ModelEntry {
    fn new(name: &str, size: u64, modified_at: &str) -> ModelEntry {
        let name = canonical_name(name);
        let base = name.split(':').next().unwrap_or(&name);
        let base = base.rsplit('/').next().unwrap_or(base);
        let family: String = base
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        let tag = name.rsplit(':').next().unwrap_or("");
        let parameter_size = if tag.len() > 1
            && tag.ends_with(['b', 'B'])
            && tag[..tag.len() - 1]
                .chars()
                .all(|c| c.is_ascii_digit() || c == '.')
        {
            tag.to_ascii_uppercase()
        } else {
            "7.6B".to_string()
        };
        ModelEntry {
            digest: fake_digest(&name),
            name,
            size,
            family: if family.is_empty() {
                "llama".into()
            } else {
                family
            },
            parameter_size,
            modified_at: modified_at.to_string(),
        }
    }

    /// The `details` object of `/api/tags` and `/api/ps`.
    pub fn details(&self) -> serde_json::Value {
        serde_json::json!({
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": "Q4_K_M",
        })
    }
}

/// `name` with `:latest` added when it has no tag, as Ollama's model names work.
pub fn canonical_name(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// When a loaded model expires.
#[derive(Debug, Clone, Copy)]
enum Expiry {
    Never,
    At(DateTime<Utc>),
}

/// A child process that holds real GPU memory while its model is loaded.
struct VramHolder {
    child: Child,
    pgid: i32,
}

struct Loaded {
    size: u64,
    expiry: Expiry,
    in_flight: usize,
    /// Bumped at every use, so a timer armed before the use knows it is stale.
    epoch: u64,
    timer: Option<AbortHandle>,
    unload_when_idle: bool,
    holder: Option<VramHolder>,
}

/// A model currently loaded, as `/api/ps` shows it.
#[derive(Debug, Clone)]
pub struct LoadedView {
    pub entry: ModelEntry,
    pub size: u64,
    pub expires_at: String,
}

/// State shared by all connections of one fake server.
pub struct Shared {
    pub opts: FakeOptions,
    catalog: Vec<ModelEntry>,
    transition: tokio::sync::Mutex<()>,
    loaded: Mutex<BTreeMap<String, Loaded>>,
    requests: Mutex<Vec<RequestRecord>>,
    log_file: Mutex<Option<File>>,
    /// Counts generate/chat requests with a prompt, for failure injection.
    pub generate_count: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the whole fake down with poisoned locks.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Builds the state; opens the request log for appending.
    pub fn new(opts: FakeOptions) -> io::Result<Arc<Shared>> {
        let modified_at = Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true);
        let size = opts.model_mb.saturating_mul(1024 * 1024);
        let mut catalog: Vec<ModelEntry> = Vec::new();
        for m in &opts.models {
            let m = m.trim();
            if m.is_empty() || catalog.iter().any(|e| e.name == canonical_name(m)) {
                continue;
            }
            catalog.push(ModelEntry::new(m, size, &modified_at));
        }
        let log_file = match &opts.request_log {
            Some(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    fs::create_dir_all(dir)?;
                }
                Some(OpenOptions::new().create(true).append(true).open(p)?)
            }
            None => None,
        };
        Ok(Arc::new(Shared {
            opts,
            catalog,
            transition: tokio::sync::Mutex::new(()),
            loaded: Mutex::new(BTreeMap::new()),
            requests: Mutex::new(Vec::new()),
            log_file: Mutex::new(log_file),
            generate_count: AtomicU64::new(0),
        }))
    }

    /// The known models.
    pub fn catalog(&self) -> &[ModelEntry] {
        &self.catalog
    }

    /// The known model `requested` names (tag `latest` when omitted, any case).
    pub fn resolve(&self, requested: &str) -> Option<&ModelEntry> {
        let want = canonical_name(requested.trim());
        self.catalog
            .iter()
            .find(|e| e.name.eq_ignore_ascii_case(&want))
    }

    /// Names of the loaded models, sorted.
    pub fn loaded_names(&self) -> Vec<String> {
        lock(&self.loaded).keys().cloned().collect()
    }

    /// The loaded models for `/api/ps`, longest remaining time first (as Ollama).
    pub fn loaded_view(&self) -> Vec<LoadedView> {
        let loaded = lock(&self.loaded);
        let mut out: Vec<(DateTime<Utc>, LoadedView)> = loaded
            .iter()
            .filter_map(|(name, l)| {
                let entry = self.catalog.iter().find(|e| &e.name == name)?.clone();
                let at = match l.expiry {
                    // Ollama adds the maximal Go duration (~292 years) to "now".
                    Expiry::Never => Utc::now() + chrono::Duration::nanoseconds(i64::MAX),
                    Expiry::At(t) => t,
                };
                Some((
                    at,
                    LoadedView {
                        entry,
                        size: l.size,
                        expires_at: at.to_rfc3339_opts(SecondsFormat::Nanos, true),
                    },
                ))
            })
            .collect();
        out.sort_by_key(|v| std::cmp::Reverse(v.0));
        out.into_iter().map(|(_, v)| v).collect()
    }

    /// The request log so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.requests).clone()
    }

    /// Records one request, in memory and in `--request-log`.
    pub fn log_request(&self, rec: RequestRecord) {
        if let Some(f) = lock(&self.log_file).as_mut() {
            if let Ok(mut line) = serde_json::to_vec(&rec) {
                line.push(b'\n');
                // One write per line with O_APPEND: lines never interleave.
                if let Err(e) = f.write_all(&line) {
                    tracing::warn!("fake-ollama: cannot append to the request log: {e}");
                }
            }
        }
        lock(&self.requests).push(rec);
    }

    /// Marks `entry` in use for one request, loading it first when needed.
    ///
    /// The returned guard releases the model when dropped, which re-arms its expiry
    /// per `keep`.
    pub async fn acquire(
        self: &Arc<Self>,
        entry: &ModelEntry,
        keep: KeepAlive,
    ) -> Result<InFlight, LoadError> {
        let start = Instant::now();
        let _t = self.transition.lock().await;
        let name = entry.name.clone();
        {
            let mut loaded = lock(&self.loaded);
            if let Some(l) = loaded.get_mut(&name) {
                l.in_flight += 1;
                // The latest request wins over an unload still waiting for idle.
                l.unload_when_idle = false;
                l.touch(keep);
                return Ok(self.in_flight(name, keep, start.elapsed()));
            }
        }
        let holder = self.load(&name).await?;
        {
            let mut loaded = lock(&self.loaded);
            let mut l = Loaded {
                size: entry.size,
                expiry: Expiry::Never,
                in_flight: 1,
                epoch: 0,
                timer: None,
                unload_when_idle: false,
                holder,
            };
            l.touch(keep);
            loaded.insert(name.clone(), l);
        }
        self.write_vram_file();
        tracing::info!(model = %name, took_ms = start.elapsed().as_millis() as u64, "loaded");
        Ok(self.in_flight(name, keep, start.elapsed()))
    }

    fn in_flight(self: &Arc<Self>, name: String, keep: KeepAlive, load: Duration) -> InFlight {
        InFlight {
            shared: Arc::clone(self),
            name,
            keep,
            load_duration: load,
        }
    }

    /// Waits the load latency and, with `--hold-vram-cmd`, for the holder's "ready".
    async fn load(&self, name: &str) -> Result<Option<VramHolder>, LoadError> {
        let latency = tokio::time::sleep(self.opts.load_latency);
        let Some(cmd) = self.opts.hold_vram_cmd.as_deref() else {
            latency.await;
            return Ok(None);
        };
        let cmd = cmd.replace("{mb}", &self.opts.model_mb.to_string());
        let (_, holder) = tokio::join!(latency, spawn_holder(name, &cmd));
        holder.map(Some)
    }

    /// Ends one request's use of `name` (called from [`InFlight`]'s drop).
    fn release(self: &Arc<Self>, name: &str, keep: KeepAlive) {
        let mut loaded = lock(&self.loaded);
        let Some(l) = loaded.get_mut(name) else {
            return;
        };
        l.in_flight = l.in_flight.saturating_sub(1);
        if l.in_flight > 0 {
            return;
        }
        if l.unload_when_idle || keep == KeepAlive::Zero {
            drop(loaded);
            self.schedule_unload(name, None);
            return;
        }
        l.touch(keep);
        if let KeepAlive::For(d) = keep {
            l.timer = self.arm_timer(name, l.epoch, d);
        }
    }

    fn arm_timer(self: &Arc<Self>, name: &str, epoch: u64, after: Duration) -> Option<AbortHandle> {
        let rt = tokio::runtime::Handle::try_current().ok()?;
        let weak: Weak<Shared> = Arc::downgrade(self);
        let name = name.to_string();
        let task = rt.spawn(async move {
            tokio::time::sleep(after).await;
            if let Some(shared) = weak.upgrade() {
                shared.unload(&name, Some(epoch)).await;
            }
        });
        Some(task.abort_handle())
    }

    /// Unloads `name` in the background (an unload request answers at once, as
    /// Ollama's does; the model leaves `/api/ps` after the unload latency).
    pub fn schedule_unload(self: &Arc<Self>, name: &str, epoch: Option<u64>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared = Arc::clone(self);
        let name = name.to_string();
        rt.spawn(async move { shared.unload(&name, epoch).await });
    }

    /// Unloads `name` unless it is busy (then it goes when idle) or, for a timer
    /// (`epoch` given), unless it was used since the timer was armed.
    async fn unload(&self, name: &str, epoch: Option<u64>) {
        let _t = self.transition.lock().await;
        {
            let mut loaded = lock(&self.loaded);
            let Some(l) = loaded.get_mut(name) else {
                return;
            };
            if epoch.is_some_and(|e| e != l.epoch) {
                return;
            }
            if l.in_flight > 0 {
                l.unload_when_idle = true;
                return;
            }
        }
        tokio::time::sleep(self.opts.unload_latency).await;
        let removed = lock(&self.loaded).remove(name);
        if let Some(mut l) = removed {
            if let Some(t) = l.timer.take() {
                t.abort();
            }
            if let Some(h) = l.holder.take() {
                stop_holder(h).await;
            }
        }
        self.write_vram_file();
        tracing::info!(model = %name, "unloaded");
    }

    /// Unloads everything now (shutdown): no unload latency, holders stopped and
    /// waited for.
    pub async fn unload_all(&self) {
        let _t = self.transition.lock().await;
        let all: Vec<Loaded> = std::mem::take(&mut *lock(&self.loaded))
            .into_values()
            .collect();
        for mut l in all {
            if let Some(t) = l.timer.take() {
                t.abort();
            }
            if let Some(h) = l.holder.take() {
                stop_holder(h).await;
            }
        }
        self.write_vram_file();
    }

    /// SIGKILLs every holder's process group without waiting (for `Drop`).
    pub fn kill_holders_now(&self) {
        let mut loaded = lock(&self.loaded);
        for l in loaded.values_mut() {
            if let Some(h) = l.holder.as_mut() {
                // SAFETY: plain kill(2) on a process group this fake created.
                unsafe { libc::kill(-h.pgid, libc::SIGKILL) };
                let _ = h.child.start_kill();
            }
        }
        loaded.clear();
        drop(loaded);
        self.write_vram_file();
    }

    /// Keeps `--fake-vram-file` in step: the loaded models' MB while any is
    /// loaded, no file otherwise.
    fn write_vram_file(&self) {
        let Some(path) = self.opts.fake_vram_file.as_deref() else {
            return;
        };
        let n = lock(&self.loaded).len() as u64;
        let result = if n == 0 {
            match fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        } else {
            write_atomic(path, format!("{}\n", n * self.opts.model_mb).as_bytes())
        };
        if let Err(e) = result {
            tracing::warn!("fake-ollama: cannot update {}: {e}", path.display());
        }
    }
}

impl Loaded {
    /// A use: cancels the pending expiry and sets the new one per `keep`.
    fn touch(&mut self, keep: KeepAlive) {
        self.epoch += 1;
        if let Some(t) = self.timer.take() {
            t.abort();
        }
        self.expiry = match keep {
            KeepAlive::Forever => Expiry::Never,
            KeepAlive::Zero => Expiry::At(Utc::now()),
            KeepAlive::For(d) => Expiry::At(
                Utc::now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX),
            ),
        };
    }
}

/// One request's hold on a loaded model; dropping it releases the model.
pub struct InFlight {
    shared: Arc<Shared>,
    name: String,
    keep: KeepAlive,
    /// How long acquiring took (the load, when there was one).
    pub load_duration: Duration,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.shared.release(&self.name, self.keep);
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so readers never
/// see a partial file (the temporary name does not end in `.mb`).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}

async fn spawn_holder(model: &str, cmd: &str) -> Result<VramHolder, LoadError> {
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| LoadError::Spawn {
            model: model.to_string(),
            cmd: cmd.to_string(),
            source,
        })?;
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    let Some(stdout) = child.stdout.take() else {
        return Err(LoadError::Exited {
            model: model.to_string(),
            status: "no stdout".into(),
        });
    };
    let mut lines = BufReader::new(stdout).lines();
    let ready = async {
        loop {
            match lines.next_line().await {
                Ok(Some(l)) if l.trim() == "ready" => return true,
                Ok(Some(_)) => continue,
                _ => return false,
            }
        }
    };
    let mut holder = VramHolder { child, pgid };
    match tokio::time::timeout(HOLDER_READY_TIMEOUT, ready).await {
        Ok(true) => {
            // Keep reading so that a chatty child never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            tracing::info!(model, pid = pgid, "hold-vram child ready");
            Ok(holder)
        }
        Ok(false) => {
            let status = match holder.child.wait().await {
                Ok(s) => match s.code() {
                    Some(c) => format!("exit status {c}"),
                    None => format!("{s}"),
                },
                Err(e) => e.to_string(),
            };
            Err(LoadError::Exited {
                model: model.to_string(),
                status,
            })
        }
        Err(_) => {
            stop_holder(holder).await;
            Err(LoadError::ReadyTimeout {
                model: model.to_string(),
                after: HOLDER_READY_TIMEOUT,
            })
        }
    }
}

/// Stops a holder: SIGTERM to its process group, then waits until the whole group
/// is gone (so the GPU memory really is back), SIGKILL after a grace period.
async fn stop_holder(mut h: VramHolder) {
    let group_alive = |pgid: i32| {
        // SAFETY: kill(2) with signal 0 only checks for existence.
        pgid > 0 && unsafe { libc::kill(-pgid, 0) } == 0
    };
    if h.pgid > 0 {
        // SAFETY: plain kill(2) on a process group this fake created.
        unsafe { libc::kill(-h.pgid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + HOLDER_TERM_GRACE;
    let _ = tokio::time::timeout(HOLDER_TERM_GRACE, h.child.wait()).await;
    while group_alive(h.pgid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if group_alive(h.pgid) || h.child.try_wait().ok().flatten().is_none() {
        // SAFETY: as above.
        unsafe { libc::kill(-h.pgid, libc::SIGKILL) };
        let _ = h.child.kill().await;
        while group_alive(h.pgid) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Counter helper for failure injection: the 1-based number of this generate.
pub fn next_generate(shared: &Shared) -> u64 {
    shared.generate_count.fetch_add(1, Ordering::SeqCst) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_get_latest_tag() {
        assert_eq!(canonical_name("llama3.2"), "llama3.2:latest");
        assert_eq!(canonical_name("qwen2.5:7b"), "qwen2.5:7b");
        assert_eq!(canonical_name("ns/model"), "ns/model:latest");
        assert_eq!(
            canonical_name("host:5000/ns/model"),
            "host:5000/ns/model:latest"
        );
    }

    #[test]
    fn catalog_entries_are_plausible() {
        let e = ModelEntry::new("qwen2.5:7b", 10, "t");
        assert_eq!(e.family, "qwen");
        assert_eq!(e.parameter_size, "7B");
        let e = ModelEntry::new("llama3.2", 10, "t");
        assert_eq!(e.name, "llama3.2:latest");
        assert_eq!(e.family, "llama");
    }

    #[test]
    fn resolve_ignores_case_and_missing_latest() {
        let opts = FakeOptions {
            models: vec!["qwen2.5:7b".into(), "tiny".into()],
            ..FakeOptions::default()
        };
        let s = Shared::new(opts).unwrap();
        assert!(s.resolve("QWEN2.5:7b").is_some());
        assert!(s.resolve("tiny").is_some());
        assert!(s.resolve("tiny:latest").is_some());
        assert!(s.resolve("qwen2.5").is_none());
    }

    #[test]
    fn atomic_write_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/x.mb");
        write_atomic(&p, b"1\n").unwrap();
        write_atomic(&p, b"2\n").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "2\n");
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }
}
