//! A waiting call made from an AST that a waiting call of the same thread
//! runs (lite: ASTs run inside `_wait`): the nested wait reads the
//! lockspace itself, since the outer one cannot until the AST returns.
//! Through the functions the exported symbols call, on a private dlmd.
#![allow(unsafe_code)]

use std::os::raw::c_void;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use dlm_capi::{abi, DlmLksb, Flavor, EUNLOCK};
use dlm_testkit::PrivateDaemon;

const EX: u32 = 5;

fn lksb() -> DlmLksb {
    DlmLksb {
        sb_status: 0,
        sb_lkid: 0,
        sb_flags: 0,
        sb_lvbptr: null_mut(),
    }
}

/// What the AST of x needs: the handle, x's lksb, and where to put the
/// result of its nested `dlm_ls_unlock_wait` (`i32::MIN` until then).
struct X {
    ls: *mut c_void,
    lksb: DlmLksb,
    rv: AtomicI32,
    status: AtomicI32,
}

extern "C" fn unlock_wait_from_ast(arg: *mut c_void) {
    // SAFETY: the astarg is the test's X, alive until the test ends.
    let x = unsafe { &mut *(arg as *mut X) };
    let lkid = x.lksb.sb_lkid;
    // SAFETY: x.lksb is valid for the unlock.
    let rv = unsafe { abi::ls_unlock(Flavor::Lite, x.ls, lkid, 0, &mut x.lksb, null_mut(), true) };
    x.status.store(x.lksb.sb_status, Ordering::SeqCst);
    x.rv.store(rv, Ordering::SeqCst);
}

fn body() {
    let name = c"capi_nested";
    // SAFETY: a NUL-terminated name.
    let ls = unsafe { abi::new_lockspace(Flavor::Lite, name.as_ptr(), 0o600, 0, false) };
    assert!(!ls.is_null(), "create");
    let mut x = Box::new(X {
        ls,
        lksb: lksb(),
        rv: AtomicI32::new(i32::MIN),
        status: AtomicI32::new(0),
    });
    let xp: *mut X = &mut *x;
    // x, asynchronously: its completion is not dispatched yet.
    // SAFETY: x (and its lksb) outlive the lock.
    let rv = unsafe {
        abi::ls_lock(
            Flavor::Lite,
            ls,
            EX,
            &mut (*xp).lksb,
            0,
            b"x".as_ptr().cast(),
            1,
            Some(unlock_wait_from_ast),
            xp.cast(),
            None,
            null_mut(),
            null_mut(),
            null_mut(),
            false,
        )
    };
    assert_eq!(rv, 0);
    // y, waiting: its wait runs x's AST, which waits for x's unlock.
    let mut y = lksb();
    // SAFETY: y outlives the call.
    let rv = unsafe {
        abi::ls_lock(
            Flavor::Lite,
            ls,
            EX,
            &mut y,
            0,
            b"y".as_ptr().cast(),
            1,
            None,
            null_mut(),
            None,
            null_mut(),
            null_mut(),
            null_mut(),
            true,
        )
    };
    assert_eq!(rv, 0, "y granted");
    assert_eq!(
        x.rv.load(Ordering::SeqCst),
        0,
        "the nested dlm_ls_unlock_wait returned 0"
    );
    assert_eq!(
        x.status.load(Ordering::SeqCst),
        EUNLOCK,
        "and x is unlocked"
    );
    // SAFETY: the name is NUL-terminated.
    assert_eq!(unsafe { abi::release_lockspace(name.as_ptr(), ls, 1) }, 0);
}

#[test]
fn a_wait_inside_an_ast_run_by_a_wait_reads_itself() {
    // The daemon stays with this thread, so that it is stopped however
    // the test ends (a hung body thread is left to the process's exit).
    let d = PrivateDaemon::start();
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        body();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(()) => t.join().expect("the test body"),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let e = t.join().expect_err("the body ended without saying so");
            panic!("the test body failed: {e:?}; dlmd's log:\n{}", d.log());
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("the nested wait hangs (20 s); dlmd's log:\n{}", d.log())
        }
    }
}
