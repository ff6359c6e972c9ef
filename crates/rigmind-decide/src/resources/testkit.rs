//! Builders shared by the resource manager's tests.

pub(crate) use crate::view::testkit::{card, cfg, view, work};
// The policies' tests name these beside the view's types.
pub(crate) use crate::estimate::Estimate;
pub(crate) use rigmind_types::TaskClass;

use super::RmAction;

pub(super) fn loads(a: &[RmAction]) -> Vec<&str> {
    a.iter()
        .filter(|a| matches!(a, RmAction::Load { .. }))
        .map(|a| a.worker())
        .collect()
}

pub(super) fn unloads(a: &[RmAction]) -> Vec<&str> {
    a.iter()
        .filter(|a| matches!(a, RmAction::Unload { .. }))
        .map(|a| a.worker())
        .collect()
}

/// The reason of an unload (panics on a load).
pub(super) fn unload_reason(a: &RmAction) -> &str {
    let RmAction::Unload { reason, .. } = a else {
        panic!("not an unload: {a:?}")
    };
    reason
}
