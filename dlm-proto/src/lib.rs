//! What both sides of dlm-rs share: the client (`dlm`) and the fallback
//! daemon (`dlmd`, with the lock engine `dlm-engine`).
//!
//! - the safe types of the DLM: [`LockMode`], [`LockFlags`],
//!   [`LockspaceFlags`], [`StatusFlags`], [`ValueBlock`], [`ResourceName`],
//!   [`LockspaceName`], the completion [`Status`] and [`Completion`], and
//!   the typed [`Error`] / [`Errno`];
//! - [`records`]: the kernel device's records, byte for byte, and the
//!   callback record and user arguments the engine and the client share;
//! - [`wire`]: the framing of `dlmd`'s socket protocol;
//! - [`query`]: the records of lockspace and lock queries;
//! - [`paths`]: where the fallback daemon listens;
//! - [`trust`]: the checks that a socket is the daemon's and not another
//!   user's.
//!
//! Programs use the client crate `dlm`, which re-exports the safe types;
//! this crate is what `dlm` and `dlmd` have in common.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod error;
pub mod flags;
pub mod lvb;
pub mod mode;
pub mod name;
pub mod paths;
pub mod query;
pub mod records;
pub mod replay;
pub mod status;
pub mod trust;
pub mod wire;

pub use error::{Errno, Error, Refusal, Result};
pub use flags::{LockFlags, LockspaceFlags, StatusFlags};
pub use lvb::ValueBlock;
pub use mode::LockMode;
pub use name::{LockspaceName, ResourceName};
pub use status::{Completion, Status};

/// The DLM device interface version this crate speaks:
/// `DLM_DEVICE_VERSION_MAJOR.MINOR.PATCH` (6.0.2).
pub const DEVICE_VERSION: (u32, u32, u32) = (
    dlm_sys::DLM_DEVICE_VERSION_MAJOR,
    dlm_sys::DLM_DEVICE_VERSION_MINOR,
    dlm_sys::DLM_DEVICE_VERSION_PATCH,
);
