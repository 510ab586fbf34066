//! The controller's event socket: how the users of a lockspace learn that
//! the controller stopped and started it (to call their `recover_prep`
//! and `recover_done`), and how `dlm-controld recover` asks for such a
//! restart.
//!
//! # Where, and who may trust it
//!
//! A `SOCK_STREAM` Unix socket, `/run/dlm-controld/events.sock`
//! ([`SOCKET_NAME`] in [`Layout::run`](crate::Layout::run)). The
//! controller creates the directory with mode 0755 and refuses one that is
//! not its own or that others may write; the socket is mode 0666, since
//! connecting needs write permission and any local user of a lockspace
//! may subscribe. A client trusts the socket only if every check holds:
//! - `/run` and the directory are real directories (not symlinks), owned
//!   by root or by the client's own uid, not writable by group or others
//!   (`/run` may be if it is sticky, as `/tmp`: others can then neither
//!   replace the directory nor make one that passes the owner check);
//! - the socket is a socket owned by the directory's owner;
//! - the peer's credentials (`SO_PEERCRED`) once connected are that uid;
//! - the first line is the greeting of a version it speaks.
//!
//! # Protocol, version 1
//!
//! Lines of ASCII, each ending in `\n`. A lockspace name is sent as
//! lowercase hex of its bytes (a name may hold any byte but NUL and `/`).
//! `GEN` is the lockspace's generation as the controller counts it: 1 at
//! join, one more at each restart.
//!
//! ```text
//! controller, on accept:     dlm-controld 1
//! client:                    subscribe HEXNAME
//! controller:                ok GEN                       (or: error ERRNO TEXT, then closes)
//!   then, while the connection stays open:
//!                            stop HEXNAME GEN             control = 0 written; GEN ends:
//!                                                         call recover_prep
//!                            start HEXNAME GEN OURSLOT NODEID:SLOT[,NODEID:SLOT...]
//!                                                         control = 1 written and the kernel's
//!                                                         recovery seen done: call recover_done
//!                            gone HEXNAME                 the lockspace was removed; then closes
//! client:                    recover HEXNAME              (root only, by SO_PEERCRED)
//! controller:                publishes stop, restarts, publishes start, then
//!                            ok GEN                       (the new generation; or: error ERRNO TEXT)
//!                            and closes
//! ```
//!
//! A client sends one request per connection; anything it sends after is
//! read and dropped. An unknown or malformed request gets `error 22 ...`
//! and the connection is closed.
//!
//! # Bounds
//!
//! The controller is one thread and never blocks on a client: every
//! socket is non-blocking. A request line is at most [`MAX_LINE`] bytes;
//! at most [`MAX_QUEUED`] bytes wait to be sent to one connection, and a
//! subscriber that lets more pile up (it does not read) is disconnected,
//! which it sees as the end of the stream. At most [`MAX_CONNECTIONS`]
//! connections are open, and at most [`MAX_PER_UID`] of one uid other
//! than root; connections beyond are closed at once.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags};

/// The socket's name in the run directory.
pub const SOCKET_NAME: &str = "events.sock";
/// The protocol version this controller speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// The greeting line (without its `\n`) starts with this, then the version.
pub const GREETING: &str = "dlm-controld";
/// The longest request line accepted, `\n` included.
pub const MAX_LINE: usize = 512;
/// The most bytes that may wait to be sent to one connection.
pub const MAX_QUEUED: usize = 16 << 10;
/// The most connections open at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// The most connections of one uid other than root.
pub const MAX_PER_UID: usize = 64;

/// `name` as the protocol sends it: lowercase hex.
pub fn encode_name(name: &[u8]) -> String {
    name.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a hex-encoded name; `None` unless it is 1 to 64 bytes of
/// valid hex.
pub fn decode_name(hex: &str) -> Option<Vec<u8>> {
    if hex.is_empty() || hex.len() % 2 != 0 || hex.len() > 128 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestKind {
    /// `subscribe`: the stop and start events of a lockspace.
    Subscribe(OsString),
    /// `recover`: stop and restart a lockspace.
    Recover(OsString),
}

/// A request, with the connection it came on and the peer's uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The connection: answer with [`EventServer::subscribed`],
    /// [`EventServer::finish`] or [`EventServer::fail`].
    pub conn: u64,
    /// The peer's uid (`SO_PEERCRED`).
    pub uid: u32,
    /// What it asks.
    pub kind: RequestKind,
}

/// Parse one request line (without its `\n`).
pub fn parse_request(line: &[u8]) -> Result<RequestKind, String> {
    let line = std::str::from_utf8(line).map_err(|_| "not ASCII".to_string())?;
    let mut words = line.split(' ');
    let (verb, arg) = (words.next().unwrap_or(""), words.next());
    if words.next().is_some() {
        return Err(format!("too many words in {line:?}"));
    }
    let name = || {
        arg.and_then(decode_name)
            .map(OsString::from_vec)
            .ok_or_else(|| format!("{verb}: a lockspace name in hex is expected"))
    };
    match verb {
        "subscribe" => Ok(RequestKind::Subscribe(name()?)),
        "recover" => Ok(RequestKind::Recover(name()?)),
        _ => Err(format!("unknown request {verb:?}")),
    }
}

struct Conn {
    stream: UnixStream,
    uid: u32,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Its one request was read: later input is dropped.
    asked: bool,
    /// The lockspace it receives the events of.
    subscribed: Option<OsString>,
    /// Close once `output` is sent.
    closing: bool,
}

/// The listening socket and its connections.
pub struct EventServer {
    listener: UnixListener,
    path: PathBuf,
    conns: BTreeMap<u64, Conn>,
    next_id: u64,
}

impl std::fmt::Debug for EventServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventServer")
            .field("path", &self.path)
            .field("connections", &self.conns.len())
            .finish()
    }
}

fn uid_of_self() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn refuse(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, why)
}

/// Check that `dir` is a directory (not a symlink) owned by one of
/// `owners` and not writable by group or others (unless `sticky_ok` and
/// it has the sticky bit, as `/tmp`).
fn check_private_dir(dir: &Path, owners: &[u32], sticky_ok: bool) -> io::Result<u32> {
    let m = std::fs::symlink_metadata(dir)?;
    if !m.file_type().is_dir() {
        return Err(refuse(format!("{} is not a directory", dir.display())));
    }
    if !owners.contains(&m.uid()) {
        return Err(refuse(format!(
            "{} is owned by uid {}, not {owners:?}",
            dir.display(),
            m.uid()
        )));
    }
    if m.mode() & 0o022 != 0 && !(sticky_ok && m.mode() & 0o1000 != 0) {
        return Err(refuse(format!(
            "{} is writable by others (mode {:o})",
            dir.display(),
            m.mode() & 0o7777
        )));
    }
    Ok(m.uid())
}

impl EventServer {
    /// Create the run directory `dir` if needed (mode 0755), check it, and
    /// listen on `dir/events.sock` (mode 0666), replacing a stale socket.
    /// Refuses a directory that is not ours or that others may write.
    pub fn bind(dir: &Path) -> io::Result<EventServer> {
        match std::fs::create_dir(dir) {
            Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        check_private_dir(dir, &[uid_of_self()], false)?;
        let path = dir.join(SOCKET_NAME);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_socket() => {
                // Only one controller runs (checked at start): it is stale.
                std::fs::remove_file(&path)?;
            }
            Ok(_) => {
                return Err(refuse(format!(
                    "{} exists and is not a socket",
                    path.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        log::info!("events on {}", path.display());
        Ok(EventServer {
            listener,
            path,
            conns: BTreeMap::new(),
            next_id: 1,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The number of open connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The number of subscribers of lockspace `name`.
    pub fn subscribers(&self, name: &OsStr) -> usize {
        self.conns
            .values()
            .filter(|c| c.subscribed.as_deref() == Some(name))
            .count()
    }

    /// What to poll: the listener, then each connection (readable always,
    /// to see it close; writable while output waits). The ids say which
    /// connection each entry after the first is, for
    /// [`handle`](Self::handle).
    pub fn poll_fds(&self) -> (Vec<u64>, Vec<PollFd<'_>>) {
        let mut ids = Vec::with_capacity(self.conns.len());
        let mut fds = Vec::with_capacity(self.conns.len() + 1);
        fds.push(PollFd::new(&self.listener, PollFlags::IN));
        for (&id, c) in &self.conns {
            let mut ev = PollFlags::IN;
            if !c.output.is_empty() {
                ev |= PollFlags::OUT;
            }
            ids.push(id);
            fds.push(PollFd::new(&c.stream, ev));
        }
        (ids, fds)
    }

    /// Act on what `poll` reported (`revents` in the order of
    /// [`poll_fds`](Self::poll_fds), `ids` its ids): accept, read, send.
    /// Returns the requests that arrived complete.
    pub fn handle(&mut self, ids: &[u64], revents: &[PollFlags]) -> Vec<Request> {
        let mut out = Vec::new();
        if revents.first().is_some_and(|r| !r.is_empty()) {
            self.accept_all();
        }
        for (&id, r) in ids.iter().zip(revents.iter().skip(1)) {
            if r.is_empty() {
                continue;
            }
            if r.contains(PollFlags::OUT) {
                self.flush(id);
            }
            if r.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
                if let Some(req) = self.read(id) {
                    out.push(req);
                }
            }
        }
        out
    }

    fn accept_all(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("accept on {}: {e}", self.path.display());
                    return;
                }
            };
            let uid = match rustix::net::sockopt::socket_peercred(&stream) {
                Ok(c) => c.uid.as_raw(),
                Err(e) => {
                    log::warn!("events: no peer credentials: {e}");
                    continue;
                }
            };
            if self.conns.len() >= MAX_CONNECTIONS
                || (uid != 0 && self.conns.values().filter(|c| c.uid == uid).count() >= MAX_PER_UID)
            {
                log::warn!("events: too many connections (uid {uid}); one refused");
                continue;
            }
            if let Err(e) = stream.set_nonblocking(true) {
                log::warn!("events: {e}");
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            self.conns.insert(
                id,
                Conn {
                    stream,
                    uid,
                    input: Vec::new(),
                    output: Vec::new(),
                    asked: false,
                    subscribed: None,
                    closing: false,
                },
            );
            log::debug!("events: connection {id} from uid {uid}");
            self.send(id, &format!("{GREETING} {PROTOCOL_VERSION}\n"));
        }
    }

    fn drop_conn(&mut self, id: u64, why: &str) {
        if self.conns.remove(&id).is_some() {
            log::debug!("events: connection {id} closed: {why}");
        }
    }

    /// Read what connection `id` sent; its request once a line is in.
    fn read(&mut self, id: u64) -> Option<Request> {
        let mut buf = [0u8; 1024];
        loop {
            let c = self.conns.get_mut(&id)?;
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    self.drop_conn(id, "end of stream");
                    return None;
                }
                Ok(n) if c.asked => {
                    let _ = n; // one request per connection: the rest is dropped
                }
                Ok(n) => {
                    c.input.extend_from_slice(&buf[..n]);
                    if let Some(end) = c.input.iter().position(|&b| b == b'\n') {
                        c.asked = true;
                        let line = c.input[..end].to_vec();
                        c.input = Vec::new();
                        let uid = c.uid;
                        match parse_request(&line) {
                            Ok(kind) => {
                                return Some(Request {
                                    conn: id,
                                    uid,
                                    kind,
                                })
                            }
                            Err(why) => {
                                self.fail(id, 22, &why);
                                return None;
                            }
                        }
                    }
                    if c.input.len() >= MAX_LINE {
                        self.fail(id, 22, "request too long");
                        return None;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.drop_conn(id, &e.to_string());
                    return None;
                }
            }
        }
    }

    /// Queue `text` for connection `id` and send what the socket takes.
    /// A connection that would have more than [`MAX_QUEUED`] bytes waiting
    /// is closed.
    fn send(&mut self, id: u64, text: &str) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.output.len() + text.len() > MAX_QUEUED {
            log::warn!(
                "events: connection {id} (uid {}) does not read; disconnected",
                c.uid
            );
            self.drop_conn(id, "too much output waiting");
            return;
        }
        c.output.extend_from_slice(text.as_bytes());
        self.flush(id);
    }

    fn flush(&mut self, id: u64) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        while !c.output.is_empty() {
            match c.stream.write(&c.output) {
                Ok(0) => {
                    self.drop_conn(id, "wrote nothing");
                    return;
                }
                Ok(n) => {
                    c.output.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.drop_conn(id, &e.to_string());
                    return;
                }
            }
        }
        if c.closing {
            self.drop_conn(id, "done");
        }
    }

    /// Answer a `subscribe`: `ok GEN`, and from now on the lockspace's
    /// events.
    pub fn subscribed(&mut self, conn: u64, name: &OsStr, generation: u32) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.subscribed = Some(name.to_os_string());
        }
        self.send(conn, &format!("ok {generation}\n"));
    }

    /// Answer a request with `ok GEN` and close.
    pub fn finish(&mut self, conn: u64, generation: u32) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.closing = true;
        }
        self.send(conn, &format!("ok {generation}\n"));
    }

    /// Answer a request with `error ERRNO TEXT` and close.
    pub fn fail(&mut self, conn: u64, errno: i32, text: &str) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.closing = true;
            c.subscribed = None;
        }
        let text: String = text
            .chars()
            .map(|ch| if ch.is_control() { ' ' } else { ch })
            .collect();
        self.send(conn, &format!("error {errno} {text}\n"));
    }

    fn publish(&mut self, name: &OsStr, line: &str, close: bool) {
        let ids: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.subscribed.as_deref() == Some(name))
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            if close {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.closing = true;
                    c.subscribed = None;
                }
            }
            self.send(id, line);
        }
    }

    /// Tell `name`'s subscribers it was stopped, ending generation `gen`.
    pub fn publish_stop(&mut self, name: &OsStr, generation: u32) {
        let line = format!("stop {} {generation}\n", encode_name(name.as_bytes()));
        self.publish(name, &line, false);
    }

    /// Tell `name`'s subscribers it was started and recovered: generation
    /// `gen`, our slot, the members as `(nodeid, slot)`.
    pub fn publish_start(
        &mut self,
        name: &OsStr,
        generation: u32,
        our_slot: u32,
        members: &[(u32, u32)],
    ) {
        let members: Vec<String> = members.iter().map(|(n, s)| format!("{n}:{s}")).collect();
        let line = format!(
            "start {} {generation} {our_slot} {}\n",
            encode_name(name.as_bytes()),
            members.join(",")
        );
        self.publish(name, &line, false);
    }

    /// Tell `name`'s subscribers it is gone, and close their connections.
    pub fn publish_gone(&mut self, name: &OsStr) {
        let line = format!("gone {}\n", encode_name(name.as_bytes()));
        self.publish(name, &line, true);
    }
}

impl Drop for EventServer {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            log::warn!("remove {}: {e}", self.path.display());
        }
    }
}

/// Why a client request failed.
#[derive(Debug)]
pub enum ClientError {
    /// No socket: no controller runs (or it has no event socket).
    NotRunning(io::Error),
    /// The socket is there but fails a trust check (see the module docs).
    Untrusted(String),
    /// The controller answered `error ERRNO TEXT`.
    Refused {
        /// The errno it gives.
        errno: i32,
        /// Its text.
        text: String,
    },
    /// The conversation failed (I/O, a timeout, an unexpected line).
    Protocol(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::NotRunning(e) => write!(f, "no dlm-controld running ({e})"),
            ClientError::Untrusted(why) => {
                write!(f, "the controller's socket is not trusted: {why}")
            }
            ClientError::Refused { errno, text } => {
                write!(f, "{text} ({})", io::Error::from_raw_os_error(*errno))
            }
            ClientError::Protocol(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// Connect to the controller's socket in `dir` after the trust checks of
/// the module docs, and read its greeting.
pub fn connect(dir: &Path, timeout: Duration) -> Result<UnixStream, ClientError> {
    let me = uid_of_self();
    let path = dir.join(SOCKET_NAME);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) => return Err(ClientError::NotRunning(e)),
    };
    let trusted = [0, me];
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        check_private_dir(parent, &trusted, true)
            .map_err(|e| ClientError::Untrusted(e.to_string()))?;
    }
    let owner = check_private_dir(dir, &trusted, false)
        .map_err(|e| ClientError::Untrusted(e.to_string()))?;
    if !meta.file_type().is_socket() || meta.uid() != owner {
        return Err(ClientError::Untrusted(format!(
            "{} is not a socket owned by uid {owner}",
            path.display()
        )));
    }
    let stream = UnixStream::connect(&path).map_err(ClientError::NotRunning)?;
    let peer = rustix::net::sockopt::socket_peercred(&stream)
        .map_err(|e| ClientError::Untrusted(format!("no peer credentials: {e}")))?;
    if peer.uid.as_raw() != owner {
        return Err(ClientError::Untrusted(format!(
            "the peer is uid {}, not {owner}",
            peer.uid.as_raw()
        )));
    }
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let hello = read_line(&stream)?;
    if hello != format!("{GREETING} {PROTOCOL_VERSION}") {
        return Err(ClientError::Protocol(format!(
            "unexpected greeting {hello:?}"
        )));
    }
    Ok(stream)
}

/// Read one line (without its `\n`) a byte at a time, so nothing after it
/// is consumed; at most [`MAX_LINE`] bytes.
pub fn read_line(mut stream: &UnixStream) -> Result<String, ClientError> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match stream.read(&mut b) {
            Ok(0) => {
                return Err(ClientError::Protocol(
                    "the controller closed the connection".into(),
                ))
            }
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) => {
                line.push(b[0]);
                if line.len() > MAX_LINE {
                    return Err(ClientError::Protocol("line too long".into()));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ClientError::Protocol(format!("reading: {e}"))),
        }
    }
    String::from_utf8(line).map_err(|_| ClientError::Protocol("not ASCII".into()))
}

/// `ok GEN` → GEN; `error ERRNO TEXT` → [`ClientError::Refused`].
pub fn parse_answer(line: &str) -> Result<u32, ClientError> {
    if let Some(g) = line.strip_prefix("ok ") {
        return g
            .parse()
            .map_err(|_| ClientError::Protocol(format!("bad answer {line:?}")));
    }
    if let Some(rest) = line.strip_prefix("error ") {
        let (errno, text) = rest.split_once(' ').unwrap_or((rest, ""));
        if let Ok(errno) = errno.parse() {
            return Err(ClientError::Refused {
                errno,
                text: text.to_string(),
            });
        }
    }
    Err(ClientError::Protocol(format!("bad answer {line:?}")))
}

/// Ask the controller whose run directory is `dir` to stop and restart
/// lockspace `name` (`dlm-controld recover`). Returns the new generation.
pub fn recover(dir: &Path, name: &OsStr, timeout: Duration) -> Result<u32, ClientError> {
    let mut s = connect(dir, timeout)?;
    s.write_all(format!("recover {}\n", encode_name(name.as_bytes())).as_bytes())
        .map_err(|e| ClientError::Protocol(format!("writing: {e}")))?;
    parse_answer(&read_line(&s)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("dlm-controld-events-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        d
    }

    /// Run the server until `done` says so (or 5 s pass), answering
    /// subscriptions with generation 1 and recoveries with `recover`.
    fn pump(srv: &mut EventServer, mut step: impl FnMut(&mut EventServer, Request)) {
        let (ids, fds_revents) = {
            let (ids, mut fds) = srv.poll_fds();
            let ts = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 20_000_000,
            };
            let _ = rustix::event::poll(&mut fds, Some(&ts));
            let r: Vec<PollFlags> = fds.iter().map(|f| f.revents()).collect();
            (ids, r)
        };
        for req in srv.handle(&ids, &fds_revents) {
            step(srv, req);
        }
    }

    #[test]
    fn names_round_trip_in_hex() {
        assert_eq!(encode_name(b"a b\n"), "6120620a");
        assert_eq!(decode_name("6120620a").unwrap(), b"a b\n");
        assert_eq!(decode_name(""), None);
        assert_eq!(decode_name("6"), None);
        assert_eq!(decode_name("zz"), None);
        assert_eq!(decode_name(&"61".repeat(65)), None);
        assert_eq!(
            parse_request(b"subscribe 6c73").unwrap(),
            RequestKind::Subscribe("ls".into())
        );
        assert_eq!(
            parse_request(b"recover 6c73").unwrap(),
            RequestKind::Recover("ls".into())
        );
        assert!(parse_request(b"recover").is_err());
        assert!(parse_request(b"recover 6c73 x").is_err());
        assert!(parse_request(b"bogus 6c73").is_err());
        assert!(parse_request(b"\xff").is_err());
        assert_eq!(parse_answer("ok 3").unwrap(), 3);
        assert!(matches!(
            parse_answer("error 2 no such lockspace"),
            Err(ClientError::Refused { errno: 2, .. })
        ));
        assert!(matches!(
            parse_answer("what"),
            Err(ClientError::Protocol(_))
        ));
    }

    #[test]
    fn subscribers_get_stop_start_and_gone_in_order() {
        let dir = tempdir("order");
        let run = dir.join("run");
        let mut srv = EventServer::bind(&run).unwrap();
        let mode = std::fs::metadata(srv.path()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o666);
        let sub = std::thread::spawn({
            let run = run.clone();
            move || {
                let mut s = connect(&run, Duration::from_secs(5)).unwrap();
                s.write_all(b"subscribe 6c73\n").unwrap();
                let mut lines = vec![read_line(&s).unwrap()];
                for _ in 0..3 {
                    lines.push(read_line(&s).unwrap());
                }
                // Closed after `gone`.
                assert!(read_line(&s).is_err());
                lines
            }
        });
        let name = OsStr::new("ls");
        while srv.subscribers(name) == 0 {
            pump(&mut srv, |srv, req| {
                assert_eq!(req.kind, RequestKind::Subscribe("ls".into()));
                srv.subscribed(req.conn, name, 1);
            });
        }
        srv.publish_stop(name, 1);
        srv.publish_start(name, 2, 1, &[(1, 1), (4, 2)]);
        srv.publish_gone(name);
        while srv.connections() > 0 {
            pump(&mut srv, |_, _| {});
        }
        assert_eq!(
            sub.join().unwrap(),
            ["ok 1", "stop 6c73 1", "start 6c73 2 1 1:1,4:2", "gone 6c73"]
        );
        drop(srv);
        assert!(!run.join(SOCKET_NAME).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_requests_are_answered_and_closed_and_a_silent_reader_is_dropped() {
        let dir = tempdir("bad");
        let run = dir.join("run");
        let mut srv = EventServer::bind(&run).unwrap();
        let client = std::thread::spawn({
            let run = run.clone();
            move || {
                let mut s = connect(&run, Duration::from_secs(5)).unwrap();
                s.write_all(b"fly away\n").unwrap();
                let answer = read_line(&s).unwrap();
                let mut long = connect(&run, Duration::from_secs(5)).unwrap();
                long.write_all(&[b'a'; MAX_LINE + 10]).unwrap();
                let too_long = read_line(&long).unwrap();
                (answer, too_long)
            }
        });
        let mut asked = 0;
        while !client.is_finished() {
            pump(&mut srv, |_, _| asked += 1);
        }
        let (answer, too_long) = client.join().unwrap();
        assert!(answer.starts_with("error 22 unknown request"), "{answer}");
        assert!(
            too_long.starts_with("error 22 request too long"),
            "{too_long}"
        );
        assert_eq!(asked, 0);

        // A subscriber that never reads: the controller queues at most
        // MAX_QUEUED bytes for it, then drops it, and never blocks.
        let s = UnixStream::connect(run.join(SOCKET_NAME)).unwrap();
        (&s).write_all(b"subscribe 6c73\n").unwrap();
        let name = OsStr::new("ls");
        while srv.subscribers(name) == 0 {
            pump(&mut srv, |srv, req| srv.subscribed(req.conn, name, 1));
        }
        let mut n = 0;
        while srv.subscribers(name) > 0 {
            srv.publish_stop(name, n);
            n += 1;
            assert!(n < 1_000_000, "never dropped");
        }
        assert_eq!(srv.connections(), 0);
        drop(s);
        drop(srv);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn clients_refuse_a_directory_others_may_write() {
        let dir = tempdir("trust");
        let run = dir.join("run");
        let srv = EventServer::bind(&run).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            connect(&run, Duration::from_secs(1)),
            Err(ClientError::Untrusted(_))
        ));
        // The controller refuses it too.
        drop(srv);
        assert!(EventServer::bind(&run).is_err());
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(
            connect(&run, Duration::from_secs(1)),
            Err(ClientError::NotRunning(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
