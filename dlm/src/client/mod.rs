//! The client API: lockspaces and locks over either backend (the crate's
//! front page describes it).
//!
//! | module | job |
//! |---|---|
//! | `dlm` | [`Dlm`] and [`DlmBuilder`]: choosing the backend, the control device |
//! | `raw` | [`RawDevice`]: the device at the level of `write()` and `read()` |
//! | `request` | [`LockRequest`], [`LockId`], [`Outcome`], [`LostReason`] and the callback types |
//! | `transport` | the one seam between the backends: the kernel device and the `dlmd` socket |
//! | `slots` | the slot and token table: what each lock is and holds |
//! | `sink` | where a lock's callbacks go: Rust closures, or a [`Sink`] |
//! | `dispatch` | taking in callback records: a record's effect on its slot, and its callbacks |
//! | `wait` | waiting calls: the waiter/reader protocol |
//! | `lockspace` | [`Lockspace`]: requests, conversions, unlocks, `dispatch()` |
//! | `purge` | `dlm_ls_purge()`, and what a purge of this handle's own locks makes of their slots |
//! | `event_loop` | the event-loop thread and the `mio` [`Source`](mio::event::Source) |
//! | `lock` | [`Lock`], a granted lock |
//! | `kernel` | finding the kernel's device nodes; its best-effort queries |
//! | `replay` | lock replay onto a restarted fallback daemon |
//! | `recovery` | the [`Recovery`] callbacks; the providers of a kernel lockspace's recovery events (`single_node`: `dlm-controld --single-node`'s event socket; `cluster`: the kernel's `recover_status` and configfs, under the cluster's dlm_controld) and the thread that calls the callbacks |

mod cwait;
mod dispatch;
mod dlm;
mod event_loop;
mod kernel;
mod lock;
mod lockspace;
mod purge;
mod raw;
mod recovery;
mod replay;
pub use recovery::{Member, Recovery};
pub use replay::ReplayReport;
mod request;
mod sink;
mod slots;
mod transport;
mod wait;

use std::path::PathBuf;

use dlm_proto::error::{Error, Result};

pub use self::dlm::{Dlm, DlmBuilder, LockspaceOptions, DEFAULT_REPLAY_WAIT};
pub use lock::Lock;
pub use lockspace::Lockspace;
pub use raw::RawDevice;
pub use request::{BlockingFn, CompletionFn, LockId, LockRequest, LostFn, LostReason, Outcome};
pub use sink::Sink;
pub use slots::HeldLock;

/// Where a [`Dlm`] sends its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// The kernel DLM through `/dev/misc/dlm-control` and `dlm_<ls>`.
    Kernel,
    /// The fallback daemon `dlmd` through a Unix socket.
    Fallback,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Kernel => "kernel",
            Backend::Fallback => "fallback",
        })
    }
}

impl std::str::FromStr for Backend {
    type Err = Error;

    fn from_str(s: &str) -> Result<Backend> {
        match s {
            "kernel" => Ok(Backend::Kernel),
            "fallback" => Ok(Backend::Fallback),
            _ => Err(Error::InvalidArgument(
                "DLM_BACKEND must be \"kernel\" or \"fallback\"",
            )),
        }
    }
}

/// The kernel's control device, where it may be: `/dev/misc/dlm-control`
/// (udev's link), then `/dev/dlm-control` (devtmpfs).
pub fn kernel_control_device() -> Option<PathBuf> {
    ["/dev/misc/dlm-control", "/dev/dlm-control"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// The node of the kernel's misc device `name` (`dlm-control`, or
/// `dlm_<lockspace>`): `/dev/misc/<name>` (udev's link), then `/dev/<name>`
/// (devtmpfs). Failing both, when the kernel lists the device in
/// `/proc/misc` and we are root, the node is created in `/dev/misc`; never
/// a wait for udev. `ENOENT` when the kernel has no such device.
pub fn kernel_device_node(name: &str) -> Result<PathBuf> {
    kernel::device_node(name)
}

#[cfg(feature = "async")]
mod asynch;
#[cfg(feature = "async")]
pub use asynch::{ConvertFuture, LockFuture, UnlockFuture};
