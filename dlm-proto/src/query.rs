//! The query API's records: lockspaces and locks, as `dlmd` reports them
//! (JSON on the wire) and as `dlm ls` / `dlm locks` print them, and what
//! a lock query may ask for ([`QueryOptions`]) and answer ([`LockPage`]).
//!
//! `dlmd` makes a long answer a piece at a time, as the client reads it,
//! and locks come and go between the pieces. So an answer is not one
//! snapshot of the lockspace; what it does guarantee is this. Locks are
//! listed in increasing order of lock id, and no lock id appears twice. A
//! lock that exists from the moment the query is sent until its answer
//! has been read appears exactly once; a lock made or ended in that time
//! may appear or not. Each record is the state of its lock at one moment
//! while the answer was being made. Lockspaces are listed the same way,
//! by minor.
//!
//! With the `serde` feature the records are `Serialize` and `Deserialize`
//! (JSON on the wire), and [`parse`] reads a JSON answer.

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

#[cfg(feature = "serde")]
use crate::error::Errno;

/// One lockspace.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
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
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
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
    /// The `DLM_LKF_*` flags of the lock's last request or conversion (0
    /// from a daemon too old to say).
    #[cfg_attr(feature = "serde", serde(default))]
    pub flags: u32,
    /// The resource's value block in hex (`USER_LVB_LEN` bytes), if it
    /// has one and the backend shows it.
    #[cfg_attr(feature = "serde", serde(default))]
    pub lvb: Option<String>,
    /// The resource's master node: 0 for this node, as the kernel's
    /// debugfs says it; `None` when the backend does not say.
    #[cfg_attr(feature = "serde", serde(default))]
    pub master: Option<u32>,
    /// The resource's value-block sequence number (the kernel's
    /// `res_lvbseq`, which counts writes of the block), where the backend
    /// keeps one: the kernel does; dlmd's engine does not (`None`).
    #[cfg_attr(feature = "serde", serde(default))]
    pub lvb_seq: Option<u32>,
}

/// A page of a lockspace's locks: the answer to a lock query with
/// [`QueryOptions`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct LockPage {
    /// The locks, by lock id.
    pub locks: Vec<LockInfo>,
    /// Whether the limit cut the list short: more locks follow the last
    /// one listed.
    pub truncated: bool,
    /// How many locks had a greater lock id than the last one listed when
    /// the answer ended: those left out by the limit (0 unless
    /// `truncated`).
    pub more: usize,
}

/// The daemon itself: the answer to a [`QUERY_DAEMON`] query.
///
/// [`QUERY_DAEMON`]: crate::wire::QUERY_DAEMON
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct DaemonInfo {
    /// The daemon's program and version (`dlmd 0.1.0`).
    pub daemon: String,
    /// The kernel whose rules its lockspaces follow, as a series:
    /// `"6.1"` or `"6.12"` (`dlmd --kernel-model`).
    pub kernel_model: String,
    /// Where that model came from: `"option"` (`--kernel-model`),
    /// `"running kernel"` (the default, the running kernel being one of
    /// the two) or `"newest"` (the default on any other kernel).
    pub kernel_model_source: String,
}

/// What a lock query asks for: a limit, and where to start (for paging).
///
/// ```
/// use dlm_proto::query::QueryOptions;
/// // The first 100 locks, then the 100 after lock id 0x2a.
/// let first = QueryOptions::limit(100);
/// let next = first.after(0x2a);
/// assert_eq!((next.limit, next.after), (Some(100), 0x2a));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryOptions {
    /// At most this many locks; `None` for all of them.
    pub limit: Option<u32>,
    /// Only locks whose lock id is greater than this (0: from the first).
    /// To get the next page, pass the last lock id of the one before.
    pub after: u32,
}

impl QueryOptions {
    /// At most `n` locks, from the first.
    pub fn limit(n: u32) -> QueryOptions {
        QueryOptions {
            limit: Some(n),
            after: 0,
        }
    }

    /// The same, but only locks whose lock id is greater than `lkid`.
    pub fn after(self, lkid: u32) -> QueryOptions {
        QueryOptions {
            after: lkid,
            ..self
        }
    }

    /// Cut `locks` (any order) to what these options ask for: sorted by
    /// lock id, those after `after`, at most `limit`. For backends that
    /// get the whole list at once.
    pub fn apply(&self, mut locks: Vec<LockInfo>) -> LockPage {
        locks.retain(|l| l.lkid > self.after);
        locks.sort_by_key(|l| l.lkid);
        let limit = self.limit.map_or(usize::MAX, |n| n as usize);
        let more = locks.len().saturating_sub(limit);
        locks.truncate(limit);
        LockPage {
            locks,
            truncated: more > 0,
            more,
        }
    }
}

/// Parse a JSON reply body.
#[cfg(feature = "serde")]
pub fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Errno> {
    serde_json::from_slice(body).map_err(|e| {
        log::warn!("bad query reply: {e}");
        Errno::EPROTO
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(lkid: u32) -> LockInfo {
        LockInfo {
            lkid,
            resource: format!("r{lkid}"),
            resource_hex: String::new(),
            granted: Some("EX".into()),
            requested: None,
            queue: Some("granted".into()),
            pid: 1,
            orphan: false,
            flags: 0,
            lvb: None,
            master: None,
            lvb_seq: None,
        }
    }

    #[test]
    fn options_cut_a_whole_list_to_a_page() {
        let all = vec![lock(5), lock(1), lock(3), lock(2)];
        let ids = |p: &LockPage| p.locks.iter().map(|l| l.lkid).collect::<Vec<_>>();
        let p = QueryOptions::default().apply(all.clone());
        assert_eq!((ids(&p), p.truncated, p.more), (vec![1, 2, 3, 5], false, 0));
        let p = QueryOptions::limit(2).apply(all.clone());
        assert_eq!((ids(&p), p.truncated, p.more), (vec![1, 2], true, 2));
        let p = QueryOptions::limit(2).after(2).apply(all.clone());
        assert_eq!((ids(&p), p.truncated, p.more), (vec![3, 5], false, 0));
        let p = QueryOptions::limit(0).apply(all);
        assert_eq!((ids(&p), p.truncated, p.more), (vec![], true, 4));
    }

    #[test]
    #[cfg(feature = "serde")]
    fn a_page_is_an_object_with_its_marker() {
        let p = LockPage {
            locks: vec![lock(7)],
            truncated: true,
            more: 3,
        };
        let json = serde_json::to_string(&p).expect("JSON");
        assert!(json.starts_with("{\"locks\":[{\"lkid\":7,"), "{json}");
        assert!(json.ends_with("],\"truncated\":true,\"more\":3}"), "{json}");
        assert_eq!(parse::<LockPage>(json.as_bytes()), Ok(p));
    }

    #[test]
    #[cfg(feature = "serde")]
    fn a_lock_from_an_older_daemon_has_no_flags_lvb_or_master() {
        let old = r#"{"lkid":1,"resource":"r","resource_hex":"72","granted":"EX",
            "requested":null,"queue":"granted","pid":9,"orphan":false}"#;
        let l: LockInfo = parse(old.as_bytes()).expect("parses");
        assert_eq!((l.flags, l.lvb, l.master), (0, None, None));
    }
}
