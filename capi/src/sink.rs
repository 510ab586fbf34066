//! A lock's sink: where its ASTs go, as the kernel keeps it per lock
//! (`castaddr`, `castparam`, `bastaddr`, `bastparam`, `user_lksb`), and
//! the completion and blocking closures given to the `dlm` crate.

use std::collections::{HashMap, VecDeque};
use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use dlm::{Completion, LockId, Status};

use crate::ffi::{self, Addr};
use crate::{AstFn, DLM_LVB_LEN};

/// Where a lock's ASTs go; replaced in part by each conversion, unlock and
/// cancel, as the kernel replaces its copy.
#[derive(Debug)]
pub(crate) struct Sink {
    pub(crate) id: Option<LockId>,
    pub(crate) ast: AstFn,
    pub(crate) astarg: Addr,
    pub(crate) bast: AstFn,
    pub(crate) bastarg: Addr,
    pub(crate) lksb: Addr,
    /// A waiting call waits for the operation in progress: its completion
    /// wakes it instead of calling the AST.
    pub(crate) waiter: Option<Arc<AtomicBool>>,
    pub(crate) granted_once: bool,
    /// The lock has ended (unlocked, or its first request failed).
    pub(crate) ended: bool,
    /// A userspace timer cancelled the operation in progress: a
    /// cancellation completes as `ETIMEDOUT`.
    pub(crate) timed_out: bool,
    /// Completions so far (a timer knows whether its operation is over).
    pub(crate) completions: u64,
}

pub(crate) type SinkRef = Arc<Mutex<Sink>>;

pub(crate) fn lock(s: &SinkRef) -> MutexGuard<'_, Sink> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sink {
    pub(crate) fn new(lksb: Addr) -> Sink {
        Sink {
            id: None,
            ast: None,
            astarg: Addr(0),
            bast: None,
            bastarg: Addr(0),
            lksb,
            waiter: None,
            granted_once: false,
            ended: false,
            timed_out: false,
            completions: 0,
        }
    }
}

/// What a handle's locks share with their closures: the lock table and
/// the waiters' wake-up.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// The handle's live locks by lock id.
    locks: Mutex<HashMap<u32, SinkRef>>,
    /// The thread whose waiting call reads the lockspace for everybody.
    pub(crate) reader: Mutex<Option<u64>>,
    pub(crate) cv: Condvar,
    /// ASTs taken in and not yet run.
    due: Mutex<VecDeque<Due>>,
}

impl Shared {
    pub(crate) fn find(&self, lkid: u32) -> Option<SinkRef> {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&lkid)
            .cloned()
    }

    /// Keep `sink` under `lkid`, unless the lock ended already (its
    /// completion may come before the request's write has returned).
    pub(crate) fn insert(&self, lkid: u32, sink: &SinkRef) {
        let mut t = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if !lock(sink).ended {
            t.insert(lkid, sink.clone());
        }
    }

    fn forget(&self, lkid: u32, sink: &SinkRef) {
        let mut t = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if t.get(&lkid).is_some_and(|s| Arc::ptr_eq(s, sink)) {
            t.remove(&lkid);
        }
    }

    /// Wake the waiting calls.
    pub(crate) fn wake(&self) {
        let _g = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        self.cv.notify_all();
    }
}

/// An AST due to run: taken in by a `dlm` callback, run once the
/// dispatch that took it in has returned (see [`Shared::run_due`]).
#[derive(Debug)]
enum Due {
    Completion {
        lksb: Addr,
        status: c_int,
        lkid: u32,
        flags: u8,
        value: Option<[u8; DLM_LVB_LEN]>,
        ast: AstFn,
        arg: Addr,
        waiter: Option<Arc<AtomicBool>>,
    },
    Blocking {
        bast: AstFn,
        arg: Addr,
    },
}

impl Shared {
    fn push(&self, d: Due) {
        self.due
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(d);
    }

    /// Run the ASTs that are due, in the order they came: fill the lksb
    /// as libdlm's dispatch does, then wake the waiter or call the AST
    /// routine. They run here, after the `dlm` callbacks that took them
    /// in have returned, so that an AST may wait for its own lock's next
    /// completion (which the `dlm` crate delivers to the lock's callback
    /// only once that callback is back).
    pub(crate) fn run_due(&self) {
        loop {
            let batch = std::mem::take(&mut *self.due.lock().unwrap_or_else(|p| p.into_inner()));
            if batch.is_empty() {
                return;
            }
            for d in batch {
                match d {
                    Due::Completion {
                        lksb,
                        status,
                        lkid,
                        flags,
                        value,
                        ast,
                        arg,
                        waiter,
                    } => {
                        // SAFETY: the caller gave this lksb for this
                        // operation and keeps it valid until the
                        // operation's AST (libdlm.h).
                        #[allow(unsafe_code)]
                        unsafe {
                            ffi::complete(lksb, status, lkid, flags, value.as_ref())
                        };
                        match waiter {
                            Some(w) => {
                                w.store(true, Ordering::SeqCst);
                                self.wake();
                            }
                            None => ffi::call_ast(ast, arg),
                        }
                    }
                    Due::Blocking { bast, arg } => ffi::call_ast(bast, arg),
                }
            }
        }
    }
}

/// The completion closure of a lock: the lock's bookkeeping at once, and
/// its AST (or waiter) due.
pub(crate) fn on_complete(
    sink: SinkRef,
    shared: Arc<Shared>,
) -> impl FnMut(LockId, &Completion) + Send + 'static {
    move |id, c| {
        let (due, ended, first) = {
            let mut s = lock(&sink);
            let mut status = c.status;
            if status == Status::Cancelled && s.timed_out {
                status = Status::TimedOut;
            }
            s.timed_out = false;
            s.completions += 1;
            let ends = match status {
                Status::Unlocked | Status::Lost => true,
                Status::Granted => false,
                _ => !s.granted_once,
            };
            if status == Status::Granted {
                s.granted_once = true;
            }
            s.ended |= ends;
            let first = s.id.is_none();
            s.id = Some(id);
            let due = Due::Completion {
                lksb: s.lksb,
                status: status.to_user(),
                lkid: id.lkid(),
                flags: c.flags.bits(),
                value: c.value_block.as_ref().map(|v| *v.as_bytes()),
                ast: s.ast,
                arg: s.astarg,
                waiter: s.waiter.take(),
            };
            (due, ends, first)
        };
        if ended {
            shared.forget(id.lkid(), &sink);
        } else if first {
            // The completion came before the request's write returned (on
            // the AST thread): the AST may already operate on the lock.
            shared.insert(id.lkid(), &sink);
        }
        shared.push(due);
    }
}

/// The blocking closure: the lock's blocking AST routine with its
/// argument, due. libdlm also copies the kernel's status block into the
/// lksb here; this library leaves the lksb alone (see libdlm.h).
pub(crate) fn on_blocking(
    sink: SinkRef,
    shared: Arc<Shared>,
) -> impl FnMut(LockId, dlm::LockMode) + Send + 'static {
    move |_, _| {
        let (bast, arg) = {
            let s = lock(&sink);
            (s.bast, s.bastarg)
        };
        shared.push(Due::Blocking { bast, arg });
    }
}
