//! The raw memory of the C caller: errno, `struct dlm_lksb`, names, the
//! AST routines. Every function here trusts a pointer the caller gave,
//! after the checks libdlm.h implies (NULL is refused before these run).
#![allow(unsafe_code)]

use std::os::raw::{c_char, c_int, c_void};

use crate::{AstFn, DlmLksb, DLM_LVB_LEN};

/// A C pointer kept across threads (the lksb, an AST argument): only an
/// address here; it is dereferenced only in this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Addr(pub(crate) usize);

impl Addr {
    pub(crate) fn of<T>(p: *mut T) -> Addr {
        Addr(p as usize)
    }

    pub(crate) fn is_null(self) -> bool {
        self.0 == 0
    }

    fn ptr<T>(self) -> *mut T {
        self.0 as *mut T
    }
}

/// Set the calling thread's `errno`.
#[inline(always)]
pub(crate) fn set_errno(e: c_int) {
    // SAFETY: __errno_location() returns the calling thread's errno,
    // valid for the thread's lifetime.
    unsafe { *libc::__errno_location() = e }
}

/// Call an AST routine with its argument (nothing for NULL).
pub(crate) fn call_ast(f: AstFn, arg: Addr) {
    if let Some(f) = f {
        // SAFETY: the caller gave this routine for this lock, with this
        // argument, to be called when the lock's AST comes, as libdlm
        // calls it.
        unsafe { f(arg.ptr::<c_void>()) }
    }
}

/// The lksb's `sb_status` := `status`.
///
/// # Safety
/// `lksb` is a valid `struct dlm_lksb` (non-NULL).
pub(crate) unsafe fn set_status(lksb: Addr, status: c_int) {
    // SAFETY: the caller guarantees lksb is valid.
    unsafe { (*lksb.ptr::<DlmLksb>()).sb_status = status }
}

/// The lksb's `sb_lkid` := `lkid`.
///
/// # Safety
/// `lksb` is a valid `struct dlm_lksb`.
pub(crate) unsafe fn set_lkid(lksb: Addr, lkid: u32) {
    // SAFETY: the caller guarantees lksb is valid.
    unsafe { (*lksb.ptr::<DlmLksb>()).sb_lkid = lkid }
}

/// The lksb's `sb_lkid`.
///
/// # Safety
/// `lksb` is a valid `struct dlm_lksb`.
pub(crate) unsafe fn lkid(lksb: Addr) -> u32 {
    // SAFETY: the caller guarantees lksb is valid.
    unsafe { (*lksb.ptr::<DlmLksb>()).sb_lkid }
}

/// The lksb's `sb_status`.
///
/// # Safety
/// `lksb` is a valid `struct dlm_lksb`.
pub(crate) unsafe fn status(lksb: Addr) -> c_int {
    // SAFETY: the caller guarantees lksb is valid.
    unsafe { (*lksb.ptr::<DlmLksb>()).sb_status }
}

/// The 32 bytes of the lksb's value block, if it has one.
///
/// # Safety
/// `lksb` is a valid `struct dlm_lksb` whose `sb_lvbptr` is NULL or points
/// to `DLM_LVB_LEN` readable bytes.
pub(crate) unsafe fn lvb(lksb: Addr) -> Option<[u8; DLM_LVB_LEN]> {
    // SAFETY: the caller guarantees lksb is valid.
    let p = unsafe { (*lksb.ptr::<DlmLksb>()).sb_lvbptr };
    if p.is_null() {
        return None;
    }
    let mut out = [0u8; DLM_LVB_LEN];
    // SAFETY: sb_lvbptr points to DLM_LVB_LEN bytes (the caller's value
    // block, as libdlm.h requires); out is ours.
    unsafe { std::ptr::copy_nonoverlapping(p.cast::<u8>(), out.as_mut_ptr(), DLM_LVB_LEN) };
    Some(out)
}

/// Whether the lksb has a value block.
///
/// # Safety
/// `lksb` is a valid `struct dlm_lksb`.
pub(crate) unsafe fn has_lvb(lksb: Addr) -> bool {
    // SAFETY: the caller guarantees lksb is valid.
    unsafe { !(*lksb.ptr::<DlmLksb>()).sb_lvbptr.is_null() }
}

/// A completion into the lksb (none for a NULL one), as libdlm's dispatch writes it: status,
/// lock id and flags, and the value block into `sb_lvbptr` when the DLM
/// sent one (and the lksb has somewhere to put it).
///
/// # Safety
/// As [`lvb`], with the value block writable.
pub(crate) unsafe fn complete(
    lksb: Addr,
    status: c_int,
    lkid: u32,
    flags: u8,
    value: Option<&[u8; DLM_LVB_LEN]>,
) {
    if lksb.is_null() {
        return;
    }
    let sb = lksb.ptr::<DlmLksb>();
    // SAFETY: the caller guarantees lksb is valid and sb_lvbptr, when
    // non-NULL, points to DLM_LVB_LEN writable bytes.
    unsafe {
        (*sb).sb_status = status;
        (*sb).sb_lkid = lkid;
        (*sb).sb_flags = flags as c_char;
        if let Some(v) = value {
            let p = (*sb).sb_lvbptr;
            if !p.is_null() {
                std::ptr::copy_nonoverlapping(v.as_ptr(), p.cast::<u8>(), DLM_LVB_LEN);
            }
        }
    }
}

/// The bytes of a NUL-terminated string, without the NUL.
///
/// # Safety
/// `s` is non-NULL and NUL-terminated.
pub(crate) unsafe fn c_str<'a>(s: *const c_char) -> &'a [u8] {
    // SAFETY: the caller guarantees a NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(s) }.to_bytes()
}

/// `len` bytes at `p`.
///
/// # Safety
/// `p` is non-NULL and points to `len` readable bytes.
pub(crate) unsafe fn bytes<'a>(p: *const c_void, len: usize) -> &'a [u8] {
    // SAFETY: the caller guarantees p points to len readable bytes.
    unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }
}

/// `*p = v` unless `p` is NULL.
///
/// # Safety
/// `p` is NULL or valid for a write.
pub(crate) unsafe fn put<T>(p: *mut T, v: T) {
    if !p.is_null() {
        // SAFETY: non-NULL, and the caller guarantees it is valid.
        unsafe { p.write(v) }
    }
}

/// `*p`, or `None` for NULL.
///
/// # Safety
/// `p` is NULL or valid for a read.
pub(crate) unsafe fn get<T: Copy>(p: *const T) -> Option<T> {
    if p.is_null() {
        None
    } else {
        // SAFETY: non-NULL, and the caller guarantees it is valid.
        Some(unsafe { p.read() })
    }
}

/// The calling thread's `errno` after a failed call (`or` if it has none).
pub(crate) fn last_errno(or: c_int) -> c_int {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(or)
}

/// poll(2) on up to three fds (read interest) for up to `timeout_ms`:
/// which are readable (bit i for `fds[i]`; none when a signal
/// interrupted it). Allocates nothing (see [`spawn`]).
pub(crate) fn poll_in(fds: &[c_int], timeout_ms: c_int) -> Result<u32, c_int> {
    let mut p = [libc::pollfd {
        fd: -1,
        events: libc::POLLIN,
        revents: 0,
    }; 3];
    let n = fds.len().min(p.len());
    for (slot, &fd) in p.iter_mut().zip(fds) {
        slot.fd = fd;
    }
    // SAFETY: p holds n valid pollfd structs.
    let rc = unsafe { libc::poll(p.as_mut_ptr(), n as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        return match last_errno(libc::EIO) {
            libc::EINTR => Ok(0),
            e => Err(e),
        };
    }
    let mut ready = 0;
    for (i, slot) in p[..n].iter().enumerate() {
        if slot.revents != 0 {
            ready |= 1 << i;
        }
    }
    Ok(ready)
}

/// A thread started with pthread_create() itself rather than
/// `std::thread`, which registers thread-local destructors: after a
/// fork() in a process whose AST thread runs, the child has only the
/// forking thread, and memory that thread owned would show as leaked
/// under valgrind. The thread's body allocates nothing it keeps.
pub(crate) struct RawThread(libc::pthread_t);

impl std::fmt::Debug for RawThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawThread")
    }
}

extern "C" fn thread_start<F: FnOnce() + Send + 'static>(arg: *mut c_void) -> *mut c_void {
    // SAFETY: arg is the Box<F> that spawn() leaked for this thread,
    // taken back exactly once, here; F moves to this thread's stack.
    let body: F = *unsafe { Box::from_raw(arg.cast::<F>()) };
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).is_err() {
        log::error!("libdlm: the AST thread panicked; it stops");
    }
    std::ptr::null_mut()
}

/// Start `body` on a new thread.
pub(crate) fn spawn<F: FnOnce() + Send + 'static>(body: F) -> Result<RawThread, c_int> {
    let arg = Box::into_raw(Box::new(body));
    let mut t: libc::pthread_t = 0;
    // SAFETY: t is writable; thread_start::<F> takes arg (a leaked Box<F>)
    // and frees it.
    let rc =
        unsafe { libc::pthread_create(&mut t, std::ptr::null(), thread_start::<F>, arg.cast()) };
    if rc != 0 {
        // SAFETY: the thread was not created: arg is still ours.
        drop(unsafe { Box::from_raw(arg) });
        return Err(rc);
    }
    Ok(RawThread(t))
}

impl RawThread {
    /// The thread, as [`thread_self`] gives it there.
    #[allow(clippy::unnecessary_cast)] // pthread_t is c_ulong
    pub(crate) fn id(&self) -> u64 {
        self.0 as u64
    }

    /// Whether the calling thread is this one.
    pub(crate) fn is_current(&self) -> bool {
        // SAFETY: pthread_self() and pthread_equal() have no preconditions.
        unsafe { libc::pthread_equal(self.0, libc::pthread_self()) != 0 }
    }

    /// Wait for the thread to end.
    pub(crate) fn join(self) {
        // SAFETY: the thread was created joinable and is joined once
        // (join takes self).
        let _ = unsafe { libc::pthread_join(self.0, std::ptr::null_mut()) };
    }

    /// Let the thread end on its own.
    pub(crate) fn detach(self) {
        // SAFETY: as for join: once, consuming self.
        let _ = unsafe { libc::pthread_detach(self.0) };
    }
}

/// A close-on-exec pipe: (read end, write end).
pub(crate) fn pipe() -> Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd), c_int> {
    use std::os::fd::FromRawFd;
    let mut fds = [-1 as c_int; 2];
    // SAFETY: fds is an array of two ints, as pipe2() wants.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(last_errno(libc::EIO));
    }
    // SAFETY: pipe2() returned two new fds that nothing else owns.
    Ok(unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    })
}

/// Write one byte to `fd` (a wake-up; a full pipe is awake already).
pub(crate) fn write_byte(fd: &std::os::fd::OwnedFd) {
    use std::os::fd::AsRawFd;
    let b = [1u8];
    // SAFETY: b is one readable byte; fd is open (borrowed).
    let _ = unsafe { libc::write(fd.as_raw_fd(), b.as_ptr().cast(), 1) };
}

/// Have `prepare`, `parent` and `child` run around every fork() (once).
pub(crate) fn at_fork(prepare: extern "C" fn(), parent: extern "C" fn(), child: extern "C" fn()) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: three plain functions that live as long as the process
        // (this library is never unloaded while a thread of it runs).
        let rc = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
        if rc != 0 {
            log::warn!("libdlm: pthread_atfork failed ({rc})");
        }
    });
}

/// The calling thread, as a number: `pthread_self()` (no thread-local
/// storage, see [`spawn`]). On x86-64 Linux it is read from the thread
/// pointer itself, one load instead of a call: the x86-64 TLS ABI puts the
/// thread control block's own address at `%fs:0`, and that address is the
/// `pthread_t` of glibc and musl (`thread_self_is_pthread_self` checks it).
#[inline(always)]
pub(crate) fn thread_self() -> u64 {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        let t: u64;
        // SAFETY: a load from the calling thread's own control block,
        // which every thread has for its whole life; it writes nothing.
        unsafe {
            std::arch::asm!(
                "mov {}, qword ptr fs:[0]",
                out(reg) t,
                options(nostack, readonly, preserves_flags, pure)
            )
        };
        t
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    // SAFETY: pthread_self() has no preconditions.
    unsafe {
        libc::pthread_self() as u64
    }
}

#[cfg(test)]
mod thread_tests {
    #[test]
    fn thread_self_is_pthread_self() {
        let check = || {
            // SAFETY: pthread_self() has no preconditions.
            let p = unsafe { libc::pthread_self() } as u64;
            assert_eq!(super::thread_self(), p);
            p
        };
        let main = check();
        let others: Vec<u64> = (0..4)
            .map(|_| std::thread::spawn(check).join().expect("a thread"))
            .collect();
        assert!(others.iter().all(|&t| t != main));
    }
}
