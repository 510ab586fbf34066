//! dlm-rs: the Linux Distributed Lock Manager from Rust.
//!
//! This crate is the client: it gives Rust programs the VMS lock model of
//! the Linux DLM (six [lock modes](LockMode), conversions,
//! [lock value blocks](ValueBlock), and completion and blocking
//! callbacks) over the kernel DLM, or over the fallback daemon `dlmd` where
//! the kernel has no DLM.
//!
//! ```
//! use dlm::{Dlm, LockMode, LockRequest, LockspaceFlags, LockspaceName, Outcome, ResourceName};
//!
//! # let _daemon = dlm_testkit::PrivateDaemon::start(); // the doc examples run on a private dlmd
//! let dlm = Dlm::open()?; // the kernel if its control device exists, else dlmd
//! let ls = dlm.create_lockspace(&LockspaceName::new("app")?, LockspaceFlags::empty(), 0o600)?;
//! if let Outcome::Granted(lock) = ls.lock(LockRequest::new(ResourceName::new("disk0")?, LockMode::Ex))? {
//!     // ... the lock is held here ...
//!     lock.unlock()?;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What is here:
//! - the client: [`Dlm`] (opened with [`Dlm::open`] or [`Dlm::builder`]),
//!   its [`Lockspace`]s and their [`Lock`]s, requested with a
//!   [`LockRequest`]; [`raw`] for the device at the level of `write()` and
//!   `read()`; [`query`] for the records of lockspace and lock queries;
//! - the safe types: [`LockMode`], [`LockFlags`], [`LockspaceFlags`],
//!   [`StatusFlags`], [`ValueBlock`], [`ResourceName`], [`LockspaceName`],
//!   the completion [`Status`] and [`Completion`], and the typed
//!   [`Error`] / [`Errno`] (these come from the crate `dlm-proto`, which
//!   the client shares with `dlmd`).
//!
//! # Backends
//!
//! [`Dlm::open`] picks a backend at run time: the kernel DLM when its
//! control device exists, the fallback daemon `dlmd` otherwise
//! (`DLM_BACKEND=kernel|fallback` or [`DlmBuilder::backend`] override the
//! choice). Above the transport everything is the same: a request is
//! encoded as the device's record, written, and the callback records that
//! come back are dispatched.
//!
//! # Callbacks, threads and blocking
//!
//! Completion and blocking callbacks are Rust closures. They run
//! - on the lockspace's event-loop thread, once
//!   [`Lockspace::start_event_loop`] has started it; or
//! - on whatever thread calls [`Lockspace::dispatch`] when the lockspace's
//!   one pollable fd ([`AsFd`](std::os::fd::AsFd), on both backends) is
//!   readable: with `poll(2)`, or in your own `mio::Poll` loop
//!   ([`Lockspace`] implements [`mio::event::Source`]); or
//! - inline, on a thread blocked in a waiting call such as
//!   [`Lockspace::lock`], when no event-loop thread runs. Such a call reads
//!   its completion itself, with no thread hand-off.
//!
//! Callbacks must not block for long; they may call back into the
//! lockspace (for example to convert down after a blocking AST), even with
//! a waiting call: on the event-loop thread such a call reads the device
//! itself, since the loop is busy running the callback. Records the loop
//! had read but not yet handled are then handled after the ones the
//! nested call reads.
//!
//! No lock of the client is held while a call waits for the DLM: on the
//! fallback backend a stopped daemon holds up only the calls that wait
//! for its answers ([`Lockspace`] says which). [`Lockspace::held`] and
//! [`Lock::info`] read back what each lock holds ([`HeldLock`]).
//!
//! # Tokens, not pointers
//!
//! The kernel only echoes what it is given. The safe API gives it opaque
//! tokens (a slot number and a generation), never Rust pointers, so a
//! stale or forged record can at worst name a slot that no longer exists,
//! which is logged and ignored. A record is also matched by its lock id:
//! another opener of the lockspace may operate on one of our locks by its
//! id, and the DLM then delivers the completion to us with the *other*
//! opener's callback parameter, which may be any value, even one of our
//! tokens. Such a record goes to the lock whose id it carries, never to
//! the slot its token happens to name.
//!
//! # Lost locks
//!
//! A granted lock can end without its owner asking: another opener
//! unlocks it, or the fallback daemon died and its locks could not be
//! replayed (below). A request with [`LockRequest::on_lost`] is told at
//! once, with a [`LostReason`], where its other callbacks run.
//!
//! # When the fallback daemon dies: lock replay
//!
//! `dlmd` masters the locks, and its clients are the survivors: when a
//! lockspace's connection fails (the daemon was killed or crashed), the
//! first thread of this process that meets the failure (a call on the
//! lockspace, its event loop, a [`dispatch`](Lockspace::dispatch) after
//! its fd polled readable) reconnects, waiting up to
//! [`DlmBuilder::replay_wait`] ([`DEFAULT_REPLAY_WAIT`]) for a daemon to
//! answer (starting one if the handle auto-starts daemons), and replays
//! every granted lock under its own id, in its mode, with its flags and
//! value block (valid from a PW or EX holder; below PW it comes back
//! flagged `VALNOTVALID`). The lockspace's fd and the locks' [`LockId`]s
//! stay. Requests and conversions in flight are sent again (a request
//! not yet granted gets a new lock id, which its completion and
//! [`Lock::id`] carry); an unlock or cancel the old daemon had taken
//! completes as [`Status::Unlocked`] or [`Status::Cancelled`]. The
//! restarted daemon holds new requests for a grace period
//! (`dlmd --grace-period`) while the clients replay. A lock it refuses is
//! lost: [`LostReason::NotReplayed`], and a completion with
//! [`Status::Lost`]. With no daemon back within the wait, every lock is
//! lost ([`LostReason::ConnectionClosed`]). Orphaned `PERSISTENT` locks
//! do not survive (no client holds them).
//! [`Lockspace::generation`] counts the replays, and
//! [`Lockspace::last_replay`] says what the last one did.
//!
//! The DLM reuses lock ids at once, and a cancel reaching it after the lock
//! ended would cancel whichever lock has the id by then, even another
//! owner's. The client never sends an operation on a lock that may have
//! ended: not once its unlock or cancel is sent, not to cancel a `NOQUEUE`
//! request (decided during its own write), and operations on one lock
//! leave in the order they were decided. A [`LockId`] whose lock has ended
//! gives `ENOENT`.
//!
//! # Timeouts
//!
//! The kernel removed `DLM_LKF_TIMEOUT` in 6.2; timeouts live here: a
//! waiting call with [`LockRequest::timeout`] cancels the request when the
//! time is up. If the grant wins the race with the cancel, the lock is
//! granted and returned (a cancel of a granted lock does nothing);
//! otherwise the outcome is [`Status::TimedOut`].
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod client;
pub mod query;

pub use client::{
    kernel_control_device, kernel_device_node, Backend, BlockingFn, CompletionFn, Dlm, DlmBuilder,
    HeldLock, Lock, LockId, LockRequest, Lockspace, LockspaceOptions, LostFn, LostReason, Member,
    Outcome, Recovery, ReplayReport, Sink, DEFAULT_REPLAY_WAIT,
};
#[cfg(feature = "async")]
pub use client::{ConvertFuture, LockFuture, UnlockFuture};

pub use dlm_proto::error::{Errno, Error, Refusal, Result};
pub use dlm_proto::flags::{LockFlags, LockspaceFlags, StatusFlags};
pub use dlm_proto::lvb::{ValueBlock, USER_LVB_LEN};
pub use dlm_proto::mode::{LockMode, LvbOp};
pub use dlm_proto::name::{LockspaceName, ResourceName, LOCKSPACE_LEN, RESNAME_MAXLEN};
pub use dlm_proto::status::{Completion, Status};
pub use dlm_proto::trust::{Distrust, UntrustedSocket};
pub use dlm_proto::DEVICE_VERSION;

/// The device at the level of `write()` and `read()`: a
/// [`RawDevice`](raw::RawDevice) takes the bytes of the device's records
/// (`dlm_proto::records`) and reads back [`LockResult`](raw::LockResult)s.
pub mod raw {
    pub use crate::client::RawDevice;
    pub use dlm_proto::records::LockResult;
}
