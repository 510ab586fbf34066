//! Where a lock's callbacks go.
//!
//! The slot and waiter core (`slots`, `dispatch`) delivers three events
//! of a lock: its completions, its blocking callbacks and its loss. A lock
//! asked for with Rust closures ([`Lockspace::request`](crate::Lockspace::request),
//! [`LockRequest::on_blocking`](crate::LockRequest::on_blocking),
//! [`LockRequest::on_lost`](crate::LockRequest::on_lost)) has them run
//! its closures. A lock asked for with a [`Sink`]
//! ([`Lockspace::request_with_sink`](crate::Lockspace::request_with_sink))
//! has them delivered to it instead: that is how the C ABI's
//! `(astaddr, astarg, lksb*)` is served, with no change to the core.

use std::sync::Arc;

use dlm_proto::mode::LockMode;
use dlm_proto::status::Completion;

use super::request::{LockId, LostReason};

/// A receiver of one lock's callbacks (for the C ABI crate; Rust programs
/// use closures).
///
/// Its methods run where every callback runs (see the crate docs): on the
/// event-loop thread, in [`Lockspace::dispatch`](crate::Lockspace::dispatch),
/// or inline in a waiting call; never with a lock of the client held, so
/// they may call back into the lockspace. Unlike a closure, which runs on
/// one thread at a time, a sink may see a blocking callback on one thread
/// while a completion runs on another: it is `Sync` and takes `&self`.
#[doc(hidden)]
pub trait Sink: Send + Sync + 'static {
    /// A completion of the lock's request, conversion, unlock or cancel.
    /// After the last one (the lock has ended: `completion.status` is
    /// `Unlocked`, or a request that was never granted failed) nothing
    /// more is delivered.
    fn completion(&self, id: LockId, completion: &Completion);

    /// Another request is blocked by this lock, in `mode`. Only delivered
    /// if [`wants_blocking`](Self::wants_blocking) said yes.
    fn blocking(&self, id: LockId, mode: LockMode);

    /// The lock, once granted, was lost while held.
    fn lost(&self, id: LockId, reason: LostReason);

    /// Whether blocking callbacks are wanted (the DLM queues none
    /// otherwise); asked once per request or conversion.
    fn wants_blocking(&self) -> bool;
}

/// A lock's callbacks as the core keeps them: a shared [`Sink`].
pub(crate) type SharedSink = Arc<dyn Sink>;
