//! The kernel path: on a handle whose lockspace is the kernel's, this
//! library does with the lockspace device what libdlm does, and nothing
//! more. A request is one `write()` of `struct dlm_write_request` whose
//! `castaddr`, `castparam`, `bastaddr`, `bastparam` and `lksb` are the
//! caller's own; the kernel keeps them with the lock and echoes them in
//! each callback record, so a record says by itself which status block to
//! fill and which routine to call. No table of locks, no allocation per
//! lock.
//!
//! # Who reads the device
//!
//! One thread at a time reads (the *reader*): a waiting call, a
//! `dlm_dispatch()`, or the AST thread. A waiting call that finds no
//! reader becomes it, writes its request, and reads until its own
//! completion has come, running what else it reads as a dispatch would
//! (lite; threaded without an AST thread), or handing it to the AST
//! thread (threaded). Its completion is known by the status block: the
//! kernel echoes the `lksb` of the operation in progress, and a waiting
//! call's `lksb` is its own until it returns. Its `castaddr` is
//! [`wait_mark`], so that later operations of the lock, whose completions
//! the kernel delivers to the lock's last `castaddr`, run no routine. A
//! waiting call made while another thread reads registers its status
//! block before its write; the reader marks it done and wakes it.
//!
//! # The AST thread
//!
//! A waiting call takes in its own completion, so the AST thread has work
//! only while an asynchronous operation is in flight or a lock has a
//! blocking AST routine (`interest`). Only then does it poll the device;
//! otherwise it sleeps on an eventfd that the first such operation
//! writes. A thread blocked in `dlm_ls_lock_wait()` thus costs no thread
//! hand-off per operation, as it does in libdlm.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::raw::{c_int, c_void};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, AtomicUsize};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

use dlm_proto::records::{Command, LockWrite, ResultView, RESULT_WITH_LVB_SIZE, VERSION};

use crate::ffi::{self, Addr};
use crate::registry::Handle;
use crate::{DLM_LVB_LEN, EUNLOCK};

type R<T> = Result<T, c_int>;

const LKF_CONVERT: u32 = dlm_proto::flags::LockFlags::CONVERT.bits();
const LKF_CANCEL: u32 = dlm_proto::flags::LockFlags::CANCEL.bits();
const LKF_ORPHAN: u32 = dlm_proto::flags::LockFlags::ORPHAN.bits();
const LKF_VALBLK: u32 = dlm_proto::flags::LockFlags::VALBLK.bits();
/// In [`Direct::wants`]: one waiting call of a thread that is not the
/// reader (counted in twos), and the AST thread waiting for the reader.
const WAITER: usize = 2;
const AST_WANTS: usize = 1;
/// How deep waiting calls nest on the reading thread (an AST that waits,
/// from a wait) before the rest register as other threads' do.
const NEST: usize = 8;

/// The completion routine of a waiting call's operations. The kernel
/// needs one; nothing calls it (the dispatch knows this address).
extern "C" fn wait_mark(_: *mut c_void) {
    log::error!("libdlm: the waiting calls' completion mark was called");
}

#[inline(always)]
fn mark() -> u64 {
    wait_mark as *const () as usize as u64
}

/// A kernel handle's device and the state of its readers.
#[derive(Debug)]
pub(crate) struct Direct {
    /// The lockspace device: a duplicate of the lockspace's own fd (the
    /// same open file), closed only when the last user of the handle is
    /// done with it.
    fd: OwnedFd,
    /// The thread reading the device (`pthread_self()`), 0 for none.
    reader: AtomicU64,
    /// The reader's own waiting calls, innermost last: their status
    /// blocks, 0 once done (an lksb is never NULL). Only the reader
    /// touches them.
    own: [AtomicUsize; NEST],
    depth: AtomicUsize,
    /// Waiting calls of threads that are not the reader.
    waits: Mutex<Vec<(usize, bool)>>,
    /// Who waits for the reader to go, in one word so that the reader's
    /// release reads one: [`WAITER`] for each of `waits`, and [`AST_WANTS`]
    /// while the AST thread waits for the reader to finish.
    wants: AtomicUsize,
    cv: Condvar,
    /// Asynchronous operations in flight (their completions are the AST
    /// thread's to run).
    interest: AtomicIsize,
    /// Locks with a blocking AST routine.
    basts: Mutex<Vec<u32>>,
    nbasts: AtomicUsize,
    /// Operations under a userspace timeout.
    timers: Mutex<Vec<Timer>>,
    ntimers: AtomicUsize,
    /// `ntimers + nbasts`: whether a completion needs [`Direct::take_slow`],
    /// in one word for the common case's test.
    extra: AtomicUsize,
    /// ASTs a waiting call read for the AST thread to run.
    due: Mutex<VecDeque<Rec>>,
    ndue: AtomicUsize,
    /// Wakes the AST thread.
    wake: OwnedFd,
    /// The AST thread's last wait saw the eventfd readable (only that
    /// thread touches this).
    woken: AtomicBool,
    /// The AST thread (`pthread_self()`), 0 for none.
    ast_tid: AtomicU64,
    /// The requests of a waiting call that became the reader
    /// ([`Role::Own`]), by [`Solo`]: filled in place, every field each
    /// time, so that no call zeroes a request of its own. Only the thread
    /// that holds `reader` touches them, and only until its `write()` has
    /// returned (the kernel has copied the request by then).
    solo: [UnsafeCell<LockWrite>; 2],
}

// SAFETY: every field but `solo` is Sync. `solo` is touched only by the
// thread that moved `reader` from 0 to its own id (`claim`, a SeqCst
// compare-exchange) and before it stores 0 there again (`release`, a
// SeqCst store): one thread at a time, each seeing the last one's writes,
// as under a mutex.
unsafe impl Sync for Direct {}

/// Which of [`Direct::solo`]'s requests.
#[derive(Clone, Copy)]
enum Solo {
    Lock = 0,
    Unlock = 1,
}

#[derive(Debug)]
struct Timer {
    lksb: usize,
    seq: u64,
    lkid: u32,
    fired: bool,
}

/// A callback record, decoded.
#[derive(Debug)]
struct Rec {
    bast: bool,
    astaddr: u64,
    astparam: u64,
    lksb: usize,
    status: c_int,
    lkid: u32,
    flags: u8,
    lvb: Option<[u8; DLM_LVB_LEN]>,
}

impl Rec {
    /// Fill the status block (completions), then call the routine.
    fn run(&self) {
        if !self.bast {
            // SAFETY: the kernel echoes the lksb the caller gave for this
            // operation, valid until its AST (libdlm.h).
            unsafe {
                ffi::complete(
                    Addr(self.lksb),
                    self.status,
                    self.lkid,
                    self.flags,
                    self.lvb.as_ref(),
                )
            };
        }
        call(self.astaddr, self.astparam);
    }
}

/// Call the routine at `addr` with `arg`, unless it is NULL or the mark.
fn call(addr: u64, arg: u64) {
    if addr == 0 || addr == mark() {
        return;
    }
    // SAFETY: the kernel echoes the castaddr/bastaddr the caller gave for
    // this lock, a `void (*)(void *)` (libdlm.h).
    let f: unsafe extern "C" fn(*mut c_void) = unsafe { std::mem::transmute(addr as usize) };
    ffi::call_ast(Some(f), Addr(arg as usize));
}

/// A record as read: the result and its value block.
type Buf = std::mem::MaybeUninit<[u8; RECORD_MAX]>;
const RECORD_MAX: usize = RESULT_WITH_LVB_SIZE;

/// The record `read()` wrote into `buf`, `n` bytes (at most
/// [`RECORD_MAX`]), checked.
#[inline(always)]
fn view(buf: &Buf, n: usize) -> R<ResultView<'_>> {
    // SAFETY: read() wrote the first n bytes of buf, n <= RECORD_MAX (the
    // length it was given).
    let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
    ResultView::parse(bytes).map_err(|e| e.raw())
}

/// Fill the status block the kernel echoed with a completion, as
/// libdlm's dispatch does (positive status; the value block copied when
/// the record carries one).
#[inline(always)]
fn fill(v: &ResultView<'_>, lksb: usize, status: c_int) {
    // SAFETY: the kernel echoes the lksb the caller gave for this
    // operation, valid until its AST (libdlm.h).
    unsafe { ffi::complete(Addr(lksb), status, v.lkid(), v.sb_flags(), v.lvb()) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn last_errno() -> c_int {
    ffi::last_errno(libc::EIO)
}

/// The role a thread has for the device.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// It became the reader.
    Own,
    /// It was the reader already (a call nested in an AST it runs).
    Nested,
    /// Another thread reads.
    Other,
}

/// What a lock call asks of the device, after the checks libdlm makes.
pub(crate) struct Op<'a> {
    pub(crate) mode: u8,
    pub(crate) flags: u32,
    pub(crate) lksb: Addr,
    pub(crate) name: &'a [u8],
    pub(crate) ast: u64,
    pub(crate) astarg: u64,
    pub(crate) bast: u64,
    pub(crate) timeout_cs: u64,
}

/// Fill `w`, a `Command::Lock` request, with lock call `op` (`wait`: a
/// waiting call's, whose completion routine is [`wait_mark`]). Every field
/// a lock call sets is written, so that `w` may be a reused one (the
/// reader's, [`Direct::solo`]); filled in place, in the caller's frame or
/// there: a request returned by value is copied.
#[inline(always)]
fn lock_write(w: &mut LockWrite, op: &Op<'_>, wait: bool) -> R<()> {
    w.set_mode(op.mode);
    w.set_flags(op.flags);
    let (cast, castarg) = if wait {
        (mark(), 0)
    } else {
        (op.ast, op.astarg)
    };
    w.set_user_args(castarg, cast, op.astarg, op.bast, op.lksb.0 as u64);
    if op.flags & LKF_CONVERT != 0 {
        // SAFETY: lksb is valid by the caller's contract (checked
        // non-NULL).
        w.set_lkid(unsafe { ffi::lkid(op.lksb) });
        // SAFETY: as above; VALBLK with a value block was checked.
        match unsafe { ffi::lvb(op.lksb) }.filter(|_| op.flags & LKF_VALBLK != 0) {
            Some(v) => w.set_lvb(&v),
            None => w.set_lvb(&[0; DLM_LVB_LEN]),
        }
        w.set_name(&[]).map_err(|e| e.raw())?;
    } else {
        w.set_lkid(0);
        w.set_lvb(&[0; DLM_LVB_LEN]);
        w.set_name(op.name).map_err(|e| e.raw())?;
    }
    Ok(())
}

/// Fill `w`, a `Command::Unlock` request, with an unlock or cancel (every
/// field an unlock sets, as [`lock_write`]; its AST addresses stay zero,
/// as in a new request and in [`Direct::solo`]'s, which no lock call
/// fills).
#[inline(always)]
fn unlock_write(w: &mut LockWrite, lkid: u32, flags: u32, lksb: Addr, astarg: u64) {
    w.set_flags(flags);
    w.set_lkid(lkid);
    w.set_castparam_lksb(astarg, lksb.0 as u64);
    // The value block an unlock from PW/EX with VALBLK writes: the
    // lksb's, or zeros (libdlm sends uninitialised stack bytes).
    // SAFETY: lksb is valid by the caller's contract (non-NULL).
    match unsafe { ffi::lvb(lksb) } {
        Some(v) => w.set_lvb(&v),
        None => w.set_lvb(&[0; DLM_LVB_LEN]),
    }
}

/// The lock id of lock call `op` once its write returned `n`: the
/// lksb's for a conversion, else the new lock's (the write's result).
#[inline(always)]
fn op_lkid(op: &Op<'_>, n: i64) -> u32 {
    if op.flags & LKF_CONVERT != 0 {
        // SAFETY: lksb is valid by the caller's contract (checked
        // non-NULL).
        unsafe { ffi::lkid(op.lksb) }
    } else {
        n as u32
    }
}

static TIMER_SEQ: AtomicU64 = AtomicU64::new(1);

impl Direct {
    /// The kernel path over the lockspace device `fd`.
    pub(crate) fn new(fd: RawFd) -> R<Direct> {
        // SAFETY: fd is the lockspace's open device (borrowed); the
        // duplicate is a new fd that only this value owns.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(last_errno());
        }
        // SAFETY: as above.
        let dup = unsafe { OwnedFd::from_raw_fd(dup) };
        // SAFETY: no pointers; a new fd or -1.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(last_errno());
        }
        // SAFETY: a new fd that only this value owns.
        let wake = unsafe { OwnedFd::from_raw_fd(efd) };
        Ok(Direct {
            fd: dup,
            reader: AtomicU64::new(0),
            own: Default::default(),
            depth: AtomicUsize::new(0),
            waits: Mutex::new(Vec::new()),
            wants: AtomicUsize::new(0),
            cv: Condvar::new(),
            interest: AtomicIsize::new(0),
            basts: Mutex::new(Vec::new()),
            nbasts: AtomicUsize::new(0),
            timers: Mutex::new(Vec::new()),
            ntimers: AtomicUsize::new(0),
            extra: AtomicUsize::new(0),
            due: Mutex::new(VecDeque::new()),
            ndue: AtomicUsize::new(0),
            wake,
            woken: AtomicBool::new(false),
            ast_tid: AtomicU64::new(0),
            solo: [
                UnsafeCell::new(LockWrite::new(Command::Lock, VERSION)),
                UnsafeCell::new(LockWrite::new(Command::Unlock, VERSION)),
            ],
        })
    }

    #[inline(always)]
    fn write(&self, w: &LockWrite) -> R<i64> {
        let b = w.as_bytes();
        // SAFETY: b is readable for its length; fd is open (owned).
        let n = unsafe { libc::write(self.fd.as_raw_fd(), b.as_ptr().cast(), b.len()) };
        if n < 0 {
            return Err(last_errno());
        }
        Ok(n as i64)
    }

    /// One `read()` of a record into `buf`: its length, 0 for none now.
    #[inline(always)]
    fn read_raw(&self, buf: &mut Buf) -> R<usize> {
        // SAFETY: buf is writable for its length; fd is open (owned).
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), RECORD_MAX) };
        if n < 0 {
            let e = last_errno();
            return if e == libc::EAGAIN || e == libc::EINTR {
                Ok(0)
            } else {
                Err(e)
            };
        }
        Ok(n as usize)
    }

    /// Read one record: `None` for none now.
    #[inline(always)]
    fn read_view<'b>(&self, buf: &'b mut Buf) -> R<Option<ResultView<'b>>> {
        let n = self.read_raw(buf)?;
        if n == 0 {
            return Ok(None);
        }
        view(buf, n).map(Some)
    }

    /// Read one record and take it in: whether there was one.
    #[inline(always)]
    fn read_take(&self, buf: &mut Buf, inline: bool) -> R<bool> {
        match self.read_view(buf)? {
            Some(v) => {
                self.take(&v, inline);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    #[inline(always)]
    fn claim(&self, me: u64) -> Role {
        match self.reader.compare_exchange(0, me, SeqCst, SeqCst) {
            Ok(_) => Role::Own,
            Err(x) if x == me => Role::Nested,
            Err(_) => Role::Other,
        }
    }

    /// Set `ntimers` or `nbasts` (`c`, under its list's lock) to `n`,
    /// and `extra` with it: the count it had.
    fn set_count(&self, c: &AtomicUsize, n: usize) -> usize {
        let was = c.swap(n, SeqCst);
        if n > was {
            self.extra.fetch_add(n - was, SeqCst);
        } else if was > n {
            self.extra.fetch_sub(was - n, SeqCst);
        }
        was
    }

    /// Whether threads other than the reader have waiting calls.
    #[inline(always)]
    fn waiters(&self) -> bool {
        self.wants.load(SeqCst) >= WAITER
    }

    #[inline(always)]
    fn release(&self) {
        self.reader.store(0, SeqCst);
        if self.wants.load(SeqCst) != 0 {
            self.release_wake();
        }
    }

    /// Wake who waits for the reader to go: other threads' waiting
    /// calls, the AST thread.
    #[cold]
    #[inline(never)]
    fn release_wake(&self) {
        if self.waiters() {
            let _g = lock(&self.waits);
            self.cv.notify_all();
        }
        if self.wants.load(SeqCst) & AST_WANTS != 0
            && self.wants.fetch_and(!AST_WANTS, SeqCst) & AST_WANTS != 0
        {
            self.wake_ast();
        }
    }

    fn wake_ast(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: 8 readable bytes, as an eventfd write wants; the fd is
        // open (owned).
        let _ = unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), 8) };
    }

    /// Whether the calling thread is the AST thread.
    #[inline(always)]
    fn on_ast_thread(&self, me: u64) -> bool {
        self.ast_tid.load(SeqCst) == me
    }

    /// Take in one record (on the reading thread). `inline`: run its AST
    /// here; otherwise hand it to the AST thread.
    #[inline(always)]
    fn take(&self, v: &ResultView<'_>, inline: bool) {
        let bast = v.bast_mode() != 0;
        let mut status = v.status().wrapping_neg();
        let lksb = v.user_lksb() as usize;
        if !bast {
            if self.extra.load(Relaxed) != 0 {
                status = self.take_slow(v, lksb, status);
            }
            // A waiting call's completion: the reader's own (innermost
            // first), or another thread's.
            let mut i = self.depth.load(Relaxed);
            while i > 0 {
                i -= 1;
                if self.own[i].load(Relaxed) == lksb {
                    fill(v, lksb, status);
                    self.own[i].store(0, Relaxed);
                    return;
                }
            }
            if self.waiters() && self.take_registered(v, lksb, status) {
                return;
            }
            self.interest.fetch_sub(1, SeqCst);
        }
        if inline {
            if !bast {
                fill(v, lksb, status);
            }
            call(v.astaddr(), v.astparam());
        } else {
            self.hand_over(Rec {
                bast,
                astaddr: v.astaddr(),
                astparam: v.astparam(),
                lksb,
                status,
                lkid: v.lkid(),
                flags: v.sb_flags(),
                lvb: v.lvb().copied(),
            });
        }
    }

    /// Timers and blocking-AST bookkeeping of a completion.
    #[cold]
    fn take_slow(&self, v: &ResultView<'_>, lksb: usize, mut status: c_int) -> c_int {
        if self.ntimers.load(SeqCst) > 0 {
            status = self.timer_done(lksb, status);
        }
        if status == EUNLOCK && self.nbasts.load(SeqCst) > 0 {
            self.forget_bast(v.lkid());
        }
        status
    }

    /// Another thread's waiting call's completion, if it is one.
    #[cold]
    fn take_registered(&self, v: &ResultView<'_>, lksb: usize, status: c_int) -> bool {
        let mut w = lock(&self.waits);
        let Some(e) = w.iter_mut().find(|e| e.0 == lksb && !e.1) else {
            return false;
        };
        fill(v, lksb, status);
        e.1 = true;
        self.cv.notify_all();
        true
    }

    #[cold]
    fn hand_over(&self, r: Rec) {
        lock(&self.due).push_back(r);
        self.ndue.fetch_add(1, SeqCst);
        self.wake_ast();
    }

    /// Run the ASTs handed to the AST thread.
    fn run_due(&self) {
        while self.ndue.load(SeqCst) > 0 {
            let batch = std::mem::take(&mut *lock(&self.due));
            self.ndue.fetch_sub(batch.len(), SeqCst);
            for r in batch {
                r.run();
            }
        }
    }

    /// Read and take in every record there is now.
    fn drain(&self, inline: bool) -> R<usize> {
        let mut buf = Buf::uninit();
        let mut n = 0;
        while self.read_take(&mut buf, inline)? {
            n += 1;
        }
        Ok(n)
    }

    /// Whether ASTs read on this thread run here: always without an AST
    /// thread (lite; threaded before `dlm_ls_pthread_init()`), else on it.
    #[inline(always)]
    fn inline(&self, has_thread: bool, me: u64) -> bool {
        !has_thread || self.on_ast_thread(me)
    }

    /// `dlm_dispatch()`: run the ASTs of every record there is now. When
    /// another thread reads, it runs them.
    pub(crate) fn dispatch(&self, has_thread: bool) -> R<usize> {
        let me = ffi::thread_self();
        let role = self.claim(me);
        if role == Role::Other {
            return Ok(0);
        }
        let r = self.drain(self.inline(has_thread, me));
        if role == Role::Own {
            self.release();
        }
        r
    }

    /// Write `w` as a waiting call's operation on status block `lksb`
    /// and wait for its completion (in the lksb when this returns).
    ///
    /// The common case is kept short: a thread that becomes the reader
    /// (so no waiting call of its own is in progress) and whose first
    /// record is its completion, with no timer or blocking AST to keep,
    /// fills its status block and is done, without registering the wait
    /// in `own`. Only a record for someone else needs the registration,
    /// since taking it in may run an AST that makes a nested waiting
    /// call, which must find this one's completion if it reads it.
    #[inline(always)]
    fn write_wait(
        &self,
        kind: Solo,
        lksb: Addr,
        has_thread: bool,
        fill: impl FnOnce(&mut LockWrite) -> R<()>,
    ) -> R<()> {
        let me = ffi::thread_self();
        let role = self.claim(me);
        if role == Role::Own {
            // SAFETY: this thread holds `reader` (see `solo`) until the
            // release below, and no other reference to the request lives
            // past this call.
            let w = unsafe { &mut *self.solo[kind as usize].get() };
            let r = fill(w).and_then(|()| self.write_read_solo(w, lksb, has_thread, me));
            self.release();
            return r;
        }
        let mut w = LockWrite::new(
            match kind {
                Solo::Lock => Command::Lock,
                Solo::Unlock => Command::Unlock,
            },
            VERSION,
        );
        fill(&mut w)?;
        let depth = self.depth.load(Relaxed);
        if role == Role::Other || depth >= NEST {
            return self.write_wait_other(&w, lksb, role, has_thread, me);
        }
        self.write(&w)?;
        self.own[depth].store(lksb.0, Relaxed);
        self.depth.store(depth + 1, Relaxed);
        self.read_own(lksb, depth, self.inline(has_thread, me))
    }

    /// [`write_wait`](Self::write_wait) for a thread that has just
    /// become the reader (nothing in `own`).
    #[inline(always)]
    fn write_read_solo(&self, w: &LockWrite, lksb: Addr, has_thread: bool, me: u64) -> R<()> {
        self.write(w)?;
        let mut buf = Buf::uninit();
        let got = self.read_raw(&mut buf)?;
        if got > 0 {
            let v = view(&buf, got)?;
            if v.bast_mode() == 0
                && v.user_lksb() as usize == lksb.0
                && self.extra.load(Relaxed) == 0
            {
                fill(&v, lksb.0, v.status().wrapping_neg());
                return Ok(());
            }
        }
        self.solo_slow(&buf, got, lksb, has_thread, me)
    }

    /// The rest of a solo waiting call whose first read was not its
    /// completion (`got`: the length of the record it read into `buf`,
    /// 0 for none; parsed already). The record is parsed again here, so
    /// that the common case keeps no view of it past its own test.
    #[cold]
    #[inline(never)]
    fn solo_slow(&self, buf: &Buf, got: usize, lksb: Addr, has_thread: bool, me: u64) -> R<()> {
        let inline = self.inline(has_thread, me);
        self.own[0].store(lksb.0, Relaxed);
        self.depth.store(1, Relaxed);
        let first = if got > 0 {
            view(buf, got).map(|v| self.take(&v, inline))
        } else {
            self.poll(1000)
        };
        if let Err(e) = first {
            self.depth.store(0, Relaxed);
            return Err(e);
        }
        self.read_own(lksb, 0, inline)
    }

    /// Read until the completion of own waiting call `depth` (status
    /// block `lksb`, registered in `own[depth]`, with `depth + 1` calls
    /// in `own`) has come; `depth` calls are left in `own` on return.
    #[inline(always)]
    fn read_own(&self, lksb: Addr, depth: usize, inline: bool) -> R<()> {
        let mut buf = Buf::uninit();
        let mut r = Ok(());
        while self.own[depth].load(Relaxed) == lksb.0 {
            match self.read_take(&mut buf, inline) {
                Ok(true) => {}
                Ok(false) => {
                    if let Err(e) = self.poll(1000) {
                        r = Err(e);
                        break;
                    }
                }
                Err(e) => {
                    r = Err(e);
                    break;
                }
            }
        }
        self.depth.store(depth, Relaxed);
        r
    }

    /// A waiting call while another thread reads (or nested too deep).
    #[cold]
    #[inline(never)]
    fn write_wait_other(
        &self,
        w: &LockWrite,
        lksb: Addr,
        role: Role,
        has_thread: bool,
        me: u64,
    ) -> R<()> {
        {
            let mut g = lock(&self.waits);
            g.push((lksb.0, false));
            self.wants.fetch_add(WAITER, SeqCst);
        }
        let r = self
            .write(w)
            .and_then(|_| self.wait_registered(lksb, role, has_thread, me));
        let mut g = lock(&self.waits);
        if let Some(i) = g.iter().position(|e| e.0 == lksb.0) {
            g.swap_remove(i);
        }
        self.wants.fetch_sub(WAITER, SeqCst);
        r
    }

    fn wait_registered(&self, lksb: Addr, role: Role, has_thread: bool, me: u64) -> R<()> {
        let inline = self.inline(has_thread, me);
        loop {
            let mut g = lock(&self.waits);
            if g.iter().any(|e| e.0 == lksb.0 && e.1) {
                return Ok(());
            }
            // The reader (this thread, nested too deep, or another) or,
            // with none, this thread.
            let mine = match role {
                Role::Nested => Role::Nested,
                _ => self.claim(me),
            };
            if mine == Role::Other {
                g = self
                    .cv
                    .wait_timeout(g, Duration::from_millis(200))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                drop(g);
                continue;
            }
            drop(g);
            let r = match self.drain(inline) {
                Ok(0) => self.poll(200),
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            };
            if mine == Role::Own {
                self.release();
            }
            r?;
        }
    }

    #[cold]
    #[inline(never)]
    fn poll(&self, ms: c_int) -> R<()> {
        ffi::poll_in(&[self.fd.as_raw_fd()], ms).map(|_| ())
    }

    /// An asynchronous operation is about to be written: the AST thread
    /// has work.
    fn async_begin(&self, has_thread: bool) {
        if self.interest.fetch_add(1, SeqCst) == 0 && has_thread {
            self.wake_ast();
        }
    }

    #[cold]
    #[inline(never)]
    fn note_bast(&self, lkid: u32, bast: bool, has_thread: bool) {
        if !bast && self.nbasts.load(SeqCst) == 0 {
            return;
        }
        let mut b = lock(&self.basts);
        let at = b.iter().position(|&x| x == lkid);
        match (bast, at) {
            (true, None) => b.push(lkid),
            (false, Some(i)) => {
                b.swap_remove(i);
            }
            _ => {}
        }
        let was = self.set_count(&self.nbasts, b.len());
        if was == 0 && !b.is_empty() && has_thread {
            self.wake_ast();
        }
    }

    fn forget_bast(&self, lkid: u32) {
        let mut b = lock(&self.basts);
        if let Some(i) = b.iter().position(|&x| x == lkid) {
            b.swap_remove(i);
        }
        self.set_count(&self.nbasts, b.len());
    }

    fn timer_done(&self, lksb: usize, status: c_int) -> c_int {
        let mut t = lock(&self.timers);
        if let Some(i) = t.iter().position(|x| x.lksb == lksb) {
            let x = t.swap_remove(i);
            self.set_count(&self.ntimers, t.len());
            if x.fired && status == crate::ECANCEL {
                return libc::ETIMEDOUT;
            }
        }
        status
    }

    /// A lock request or conversion (`wait`: a waiting call). Its result
    /// as the call returns it (lite: -1 with errno = status).
    #[inline]
    pub(crate) fn lock(&self, h: &Arc<Handle>, op: &Op<'_>, wait: bool) -> R<()> {
        let has_thread = h.seam.has_thread();
        let convert = op.flags & LKF_CONVERT != 0;
        let timer = (op.timeout_cs > 0).then(|| self.timer_arm(op.lksb));
        let orphan = !convert && op.flags & LKF_ORPHAN != 0;
        // The lock id: the write's result (a new lock's), or, for a
        // waiting call, the status block's once its completion is in.
        let r = if wait && !orphan {
            self.write_wait(Solo::Lock, op.lksb, has_thread, |w| lock_write(w, op, wait))
                // SAFETY: lksb is valid by the caller's contract.
                .map(|()| unsafe { ffi::lkid(op.lksb) })
        } else {
            let mut w = LockWrite::new(Command::Lock, VERSION);
            lock_write(&mut w, op, wait).and_then(|()| {
                if !orphan {
                    self.async_begin(has_thread);
                }
                let r = self.write(&w);
                if r.is_err() && !orphan {
                    self.interest.fetch_sub(1, SeqCst);
                }
                r.map(|n| op_lkid(op, n))
            })
        };
        let lkid = match r {
            Ok(lkid) => lkid,
            Err(e) => {
                if let Some(seq) = timer {
                    self.timer_cancel(op.lksb, seq);
                }
                return Err(e);
            }
        };
        if !wait || orphan {
            // SAFETY: as above.
            unsafe { ffi::set_lkid(op.lksb, lkid) };
        }
        if orphan && wait {
            // Adoption is decided in the write: no AST follows.
            // SAFETY: as above.
            unsafe { ffi::set_status(op.lksb, 0) };
        }
        if op.bast != 0 || self.nbasts.load(SeqCst) > 0 {
            self.note_bast(lkid, op.bast != 0, has_thread);
        }
        if let Some(seq) = timer {
            self.timer_start(h, op.lksb, seq, lkid, op.timeout_cs);
        }
        Ok(())
    }

    /// `dlm_ls_lock_wait()` without an orphan to adopt (the common
    /// case, kept flat: one function from the checks to the completion).
    /// `flags` are the caller's, `LKF_WAIT` and `LKF_TIMEOUT` taken out
    /// (a waiting call has no timeout to honour); the checks libdlm makes
    /// are done. Its result as the call returns it.
    #[inline(always)]
    pub(crate) fn lock_wait(&self, has_thread: bool, op: &Op<'_>) -> R<()> {
        self.write_wait(Solo::Lock, op.lksb, has_thread, |w| lock_write(w, op, true))?;
        if op.bast != 0 || self.nbasts.load(SeqCst) > 0 {
            // SAFETY: lksb is valid by the caller's contract; its
            // completion, in, gave it the lock's id.
            self.note_bast(unsafe { ffi::lkid(op.lksb) }, op.bast != 0, has_thread);
        }
        Ok(())
    }

    /// An unlock or cancel (`wait`: a waiting call; `has_thread`: the
    /// handle has an AST thread).
    #[inline]
    pub(crate) fn unlock(
        &self,
        has_thread: bool,
        lkid: u32,
        flags: u32,
        lksb: Addr,
        astarg: u64,
        wait: bool,
    ) -> R<()> {
        if wait {
            self.write_wait(Solo::Unlock, lksb, has_thread, |w| {
                unlock_write(w, lkid, flags, lksb, 0);
                Ok(())
            })?;
            return Ok(());
        }
        let mut w = LockWrite::new(Command::Unlock, VERSION);
        unlock_write(&mut w, lkid, flags, lksb, astarg);
        let counts = flags & LKF_CANCEL == 0;
        if counts {
            self.async_begin(has_thread);
        }
        let r = self.write(&w);
        if r.is_err() && counts {
            self.interest.fetch_sub(1, SeqCst);
        }
        r.map(|_| ())
    }

    /// `dlm_ls_deadlock_cancel()`.
    pub(crate) fn deadlock_cancel(&self, lkid: u32, flags: u32) -> R<()> {
        let mut w = LockWrite::new(Command::Deadlock, VERSION);
        w.set_lkid(lkid);
        w.set_flags(flags);
        self.write(&w).map(|_| ())
    }

    fn timer_arm(&self, lksb: Addr) -> u64 {
        let seq = TIMER_SEQ.fetch_add(1, SeqCst);
        let mut t = lock(&self.timers);
        t.retain(|x| x.lksb != lksb.0);
        t.push(Timer {
            lksb: lksb.0,
            seq,
            lkid: 0,
            fired: false,
        });
        self.set_count(&self.ntimers, t.len());
        seq
    }

    fn timer_cancel(&self, lksb: Addr, seq: u64) {
        let mut t = lock(&self.timers);
        t.retain(|x| !(x.lksb == lksb.0 && x.seq == seq));
        self.set_count(&self.ntimers, t.len());
    }

    /// The userspace lock timeout (the kernel dropped `LKF_TIMEOUT`;
    /// libdlm 4.2 ignores it): after `cs` centiseconds an operation still
    /// in progress is cancelled, and completes with `ETIMEDOUT`.
    fn timer_start(&self, h: &Arc<Handle>, lksb: Addr, seq: u64, lkid: u32, cs: u64) {
        {
            let mut t = lock(&self.timers);
            match t.iter_mut().find(|x| x.lksb == lksb.0 && x.seq == seq) {
                Some(x) => x.lkid = lkid,
                // Completed already.
                None => return,
            }
        }
        let weak: Weak<Handle> = Arc::downgrade(h);
        let spawned = std::thread::Builder::new()
            .name("dlm-timeout".into())
            .spawn(move || {
                std::thread::sleep(Duration::from_millis(cs.saturating_mul(10)));
                let Some(h) = weak.upgrade() else { return };
                let Some(d) = h.direct() else { return };
                let lkid = {
                    let mut t = lock(&d.timers);
                    let Some(x) = t.iter_mut().find(|x| x.lksb == lksb.0 && x.seq == seq) else {
                        return;
                    };
                    x.fired = true;
                    x.lkid
                };
                let mut w = LockWrite::new(Command::Unlock, VERSION);
                w.set_flags(LKF_CANCEL);
                w.set_lkid(lkid);
                w.set_user_args(0, 0, 0, 0, lksb.0 as u64);
                if let Err(e) = d.write(&w) {
                    log::debug!("libdlm: timeout cancel of {lkid:#x}: errno {e}");
                }
            });
        if let Err(e) = spawned {
            log::warn!("libdlm: no thread for a lock timeout: {e}");
        }
    }

    /// In a child after fork(): only the forking thread is left. It may
    /// have been the reader (a fork from an AST during a wait): then it
    /// still is; any other reader, waiter or AST thread is gone.
    pub(crate) fn after_fork_child(&self) {
        let me = ffi::thread_self();
        if self.reader.load(SeqCst) != me {
            self.reader.store(0, SeqCst);
            self.depth.store(0, SeqCst);
        }
        if let Ok(mut w) = self.waits.try_lock() {
            w.clear();
            self.wants.store(0, SeqCst);
        }
        self.ast_tid.store(0, SeqCst);
        self.wants.fetch_and(!AST_WANTS, SeqCst);
    }

    /// The AST thread starts (`tid`) or stops (0).
    pub(crate) fn set_ast_thread(&self, tid: u64) {
        self.ast_tid.store(tid, SeqCst);
    }

    fn watching(&self) -> bool {
        self.interest.load(SeqCst) > 0 || self.nbasts.load(SeqCst) > 0
    }

    /// The AST thread's wait: for the device while it has work and no
    /// other thread reads, else for a wake-up; and for `stop`.
    pub(crate) fn ast_wait(&self, stop: RawFd) -> R<()> {
        if self.ndue.load(SeqCst) > 0 {
            return Ok(());
        }
        let fds = [self.wake.as_raw_fd(), stop, self.fd.as_raw_fd()];
        let mut n = 2;
        if self.watching() {
            if self.reader.load(SeqCst) == 0 {
                n = 3;
            } else {
                self.wants.fetch_or(AST_WANTS, SeqCst);
                if self.reader.load(SeqCst) == 0 {
                    return Ok(());
                }
            }
        }
        let ready = ffi::poll_in(&fds[..n], 1000)?;
        self.woken.store(ready & 1 != 0, Relaxed);
        Ok(())
    }

    /// The AST thread's work: the ASTs handed to it, then the device.
    pub(crate) fn ast_run(&self) -> R<usize> {
        if self.woken.swap(false, Relaxed) {
            let mut buf = [0u8; 8];
            // SAFETY: 8 writable bytes, as an eventfd read wants; fd open.
            let _ = unsafe { libc::read(self.wake.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
        }
        self.run_due();
        if !self.watching() {
            return Ok(0);
        }
        let me = ffi::thread_self();
        match self.claim(me) {
            Role::Other => {
                self.wants.fetch_or(AST_WANTS, SeqCst);
                Ok(0)
            }
            role => {
                let r = self.drain(true);
                if role == Role::Own {
                    self.release();
                }
                self.run_due();
                r
            }
        }
    }
}
