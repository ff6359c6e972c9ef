//! What marks a request to the brain: its name (`@execute_plan`: [`REQUEST_MARK`],
//! [`is_request`]) and its task file's `action` ([`BrainAction`]). Below the task
//! file ([`crate::task`]) and the claim ([`crate::claim`]), which read them;
//! writing and running requests is [`crate::requests`].

/// The task-file `action` of a plan submission.
pub const EXECUTE_PLAN: &str = "execute_plan";
/// The task-file `action` of a cancel request of older versions (now a marker in
/// `tasks/cancel/`); one found in the queue is turned into a marker.
pub const CANCEL_BATCH: &str = "cancel_batch";
rigmind_types::open_words! {
    /// A brain-executed task's `action`. Any other word (or none) runs the task's
    /// `command` in the brain, as before actions had a type, so it is kept.
    pub enum BrainAction {
        /// A plan submission.
        ExecutePlan = "execute_plan",
        /// A cancel request of older versions.
        CancelBatch = "cancel_batch",
    }
}

/// Requests to the brain are named `@execute_plan`, `@cancel_batch.<id>`: no plan
/// task can have a name with `@`, so they are never taken for a batch's tasks.
pub const REQUEST_MARK: char = '@';

/// Whether a task's name (as read from its file name) is a request to the brain.
pub fn is_request(name: &str) -> bool {
    name.starts_with(REQUEST_MARK)
}
