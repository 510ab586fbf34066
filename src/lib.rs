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
//! - [`client`]: lockspaces and locks over the kernel DLM or the fallback
//!   daemon.
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod client;

pub use dlm_proto::records as proto;
pub use dlm_proto::{error, flags, lvb, mode, name, paths, query, status, trust, wire};

pub use dlm_proto::DEVICE_VERSION;
pub use error::{Errno, Error, Refusal, Result};
pub use flags::{LockFlags, LockspaceFlags, StatusFlags};
pub use lvb::ValueBlock;
pub use mode::LockMode;
pub use name::{LockspaceName, ResourceName};
pub use status::{Completion, Status};
