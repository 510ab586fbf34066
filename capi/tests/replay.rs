//! A libdlm program keeps its locks across a daemon restart: the C ABI
//! replays through the client, on a private dlmd killed with SIGKILL and
//! started again. Through the functions the exported symbols call.
#![allow(unsafe_code)]

use std::os::raw::c_void;
use std::ptr::null_mut;

use dlm::{LockFlags, LockMode, LockRequest, LockspaceName, Outcome, ResourceName, Status};
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

/// `dlm_ls_lock_wait(ls, EX, lksb, 0, name)`.
fn lock_wait(ls: *mut c_void, name: &[u8], lksb: &mut DlmLksb) -> i32 {
    // SAFETY: a valid handle, name and status block, for a waiting call.
    unsafe {
        abi::ls_lock(
            Flavor::Lite,
            ls,
            EX,
            lksb,
            0,
            name.as_ptr().cast(),
            name.len() as u32,
            None,
            null_mut(),
            None,
            null_mut(),
            null_mut(),
            null_mut(),
            true,
        )
    }
}

/// Whether another handle (another connection) gets EX on `name` now.
fn free_for_others(name: &str) -> bool {
    let dlm = dlm::Dlm::open().unwrap();
    let ls = dlm
        .open_lockspace(&LockspaceName::new("capi_replay").unwrap())
        .unwrap();
    let r = ResourceName::new(name).unwrap();
    match ls
        .lock(LockRequest::new(r, LockMode::Ex).flags(LockFlags::NOQUEUE))
        .unwrap()
    {
        Outcome::Granted(l) => {
            l.unlock().unwrap();
            true
        }
        Outcome::NotGranted(c) => {
            assert_eq!(c.status, Status::WouldBlock);
            false
        }
    }
}

#[test]
fn a_lite_program_keeps_its_lock_and_its_lkid_across_a_daemon_kill() {
    let mut d = PrivateDaemon::start();
    let name = c"capi_replay";
    // SAFETY: a NUL-terminated name.
    let ls = unsafe { abi::new_lockspace(Flavor::Lite, name.as_ptr(), 0o600, 0, false) };
    assert!(!ls.is_null(), "create");
    let mut held = lksb();
    assert_eq!(lock_wait(ls, b"r", &mut held), 0);
    assert_eq!(held.sb_status, 0);
    let lkid = held.sb_lkid;
    assert!(!free_for_others("r"));

    d.crash_and_restart();
    // The program polls its fd and dispatches (libdlm's own loop): the
    // failure is readable, and the dispatch replays.
    let fd = abi::ls_get_fd(ls);
    assert!(fd >= 0);
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    assert_eq!(unsafe { libc::poll(&mut p, 1, 10_000) }, 1);
    assert_eq!(abi::dispatch(fd), 0);
    assert!(!free_for_others("r"), "the lock was replayed");
    // Its next lock works, and the replayed one unlocks by its old id.
    let mut other = lksb();
    assert_eq!(lock_wait(ls, b"s", &mut other), 0);
    assert_eq!(other.sb_status, 0);
    // SAFETY: the status block is valid for the waiting unlock.
    let rv = unsafe { abi::ls_unlock(Flavor::Lite, ls, lkid, 0, &mut held, null_mut(), true) };
    assert_eq!((rv, held.sb_status, held.sb_lkid), (0, EUNLOCK, lkid));
    assert!(free_for_others("r"));
    // SAFETY: as above.
    let rv = unsafe {
        abi::ls_unlock(
            Flavor::Lite,
            ls,
            other.sb_lkid,
            0,
            &mut other,
            null_mut(),
            true,
        )
    };
    assert_eq!((rv, other.sb_status), (0, EUNLOCK));
    // SAFETY: the handle is not used again.
    assert_eq!(unsafe { abi::release_lockspace(name.as_ptr(), ls, 1) }, 0);
    // The release reached the new daemon: the library's control
    // connection followed the lockspace there (it went to the dead one).
    let left = dlm::Dlm::open().unwrap().lockspaces().unwrap();
    assert!(
        !left.iter().any(|l| l.name == "capi_replay"),
        "the lockspace outlived its release: {left:?}\n{}",
        d.log()
    );
    assert!(
        d.log().contains("1 of 1 connection(s) replayed 1 lock(s)"),
        "{}",
        d.log()
    );
}
