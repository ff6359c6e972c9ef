//! rig.toml's `[groups]`: concurrency groups, each `name = N` or a table
//! `name = { slots = N, match = "REGEX", mem_mb = M }`. A pattern makes processes
//! already running on the box (started by anything) count against the group; a
//! group's `mem_mb` is the RAM each of its tasks reserves when it does not say.
//!
//! The table's keys are read in one place, [`group`].

use std::collections::BTreeMap;

use serde::Deserialize;

/// One `[groups]` entry as the file writes it.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum RawGroup {
    /// `name = N`.
    Slots(u32),
    /// `name = { slots = N, match = "REGEX", mem_mb = M }`.
    Table(RawGroupTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGroupTable {
    slots: u32,
    #[serde(rename = "match")]
    pattern: Option<String>,
    mem_mb: Option<u64>,
}

/// The groups read: slots by name, and the patterns and memory of those that have one.
#[derive(Debug, Default)]
pub(crate) struct Groups {
    pub slots: BTreeMap<String, u32>,
    pub matches: BTreeMap<String, String>,
    pub mem_mb: BTreeMap<String, u64>,
}

/// Reads every `[groups]` entry; an error is `(line, message)`, the message
/// naming the group and what is wrong.
pub(crate) fn groups(
    raw: BTreeMap<String, toml::Spanned<RawGroup>>,
    line_of: &dyn Fn(usize) -> usize,
) -> Result<Groups, (usize, String)> {
    let mut out = Groups::default();
    for (name, g) in raw {
        let line = line_of(g.span().start);
        let (slots, pattern, mem) = group(&name, g.into_inner()).map_err(|m| (line, m))?;
        out.slots.insert(name.clone(), slots);
        if let Some(p) = pattern {
            out.matches.insert(name.clone(), p);
        }
        if let Some(m) = mem {
            out.mem_mb.insert(name, m);
        }
    }
    Ok(out)
}

/// One entry: its slots, pattern and memory, checked (a pattern must compile, a
/// memory be above 0).
fn group(name: &str, g: RawGroup) -> Result<(u32, Option<String>, Option<u64>), String> {
    match g {
        RawGroup::Slots(n) => Ok((n, None, None)),
        RawGroup::Table(t) => {
            if let Some(p) = &t.pattern {
                regex::Regex::new(p)
                    .map_err(|e| format!("groups.{name}.match: not a valid regex: {e}"))?;
            }
            if t.mem_mb == Some(0) {
                return Err(format!("groups.{name}: mem_mb must be more than 0"));
            }
            Ok((t.slots, t.pattern, t.mem_mb))
        }
    }
}
