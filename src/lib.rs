//! dlm-rs: the Linux Distributed Lock Manager from Rust.
//!
//! This crate is the safe API of dlm-rs. It gives Rust programs the VMS
//! lock model of the Linux DLM: six [lock modes](LockMode), conversions,
//! [lock value blocks](ValueBlock), and completion and blocking callbacks.
//!
//! What is here today:
//! - the safe types: [`LockMode`], [`LockFlags`], [`LockspaceFlags`],
//!   [`StatusFlags`], [`ValueBlock`], [`ResourceName`], [`LockspaceName`],
//!   the completion [`Status`] and [`Completion`], and the typed
//!   [`Error`] / [`Errno`];
//! - [`engine`]: a pure-Rust lock engine with the kernel's exact semantics
//!   (Linux 6.1 `fs/dlm/lock.c`), which the fallback daemon hosts.
//!
//! # Example
//!
//! Two owners contend for one resource in the engine; the waiter is
//! granted when the holder unlocks.
//!
//! ```
//! use dlm::engine::{Engine, LockParams, UnlockParams, UserArgs};
//! use dlm::{LockFlags, LockMode, Status};
//!
//! let mut ls = Engine::new();
//! let (a, b) = (ls.open_owner(1), ls.open_owner(2));
//! let args = UserArgs { castaddr: 1, lksb: 1, ..Default::default() };
//!
//! let la = ls.lock(a, &LockParams::new(LockMode::Ex, b"disk0", args))?;
//! assert_eq!(ls.read(a).map(|r| r.status), Some(0));
//!
//! // A NOQUEUE request that would block completes with EAGAIN.
//! let try_b = LockParams::new(LockMode::Pr, b"disk0", args).flags(LockFlags::NOQUEUE);
//! ls.lock(b, &try_b)?;
//! let st = ls.read(b).map(|r| Status::from_kernel(r.status, false));
//! assert_eq!(st, Some(Ok(Status::WouldBlock)));
//!
//! ls.unlock(a, &UnlockParams::new(la, LockFlags::empty(), args))?;
//! let st = ls.read(a).map(|r| Status::from_kernel(r.status, false));
//! assert_eq!(st, Some(Ok(Status::Unlocked)));
//! # Ok::<(), dlm::Errno>(())
//! ```
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod client;
pub mod engine;

pub use dlm_proto::records as proto;
pub use dlm_proto::{error, flags, lvb, mode, name, paths, query, status, trust, wire};

pub use dlm_proto::DEVICE_VERSION;
pub use error::{Errno, Error, Refusal, Result};
pub use flags::{LockFlags, LockspaceFlags, StatusFlags};
pub use lvb::ValueBlock;
pub use mode::LockMode;
pub use name::{LockspaceName, ResourceName};
pub use status::{Completion, Status};
