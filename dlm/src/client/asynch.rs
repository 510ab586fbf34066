//! `async` lock requests, conversions and unlocks (feature `async`).
//!
//! A [`LockFuture`] resolves when the lock's completion arrives;
//! [`Lock::convert_async`] and [`Lock::unlock_async`] give a
//! [`ConvertFuture`] and an [`UnlockFuture`]. They work with any executor:
//! the lockspace's event-loop thread (started on first use) reads the
//! device and wakes the task, so no call blocks the executor's thread.
//!
//! # Cancel on drop
//!
//! Dropping a `LockFuture` before it resolves cancels the request
//! (`DLM_LKF_CANCEL`). If the grant wins the race with the cancel, the
//! lock is unlocked as soon as the grant arrives. Either way no lock is
//! left behind, and the lockspace handle stays usable. To bound the wait,
//! wrap the future in your runtime's timeout: the drop does the rest.
//!
//! Dropping a pending [`ConvertFuture`] cancels the conversion: the lock
//! stays granted, in its old mode or, if the grant won the race, in the
//! new one; [`Lock::mode`] says which once the DLM has answered, and the
//! lock's next operation first takes in that answer (a round trip at
//! most, on the calling thread). Dropping a pending [`UnlockFuture`] lets
//! the unlock finish on its own.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::request::granted_mode;
use super::{Lock, LockId, LockRequest, Lockspace, Outcome};
use dlm_proto::error::{Errno, Error, Result};
use dlm_proto::flags::LockFlags;
use dlm_proto::lvb::ValueBlock;
use dlm_proto::mode::LockMode;
use dlm_proto::records::Command;
use dlm_proto::status::Completion;
use dlm_proto::status::Status;

/// A lock request in flight. Dropping it before it resolves cancels the
/// request (and unlocks the lock if the grant won the race), so no lock
/// is ever left behind.
#[derive(Debug)]
#[must_use = "a LockFuture does nothing unless polled, and cancels the request when dropped"]
pub struct LockFuture {
    ls: Lockspace,
    id: Option<LockId>,
    mode: LockMode,
    flags: LockFlags,
    error: Option<Error>,
}

impl Lockspace {
    /// Ask for a lock and get a future of the outcome. The request is sent
    /// at once; the future only waits. `LockRequest::timeout` is not used
    /// here (see the module docs).
    pub fn lock_async(&self, req: LockRequest) -> LockFuture {
        let (mode, flags) = (req.mode, req.flags);
        let started = self
            .start_event_loop()
            .and_then(|()| self.submit(req, None, None, false))
            .map(|(id, _)| id);
        let (id, error) = match started {
            Ok(id) => (Some(id), None),
            Err(e) => (None, Some(e)),
        };
        LockFuture {
            ls: self.clone(),
            id,
            mode,
            flags,
            error,
        }
    }
}

impl Future for LockFuture {
    type Output = Result<Outcome<Lock>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(e) = self.error.take() {
            return Poll::Ready(Err(e));
        }
        let Some(id) = self.id else {
            return Poll::Ready(Err(Error::Os(Errno::EINVAL)));
        };
        let ls = self.ls.clone();
        let completion = match poll_done(&ls, id, cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Polled::Done(c)) => c,
            Poll::Ready(Polled::Gone) => {
                self.id = None;
                return Poll::Ready(Err(Error::Os(Errno::ENOENT)));
            }
            Poll::Ready(Polled::Failed(e)) => {
                self.id = None;
                ls.state().free_slot(id.token);
                return Poll::Ready(Err(e));
            }
        };
        self.id = None;
        self.ls.take_slot_result(id.token);
        Poll::Ready(Ok(if completion.status == Status::Granted {
            Outcome::Granted(Lock::new(
                self.ls.clone(),
                id,
                granted_mode(self.mode, self.flags, completion.flags),
                completion.value_block.map(Box::new),
            ))
        } else {
            Outcome::NotGranted(completion)
        }))
    }
}

impl Drop for LockFuture {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else {
            return;
        };
        // Still pending: whatever arrives from now on is unwanted.
        let pending_grant = {
            let mut st = self.ls.state();
            match st.slot(id.token) {
                Some(slot) => {
                    slot.waiting = false;
                    slot.abandoned = true;
                    slot.waker = None;
                    // A completion may already be queued for us.
                    slot.done.pop_front()
                }
                None => return,
            }
        };
        match pending_grant {
            Some(c) if c.status == Status::Granted => {
                if let Err(e) = self.ls.unlock(id, LockFlags::empty(), None) {
                    log::warn!("unlock of a dropped lock request failed: {e}");
                }
            }
            Some(_) => self.ls.take_slot_result(id.token),
            None => match self.ls.cancel(id) {
                // ENOENT: the request ended meanwhile, and its slot went
                // with the completion.
                Ok(()) | Err(Error::Os(Errno::ENOENT)) => {}
                Err(e) => log::warn!("cancel of a dropped lock request failed: {e}"),
            },
        }
    }
}

/// What [`poll_done`] found.
enum Polled {
    /// The completion of the operation in progress.
    Done(Completion),
    /// The lock's slot is gone (the lock ended).
    Gone,
    /// No loop delivers completions, and it could not be restarted.
    Failed(Error),
}

/// Poll for the completion of the waiting operation in progress on `id`
/// (its slot marked waiting): queued in the slot by the event loop, which
/// wakes `cx`'s waker when it queues one.
fn poll_done(ls: &Lockspace, id: LockId, cx: &mut Context<'_>) -> Poll<Polled> {
    for attempt in 0..2 {
        let mut st = ls.state();
        let Some(slot) = st.slot(id.token) else {
            return Poll::Ready(Polled::Gone);
        };
        if let Some(c) = slot.done.pop_front() {
            return Poll::Ready(Polled::Done(c));
        }
        // Checked under the state lock, as the loop clears it when it
        // stops on an error (and then wakes every registered waker).
        if ls
            .inner
            .loop_running
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            slot.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        drop(st);
        // No loop delivers completions: read what is there, and meet the
        // error that stopped the loop if it is still there.
        let restarted = ls.dispatch().and_then(|_| {
            if attempt == 0 {
                ls.start_event_loop()
            } else {
                Ok(())
            }
        });
        if let Err(e) = restarted {
            return Poll::Ready(Polled::Failed(e));
        }
    }
    // The loop stopped again at once: be polled again later rather than
    // spin here.
    cx.waker().wake_by_ref();
    Poll::Pending
}

/// An operation sent by a waiting call made as a future: its completion
/// if the write brought it, or the error that stopped it, or neither while
/// it is in flight. Shared by [`ConvertFuture`] and [`UnlockFuture`].
#[derive(Debug)]
struct Sent {
    first: Option<Completion>,
    error: Option<Error>,
    /// Sent, and the completion not yet taken.
    pending: bool,
}

impl Sent {
    /// What `lock_op` returned for a waiting operation.
    fn new(sent: Result<Option<super::dispatch::Done>>) -> Sent {
        match sent {
            Ok(Some(done)) => Sent {
                first: Some(done.completion()),
                error: None,
                pending: false,
            },
            Ok(None) => Sent {
                first: None,
                error: None,
                pending: true,
            },
            Err(e) => Sent {
                first: None,
                error: Some(e),
                pending: false,
            },
        }
    }

    /// Poll for the operation's completion on lock `id`.
    fn poll(
        &mut self,
        ls: &Lockspace,
        id: LockId,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Completion>> {
        if let Some(e) = self.error.take() {
            return Poll::Ready(Err(e));
        }
        if let Some(c) = self.first.take() {
            return Poll::Ready(Ok(c));
        }
        if !self.pending {
            return Poll::Ready(Err(Error::Os(Errno::EINVAL)));
        }
        let got = match poll_done(ls, id, cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Polled::Done(c)) => {
                ls.take_slot_result(id.token);
                Ok(c)
            }
            Poll::Ready(Polled::Gone) => Err(Error::Os(Errno::ENOENT)),
            Poll::Ready(Polled::Failed(e)) => Err(e),
        };
        self.pending = false;
        Poll::Ready(got)
    }
}

impl Lock {
    /// [`convert`](Lock::convert) as a future: the conversion is sent at
    /// once, and the future resolves with its completion. Dropping it
    /// before then cancels the conversion (see the module docs).
    ///
    /// ```
    /// # let _daemon = dlm_testkit::PrivateDaemon::start();
    /// use dlm::{Dlm, LockFlags, LockMode, LockRequest, LockspaceFlags, LockspaceName, ResourceName, Status};
    ///
    /// # let rt = tokio::runtime::Builder::new_current_thread().build()?;
    /// # rt.block_on(async {
    /// let dlm = Dlm::open()?;
    /// let ls = dlm.create_lockspace(&LockspaceName::new("app")?, LockspaceFlags::empty(), 0o600)?;
    /// let req = LockRequest::new(ResourceName::new("disk0")?, LockMode::Ex);
    /// let mut lock = ls.lock_async(req).await?.granted().ok_or("not granted")?;
    /// let c = lock.convert_async(LockMode::Pr, LockFlags::empty(), None).await?;
    /// assert_eq!((c.status, lock.mode()), (Status::Granted, LockMode::Pr));
    /// lock.unlock_async().await?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn convert_async(
        &mut self,
        mode: LockMode,
        flags: LockFlags,
        lvb: Option<&ValueBlock>,
    ) -> ConvertFuture<'_> {
        let flags = flags - LockFlags::CONVERT;
        let sent = self
            .settle()
            .and_then(|()| self.ls.start_event_loop())
            .and_then(|()| {
                self.ls
                    .lock_op(
                        Command::Lock,
                        self.id,
                        mode,
                        flags | LockFlags::CONVERT,
                        lvb,
                        true,
                    )
                    .map_err(Error::from)
            });
        ConvertFuture {
            lock: self,
            mode,
            flags,
            sent: Sent::new(sent),
        }
    }

    /// [`unlock`](Lock::unlock) as a future: the unlock is sent at once,
    /// and the future resolves when it has completed. Dropping it before
    /// then lets the unlock finish on its own.
    pub fn unlock_async(self) -> UnlockFuture {
        self.unlock_with_async(LockFlags::empty(), None)
    }

    /// [`unlock_with`](Lock::unlock_with) as a future; see
    /// [`unlock_async`](Lock::unlock_async).
    pub fn unlock_with_async(mut self, flags: LockFlags, lvb: Option<&ValueBlock>) -> UnlockFuture {
        let (ls, id) = (self.ls.clone(), self.id);
        let sent = super::request::unlock_flags(flags)
            .and_then(|()| self.settle())
            .and_then(|()| ls.start_event_loop())
            .and_then(|()| {
                ls.lock_op(Command::Unlock, id, LockMode::Nl, flags, lvb, true)
                    .map_err(Error::from)
            });
        let sent = Sent::new(sent);
        // Not sent: the lock stays held, and dropping it with the future
        // unlocks it without waiting. Sent: the lock is ours no more.
        let _lock = if sent.error.is_some() {
            Some(self)
        } else {
            self.held = false;
            None
        };
        UnlockFuture {
            ls,
            id,
            sent,
            _lock,
        }
    }
}

/// A conversion in flight ([`Lock::convert_async`]); resolves to its
/// completion, with the lock's mode and value block updated on a grant.
/// Dropping it before then cancels the conversion.
#[derive(Debug)]
#[must_use = "a ConvertFuture cancels the conversion when dropped unpolled"]
pub struct ConvertFuture<'a> {
    lock: &'a mut Lock,
    mode: LockMode,
    flags: LockFlags,
    sent: Sent,
}

impl Future for ConvertFuture<'_> {
    type Output = Result<Completion>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let (ls, id) = (this.lock.ls.clone(), this.lock.id);
        let c = match this.sent.poll(&ls, id, cx) {
            Poll::Ready(Ok(c)) => c,
            other => return other,
        };
        this.lock.take_conversion(this.mode, this.flags, &c);
        Poll::Ready(Ok(c))
    }
}

impl Drop for ConvertFuture<'_> {
    fn drop(&mut self) {
        if !self.sent.pending {
            return;
        }
        let (ls, id) = (self.lock.ls.clone(), self.lock.id);
        let arrived = {
            let mut st = ls.state();
            match st.slot(id.token) {
                Some(slot) => {
                    slot.waker = None;
                    slot.done.pop_front()
                }
                None => return,
            }
        };
        match arrived {
            Some(c) => {
                // It completed meanwhile: as if polled once more.
                ls.take_slot_result(id.token);
                self.lock.take_conversion(self.mode, self.flags, &c);
            }
            None => {
                // Cancel it. Exactly one completion is still owed (the
                // grant, if it won, or the cancel's); the slot stays
                // waiting so that it lands there, and the lock's next
                // operation takes it in first (`Lock::settle`).
                self.lock.owed = true;
                match ls.cancel(id) {
                    // ENOENT: the lock ended meanwhile.
                    Ok(()) | Err(Error::Os(Errno::ENOENT)) => {}
                    Err(e) => log::warn!("cancel of a dropped conversion failed: {e}"),
                }
            }
        }
    }
}

/// An unlock in flight ([`Lock::unlock_async`]); resolves when the unlock
/// has completed.
#[derive(Debug)]
#[must_use = "an UnlockFuture does nothing unless polled (the unlock is sent either way)"]
pub struct UnlockFuture {
    ls: Lockspace,
    id: LockId,
    sent: Sent,
    /// The lock, when the unlock could not be sent: dropped with the
    /// future, it unlocks without waiting.
    _lock: Option<Lock>,
}

impl Future for UnlockFuture {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        this.sent.poll(&this.ls, this.id, cx).map(|r| {
            r.and_then(|c| match c.status {
                Status::Unlocked => Ok(()),
                other => Err(Error::Unexpected(other)),
            })
        })
    }
}

impl Drop for UnlockFuture {
    fn drop(&mut self) {
        if !self.sent.pending {
            return;
        }
        // The unlock goes on; its completion frees the slot.
        let mut st = self.ls.state();
        if let Some(slot) = st.slot(self.id.token) {
            slot.waiting = false;
            slot.waker = None;
            slot.abandoned = true;
            if slot.done.pop_front().is_some() {
                st.finish(self.id.token);
            }
        }
    }
}
