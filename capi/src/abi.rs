//! The implementation of every libdlm export. [`export_libdlm!`](crate::export_libdlm)
//! defines the symbols; each calls the function of the same name here.
//!
//! Every function catches panics (none may cross into C) and reports
//! failure as libdlm does: -1 (or NULL) with `errno` set. Pointers from C
//! are checked for NULL before use; a `dlm_lshandle_t` is looked up, never
//! dereferenced.
#![allow(unsafe_code)]

use std::os::raw::{c_char, c_int, c_uint, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dlm::{Completion, LockId, ResourceName, ValueBlock};
use dlm::{LockFlags, LockMode, LockRequest, Lockspace, LockspaceFlags, LockspaceName};

use crate::direct::{self, Direct};
use crate::ffi::{self, Addr};
use crate::registry::{self, Handle};
use crate::resource;
use crate::sink::{self, LockSink, Sink, SinkRef};
use crate::{AstFn, DlmLksb, Flavor, DLM_LOCKSPACE_LEN, DLM_RESNAME_MAXLEN, EINPROG, EUNLOCK};
use crate::{DLM_LVB_LEN, LKF_WAIT};

/// The device interface version this library speaks (libdlm 4.2's
/// `dlm_library_version`).
const LIBRARY_VERSION: [u32; 3] = [6, 0, 2];

type R<T> = Result<T, c_int>;

/// Run `f`; its error, or a panic, becomes `errno` and `fail`.
fn guard<T>(fail: T, f: impl FnOnce() -> R<T>) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            ffi::set_errno(e);
            fail
        }
        Err(_) => {
            log::error!("libdlm: a panic was caught at the C boundary");
            ffi::set_errno(libc::EINVAL);
            fail
        }
    }
}

/// `EINVAL`, out of line: the waiting calls' checks return it from a
/// cold path, so that the common one does not set up the error first.
#[cold]
#[inline(never)]
fn einval() -> c_int {
    libc::EINVAL
}

fn errno(e: dlm::Error) -> c_int {
    e.errno().raw()
}

/// `dlm_kernel_version`.
///
/// # Safety
/// Each pointer is NULL or valid for a write.
pub unsafe fn kernel_version(maj: *mut u32, min: *mut u32, patch: *mut u32) -> c_int {
    guard(-1, || {
        if maj.is_null() || min.is_null() || patch.is_null() {
            return Err(libc::EINVAL);
        }
        let (a, b, c) = registry::dlm()?.version().map_err(errno)?;
        // SAFETY: non-NULL, and valid by the caller's contract.
        unsafe {
            ffi::put(maj, a);
            ffi::put(min, b);
            ffi::put(patch, c);
        }
        Ok(0)
    })
}

/// `dlm_library_version`.
///
/// # Safety
/// Each pointer is NULL or valid for a write.
pub unsafe fn library_version(maj: *mut u32, min: *mut u32, patch: *mut u32) {
    // SAFETY: NULL is skipped; otherwise valid by the caller's contract.
    unsafe {
        ffi::put(maj, LIBRARY_VERSION[0]);
        ffi::put(min, LIBRARY_VERSION[1]);
        ffi::put(patch, LIBRARY_VERSION[2]);
    }
}

fn as_handle(key: usize) -> *mut c_void {
    key as *mut c_void
}

/// `dlm_create_lockspace` (`new` false) and `dlm_new_lockspace`.
///
/// # Safety
/// `name` is NULL or NUL-terminated.
pub unsafe fn new_lockspace(
    _flavor: Flavor,
    name: *const c_char,
    mode: u32,
    flags: u32,
    new: bool,
) -> *mut c_void {
    guard(std::ptr::null_mut(), || {
        if name.is_null() {
            return Err(libc::EINVAL);
        }
        // SAFETY: non-NULL and NUL-terminated by the caller's contract.
        let bytes = unsafe { ffi::c_str(name) };
        if bytes.len() > DLM_LOCKSPACE_LEN {
            return Err(libc::EINVAL);
        }
        let name = LockspaceName::new(bytes).map_err(|e| e.raw())?;
        let mut flags = LockspaceFlags::from_bits_retain(if new { flags } else { 0 });
        flags -= LockspaceFlags::TIMEWARN;
        let ls = registry::dlm()?
            .create_lockspace(&name, flags, mode)
            .map_err(errno)?;
        registry::add(ls).map(as_handle)
    })
}

/// `dlm_open_lockspace`.
///
/// # Safety
/// `name` is NULL or NUL-terminated.
pub unsafe fn open_lockspace(_flavor: Flavor, name: *const c_char) -> *mut c_void {
    guard(std::ptr::null_mut(), || {
        if name.is_null() {
            return Err(libc::ENOENT);
        }
        // SAFETY: non-NULL and NUL-terminated by the caller's contract.
        let bytes = unsafe { ffi::c_str(name) };
        // libdlm opens the device node the name makes: no such node.
        let name = LockspaceName::new(bytes).map_err(|_| libc::ENOENT)?;
        let ls = registry::dlm()?.open_lockspace(&name).map_err(errno)?;
        registry::add(ls).map(as_handle)
    })
}

/// `dlm_close_lockspace`: the handle's locks are dropped (persistent ones
/// become orphans).
pub fn close_lockspace(ls: *mut c_void) -> c_int {
    guard(-1, || {
        let l = registry::remove(ls).ok_or(libc::EINVAL)?;
        drop(l);
        Ok(0)
    })
}

/// `dlm_release_lockspace`: close the handle and ask for the lockspace's
/// release. As in libdlm the DLM's answer (`EBUSY` while locks remain,
/// without `force`) is not returned: 0.
///
/// # Safety
/// `name` is unused (the handle names the lockspace).
pub unsafe fn release_lockspace(_name: *const c_char, ls: *mut c_void, force: c_int) -> c_int {
    guard(-1, || {
        let Some(l) = registry::remove(ls).ok_or(libc::EINVAL)? else {
            return Ok(0);
        };
        let name = *l.name();
        if let Err(e) = registry::dlm()?.release_lockspace(l, force != 0) {
            log::debug!("libdlm: release of lockspace {name}: {e} (ignored, as libdlm does)");
        }
        Ok(0)
    })
}

/// `dlm_ls_get_fd`.
pub fn ls_get_fd(ls: *mut c_void) -> c_int {
    guard(-1, || {
        let h = registry::get(ls).ok_or(libc::EINVAL)?;
        Ok(h.seam.fd())
    })
}

/// `dlm_get_fd`: the default lockspace's fd (opened or created).
pub fn get_fd(_flavor: Flavor) -> c_int {
    guard(-1, || Ok(registry::open_default()?.1.seam.fd()))
}

/// `dlm_dispatch`: run the ASTs of every record there is now.
pub fn dispatch(fd: c_int) -> c_int {
    guard(-1, || {
        if fd < 0 {
            return Err(libc::EBADF);
        }
        let h = registry::by_fd(fd).ok_or(libc::EBADF)?;
        let ls = h.lockspace_or(libc::EBADF)?;
        h.dispatch(&ls)?;
        Ok(0)
    })
}

impl Handle {
    fn lockspace_or(&self, e: c_int) -> R<Lockspace> {
        self.lockspace().ok_or(e)
    }
}

/// `dlm_ls_lock`, `dlm_ls_lockx` and `dlm_ls_lock_wait` (`wait`; then
/// `astarg` is the blocking AST's argument).
///
/// # Safety
/// As libdlm.h: `lksb` (and its value block) valid until the lock's last
/// AST; `name` holds `namelen` bytes; `xid`, `timeout` NULL or valid.
#[allow(clippy::too_many_arguments)]
pub unsafe fn ls_lock(
    flavor: Flavor,
    ls: *mut c_void,
    mode: u32,
    lksb: *mut DlmLksb,
    flags: u32,
    name: *const c_void,
    namelen: c_uint,
    astaddr: AstFn,
    astarg: *mut c_void,
    bastaddr: AstFn,
    range: *mut c_void,
    xid: *mut u64,
    timeout: *mut u64,
    wait: bool,
) -> c_int {
    guard(-1, || {
        let h = registry::get(ls).ok_or(libc::EINVAL)?;
        let args = LockArgs {
            mode,
            lksb,
            flags,
            name,
            namelen,
            astaddr,
            astarg,
            bastaddr,
            range,
            xid,
            timeout,
        };
        // SAFETY: the caller's contract, passed on.
        unsafe { lock_on(flavor, &h, &args, wait) }
    })
}

/// `dlm_ls_lock_wait`: on a kernel handle in one flat function, the
/// checks `lock_on` makes (in the same order, with the same errors)
/// and then `Direct::lock_wait`; anything else (a fallback handle, a
/// range, an orphan to adopt) through `lock_on` with the same handle.
///
/// # Safety
/// As [`ls_lock`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub unsafe fn ls_lock_wait(
    flavor: Flavor,
    ls: *mut c_void,
    mode: u32,
    lksb: *mut DlmLksb,
    flags: u32,
    name: *const c_void,
    namelen: c_uint,
    bastarg: *mut c_void,
    bastaddr: AstFn,
    range: *mut c_void,
) -> c_int {
    guard(-1, || {
        let args = || LockArgs {
            mode,
            lksb,
            flags,
            name,
            namelen,
            astaddr: None,
            astarg: bastarg,
            bastaddr,
            range,
            xid: std::ptr::null_mut(),
            timeout: std::ptr::null_mut(),
        };
        // A handle without a fast slot: the general path, from the table.
        let Some(h) = registry::fast_call(ls) else {
            // SAFETY: the caller's contract, passed on.
            return unsafe { lock_wait_general(flavor, ls, &args()) };
        };
        let lflags = LockFlags::from_bits_retain(flags & !LKF_WAIT) - LockFlags::TIMEOUT;
        // A range (ENOSYS), no lksb (EINVAL) and the adoption of an
        // orphan are the general path's.
        let adopts = lflags.contains(LockFlags::ORPHAN) && !lflags.contains(LockFlags::CONVERT);
        let flat = range.is_null() && !lksb.is_null() && !adopts;
        let Some(d) = h.direct().filter(|_| flat) else {
            // SAFETY: the caller's contract, passed on.
            return unsafe { lock_on(flavor, &h.arc(), &args(), true) };
        };
        let sb = Addr::of(lksb);
        // SAFETY: lksb is non-NULL and valid by the caller's contract.
        unsafe { check_lock(sb, lflags, name, namelen) }?;
        // LockMode::try_from's check, without building the mode.
        if mode > LockMode::Ex as u32 {
            return Err(einval());
        }
        let op = direct::Op {
            mode: mode as u8,
            flags: lflags.bits(),
            lksb: sb,
            // SAFETY: checked by check_lock; the caller's contract.
            name: unsafe { request_name(lflags, name, namelen) },
            ast: 0,
            astarg: bastarg as usize as u64,
            bast: bastaddr.map_or(0, |f| f as usize as u64),
            timeout_cs: 0,
        };
        d.lock_wait(has_thread(flavor, &h), &op)?;
        // SAFETY: as above.
        wait_result(flavor, unsafe { ffi::status(sb) })
    })
}

/// [`ls_lock_wait`] on a handle without a fast slot (the table's).
///
/// # Safety
/// As [`ls_lock`].
#[cold]
#[inline(never)]
unsafe fn lock_wait_general(flavor: Flavor, ls: *mut c_void, args: &LockArgs) -> R<c_int> {
    let h = registry::get(ls).ok_or(libc::EINVAL)?;
    // SAFETY: the caller's contract, passed on.
    unsafe { lock_on(flavor, &h, args, true) }
}

/// `dlm_lock` and `dlm_lock_wait`: on the default lockspace, opened or
/// created if need be.
///
/// # Safety
/// As [`ls_lock`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn lock_default(
    flavor: Flavor,
    mode: u32,
    lksb: *mut DlmLksb,
    flags: u32,
    name: *const c_void,
    namelen: c_uint,
    astaddr: AstFn,
    astarg: *mut c_void,
    bastaddr: AstFn,
    range: *mut c_void,
    wait: bool,
) -> c_int {
    guard(-1, || {
        let (_, h) = registry::open_default()?;
        let args = LockArgs {
            mode,
            lksb,
            flags,
            name,
            namelen,
            astaddr,
            astarg,
            bastaddr,
            range,
            xid: std::ptr::null_mut(),
            timeout: std::ptr::null_mut(),
        };
        // SAFETY: the caller's contract, passed on.
        unsafe { lock_on(flavor, &h, &args, wait) }
    })
}

struct LockArgs {
    mode: u32,
    lksb: *mut DlmLksb,
    flags: u32,
    name: *const c_void,
    namelen: c_uint,
    astaddr: AstFn,
    astarg: *mut c_void,
    bastaddr: AstFn,
    range: *mut c_void,
    xid: *mut u64,
    timeout: *mut u64,
}

/// libdlm's own checks of a lock call's value block and name, in its
/// order, once `range` and `lksb` have passed; then `EINPROG` into the
/// lksb, after which the DLM's checks come. `lflags` without `LKF_WAIT`
/// and `LKF_TIMEOUT`.
///
/// # Safety
/// `lksb` is non-NULL and valid.
#[inline(always)]
unsafe fn check_lock(lksb: Addr, lflags: LockFlags, name: *const c_void, namelen: c_uint) -> R<()> {
    // SAFETY: the caller's contract.
    if lflags.contains(LockFlags::VALBLK) && !unsafe { ffi::has_lvb(lksb) } {
        return Err(einval());
    }
    let namelen = namelen as usize;
    if !lflags.contains(LockFlags::CONVERT)
        && (namelen > DLM_RESNAME_MAXLEN || (name.is_null() && namelen > 0))
    {
        return Err(einval());
    }
    // SAFETY: as above.
    unsafe { ffi::set_status(lksb, EINPROG) };
    Ok(())
}

/// The name a new request sends: `namelen` bytes at `name`, none for a
/// conversion.
///
/// # Safety
/// After [`check_lock`]: `name` non-NULL with `namelen` bytes unless
/// `namelen` is 0.
#[inline(always)]
unsafe fn request_name<'a>(lflags: LockFlags, name: *const c_void, namelen: c_uint) -> &'a [u8] {
    if lflags.contains(LockFlags::CONVERT) || namelen == 0 {
        &[]
    } else {
        // SAFETY: the caller's contract.
        unsafe { ffi::bytes(name, namelen as usize) }
    }
}

/// A lock request or conversion on handle `h`.
///
/// # Safety
/// As [`ls_lock`].
unsafe fn lock_on(flavor: Flavor, h: &Arc<Handle>, a: &LockArgs, wait: bool) -> R<c_int> {
    // The library's own checks, in libdlm's order.
    if !a.range.is_null() {
        return Err(libc::ENOSYS);
    }
    if a.lksb.is_null() {
        return Err(libc::EINVAL);
    }
    let lksb = Addr::of(a.lksb);
    let flags = a.flags & !LKF_WAIT;
    let lflags = LockFlags::from_bits_retain(flags);
    // LKF_TIMEOUT is this library's (a userspace timer, below): the kernel
    // dropped it in 6.2 and refuses it there.
    let timed = lflags.contains(LockFlags::TIMEOUT);
    let lflags = lflags - LockFlags::TIMEOUT;
    // SAFETY: lksb is non-NULL and valid by the caller's contract.
    unsafe { check_lock(lksb, lflags, a.name, a.namelen) }?;
    if !wait && a.astaddr.is_none() {
        return Err(libc::EINVAL);
    }
    let mode = LockMode::try_from(a.mode).map_err(|e| e.raw())?;
    // SAFETY: NULL or valid by the caller's contract.
    let timeout_cs = unsafe { ffi::get(a.timeout) }.unwrap_or(0);
    // The xid (for the kernel's deadlock detection, long gone) is read, as
    // libdlm reads it, and not used.
    // SAFETY: as above.
    let _xid = unsafe { ffi::get(a.xid) };
    if let Some(d) = h.direct() {
        // The kernel checks the rest, as it does for libdlm.
        let timeout_cs = if timed { timeout_cs } else { 0 };
        // SAFETY: the caller's contract, passed on.
        return unsafe { lock_direct(flavor, h, d, a, lflags, mode, timeout_cs, wait) };
    }
    // SAFETY: the caller's contract, passed on.
    unsafe { lock_fallback(flavor, h, a, lksb, lflags, mode, timed, timeout_cs, wait) }
}

/// A lock request or conversion on a fallback handle, through the `dlm`
/// crate (after [`lock_on`]'s checks).
///
/// # Safety
/// As [`ls_lock`]; `lksb` checked non-NULL.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
unsafe fn lock_fallback(
    flavor: Flavor,
    h: &Arc<Handle>,
    a: &LockArgs,
    lksb: Addr,
    lflags: LockFlags,
    mode: LockMode,
    timed: bool,
    timeout_cs: u64,
    wait: bool,
) -> R<c_int> {
    let convert = lflags.contains(LockFlags::CONVERT);
    let ls = h.lockspace_or(libc::ENOTCONN)?;
    // A waiting call that may read on this thread waits in the `dlm`
    // crate's own waiting call (see `reads_inline`), unless it needs what
    // only this crate's waiter does: a userspace timeout, the synchronous
    // adoption of an orphan, or ASTs run while it waits (the `dlm` crate's
    // call runs none until it returns, and one may be what it waits for:
    // a blocking AST whose routine unlocks the lock in its way).
    let fast = wait
        && !(timed && timeout_cs > 0)
        && !lflags.contains(LockFlags::ORPHAN)
        && reads_inline(flavor, h)
        && !h.shared.has_routines();
    let waiter = (wait && !fast).then(|| Arc::new(AtomicBool::new(false)));
    let (ast, astarg) = if wait {
        (None, Addr(0))
    } else {
        (a.astaddr, Addr::of(a.astarg))
    };
    let sink = if convert {
        // SAFETY: as above.
        let lkid = unsafe { ffi::lkid(lksb) };
        let sink = h.shared.find(lkid).ok_or(libc::ENOENT)?;
        let id = {
            let mut s = sink::lock(&sink);
            s.ast = ast;
            s.astarg = astarg;
            s.bast = a.bastaddr;
            s.bastarg = Addr::of(a.astarg);
            s.lksb = lksb;
            s.waiter.clone_from(&waiter);
            s.count_routines(&h.shared);
            s.id.ok_or(libc::ENOENT)?
        };
        let lvb = if lflags.contains(LockFlags::VALBLK) {
            // SAFETY: as above; VALBLK with a value block was checked.
            unsafe { ffi::lvb(lksb) }.map(ValueBlock::new)
        } else {
            None
        };
        if fast {
            let c = ls
                .convert_wait(id, mode, lflags - LockFlags::CONVERT, lvb.as_ref())
                .map_err(errno)?;
            return waited(flavor, h, &sink, id, &c);
        }
        if let Err(e) = ls.convert(id, mode, lflags - LockFlags::CONVERT, lvb.as_ref()) {
            sink::lock(&sink).waiter = None;
            return Err(errno(e));
        }
        sink
    } else {
        // SAFETY: checked by check_lock; the caller's contract.
        let bytes = unsafe { request_name(lflags, a.name, a.namelen) };
        let res = ResourceName::new(bytes).map_err(|e| e.raw())?;
        let mut s = Sink::new(lksb);
        s.ast = ast;
        s.astarg = astarg;
        s.bast = a.bastaddr;
        s.bastarg = Addr::of(a.astarg);
        s.waiter.clone_from(&waiter);
        s.count_routines(&h.shared);
        let sink = LockSink::new(s, &h.shared);
        let req = LockRequest::new(res, mode).flags(lflags);
        let refused = |e| {
            sink::lock(&sink).uncount_routines(&h.shared);
            errno(e)
        };
        if fast {
            let (id, c) = ls.request_wait(req, sink.clone()).map_err(refused)?;
            return waited(flavor, h, &sink, id, &c);
        }
        let id = ls.request_with_sink(req, sink.clone()).map_err(refused)?;
        // SAFETY: as above.
        unsafe { ffi::set_lkid(lksb, id.lkid()) };
        // In the table before the id is in the sink: a completion on the
        // AST thread that finds the id there already (and so leaves the
        // table alone) may unlock from its AST at once.
        h.shared.insert(id.lkid(), &sink);
        {
            let mut s = sink::lock(&sink);
            s.id = Some(id);
            if lflags.contains(LockFlags::ORPHAN) {
                // Adoption is decided in the write: no AST follows.
                s.granted_once = true;
                if s.waiter.take().is_some() {
                    // SAFETY: as above.
                    unsafe { ffi::set_status(lksb, 0) };
                    return Ok(0);
                }
            }
        }
        sink
    };
    if timeout_cs > 0 && timed {
        arm_timer(h, &sink, timeout_cs);
    }
    match waiter {
        None => Ok(0),
        Some(w) => {
            wait_done(flavor, h, &ls, &w)?;
            // SAFETY: as above.
            wait_result(flavor, unsafe { ffi::status(lksb) })
        }
    }
}

/// A lock request or conversion on a kernel handle: straight to the
/// device (see [`crate::direct`]).
///
/// # Safety
/// As [`ls_lock`]; `a.lksb` checked non-NULL.
#[allow(clippy::too_many_arguments)]
unsafe fn lock_direct(
    flavor: Flavor,
    h: &Arc<Handle>,
    d: &Direct,
    a: &LockArgs,
    lflags: LockFlags,
    mode: LockMode,
    timeout_cs: u64,
    wait: bool,
) -> R<c_int> {
    // SAFETY: checked by check_lock; the caller's contract.
    let name = unsafe { request_name(lflags, a.name, a.namelen) };
    let op = direct::Op {
        mode: mode as u8,
        flags: lflags.bits(),
        lksb: Addr::of(a.lksb),
        name,
        ast: a.astaddr.map_or(0, |f| f as usize as u64),
        astarg: a.astarg as usize as u64,
        bast: a.bastaddr.map_or(0, |f| f as usize as u64),
        timeout_cs,
    };
    d.lock(h, &op, wait)?;
    if !wait {
        return Ok(0);
    }
    // SAFETY: as above.
    wait_result(flavor, unsafe { ffi::status(op.lksb) })
}

/// Whether `h` has an AST thread: never in the lite library, which has
/// no call that starts one (known at compile time there).
#[inline(always)]
fn has_thread(flavor: Flavor, h: &Handle) -> bool {
    flavor == Flavor::Threaded && h.seam.has_thread()
}

/// Whether a waiting call on `h` reads its completion on this thread:
/// always in the lite library; in the threaded one when no AST thread
/// runs (libdlm would wait forever), or on the AST thread itself.
fn reads_inline(flavor: Flavor, h: &Handle) -> bool {
    flavor == Flavor::Lite || !h.seam.has_thread() || h.seam.on_thread()
}

/// A waiting call's completion, got back from the `dlm` crate's own
/// waiting call on this thread: into the sink and the lksb; then the ASTs
/// of other locks that the call took in, as a dispatch would run them.
fn waited(flavor: Flavor, h: &Handle, sink: &SinkRef, id: LockId, c: &Completion) -> R<c_int> {
    let st = sink::waited(sink, &h.shared, id, c);
    h.shared.run_due();
    wait_result(flavor, st)
}

/// What a waiting call returns for status `st`: lite, -1 with errno =
/// status unless it is 0 or `EUNLOCK`; threaded, 0 (the status is in the
/// lksb).
#[inline(always)]
fn wait_result(flavor: Flavor, st: c_int) -> R<c_int> {
    if flavor == Flavor::Lite {
        ffi::set_errno(st);
        if st != 0 && st != EUNLOCK {
            return Err(st);
        }
    }
    Ok(0)
}

/// The userspace lock timeout (the kernel dropped `LKF_TIMEOUT`; libdlm
/// 4.2 ignores it): after `cs` centiseconds an operation still in progress
/// is cancelled, and completes with `ETIMEDOUT`.
fn arm_timer(h: &Arc<Handle>, sink: &SinkRef, cs: u64) {
    let at = sink::lock(sink).completions;
    let weak = Arc::downgrade(h);
    let sink = sink.clone();
    let spawned = std::thread::Builder::new()
        .name("dlm-timeout".into())
        .spawn(move || {
            std::thread::sleep(Duration::from_millis(cs.saturating_mul(10)));
            let Some(h) = weak.upgrade() else { return };
            let Ok(ls) = h.lockspace_or(libc::ENOTCONN) else {
                return;
            };
            let id = {
                let mut s = sink::lock(&sink);
                if s.completions != at || s.ended {
                    return;
                }
                s.timed_out = true;
                s.id
            };
            if let Some(id) = id {
                if let Err(e) = ls.cancel(id) {
                    log::debug!("libdlm: timeout cancel of {:#x}: {e}", id.lkid());
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("libdlm: no thread for a lock timeout: {e}");
    }
}

/// Wait until `done`: read and dispatch the lockspace on this thread
/// (lite; threaded with no AST thread, or on the AST thread itself), or
/// sleep while the AST thread delivers. One thread reads at a time (and
/// the waits nested in the ASTs it runs); the others sleep until it is
/// done or their completion came.
fn wait_done(flavor: Flavor, h: &Handle, ls: &Lockspace, done: &AtomicBool) -> R<()> {
    loop {
        if done.load(Ordering::SeqCst) {
            return Ok(());
        }
        let on_thread = h.seam.on_thread();
        let inline = flavor == Flavor::Lite || !h.seam.has_thread() || on_thread;
        let mut g = h.shared.reader.lock().unwrap_or_else(|p| p.into_inner());
        if done.load(Ordering::SeqCst) {
            return Ok(());
        }
        // A waiting call made by an AST that the reading thread runs (a
        // nested wait, on the same thread) reads too: the outer one
        // cannot until the AST returns.
        let me = ffi::thread_self();
        if inline && (g.is_none() || *g == Some(me) || on_thread) {
            let was = g.replace(me);
            drop(g);
            let r = h.seam.wait(200).and_then(|()| h.dispatch(ls));
            *h.shared.reader.lock().unwrap_or_else(|p| p.into_inner()) = was;
            h.shared.cv.notify_all();
            r?;
        } else {
            let _ = h
                .shared
                .cv
                .wait_timeout(g, Duration::from_millis(200))
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// `dlm_ls_unlock`.
///
/// # Safety
/// `lksb` valid until the unlock's AST.
pub unsafe fn ls_unlock(
    flavor: Flavor,
    ls: *mut c_void,
    lkid: u32,
    flags: u32,
    lksb: *mut DlmLksb,
    astarg: *mut c_void,
    wait: bool,
) -> c_int {
    // SAFETY: the caller's contract, passed on.
    guard(-1, || unsafe {
        unlock_ls(flavor, ls, lkid, flags, lksb, astarg, wait)
    })
}

/// `dlm_ls_unlock_wait`: [`ls_unlock`] waiting, as a function of its own,
/// so that its guarded body is inlined into its one export (a body that
/// two exports share is not), a flat function from the checks to the
/// completion.
///
/// # Safety
/// `lksb` is valid.
#[inline(always)]
pub unsafe fn ls_unlock_wait(
    flavor: Flavor,
    ls: *mut c_void,
    lkid: u32,
    flags: u32,
    lksb: *mut DlmLksb,
) -> c_int {
    guard(-1, || match registry::fast_call(ls) {
        // SAFETY: the caller's contract, passed on.
        Some(h) => unsafe { unlock_on(flavor, &h, lkid, flags, lksb, std::ptr::null_mut(), true) },
        // SAFETY: as above.
        None => unsafe { unlock_wait_general(flavor, ls, lkid, flags, lksb) },
    })
}

/// [`ls_unlock_wait`] on a handle without a fast slot (the table's).
///
/// # Safety
/// As [`ls_unlock`].
#[cold]
#[inline(never)]
unsafe fn unlock_wait_general(
    flavor: Flavor,
    ls: *mut c_void,
    lkid: u32,
    flags: u32,
    lksb: *mut DlmLksb,
) -> R<c_int> {
    // SAFETY: the caller's contract, passed on.
    unsafe { unlock_ls(flavor, ls, lkid, flags, lksb, std::ptr::null_mut(), true) }
}

/// An unlock or cancel on the handle `ls` names (`ENOTCONN` for NULL).
///
/// # Safety
/// As [`ls_unlock`].
#[inline(always)]
unsafe fn unlock_ls(
    flavor: Flavor,
    ls: *mut c_void,
    lkid: u32,
    flags: u32,
    lksb: *mut DlmLksb,
    astarg: *mut c_void,
    wait: bool,
) -> R<c_int> {
    let h = registry::call(ls).ok_or(if ls.is_null() {
        libc::ENOTCONN
    } else {
        libc::EINVAL
    })?;
    // SAFETY: the caller's contract, passed on.
    unsafe { unlock_on(flavor, &h, lkid, flags, lksb, astarg, wait) }
}

/// `dlm_unlock` and `dlm_unlock_wait`: on the default lockspace, which
/// they do not open (`ENOTCONN` without one).
///
/// # Safety
/// As [`ls_unlock`].
pub unsafe fn unlock_default(
    flavor: Flavor,
    lkid: u32,
    flags: u32,
    lksb: *mut DlmLksb,
    astarg: *mut c_void,
    wait: bool,
) -> c_int {
    guard(-1, || {
        let (_, h) = registry::default_handle().ok_or(libc::ENOTCONN)?;
        // SAFETY: the caller's contract, passed on.
        unsafe { unlock_on(flavor, &h, lkid, flags, lksb, astarg, wait) }
    })
}

/// An unlock or cancel on handle `h`.
///
/// # Safety
/// As [`ls_unlock`].
#[inline(always)]
unsafe fn unlock_on(
    flavor: Flavor,
    h: &Handle,
    lkid: u32,
    flags: u32,
    lksb: *mut DlmLksb,
    astarg: *mut c_void,
    wait: bool,
) -> R<c_int> {
    if lkid == 0 || lksb.is_null() {
        return Err(einval());
    }
    let lksb = Addr::of(lksb);
    let lflags = LockFlags::from_bits_retain(flags & !LKF_WAIT);
    // SAFETY: non-NULL, valid by the caller's contract.
    unsafe { ffi::set_status(lksb, EINPROG) };
    if let Some(d) = h.direct() {
        d.unlock(
            has_thread(flavor, h),
            lkid,
            lflags.bits(),
            lksb,
            astarg as usize as u64,
            wait,
        )?;
        if !wait {
            return Ok(0);
        }
        // SAFETY: as above.
        return wait_result(flavor, unsafe { ffi::status(lksb) });
    }
    // SAFETY: the caller's contract, passed on.
    unsafe { unlock_fallback(flavor, h, lkid, lflags, lksb, astarg, wait) }
}

/// An unlock or cancel on a fallback handle, through the `dlm` crate
/// (after [`unlock_on`]'s checks).
///
/// # Safety
/// As [`ls_unlock`]; `lksb` checked non-NULL.
#[inline(never)]
unsafe fn unlock_fallback(
    flavor: Flavor,
    h: &Handle,
    lkid: u32,
    lflags: LockFlags,
    lksb: Addr,
    astarg: *mut c_void,
    wait: bool,
) -> R<c_int> {
    let ls = h.lockspace_or(libc::ENOTCONN)?;
    let sink = h.shared.find(lkid).ok_or(libc::ENOENT)?;
    let fast = wait
        && !lflags.contains(LockFlags::CANCEL)
        && reads_inline(flavor, h)
        && !h.shared.has_routines();
    let waiter = (wait && !fast).then(|| Arc::new(AtomicBool::new(false)));
    let id = {
        let mut s = sink::lock(&sink);
        s.lksb = lksb;
        if !astarg.is_null() {
            s.astarg = Addr::of(astarg);
        }
        s.waiter.clone_from(&waiter);
        s.id.ok_or(libc::ENOENT)?
    };
    let sent = if lflags == LockFlags::CANCEL {
        ls.cancel(id)
    } else {
        // The value block written on an unlock from PW/EX with VALBLK:
        // the lksb's, or zeros (libdlm sends uninitialised stack bytes).
        // SAFETY: as above.
        let v = unsafe { ffi::lvb(lksb) }.unwrap_or([0; DLM_LVB_LEN]);
        if fast {
            let c = ls
                .unlock_wait(id, lflags, Some(&ValueBlock::new(v)))
                .map_err(errno)?;
            return waited(flavor, h, &sink, id, &c);
        }
        ls.unlock(id, lflags, Some(&ValueBlock::new(v)))
    };
    if let Err(e) = sent {
        sink::lock(&sink).waiter = None;
        return Err(errno(e));
    }
    match waiter {
        None => Ok(0),
        Some(w) => {
            wait_done(flavor, h, &ls, &w)?;
            // SAFETY: as above.
            wait_result(flavor, unsafe { ffi::status(lksb) })
        }
    }
}

/// `dlm_ls_deadlock_cancel`.
pub fn ls_deadlock_cancel(ls: *mut c_void, lkid: u32, flags: u32) -> c_int {
    guard(-1, || {
        if !registry::opened() {
            // libdlm knows no kernel version yet: "too old".
            return Err(libc::ENOSYS);
        }
        let h = registry::get(ls).ok_or(if ls.is_null() {
            libc::ENOTCONN
        } else {
            libc::EINVAL
        })?;
        if lkid == 0 {
            return Err(libc::EINVAL);
        }
        if let Some(d) = h.direct() {
            d.deadlock_cancel(lkid, flags)?;
            return Ok(0);
        }
        let l = h.lockspace_or(libc::ENOTCONN)?;
        let sink = h.shared.find(lkid).ok_or(libc::ENOENT)?;
        let id = sink::lock(&sink).id.ok_or(libc::ENOENT)?;
        l.deadlock_cancel(id).map_err(errno)?;
        Ok(0)
    })
}

/// `dlm_ls_purge`.
pub fn ls_purge(ls: *mut c_void, nodeid: c_int, pid: c_int) -> c_int {
    guard(-1, || {
        if !registry::opened() {
            return Err(libc::ENOSYS);
        }
        let h = registry::get(ls).ok_or(if ls.is_null() {
            libc::ENOTCONN
        } else {
            libc::EINVAL
        })?;
        let l = h.lockspace_or(libc::ENOTCONN)?;
        l.purge(nodeid as u32, pid as u32).map_err(errno)?;
        Ok(0)
    })
}

/// `dlm_pthread_init`: the default lockspace (opened or created) and its
/// AST thread; `EEXIST` if the thread runs.
pub fn pthread_init() -> c_int {
    guard(-1, || {
        let (k, h) = registry::open_default()?;
        match h.seam.start_thread(Arc::downgrade(&h)) {
            Ok(()) => Ok(0),
            Err(libc::EEXIST) => Err(libc::EEXIST),
            Err(e) => {
                drop(registry::remove(as_handle(k)));
                Err(e)
            }
        }
    })
}

/// `dlm_ls_pthread_init`: `EEXIST` (-1) if the thread runs; otherwise, as
/// libdlm, the thread creation's error number.
pub fn ls_pthread_init(ls: *mut c_void) -> c_int {
    guard(-1, || {
        let h = registry::get(ls).ok_or(libc::EINVAL)?;
        match h.seam.start_thread(Arc::downgrade(&h)) {
            Ok(()) => Ok(0),
            Err(libc::EEXIST) => Err(libc::EEXIST),
            Err(e) => Ok(e),
        }
    })
}

/// `dlm_pthread_cleanup`: stop the default lockspace's AST thread and
/// close it.
pub fn pthread_cleanup() -> c_int {
    guard(-1, || {
        if let Some((k, _)) = registry::default_handle() {
            drop(registry::remove(as_handle(k)));
        }
        Ok(0)
    })
}

/// `lock_resource`: a waiting lock on the default lockspace (with its AST
/// thread started if need be); -1 with errno = status on failure.
///
/// # Safety
/// `resource` NULL or NUL-terminated; `lockid` NULL or valid.
pub unsafe fn lock_resource(
    resource: *const c_char,
    mode: c_int,
    flags: c_int,
    lockid: *mut c_int,
) -> c_int {
    guard(-1, || {
        let h = match registry::default_handle() {
            Some((_, h)) => h,
            None => {
                if pthread_init() != 0 {
                    return Err(ffi::last_errno(libc::EINVAL));
                }
                registry::default_handle().ok_or(libc::ENOTCONN)?.1
            }
        };
        if lockid.is_null() || resource.is_null() {
            return Err(libc::EINVAL);
        }
        let convert = (flags as u32) & LockFlags::CONVERT.bits() != 0;
        let lkid = if convert {
            // SAFETY: non-NULL, valid by the caller's contract.
            unsafe { ffi::get(lockid) }.unwrap_or(0) as u32
        } else {
            0
        };
        // Not on this stack: see `resource`.
        let (mut sb, kept) = resource::take(lkid);
        // SAFETY: non-NULL and NUL-terminated by the caller's contract.
        let name = unsafe { ffi::c_str(resource) };
        let args = LockArgs {
            mode: mode as u32,
            lksb: sb.ptr(),
            flags: flags as u32,
            name: name.as_ptr().cast(),
            namelen: name.len() as c_uint,
            astaddr: None,
            astarg: std::ptr::null_mut(),
            bastaddr: None,
            range: std::ptr::null_mut(),
            xid: std::ptr::null_mut(),
            timeout: std::ptr::null_mut(),
        };
        // SAFETY: sb lives as long as the lock's callbacks may come; name
        // is the caller's.
        let r = unsafe { lock_on(Flavor::Threaded, &h, &args, true) };
        let status = sb.status();
        let got = sb.lkid();
        // A conversion leaves the lock, whatever its result; a new lock
        // lives once granted.
        resource::after_lock(sb, kept, r.is_ok() && (convert || status == 0));
        r?;
        // SAFETY: as above.
        unsafe { ffi::put(lockid, got as c_int) };
        ffi::set_errno(status);
        if status != 0 {
            return Err(status);
        }
        Ok(0)
    })
}

/// `unlock_resource`: a waiting unlock on the default lockspace; 0 when
/// unlocked. Without a default lockspace, -1 with errno `ENOTCONN`
/// (libdlm sets `-ENOTCONN`).
pub fn unlock_resource(lockid: c_int) -> c_int {
    guard(-1, || {
        let (_, h) = registry::default_handle().ok_or(libc::ENOTCONN)?;
        // Not on this stack: see `resource`.
        let (mut sb, kept) = resource::take(lockid as u32);
        // SAFETY: sb lives as long as the lock's callbacks may come.
        let r = unsafe {
            unlock_on(
                Flavor::Threaded,
                &h,
                lockid as u32,
                0,
                sb.ptr(),
                std::ptr::null_mut(),
                true,
            )
        };
        let status = sb.status();
        resource::after_unlock(sb, kept, lockid as u32, r.is_ok());
        r?;
        ffi::set_errno(status);
        if status != EUNLOCK {
            return Err(status);
        }
        Ok(0)
    })
}
