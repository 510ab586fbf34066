//! A lock's sink: where its ASTs go, as the kernel keeps it per lock
//! (`castaddr`, `castparam`, `bastaddr`, `bastparam`, `user_lksb`), and
//! the completion and blocking closures given to the `dlm` crate.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

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
    /// Counted in [`Shared::with_routines`].
    counted: bool,
}

/// A lock's sink as the `dlm` crate delivers to it (one allocation per
/// lock): the sink and the handle's shared state (weak: the handle's
/// table holds its live locks' sinks).
#[derive(Debug)]
pub(crate) struct LockSink {
    s: Mutex<Sink>,
    shared: Weak<Shared>,
    /// Itself, for the handle's table.
    me: Weak<LockSink>,
}

pub(crate) type SinkRef = Arc<LockSink>;

impl LockSink {
    pub(crate) fn new(s: Sink, shared: &Arc<Shared>) -> SinkRef {
        Arc::new_cyclic(|me| LockSink {
            s: Mutex::new(s),
            shared: Arc::downgrade(shared),
            me: me.clone(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Sink> {
        self.s.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(crate) fn lock(s: &SinkRef) -> MutexGuard<'_, Sink> {
    s.lock()
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
            counted: false,
        }
    }

    /// Count the lock in `shared`'s [`Shared::with_routines`] once it has
    /// an AST or blocking AST routine (until it ends).
    pub(crate) fn count_routines(&mut self, shared: &Shared) {
        if !self.counted && (self.ast.is_some() || self.bast.is_some()) {
            self.counted = true;
            shared.with_routines.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Take the lock out of that count (it ended, or never began).
    pub(crate) fn uncount_routines(&mut self, shared: &Shared) {
        if self.counted {
            self.counted = false;
            shared.with_routines.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// The lock table's hash of a lock id: the kernel's ids are a counter
/// and an index, not chosen by whoever calls, so one multiply spreads
/// them well enough (SipHash, the default, costs more than the rest of a
/// lookup).
#[derive(Debug, Default)]
pub(crate) struct LkidHasher(u64);

impl Hasher for LkidHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// What a handle's locks share with their closures: the lock table and
/// the waiters' wake-up.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// The handle's live locks by lock id.
    locks: Mutex<HashMap<u32, SinkRef, BuildHasherDefault<LkidHasher>>>,
    /// The thread whose waiting call reads the lockspace for everybody.
    pub(crate) reader: Mutex<Option<u64>>,
    pub(crate) cv: Condvar,
    /// ASTs taken in and not yet run.
    due: Mutex<VecDeque<Due>>,
    /// How many: read without the lock, so that running none is cheap.
    due_n: AtomicUsize,
    /// Live locks with an AST or blocking AST routine: while there are
    /// any, an AST may have to run in the middle of a waiting call (a
    /// blocking AST whose routine unlocks what the call waits behind), so
    /// waiting calls wait where ASTs run, not in the `dlm` crate's own
    /// waiting call (see `abi::lock_on`).
    with_routines: AtomicUsize,
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

    pub(crate) fn forget(&self, lkid: u32, sink: &LockSink) {
        let mut t = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if t.get(&lkid).is_some_and(|s| std::ptr::eq(&**s, sink)) {
            t.remove(&lkid);
        }
    }

    /// Whether some live lock has an AST or blocking AST routine.
    pub(crate) fn has_routines(&self) -> bool {
        self.with_routines.load(Ordering::SeqCst) > 0
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
        let mut q = self.due.lock().unwrap_or_else(|p| p.into_inner());
        q.push_back(d);
        self.due_n.store(q.len(), Ordering::SeqCst);
    }

    /// Run the ASTs that are due, in the order they came: fill the lksb
    /// as libdlm's dispatch does, then wake the waiter or call the AST
    /// routine. They run here, after the `dlm` callbacks that took them
    /// in have returned, so that an AST may wait for its own lock's next
    /// completion (which the `dlm` crate delivers to the lock's callback
    /// only once that callback is back).
    pub(crate) fn run_due(&self) {
        loop {
            // Pushed on this thread, or by another whose push this
            // thread's run was told of (the lockspace's state lock orders
            // a record's take-in before the run that follows it).
            if self.due_n.load(Ordering::SeqCst) == 0 {
                return;
            }
            let batch = {
                let mut q = self.due.lock().unwrap_or_else(|p| p.into_inner());
                self.due_n.store(0, Ordering::SeqCst);
                std::mem::take(&mut *q)
            };
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

/// A completion's bookkeeping in the lock's sink: its status as C sees
/// it, whether the lock ended with it, and whether it is the lock's first
/// (the id was not in the sink yet).
fn note(s: &mut Sink, shared: &Shared, id: LockId, c: &Completion) -> (Status, bool, bool) {
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
    if ends {
        s.uncount_routines(shared);
    }
    let first = s.id.is_none();
    s.id = Some(id);
    (status, ends, first)
}

impl dlm::Sink for LockSink {
    /// A completion: the lock's bookkeeping at once, and its AST (or
    /// waiter) due.
    fn completion(&self, id: LockId, c: &Completion) {
        // Once its handle is gone, nothing runs a lock's ASTs.
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let (due, ended, first) = {
            let mut s = self.lock();
            let (status, ends, first) = note(&mut s, &shared, id, c);
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
            shared.forget(id.lkid(), self);
        } else if first {
            // The completion came before the request's write returned (on
            // the AST thread): the AST may already operate on the lock.
            if let Some(me) = self.me.upgrade() {
                shared.insert(id.lkid(), &me);
            }
        }
        shared.push(due);
    }

    /// A blocking callback: the lock's blocking AST routine with its
    /// argument, due. libdlm also copies the kernel's status block into
    /// the lksb here; this library leaves the lksb alone (see libdlm.h).
    fn blocking(&self, _: LockId, _: dlm::LockMode) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let (bast, arg) = {
            let s = self.lock();
            (s.bast, s.bastarg)
        };
        shared.push(Due::Blocking { bast, arg });
    }

    /// libdlm has no such callback: the lock's later operations fail with
    /// the kernel's error.
    fn lost(&self, id: LockId, reason: dlm::LostReason) {
        log::warn!("libdlm: lock {:#x} was lost ({reason:?})", id.lkid());
    }

    /// Always: a conversion may give the lock a blocking AST routine.
    fn wants_blocking(&self) -> bool {
        true
    }
}

/// The completion a waiting call waited for and got back from the `dlm`
/// crate itself (`Lockspace::request_wait` and the like), on the calling
/// thread: the bookkeeping a completion does in the sink, the lock kept in
/// (or dropped from) the handle's table, and the lksb filled. Its status.
pub(crate) fn waited(sink: &SinkRef, shared: &Shared, id: LockId, c: &Completion) -> c_int {
    let (lksb, status, ended, first) = {
        let mut s = sink.lock();
        let (status, ends, first) = note(&mut s, shared, id, c);
        (s.lksb, status.to_user(), ends, first)
    };
    if ended {
        shared.forget(id.lkid(), sink);
    } else if first {
        shared.insert(id.lkid(), sink);
    }
    let value = c.value_block.as_ref().map(|v| *v.as_bytes());
    // SAFETY: the caller gave this lksb for this operation and keeps it
    // valid until the operation is over (libdlm.h); it is over now.
    #[allow(unsafe_code)]
    unsafe {
        ffi::complete(lksb, status, id.lkid(), c.flags.bits(), value.as_ref())
    };
    status
}
