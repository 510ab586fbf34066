//! [`Lockspace`]: an open lockspace, and the operations on its locks.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::Duration;

use dlm_proto::error::{Errno, Error, Result};
use dlm_proto::flags::LockFlags;
use dlm_proto::lvb::ValueBlock;
use dlm_proto::mode::LockMode;
use dlm_proto::name::LockspaceName;
use dlm_proto::records::{self, Command, LockWrite};
use dlm_proto::status::{Completion, Status};

use super::dispatch::Done;
use super::event_loop::EventLoop;
use super::lock::Lock;
use super::replay::Reconnect;
use super::request::{granted_mode, unlock_flags, LockId, LockRequest, Outcome};
use super::sink::Sink;
use super::slots::{Callbacks, HeldLock, State};
use super::transport::Transport;
use super::Backend;

/// A failure of the daemon connection itself (not of a request).
pub(crate) fn is_conn_failure(e: Errno) -> bool {
    e == Errno::EPIPE || e == Errno::from_raw(libc::ECONNRESET)
}

/// What [`Lockspace::gated_write`] does with a write that a connection
/// failure took, once the locks are replayed onto a new connection.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Redo {
    /// A request, of this token's slot: written again on the new
    /// connection, unless a record of it came before the failure (the
    /// replay then took it over: see `replay::plan`).
    Request(u64),
    /// An operation on a known lock, decided (under the state lock) in
    /// this epoch of `Inner::plans`: the replay that planned after its
    /// decision completes it or sends it again, so it is not written
    /// again; nor at all, if such a replay came before the write.
    Planned(u32),
    /// A write that stands alone (a purge): written again on the new
    /// connection.
    Again,
}

/// The write of an operation on the lock of slot `s`: `None` for a
/// cancel with nothing to cancel (the outcome is decided or on its way),
/// `ENOENT` once the lock's unlock is sent. Shared by both paths of
/// `Lockspace::lock_op`.
#[inline(always)]
fn op_write(
    s: &super::slots::Slot,
    cmd: Command,
    id: LockId,
    mode: LockMode,
    flags: LockFlags,
    lvb: Option<&ValueBlock>,
    cancel: bool,
) -> Result<Option<LockWrite>, Errno> {
    if cancel && (s.cancel_sent || s.noqueue || s.ending) {
        return Ok(None);
    }
    if s.ending {
        return Err(Errno::ENOENT);
    }
    let mut w = lock_write(cmd, id.token, s.has_bast);
    w.set_lvb(lvb.map_or(s.lvb.as_bytes(), ValueBlock::as_bytes));
    w.set_mode(mode.as_raw());
    w.set_flags(flags.bits());
    // The slot's id, known once the request's write has returned: a
    // replay onto a restarted daemon may have sent the request again
    // under a new one.
    w.set_lkid(s.lkid);
    Ok(Some(w))
}

pub(crate) struct Inner {
    pub(crate) name: LockspaceName,
    /// Its minor; on the fallback it can change when the lockspace is
    /// replayed onto a restarted daemon.
    pub(crate) minor: AtomicU32,
    pub(crate) backend: Backend,
    pub(crate) transport: Transport,
    /// The pollable fd's number (for logs and `AsRawFd`).
    pub(crate) fd: RawFd,
    /// Whether the event-loop thread runs (mirrors `event_loop`, read on
    /// every wait without taking its lock).
    pub(crate) loop_running: AtomicBool,
    /// The event-loop thread, once started: a waiting call made by one of
    /// its callbacks reads the device itself, since the loop cannot.
    pub(crate) loop_thread: Mutex<Option<std::thread::ThreadId>>,
    /// Threads waiting on `cond`; notifying nobody costs a syscall.
    pub(crate) waiters: AtomicUsize,
    /// The lost callbacks for a closed connection have been taken to run.
    pub(crate) closed_told: AtomicBool,
    /// Something that delivers callbacks has been used on this lockspace:
    /// its event loop, `dispatch()`, a mio registration, or its fd taken
    /// to poll. Until then a request with callbacks logs one warning.
    pub(crate) delivery_seen: AtomicBool,
    /// That warning was logged.
    pub(crate) delivery_warned: AtomicBool,
    pub(crate) state: Mutex<State>,
    pub(crate) cond: Condvar,
    pub(crate) event_loop: Mutex<Option<Arc<EventLoop>>>,
    /// How to replay this lockspace's locks onto a new daemon (fallback
    /// only; see `replay`).
    pub(crate) reconnect: Option<Reconnect>,
    /// Held by the one thread that replays.
    pub(crate) recovery: Mutex<()>,
    /// Held shared by every write on the daemon connection until what it
    /// did is recorded, and exclusively by a replay.
    pub(crate) write_gate: RwLock<()>,
    /// 1, plus one for every replay onto a new daemon; on the kernel, the
    /// controller's count when it publishes one (`recovery`).
    pub(crate) generation: Arc<AtomicU32>,
    /// A replay failed: the locks are lost, and no other is tried.
    pub(crate) replay_gave_up: AtomicBool,
    /// How many times a replay has read the slots to plan (moved under
    /// the state lock, with `write_gate` held exclusively): an operation
    /// decided in an earlier epoch and not yet written was planned by the
    /// replay, which also decides what becomes of it (see [`Redo`]).
    pub(crate) plans: AtomicU32,
    /// What the last replay did.
    pub(crate) last_replay: Mutex<Option<super::replay::ReplayReport>>,
    /// The recovery callbacks, if the lockspace was opened with them.
    pub(crate) recovery_ops: std::sync::OnceLock<super::recovery::SharedRecovery>,
    /// `recover_prep` was called for the failure being replayed.
    pub(crate) prep_told: AtomicBool,
    /// The kernel lockspace's recovery events, when opened with callbacks
    /// and a provider is there (`recovery`).
    pub(crate) subscription: std::sync::OnceLock<super::recovery::Subscription>,
}

impl Inner {
    /// Wake threads blocked in a waiting call, if there are any.
    pub(crate) fn wake_waiters(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.cond.notify_all();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(ev) = self.event_loop.get_mut().ok().and_then(|e| e.take()) {
            ev.stop();
        }
    }
}

/// An open lockspace (`dlm_lshandle_t`). Cheap to clone; the lockspace is
/// closed when the last clone and the last [`Lock`] on it are dropped,
/// which releases its non-persistent locks.
///
/// # One pollable fd
///
/// [`AsFd`]/[`AsRawFd`] give the one fd to poll for callback records, on
/// both backends: readable when [`dispatch`](Self::dispatch) has work.
/// On the kernel it is the lockspace device itself; on the fallback an
/// epoll fd over the daemon connection and the records already read from
/// it. `Lockspace` is also a [`mio::event::Source`] of that fd.
///
/// # When the daemon stops answering
///
/// On the fallback backend, every call that sends something (requests,
/// conversions, unlocks, cancels, [`purge`](Self::purge)) waits for the
/// daemon's answer to its write: if the daemon is stopped, the call waits
/// until it runs again, without a bound (a [`LockRequest::timeout`]
/// counts from the answer on, and bounds the wait for the grant). Only
/// that call waits: no lock of the lockspace is held meanwhile, so other
/// threads' calls on the same lockspace go on (and wait for their own
/// answers), as do [`held`](Self::held), [`dispatch`](Self::dispatch)
/// (which never blocks) and every call on other lockspaces. Operations on
/// one lock leave in order: a second operation on a lock whose first is
/// still being written waits for that write. A daemon that exits ends
/// every waiting call at once with an error (`EPIPE`), and the locks are
/// lost (see [`LockRequest::on_lost`]).
///
/// On the kernel backend a write never waits for another process: the
/// kernel queues the operation and returns, so the client makes it under
/// the lockspace's state lock (one turn of that lock an operation). Only
/// the cluster's lock recovery holds such a write back, and it holds
/// every writer of the lockspace alike; meanwhile the other threads'
/// calls on that lockspace (including `dispatch`) wait with it, and calls
/// on other lockspaces go on.
#[derive(Clone)]
pub struct Lockspace {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Lockspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lockspace")
            .field("name", &self.inner.name)
            .field("backend", &self.inner.backend)
            .finish_non_exhaustive()
    }
}

pub(crate) const CASTADDR: u64 = 1;
pub(crate) const BASTADDR: u64 = 2;

/// A request carrying the user arguments every request has: the token
/// everywhere a pointer would go, and fixed non-zero "addresses".
#[inline]
pub(crate) fn lock_write(cmd: Command, token: u64, has_bast: bool) -> LockWrite {
    let mut w = LockWrite::new(cmd, records::VERSION);
    let bastaddr = if has_bast { BASTADDR } else { 0 };
    w.set_user_args(token, CASTADDR, token, bastaddr, token);
    w
}

impl Lockspace {
    pub(crate) fn new(
        name: LockspaceName,
        minor: u32,
        transport: Transport,
        backend: Backend,
        reconnect: Option<Reconnect>,
    ) -> Result<Lockspace> {
        let fd = transport.poll_fd().as_raw_fd();
        Ok(Lockspace {
            inner: Arc::new(Inner {
                name,
                minor: AtomicU32::new(minor),
                reconnect,
                recovery: Mutex::new(()),
                write_gate: RwLock::new(()),
                generation: Arc::new(AtomicU32::new(1)),
                replay_gave_up: AtomicBool::new(false),
                plans: AtomicU32::new(0),
                last_replay: Mutex::new(None),
                recovery_ops: std::sync::OnceLock::new(),
                prep_told: AtomicBool::new(false),
                subscription: std::sync::OnceLock::new(),
                backend,
                transport,
                fd,
                waiters: AtomicUsize::new(0),
                closed_told: AtomicBool::new(false),
                delivery_seen: AtomicBool::new(false),
                delivery_warned: AtomicBool::new(false),
                loop_running: AtomicBool::new(false),
                loop_thread: Mutex::new(None),
                state: Mutex::new(State::default()),
                cond: Condvar::new(),
                event_loop: Mutex::new(None),
            }),
        })
    }

    /// The lockspace's name.
    pub fn name(&self) -> &LockspaceName {
        &self.inner.name
    }

    /// The lockspace's minor (device number or daemon id).
    pub fn minor(&self) -> u32 {
        self.inner.minor.load(Ordering::SeqCst)
    }

    /// The lockspace's generation as this handle knows it: 1 when it was
    /// opened, and one more each time its locks were replayed onto a
    /// restarted fallback daemon (see the crate docs on lock replay). On
    /// the kernel with recovery events (see
    /// [`Recovery`](super::recovery::Recovery)), the controller's: at
    /// open, then at each start it reports.
    pub fn generation(&self) -> u32 {
        self.inner.generation.load(Ordering::SeqCst)
    }

    /// Whether this lockspace's backend delivers every recovery callback
    /// (see [`Recovery`](super::recovery::Recovery)): `Ok` on the
    /// fallback, and on the kernel while this handle receives
    /// `dlm-controld --single-node`'s events; otherwise `EOPNOTSUPP` on
    /// the kernel, where only the `recover_done` at join comes (the
    /// kernel's `ops_result`): no such controller, its socket not
    /// trusted, the handle opened without callbacks, or the controller
    /// gone since.
    pub fn recovery_status(&self) -> std::result::Result<(), Errno> {
        let subscribed = self.inner.subscription.get().is_some_and(|s| s.live());
        super::recovery::status_for(self.inner.backend == Backend::Kernel, subscribed)
    }

    /// Joined: keep the recovery callbacks, and call `recover_done` with
    /// the members as they are now (see [`Recovery`](super::recovery::Recovery)).
    pub(crate) fn joined(&self, ops: Option<super::recovery::SharedRecovery>) {
        let Some(ops) = ops else {
            return;
        };
        let _ = self.inner.recovery_ops.set(ops.clone());
        // Subscribe before reading the members: a restart in between is
        // then reported after the join's recover_done, not lost.
        let pending = match self.inner.backend {
            Backend::Kernel => super::recovery::subscribe(&self.inner.name),
            Backend::Fallback => None,
        };
        if let Some(p) = &pending {
            self.inner
                .generation
                .store(p.generation(), Ordering::SeqCst);
        }
        let (members, ours) = match self.inner.backend {
            Backend::Kernel => super::recovery::kernel_members(&self.inner.name),
            Backend::Fallback => (
                vec![super::recovery::FALLBACK_MEMBER],
                super::recovery::FALLBACK_MEMBER.slot,
            ),
        };
        ops.recover_done(&members, ours, self.generation());
        if let Some(p) = pending {
            let sub = super::recovery::Subscription::start(
                p,
                self.inner.name,
                ops,
                self.inner.generation.clone(),
            );
            if let Some(sub) = sub {
                let _ = self.inner.subscription.set(sub);
            }
        }
    }

    /// The backend this lockspace lives on.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// A new descriptor of what owns this handle's locks (the kernel
    /// device's open file, or the connection to `dlmd`), *without*
    /// close-on-exec, for a child process to inherit, as `flock(1)`'s
    /// child inherits its lock.
    ///
    /// The DLM keeps the handle's locks while any copy of the descriptor
    /// is open: the kernel releases them at the last `close()` of the
    /// open file, and `dlmd` when the connection's last copy closes. So a
    /// child holding a copy keeps the locks held after this process is
    /// killed, until it exits or closes it. From this call on, dropping
    /// the last [`Lockspace`] clone only closes this process's descriptor
    /// (on the fallback it no longer asks the daemon to drop the
    /// connection's locks at once); a [`Lock`] dropped or unlocked still
    /// unlocks.
    ///
    /// The child must not read or write the descriptor: the records on it
    /// are this process's. Close the copy here once the child has it.
    pub fn inheritable_fd(&self) -> Result<OwnedFd> {
        self.inner.transport.inheritable_fd().map_err(Error::Os)
    }

    /// What every lock of this handle is and holds, as last heard from
    /// the DLM (requests in progress included, locks being unlocked left
    /// out): see [`HeldLock`]. Never waits for the DLM.
    ///
    /// ```
    /// # let _daemon = dlm_testkit::PrivateDaemon::start();
    /// use dlm::{Dlm, LockMode, LockRequest, LockspaceFlags, LockspaceName, ResourceName};
    ///
    /// let dlm = Dlm::open()?;
    /// let ls = dlm.create_lockspace(&LockspaceName::new("app")?, LockspaceFlags::empty(), 0o600)?;
    /// let lock = ls.lock(LockRequest::new(ResourceName::new("disk0")?, LockMode::Pw))?.granted().ok_or("busy")?;
    /// let held = ls.held();
    /// assert_eq!(held.len(), 1);
    /// assert_eq!((held[0].resource.as_bytes(), held[0].granted), (&b"disk0"[..], Some(LockMode::Pw)));
    /// assert_eq!(held[0].id, lock.id());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn held(&self) -> Vec<HeldLock> {
        self.state().all_held(&self.inner.name)
    }

    /// What lock `id` is and holds (see [`held`](Self::held)); `None` once
    /// its unlock is sent or it has ended.
    pub fn held_lock(&self, id: LockId) -> Option<HeldLock> {
        self.state().held(id.token, &self.inner.name)
    }

    #[inline(always)]
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn chmod(&self, mode: u32) -> Result<()> {
        let r = self.inner.transport.chmod(mode);
        self.after_io();
        r.map_err(Error::Os)
    }

    /// An operation is over: records the transport read along with an
    /// answer are made visible to pollers, and a closed connection makes
    /// every held lock lost. On the kernel this is nothing.
    #[inline(always)]
    pub(crate) fn after_io(&self) {
        if self.inner.transport.settle() {
            self.connection_failed();
        }
    }

    /// The daemon connection failed: replay onto a new one, or tell that
    /// the locks are lost.
    #[cold]
    #[inline(never)]
    pub(crate) fn connection_failed(&self) -> bool {
        if self.recover() {
            return true;
        }
        self.tell_closed();
        false
    }

    /// A write on the daemon connection, made with `write_gate` held
    /// (shared) until the caller has recorded what the write did, so a
    /// replay sees every operation either done or not yet sent. If the
    /// connection fails on the write's way, the locks are replayed onto a
    /// new one, and `redo` says what becomes of the write (see [`Redo`]).
    pub(crate) fn gated_write(
        &self,
        bytes: &[u8],
        redo: Redo,
    ) -> (Result<i64, Errno>, RwLockReadGuard<'_, ()>) {
        self.write_held(self.write_gate(), bytes, redo)
    }

    /// [`gated_write`](Self::gated_write) with the gate already held.
    fn write_held<'a>(
        &'a self,
        held: RwLockReadGuard<'a, ()>,
        bytes: &[u8],
        redo: Redo,
    ) -> (Result<i64, Errno>, RwLockReadGuard<'a, ()>) {
        // Bounded: each turn is a replay that succeeded, onto a daemon
        // that died again before this write reached it.
        let mut turns = 0;
        let mut held = Some(held);
        loop {
            let gate = held.take().unwrap_or_else(|| self.write_gate());
            if let Redo::Planned(epoch) = redo {
                if self.inner.plans.load(Ordering::SeqCst) != epoch {
                    // A replay planned it after it was decided: the replay
                    // completes it or sends it again itself.
                    return (Ok(0), gate);
                }
            }
            let r = self.inner.transport.write(bytes);
            match r {
                Err(e) if is_conn_failure(e) && turns < 20 && self.inner.reconnect.is_some() => {
                    drop(gate);
                    if !self.recover() {
                        return (r, self.write_gate());
                    }
                    turns += 1;
                    if let Redo::Request(token) = redo {
                        let st = self.state();
                        match st.index(token).map(|i| &st.slots[i]) {
                            Some(s) if s.lkid == 0 && s.granted.is_none() => {}
                            // A record of it came before the failure: the
                            // replay took it over, as a lock or a request.
                            Some(s) => return (Ok(i64::from(s.lkid)), self.write_gate()),
                            None => return (Ok(0), self.write_gate()),
                        }
                    }
                }
                r => return (r, gate),
            }
        }
    }

    #[inline]
    fn write_gate(&self) -> RwLockReadGuard<'_, ()> {
        self.inner
            .write_gate
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// `dlm_ls_lock()`: ask for a lock; `on_complete` runs for this and
    /// every later completion of the lock (conversions, unlock).
    ///
    /// Returns the lock's id at once; the outcome arrives as a callback.
    /// Callbacks run only where something reads the lockspace: its event
    /// loop ([`start_event_loop`](Self::start_event_loop)), a call of
    /// [`dispatch`](Self::dispatch) (from your own `poll(2)` of its fd or
    /// `mio::Poll`), or inline in a waiting call on it. With none of
    /// these used yet, the first such request logs a warning.
    ///
    /// ```
    /// # let _daemon = dlm_testkit::PrivateDaemon::start();
    /// use std::sync::mpsc;
    /// use dlm::{Dlm, LockMode, LockRequest, LockspaceFlags, LockspaceName, ResourceName, Status};
    ///
    /// let dlm = Dlm::open()?;
    /// let ls = dlm.create_lockspace(&LockspaceName::new("app")?, LockspaceFlags::empty(), 0o600)?;
    /// ls.start_event_loop()?; // the callbacks run on its thread
    /// let (tx, rx) = mpsc::channel();
    /// let id = ls.request(LockRequest::new(ResourceName::new("job")?, LockMode::Ex), move |_, c| {
    ///     let _ = tx.send(c.status);
    /// })?;
    /// assert_eq!(rx.recv()?, Status::Granted);
    /// ls.unlock(id, dlm::LockFlags::empty(), None)?;
    /// assert_eq!(rx.recv()?, Status::Unlocked);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn request(
        &self,
        req: LockRequest,
        on_complete: impl FnMut(LockId, &Completion) + Send + 'static,
    ) -> Result<LockId> {
        self.submit(req, Some(Box::new(on_complete)), None, false)
            .map(|(id, _)| id)
    }

    /// [`request`](Self::request) with every callback of the lock (its
    /// completions, blocking callbacks and loss) delivered to `sink`
    /// instead of closures (the request's own `on_blocking` and `on_lost`
    /// are not used). For the C ABI.
    #[doc(hidden)]
    pub fn request_with_sink(&self, req: LockRequest, sink: Arc<dyn Sink>) -> Result<LockId> {
        self.submit(req, None, Some(sink), false).map(|(id, _)| id)
    }

    /// Send a lock request. `read`: the caller will wait for the outcome
    /// on this thread; the completion, if it is there already, comes back
    /// with the id (see [`first_look`](Self::first_look)).
    /// A callback was registered, and nothing that delivers callbacks has
    /// been used on this lockspace yet: say so, once.
    #[cold]
    fn warn_no_delivery(&self) {
        if !self.inner.delivery_warned.swap(true, Ordering::Relaxed) {
            log::warn!(
                "lockspace {}: a lock request has callbacks, but nothing delivers callbacks on \
                 this lockspace yet: they run on its event loop (start_event_loop), in \
                 dispatch() (for example from your own poll of its fd or mio::Poll), or inline \
                 in a waiting call on it",
                self.inner.name
            );
        }
    }

    /// Note that callbacks are delivered on this lockspace (see
    /// `delivery_seen`).
    #[inline]
    pub(crate) fn delivery_used(&self) {
        self.inner.delivery_seen.store(true, Ordering::Relaxed);
    }

    pub(crate) fn submit(
        &self,
        req: LockRequest,
        on_complete: Option<super::request::CompletionFn>,
        sink: Option<Arc<dyn Sink>>,
        read: bool,
    ) -> Result<(LockId, Option<Done>)> {
        // A waiting call (`read`) collects the completion it waits for,
        // callbacks or not (the C ABI's waiting calls keep theirs).
        let waiting = read || (on_complete.is_none() && sink.is_none());
        if req.flags.intersects(LockFlags::CONVERT | LockFlags::CANCEL) {
            return Err(Error::InvalidArgument(
                "CONVERT and CANCEL are not request flags",
            ));
        }
        let cbs = match (sink, on_complete, req.on_blocking, req.on_lost) {
            (Some(sink), ..) => Some(Box::new(Callbacks {
                sink: Some(sink),
                ..Callbacks::default()
            })),
            (None, None, None, None) => None,
            (None, on_complete, on_blocking, on_lost) => Some(Box::new(Callbacks {
                on_complete,
                on_blocking,
                on_lost,
                sink: None,
                deferred: None,
            })),
        };
        // A waiting call delivers its own completion, and its caller may
        // set up delivery of later callbacks once it has the lock (as
        // `dlm lock` does): only a request whose outcome arrives as a
        // callback warns.
        if !waiting && cbs.is_some() && !self.inner.delivery_seen.load(Ordering::Relaxed) {
            self.warn_no_delivery();
        }
        let mut st = self.state();
        let (token, has_bast) = st.new_slot(cbs, &req.resource, req.mode, req.flags, waiting);
        let mut w = lock_write(Command::Lock, token, has_bast);
        w.set_mode(req.mode.as_raw());
        w.set_flags(req.flags.bits());
        if let Some(v) = &req.value_block {
            w.set_lvb(v.as_bytes());
        }
        let (name, len) = req.resource.padded();
        w.set_name_padded(name, len);
        if !self.inner.transport.write_may_wait() {
            // The kernel queues the request and returns: written in the
            // same turn of the state lock, as `lock_op` does, so no record
            // of the lock is taken in before its id is known.
            return self.submit_locked(st, token, &w, read);
        }
        drop(st);
        let (written, gate) = self.gated_write(w.as_bytes(), Redo::Request(token));
        let written = written.and_then(|lkid| u32::try_from(lkid).map_err(|_| Errno::EPROTO));
        match written {
            // The first look ends with the stashed-record check.
            Ok(lkid) if read => {
                let got = self.first_look(token, lkid, gate);
                Ok((LockId { token, lkid }, got?))
            }
            Ok(lkid) => {
                if let Some(s) = self.state().slot(token) {
                    s.lkid = lkid;
                }
                drop(gate);
                self.after_io();
                Ok((LockId { token, lkid }, None))
            }
            Err(e) => {
                self.state().free_slot(token);
                drop(gate);
                self.after_io();
                Err(e.into())
            }
        }
    }

    /// The rest of [`submit`](Self::submit) on a transport whose write
    /// does not wait: write, record the id and (`read`) take the first
    /// look, all under the state lock `st`.
    #[inline(always)]
    fn submit_locked(
        &self,
        mut st: MutexGuard<'_, State>,
        token: u64,
        w: &LockWrite,
        read: bool,
    ) -> Result<(LockId, Option<Done>)> {
        let written = self
            .inner
            .transport
            .write(w.as_bytes())
            .and_then(|lkid| u32::try_from(lkid).map_err(|_| Errno::EPROTO));
        let lkid = match written {
            Ok(lkid) => lkid,
            Err(e) => {
                st.free_slot(token);
                drop(st);
                self.after_io();
                return Err(e.into());
            }
        };
        if let Some(s) = st.slot(token) {
            s.lkid = lkid;
        }
        let mut other = None;
        let got = if read {
            self.read_inline(&mut st, token, &mut other)
        } else {
            Ok(None)
        };
        drop(st);
        self.after_read(other);
        Ok((LockId { token, lkid }, got?))
    }

    /// Send a conversion, unlock, cancel or deadlock-cancel for `id`. With
    /// `wait`, the slot collects the completion for a waiting call, and
    /// the completion, if it is there already, is read right after the
    /// write and returned.
    ///
    /// The DLM reuses lock ids at once, and its cancel does not check the
    /// owner (it even takes the canceller's callback argument): an
    /// operation that reaches it after the lock ended could hit someone
    /// else's lock. So operations on one lock are decided under the state
    /// lock and written in that order (the slot's `writing` holds the next
    /// one back until the write returns), and none is sent once the lock
    /// may have ended: after its unlock was sent, after a cancel was sent,
    /// or for a `NOQUEUE` request (decided during its own write). The
    /// write itself, which on the daemon waits for its answer, is made
    /// with no lock held.
    ///
    /// Inlined into the waiting calls of [`Lock`]; everything else goes
    /// through [`lock_op_call`](Self::lock_op_call).
    ///
    /// On a transport whose write returns without waiting for another
    /// process (the kernel device: the kernel queues the request and
    /// returns), the operation is decided and written in one turn of the
    /// state lock; otherwise (the daemon) see
    /// [`lock_op_split`](Self::lock_op_split).
    #[inline(always)]
    pub(crate) fn lock_op(
        &self,
        cmd: Command,
        id: LockId,
        mode: LockMode,
        flags: LockFlags,
        lvb: Option<&ValueBlock>,
        wait: bool,
    ) -> Result<Option<Done>, Errno> {
        if self.inner.transport.write_may_wait() {
            return self.lock_op_split(cmd, id, mode, flags, lvb, wait);
        }
        let cancel = cmd == Command::Deadlock
            || (cmd == Command::Unlock && flags.contains(LockFlags::CANCEL));
        let unlock = cmd == Command::Unlock && !cancel;
        let mut st = self.state();
        let Some(s) = st.slot(id.token) else {
            // Its end was delivered: the id may be someone else's now.
            return Err(Errno::ENOENT);
        };
        let Some(w) = op_write(s, cmd, id, mode, flags, lvb, cancel)? else {
            // The outcome is decided or on its way: nothing to cancel.
            return Ok(None);
        };
        if let Err(e) = self.inner.transport.write(w.as_bytes()) {
            // Nothing was sent: nothing will come.
            drop(st);
            self.after_io();
            return Err(e);
        }
        // No record was taken in meanwhile: that needs the state lock.
        let Some(s) = st.slot(id.token) else {
            return Err(Errno::ENOENT);
        };
        if cancel {
            s.cancel_sent = true;
            s.deadlock_cancel |= cmd == Command::Deadlock;
        } else if unlock {
            s.ending = true;
        } else {
            self.decide_convert(s, mode, flags, lvb);
        }
        s.waiting |= wait;
        let mut other = None;
        let got = if wait {
            self.read_inline(&mut st, id.token, &mut other)
        } else {
            Ok(None)
        };
        drop(st);
        self.after_read(other);
        got
    }

    /// [`lock_op`](Self::lock_op) for a transport whose write can wait
    /// (the daemon's): the write is made with no lock held.
    #[inline(never)]
    fn lock_op_split(
        &self,
        cmd: Command,
        id: LockId,
        mode: LockMode,
        flags: LockFlags,
        lvb: Option<&ValueBlock>,
        wait: bool,
    ) -> Result<Option<Done>, Errno> {
        let cancel = cmd == Command::Deadlock
            || (cmd == Command::Unlock && flags.contains(LockFlags::CANCEL));
        let unlock = cmd == Command::Unlock && !cancel;
        // Decided and written under the write gate: no replay reads the
        // slots between the decision and the write (it would plan for an
        // operation written afterwards under a lock id it has changed).
        // The gate is taken first (the replay takes it, then the state),
        // and never held while waiting for another write on the slot.
        let (gate, mut st, idx) = loop {
            let gate = self.write_gate();
            let st = self.state();
            let Some(idx) = st.index(id.token) else {
                // Its end was delivered: the id may be someone else's now.
                return Err(Errno::ENOENT);
            };
            if st.slots[idx].writing == 0 {
                break (gate, st, idx);
            }
            drop(st);
            drop(gate);
            drop(self.wait_writing(id.token));
        };
        let s = &mut st.slots[idx];
        let Some(w) = op_write(s, cmd, id, mode, flags, lvb, cancel)? else {
            // The outcome is decided or on its way: nothing to cancel.
            return Ok(None);
        };
        // Decided now, before the write: a record the write brings may be
        // taken in by another thread before the write returns.
        let undo = Undo {
            waiting: s.waiting,
            cancel_sent: s.cancel_sent,
            deadlock_cancel: s.deadlock_cancel,
            requested: s.requested,
            flags: s.flags,
        };
        if cancel {
            s.cancel_sent = true;
            s.deadlock_cancel |= cmd == Command::Deadlock;
        } else if unlock {
            s.ending = true;
        } else {
            self.decide_convert(s, mode, flags, lvb);
        }
        s.waiting |= wait;
        s.writing += 1;
        // Read in the same turn of the state lock as the decision: a
        // replay's plan, which moves it, sees the decision or comes
        // before it.
        let epoch = self.inner.plans.load(Ordering::SeqCst);
        drop(st);
        let (written, gate) = self.write_held(gate, w.as_bytes(), Redo::Planned(epoch));
        let mut st = self.state();
        let Some(s) = st.slot(id.token) else {
            drop(st);
            drop(gate);
            self.after_io();
            // The slot went while the write was on its way: another thread
            // took in the operation's end (an unlock's completion, say)
            // first. Sent, then, and done; only a failed write is an error.
            return written.map(|_| None);
        };
        s.writing = s.writing.saturating_sub(1);
        let waiter = std::mem::take(&mut s.write_waiter);
        if let Err(e) = written {
            // Nothing was sent: nothing will come.
            undo.apply(s, cancel, unlock);
            drop(st);
            drop(gate);
            self.written(waiter);
            self.after_io();
            return Err(e);
        }
        let mut other = None;
        let got = if wait {
            self.read_inline(&mut st, id.token, &mut other)
        } else {
            Ok(None)
        };
        drop(st);
        drop(gate);
        self.written(waiter);
        self.after_read(other);
        got
    }

    /// What a conversion makes of its slot before it is written.
    #[inline]
    fn decide_convert(
        &self,
        s: &mut super::slots::Slot,
        mode: LockMode,
        flags: LockFlags,
        lvb: Option<&ValueBlock>,
    ) {
        // A cancel with nothing in progress (of a granted lock) gets no
        // completion, so it may still be marked: this operation's own
        // cancel must be sent.
        s.cancel_sent = false;
        s.noqueue = flags.contains(LockFlags::NOQUEUE);
        s.requested = Some(mode);
        s.flags = flags - LockFlags::CONVERT;
        if flags.contains(LockFlags::VALBLK) {
            s.has_lvb = true;
            if let Some(v) = lvb {
                s.lvb_out = Some(Box::new(*v));
            }
        }
    }

    /// A write on a slot is over: wake threads that wait to write on it.
    #[inline(always)]
    fn written(&self, waiter: bool) {
        if waiter {
            self.inner.cond.notify_all();
        }
    }

    /// Wait until the write in progress on `token`'s slot is over; the
    /// state lock, with the slot not being written (or gone).
    #[cold]
    #[inline(never)]
    fn wait_writing(&self, token: u64) -> MutexGuard<'_, State> {
        let mut st = self.state();
        loop {
            match st.slot(token) {
                Some(s) if s.writing > 0 => s.write_waiter = true,
                _ => return st,
            }
            st = match self.inner.cond.wait_timeout(st, Duration::from_millis(100)) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// [`lock_op`](Self::lock_op), not inlined.
    #[inline(never)]
    pub(crate) fn lock_op_call(
        &self,
        cmd: Command,
        id: LockId,
        mode: LockMode,
        flags: LockFlags,
        lvb: Option<&ValueBlock>,
        wait: bool,
    ) -> Result<Option<Done>, Errno> {
        self.lock_op(cmd, id, mode, flags, lvb, wait)
    }

    /// Convert lock `id` to `mode` (`DLM_LKF_CONVERT` is added). The
    /// completion goes to the lock's completion callback.
    pub fn convert(
        &self,
        id: LockId,
        mode: LockMode,
        flags: LockFlags,
        lvb: Option<&ValueBlock>,
    ) -> Result<()> {
        let flags = flags | LockFlags::CONVERT;
        self.lock_op_call(Command::Lock, id, mode, flags, lvb, false)
            .map(drop)
            .map_err(Error::Os)
    }

    /// `dlm_ls_unlock()`: unlock (the completion status is `Unlocked`).
    pub fn unlock(&self, id: LockId, flags: LockFlags, lvb: Option<&ValueBlock>) -> Result<()> {
        unlock_flags(flags)?;
        self.lock_op_call(Command::Unlock, id, LockMode::Nl, flags, lvb, false)
            .map(drop)
            .map_err(Error::Os)
    }

    /// Cancel the lock's request or conversion in progress. If nothing is
    /// in progress, nothing happens and no callback comes; nor is anything
    /// sent when the outcome is already decided (a `NOQUEUE` operation) or
    /// a cancel is already on its way. `ENOENT` once the lock has ended.
    ///
    /// ```
    /// # let _daemon = dlm_testkit::PrivateDaemon::start();
    /// use std::sync::mpsc;
    /// use dlm::{Dlm, LockMode, LockRequest, LockspaceFlags, LockspaceName, ResourceName, Status};
    ///
    /// let dlm = Dlm::open()?;
    /// let name = LockspaceName::new("app")?;
    /// let ls = dlm.create_lockspace(&name, LockspaceFlags::empty(), 0o600)?;
    /// let _held = ls.lock(LockRequest::new(ResourceName::new("r")?, LockMode::Ex))?;
    /// let other = Dlm::open()?.open_lockspace(&name)?;
    /// other.start_event_loop()?;
    /// let (tx, rx) = mpsc::channel();
    /// let id = other.request(LockRequest::new(ResourceName::new("r")?, LockMode::Ex), move |_, c| {
    ///     let _ = tx.send(c.status);
    /// })?;
    /// other.cancel(id)?; // it was waiting behind `_held`
    /// assert_eq!(rx.recv()?, Status::Cancelled);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cancel(&self, id: LockId) -> Result<()> {
        let flags = LockFlags::CANCEL;
        self.lock_op_call(Command::Unlock, id, LockMode::Nl, flags, None, false)
            .map(drop)
            .map_err(Error::Os)
    }

    /// `dlm_ls_deadlock_cancel()`: cancel with status `DeadlockCancelled`.
    pub fn deadlock_cancel(&self, id: LockId) -> Result<()> {
        let flags = LockFlags::empty();
        self.lock_op_call(Command::Deadlock, id, LockMode::Nl, flags, None, false)
            .map(drop)
            .map_err(Error::Os)
    }

    /// `dlm_ls_lock_wait()`: ask for a lock and wait for the outcome.
    ///
    /// With `ORPHAN` in the flags this adopts an orphaned `PERSISTENT` lock
    /// of the same resource and mode instead; adoption is synchronous:
    /// `EAGAIN` (an orphan exists in another mode) and `ENOENT` (none)
    /// come back as errors, as the kernel's `write()` returns them.
    pub fn lock(&self, req: LockRequest) -> Result<Outcome<Lock>> {
        let timeout = req.timeout;
        let (mode, flags) = (req.mode, req.flags);
        let adopt = flags.contains(LockFlags::ORPHAN);
        let (mut id, first) = self.submit(req, None, None, !adopt)?;
        if adopt {
            // Adoption is synchronous: the write's success is the grant,
            // and no completion follows.
            if let Some(s) = self.state().slot(id.token) {
                s.lkid = id.lkid;
                s.waiting = false;
                s.ever_granted = true;
                s.granted = Some(mode);
                s.requested = None;
            }
            return Ok(Outcome::Granted(Lock::new(self.clone(), id, mode, None)));
        }
        let completion = match first {
            Some(c) => c,
            None => {
                let c = self.wait_for(id, timeout)?;
                // A replay onto a restarted daemon may have sent the
                // request again, under a new lock id.
                if let Some(s) = self.state().slot(id.token) {
                    if s.lkid != 0 {
                        id.lkid = s.lkid;
                    }
                }
                c
            }
        };
        if completion.status == Status::Granted {
            Ok(Outcome::Granted(Lock::new(
                self.clone(),
                id,
                granted_mode(mode, flags, completion.flags),
                completion.value_block,
            )))
        } else {
            Ok(Outcome::NotGranted(completion.completion()))
        }
    }
}

/// What an operation changed in its slot before its write, to put back if
/// the write fails.
struct Undo {
    waiting: bool,
    cancel_sent: bool,
    deadlock_cancel: bool,
    requested: Option<LockMode>,
    flags: LockFlags,
}

impl Undo {
    #[cold]
    fn apply(self, s: &mut super::slots::Slot, cancel: bool, unlock: bool) {
        s.waiting = self.waiting;
        if cancel {
            s.cancel_sent = false;
            s.deadlock_cancel = self.deadlock_cancel;
        } else if unlock {
            s.ending = false;
        } else {
            s.cancel_sent = self.cancel_sent;
            s.noqueue = false;
            s.requested = self.requested;
            s.flags = self.flags;
            s.lvb_out = None;
        }
    }
}

impl AsFd for Lockspace {
    /// The one fd to poll for callback records (see the type's docs).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.delivery_used();
        self.inner.transport.poll_fd()
    }
}

impl AsRawFd for Lockspace {
    fn as_raw_fd(&self) -> RawFd {
        self.delivery_used();
        self.inner.fd
    }
}
