//! Claiming: one task, one worker, always, in the claim order of queue-layout.md.
//!
//! A worker keeps a [`QueueIndex`] of what it has read of `tasks/queue/` (updated from
//! file-system events and a periodic rescan) so that choosing a task costs no disk
//! reads. The claim itself is an atomic rename into `processing/` made while holding
//! the queue lock: the rename decides which worker wins, and the lock makes the choice
//! and the rename one step, which the rig-wide limits of later issues (concurrency
//! groups) count on. A task of a cancelled batch (one with a marker in
//! `tasks/cancel/`, see [`crate::cancel`]) is never claimed: the markers are looked
//! at under the lock, so a claim either comes before the cancellation or sees it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rigmind_types::{Executor, TaskClass};

use crate::aging::Aging;
use crate::cancel::CancelMarkers;
use crate::error::QueueError;
use crate::fsio;
use crate::layout::{Layout, TaskDir};
use crate::rate::{self, RateHold};
use crate::task::{endpoint_group, TaskFile, TaskName, TaskStatus};

/// What a worker must know of a queued task to decide whether to claim it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueEntry {
    pub file_name: String,
    /// Only `queued` files are claimed: a file moved in by hand still says
    /// `failed` until the brain has checked it and accepted it.
    pub status: TaskStatus,
    pub task_class: Option<TaskClass>,
    pub executor: Executor,
    pub target_worker: Option<String>,
    pub not_before: Option<DateTime<Utc>>,
    pub vram_mb: Option<u64>,
    /// Host RAM it reserves: claimed only where it fits ([`crate::memory`]).
    pub mem_mb: Option<u64>,
    pub group: Option<String>,
    /// The model an llm task needs (a resource task: the one to load).
    pub model: Option<String>,
    /// An llm task's endpoint (it needs no card).
    pub endpoint: Option<String>,
    /// Let in by the brain ([`TaskFile::released_by`]): only such tasks are claimed.
    pub released: bool,
    /// Its written rank and submission sequence, from its file name (rank 0, the
    /// first, for a name that does not parse).
    pub rank: u8,
    pub seq: u64,
    /// When it was submitted: how long it has waited, for [`Aging`].
    pub created_at: Option<DateTime<Utc>>,
}

impl QueueEntry {
    /// The concurrency groups it holds a slot of once it runs
    /// ([`crate::task::held_groups`]).
    fn held_groups(&self) -> impl Iterator<Item = String> + '_ {
        crate::task::held_groups(self.group.as_deref(), self.endpoint.as_deref())
    }

    /// Whether the task is in a group at its limit: its own `group`, or its
    /// endpoint's implicit group (`endpoint:<name>`).
    fn in_full_group(&self, full: &BTreeSet<String>) -> bool {
        !full.is_empty() && self.held_groups().any(|g| full.contains(&g))
    }

    /// Whether a limit in `limits` applies to it.
    fn limited(&self, limits: &BTreeMap<String, u32>) -> bool {
        self.held_groups().any(|g| limits.contains_key(&g))
    }

    fn from_task(file_name: &str, t: &TaskFile) -> Self {
        let (rank, seq) = TaskName::parse(file_name).map_or((0, 0), |n| (n.rank, n.seq));
        Self {
            rank,
            seq,
            created_at: t.created_at,
            file_name: file_name.to_string(),
            status: t.status,
            task_class: t.task_class,
            executor: t.executor,
            target_worker: t.target_worker.clone(),
            not_before: t.not_before,
            vram_mb: t.vram_mb,
            mem_mb: t.mem_mb,
            group: t.group.clone(),
            model: t.model.clone(),
            endpoint: t.endpoint.clone(),
            released: t.released_by.is_some(),
        }
    }
}

/// A worker's picture of `tasks/queue/`. Unreadable files are remembered as `None`
/// and skipped (the brain moves them aside).
#[derive(Debug, Default)]
pub struct QueueIndex {
    entries: BTreeMap<String, Option<QueueEntry>>,
    /// How priorities age in the claim order.
    aging: Aging,
    /// The creation times of the entries (with their counts): the oldest bounds
    /// how far aging can lift any of them.
    created: BTreeMap<DateTime<Utc>, usize>,
    /// How many entries reserve memory (`mem_mb`): a claim reads the host's
    /// memory and `processing/` only when some do.
    reserving: usize,
}

impl QueueIndex {
    /// An empty index whose claim order ages priorities by `aging`.
    pub fn with_aging(aging: Aging) -> Self {
        Self {
            aging,
            ..Self::default()
        }
    }

    /// How this index ages priorities.
    pub fn aging(&self) -> Aging {
        self.aging
    }

    /// Puts `entry` under `name`, keeping the creation times.
    fn put(&mut self, name: String, entry: Option<QueueEntry>) {
        if let Some(at) = entry.as_ref().and_then(|e| e.created_at) {
            *self.created.entry(at).or_default() += 1;
        }
        if entry.as_ref().is_some_and(|e| e.mem_mb.is_some()) {
            self.reserving += 1;
        }
        if let Some(old) = self.entries.insert(name, entry) {
            self.uncount(old.as_ref());
        }
    }

    /// Takes an entry that leaves the index out of its counts (creation times,
    /// memory reservations).
    fn uncount(&mut self, old: Option<&QueueEntry>) {
        if old.is_some_and(|e| e.mem_mb.is_some()) {
            self.reserving -= 1;
        }
        let Some(at) = old.and_then(|e| e.created_at) else {
            return;
        };
        if let Some(n) = self.created.get_mut(&at) {
            *n -= 1;
            if *n == 0 {
                self.created.remove(&at);
            }
        }
    }

    /// Re-lists the queue: reads files not seen before, forgets files that are gone.
    pub fn rescan(&mut self, layout: &Layout) -> Result<(), QueueError> {
        let dir = layout.dir(TaskDir::Queue);
        let names = fsio::list_names(&dir)?;
        let mut fresh = BTreeMap::new();
        for name in names {
            // Known tasks are not read again; files that could not be read are
            // (one may have been caught mid-move, or be back under the same name),
            // and so are the ones not let in yet: the brain lets a hand-dropped
            // task in by rewriting its file, and that event may have been lost.
            let entry = match self.entries.remove(&name) {
                Some(Some(known)) if known.released => Some(known),
                _ => read_entry(&dir, &name),
            };
            fresh.insert(name, entry);
        }
        self.entries = BTreeMap::new();
        self.created.clear();
        self.reserving = 0;
        for (name, entry) in fresh {
            self.put(name, entry);
        }
        Ok(())
    }

    /// Takes note of one queue file named by an event: (re)reads it, or forgets it.
    pub fn note(&mut self, layout: &Layout, file_name: &str) {
        if file_name.starts_with('.') {
            return;
        }
        let dir = layout.dir(TaskDir::Queue);
        if dir.join(file_name).exists() {
            let entry = read_entry(&dir, file_name);
            self.put(file_name.to_string(), entry);
        } else {
            self.forget(file_name);
        }
    }

    /// Adds a task known without reading a file (the simulator's queue).
    pub fn insert(&mut self, file_name: &str, task: &TaskFile) {
        self.put(
            file_name.to_string(),
            Some(QueueEntry::from_task(file_name, task)),
        );
    }

    /// Forgets a file (claimed by someone, or gone).
    pub fn forget(&mut self, file_name: &str) {
        if let Some(old) = self.entries.remove(file_name) {
            self.uncount(old.as_ref());
        }
    }

    /// The readable entries, in file-name order.
    pub fn entries(&self) -> impl Iterator<Item = &QueueEntry> {
        self.entries.values().flatten()
    }

    /// The entry of one file, if it was read as a task.
    pub fn get(&self, file_name: &str) -> Option<&QueueEntry> {
        self.entries.get(file_name).and_then(|e| e.as_ref())
    }

    /// Files the index could not read as tasks.
    pub fn unreadable(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, e)| e.is_none())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// How many readable tasks the index holds.
    pub fn len(&self) -> usize {
        self.entries.values().filter(|e| e.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The best entry by claim order at `now`: the lowest tier that `tier` gives
    /// (None: not claimable by this worker now), then the effective priority (the
    /// written one, aged: [`Aging`]), then age (the submission sequence).
    ///
    /// Files come by written rank, then sequence, and among one written rank a
    /// later sequence is taken as no older (the brain numbers submissions in
    /// order), so with aging a claim looks at the first tier-1 entry of each rank
    /// only, and at no rank that aging cannot lift to the best found.
    pub fn best(
        &self,
        now: DateTime<Utc>,
        tier: impl Fn(&QueueEntry) -> Option<u8>,
    ) -> Option<&QueueEntry> {
        // How far aging can lift any entry: none past its written rank by more.
        let reach = self.aging.reach(self.created.keys().next().copied(), now);
        let mut best: Option<((u8, u8, u64), &QueueEntry)> = None;
        let mut from = String::new();
        'ranks: loop {
            for (name, entry) in self.entries.range(from.clone()..) {
                let Some(entry) = entry else { continue };
                let Some(t) = tier(entry) else { continue };
                if t == 0 {
                    return Some(entry);
                }
                let eff = self.aging.rank(entry.rank, entry.created_at, now);
                let key = (t, eff, entry.seq);
                if best.is_none_or(|(bk, _)| key < bk) {
                    best = Some((key, entry));
                }
                // Past the resource tasks (rank 0) a tier-1 winner is beaten only
                // by an entry that aging can lift to its rank.
                let Some(((bt, br, _), _)) = best else {
                    continue;
                };
                let beyond = if reach == 0 {
                    entry.rank > 0
                } else {
                    entry.rank.saturating_sub(reach) > br
                };
                if bt <= 1 && beyond {
                    break 'ranks;
                }
                // The rest of this rank comes later and is no older: on to the next
                // (never past rank 0, where the resource tasks are, taken at tier 0).
                let next = format!("p{:02}", entry.rank + 1);
                if t == 1 && entry.rank > 0 && next.as_str() > name.as_str() {
                    from = next;
                    continue 'ranks;
                }
            }
            break;
        }
        best.map(|(_, e)| e)
    }
}

fn read_entry(dir: &Path, name: &str) -> Option<QueueEntry> {
    let path = dir.join(name);
    let bytes = fsio::read_regular(&path, "task file").ok()?;
    let t = TaskFile::from_bytes(&path, &bytes).ok()?;
    Some(QueueEntry::from_task(name, &t))
}

/// The rig-wide claim lock (`tasks/.claim.lock`), held only for the moment of a claim.
pub struct QueueLock {
    lock: fd_lock::RwLock<File>,
    path: PathBuf,
    markers: CancelMarkers,
    /// `requests_per_minute` of the endpoints that declare one, by endpoint name.
    rates: BTreeMap<String, u32>,
    /// The endpoints the last claim found at their rate limit.
    rate_held: Vec<RateHold>,
    /// The groups' command-line patterns (`[groups]` `match`): matching processes
    /// on the box count against their group ([`crate::holders`]).
    matches: BTreeMap<String, regex::Regex>,
    /// `[safety] min_free_ram_mb` and where `MemAvailable` is read, when memory
    /// reservations are honoured.
    memory: Option<(u64, PathBuf)>,
    /// The RAM the last claim found free for a reservation, when a task with
    /// `mem_mb` waited in the queue.
    mem_room: Option<u64>,
    /// The smallest `mem_mb` the last claim held back for want of memory.
    mem_held: Option<u64>,
}

impl QueueLock {
    pub fn open(layout: &Layout) -> Result<Self, QueueError> {
        let path = layout.queue_lock();
        let file = fsio::open_lock(&path)?;
        Ok(Self {
            lock: fd_lock::RwLock::new(file),
            path,
            markers: CancelMarkers::new(layout),
            rates: BTreeMap::new(),
            rate_held: Vec::new(),
            matches: BTreeMap::new(),
            memory: None,
            mem_room: None,
            mem_held: None,
        })
    }

    /// Claims with the groups' command-line patterns too: a process on the box
    /// whose command line matches a group's pattern takes a slot of that group
    /// (see [`crate::holders::group_holders`]).
    pub fn with_matches(mut self, matches: BTreeMap<String, regex::Regex>) -> Self {
        self.matches = matches;
        self
    }

    /// Claims under memory reservations too ([`crate::memory`]): a task with
    /// `mem_mb` is claimed only when the host's available RAM, less what the
    /// running tasks reserved and have not touched, less `min_free_ram_mb`,
    /// covers it. `meminfo`: the host's `/proc/meminfo`
    /// ([`crate::memory::meminfo_path`]).
    pub fn with_memory(mut self, min_free_ram_mb: u64, meminfo: PathBuf) -> Self {
        self.memory = Some((min_free_ram_mb, meminfo));
        self
    }

    /// The RAM (MB) the last claim found free for a reservation (`None`: no task
    /// with `mem_mb` waited, or reservations are off).
    pub fn mem_room(&self) -> Option<u64> {
        self.mem_room
    }

    /// The smallest `mem_mb` the last claim held back because it did not fit
    /// ([`QueueLock::mem_room`] says what was free); `None`: memory held nothing.
    pub fn mem_held(&self) -> Option<u64> {
        self.mem_held
    }

    /// Claims under per-endpoint rate limits too (endpoint name →
    /// `requests_per_minute`, see [`crate::rate`]): a task of an endpoint with
    /// that many starts in the last minute is not claimed.
    pub fn with_rates(mut self, rates: BTreeMap<String, u32>) -> Self {
        self.rates = rates;
        self
    }

    /// The endpoints the last claim found at their rate limit (their tasks wait).
    pub fn rate_held(&self) -> &[RateHold] {
        &self.rate_held
    }

    /// Runs `f` while holding the claim lock (for moves that must not race a claim).
    pub fn with<T>(&mut self, f: impl FnOnce() -> T) -> Result<T, QueueError> {
        let _guard = self
            .lock
            .write()
            .map_err(|e| QueueError::io("lock", &self.path, e))?;
        Ok(f())
    }

    /// Claims the best task `tier` allows: renames it from `queue/` into
    /// `processing/` under the lock and returns it as read from there. `Ok(None)`
    /// when nothing claimable is left.
    pub fn claim(
        &mut self,
        layout: &Layout,
        index: &mut QueueIndex,
        tier: impl Fn(&QueueEntry) -> Option<u8>,
    ) -> Result<Option<Claimed>, QueueError> {
        self.claim_within(layout, index, &BTreeMap::new(), Utc::now(), tier)
    }

    /// [`QueueLock::claim`] under rig-wide concurrency groups: a task of a group
    /// that already has `limits[group]` tasks in `processing/` is not claimed. The
    /// count is taken under the lock, so no two workers can both take the last slot.
    /// Nor is a task of a cancelled batch (requests to the brain, named `@...`, are
    /// not a batch's tasks and stay claimable).
    pub fn claim_within(
        &mut self,
        layout: &Layout,
        index: &mut QueueIndex,
        limits: &BTreeMap<String, u32>,
        now: DateTime<Utc>,
        tier: impl Fn(&QueueEntry) -> Option<u8>,
    ) -> Result<Option<Claimed>, QueueError> {
        let queue = layout.dir(TaskDir::Queue);
        let processing = layout.dir(TaskDir::Processing);
        let _guard = self
            .lock
            .write()
            .map_err(|e| QueueError::io("lock", &self.path, e))?;
        let mut full = full_groups_now(layout, index, limits, &self.matches)?;
        self.rate_held = rate_held_now(layout, index, &self.rates, now);
        full.extend(self.rate_held.iter().map(|h| endpoint_group(&h.endpoint)));
        self.mem_room = self
            .memory
            .as_ref()
            .and_then(|(min_free, meminfo)| mem_room_now(layout, index, *min_free, meminfo));
        let room = self.mem_room;
        let held = std::cell::Cell::new(None::<u64>);
        self.markers.refresh()?;
        let markers = &self.markers;
        let tier = |e: &QueueEntry| {
            match admissible(e, &full, room) {
                Ok(()) => {}
                Err(Refusal::GroupFull) => return None,
                Err(Refusal::NoRoom) => {
                    // Only what this worker could run otherwise counts as held.
                    if tier(e).is_some() {
                        held.set(held.get().min(e.mem_mb).or(e.mem_mb));
                    }
                    return None;
                }
            }
            // Live only: the simulator cancels nothing, so it has no markers.
            if !markers.is_empty() && of_cancelled_batch(markers, &e.file_name) {
                return None;
            }
            tier(e)
        };
        loop {
            let best = index.best(now, tier);
            self.mem_held = held.get();
            let Some(entry) = best else {
                return Ok(None);
            };
            let name = entry.file_name.clone();
            let rated = entry
                .endpoint
                .as_ref()
                .and_then(|e| Some((e.clone(), *self.rates.get(e)?)));
            index.forget(&name);
            let from = queue.join(&name);
            let to = processing.join(&name);
            match std::fs::rename(&from, &to) {
                Ok(()) => {
                    if let Some((endpoint, limit)) = rated {
                        note_start(layout, &endpoint, limit, now);
                    }
                    return Ok(Some(Claimed {
                        file_name: name,
                        path: to,
                    }));
                }
                // Another worker (or the user) took it first: try the next one.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(QueueError::io("claim", &from, e)),
            }
        }
    }
}

/// Whether a queue file is a task of a batch with a cancellation marker. Called for
/// every queued file a claim looks at while some batch is cancelled, so the batch is
/// cut out of the name (`pRR-SSSSSSSS-<batch>-<name>`) without decoding it.
fn of_cancelled_batch(markers: &CancelMarkers, file_name: &str) -> bool {
    let mut parts = file_name.splitn(4, '-');
    let (_, _, Some(batch), Some(name)) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !crate::action::is_request(name) && markers.contains(batch)
}

/// The endpoints of `rates` at their limit now. Reads only the files of
/// endpoints with a task in the queue.
fn rate_held_now(
    layout: &Layout,
    index: &QueueIndex,
    rates: &BTreeMap<String, u32>,
    now: DateTime<Utc>,
) -> Vec<RateHold> {
    if rates.is_empty() {
        return Vec::new();
    }
    let queued: BTreeSet<&str> = index
        .entries()
        .filter_map(|e| e.endpoint.as_deref())
        .filter(|e| rates.contains_key(*e))
        .collect();
    let wanted: BTreeMap<String, u32> = rates
        .iter()
        .filter(|(e, _)| queued.contains(e.as_str()))
        .map(|(e, n)| (e.clone(), *n))
        .collect();
    rate::holds(layout, &wanted, now)
}

/// Counts a start of `endpoint` (the claim is made: a failure to write it is
/// logged, and the task runs).
fn note_start(layout: &Layout, endpoint: &str, limit: u32, now: DateTime<Utc>) {
    if let Err(e) = rate::record_start(layout, endpoint, limit, now) {
        tracing::warn!(
            "endpoint '{endpoint}': its start is not counted for requests_per_minute: {e}"
        );
    }
}

/// The RAM free for a reservation now ([`crate::memory::room_mb`]), the holders
/// being the running tasks and live gates with `mem_mb`
/// ([`crate::memory::holders_now`]). `None` (nothing held back) when no queued task
/// has `mem_mb` (nothing is read then) or `MemAvailable` cannot be read.
fn mem_room_now(
    layout: &Layout,
    index: &QueueIndex,
    min_free_mb: u64,
    meminfo: &Path,
) -> Option<u64> {
    if index.reserving == 0 {
        return None;
    }
    let available = crate::memory::mem_available_mb(meminfo)?;
    let holders = crate::memory::holders_now(layout);
    Some(crate::memory::room_mb(available, min_free_mb, &holders))
}

/// The groups at their limit now, from the tasks in `processing/`, the live gates
/// and the processes matching a group's pattern ([`crate::holders`]). Reads nothing
/// when no queued task belongs to a limited group.
fn full_groups_now(
    layout: &Layout,
    index: &QueueIndex,
    limits: &BTreeMap<String, u32>,
    matches: &BTreeMap<String, regex::Regex>,
) -> Result<BTreeSet<String>, QueueError> {
    if limits.is_empty() {
        return Ok(BTreeSet::new());
    }
    let wanted = index.entries().any(|e| e.limited(limits));
    if !wanted {
        return Ok(BTreeSet::new());
    }
    let holders = crate::holders::group_holders(layout, matches)?;
    Ok(full_groups(
        holders.iter().map(|h| h.group.as_str()),
        limits,
    ))
}

/// The concurrency groups at their limit: those with at least `limits[group]`
/// tasks among `running` (each group a running task holds, as
/// [`crate::task::held_groups`] names them: one entry per task and group).
/// The claim lock counts `processing/` with it; the simulator (through
/// `rigmind_decide::claim`) its running tasks.
pub fn full_groups<'a>(
    running: impl IntoIterator<Item = &'a str>,
    limits: &BTreeMap<String, u32>,
) -> BTreeSet<String> {
    let mut count: BTreeMap<&str, u32> = BTreeMap::new();
    for g in running {
        *count.entry(g).or_default() += 1;
    }
    limits
        .iter()
        .filter(|(g, limit)| count.get(g.as_str()).copied().unwrap_or(0) >= **limit)
        .map(|(g, _)| g.clone())
        .collect()
}

/// Why a queued task may not start now, whatever the claim rule says of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A concurrency group it would hold ([`crate::task::held_groups`]) is full.
    GroupFull,
    /// Its `mem_mb` does not fit the RAM free for reservations
    /// ([`crate::memory::fits`]).
    NoRoom,
}

/// Whether `e` may start now as far as the rig's shared limits go: none of the
/// groups it would hold is in `full` (from [`full_groups`]; the claim lock adds
/// the endpoints held by `requests_per_minute`), and its memory reservation fits
/// `room_mb` (`None`: memory holds nothing back). Checked in this order, before
/// the claim rule (`rigmind_decide::claim::tier`), by the claim lock and the
/// simulator alike. The lock also skips a cancelled batch's tasks; that check is
/// not here because the simulator cancels nothing.
pub fn admissible(
    e: &QueueEntry,
    full: &BTreeSet<String>,
    room_mb: Option<u64>,
) -> Result<(), Refusal> {
    if e.in_full_group(full) {
        return Err(Refusal::GroupFull);
    }
    if !crate::memory::fits(e.mem_mb, room_mb) {
        return Err(Refusal::NoRoom);
    }
    Ok(())
}

/// A task just renamed into `processing/`; read it with [`TaskFile::read`].
#[derive(Debug, Clone)]
pub struct Claimed {
    pub file_name: String,
    pub path: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsio::Sync;

    fn put(layout: &Layout, name: &str, class: TaskClass, prio: u8, seq: u64) -> String {
        let mut t = TaskFile::new("b1", name, class);
        t.priority = prio;
        t.seq = seq;
        t.status = crate::TaskStatus::Queued;
        t.write_to(&layout.dir(TaskDir::Queue), Sync::None).unwrap();
        t.file_name()
    }

    /// The task in `processing/` whose file name holds `part` is done: its file goes.
    fn finish(layout: &Layout, part: &str) {
        let running = fsio::list_names(&layout.dir(TaskDir::Processing)).unwrap();
        let file = running.iter().find(|n| n.contains(part)).unwrap();
        std::fs::remove_file(layout.dir(TaskDir::Processing).join(file)).unwrap();
    }

    #[test]
    fn admissible_refuses_a_full_group_or_endpoint_group_then_a_reservation_too_big() {
        let mut t = TaskFile::new("b1", "ask", TaskClass::Llm);
        t.group = Some("gpu-heavy".into());
        t.endpoint = Some("claude".into());
        t.mem_mb = Some(500);
        let held: Vec<String> = t.held_groups().collect();
        assert_eq!(held, ["endpoint:claude", "gpu-heavy"]);
        let e = QueueEntry::from_task(&t.file_name(), &t);
        let full = |g: &[&str]| g.iter().map(|g| g.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(admissible(&e, &full(&[]), None), Ok(()));
        assert_eq!(admissible(&e, &full(&["other"]), Some(500)), Ok(()));
        assert_eq!(
            admissible(&e, &full(&["gpu-heavy"]), None),
            Err(Refusal::GroupFull)
        );
        assert_eq!(
            admissible(&e, &full(&["endpoint:claude"]), None),
            Err(Refusal::GroupFull)
        );
        // The group is checked first: a full group with no room says the group.
        assert_eq!(
            admissible(&e, &full(&["gpu-heavy"]), Some(0)),
            Err(Refusal::GroupFull)
        );
        assert_eq!(admissible(&e, &full(&[]), Some(499)), Err(Refusal::NoRoom));
    }

    #[test]
    fn claims_by_tier_then_priority_then_age_and_never_twice() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.ensure().unwrap();
        let old_cpu = put(&layout, "a", TaskClass::Cpu, 5, 1);
        let new_cpu = put(&layout, "b", TaskClass::Cpu, 5, 2);
        let urgent_cpu = put(&layout, "c", TaskClass::Cpu, 8, 3);
        let script = put(&layout, "d", TaskClass::Script, 9, 4);
        std::fs::write(layout.dir(TaskDir::Queue).join("junk.json"), b"{").unwrap();

        let mut index = QueueIndex::default();
        index.rescan(&layout).unwrap();
        assert_eq!(index.len(), 4);
        let mut lock = QueueLock::open(&layout).unwrap();
        // A worker that prefers cpu and can also run script work.
        let tier = |e: &QueueEntry| match e.task_class {
            Some(TaskClass::Cpu) => Some(1),
            Some(TaskClass::Script) => Some(2),
            _ => None,
        };
        let order: Vec<String> = std::iter::from_fn(|| {
            lock.claim(&layout, &mut index, tier)
                .unwrap()
                .map(|c| c.file_name)
        })
        .collect();
        assert_eq!(order, vec![urgent_cpu, old_cpu, new_cpu, script]);
        assert_eq!(
            fsio::list_names(&layout.dir(TaskDir::Queue)).unwrap(),
            vec!["junk.json"]
        );
    }

    #[test]
    fn an_old_low_priority_task_overtakes_fresh_urgent_ones_with_aging() {
        let t0 = crate::time::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        let task = |name: &str, prio: u8, seq: u64, age_secs: i64| {
            let mut t = TaskFile::new("b1", name, TaskClass::Cpu);
            (t.priority, t.seq, t.status) = (prio, seq, crate::TaskStatus::Queued);
            t.released_by = Some("brain".into());
            t.created_at = Some(t0 - chrono::Duration::seconds(age_secs));
            t
        };
        let any = |_: &QueueEntry| Some(1);
        let mut index = QueueIndex::with_aging(Aging::new(300.0));
        let low = task("low", 1, 1, 1700);
        index.insert(&low.file_name(), &low);
        for i in 0..50 {
            let high = task(&format!("high{i}"), 7, 2 + i, 0);
            index.insert(&high.file_name(), &high);
        }
        // 1,700 s: 5 levels, priority 6 < 7.
        assert_ne!(index.best(t0, any).unwrap().file_name, low.file_name());
        // 1,800 s: priority 7, and older than the fresh ones.
        let later = t0 + chrono::Duration::seconds(100);
        assert_eq!(index.best(later, any).unwrap().file_name, low.file_name());
        // Off: the written order.
        let mut off = QueueIndex::default();
        off.insert(&low.file_name(), &low);
        let high = task("high", 7, 2, 0);
        off.insert(&high.file_name(), &high);
        assert_eq!(off.best(later, any).unwrap().file_name, high.file_name());
        // Forgetting keeps the creation times right.
        index.forget(&low.file_name());
        assert_eq!(index.created.values().sum::<usize>(), 50);
    }

    #[test]
    fn a_rescan_reads_again_a_task_not_let_in_yet() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.ensure().unwrap();
        let mut t = TaskFile::new("b", "hand", TaskClass::Cpu);
        t.status = crate::TaskStatus::Queued;
        let path = t
            .write_to(&layout.dir(TaskDir::Queue), fsio::Sync::None)
            .unwrap();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let mut index = QueueIndex::default();
        index.rescan(&layout).unwrap();
        assert!(!index.get(&name).unwrap().released);
        // The brain lets it in by rewriting the file; the event is lost.
        t.let_in();
        t.write_to(&layout.dir(TaskDir::Queue), fsio::Sync::None)
            .unwrap();
        index.rescan(&layout).unwrap();
        assert!(
            index.get(&name).unwrap().released,
            "the stamp was never read"
        );
    }

    #[test]
    fn a_task_taken_by_another_worker_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.ensure().unwrap();
        let first = put(&layout, "a", TaskClass::Cpu, 5, 1);
        let second = put(&layout, "b", TaskClass::Cpu, 5, 2);
        let mut index = QueueIndex::default();
        index.rescan(&layout).unwrap();
        // Someone else claims the first one behind this worker's back.
        std::fs::remove_file(layout.dir(TaskDir::Queue).join(&first)).unwrap();
        let mut lock = QueueLock::open(&layout).unwrap();
        let got = lock
            .claim(&layout, &mut index, |_| Some(1))
            .unwrap()
            .unwrap();
        assert_eq!(got.file_name, second);
        assert!(lock
            .claim(&layout, &mut index, |_| Some(1))
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_task_of_a_cancelled_batch_is_not_claimed() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.ensure().unwrap();
        let mut other = TaskFile::new("b2", "other", TaskClass::Cpu);
        other.status = crate::TaskStatus::Queued;
        other.priority = 1;
        let other = other
            .write_to(&layout.dir(TaskDir::Queue), Sync::None)
            .unwrap();
        put(&layout, "a", TaskClass::Cpu, 9, 1);
        let mut index = QueueIndex::default();
        index.rescan(&layout).unwrap();
        let mut lock = QueueLock::open(&layout).unwrap();
        // The lock has looked at the (empty) marker directory before the cancel.
        assert!(lock
            .claim(&layout, &mut QueueIndex::default(), |_| Some(1))
            .unwrap()
            .is_none());
        crate::cancel::write_marker(&layout, "b1", "test").unwrap();
        let got = lock
            .claim(&layout, &mut index, |_| Some(1))
            .unwrap()
            .unwrap();
        assert_eq!(
            Some(got.file_name.as_str()),
            other.file_name().and_then(|n| n.to_str())
        );
        assert!(lock
            .claim(&layout, &mut index, |_| Some(1))
            .unwrap()
            .is_none());
        assert_eq!(index.len(), 1, "the cancelled task stays known, unclaimed");
    }

    #[test]
    fn a_full_group_is_not_claimed_until_its_task_leaves_processing() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.ensure().unwrap();
        for (i, name) in ["w1", "w2", "other"].iter().enumerate() {
            let mut t = TaskFile::new("b1", name, TaskClass::Script);
            t.status = crate::TaskStatus::Queued;
            t.seq = i as u64;
            t.group = (*name != "other").then(|| "whisper_large".to_string());
            t.write_to(&layout.dir(TaskDir::Queue), Sync::None).unwrap();
        }
        let limits = BTreeMap::from([("whisper_large".to_string(), 1)]);
        let mut index = QueueIndex::default();
        index.rescan(&layout).unwrap();
        let mut lock = QueueLock::open(&layout).unwrap();
        let mut take = |index: &mut QueueIndex| {
            lock.claim_within(&layout, index, &limits, Utc::now(), |_| Some(1))
                .unwrap()
                .map(|c| TaskName::parse(&c.file_name).unwrap().name)
        };
        assert_eq!(take(&mut index).as_deref(), Some("w1"));
        assert_eq!(
            take(&mut index).as_deref(),
            Some("other"),
            "w2 waits: group full"
        );
        assert_eq!(take(&mut index), None);
        finish(&layout, "-w1");
        index.rescan(&layout).unwrap();
        assert_eq!(take(&mut index).as_deref(), Some("w2"));
    }

    #[test]
    fn a_reservation_that_would_not_fit_waits_until_the_holder_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.ensure().unwrap();
        // 12 GB available, 1 GB kept free: one 10 GB task fits, two do not.
        let meminfo = dir.path().join("meminfo");
        std::fs::write(
            &meminfo,
            "MemTotal: 16000000 kB\nMemAvailable: 12582912 kB\n",
        )
        .unwrap();
        for (i, (name, mem)) in [
            ("big1", Some(10_240)),
            ("big2", Some(10_240)),
            ("small", None),
        ]
        .into_iter()
        .enumerate()
        {
            let mut t = TaskFile::new("b1", name, TaskClass::Cpu);
            t.status = crate::TaskStatus::Queued;
            t.seq = i as u64;
            t.mem_mb = mem;
            t.write_to(&layout.dir(TaskDir::Queue), Sync::None).unwrap();
        }
        let mut index = QueueIndex::default();
        index.rescan(&layout).unwrap();
        let mut lock = QueueLock::open(&layout)
            .unwrap()
            .with_memory(1024, meminfo.clone());
        let mut take = |index: &mut QueueIndex| {
            lock.claim_within(&layout, index, &BTreeMap::new(), Utc::now(), |_| Some(1))
                .unwrap()
                .map(|c| TaskName::parse(&c.file_name).unwrap().name)
        };
        assert_eq!(take(&mut index).as_deref(), Some("big1"));
        assert_eq!(take(&mut index).as_deref(), Some("small"), "big2 waits");
        assert_eq!(take(&mut index), None);
        // big1 is done: its reservation is gone, big2 fits.
        finish(&layout, "-big1");
        index.rescan(&layout).unwrap();
        assert_eq!(take(&mut index).as_deref(), Some("big2"));
    }

    #[test]
    fn an_endpoint_at_its_rate_limit_is_not_claimed_though_its_tasks_are_done() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.ensure().unwrap();
        for (i, name) in ["e1", "e2", "e3", "other"].iter().enumerate() {
            let mut t = TaskFile::new("b1", name, TaskClass::Llm);
            t.status = crate::TaskStatus::Queued;
            t.seq = i as u64;
            t.endpoint = Some(if *name == "other" { "free" } else { "api" }.into());
            t.write_to(&layout.dir(TaskDir::Queue), Sync::None).unwrap();
        }
        let mut index = QueueIndex::default();
        index.rescan(&layout).unwrap();
        let rates = BTreeMap::from([("api".to_string(), 2)]);
        let mut lock = QueueLock::open(&layout).unwrap().with_rates(rates);
        let mut names = Vec::new();
        while let Some(c) = lock
            .claim_within(&layout, &mut index, &BTreeMap::new(), Utc::now(), |_| {
                Some(1)
            })
            .unwrap()
        {
            // Each task is done at once: only the rate holds the third back.
            std::fs::remove_file(&c.path).unwrap();
            names.push(TaskName::parse(&c.file_name).unwrap().name);
        }
        assert_eq!(names, ["e1", "e2", "other"]);
        let held = lock.rate_held();
        assert_eq!(held.len(), 1);
        assert_eq!((held[0].endpoint.as_str(), held[0].starts), ("api", 2));
        assert_eq!(crate::rate::read(&layout, "api").len(), 2);
    }
}
