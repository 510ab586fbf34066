//! Waiting calls: the waiter/reader protocol.
//!
//! A waiting call looks for its completion right after its write (one
//! non-blocking read, in the same turn of the state lock). If it is not
//! there, the call waits: when no other thread reads the device and no
//! event loop runs, it takes the reader role and reads (polls the
//! lockspace's one fd) for everybody, handing others' records on; else it
//! waits on the lockspace's condition variable for its completion. No
//! lock is held while a thread polls.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dlm_proto::error::Errno;
use dlm_proto::flags::LockFlags;
use dlm_proto::mode::LockMode;
use dlm_proto::records::{Command, LockResult};
use dlm_proto::status::{Completion, Status};

use super::dispatch::{After, Done, Taken};
use super::lockspace::Lockspace;
use super::request::LockId;
use super::slots::{split_token, State};
use super::transport::{wait_fds, Record, Visit};

/// The longest a reading waiter polls before it looks at its slot again.
const READER_POLL: Duration = Duration::from_millis(200);

/// A waiter's first look, handed the record where it lies.
struct TakeIn<'a, 'b> {
    ls: &'a Lockspace,
    st: &'b mut State,
    token: u64,
    other: &'b mut Option<After>,
}

impl Visit for TakeIn<'_, '_> {
    type Out = Option<Done>;
    #[inline(always)]
    fn visit<R: Record>(self, r: &R) -> Option<Done> {
        self.ls
            .take_in_locked(self.st, r, self.token, self.other)
            .map(|t| t.done(r))
    }
}

impl Lockspace {
    /// Wait for the next completion of `token`, reading the device on this
    /// thread when no other thread does. `None` on timeout. The waiter is
    /// done with the slot once it has its completion.
    ///
    /// The common case never gets here: a waiting call first looks for its
    /// completion right after its write (see [`read_inline`](Self::read_inline)).
    #[inline(never)]
    fn wait_completion(
        &self,
        token: u64,
        deadline: Option<Instant>,
    ) -> Result<Option<Completion>, Errno> {
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            {
                let mut st = self.state();
                let Some(s) = st.slot(token) else {
                    return Err(Errno::ENOENT);
                };
                if let Some(c) = s.done.pop_front() {
                    st.finish(token);
                    return Ok(Some(c));
                }
                if left.is_some_and(|l| l.is_zero()) {
                    return Ok(None);
                }
                if !self.claim_reader(&mut st) {
                    let wait = left
                        .unwrap_or(Duration::from_secs(1))
                        .min(Duration::from_secs(1));
                    // Counted while the state lock is still held, so a
                    // waker that changes state after this check sees it.
                    self.inner.waiters.fetch_add(1, Ordering::SeqCst);
                    drop(match self.inner.cond.wait_timeout(st, wait) {
                        Ok((g, _)) => g,
                        Err(p) => p.into_inner().0,
                    });
                    self.inner.waiters.fetch_sub(1, Ordering::SeqCst);
                    continue;
                }
            }
            // A caller's own `dispatch()` on another thread may take our
            // record; the bounded poll makes the loop look again.
            let rec = self.read_record(Some(left.map_or(READER_POLL, |l| l.min(READER_POLL))));
            match self.take_record(rec, token) {
                Ok(Some(c)) => return Ok(Some(c)),
                Ok(None) => {}
                // Replayed onto a new daemon: this lock's completion (or
                // its resent request's) comes from there.
                Err(e) if super::lockspace::is_conn_failure(e) && self.recover() => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Give up the reader role and take in what it read, if anything (see
    /// [`take_in_locked`](Self::take_in_locked)); wake the waiters, who may
    /// wait for what was read or to read themselves.
    fn take_record(
        &self,
        rec: Result<Option<(LockResult, u32)>, Errno>,
        token: u64,
    ) -> Result<Option<Completion>, Errno> {
        let mut st = self.state();
        st.reading = false;
        let mut other = None;
        let got = match rec {
            Ok(Some((r, epoch))) if self.stale(&r, epoch) => Ok(None),
            Ok(Some((r, _))) => Ok(self
                .take_in_locked(&mut st, &r, token, &mut other)
                .map(|t| t.completion(&r))),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        drop(st);
        self.inner.wake_waiters();
        self.after_read(other);
        got
    }

    /// Take in, under the state lock, a record read for the waiter of
    /// `token`. The waiter's own completion, with nothing queued ahead of
    /// it, comes straight back and the waiter is done with the slot; any
    /// other record goes where it belongs (see [`absorb`](Self::absorb)),
    /// and what is left to do with it once the lock is let go goes to
    /// `other`.
    #[inline(always)]
    pub(crate) fn take_in_locked<R: Record>(
        &self,
        st: &mut State,
        r: &R,
        token: u64,
        other: &mut Option<After>,
    ) -> Option<Taken> {
        if r.bast_mode() == 0 && r.astparam() == token {
            let (idx, gen) = split_token(token);
            let State { slots, free, .. } = st;
            if let Some(s) = slots.get_mut(idx).filter(|s| {
                s.live
                    && s.gen == gen
                    && s.lkid == r.lkid()
                    && s.waiting
                    && !s.abandoned
                    && s.done.is_empty()
            }) {
                let t = self.take_in_state(s, r)?;
                s.finish(idx, free);
                return Some(t);
            }
        }
        *other = Some(self.absorb(st, r));
        None
    }

    /// A waiting call's first look for its completion, in the turn of the
    /// state lock `st` that follows its write: one non-blocking `read()`,
    /// when this thread may read the device (no other thread reads it and
    /// no event loop runs). After a write the completion is usually there
    /// already, so a granted request costs one `write()` and one `read()`,
    /// as on the raw device, and no thread hand-off.
    ///
    /// Another lock's record goes to `other` (see
    /// [`take_in_locked`](Self::take_in_locked)).
    #[inline(always)]
    pub(crate) fn read_inline(
        &self,
        st: &mut State,
        token: u64,
        other: &mut Option<After>,
    ) -> Result<Option<Done>, Errno> {
        if !self.may_read(st) {
            return Ok(None);
        }
        let v = TakeIn {
            ls: self,
            st,
            token,
            other,
        };
        Ok(self.inner.transport.read_visit(v)?.flatten())
    }

    /// [`read_inline`](Self::read_inline) in a turn of the state lock of
    /// its own (a new request is written without the lock), which first
    /// records the lock id the write returned.
    #[inline(always)]
    pub(crate) fn first_look(
        &self,
        token: u64,
        lkid: u32,
        gate: std::sync::RwLockReadGuard<'_, ()>,
    ) -> Result<Option<Done>, Errno> {
        let mut other = None;
        let mut st = self.state();
        if let Some(s) = st.slot(token) {
            s.lkid = lkid;
        }
        let got = self.read_inline(&mut st, token, &mut other);
        drop(st);
        drop(gate);
        self.after_read(other);
        got
    }

    /// Finish, with the state lock let go, what a waiter's read started:
    /// run another lock's callbacks and wake whoever waits for what was
    /// read (`other`); make sure records stashed by a daemon connection
    /// are seen.
    #[inline(always)]
    pub(crate) fn after_read(&self, other: Option<After>) {
        if let Some(after) = other {
            self.pass_on(after);
        }
        self.after_io();
    }

    /// Someone else's record: its callbacks run, its waiter wakes.
    #[cold]
    #[inline(never)]
    fn pass_on(&self, after: After) {
        self.run(after);
        self.inner.wake_waiters();
    }

    /// Whether this thread may read the device now: no other thread holds
    /// the reader role, and no event loop runs (or this is its thread).
    #[inline]
    fn may_read(&self, st: &State) -> bool {
        !st.reading && (!self.inner.loop_running.load(Ordering::SeqCst) || self.on_loop_thread())
    }

    /// Take the reader role for a waiting call, if this thread may read.
    /// The holder reads the device for everybody until it gives the role
    /// up (and wakes the waiters).
    #[inline]
    fn claim_reader(&self, st: &mut State) -> bool {
        if !self.may_read(st) {
            return false;
        }
        st.reading = true;
        true
    }

    /// Whether this is the event-loop thread.
    #[cold]
    fn on_loop_thread(&self) -> bool {
        let t = *self
            .inner
            .loop_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        t == Some(std::thread::current().id())
    }

    /// Block (up to `timeout`) for one record. A read comes before any
    /// poll: the record may be there already.
    fn read_record(&self, timeout: Option<Duration>) -> Result<Option<(LockResult, u32)>, Errno> {
        let t = &self.inner.transport;
        if let Some(r) = t.read_next_tagged()? {
            return Ok(Some(r));
        }
        // The one fd: on a daemon connection it is also readable while
        // records another thread read along with an answer wait.
        if wait_fds(&[t.poll_fd()], false, timeout)? {
            return t.read_next_tagged();
        }
        Ok(None)
    }

    #[cfg(feature = "async")]
    pub(crate) fn take_slot_result(&self, token: u64) {
        self.state().finish(token);
    }

    /// Wait for the completion of the operation in progress on `id` (its
    /// slot already marked waiting), cancelling it after `timeout`: what a
    /// waiting call does when its first look right after the write found
    /// nothing. The slot stops collecting completions when this returns.
    #[inline(never)]
    pub(crate) fn wait_for(&self, id: LockId, timeout: Option<Duration>) -> Result<Done, Errno> {
        // A deadline the clock cannot represent is no deadline.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        match self.wait_completion(id.token, deadline)? {
            Some(c) => Ok(c.into()),
            None => self.cancel_and_wait(id).map(Done::from),
        }
    }

    /// A waiting call's time is up: cancel, then see who won.
    #[cold]
    fn cancel_and_wait(&self, id: LockId) -> Result<Completion, Errno> {
        let cancel = LockFlags::CANCEL;
        self.lock_op_call(Command::Unlock, id, LockMode::Nl, cancel, None, false)?;
        loop {
            // A cancel of a granted lock produces no AST, so the grant
            // (if it won) is the completion we get; poll with a bound.
            let bound = Some(Instant::now() + Duration::from_secs(30));
            if let Some(c) = self.wait_completion(id.token, bound)? {
                return Ok(match c.status {
                    Status::Cancelled => Completion {
                        status: Status::TimedOut,
                        ..c
                    },
                    _ => c,
                });
            }
        }
    }
}
