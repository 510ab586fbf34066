//! Framing of the fallback daemon's socket protocol.
//!
//! A `dlmd` connection carries the kernel device's own records (see
//! [`records`](crate::records)) in small frames, so that one stream can play a
//! device file: a `write()` becomes a [`Kind::Write`] frame answered by a
//! [`Kind::Result`] frame with what `write()` would return, and each
//! callback the kernel would hand to `read()` arrives as a [`Kind::Ast`]
//! frame holding a `struct dlm_lock_result`.
//!
//! ```text
//! frame := len:u32le kind:u8 body[len - 1]        (1 <= len <= MAX_FRAME)
//! ```
//!
//! Every client frame gets exactly one reply frame, in order. `Ast` frames
//! are not replies: in push mode the daemon sends them as soon as the
//! callback exists (as a process that polls its fd and reads at once would
//! see them); in pull mode only in answer to [`Kind::Read`], one at a
//! time, exactly as `read()` on the device.
//!
//! | kind | from | body | reply |
//! |---|---|---|---|
//! | `Hello` | client | role:u8 (0 control, 1 lockspace), flags:u8 (bit 0 pull mode, bit 1 replay), name | `Result`: 0, or the lockspace's minor, or `-errno` |
//! | `Write` | client | the bytes of one `write()` | `Result`: its return value |
//! | `Read` | client | count:u32le (pull mode only) | `Ast`, or `Result` with `-EAGAIN` |
//! | `Version` | client | empty | `Version`: 12 bytes |
//! | `Chmod` | client | mode:u32le | `Result` (like `fchmod` on the device) |
//! | `Query` | client | what:u8 (0 lockspaces, 1 locks), name; or what 2 (a page of locks), limit:u32le, after:u32le, name; or what 3 (the daemon itself), nothing | `QueryPart`s and a `QueryReply` (JSON), or `Result` with `-errno` |
//! | `Bye` | client | empty | `Result` 0, sent once the connection's locks are released (a synchronous `close()`) |
//! | `Replay` | client | one granted lock (see [`replay`](crate::replay)), on a lockspace connection whose `Hello` had [`HELLO_REPLAY`] | `Result`: 0, or `-errno` |
//! | `ReplayDone` | client | empty, on such a connection | `Result` 0 |
//! | `Result` | daemon | value:i64le | |
//! | `Ast` | daemon | a `dlm_lock_result`, value block appended when present | |
//! | `Version` | daemon | 12 bytes | |
//! | `QueryReply` | daemon | UTF-8 JSON | |
//! | `QueryPart` | daemon | UTF-8 JSON, not the last part | |
//!
//! # How `dlmd` plays the devices
//!
//! A connection is nothing until its `Hello`. A control connection plays
//! `dlm-control`; a lockspace connection plays one open `dlm_<name>` fd:
//! one engine owner, whose locks are released (persistent ones orphaned)
//! when the connection closes for any reason, as the kernel's
//! `device_close` does. Writes are decoded and checked exactly as the
//! kernel's `device_write` does (see [`records`](crate::records)), with its
//! errnos; lock commands on a control connection and lockspace commands on
//! a lockspace connection are `EINVAL`, as on the wrong device.
//!
//! Errors that are not the kernel's, for frames that are well formed:
//!
//! | case | reply |
//! |---|---|
//! | `Write`, `Read` or `Chmod` before `Hello` | `Result` `-ENOTCONN` |
//! | a second `Hello` | `Result` `-EISCONN` |
//! | `Hello` with a body under 2 bytes, an unknown role or flag bit, a name on a control `Hello`, or an invalid lockspace name | `Result` `-EINVAL` |
//! | `Hello` for a lockspace that does not exist | `Result` `-ENOENT` |
//! | `Hello` for a lockspace whose mode does not give the peer read and write permission | `Result` `-EACCES` |
//! | `Chmod` by neither the lockspace's owner uid nor root | `Result` `-EPERM` |
//! | `Chmod` on a control connection; `Chmod` or `Read` body not 4 bytes; `Version` body not empty | `Result` `-EINVAL` |
//! | a daemon-only kind (`Result`, `Ast`, `QueryReply`, `QueryPart`) from a client | `Result` `-EPROTO` |
//!
//! A frame that breaks the framing (length 0, over [`MAX_FRAME`], unknown
//! kind byte) gets no reply: the daemon closes the connection.
//!
//! `Version` may be sent at any time, before `Hello` too. A `Read` whose
//! count is exactly 12 is the version read of the devices and is answered
//! with a `Version` frame; other counts follow `device_read`: on a control
//! connection `-EINVAL`, on a lockspace connection under 72 (52 after a
//! compat write) `-EINVAL`, nothing pending `-EAGAIN`. In push mode
//! callbacks are sent as soon as they exist, so a `Read` there finds
//! nothing. After a compat (32-bit, `is64bit == 0`) write, callbacks are
//! sent in the 52-byte compat layout, as the kernel does.
//!
//! Lockspaces have an access mode (default 0600) and an owner uid and gid,
//! those of the peer that first created them; `Hello` checks them like
//! file permission bits against the peer's `SO_PEERCRED` uid and gid and
//! its `SO_PEERGROUPS` supplementary groups (root passes). On the system
//! daemon only root may create or remove lockspaces (`-EPERM`, the
//! kernel's `CAP_SYS_ADMIN` check), and a [`QUERY_LOCKSPACES`] from a uid
//! other than root lists only the lockspaces it may open; a per-user
//! daemon closes connections from any other uid without a reply.
//!
//! A daemon that will not take a connection says so before the client
//! has said anything: one `Result` frame, then the close. Its value is
//! `-EUSERS` when the peer's uid has its quota of connections open
//! (`dlmd --max-connections-per-user`, system daemon, not root), and
//! `-EMFILE` when the daemon has its maximum open (`--max-connections`; for
//! a uid other than root, all but the slots kept for root). The client
//! reads it as the answer to its `Hello`, which no other case answers
//! with those errnos. A connection that has not completed a `Hello` within
//! `dlmd --hello-timeout` is closed without a reply.
//!
//! The last `DLM_USER_REMOVE_LOCKSPACE` of a lockspace that still has
//! lockspace connections behaves as in the kernel, which blocks the
//! remover until every fd on the lockspace is closed: the lockspace leaves
//! the name table at once (a new create makes a fresh one), open
//! connections keep working on the old one, and the `Result` of the remove
//! (0) is sent when the last of them closes. Until then the daemon handles
//! no further frame of the remover's connection.
//!
//! A `Query` is answered by `QueryPart` frames followed by one
//! `QueryReply` with the last part (a short answer is a single
//! `QueryReply`): the client concatenates the bodies, which may be cut
//! anywhere, even inside a UTF-8 character. The JSON is an array of
//! [`LockspaceInfo`] for [`QUERY_LOCKSPACES`], an array of [`LockInfo`]
//! for [`QUERY_LOCKS`], and a [`LockPage`] object for
//! [`QUERY_LOCK_PAGE`]: at most `limit` locks whose lock id is greater
//! than `after`, and whether the limit cut the list short; a
//! [`DaemonInfo`] object for [`QUERY_DAEMON`] (the daemon's version and
//! the kernel its lockspaces model; any connection may ask). A lock query
//! with an empty name on a lockspace connection asks about that
//! connection's lockspace; a named one needs the same permission as
//! `Hello` (`-EACCES`), and an unknown name is `-ENOENT`. A page query
//! with a body under 9 bytes is `-EINVAL`. Until the `QueryReply` is
//! sent, the daemon handles no further frame of the connection.
//!
//! The daemon makes an answer a part at a time, only while little of it
//! waits to be sent, so an answer that is not read costs the daemon a
//! part or two however long it is. Locks come and go between the parts:
//! the [`query`](crate::query) module says what an answer guarantees. A
//! lockspace removed before its answer is finished ends the list there.
//!
//! A client that stops reading is disconnected (its locks released as on
//! close) once more than `dlmd --max-output` bytes wait to be sent to it.
//! Every frame counts, query answers too; but an answer's parts hold at
//! most a quarter of that bound each, and the next one is made only while
//! less than a quarter of it (and under 256 KiB) waits. An answer alone
//! thus never fills more than half the bound: a client that stops
//! reading one stays connected and costs the daemon no more, and what
//! disconnects it is callbacks that pile up on top, as for any client.
//!
//! The peer's `SO_PEERCRED` pid stands for the kernel's `current->pid`:
//! it is recorded as the owner pid of the locks a connection requests,
//! and `DLM_USER_PURGE` with that pid purges the connection's own locks.
//!
//! [`LockspaceInfo`]: crate::query::LockspaceInfo
//! [`LockInfo`]: crate::query::LockInfo
//! [`LockPage`]: crate::query::LockPage
//! [`DaemonInfo`]: crate::query::DaemonInfo

use crate::error::Errno;

/// The largest frame body (kind byte included) either side accepts.
pub const MAX_FRAME: usize = 64 * 1024;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Client: say what this connection plays (control or a lockspace).
    Hello = 1,
    /// Client: one device `write()`.
    Write = 2,
    /// Client: one device `read()` (pull mode).
    Read = 3,
    /// Client or daemon: the 12-byte version read.
    Version = 4,
    /// Client: set the lockspace's access mode.
    Chmod = 5,
    /// Client: ask for lockspaces or locks.
    Query = 6,
    /// Client: close now, as `close()` on the device: release this
    /// connection's locks, answer, then hang up.
    Bye = 7,
    /// Client: one lock this connection held before the daemon restarted,
    /// to be granted again (see [`replay`](crate::replay)).
    Replay = 8,
    /// Client: this connection has replayed all its locks.
    ReplayDone = 9,
    /// Daemon: the return value of the request.
    Result = 0x81,
    /// Daemon: one callback record.
    Ast = 0x82,
    /// Daemon: the answer to a query.
    QueryReply = 0x84,
    /// Daemon: a part of a long answer to a query, more to come.
    QueryPart = 0x85,
}

impl Kind {
    /// Decode a kind byte.
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Write,
            3 => Kind::Read,
            4 => Kind::Version,
            5 => Kind::Chmod,
            6 => Kind::Query,
            7 => Kind::Bye,
            8 => Kind::Replay,
            9 => Kind::ReplayDone,
            0x81 => Kind::Result,
            0x82 => Kind::Ast,
            0x84 => Kind::QueryReply,
            0x85 => Kind::QueryPart,
            _ => return None,
        })
    }
}

/// `Hello` roles.
pub const ROLE_CONTROL: u8 = 0;
/// `Hello` roles.
pub const ROLE_LOCKSPACE: u8 = 1;
/// `Hello` flag: deliver callbacks only on `Read`.
pub const HELLO_PULL: u8 = 1;
/// `Hello` flag (lockspace role): this connection replays the locks it
/// held before the daemon restarted ([`Kind::Replay`]).
pub const HELLO_REPLAY: u8 = 2;
/// `Query` subjects.
pub const QUERY_LOCKSPACES: u8 = 0;
/// `Query` subjects.
pub const QUERY_LOCKS: u8 = 1;
/// `Query` subjects: a page of locks (see [`page_query`]).
pub const QUERY_LOCK_PAGE: u8 = 2;
/// `Query` subjects: the daemon itself, a
/// [`DaemonInfo`](crate::query::DaemonInfo) object (added with the
/// kernel models; a daemon from before answers `-EINVAL`).
pub const QUERY_DAEMON: u8 = 3;

/// The body of a [`QUERY_LOCK_PAGE`] query: at most `limit` locks of
/// lockspace `name` (empty: the connection's own) whose lock id is
/// greater than `after`.
pub fn page_query(limit: u32, after: u32, name: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(9 + name.len());
    b.push(QUERY_LOCK_PAGE);
    b.extend_from_slice(&limit.to_le_bytes());
    b.extend_from_slice(&after.to_le_bytes());
    b.extend_from_slice(name);
    b
}

/// What follows the subject byte of a [`QUERY_LOCK_PAGE`] query: limit,
/// after and name; `EINVAL` if it is too short.
pub fn parse_page_query(rest: &[u8]) -> Result<(u32, u32, &[u8]), Errno> {
    match rest {
        [l0, l1, l2, l3, a0, a1, a2, a3, name @ ..] => Ok((
            u32::from_le_bytes([*l0, *l1, *l2, *l3]),
            u32::from_le_bytes([*a0, *a1, *a2, *a3]),
            name,
        )),
        _ => Err(Errno::EINVAL),
    }
}

/// Append one frame to `out`. A body over [`MAX_FRAME`] - 1 bytes is
/// `EMSGSIZE`.
pub fn put_frame(out: &mut Vec<u8>, kind: Kind, body: &[u8]) -> Result<(), Errno> {
    let len = body.len() + 1;
    if len > MAX_FRAME {
        return Err(Errno::EMSGSIZE);
    }
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(body);
    Ok(())
}

/// Append a `Result` frame.
pub fn put_result(out: &mut Vec<u8>, value: i64) {
    // An 8-byte body always fits.
    let _ = put_frame(out, Kind::Result, &value.to_le_bytes());
}

/// Decode a `Result` body.
pub fn result_value(body: &[u8]) -> Result<i64, Errno> {
    let arr: [u8; 8] = body.try_into().map_err(|_| Errno::EPROTO)?;
    Ok(i64::from_le_bytes(arr))
}

/// Incremental frame decoder: feed it whatever `read()` returned, take
/// complete frames out. Partial frames wait for more bytes.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
}

/// A frame borrowed from a [`Decoder`].
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Its kind.
    pub kind: Kind,
    /// Its body.
    pub body: &'a [u8],
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Add bytes that arrived.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that are not yet a whole frame.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, or an
    /// error for a frame that can never be valid (zero or oversized length:
    /// `EMSGSIZE`; unknown kind: `EPROTO`). After an error the stream is
    /// out of step and must be closed.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, Errno> {
        if self.start > 0 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let avail = &self.buf[self.start..];
        if avail.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        if len == 0 || len > MAX_FRAME {
            return Err(Errno::EMSGSIZE);
        }
        if avail.len() < 4 + len {
            return Ok(None);
        }
        let kind = Kind::from_u8(avail[4]).ok_or(Errno::EPROTO)?;
        let body_start = self.start + 5;
        let body_end = self.start + 4 + len;
        self.start = body_end;
        Ok(Some(Frame {
            kind,
            body: &self.buf[body_start..body_end],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_any_split() {
        let mut out = Vec::new();
        put_frame(&mut out, Kind::Write, b"hello").unwrap();
        put_result(&mut out, -22);
        put_frame(&mut out, Kind::Version, b"").unwrap();
        for split in 0..=out.len() {
            let mut d = Decoder::new();
            d.feed(&out[..split]);
            let mut got = Vec::new();
            while let Some(f) = d.next_frame().unwrap() {
                got.push((f.kind, f.body.to_vec()));
            }
            d.feed(&out[split..]);
            while let Some(f) = d.next_frame().unwrap() {
                got.push((f.kind, f.body.to_vec()));
            }
            assert_eq!(got.len(), 3, "split at {split}");
            assert_eq!(got[0], (Kind::Write, b"hello".to_vec()));
            assert_eq!(result_value(&got[1].1), Ok(-22));
            assert_eq!(got[2], (Kind::Version, vec![]));
            assert_eq!(d.pending(), 0);
        }
    }

    #[test]
    fn page_queries_round_trip() {
        let b = page_query(10, 0x2a, b"ls");
        assert_eq!(b[0], QUERY_LOCK_PAGE);
        assert_eq!(parse_page_query(&b[1..]), Ok((10, 0x2a, &b"ls"[..])));
        assert_eq!(parse_page_query(&b[1..9]), Ok((10, 0x2a, &b""[..])));
        assert_eq!(parse_page_query(&b[1..8]), Err(Errno::EINVAL));
    }

    #[test]
    fn bad_frames_are_errors() {
        let mut d = Decoder::new();
        d.feed(&[0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(Errno::EMSGSIZE));
        let mut d = Decoder::new();
        d.feed(&((MAX_FRAME as u32 + 1).to_le_bytes()));
        assert_eq!(d.next_frame(), Err(Errno::EMSGSIZE));
        let mut d = Decoder::new();
        d.feed(&[1, 0, 0, 0, 0x7f]);
        assert_eq!(d.next_frame(), Err(Errno::EPROTO));
        assert_eq!(result_value(b"short"), Err(Errno::EPROTO));
        let mut out = Vec::new();
        assert_eq!(
            put_frame(&mut out, Kind::Write, &vec![0; MAX_FRAME]),
            Err(Errno::EMSGSIZE)
        );
    }
}
