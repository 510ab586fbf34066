//! The query API's records: lockspaces and locks, as `dlmd` reports them
//! (JSON on the wire) and as `dlm ls` / `dlm locks` print them.

use serde::{Deserialize, Serialize};

use crate::error::Errno;

/// One lockspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockspaceInfo {
    /// Name (non-UTF-8 bytes escaped as `\xNN`).
    pub name: String,
    /// Minor (device number or daemon id).
    pub minor: u32,
    /// Creates not yet released.
    pub create_count: u32,
    /// Access mode.
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Locks that exist in it.
    pub locks: usize,
    /// Open handles.
    pub connections: usize,
}

/// One lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// Lock id.
    pub lkid: u32,
    /// Resource name, escaped for printing.
    pub resource: String,
    /// Resource name in hex (it is binary).
    pub resource_hex: String,
    /// Granted mode (`NL`..`EX`), if any.
    pub granted: Option<String>,
    /// Requested mode, while a request or conversion waits.
    pub requested: Option<String>,
    /// `granted`, `converting`, `waiting`, or none for an ended lock.
    pub queue: Option<String>,
    /// Pid of the owner's last request.
    pub pid: u32,
    /// Whether the lock is an orphan.
    pub orphan: bool,
}

/// Parse a JSON reply body.
pub fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Errno> {
    serde_json::from_slice(body).map_err(|e| {
        log::warn!("bad query reply: {e}");
        Errno::EPROTO
    })
}
