//! What libdlm 4.2 does not do and this library does, through the same
//! functions the exported symbols call, on a private dlmd: the lock
//! timeout of `dlm_ls_lockx` (`LKF_TIMEOUT`, in centiseconds), honoured
//! in user space.
#![allow(unsafe_code)]

use std::os::raw::c_void;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dlm_capi::{abi, DlmLksb, Flavor, EINPROG, EUNLOCK};
use dlm_testkit::PrivateDaemon;

const EX: u32 = 5;
const LKF_NOQUEUE: u32 = 0x1;
const LKF_TIMEOUT: u32 = 0x40000;

extern "C" fn count(arg: *mut c_void) {
    // SAFETY: every astarg here is a &AtomicUsize that outlives the lock.
    unsafe { &*(arg as *const AtomicUsize) }.fetch_add(1, Ordering::SeqCst);
}

fn lksb() -> DlmLksb {
    DlmLksb {
        sb_status: 0,
        sb_lkid: 0,
        sb_flags: 0,
        sb_lvbptr: null_mut(),
    }
}

fn arg(c: &AtomicUsize) -> *mut c_void {
    c as *const AtomicUsize as *mut c_void
}

/// Dispatch `fd` until `c` reaches `n` or 10 s pass.
fn wait_for(what: &str, fd: i32, c: &AtomicUsize, n: usize, d: &PrivateDaemon) {
    let end = Instant::now() + Duration::from_secs(10);
    while c.load(Ordering::SeqCst) < n {
        assert!(
            Instant::now() < end,
            "{what}: no AST after 10 s; dlmd's log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            abi::dispatch(fd),
            0,
            "dlm_dispatch; dlmd's log:\n{}",
            d.log()
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn lock(
    ls: *mut c_void,
    sb: &mut DlmLksb,
    flags: u32,
    c: &AtomicUsize,
    timeout: Option<&mut u64>,
) -> i32 {
    let t = timeout.map_or(null_mut(), |t| t as *mut u64);
    // SAFETY: sb and c outlive the lock (the test waits for its end).
    unsafe {
        abi::ls_lock(
            Flavor::Lite,
            ls,
            EX,
            sb,
            flags,
            b"r".as_ptr().cast(),
            1,
            Some(count),
            arg(c),
            None,
            null_mut(),
            null_mut(),
            t,
            false,
        )
    }
}

#[test]
fn lockx_timeout_cancels_a_waiting_request_with_etimedout() {
    let d = PrivateDaemon::start();
    let name = c"capi_timeout";
    // SAFETY: a NUL-terminated name.
    let ls = unsafe { abi::new_lockspace(Flavor::Lite, name.as_ptr(), 0o600, 0, false) };
    assert!(!ls.is_null(), "create; dlmd's log:\n{}", d.log());
    let fd = abi::ls_get_fd(ls);
    assert!(fd >= 0);

    let (ca, cb, cc) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let (mut a, mut b, mut c) = (lksb(), lksb(), lksb());
    assert_eq!(lock(ls, &mut a, 0, &ca, None), 0);
    wait_for("a", fd, &ca, 1, &d);
    assert_eq!(a.sb_status, 0, "a is granted");

    // b waits behind a; 20 centiseconds later it is cancelled.
    let mut t = 20u64;
    let start = Instant::now();
    assert_eq!(lock(ls, &mut b, LKF_TIMEOUT, &cb, Some(&mut t)), 0);
    assert_eq!(b.sb_status, EINPROG);
    wait_for("b", fd, &cb, 1, &d);
    let took = start.elapsed();
    assert_eq!(b.sb_status, libc::ETIMEDOUT, "b timed out");
    assert!(
        took >= Duration::from_millis(200),
        "not before its time ({took:?})"
    );
    assert_eq!(t, 20, "the timeout is not written back");

    // A timeout that does not run out changes nothing: c is granted.
    let mut t = 6000u64;
    let mut a2 = lksb();
    let ca2 = AtomicUsize::new(0);
    // SAFETY: a2 outlives the unlock; its AST goes to the unlock's astarg.
    let rv = unsafe { abi::ls_unlock(Flavor::Lite, ls, a.sb_lkid, 0, &mut a2, arg(&ca2), false) };
    assert_eq!(rv, 0);
    wait_for("unlock a", fd, &ca2, 1, &d);
    assert_eq!(a2.sb_status, EUNLOCK);
    assert_eq!(
        lock(ls, &mut c, LKF_TIMEOUT | LKF_NOQUEUE, &cc, Some(&mut t)),
        0
    );
    wait_for("c", fd, &cc, 1, &d);
    assert_eq!(c.sb_status, 0, "c is granted");

    // SAFETY: the name is NUL-terminated.
    assert_eq!(unsafe { abi::release_lockspace(name.as_ptr(), ls, 1) }, 0);
}
