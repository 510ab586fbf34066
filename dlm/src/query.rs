//! The records of lockspace and lock queries: what [`Dlm::lockspaces`],
//! [`Dlm::locks`] and [`Dlm::locks_with`] return, and what a lock query may
//! ask for ([`QueryOptions`]).
//!
//! A long answer is made a piece at a time while locks come and go, so it
//! is not one snapshot; [`dlm_proto::query`] says what it guarantees.
//!
//! [`Dlm::lockspaces`]: crate::Dlm::lockspaces
//! [`Dlm::locks`]: crate::Dlm::locks
//! [`Dlm::locks_with`]: crate::Dlm::locks_with

pub use dlm_proto::query::{LockInfo, LockPage, LockspaceInfo, QueryOptions};
