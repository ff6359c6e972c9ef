//! Whether a `rigmind gate` may start its command now: the same concurrency
//! groups the workers claim under (counted by `rigmind_queue::holders` under the
//! claim lock), the safety gates of `[safety]`, and the RAM it asks for. Pure: the
//! CLI gathers the facts and calls this, and tests call it on made-up facts.

use std::collections::BTreeMap;

use rigmind_queue::claim::full_groups;
use rigmind_queue::holders::GroupHolder;
use rigmind_queue::memory::{room_mb, Reservation};

/// What a gate asks for.
#[derive(Debug, Clone, Default)]
pub struct GateAsk {
    /// The group whose slot it takes.
    pub group: Option<String>,
    /// The RAM its command needs (`--mem-mb`).
    pub mem_mb: Option<u64>,
}

/// What the gate found, under the claim lock.
#[derive(Debug, Clone, Default)]
pub struct GateFacts {
    /// rig.toml's `[groups]` slots.
    pub limits: BTreeMap<String, u32>,
    /// Every slot taken now.
    pub holders: Vec<GroupHolder>,
    /// The safety gates violated now (`rigmind_gpu::safety_violations`).
    pub safety: Vec<String>,
    /// The host's available RAM (`MemAvailable`); None when it could not be read.
    pub ram_available_mb: Option<u64>,
    /// `[safety] min_free_ram_mb`.
    pub min_free_ram_mb: u64,
    /// The reservations held now: running tasks and other live gates with
    /// `mem_mb` (`rigmind_queue::memory::holders_now`).
    pub reserved: Vec<Reservation>,
}

/// Why the gate may not start now, one reason per line; empty: it may.
pub fn refusals(ask: &GateAsk, facts: &GateFacts) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(g) = &ask.group {
        let full = full_groups(
            facts.holders.iter().map(|h| h.group.as_str()),
            &facts.limits,
        );
        if full.contains(g) {
            let held: Vec<String> = facts
                .holders
                .iter()
                .filter(|h| &h.group == g)
                .map(|h| h.holder.to_string())
                .collect();
            out.push(format!(
                "group {g}: {} of {} slots taken: {}",
                held.len(),
                facts.limits.get(g).copied().unwrap_or(0),
                held.join("; ")
            ));
        }
    }
    out.extend(facts.safety.iter().cloned());
    if let (Some(need), Some(avail)) = (ask.mem_mb, facts.ram_available_mb) {
        out.extend(memory_refusal(
            need,
            avail,
            facts.min_free_ram_mb,
            &facts.reserved,
        ));
    }
    out
}

/// Whether `need_mb` of RAM fits: the host's available RAM, less `[safety]
/// min_free_ram_mb`, less what the holders reserved and have not touched yet,
/// must cover it: the arithmetic of the workers' claims
/// (`rigmind_queue::memory::room_mb`). `None`: it fits; else the reason. Pure.
pub fn memory_refusal(
    need_mb: u64,
    available_mb: u64,
    min_free_ram_mb: u64,
    holders: &[Reservation],
) -> Option<String> {
    let room = room_mb(available_mb, min_free_ram_mb, holders);
    let untouched: u64 = holders.iter().map(Reservation::untouched_mb).sum();
    (need_mb > room).then(|| {
        format!(
            "RAM: needs {need_mb} MB, {room} MB free for it (available {available_mb} - min_free_ram_mb {min_free_ram_mb} - reserved and not yet used by others {untouched})"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rigmind_queue::holders::Holder;

    fn facts(holders: usize) -> GateFacts {
        GateFacts {
            limits: BTreeMap::from([("wl".to_string(), 1)]),
            holders: (0..holders)
                .map(|i| GroupHolder {
                    group: "wl".into(),
                    holder: Holder::Process {
                        pid: 100 + i as u32,
                        cmdline: "whisper-large 30".into(),
                    },
                })
                .collect(),
            ram_available_mb: Some(12_000),
            min_free_ram_mb: 2048,
            ..GateFacts::default()
        }
    }

    #[test]
    fn a_free_slot_and_room_start_at_once() {
        let ask = GateAsk {
            group: Some("wl".into()),
            mem_mb: Some(9000),
        };
        assert!(refusals(&ask, &facts(0)).is_empty());
    }

    #[test]
    fn a_full_group_names_its_holders() {
        let ask = GateAsk {
            group: Some("wl".into()),
            mem_mb: None,
        };
        assert_eq!(
            refusals(&ask, &facts(1)),
            ["group wl: 1 of 1 slots taken: process 100 (whisper-large 30)"]
        );
        // A group without a limit, or no group: nothing to wait for.
        let other = GateAsk {
            group: Some("other".into()),
            mem_mb: None,
        };
        assert!(refusals(&other, &facts(3)).is_empty());
    }

    #[test]
    fn memory_counts_the_margin_and_the_other_reservations() {
        let held = |mem_mb, used_mb| Reservation { mem_mb, used_mb };
        assert_eq!(memory_refusal(9952, 12_000, 2048, &[]), None);
        // What a holder already uses is gone from MemAvailable: only the rest counts.
        let why = memory_refusal(10_000, 12_000, 2048, &[held(500, 0), held(800, 300)]).unwrap();
        assert_eq!(
            why,
            "RAM: needs 10000 MB, 8952 MB free for it (available 12000 - min_free_ram_mb 2048 - reserved and not yet used by others 1000)"
        );
        assert!(memory_refusal(1, 1000, 2048, &[]).is_some());
        let mut f = facts(0);
        f.safety = vec!["CPU at 97 C > max_cpu_temp_c 90".into()];
        f.reserved = vec![Reservation {
            mem_mb: 4000,
            used_mb: 0,
        }];
        let ask = GateAsk {
            group: None,
            mem_mb: Some(8000),
        };
        let r = refusals(&ask, &f);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[0], "CPU at 97 C > max_cpu_temp_c 90");
        assert!(r[1].starts_with("RAM: needs 8000 MB"), "{r:?}");
    }
}
