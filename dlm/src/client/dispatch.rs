//! Taking in callback records: what a record does to its slot, and what is
//! left to do once the state lock is let go (callbacks run unlocked).

use std::collections::VecDeque;

use dlm_proto::error::Result;
use dlm_proto::flags::{LockFlags, StatusFlags};
use dlm_proto::lvb::ValueBlock;
use dlm_proto::mode::LockMode;
use dlm_proto::records::LockResult;
use dlm_proto::status::{Completion, Status};

use super::lockspace::Lockspace;
use super::request::{granted_mode, BlockingFn, CompletionFn, LockId, LostFn, LostReason};
use super::sink::SharedSink;
use super::slots::{make_token, Slot, State};
use super::transport::Record;

/// What a completion record did to its slot, before the completion is
/// built: small enough to stay in registers on the hot path.
#[derive(Clone, Copy)]
pub(crate) struct Taken {
    pub(crate) status: Status,
    pub(crate) flags: StatusFlags,
    /// The lock ended with this completion.
    pub(crate) ends: bool,
}

impl Taken {
    /// The completion, with the record's value block if it carries one.
    #[inline(always)]
    pub(crate) fn completion<R: Record>(self, r: &R) -> Completion {
        Completion {
            status: self.status,
            flags: self.flags,
            value_block: r.lvb().map(|v| ValueBlock::new(*v)),
        }
    }

    /// The same as a [`Done`].
    #[inline(always)]
    pub(crate) fn done<R: Record>(self, r: &R) -> Done {
        Done {
            status: self.status,
            flags: self.flags,
            value_block: r.lvb().map(|v| Box::new(ValueBlock::new(*v))),
        }
    }
}

/// A waiting call's completion on its way back to the caller: a
/// [`Completion`] whose value block, which few requests ask for, is boxed,
/// so that the common case moves two words instead of forty bytes.
pub(crate) struct Done {
    pub(crate) status: Status,
    pub(crate) flags: StatusFlags,
    pub(crate) value_block: Option<Box<ValueBlock>>,
}

impl Done {
    pub(crate) fn completion(self) -> Completion {
        Completion {
            status: self.status,
            flags: self.flags,
            value_block: self.value_block.map(|v| *v),
        }
    }
}

impl From<Completion> for Done {
    fn from(c: Completion) -> Done {
        Done {
            status: c.status,
            flags: c.flags,
            value_block: c.value_block.map(Box::new),
        }
    }
}

/// One event for a [`Sink`](super::Sink).
pub(crate) enum SinkEvent {
    Completion(Completion),
    Blocking(LockMode),
}

/// What a callback record asks for once the state lock is released.
pub(crate) enum After {
    Nothing,
    /// Run the blocking callback, then put it back.
    Blocking(BlockingFn, LockId, LockMode),
    /// Run the completion callback, then put it back (or free the slot
    /// when the lock has ended).
    Complete(CompletionFn, LockId, Completion, bool),
    /// Deliver to the lock's sink (freeing the slot first if `ends`).
    Sink(SharedSink, LockId, SinkEvent),
    /// An abandoned lock was granted: unlock it.
    UnlockAbandoned(LockId),
    /// A held lock was lost: run its lost callback, then the rest.
    Lost(LostFn, LockId, LostReason, Box<After>),
    /// The same for a lock with a sink.
    SinkLost(SharedSink, LockId, LostReason, Box<After>),
    /// Wake the task of the future the completion was queued for.
    #[cfg(feature = "async")]
    Wake(std::task::Waker),
}

impl Lockspace {
    /// Read every callback record available now and run its callbacks;
    /// never blocks. Returns how many records were handled.
    ///
    /// Call it when the lockspace's fd ([`AsRawFd`](std::os::fd::AsRawFd))
    /// polls readable, from your own loop:
    ///
    /// ```
    /// # let _daemon = dlm_testkit::PrivateDaemon::start();
    /// use std::os::fd::AsFd;
    /// use std::sync::{Arc, atomic::{AtomicBool, Ordering}};
    /// use dlm::{Dlm, LockMode, LockRequest, LockspaceFlags, LockspaceName, ResourceName};
    /// use rustix::event::{poll, PollFd, PollFlags};
    ///
    /// let dlm = Dlm::open()?;
    /// let ls = dlm.create_lockspace(&LockspaceName::new("app")?, LockspaceFlags::empty(), 0o600)?;
    /// let done = Arc::new(AtomicBool::new(false));
    /// let d = done.clone();
    /// ls.request(LockRequest::new(ResourceName::new("r")?, LockMode::Ex), move |_, _| d.store(true, Ordering::SeqCst))?;
    /// while !done.load(Ordering::SeqCst) {
    ///     let mut fds = [PollFd::new(&ls, PollFlags::IN)];
    ///     poll(&mut fds, None)?;
    ///     ls.dispatch()?; // runs the completion callback here
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn dispatch(&self) -> Result<usize> {
        self.delivery_used();
        let mut recs = VecDeque::new();
        let read = self.inner.transport.read_available(&mut recs);
        let epoch = match read {
            Ok(epoch) => epoch,
            Err(e) if super::lockspace::is_conn_failure(e) => {
                if self.connection_failed() {
                    // Replayed onto a new daemon: nothing to hand out yet.
                    return Ok(0);
                }
                return Err(e.into());
            }
            Err(e) => {
                self.after_io();
                return Err(e.into());
            }
        };
        let n = recs.len();
        for r in &recs {
            self.handle_one(r, epoch);
        }
        self.after_io();
        self.inner.wake_waiters();
        Ok(n)
    }

    fn handle_one(&self, r: &LockResult, epoch: u32) {
        let mut st = self.state();
        if self.stale(r, epoch) {
            return;
        }
        let after = self.absorb(&mut st, r);
        drop(st);
        self.run(after);
    }

    /// Whether record `r`, read in `epoch`, came from a connection that a
    /// replay has since planned over without it (see
    /// `Transport::epoch`); checked under the state lock, as the replay
    /// moves the epoch.
    #[cold]
    pub(crate) fn stale(&self, r: &LockResult, epoch: u32) -> bool {
        if self.inner.transport.epoch() == epoch {
            return false;
        }
        log::debug!(
            "lockspace {}: a record of the failed connection (token {:#x}, lock {:#x}, status {}) \
             came after the replay planned without it: dropped",
            self.inner.name,
            r.astparam,
            r.lkid,
            r.status
        );
        true
    }

    /// Take in one callback record under the state lock: update the slot,
    /// hand a completion to its waiter, and say what is left to do with
    /// the lock released (callbacks run unlocked).
    pub(crate) fn absorb<R: Record>(&self, st: &mut State, r: &R) -> After {
        let Some(token) = st.own_token(r) else {
            log::debug!(
                "lockspace {} (fd {}): record for unknown token {:#x} (lkid {:#x}, status {})",
                self.inner.name,
                self.inner.fd,
                r.astparam(),
                r.lkid(),
                r.status()
            );
            return After::Nothing;
        };
        // An unlock this process never sent, of a lock it holds: another
        // opener's, and the lock is lost.
        let lost = match st.slot(token) {
            Some(s)
                if r.bast_mode() == 0
                    && r.status() == -dlm_proto::status::EUNLOCK
                    && s.ever_granted
                    && !s.ending =>
            {
                Some(
                    s.cbs
                        .as_mut()
                        .map_or((None, None), |c| (c.on_lost.take(), c.sink.clone())),
                )
            }
            _ => None,
        };
        let rest = self.absorb_own(st, r, token);
        match lost {
            None => rest,
            Some((cb, sink)) => self.lost_by_unlock(cb, sink, r.lkid(), token, rest),
        }
    }

    /// Another opener unlocked one of our held locks: say so, and have
    /// its lost callback run (before the rest of what the record asks).
    #[cold]
    #[inline(never)]
    fn lost_by_unlock(
        &self,
        cb: Option<LostFn>,
        sink: Option<SharedSink>,
        lkid: u32,
        token: u64,
        rest: After,
    ) -> After {
        // Said louder when nobody else hears of it.
        let level = if cb.is_some() || sink.is_some() {
            log::Level::Debug
        } else {
            log::Level::Warn
        };
        log::log!(
            level,
            "lockspace {}: lock {lkid:#x} was unlocked by another opener of the lockspace",
            self.inner.name
        );
        let id = LockId { token, lkid };
        let reason = LostReason::UnlockedByOther;
        match (cb, sink) {
            (_, Some(sink)) => After::SinkLost(sink, id, reason, Box::new(rest)),
            (Some(cb), None) => After::Lost(cb, id, reason, Box::new(rest)),
            (None, None) => rest,
        }
    }

    /// [`absorb`](Self::absorb) for a record known to be for the slot of
    /// `token`.
    fn absorb_own<R: Record>(&self, st: &mut State, r: &R, token: u64) -> After {
        let id = LockId {
            token,
            lkid: r.lkid(),
        };
        if r.bast_mode() != 0 {
            let Ok(mode) = LockMode::try_from(r.bast_mode()) else {
                log::warn!(
                    "lockspace {}: blocking AST with bad mode {}",
                    self.inner.name,
                    r.bast_mode()
                );
                return After::Nothing;
            };
            let Some(s) = st.slot(token) else {
                return After::Nothing;
            };
            let Some(c) = s.cbs.as_mut() else {
                return After::Nothing;
            };
            if let Some(sink) = &c.sink {
                return After::Sink(sink.clone(), id, SinkEvent::Blocking(mode));
            }
            return match c.on_blocking.take() {
                Some(cb) => After::Blocking(cb, id, mode),
                None => After::Nothing,
            };
        }
        let Some(slot) = st.slot(token) else {
            log::debug!(
                "lockspace {} (fd {}): completion for unknown token {token:#x} (lkid {:#x}, status {})",
                self.inner.name,
                self.inner.fd,
                r.lkid(),
                r.status()
            );
            return After::Nothing;
        };
        log::trace!(
            "lockspace {}: record for slot {token:#x}: lock {:#x} status {}",
            self.inner.name,
            r.lkid(),
            r.status()
        );
        let Some((completion, ends)) = self.take_in(slot, r) else {
            return After::Nothing;
        };
        if slot.abandoned {
            // Nobody wants this lock any more: give it back.
            if ends {
                st.free_slot(token);
                return After::Nothing;
            }
            return After::UnlockAbandoned(id);
        }
        if slot.waiting {
            slot.done.push_back(completion);
            // Woken once the state lock is let go: a waker may run anything.
            #[cfg(feature = "async")]
            if let Some(w) = slot.waker.take() {
                return After::Wake(w);
            }
            return After::Nothing;
        }
        if let Some(sink) = slot.cbs.as_ref().and_then(|c| c.sink.clone()) {
            if ends {
                st.free_slot(token);
            }
            return After::Sink(sink, id, SinkEvent::Completion(completion));
        }
        if let Some(q) = slot.cbs.as_mut().and_then(|c| c.deferred.as_mut()) {
            // The closure is running: its thread delivers this next.
            q.push_back((completion, ends));
            return After::Nothing;
        }
        match slot.cbs.as_mut() {
            Some(c) => match c.on_complete.take() {
                Some(cb) => {
                    c.deferred = Some(std::collections::VecDeque::new());
                    After::Complete(cb, id, completion, ends)
                }
                None => {
                    if ends {
                        st.free_slot(token);
                    }
                    After::Nothing
                }
            },
            None => {
                if ends {
                    st.free_slot(token);
                }
                After::Nothing
            }
        }
    }

    /// A completion record's effect on its slot (status, value block, end
    /// of life); the completion and whether the lock ended. `None` for a
    /// status no kernel sends (logged).
    #[inline]
    fn take_in<R: Record>(&self, slot: &mut Slot, r: &R) -> Option<(Completion, bool)> {
        let t = self.take_in_state(slot, r)?;
        Some((t.completion(r), t.ends))
    }

    /// [`take_in`](Self::take_in) without building the completion, which
    /// the caller builds from the record when it needs it (see
    /// [`Taken::completion`]).
    #[inline(always)]
    pub(crate) fn take_in_state<R: Record>(&self, slot: &mut Slot, r: &R) -> Option<Taken> {
        let Ok(status) = Status::from_kernel(r.status(), slot.deadlock_cancel) else {
            self.unknown_status(r.status());
            return None;
        };
        // The operation in progress is over, and with it any cancel of it.
        slot.deadlock_cancel = false;
        slot.cancel_sent = false;
        slot.noqueue = false;
        if let Some(v) = r.lvb() {
            slot.lvb = ValueBlock::new(*v);
        }
        if slot.lvb_out.is_some() {
            self.lvb_written(slot, status == Status::Granted && r.lvb().is_none());
        }
        let flags = StatusFlags::from_bits_retain(r.sb_flags());
        // Lock end of life, as the kernel decides it.
        let ends = match status {
            Status::Unlocked | Status::Lost => true,
            Status::Granted => false,
            _ => !slot.ever_granted,
        };
        if status == Status::Granted {
            slot.ever_granted = true;
            slot.sb_flags = flags;
            slot.granted = slot.requested;
            if flags.contains(StatusFlags::ALTMODE) {
                self.alt_granted(slot);
            }
        }
        slot.requested = None;
        slot.ended = ends;
        Some(Taken {
            status,
            flags,
            ends,
        })
    }

    /// A grant in the alternate mode (`ALTMODE`): which one.
    #[cold]
    #[inline(never)]
    fn alt_granted(&self, slot: &mut Slot) {
        if let Some(m) = slot.requested {
            slot.granted = Some(granted_mode(m, slot.flags, StatusFlags::ALTMODE));
        }
    }

    /// The operation that wrote a value block is over: if `granted`, the
    /// block written is the last known one.
    #[cold]
    #[inline(never)]
    fn lvb_written(&self, slot: &mut Slot, granted: bool) {
        if let Some(v) = slot.lvb_out.take() {
            if granted {
                slot.lvb = *v;
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn unknown_status(&self, status: i32) {
        log::warn!(
            "lockspace {}: completion with unknown status {status}",
            self.inner.name
        );
    }

    /// Run a lock's completion closure for `completion`, then for those
    /// taken in while it ran, in order; then give the closure back to the
    /// lock, or free the lock's slot if one of them ended it.
    fn complete(&self, mut cb: CompletionFn, id: LockId, first: Completion, mut ended: bool) {
        let mut next = Some(first);
        while let Some(c) = next.take() {
            cb(id, &c);
            let mut st = self.state();
            let Some(s) = st.slot(id.token) else {
                return;
            };
            let Some(cbs) = s.cbs.as_mut() else {
                return;
            };
            match cbs.deferred.as_mut().and_then(|q| q.pop_front()) {
                Some((c, ends)) => {
                    ended |= ends;
                    next = Some(c);
                }
                None => {
                    cbs.deferred = None;
                    if ended {
                        st.free_slot(id.token);
                    } else {
                        cbs.on_complete.get_or_insert(cb);
                    }
                    return;
                }
            }
        }
    }

    /// Do what [`absorb`](Self::absorb) left, with no lock held.
    pub(crate) fn run(&self, after: After) {
        match after {
            After::Nothing => {}
            After::Blocking(mut cb, id, mode) => {
                cb(id, mode);
                if let Some(s) = self.state().slot(id.token) {
                    if let Some(c) = s.cbs.as_mut() {
                        c.on_blocking.get_or_insert(cb);
                    }
                }
            }
            After::Complete(cb, id, completion, ends) => self.complete(cb, id, completion, ends),
            After::Sink(sink, id, event) => match event {
                SinkEvent::Completion(c) => sink.completion(id, &c),
                SinkEvent::Blocking(m) => sink.blocking(id, m),
            },
            #[cfg(feature = "async")]
            After::Wake(w) => w.wake(),
            After::UnlockAbandoned(id) => {
                if let Err(e) = self.unlock(id, LockFlags::empty(), None) {
                    log::warn!(
                        "lockspace {}: unlock of abandoned lock failed: {e}",
                        self.inner.name
                    );
                }
            }
            After::Lost(mut cb, id, reason, rest) => {
                cb(id, reason);
                self.run(*rest);
            }
            After::SinkLost(sink, id, reason, rest) => {
                sink.lost(id, reason);
                self.run(*rest);
            }
        }
    }

    /// The daemon connection closed: run, once, the lost callback of every
    /// lock that was held (granted, not being unlocked).
    #[cold]
    #[inline(never)]
    pub(crate) fn tell_closed(&self) {
        use std::sync::atomic::Ordering;
        if self.inner.closed_told.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut unheard = 0;
        let mut sinks = Vec::new();
        let lost: Vec<(LostFn, LockId)> = {
            let mut st = self.state();
            st.slots
                .iter_mut()
                .enumerate()
                .filter(|(_, s)| s.live && s.ever_granted && !s.ending && !s.ended)
                .filter_map(|(idx, s)| {
                    let id = LockId {
                        token: make_token(idx, s.gen),
                        lkid: s.lkid,
                    };
                    if let Some(sink) = s.cbs.as_ref().and_then(|c| c.sink.clone()) {
                        sinks.push((sink, id));
                        return None;
                    }
                    let cb = s.cbs.as_mut().and_then(|c| c.on_lost.take());
                    unheard += usize::from(cb.is_none());
                    cb.map(|cb| (cb, id))
                })
                .collect()
        };
        // Said louder when nobody else hears of it.
        let level = if unheard > 0 {
            log::Level::Warn
        } else {
            log::Level::Debug
        };
        log::log!(
            level,
            "lockspace {}: the connection to the dlm daemon closed; its {} held lock(s) are lost",
            self.inner.name,
            lost.len() + sinks.len() + unheard
        );
        for (mut cb, id) in lost {
            cb(id, LostReason::ConnectionClosed);
        }
        for (sink, id) in sinks {
            sink.lost(id, LostReason::ConnectionClosed);
        }
    }
}
