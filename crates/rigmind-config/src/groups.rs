//! rig.toml's `[groups]`: concurrency groups, each `name = N` or a table
//! `name = { slots = N, match = "REGEX" }` whose pattern makes processes already
//! running on the box (started by anything) count against the group.
//!
//! The table's keys are read in one place, [`group`], so that keys added later
//! (a group's `mem_mb`) go beside `slots` and `match`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One `[groups]` entry as the file writes it.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum RawGroup {
    /// `name = N`.
    Slots(u32),
    /// `name = { slots = N, match = "REGEX" }`.
    Table(RawGroupTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGroupTable {
    slots: u32,
    #[serde(rename = "match")]
    pattern: Option<String>,
}

/// The groups read: slots by name, and the command-line patterns of those that have one.
#[derive(Debug, Default)]
pub(crate) struct Groups {
    pub slots: BTreeMap<String, u32>,
    pub matches: BTreeMap<String, String>,
}

/// Reads every `[groups]` entry; the error names the group and what is wrong.
pub(crate) fn groups(raw: BTreeMap<String, RawGroup>) -> Result<Groups, String> {
    let mut out = Groups::default();
    for (name, g) in raw {
        let (slots, pattern) = group(&name, g)?;
        out.slots.insert(name.clone(), slots);
        if let Some(p) = pattern {
            out.matches.insert(name, p);
        }
    }
    Ok(out)
}

/// One entry: its slots and its pattern, checked (a pattern must compile).
fn group(name: &str, g: RawGroup) -> Result<(u32, Option<String>), String> {
    match g {
        RawGroup::Slots(n) => Ok((n, None)),
        RawGroup::Table(t) => {
            if let Some(p) = &t.pattern {
                regex::Regex::new(p)
                    .map_err(|e| format!("groups.{name}.match: not a valid regex: {e}"))?;
            }
            Ok((t.slots, t.pattern))
        }
    }
}
