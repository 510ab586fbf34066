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
//!
//! This module holds the loop itself, its configuration and the
//! connection table; [`accept`] has connections coming and going,
//! [`requests`] reads and handles what they send, and [`output`] is
//! everything they are sent.

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

/// How long after the last connection closed the daemon gives the heap's
/// free pages back to the kernel: a burst of clients (or of replays after
/// a restart) leaves the allocator holding what they used, and a daemon
/// that lives for months should come back down to its idle size.
const TRIM_AFTER: Duration = Duration::from_secs(1);
use crate::startup::Scope;

mod accept;
mod output;
mod replay;
mod requests;

use replay::{Grace, ReplayState};

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
    /// After an unclean stop, new requests wait at most this long for the
    /// clients' lock replay (0: not at all).
    pub grace_period: Duration,
    /// The socket's path, next to which the holders file is kept (see
    /// [`crate::holders`]); `None` keeps none.
    pub holders_beside: Option<std::path::PathBuf>,
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
    /// Where it is with a lock replay.
    replay: ReplayState,
    /// A device write held for the end of the grace period.
    held_write: Option<Vec<u8>>,
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
        self.waiting_remove.is_some() || self.answer.is_some() || self.held_write.is_some()
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
    /// When to give freed heap memory back (see [`TRIM_AFTER`]).
    trim_due: Option<Instant>,
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
    /// The holders file, kept up to date.
    holders: Option<crate::holders::Holders>,
    /// Lockspace connections open (what the holders file says).
    ls_conns: usize,
    /// The grace period after an unclean stop, while it lasts.
    grace: Option<Grace>,
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
        let holders = config
            .holders_beside
            .as_deref()
            .map(crate::holders::Holders::for_socket);
        let mut server = Server {
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
            trim_due: None,
            accept_warned: false,
            cap_warned: false,
            spare_fd: open_spare_fd(),
            limiter: LogLimiter::new(ratelimit::RATE, ratelimit::BURST, Instant::now()),
            scratch: Vec::new(),
            targets: Vec::new(),
            read_buf: vec![0; READ_CHUNK],
            holders,
            ls_conns: 0,
            grace: None,
        };
        server.open_grace(Instant::now());
        server.sync_holders();
        Ok(server)
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
                            // A clean stop: the locks go with the daemon.
                            if let Some(h) = &self.holders {
                                h.remove();
                            }
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
            self.trim_due,
            self.limiter.due(),
            self.hello_deadlines.front().map(|d| d.at),
            self.grace_due(),
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
        if self.trim_due.is_some_and(|t| t <= now) {
            self.trim_due = None;
            self.compact();
        }
        self.grace_check(now);
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

    /// Connections closed a while ago ([`TRIM_AFTER`]): what the burst
    /// left in the tables and the allocator goes back to the kernel: the
    /// connection slots past the last one open (every use of a slot looks
    /// it up, so a missing one is a closed one), and every queue's spare
    /// capacity.
    fn compact(&mut self) {
        while self.conns.last().is_some_and(Option::is_none) {
            self.conns.pop();
        }
        let n = self.conns.len();
        self.free.retain(|&i| i < n);
        self.conns.shrink_to_fit();
        self.free.shrink_to_fit();
        self.ready.shrink_to_fit();
        self.doomed.shrink_to_fit();
        self.dirty.shrink_to_fit();
        self.hello_deadlines.shrink_to_fit();
        self.targets.shrink_to_fit();
        self.devices.compact();
        let gave = dlm_sys::heap::trim();
        log::debug!("connections closed a while ago: tables compacted, heap trimmed ({gave})");
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
