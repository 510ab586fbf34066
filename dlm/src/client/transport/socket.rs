//! The daemon transport: a connection to `dlmd` that plays a lockspace
//! (or the control) device.
//!
//! The daemon answers a connection's frames in the order they were sent,
//! and pushes callback records (`Ast` frames) between its answers. So a
//! request is a *sequence number*: a sender takes the next one and sends
//! its frame under the short send lock, and the answer that arrives as the
//! n-th is the n-th request's. Whoever reads the socket (a thread waiting
//! for its answer, a waiting call reading records, `dispatch()`) sorts
//! what it reads: answers go to the answer table for their senders,
//! callback records to the stash. No lock is held while a thread waits
//! for the socket: one thread polls it for everybody (the "poller"), the
//! others wait on a condition variable and are woken when answers come.
//!
//! The connection's one pollable fd is an epoll fd over the socket and an
//! eventfd that is readable while records wait in the stash.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dlm_proto::error::{Errno, Error, Refusal};
use dlm_proto::records::{self, LockResult, RESULT_WITH_LVB_SIZE};
use dlm_proto::trust;
use dlm_proto::wire::{self, Kind};

use super::poll::wait_fds;

/// A connection to `dlmd`.
pub(crate) struct Socket {
    stream: UnixStream,
    tx: Mutex<Tx>,
    rx: Mutex<Rx>,
    /// Threads waiting for an answer that another thread polls for.
    answered: Condvar,
    /// Readable while records wait in the stash (`Rx::signalled`).
    ready: OwnedFd,
    /// Wakes the poller when someone else read its answer.
    nudge: OwnedFd,
    /// The one pollable fd: `stream` and `ready`.
    epoll: OwnedFd,
    /// A copy of the socket was handed to child processes: closing this
    /// one must not end the connection's locks (no `Bye`).
    shared: AtomicBool,
    /// Records come only when read (`HELLO_PULL`): an `Ast` frame is then
    /// the answer to a `Read`.
    pull: bool,
    /// One more each time a replay takes the stash to plan (see
    /// [`take_stash`](Self::take_stash)): a record read before that and
    /// not yet taken in is the failed connection's, and goes unseen.
    epoch: AtomicU32,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("stream", &self.stream)
            .field("pull", &self.pull)
            .finish_non_exhaustive()
    }
}

struct Tx {
    frame: Vec<u8>,
    next_seq: u64,
}

/// An answer's body: a `Result`'s value, or the bytes of any other.
enum Body {
    Value(i64),
    Bytes(Vec<u8>),
}

struct Answer {
    seq: u64,
    kind: Kind,
    body: Body,
}

#[derive(Default)]
struct Rx {
    decoder: wire::Decoder,
    /// Callback records read and not yet taken.
    stash: VecDeque<LockResult>,
    /// Answers read and not yet taken by their senders.
    answers: Vec<Answer>,
    /// The parts of a long query answer so far.
    parts: Vec<u8>,
    /// The sequence number of the next answer to arrive.
    next_answer: u64,
    /// A thread polls the socket for everybody.
    polling: bool,
    /// Threads waiting on `answered` (notifying nobody costs a system
    /// call).
    sleepers: usize,
    /// `ready` was written and not read back.
    signalled: bool,
    /// `nudge` was written and not read back.
    nudged: bool,
    /// The connection failed (end of file, reset, broken framing): every
    /// later read and write fails the same way, until a new connection is
    /// adopted (see [`Socket::adopt`]).
    failed: Option<Errno>,
    /// The first sequence number of the connection now in place: a
    /// request sent before it went to a connection that failed, and gets
    /// no answer.
    first_live_seq: u64,
}

/// The longest the poller waits before it looks again (a safety net: it is
/// woken when its answer is read by someone else).
const POLL_BOUND: Duration = Duration::from_secs(1);

fn sys(e: rustix::io::Errno) -> Errno {
    Errno::from_raw(e.raw_os_error())
}

impl Socket {
    /// Connect to `dlmd` at `path` and say hello as `role`.
    ///
    /// The socket's directory is checked before the connect, and the
    /// peer's uid before the hello (see [`trust`]): an untrusted socket
    /// is [`Error::UntrustedSocket`] and hears nothing from us.
    ///
    /// Returns the connection and the daemon's answer to the hello (0, or
    /// a lockspace's minor). A daemon that turns the connection away (a
    /// connection cap or quota) is [`Error::DaemonRefused`]; every other
    /// failure, the connect's or the hello's, is [`Error::Os`].
    pub(crate) fn connect(
        path: &Path,
        role: u8,
        flags: u8,
        name: &[u8],
    ) -> Result<(Socket, i64), Error> {
        let user = rustix::process::getuid().as_raw();
        trust::check_socket_dir(&trust::socket_dir(path), user)?;
        let stream = UnixStream::connect(path).map_err(|e| Error::Os(e.into()))?;
        trust::check_peer(&stream, path, user)?;
        let sock = Socket::new(stream, flags & wire::HELLO_PULL != 0).map_err(Error::Os)?;
        let mut body = vec![role, flags];
        body.extend_from_slice(name);
        // A daemon at its connection cap answers before it closes, and
        // the answer may still be read after the close: the answer is
        // looked for whatever the send says.
        let v = match sock.call(Kind::Hello, &body) {
            Ok(v) => v,
            Err(e) => return Err(Error::Os(e)),
        };
        if v < 0 {
            let e = Errno::from_raw((-v).min(i64::from(i32::MAX)) as i32);
            // A Hello is never answered EMFILE or EUSERS but by a refusal.
            let uid = rustix::process::geteuid().as_raw();
            return Err(match Refusal::from_errno(e, uid) {
                Some(reason) => Error::DaemonRefused {
                    path: path.to_path_buf(),
                    reason,
                },
                None => Error::Os(e),
            });
        }
        Ok((sock, v))
    }

    fn new(stream: UnixStream, pull: bool) -> Result<Socket, Errno> {
        use rustix::event::epoll::{self, CreateFlags, EventData, EventFlags};
        use rustix::event::{eventfd, EventfdFlags};
        stream.set_nonblocking(true).map_err(Errno::from)?;
        let flags = EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC;
        let ready = eventfd(0, flags).map_err(sys)?;
        let nudge = eventfd(0, flags).map_err(sys)?;
        let ep = epoll::create(CreateFlags::CLOEXEC).map_err(sys)?;
        epoll::add(&ep, &stream, EventData::new_u64(0), EventFlags::IN).map_err(sys)?;
        epoll::add(&ep, &ready, EventData::new_u64(1), EventFlags::IN).map_err(sys)?;
        Ok(Socket {
            stream,
            tx: Mutex::new(Tx {
                frame: Vec::with_capacity(256),
                next_seq: 0,
            }),
            rx: Mutex::new(Rx::default()),
            answered: Condvar::new(),
            ready,
            nudge,
            epoll: ep,
            shared: AtomicBool::new(false),
            pull,
            epoch: AtomicU32::new(0),
        })
    }

    fn rx(&self) -> MutexGuard<'_, Rx> {
        self.rx.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The one pollable fd: readable when the socket is, or while records
    /// wait in the stash.
    pub(crate) fn poll_fd(&self) -> BorrowedFd<'_> {
        self.epoll.as_fd()
    }

    /// The socket itself (for a copy a child inherits).
    pub(crate) fn stream_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    /// The daemon's pid, from the socket's peer credentials.
    pub(crate) fn peer_pid(&self) -> Option<i32> {
        rustix::net::sockopt::socket_peercred(&self.stream)
            .ok()
            .map(|c| c.pid.as_raw_nonzero().get())
    }

    /// See [`Transport::share_with_children`](super::Transport::share_with_children).
    pub(crate) fn share_with_children(&self) {
        self.shared.store(true, Ordering::SeqCst);
    }

    /// End the connection from this side (both ways), for the daemon to
    /// see it closed: a lockspace whose replay gave up must not stay open
    /// on a daemon it half replayed onto, holding those locks for nobody
    /// and counted among the connections its successor waits for.
    pub(crate) fn hang_up(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Whether the daemon closed the connection (or reset it).
    pub(crate) fn closed(&self) -> bool {
        matches!(self.rx().failed, Some(e) if e == Errno::EPIPE || e == Errno::from_raw(libc::ECONNRESET))
    }

    /// Send a frame; its sequence number. Under the send lock only: the
    /// socket's buffer is large and each sender has at most one request in
    /// flight, so the send waits only if the daemon stopped reading with
    /// that much unread.
    fn send(&self, kind: Kind, body: &[u8]) -> Result<u64, Errno> {
        let mut tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let Tx { frame, next_seq } = &mut *tx;
        frame.clear();
        wire::put_frame(frame, kind, body)?;
        let seq = *next_seq;
        // Counted before the send: a frame sent even in part is answered
        // (or the connection is broken for good).
        *next_seq += 1;
        let mut off = 0;
        while off < frame.len() {
            // MSG_NOSIGNAL: a daemon that went away is EPIPE, never a
            // SIGPIPE that kills the calling program.
            match rustix::net::send(
                &self.stream,
                &frame[off..],
                rustix::net::SendFlags::NOSIGNAL,
            ) {
                Ok(0) => return Err(Errno::EPIPE),
                Ok(n) => off += n,
                Err(rustix::io::Errno::AGAIN) => {
                    wait_fds(&[self.stream.as_fd()], true, None)?;
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) if off == 0 => {
                    // Nothing of it left: it will not be answered.
                    *next_seq -= 1;
                    return Err(sys(e));
                }
                Err(e) => return Err(sys(e)),
            }
        }
        Ok(seq)
    }

    /// Send a request and wait for its answer: a `Result`'s value.
    pub(crate) fn call(&self, kind: Kind, body: &[u8]) -> Result<i64, Errno> {
        let seq = match self.send(kind, body) {
            Ok(seq) => seq,
            // The daemon may have answered before it closed (a refusal).
            Err(e) if e == Errno::EPIPE || e == Errno::from_raw(libc::ECONNRESET) => {
                return match self.answer_after_close(e) {
                    Some(v) => Ok(v),
                    None => Err(self.failed_as(e)),
                }
            }
            Err(e) => return Err(e),
        };
        match self.wait_answer(seq)? {
            (Kind::Result, Body::Value(v)) => Ok(v),
            _ => Err(self.protocol_error()),
        }
    }

    /// The `Result` a daemon sent before it closed the connection, if any.
    fn answer_after_close(&self, e: Errno) -> Option<i64> {
        let mut rx = self.rx();
        let _ = self.fill(&mut rx);
        rx.failed.get_or_insert(e);
        match rx.answers.pop() {
            Some(Answer {
                kind: Kind::Result,
                body: Body::Value(v),
                ..
            }) => Some(v),
            _ => None,
        }
    }

    fn failed_as(&self, e: Errno) -> Errno {
        let mut rx = self.rx();
        *rx.failed.get_or_insert(e)
    }

    #[cold]
    fn protocol_error(&self) -> Errno {
        let mut rx = self.rx();
        *rx.failed.get_or_insert(Errno::EPROTO)
    }

    /// `write()` a request: what the kernel's `write()` would return.
    pub(crate) fn write(&self, bytes: &[u8]) -> Result<i64, Errno> {
        let v = self.call(Kind::Write, bytes)?;
        if v < 0 {
            Err(Errno::from_raw((-v).min(i64::from(i32::MAX)) as i32))
        } else {
            Ok(v)
        }
    }

    /// The device version.
    pub(crate) fn version(&self) -> Result<[u32; 3], Errno> {
        let seq = self.send(Kind::Version, &[])?;
        match self.wait_answer(seq)? {
            (Kind::Version, Body::Bytes(b)) => records::decode_version(&b),
            (Kind::Result, Body::Value(v)) if v < 0 => Err(neg_errno(v)),
            _ => Err(self.protocol_error()),
        }
    }

    /// A `Query`-style request and the raw body of its answer (long answers
    /// come in parts, joined here). A `Result` instead of the answer
    /// carries an error.
    pub(crate) fn request(&self, kind: Kind, body: &[u8], reply: Kind) -> Result<Vec<u8>, Errno> {
        let seq = self.send(kind, body)?;
        match self.wait_answer(seq)? {
            (k, Body::Bytes(b)) if k == reply => Ok(b),
            (Kind::Result, Body::Value(v)) if reply == Kind::Result => Ok(v.to_le_bytes().to_vec()),
            (Kind::Result, Body::Value(v)) => Err(neg_errno(v.min(-1))),
            _ => Err(self.protocol_error()),
        }
    }

    /// One `read()` in pull mode: ask the daemon for one record. `None` is
    /// `EAGAIN`. In push mode, the next record without blocking.
    pub(crate) fn read_one(&self) -> Result<Option<LockResult>, Errno> {
        if !self.pull {
            return self.read_next();
        }
        let seq = self.send(Kind::Read, &(RESULT_WITH_LVB_SIZE as u32).to_le_bytes())?;
        match self.wait_answer(seq)? {
            (Kind::Ast, Body::Bytes(b)) => records::decode_result(&b).map(Some),
            (Kind::Result, Body::Value(v)) if v == -i64::from(libc::EAGAIN) => Ok(None),
            (Kind::Result, Body::Value(v)) if v < 0 => Err(neg_errno(v)),
            _ => Err(self.protocol_error()),
        }
    }

    /// The epoch a record read now belongs to (see
    /// [`take_stash`](Self::take_stash)).
    #[inline]
    pub(crate) fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// [`read_next`](Self::read_next), with the epoch the record was read
    /// in (read under the receive lock, which the epoch moves under).
    #[inline]
    pub(crate) fn read_next_tagged(&self) -> Result<Option<(LockResult, u32)>, Errno> {
        let mut rx = self.rx();
        let epoch = self.epoch();
        if rx.stash.is_empty() {
            self.fill(&mut rx)?;
        }
        let r = rx.stash.pop_front();
        if rx.signalled && rx.stash.is_empty() {
            self.unsignal(&mut rx);
        }
        Ok(r.map(|r| (r, epoch)))
    }

    /// The next record that can be had without blocking: from the stash,
    /// else from what the socket holds.
    #[inline]
    pub(crate) fn read_next(&self) -> Result<Option<LockResult>, Errno> {
        Ok(self.read_next_tagged()?.map(|(r, _)| r))
    }

    /// Move every record that can be had without blocking into `out`;
    /// the epoch they were read in. End of file (the daemon went away) is
    /// `EPIPE`.
    pub(crate) fn read_available(&self, out: &mut VecDeque<LockResult>) -> Result<u32, Errno> {
        let mut rx = self.rx();
        let epoch = self.epoch();
        let filled = self.fill(&mut rx);
        out.extend(rx.stash.drain(..));
        if rx.signalled {
            self.unsignal(&mut rx);
        }
        // Records read before an error are handed out with it next time.
        match filled {
            Err(e) if out.is_empty() => Err(e),
            _ => Ok(epoch),
        }
    }

    /// After an operation: records it left in the stash make the pollable
    /// fd readable, for whoever polls it. Done once the operation is over
    /// (not as records are stashed), so that an operation that takes its
    /// own record makes no extra system call.
    #[inline]
    pub(crate) fn settle(&self) -> bool {
        let mut rx = self.rx();
        if !rx.stash.is_empty() && !rx.signalled {
            self.signal(&mut rx);
        }
        matches!(rx.failed, Some(e) if e == Errno::EPIPE || e == Errno::from_raw(libc::ECONNRESET))
    }

    #[cold]
    fn signal(&self, rx: &mut Rx) {
        let _ = rustix::io::write(&self.ready, &1u64.to_ne_bytes());
        rx.signalled = true;
    }

    #[cold]
    fn unsignal(&self, rx: &mut Rx) {
        let mut b = [0u8; 8];
        let _ = rustix::io::read(&self.ready, &mut b);
        rx.signalled = false;
    }

    /// Put `fresh`, a new connection to the daemon whose `Hello` was
    /// answered, in the place of this failed one: the socket's descriptor
    /// number (and with it the pollable fd's registration) now refers to
    /// the new connection, and requests start over. Records of the old
    /// connection still in the stash stay there. A request still waiting
    /// for an answer from the old connection gets `EPIPE`.
    pub(crate) fn adopt(&self, fresh: Socket) -> Result<(), Errno> {
        use rustix::event::epoll::{self, EventData, EventFlags};
        // Its own descriptor closes with it, and sends no goodbye.
        fresh.share_with_children();
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let mut rx = self.rx();
        // The old connection leaves the epoll set first: a child process
        // may still hold a copy of it (see `share_with_children`), which
        // would keep it registered, and readable at its end, for ever.
        let _ = epoll::delete(&self.epoll, &self.stream);
        dlm_sys::fdswap::replace_fd(self.stream.as_fd(), fresh.stream.as_fd())
            .map_err(Errno::from)?;
        match epoll::add(
            &self.epoll,
            &self.stream,
            EventData::new_u64(0),
            EventFlags::IN,
        ) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(sys(e)),
        }
        // The new connection is this process's alone.
        self.shared.store(false, Ordering::SeqCst);
        rx.decoder = wire::Decoder::new();
        rx.answers.clear();
        rx.parts.clear();
        rx.next_answer = tx.next_seq;
        rx.first_live_seq = tx.next_seq;
        rx.failed = None;
        self.wake_sleepers(&rx);
        drop(rx);
        drop(tx);
        drop(fresh);
        Ok(())
    }

    /// Every record waiting in the stash, taken out for a replay to plan
    /// from, and a new epoch begun: a record another thread read before
    /// this, and takes in after it, is dropped (see
    /// [`epoch`](Self::epoch)), so what the replay plans from is all that
    /// counts of the failed connection.
    pub(crate) fn take_stash(&self) -> VecDeque<LockResult> {
        let mut rx = self.rx();
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let out = std::mem::take(&mut rx.stash);
        if rx.signalled {
            self.unsignal(&mut rx);
        }
        out
    }

    /// Put a record in the stash, as if the daemon had sent it (the
    /// outcome of an operation that a replaced connection took with it).
    pub(crate) fn inject(&self, r: LockResult) {
        let mut rx = self.rx();
        rx.stash.push_back(r);
        if !rx.signalled {
            self.signal(&mut rx);
        }
    }

    /// Wait for the answer numbered `seq`.
    fn wait_answer(&self, seq: u64) -> Result<(Kind, Body), Errno> {
        let mut rx = self.rx();
        loop {
            if let Some(i) = rx.answers.iter().position(|a| a.seq == seq) {
                let a = rx.answers.swap_remove(i);
                return Ok((a.kind, a.body));
            }
            if let Some(e) = rx.failed {
                return Err(e);
            }
            if seq < rx.first_live_seq {
                // Sent on a connection that failed and was replaced.
                return Err(Errno::EPIPE);
            }
            // Whatever is there already, without a wait.
            if matches!(self.fill(&mut rx), Ok(true) | Err(_)) {
                continue;
            }
            // Records read for others wait in the stash while this thread
            // goes on waiting: make them seen now.
            if !rx.stash.is_empty() && !rx.signalled {
                self.signal(&mut rx);
            }
            if rx.polling {
                rx.sleepers += 1;
                rx = match self.answered.wait_timeout(rx, POLL_BOUND) {
                    Ok((g, _)) => g,
                    Err(p) => p.into_inner().0,
                };
                rx.sleepers -= 1;
                continue;
            }
            rx.polling = true;
            drop(rx);
            let polled = wait_fds(
                &[self.stream.as_fd(), self.nudge.as_fd()],
                false,
                Some(POLL_BOUND),
            );
            rx = self.rx();
            rx.polling = false;
            if rx.nudged {
                let mut b = [0u8; 8];
                let _ = rustix::io::read(&self.nudge, &mut b);
                rx.nudged = false;
            }
            // Another thread may poll now.
            self.wake_sleepers(&rx);
            if let Err(e) = polled {
                rx.failed.get_or_insert(e);
            }
        }
    }

    /// Wake the threads waiting for answers, if there are any.
    #[inline]
    fn wake_sleepers(&self, rx: &Rx) {
        if rx.sleepers > 0 {
            self.answered.notify_all();
        }
    }

    /// Read what the socket holds (without waiting) and sort it: answers
    /// to the answer table, records to the stash. `true` if answers came.
    /// A failure is kept in `rx.failed` (after what came before it was
    /// sorted) and returned.
    fn fill(&self, rx: &mut Rx) -> Result<bool, Errno> {
        if let Some(e) = rx.failed {
            return Err(e);
        }
        let mut buf = [0u8; 8192];
        let mut end = None;
        loop {
            match (&self.stream).read(&mut buf) {
                Ok(0) => {
                    end = Some(Errno::EPIPE);
                    break;
                }
                Ok(n) => {
                    rx.decoder.feed(&buf[..n]);
                    if n < buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    end = Some(e.into());
                    break;
                }
            }
        }
        let answered = match self.sort(rx) {
            Ok(n) => n,
            Err(e) => {
                end.get_or_insert(e);
                0
            }
        };
        if answered > 0 {
            if rx.polling && !rx.nudged {
                let _ = rustix::io::write(&self.nudge, &1u64.to_ne_bytes());
                rx.nudged = true;
            }
            self.wake_sleepers(rx);
        }
        match end {
            Some(e) => {
                rx.failed = Some(e);
                self.wake_sleepers(rx);
                Err(e)
            }
            None => Ok(answered > 0),
        }
    }

    /// Sort the decoded frames; how many answers were completed.
    fn sort(&self, rx: &mut Rx) -> Result<usize, Errno> {
        let mut answered = 0;
        let Rx {
            decoder,
            stash,
            answers,
            parts,
            next_answer,
            ..
        } = rx;
        while let Some(frame) = decoder.next_frame()? {
            let body = match frame.kind {
                Kind::Ast if !self.pull => {
                    stash.push_back(records::decode_result(frame.body)?);
                    continue;
                }
                Kind::QueryPart => {
                    parts.extend_from_slice(frame.body);
                    continue;
                }
                Kind::Result => Body::Value(wire::result_value(frame.body)?),
                Kind::Ast | Kind::Version | Kind::QueryReply => {
                    let mut b = std::mem::take(parts);
                    b.extend_from_slice(frame.body);
                    Body::Bytes(b)
                }
                // A request from the daemon means the stream is out of step.
                _ => return Err(Errno::EPROTO),
            };
            answers.push(Answer {
                seq: *next_answer,
                kind: frame.kind,
                body,
            });
            *next_answer += 1;
            answered += 1;
        }
        Ok(answered)
    }
}

fn neg_errno(v: i64) -> Errno {
    Errno::from_raw((-v).clamp(1, i64::from(i32::MAX)) as i32)
}

impl Drop for Socket {
    /// Close as the kernel device does: synchronously. Tell the daemon
    /// and wait (briefly) for its answer, so this connection's locks are
    /// released before the drop returns and other processes see them
    /// free at once.
    fn drop(&mut self) {
        if *self.shared.get_mut() {
            // Another process's copy may still hold the locks.
            return;
        }
        if self
            .rx
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .failed
            .is_some()
        {
            return;
        }
        // One attempt, never a wait: a drop must not hang on a daemon
        // that stopped reading.
        let mut frame = Vec::with_capacity(5);
        if wire::put_frame(&mut frame, Kind::Bye, &[]).is_err()
            || !matches!(
                rustix::net::send(&self.stream, &frame, rustix::net::SendFlags::NOSIGNAL),
                Ok(n) if n == frame.len()
            )
        {
            return;
        }
        let seq = self
            .tx
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .next_seq;
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let mut rx = self.rx();
            let done = self.fill(&mut rx).is_err() || rx.answers.iter().any(|a| a.seq == seq);
            drop(rx);
            if done {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero()
                || !matches!(
                    wait_fds(&[self.stream.as_fd()], false, Some(left)),
                    Ok(true)
                )
            {
                return;
            }
        }
    }
}
