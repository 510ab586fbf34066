//! The event loop: one mio [`Poll`] over the listening socket, a signal
//! source for SIGTERM and SIGINT, and every connection.
//!
//! Nothing here blocks. Input is read without blocking into a
//! [`Decoder`], at most [`READ_BUDGET`] bytes per connection per turn so
//! that one busy client cannot starve the rest; a connection with more to
//! read stays on the ready list for the next turn. Output goes to a
//! per-connection buffer that is written as far as the socket takes it
//! and finished when mio says the socket is writable again. A connection
//! whose unsent output passes `--max-output` is a client that stopped
//! reading: it is disconnected, and its locks are released as on close.
//!
//! A query answer is made a part at a time ([`Answer`]), only while less
//! than [`answer_low_water`] bytes wait for its connection, in parts of
//! [`answer_piece`] bytes. An unread answer thus fills at most half the
//! output bound (and holds one more part, not yet framed), so the answer
//! by itself never disconnects a client, while whatever piles up on top
//! of it counts as usual. A connection makes at most [`ANSWER_BUDGET`]
//! bytes of answer per turn.
//!
//! Closing a connection can make output for others (its waiters are
//! granted), and that output can in turn overflow another client, so
//! closes are queued ([`Server::doom`]) and carried out one at a time
//! ([`Server::reap`]) between requests, never in the middle of one.
//!
//! Who may connect is decided at accept, from the peer's credentials
//! ([`crate::quota`]); a connection that has not completed its `Hello`
//! within `--hello-timeout` is closed. Both deadlines and the log's rate
//! limit ([`crate::ratelimit`]) are kept by the poll's timeout: there is
//! no thread or timer per connection.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use dlm_engine::OwnerId;
use dlm_proto::records::{self, LockResult, Request};
use dlm_proto::wire::{self, Decoder, Kind};
use dlm_proto::Errno;
use log::Level;
use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::answer::{Answer, Subject};
use crate::devices::{ConnId, Cred, Devices, LsId, Removal};
use crate::quota::{Quotas, Refusal};
use crate::ratelimit::{self, LogLimiter, Verdict};
use crate::startup::Scope;

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
/// Connection `i` is `Token(i + FIRST_CONN)`.
const FIRST_CONN: usize = 2;

/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes read from one connection before the others get their turn.
pub const READ_BUDGET: usize = 256 * 1024;
/// A connection whose requests are on hold (a deferred remove, a long
/// query answer) is read only until this much input waits.
const PAUSED_INPUT_LIMIT: usize = 1 << 20;
/// The next part of a query answer is made only while less output than
/// this waits (a quarter of `--max-output` if that is less).
const ANSWER_LOW_WATER: usize = 256 * 1024;
/// Bytes of query answer one connection makes before the others get
/// their turn.
const ANSWER_BUDGET: usize = 256 * 1024;

/// While less than this much output waits for a connection, the next
/// part of its query answer is made.
fn answer_low_water(max_output: usize) -> usize {
    (max_output / 4).min(ANSWER_LOW_WATER)
}

/// The JSON bytes in one part of a query answer: a quarter of the output
/// bound, at most a frame's worth.
fn answer_piece(max_output: usize) -> usize {
    (max_output / 4).clamp(1, wire::MAX_FRAME - 1)
}

/// What the server needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// The kernel the lockspaces follow, and why.
    pub kernel_model: dlmd::cli::ModelChoice,
    /// System or per-user daemon.
    pub scope: Scope,
    /// The daemon's uid (a per-user daemon serves only this one).
    pub uid: u32,
    /// Unsent output, in bytes, beyond which a client is disconnected.
    pub max_output: usize,
    /// Open connections at most; more are refused with `EMFILE`.
    pub max_connections: usize,
    /// Open connections of one uid other than root at most; more are
    /// refused with `EUSERS`. `None` on a per-user daemon, which also
    /// keeps no slots for root.
    pub max_connections_per_user: Option<usize>,
    /// Lockspaces at most; creating more fails with `ENOSPC`.
    pub max_lockspaces: usize,
    /// A connection without a completed `Hello` this long after it was
    /// accepted is closed.
    pub hello_timeout: Duration,
}

/// Turn a connection away: one `Result` frame carrying `errno` (what the
/// client's `Hello` gets back; best effort, the socket buffer of a fresh
/// connection has room), then the close.
fn refuse(mut stream: UnixStream, errno: Errno) {
    let mut frame = Vec::with_capacity(16);
    if wire::put_frame(
        &mut frame,
        Kind::Result,
        &result_of(Err(errno)).to_le_bytes(),
    )
    .is_ok()
    {
        let _ = stream.write(&frame);
    }
}

/// When connection `idx` (the one numbered `serial`) must have said
/// `Hello`.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    at: Instant,
    idx: usize,
    serial: u64,
}

/// What a connection plays.
#[derive(Debug, Clone, Copy)]
enum Role {
    /// No `Hello` yet.
    None,
    /// The control device.
    Control,
    /// An open lockspace device: one engine owner.
    Lockspace { ls: LsId, owner: OwnerId },
}

#[derive(Debug)]
struct Conn {
    stream: UnixStream,
    /// Tells this connection from an earlier one in the same slot.
    serial: u64,
    cred: Cred,
    role: Role,
    /// Callbacks only on `Read`.
    pull: bool,
    /// A compat (32-bit) write was seen: results use the compat layout.
    compat: bool,
    dec: Decoder,
    out: Vec<u8>,
    out_pos: usize,
    /// A query answer not yet finished.
    answer: Option<Answer>,
    /// Waiting for a deferred remove of this lockspace to complete.
    waiting_remove: Option<LsId>,
    in_ready: bool,
    dirty: bool,
    /// Doomed: no more input is handled and no more output queued.
    dead: bool,
    eof: bool,
    close_reason: Option<(Level, String)>,
}

impl Conn {
    fn unsent(&self) -> usize {
        self.out.len() - self.out_pos
    }

    fn paused(&self) -> bool {
        self.waiting_remove.is_some() || self.answer.is_some()
    }

    /// Write what the socket takes.
    fn flush(&mut self) -> io::Result<()> {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos >= READ_CHUNK && self.out_pos * 2 >= self.out.len() {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        Ok(())
    }
}

fn result_of(r: Result<i64, Errno>) -> i64 {
    match r {
        Ok(v) => v,
        Err(e) => -i64::from(e.raw()),
    }
}

/// Catch the signals that stop the daemon (SIGTERM and SIGINT). A signal
/// that arrives before the event loop runs is kept, and the loop stops at
/// once.
pub fn stop_signals() -> io::Result<Signals> {
    Signals::new([SIGTERM, SIGINT])
}

/// The daemon.
pub struct Server {
    poll: Poll,
    listener: UnixListener,
    signals: Signals,
    config: Config,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    devices: Devices,
    ready: VecDeque<usize>,
    doomed: Vec<usize>,
    dirty: Vec<usize>,
    accept_blocked: bool,
    /// The current accept failure was logged.
    accept_warned: bool,
    /// A refusal at the connection cap was logged (until one is accepted).
    cap_warned: bool,
    /// Connections open, by uid, against the caps.
    quotas: Quotas,
    /// When each connection accepted in the last `hello_timeout` must
    /// have said `Hello`, in order (entries of connections that did, or
    /// went, are dropped when they come up).
    hello_deadlines: VecDeque<Deadline>,
    /// The last connection's serial number.
    serial: u64,
    /// A descriptor held back so that the listener can still accept (and
    /// refuse) a connection when the process is out of descriptors.
    spare_fd: Option<OwnedFd>,
    /// The rate limit of everything clients can make the daemon log.
    limiter: LogLimiter,
    scratch: Vec<u8>,
    targets: Vec<ConnId>,
    read_buf: Vec<u8>,
}

impl Server {
    /// Set up the event loop around a bound listener. `signals` catches
    /// SIGTERM and SIGINT (see [`stop_signals`]); it is made before the
    /// socket is bound, so that no signal can kill the daemon uncleanly
    /// once the socket answers.
    pub fn new(
        config: Config,
        listener: std::os::unix::net::UnixListener,
        mut signals: Signals,
    ) -> io::Result<Server> {
        listener.set_nonblocking(true)?;
        let mut listener = UnixListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        Ok(Server {
            poll,
            listener,
            signals,
            devices: Devices::with_model(
                config.scope,
                config.max_lockspaces,
                config.kernel_model.model,
            ),
            quotas: Quotas::new(config.max_connections, config.max_connections_per_user),
            hello_deadlines: VecDeque::new(),
            serial: 0,
            config,
            conns: Vec::new(),
            free: Vec::new(),
            ready: VecDeque::new(),
            doomed: Vec::new(),
            dirty: Vec::new(),
            accept_blocked: false,
            accept_warned: false,
            cap_warned: false,
            spare_fd: open_spare_fd(),
            limiter: LogLimiter::new(ratelimit::RATE, ratelimit::BURST, Instant::now()),
            scratch: Vec::new(),
            targets: Vec::new(),
            read_buf: vec![0; READ_CHUNK],
        })
    }

    /// Serve until SIGTERM or SIGINT.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self.poll_timeout(Instant::now());
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            self.timers(Instant::now());
            if self.accept_blocked {
                self.accept_blocked = false;
                self.accept_all();
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept_all(),
                    SIGNALS => {
                        if let Some(sig) = self.signals.pending().next() {
                            if let Some(s) = self.limiter.summary_now(Instant::now()) {
                                log::warn!("{s}");
                            }
                            let name = if sig == SIGTERM { "SIGTERM" } else { "SIGINT" };
                            log::info!(
                                "{name}: shutting down ({} connection(s) dropped)",
                                self.conns.iter().flatten().count()
                            );
                            return Ok(());
                        }
                    }
                    Token(t) => {
                        let idx = t - FIRST_CONN;
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.mark_ready(idx);
                        }
                        if ev.is_writable() {
                            self.flush_conn(idx);
                        }
                    }
                }
            }
            self.reap();
            for _ in 0..self.ready.len() {
                if let Some(idx) = self.ready.pop_front() {
                    self.service(idx);
                    self.reap();
                }
            }
            while !self.dirty.is_empty() {
                for idx in std::mem::take(&mut self.dirty) {
                    if let Some(c) = self.conn_mut(idx) {
                        c.dirty = false;
                    }
                    self.flush_conn(idx);
                }
                self.reap();
            }
        }
    }

    /// How long the next poll may sleep.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        let mut wake: Option<Duration> = None;
        let mut at = |d: Duration| wake = Some(wake.map_or(d, |w| w.min(d)));
        if self.accept_blocked {
            at(Duration::from_millis(100));
        }
        let due = [
            self.limiter.due(),
            self.hello_deadlines.front().map(|d| d.at),
        ];
        for t in due.into_iter().flatten() {
            // Rounded up: a wake-up a little late beats a spin just before.
            at(t.saturating_duration_since(now) + Duration::from_millis(1));
        }
        wake
    }

    /// What is due at `now`: the log limiter's summary, and closing the
    /// connections whose time for a `Hello` is up.
    fn timers(&mut self, now: Instant) {
        if let Some(s) = self.limiter.summary_due(now) {
            log::warn!("{s}");
        }
        while let Some(d) = self.hello_deadlines.front().copied() {
            if d.at > now {
                break;
            }
            self.hello_deadlines.pop_front();
            let silent = matches!(
                self.conn(d.idx),
                Some(c) if c.serial == d.serial && matches!(c.role, Role::None) && !c.dead
            );
            if silent {
                let secs = self.config.hello_timeout.as_secs_f64();
                self.doom(
                    d.idx,
                    Level::Warn,
                    format!("no Hello within {secs} s (--hello-timeout)"),
                );
            }
        }
    }

    /// Log a line that a client's doing caused, within the shared rate
    /// limit (past it, at `debug` level).
    fn peer_log(&mut self, level: Level, args: fmt::Arguments<'_>) {
        if !log::log_enabled!(level) {
            return;
        }
        match self.limiter.admit(Instant::now()) {
            Verdict::Log => log::log!(level, "{args}"),
            Verdict::Hold(first) => {
                if first {
                    log::warn!(
                        "log rate limit reached: further client-triggered lines are logged at \
                         debug level (at most {} a second, bursts of {}); a count follows",
                        ratelimit::RATE,
                        ratelimit::BURST
                    );
                }
                log::debug!("{args}");
            }
        }
    }

    fn conn(&self, idx: usize) -> Option<&Conn> {
        self.conns.get(idx).and_then(Option::as_ref)
    }

    fn conn_mut(&mut self, idx: usize) -> Option<&mut Conn> {
        self.conns.get_mut(idx).and_then(Option::as_mut)
    }

    fn mark_ready(&mut self, idx: usize) {
        if let Some(c) = self.conn_mut(idx) {
            if !c.in_ready && !c.dead {
                c.in_ready = true;
                self.ready.push_back(idx);
            }
        }
    }

    fn accept_all(&mut self) {
        if self.spare_fd.is_none() {
            self.spare_fd = open_spare_fd();
        }
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    self.accept_warned = false;
                    self.add_conn(stream);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionAborted => {}
                Err(e) if out_of_fds(&e) && self.spare_fd.is_some() => {
                    // Out of descriptors below the cap (the limit was
                    // lowered under us, or the system ran out): use the
                    // spare one to turn a waiting client away rather than
                    // leave it hanging in the backlog. (Linux says EMFILE
                    // before it looks at the backlog, so the backlog may
                    // also be empty.) Without a spare, fall through to
                    // retrying.
                    self.spare_fd = None;
                    let got = self.listener.accept();
                    if let Ok((stream, _)) = got {
                        refuse(stream, Errno::from_raw(libc_errno::EMFILE));
                        self.peer_log(
                            Level::Warn,
                            format_args!(
                                "refused a connection: the daemon is out of file descriptors \
                                 ({e}) with {} connections open",
                                self.quotas.open()
                            ),
                        );
                        self.spare_fd = open_spare_fd();
                        continue;
                    }
                    self.spare_fd = open_spare_fd();
                    match got {
                        Err(e2) if e2.kind() == ErrorKind::WouldBlock => return,
                        _ => {
                            self.accept_blocked = true;
                            return;
                        }
                    }
                }
                Err(e) => {
                    if !self.accept_warned {
                        log::warn!("cannot accept a connection: {e}; retrying every 100 ms");
                        self.accept_warned = true;
                    }
                    self.accept_blocked = true;
                    return;
                }
            }
        }
    }

    fn add_conn(&mut self, mut stream: UnixStream) {
        let cred = match rustix::net::sockopt::socket_peercred(&stream) {
            Ok(c) => Cred {
                pid: c.pid.as_raw_nonzero().get().unsigned_abs(),
                uid: c.uid.as_raw(),
                gid: c.gid.as_raw(),
                groups: peer_groups(&stream),
            },
            Err(e) => {
                self.peer_log(
                    Level::Warn,
                    format_args!("a connection without peer credentials ({e}): closed"),
                );
                return;
            }
        };
        if self.config.scope == Scope::User && cred.uid != self.config.uid {
            let uid = self.config.uid;
            self.peer_log(
                Level::Warn,
                format_args!(
                    "refused a connection from pid {} uid {}: this per-user daemon serves uid \
                     {uid} only",
                    cred.pid, cred.uid
                ),
            );
            return;
        }
        if let Err(why) = self.quotas.admit(cred.uid) {
            refuse(stream, why.errno());
            let full = matches!(why, Refusal::Full { .. });
            if !full || !self.cap_warned {
                let more = if full {
                    "; further refusals at the cap are not logged until one is accepted"
                } else {
                    ""
                };
                self.peer_log(
                    Level::Warn,
                    format_args!(
                        "refused a connection from pid {} uid {}: {why}{more}",
                        cred.pid, cred.uid
                    ),
                );
                self.cap_warned |= full;
            }
            return;
        }
        self.cap_warned = false;
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(idx + FIRST_CONN),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("cannot watch a connection from pid {}: {e}", cred.pid);
            self.free.push(idx);
            self.quotas.release(cred.uid);
            return;
        }
        log::debug!(
            "connection {idx} from pid {} uid {} gid {} groups {:?}",
            cred.pid,
            cred.uid,
            cred.gid,
            cred.groups
        );
        self.serial += 1;
        self.hello_deadlines.push_back(Deadline {
            at: Instant::now() + self.config.hello_timeout,
            idx,
            serial: self.serial,
        });
        self.conns[idx] = Some(Conn {
            stream,
            serial: self.serial,
            cred,
            role: Role::None,
            pull: false,
            compat: false,
            dec: Decoder::new(),
            out: Vec::new(),
            out_pos: 0,
            answer: None,
            waiting_remove: None,
            in_ready: false,
            dirty: false,
            dead: false,
            eof: false,
            close_reason: None,
        });
        self.mark_ready(idx);
    }

    /// Queue connection `idx` for closing (once).
    fn doom(&mut self, idx: usize, level: Level, reason: String) {
        if let Some(c) = self.conn_mut(idx) {
            if !c.dead {
                c.dead = true;
                c.close_reason = Some((level, reason));
                self.doomed.push(idx);
            }
        }
    }

    /// Close every doomed connection.
    fn reap(&mut self) {
        while let Some(idx) = self.doomed.pop() {
            self.close(idx);
        }
    }

    fn close(&mut self, idx: usize) {
        let Some(mut conn) = self.conns.get_mut(idx).and_then(Option::take) else {
            return;
        };
        self.free.push(idx);
        self.quotas.release(conn.cred.uid);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let (level, reason) = conn
            .close_reason
            .take()
            .unwrap_or((Level::Debug, "closed".into()));
        let line = format_args!(
            "connection {idx} (pid {} uid {}) closed: {reason}",
            conn.cred.pid, conn.cred.uid
        );
        if level <= Level::Info {
            self.peer_log(level, line);
        } else {
            log::log!(level, "{line}");
        }
        // Last words, if the peer still reads (e.g. after shutdown(WR)).
        let _ = conn.flush();
        match conn.role {
            Role::Lockspace { ls, owner } => {
                let removers = self.devices.close(ls, idx, owner);
                self.deliver(ls);
                for r in removers {
                    if let Some(rc) = self.conn_mut(r) {
                        rc.waiting_remove = None;
                    }
                    self.send_result(r, 0);
                    self.mark_ready(r);
                }
            }
            Role::Control => {
                if let Some(ls) = conn.waiting_remove {
                    self.devices.forget_remover(ls, idx);
                }
            }
            Role::None => {}
        }
    }

    /// Read and handle what connection `idx` sent, within its budget.
    fn service(&mut self, idx: usize) {
        match self.conn_mut(idx) {
            Some(c) => c.in_ready = false,
            None => return,
        }
        if matches!(self.conn(idx), Some(c) if c.answer.is_some()) {
            // Its answer ran out of budget last turn.
            self.flush_conn(idx);
        }
        let mut budget = READ_BUDGET;
        let mut buf = std::mem::take(&mut self.read_buf);
        loop {
            if !self.process_frames(idx) {
                break;
            }
            let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
                break;
            };
            if conn.eof {
                let pending = conn.dec.pending();
                let paused = conn.paused();
                if pending > 0 && !paused {
                    self.misuse(
                        idx,
                        format!("closed in the middle of a frame ({pending} bytes)"),
                    );
                }
                self.doom(idx, Level::Debug, "closed by the peer".into());
                break;
            }
            if conn.paused() && conn.dec.pending() >= PAUSED_INPUT_LIMIT {
                // Resumed (marked ready) when the pause ends.
                break;
            }
            if budget == 0 {
                self.mark_ready(idx);
                break;
            }
            match conn.stream.read(&mut buf) {
                Ok(0) => conn.eof = true,
                Ok(n) => {
                    conn.dec.feed(&buf[..n]);
                    budget = budget.saturating_sub(n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.doom(idx, Level::Debug, format!("read failed: {e}"));
                    break;
                }
            }
        }
        self.read_buf = buf;
    }

    /// Handle the complete frames of connection `idx`; `false` once it is
    /// doomed or gone.
    fn process_frames(&mut self, idx: usize) -> bool {
        loop {
            let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
                return false;
            };
            if conn.dead {
                return false;
            }
            if conn.paused() {
                return true;
            }
            let kind = match conn.dec.next_frame() {
                Ok(Some(f)) => {
                    self.scratch.clear();
                    self.scratch.extend_from_slice(f.body);
                    f.kind
                }
                Ok(None) => return true,
                Err(e) => {
                    let msg = format!(
                        "broken framing ({e}): protocol error from pid {}, disconnecting",
                        conn.cred.pid
                    );
                    self.doom(idx, Level::Warn, msg);
                    return false;
                }
            };
            let body = std::mem::take(&mut self.scratch);
            self.handle_frame(idx, kind, &body);
            self.scratch = body;
        }
    }

    /// Log a protocol error of connection `idx` (rate-limited, with
    /// everything else clients cause).
    fn misuse(&mut self, idx: usize, what: String) {
        let Some(c) = self.conn(idx) else {
            return;
        };
        let (pid, uid) = (c.cred.pid, c.cred.uid);
        self.peer_log(
            Level::Warn,
            format_args!("connection {idx} (pid {pid} uid {uid}): {what}"),
        );
    }

    fn handle_frame(&mut self, idx: usize, kind: Kind, body: &[u8]) {
        match kind {
            Kind::Hello => {
                let r = self.hello(idx, body);
                self.send_result(idx, result_of(r));
            }
            Kind::Write => {
                let (reply, deliver) = self.write(idx, body);
                if let Some(v) = reply {
                    self.send_result(idx, v);
                }
                if let Some(ls) = deliver {
                    self.deliver(ls);
                }
            }
            Kind::Read => self.read(idx, body),
            Kind::Version => {
                if body.is_empty() {
                    self.send(idx, Kind::Version, &records::encode_version());
                } else {
                    self.misuse(
                        idx,
                        format!("Version frame with a {}-byte body", body.len()),
                    );
                    self.send_errno(idx, Errno::EINVAL);
                }
            }
            Kind::Chmod => {
                let r = self.chmod(idx, body);
                self.send_result(idx, result_of(r));
            }
            Kind::Query => self.query(idx, body),
            Kind::Bye => {
                // The answer leaves before or with the close, and the close
                // (reaped before the next poll) precedes anything the peer
                // can send after reading the answer.
                self.send_result(idx, 0);
                self.doom(idx, Level::Debug, "said goodbye".into());
            }
            Kind::Result | Kind::Ast | Kind::QueryReply | Kind::QueryPart => {
                self.misuse(idx, format!("sent a daemon-only frame ({kind:?})"));
                self.send_errno(idx, Errno::EPROTO);
            }
        }
    }

    fn hello(&mut self, idx: usize, body: &[u8]) -> Result<i64, Errno> {
        let Some(conn) = self.conn(idx) else {
            return Err(Errno::EBADF);
        };
        let cred = conn.cred.clone();
        if !matches!(conn.role, Role::None) {
            self.misuse(idx, "a second Hello".into());
            return Err(Errno::from_raw(libc_errno::EISCONN));
        }
        let [role, flags, name @ ..] = body else {
            self.misuse(idx, format!("Hello with a {}-byte body", body.len()));
            return Err(Errno::EINVAL);
        };
        if flags & !wire::HELLO_PULL != 0 {
            self.misuse(idx, format!("Hello with unknown flags {flags:#x}"));
            return Err(Errno::EINVAL);
        }
        let pull = flags & wire::HELLO_PULL != 0;
        let (role, value) = match *role {
            wire::ROLE_CONTROL => {
                if !name.is_empty() {
                    self.misuse(idx, "control Hello with a name".into());
                    return Err(Errno::EINVAL);
                }
                (Role::Control, 0)
            }
            wire::ROLE_LOCKSPACE => match self.devices.open(&cred, idx, name) {
                Ok((ls, owner, minor)) => {
                    log::debug!(
                        "connection {idx} (pid {}) opened lockspace {} as owner {}",
                        cred.pid,
                        String::from_utf8_lossy(name),
                        owner.index()
                    );
                    (Role::Lockspace { ls, owner }, i64::from(minor))
                }
                Err(e) => {
                    if e == Errno::EACCES {
                        self.peer_log(
                            Level::Info,
                            format_args!(
                                "pid {} uid {} may not open lockspace {}",
                                cred.pid,
                                cred.uid,
                                String::from_utf8_lossy(name)
                            ),
                        );
                    } else if e == Errno::EINVAL {
                        self.misuse(idx, "Hello with an invalid lockspace name".into());
                    }
                    return Err(e);
                }
            },
            other => {
                self.misuse(idx, format!("Hello with unknown role {other}"));
                return Err(Errno::EINVAL);
            }
        };
        if let Some(conn) = self.conn_mut(idx) {
            conn.role = role;
            conn.pull = pull;
        }
        Ok(value)
    }

    /// A `Write`: the reply (none while a remove is deferred) and the
    /// lockspace whose callbacks to deliver.
    fn write(&mut self, idx: usize, body: &[u8]) -> (Option<i64>, Option<LsId>) {
        let Some(conn) = self.conn(idx) else {
            return (None, None);
        };
        let (cred, role) = (conn.cred.clone(), conn.role);
        if matches!(role, Role::None) {
            self.misuse(idx, "Write before Hello".into());
            return (Some(result_of(Err(Errno::ENOTCONN))), None);
        }
        let decoded = match records::decode_write(body) {
            Ok(d) => d,
            Err(e) => {
                self.misuse(idx, format!("bad {}-byte write: {e}", body.len()));
                return (Some(result_of(Err(e))), None);
            }
        };
        match role {
            Role::None => (None, None),
            Role::Lockspace { ls, owner } => {
                if decoded.compat {
                    if let Some(c) = self.conn_mut(idx) {
                        c.compat = true;
                    }
                }
                if let Request::CreateLockspace { .. } | Request::RemoveLockspace { .. } =
                    decoded.request
                {
                    self.misuse(idx, "create/remove on a lockspace connection".into());
                    return (Some(result_of(Err(Errno::EINVAL))), None);
                }
                let r = self
                    .devices
                    .lock_command(ls, owner, cred.pid, &decoded.request);
                if let Err(e) = r {
                    log::debug!(
                        "connection {idx} (pid {}): {:?}: {e}",
                        cred.pid,
                        decoded.request
                    );
                }
                (Some(result_of(r)), Some(ls))
            }
            Role::Control => match decoded.request {
                Request::CreateLockspace { flags, name } => {
                    let r = self.devices.create(&cred, flags, &name);
                    if let Err(e) = r {
                        self.peer_log(
                            Level::Info,
                            format_args!(
                                "pid {} uid {}: create lockspace {}: {e}",
                                cred.pid,
                                cred.uid,
                                String::from_utf8_lossy(&name)
                            ),
                        );
                    }
                    (Some(result_of(r.map(i64::from))), None)
                }
                Request::RemoveLockspace { flags, minor } => {
                    match self.devices.remove(&cred, idx, flags, minor) {
                        Ok(Removal::Done) => (Some(0), None),
                        Ok(Removal::Deferred(ls)) => {
                            if let Some(c) = self.conn_mut(idx) {
                                c.waiting_remove = Some(ls);
                            }
                            (None, None)
                        }
                        Err(e) => {
                            self.peer_log(
                                Level::Info,
                                format_args!(
                                    "pid {} uid {}: remove lockspace minor {minor}: {e}",
                                    cred.pid, cred.uid
                                ),
                            );
                            (Some(result_of(Err(e))), None)
                        }
                    }
                }
                _ => {
                    self.misuse(idx, "lock command on the control connection".into());
                    (Some(result_of(Err(Errno::EINVAL))), None)
                }
            },
        }
    }

    /// A `Read`: `device_read`.
    fn read(&mut self, idx: usize, body: &[u8]) {
        let Ok(count) = <[u8; 4]>::try_from(body).map(u32::from_le_bytes) else {
            self.misuse(idx, format!("Read with a {}-byte body", body.len()));
            return self.send_errno(idx, Errno::EINVAL);
        };
        let Some(conn) = self.conn(idx) else {
            return;
        };
        let (role, compat) = (conn.role, conn.compat);
        let count = count as usize;
        let (ls, owner) = match role {
            Role::None => {
                self.misuse(idx, "Read before Hello".into());
                return self.send_errno(idx, Errno::ENOTCONN);
            }
            _ if count == records::VERSION_SIZE => {
                return self.send(idx, Kind::Version, &records::encode_version());
            }
            Role::Control => return self.send_errno(idx, Errno::EINVAL),
            Role::Lockspace { ls, owner } => (ls, owner),
        };
        let min = if compat {
            records::RESULT32_SIZE
        } else {
            records::RESULT_SIZE
        };
        if count < min {
            return self.send_errno(idx, Errno::EINVAL);
        }
        let rec = self.devices.engine_mut(ls).and_then(|e| e.read(owner));
        match rec {
            Some(rec) => self.send_ast(idx, &LockResult::from(&rec), compat, count),
            None => self.send_errno(idx, Errno::EAGAIN),
        }
    }

    fn chmod(&mut self, idx: usize, body: &[u8]) -> Result<i64, Errno> {
        let Ok(mode) = <[u8; 4]>::try_from(body).map(u32::from_le_bytes) else {
            self.misuse(idx, format!("Chmod with a {}-byte body", body.len()));
            return Err(Errno::EINVAL);
        };
        let Some(conn) = self.conn(idx) else {
            return Err(Errno::EBADF);
        };
        let cred = conn.cred.clone();
        match conn.role {
            Role::None => {
                self.misuse(idx, "Chmod before Hello".into());
                Err(Errno::ENOTCONN)
            }
            Role::Control => {
                self.misuse(idx, "Chmod on the control connection".into());
                Err(Errno::EINVAL)
            }
            Role::Lockspace { ls, .. } => {
                let r = self.devices.chmod(&cred, ls, mode);
                if let Err(e) = r {
                    self.peer_log(
                        Level::Info,
                        format_args!("pid {} uid {}: chmod {mode:o}: {e}", cred.pid, cred.uid),
                    );
                }
                r.map(|()| 0)
            }
        }
    }

    /// A `Query`: checked now, answered a part at a time from here on.
    fn query(&mut self, idx: usize, body: &[u8]) {
        let Some(conn) = self.conn(idx) else {
            return;
        };
        let (cred, role) = (conn.cred.clone(), conn.role);
        let Some((&what, rest)) = body.split_first() else {
            self.misuse(idx, "empty Query".into());
            return self.send_errno(idx, Errno::EINVAL);
        };
        let answer = match what {
            wire::QUERY_LOCKSPACES => Answer::new(Subject::Lockspaces(cred)),
            wire::QUERY_DAEMON => Answer::new(Subject::Daemon(self.config.kernel_model)),
            wire::QUERY_LOCKS | wire::QUERY_LOCK_PAGE => {
                let (page, name) = if what == wire::QUERY_LOCK_PAGE {
                    match wire::parse_page_query(rest) {
                        Ok((limit, after, name)) => (Some((limit, after)), name),
                        Err(e) => {
                            self.misuse(idx, format!("page Query with a {}-byte body", body.len()));
                            return self.send_errno(idx, e);
                        }
                    }
                } else {
                    (None, rest)
                };
                let id = match (name.is_empty(), role) {
                    (true, Role::Lockspace { ls, .. }) => Ok(ls),
                    (true, _) => Err(Errno::EINVAL),
                    (false, _) => self.devices.find_for_query(&cred, name),
                };
                let ls = match id {
                    Ok(ls) => ls,
                    Err(e) => return self.send_errno(idx, e),
                };
                match page {
                    None => Answer::new(Subject::Locks(ls)),
                    Some((limit, after)) => Answer::after(Subject::Page { ls, limit }, after),
                }
            }
            other => {
                self.misuse(idx, format!("Query of unknown subject {other}"));
                return self.send_errno(idx, Errno::EINVAL);
            }
        };
        if let Some(c) = self.conn_mut(idx) {
            c.answer = Some(answer);
        }
        if self.pump_answer(idx) > 0 {
            if let Some(c) = self.conn_mut(idx) {
                if !c.dirty {
                    c.dirty = true;
                    self.dirty.push(idx);
                }
            }
        }
    }

    /// Send every pending callback of every push-mode connection on
    /// lockspace `ls`.
    fn deliver(&mut self, ls: LsId) {
        let mut targets = std::mem::take(&mut self.targets);
        targets.clear();
        if let Some(l) = self.devices.lockspace(ls) {
            targets.extend_from_slice(l.conns());
        }
        for &idx in &targets {
            let (owner, compat) = match self.conn(idx) {
                Some(Conn {
                    role: Role::Lockspace { owner, .. },
                    dead: false,
                    pull: false,
                    compat,
                    ..
                }) => (*owner, *compat),
                _ => continue,
            };
            let count = if compat {
                records::RESULT32_WITH_LVB_SIZE
            } else {
                records::RESULT_WITH_LVB_SIZE
            };
            while let Some(rec) = self.devices.engine_mut(ls).and_then(|e| e.read(owner)) {
                self.send_ast(idx, &LockResult::from(&rec), compat, count);
                if !matches!(self.conn(idx), Some(c) if !c.dead) {
                    // Disconnected: what is left goes with its owner.
                    break;
                }
            }
        }
        self.targets = targets;
    }

    fn send_ast(&mut self, idx: usize, r: &LockResult, compat: bool, count: usize) {
        let encoded = if compat {
            records::encode_result32(r, count).map(|(b, n)| {
                let mut v = [0u8; records::RESULT_WITH_LVB_SIZE];
                v[..n].copy_from_slice(&b[..n]);
                (v, n)
            })
        } else {
            records::encode_result(r, count)
        };
        match encoded {
            Ok((b, n)) => self.send(idx, Kind::Ast, &b[..n]),
            Err(e) => self.send_errno(idx, e),
        }
    }

    fn send_result(&mut self, idx: usize, value: i64) {
        self.send(idx, Kind::Result, &value.to_le_bytes());
    }

    fn send_errno(&mut self, idx: usize, e: Errno) {
        self.send_result(idx, result_of(Err(e)));
    }

    /// Queue a frame for connection `idx`, disconnecting it if that puts
    /// it over its output bound.
    fn send(&mut self, idx: usize, kind: Kind, body: &[u8]) {
        let max = self.config.max_output;
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        if conn.dead {
            return;
        }
        if let Err(e) = wire::put_frame(&mut conn.out, kind, body) {
            log::error!("cannot frame a {}-byte {kind:?}: {e}", body.len());
            return;
        }
        if conn.unsent() > max {
            if let Err(e) = conn.flush() {
                return self.doom(idx, Level::Debug, format!("write failed: {e}"));
            }
            if conn.unsent() > max {
                let msg = format!(
                    "not reading: more than {max} bytes of output waiting for pid {}; disconnected",
                    conn.cred.pid
                );
                return self.doom(idx, Level::Warn, msg);
            }
        }
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(idx);
        }
    }

    /// Make parts of connection `idx`'s query answer while less than the
    /// low-water mark waits for it; the bytes added (the caller sees that
    /// they are written). The last part ends the pause: the requests
    /// behind the query are handled next.
    fn pump_answer(&mut self, idx: usize) -> usize {
        let max = self.config.max_output;
        let (low, piece) = (answer_low_water(max), answer_piece(max));
        let Some(c) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return 0;
        };
        let Some(mut answer) = c.answer.take() else {
            return 0;
        };
        let before = c.out.len();
        let mut failed = None;
        while !c.dead && c.unsent() <= low && !answer.finished() {
            if let Err(e) = answer.next_frame(&self.devices, piece, &mut c.out) {
                failed = Some(e);
                break;
            }
        }
        let added = c.out.len() - before;
        let finished = answer.finished();
        if !finished && failed.is_none() {
            c.answer = Some(answer);
        }
        if let Some(e) = failed {
            self.doom(idx, Level::Error, format!("query answer failed: {e}"));
        } else if finished {
            self.mark_ready(idx);
        }
        added
    }

    /// Write what connection `idx` has waiting, making more of its query
    /// answer as the socket takes it: at most [`ANSWER_BUDGET`] bytes of
    /// it, after which the connection goes on next turn.
    fn flush_conn(&mut self, idx: usize) {
        let low = answer_low_water(self.config.max_output);
        let mut budget = ANSWER_BUDGET;
        loop {
            let Some(c) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
                return;
            };
            if c.dead {
                return;
            }
            if let Err(e) = c.flush() {
                return self.doom(idx, Level::Debug, format!("write failed: {e}"));
            }
            if c.answer.is_none() || c.unsent() > low {
                return;
            }
            if budget == 0 {
                return self.mark_ready(idx);
            }
            match self.pump_answer(idx) {
                0 => return,
                n => budget = budget.saturating_sub(n),
            }
        }
    }
}

/// The peer's supplementary groups, or none if the kernel will not say
/// (before Linux 4.13): then only its primary group counts.
fn peer_groups(stream: &UnixStream) -> Rc<[u32]> {
    use std::os::fd::AsFd;
    match dlm_sys::peer::peer_groups(stream.as_fd()) {
        Ok(g) => g.into(),
        Err(e) => {
            log::debug!("no supplementary groups of a peer (SO_PEERGROUPS: {e})");
            Rc::from(Vec::new())
        }
    }
}

/// Whether an `accept` failed for want of file descriptors.
fn out_of_fds(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(n) if n == libc_errno::EMFILE || n == libc_errno::ENFILE)
}

/// The spare descriptor: `/dev/null`, or `None` if even that cannot be
/// opened (then an accept that runs out of descriptors is retried).
fn open_spare_fd() -> Option<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::open("/dev/null", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).ok()
}

/// Error numbers `dlm_proto::Errno` has no name for.
mod libc_errno {
    /// `EISCONN`: already connected (a second `Hello`).
    pub const EISCONN: i32 = rustix::io::Errno::ISCONN.raw_os_error();
    /// `EMFILE`: the daemon has its maximum of connections open.
    pub const EMFILE: i32 = rustix::io::Errno::MFILE.raw_os_error();
    /// `ENFILE`: the system is out of open files.
    pub const ENFILE: i32 = rustix::io::Errno::NFILE.raw_os_error();
}
