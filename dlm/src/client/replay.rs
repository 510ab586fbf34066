//! Lock replay: no lock lost when the daemon dies.
//!
//! `dlmd` is the master of every lock, and its clients are the survivors:
//! when a lockspace's connection to the daemon fails (the daemon was
//! killed, crashed or restarted), the client rebuilds the master's state
//! from what its slots hold, as the kernel DLM rebuilds a failed master
//! from the surviving lock holders. The thread that meets the failure
//! does it, before its own call goes on:
//!
//! 1. Records that arrived before the failure are taken in first.
//! 2. It reconnects, starting the per-user daemon again if this process
//!    had it started (auto-start), re-creates the lockspace (with the
//!    access mode it was created with here) and opens it with
//!    [`HELLO_REPLAY`](dlm_proto::wire::HELLO_REPLAY). The new connection
//!    takes the old one's descriptor number, so the lockspace's pollable
//!    fd stays the same.
//! 3. It replays every granted lock, in its granted mode, under its own
//!    lock id, with its flags and value block: a holder at PW or EX
//!    supplies the block; below PW it comes back flagged `VALNOTVALID`.
//! 4. Operations that were in flight:
//!    - a request not yet granted is sent again (its lock id changes; its
//!      [`LockId`]'s token stays, and the completion carries the new id);
//!    - a conversion in progress is sent again, after its lock's replay;
//!    - an unlock that the daemon had taken completes as
//!      [`Status::Unlocked`] (the lock is not replayed);
//!    - a cancel (or deadlock cancel) that the daemon had taken completes
//!      as [`Status::Cancelled`] (or `DeadlockCancelled`): a request is
//!      not sent again, a converting lock stays in its granted mode;
//!    - a request whose answer the failure took (no lock id known yet)
//!      is written again on the new connection by the call that was
//!      making it; any other operation whose answer it took counts as
//!      sent, and is finished as above (operations on a lock are decided
//!      and written with the replay held off, so the replay sees each one
//!      either sent or not yet decided).
//!
//!    If the daemon dies again during the replay, the replay starts over
//!    from the slots on the next one, for as long as the handle's
//!    [`replay_wait`](crate::DlmBuilder::replay_wait); an operation sent
//!    again by an earlier replay and not yet written is left to the
//!    later one.
//! 5. A lock that the new daemon refuses to replay (another holder took
//!    a conflicting lock meanwhile, `EAGAIN`, or its id, `EEXIST`) is
//!    lost: its `on_lost` callback runs with [`LostReason::NotReplayed`],
//!    and its id is no longer used. A replay that gives up (no daemon
//!    answered within the handle's `replay_wait`) loses every lock, and
//!    hangs up the connection: locks an interrupted turn had replayed onto
//!    a daemon that is still there go with it, and that daemon's successor
//!    does not wait for a connection that will never replay.
//!
//! A [`Lock`](crate::Lock) dropped while a replay waits for a daemon
//! waits for the replay too, and its unlock goes to the new daemon (the
//! replay has brought the lock back, or finds its unlock decided and does
//! not): a drop never leaves a replayed lock that nobody holds.
//!
//! Locks of dead processes that were kept as orphans (`PERSISTENT`) do
//! not survive a daemon death: no client holds them.
//!
//! A lockspace whose descriptor was handed to child processes
//! ([`Lockspace::inheritable_fd`]) is replayed too, onto a new connection
//! of this process's alone: the children's copies are of the dead one,
//! so from then on the locks end with this process.
//!
//! Replay begins when something of this process meets the failure: a
//! call on the lockspace, its event loop, a `dispatch()` after its fd
//! polled readable (the failure makes it readable). A process that does
//! none of these for longer than the daemon's grace period may find that
//! a newcomer took a conflicting lock meanwhile: then its replay is
//! refused and the lock reported lost.
//!
//! [`Status::Unlocked`]: dlm_proto::status::Status::Unlocked
//! [`Status::Cancelled`]: dlm_proto::status::Status::Cancelled

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

use dlm_proto::error::{Errno, Error};
use dlm_proto::flags::LockFlags;
use dlm_proto::mode::LockMode;
use dlm_proto::records::{self, Command, LockResult};
use dlm_proto::replay::{Replay, ReplayLvb, REPLAY_FLAGS};
use dlm_proto::wire::{self, Kind};

use super::lockspace::{lock_write, Lockspace, Redo, BASTADDR, CASTADDR};
use super::request::{LockId, LostFn, LostReason};
use super::sink::SharedSink;
use super::slots::make_token;
use super::transport::{Socket, Transport};

/// How to reach the daemon again, for a lockspace on the fallback.
#[derive(Debug, Clone)]
pub(crate) struct Reconnect {
    pub(crate) socket: PathBuf,
    pub(crate) autostart: bool,
    /// The access mode this process created the lockspace with (`None`:
    /// it opened one that existed, and re-creates it with the default).
    pub(crate) mode: Option<u32>,
    /// How long to wait for a daemon to answer again.
    pub(crate) wait: std::time::Duration,
}

/// Connect to the control side of the daemon, waiting up to `how.wait`
/// for one to answer (a daemon being restarted, or started by another
/// client); auto-start as the handle would.
fn reach_daemon(how: &Reconnect) -> Result<Socket, Error> {
    let deadline = Instant::now() + how.wait;
    let mut pause = std::time::Duration::from_millis(5);
    loop {
        match super::dlm::connect_or_start(&how.socket, how.autostart) {
            Ok(c) => return Ok(c),
            // No daemon yet, or the dying one's socket (a connection it
            // took into its backlog is reset).
            Err(e) if daemon_went(&e) && Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether `e` says the daemon went away (or is not there yet): a replay
/// that met it is tried again.
fn daemon_went(e: &Error) -> bool {
    let gone = [
        libc::ENOENT,
        libc::ECONNREFUSED,
        libc::ECONNRESET,
        libc::EPIPE,
    ];
    matches!(e, Error::DaemonUnavailable(_, e) | Error::Os(e) if gone.contains(&e.raw()))
}

/// What to do for one slot.
enum Plan {
    /// Replay this lock; then send `again` (a conversion), if any.
    Replay(LockId, Replay, Option<Again>),
    /// Send this request again (not granted yet).
    Resend(u64, Again),
    /// Complete with this kernel status (an unlock or cancel the daemon
    /// had taken), unless its record is already in the stash.
    Complete(u64, u32, i32),
}

/// An operation to send again.
struct Again {
    cmd_flags: LockFlags,
    mode: LockMode,
    lvb: [u8; 32],
    has_bast: bool,
    name: dlm_proto::name::ResourceName,
}

/// The replay of the lock of slot `s` (id `id`), granted in `granted`.
fn replay_of(
    s: &super::slots::Slot,
    id: LockId,
    granted: LockMode,
    resource: dlm_proto::name::ResourceName,
) -> Replay {
    let lvb = if s.has_lvb {
        // Only a writer's copy is known to be the latest.
        if granted >= LockMode::Pw {
            ReplayLvb::Valid(*s.lvb.as_bytes())
        } else {
            ReplayLvb::NotValid(*s.lvb.as_bytes())
        }
    } else {
        ReplayLvb::None
    };
    let mut flags = s.flags & REPLAY_FLAGS;
    if s.has_lvb {
        flags |= LockFlags::VALBLK;
    }
    Replay {
        lkid: id.lkid,
        mode: granted,
        flags,
        lvb,
        castparam: id.token,
        castaddr: CASTADDR,
        bastparam: id.token,
        bastaddr: if s.has_bast { BASTADDR } else { 0 },
        lksb: id.token,
        name: resource,
    }
}

/// What a lockspace's last replay onto a restarted daemon did: see
/// [`Lockspace::last_replay`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// Granted locks the new daemon took back.
    pub replayed: usize,
    /// Granted locks it refused: they are lost.
    pub refused: usize,
    /// Requests and conversions in flight, sent again.
    pub resent: usize,
    /// Unlocks and cancels the old daemon had taken, completed.
    pub completed: usize,
    /// From meeting the failure to the end of the replay (the operations
    /// sent again are answered later, after the daemon's grace period).
    pub took: std::time::Duration,
    /// The lockspace's generation after it.
    pub generation: u32,
}

impl Lockspace {
    /// What the last replay of this lockspace's locks onto a restarted
    /// fallback daemon did; `None` if there was none.
    pub fn last_replay(&self) -> Option<ReplayReport> {
        *self
            .inner
            .last_replay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a failed connection of this lockspace is replayed onto a
    /// new one (a fallback lockspace whose replay has not given up).
    pub(crate) fn can_replay(&self) -> bool {
        self.inner.reconnect.is_some()
            && matches!(self.inner.transport, Transport::Socket(_))
            && !self.inner.replay_gave_up.load(Ordering::SeqCst)
    }

    /// The connection failed: replay onto a new one if this lockspace
    /// can. `true` if it is connected again (by this thread or another).
    #[cold]
    #[inline(never)]
    pub(crate) fn recover(&self) -> bool {
        let Some(how) = self.inner.reconnect.as_ref() else {
            return false;
        };
        let Transport::Socket(sock) = &self.inner.transport else {
            return false;
        };
        if !sock.closed() {
            // Another thread did it already.
            return true;
        }
        // Told once a failure, by whichever thread meets it first, with no
        // lock held: the callback may use the lockspace (its operations
        // then replay, here).
        if !self.inner.replay_gave_up.load(Ordering::SeqCst)
            && !self.inner.prep_told.swap(true, Ordering::SeqCst)
        {
            if let Some(r) = self.inner.recovery_ops.get() {
                r.recover_prep();
            }
        }
        let one = self
            .inner
            .recovery
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !sock.closed() {
            // Another thread did it while this one waited.
            return true;
        }
        if self.inner.replay_gave_up.load(Ordering::SeqCst) {
            return false;
        }
        let t = Instant::now();
        log::warn!(
            "lockspace {}: the connection to the dlm daemon failed; reconnecting to replay its locks",
            self.inner.name
        );
        let mut later = Later::default();
        let done = {
            // No write is on its way while the slots are read and replayed.
            let _gate = self
                .inner
                .write_gate
                .write()
                .unwrap_or_else(|p| p.into_inner());
            self.replay_until(sock, how, &mut later)
        };
        // Callbacks run with no lock of the replay's held.
        for a in later.afters {
            self.run(a);
        }
        self.run_lost(later.lost);
        self.send_again_later(later.again, later.epoch);
        match done {
            Ok(mut rep) => {
                rep.took = t.elapsed();
                rep.generation = self.inner.generation.fetch_add(1, Ordering::SeqCst) + 1;
                *self
                    .inner
                    .last_replay
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(rep);
                log::warn!(
                    "lockspace {}: replayed {} lock(s) in {:.1} ms ({} refused and lost, {} \
                     operation(s) sent again, {} completed); generation {}",
                    self.inner.name,
                    rep.replayed,
                    t.elapsed().as_secs_f64() * 1e3,
                    rep.refused,
                    rep.resent,
                    rep.completed,
                    self.inner.generation.load(Ordering::SeqCst)
                );
                self.inner.wake_waiters();
                self.inner.prep_told.store(false, Ordering::SeqCst);
                drop(one);
                if let Some(r) = self.inner.recovery_ops.get() {
                    r.recover_done(
                        &[super::recovery::FALLBACK_MEMBER],
                        super::recovery::FALLBACK_MEMBER.slot,
                        rep.generation,
                    );
                }
                true
            }
            Err(e) => {
                self.inner.replay_gave_up.store(true, Ordering::SeqCst);
                // A turn may have replayed some locks onto a daemon that is
                // still there: they go with the connection.
                sock.hang_up();
                log::error!(
                    "lockspace {}: replay failed ({e}); its locks are lost",
                    self.inner.name
                );
                false
            }
        }
    }

    /// [`replay_onto_new`](Self::replay_onto_new), again from the slots
    /// while the daemon dies under it (a kill that lands during a replay),
    /// until `how.wait` has passed. What a failed turn did is kept: the
    /// records it completed stay in the stash (the next turn takes them
    /// in first), and the locks it replayed are replayed again.
    fn replay_until(
        &self,
        sock: &Socket,
        how: &Reconnect,
        later: &mut Later,
    ) -> Result<ReplayReport, Error> {
        let deadline = Instant::now() + how.wait;
        let mut turn = 1u32;
        loop {
            match self.replay_onto_new(sock, how, later) {
                Err(e) if daemon_went(&e) && sock.closed() && Instant::now() < deadline => {
                    log::warn!(
                        "lockspace {}: the dlm daemon went during replay turn {turn} ({e}); \
                         replaying again",
                        self.inner.name
                    );
                    turn += 1;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                r => return r,
            }
        }
    }

    fn replay_onto_new(
        &self,
        sock: &Socket,
        how: &Reconnect,
        later: &mut Later,
    ) -> Result<ReplayReport, Error> {
        // 1. What came before the failure counts first.
        {
            let mut st = self.state();
            for r in sock.take_stash() {
                later.afters.push(self.absorb(&mut st, &r));
            }
        }
        // 2. What each slot needs.
        let (plans, epoch) = self.plan();
        // 3. A new connection in the old one's place.
        let control = reach_daemon(how)?;
        let req = records::encode_create(self.inner.name.as_bytes(), 0, records::VERSION)?;
        control.write(req.as_bytes()).map_err(Error::Os)?;
        drop(control);
        let (fresh, minor) = Socket::connect(
            &how.socket,
            wire::ROLE_LOCKSPACE,
            wire::HELLO_REPLAY,
            self.inner.name.as_bytes(),
        )?;
        if let Some(mode) = how.mode {
            let v = fresh
                .call(Kind::Chmod, &mode.to_le_bytes())
                .map_err(Error::Os)?;
            if v < 0 {
                log::warn!(
                    "lockspace {}: mode {mode:o} not set again on the new daemon ({v})",
                    self.inner.name
                );
            }
        }
        sock.adopt(fresh).map_err(Error::Os)?;
        self.inner
            .minor
            .store(u32::try_from(minor).unwrap_or(0), Ordering::SeqCst);
        // 4. The replays, then the operations to send again.
        let mut rep = ReplayReport::default();
        let mut again = Vec::new();
        let mut lost = Vec::new();
        for p in plans {
            match p {
                Plan::Replay(id, r, conv) => {
                    let v = sock.call(Kind::Replay, &r.encode()).map_err(Error::Os)?;
                    if v == 0 {
                        rep.replayed += 1;
                        if let Some(c) = conv {
                            again.push((id.token, Some(id.lkid), c));
                        }
                    } else {
                        rep.refused += 1;
                        let e = Errno::from_raw((-v).clamp(1, i64::from(i32::MAX)) as i32);
                        lost.push((id, e));
                    }
                }
                Plan::Resend(token, a) => again.push((token, None, a)),
                Plan::Complete(token, lkid, status) => {
                    rep.completed += 1;
                    sock.inject(record(token, lkid, status));
                }
            }
        }
        let v = sock.call(Kind::ReplayDone, &[]).map_err(Error::Os)?;
        if v < 0 {
            return Err(Error::Os(Errno::EPROTO));
        }
        self.not_replayed(sock, &lost, later);
        // The operations to send again go out once the replay is over,
        // from a thread of their own: the new daemon holds them until its
        // grace period ends, which may wait for this very thread to
        // replay another lockspace. Until each is written, its slot is
        // marked as being written, so other operations on it wait.
        {
            let mut st = self.state();
            for (token, lkid, _) in &again {
                if let Some(s) = st.slot(*token) {
                    s.writing += 1;
                    if lkid.is_none() {
                        // Its record may come before the write returns:
                        // the slot, with no id, takes it (see
                        // `own_token_slow`).
                        s.lkid = 0;
                    }
                }
            }
        }
        rep.resent = again.len();
        later.again = again;
        later.epoch = epoch;
        Ok(rep)
    }

    /// Send again what a replay left (see `replay_onto_new`), on a thread
    /// of its own (on this one if no thread can be started).
    fn send_again_later(&self, again: Vec<(u64, Option<u32>, Again)>, epoch: u32) {
        if again.is_empty() {
            return;
        }
        let ls = self.clone();
        let work = move || {
            for (token, lkid, a) in again {
                ls.send_again(token, lkid, &a, epoch);
            }
        };
        let shared = std::sync::Arc::new(std::sync::Mutex::new(Some(work)));
        let theirs = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("dlm-replay-{}", self.inner.name))
            .spawn(move || {
                let w = theirs.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(w) = w {
                    w();
                }
            });
        if let Err(e) = spawned {
            log::warn!(
                "lockspace {}: no thread to send operations again ({e}); sending them here",
                self.inner.name
            );
            let w = shared.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(w) = w {
                w();
            }
        }
    }

    /// What each live slot needs, decided under the state lock; and the
    /// epoch of `Inner::plans` that this plan opens.
    fn plan(&self) -> (Vec<Plan>, u32) {
        let st = self.state();
        let epoch = self
            .inner
            .plans
            .fetch_add(1, Ordering::SeqCst)
            .wrapping_add(1);
        let mut plans = Vec::new();
        for (idx, s) in st.slots.iter().enumerate() {
            if !s.live || s.ended {
                continue;
            }
            let token = make_token(idx, s.gen);
            let id = LockId {
                token,
                lkid: s.lkid,
            };
            log::debug!(
                "lockspace {}: replay: slot {token:#x} lock {:#x}: granted {:?}, requested {:?}, \
                 writing {}, ending {}, cancel {}",
                self.inner.name,
                s.lkid,
                s.granted,
                s.requested,
                s.writing,
                s.ending,
                s.cancel_sent
            );
            let Some(resource) = s.resource else {
                continue;
            };
            let again = |mode: LockMode, convert: bool| Again {
                cmd_flags: (s.flags - LockFlags::CONVERT)
                    | if convert {
                        LockFlags::CONVERT
                    } else {
                        LockFlags::empty()
                    },
                mode,
                // A conversion down from PW or EX writes its own block
                // (`lvb_out`), not the last one known.
                lvb: *s.lvb_out.as_deref().unwrap_or(&s.lvb).as_bytes(),
                has_bast: s.has_bast,
                name: resource,
            };
            if s.lkid == 0 {
                // A request whose write has not returned, and of which no
                // record came: its writer sends it again (`Redo::Request`).
                continue;
            }
            // An operation being written was decided before this plan:
            // the plan finishes it from what the slot says, and its writer
            // does not send it (`Redo::Planned`).
            if s.ending {
                plans.push(Plan::Complete(token, s.lkid, -dlm_proto::status::EUNLOCK));
                continue;
            }
            let cancel_status = if s.deadlock_cancel {
                -libc::EDEADLK
            } else {
                -dlm_proto::status::ECANCEL
            };
            match (s.granted, s.requested) {
                (Some(g), conv) => {
                    let conv = match conv {
                        Some(_) if s.cancel_sent => {
                            plans.push(Plan::Complete(token, s.lkid, cancel_status));
                            None
                        }
                        Some(m) => Some(again(m, true)),
                        None => None,
                    };
                    plans.push(Plan::Replay(id, replay_of(s, id, g, resource), conv));
                }
                (None, Some(_)) if s.cancel_sent => {
                    plans.push(Plan::Complete(token, s.lkid, cancel_status));
                }
                (None, Some(m)) => plans.push(Plan::Resend(token, again(m, false))),
                (None, None) => {}
            }
        }
        (plans, epoch)
    }

    /// Send a request (`lkid` `None`) or conversion again (its slot marked
    /// as being written), as planned in `epoch`; a request's new lock id
    /// goes to its slot. Should the daemon die again on the way, the next
    /// replay takes it over (see [`Redo`]). A write the daemon refuses is
    /// a lost lock.
    fn send_again(&self, token: u64, lkid: Option<u32>, a: &Again, epoch: u32) {
        let mut w = lock_write(Command::Lock, token, a.has_bast);
        w.set_mode(a.mode.as_raw());
        w.set_flags(a.cmd_flags.bits());
        w.set_lvb(&a.lvb);
        let redo = match lkid {
            Some(id) => {
                w.set_lkid(id);
                Redo::Planned(epoch)
            }
            None => {
                let (name, len) = a.name.padded();
                w.set_name_padded(name, len);
                Redo::Request(token)
            }
        };
        let (written, gate) = self.gated_write(w.as_bytes(), redo);
        let waiter = {
            let mut st = self.state();
            match st.slot(token) {
                Some(s) => {
                    s.writing = s.writing.saturating_sub(1);
                    if let (Ok(v), None, 0) = (&written, lkid, s.lkid) {
                        s.lkid = u32::try_from(*v).unwrap_or(0);
                    }
                    std::mem::take(&mut s.write_waiter)
                }
                None => false,
            }
        };
        drop(gate);
        if waiter {
            self.inner.cond.notify_all();
        }
        if let Err(e) = written {
            log::warn!(
                "lockspace {}: an operation in flight could not be sent again: {e}",
                self.inner.name
            );
            if let Transport::Socket(sock) = &self.inner.transport {
                let mut later = Later::default();
                let id = LockId {
                    token,
                    lkid: lkid.unwrap_or(0),
                };
                self.not_replayed(sock, &[(id, e)], &mut later);
                self.run_lost(later.lost);
            }
        }
        self.after_io();
    }

    /// Locks the new daemon would not take back: their `on_lost`
    /// callbacks (run by the caller once the replay's locks are let go),
    /// and a completion with [`Status::Lost`](dlm_proto::status::Status::Lost)
    /// that ends them (for a waiter, or the completion callback).
    fn not_replayed(&self, sock: &Socket, lost: &[(LockId, Errno)], later: &mut Later) {
        let mut st = self.state();
        for &(id, e) in lost {
            log::warn!(
                "lockspace {}: lock {:#x} is lost: the restarted dlm daemon refused it ({e})",
                self.inner.name,
                id.lkid
            );
            if let Some(s) = st.slot(id.token) {
                let (cb, sink) = s
                    .cbs
                    .as_mut()
                    .map_or((None, None), |c| (c.on_lost.take(), c.sink.clone()));
                later.lost.push((cb, sink, id, e));
            }
            sock.inject(record(id.token, id.lkid, -libc::ENOLCK));
        }
    }

    fn run_lost(&self, lost: Vec<(Option<LostFn>, Option<SharedSink>, LockId, Errno)>) {
        for (cb, sink, id, e) in lost {
            let reason = LostReason::NotReplayed(e);
            match (cb, sink) {
                (_, Some(sink)) => sink.lost(id, reason),
                (Some(mut cb), None) => cb(id, reason),
                (None, None) => {}
            }
        }
    }
}

/// What a replay leaves to do once its locks are let go.
#[derive(Default)]
struct Later {
    afters: Vec<super::dispatch::After>,
    lost: Vec<(Option<LostFn>, Option<SharedSink>, LockId, Errno)>,
    again: Vec<(u64, Option<u32>, Again)>,
    /// The epoch of `Inner::plans` that planned `again`.
    epoch: u32,
}

/// A completion record for `token`'s lock, as the daemon would send it.
fn record(token: u64, lkid: u32, status: i32) -> LockResult {
    LockResult {
        astaddr: CASTADDR,
        astparam: token,
        user_lksb: token,
        status,
        lkid,
        sb_flags: 0,
        bast_mode: 0,
        lvb: None,
    }
}
