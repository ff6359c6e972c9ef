//! A claimed task file that the root's sharing rules refuse is moved aside, not
//! run ([`refuse_claimed`]): both the worker's loop and its endpoint lane check
//! each task they claim.

use rigmind_queue::Layout;

/// Moves a claimed task file that the root's sharing rules refuse (writable by
/// others; in a locked-down root, owned by someone outside its group) into
/// `tasks/rejected/` instead of running it; says whether it did.
pub(crate) fn refuse_claimed(layout: &Layout, worker: &str, path: &std::path::Path) -> bool {
    let Some(reason) = rigmind_queue::access::refusal_at(layout, path) else {
        return false;
    };
    match rigmind_queue::quarantine::quarantine(layout, path) {
        Ok(to) => {
            tracing::warn!(worker = %worker, "{}: {reason}; not run, moved to {}", path.display(), to.display())
        }
        Err(e) => {
            tracing::error!(worker = %worker, "{}: {reason}; not run, and it could not be moved aside: {e}", path.display())
        }
    }
    true
}
