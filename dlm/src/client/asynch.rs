//! `async` lock requests (feature `async`).
//!
//! A [`LockFuture`] resolves when the lock's completion arrives. It works
//! with any executor: the lockspace's event-loop thread (started on first
//! use) reads the device and wakes the task.
//!
//! # Cancel on drop
//!
//! Dropping a `LockFuture` before it resolves cancels the request
//! (`DLM_LKF_CANCEL`). If the grant wins the race with the cancel, the
//! lock is unlocked as soon as the grant arrives. Either way no lock is
//! left behind, and the lockspace handle stays usable. To bound the wait,
//! wrap the future in your runtime's timeout: the drop does the rest.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::request::granted_mode;
use super::{Lock, LockId, LockRequest, Lockspace, Outcome};
use dlm_proto::error::{Errno, Error, Result};
use dlm_proto::flags::LockFlags;
use dlm_proto::mode::LockMode;
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
        let completion = 'found: {
            for attempt in 0..2 {
                let mut st = ls.state();
                let Some(slot) = st.slot(id.token) else {
                    self.id = None;
                    return Poll::Ready(Err(Error::Os(Errno::ENOENT)));
                };
                if let Some(c) = slot.done.pop_front() {
                    break 'found c;
                }
                // Checked under the state lock, as the loop clears it when
                // it stops on an error (and then wakes every registered
                // waker).
                if ls
                    .inner
                    .loop_running
                    .load(std::sync::atomic::Ordering::SeqCst)
                {
                    slot.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                drop(st);
                // No loop delivers completions: read what is there, and
                // meet the error that stopped the loop if it is still there.
                let restarted = ls.dispatch().and_then(|_| {
                    if attempt == 0 {
                        ls.start_event_loop()
                    } else {
                        Ok(())
                    }
                });
                if let Err(e) = restarted {
                    self.id = None;
                    ls.state().free_slot(id.token);
                    return Poll::Ready(Err(e));
                }
            }
            // The loop stopped again at once: be polled again later rather
            // than spin here.
            cx.waker().wake_by_ref();
            return Poll::Pending;
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
