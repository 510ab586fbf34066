//! A purge of the handle's own locks (`purge(0, our pid)`) on a private
//! dlmd. The DLM ends them silently, so nothing will ever complete for
//! them: a call waiting on one of them returns `ENOENT`, and so does every
//! later operation on their ids, instead of waiting for ever.
//!
//! A lock requested with `FORCEUNLOCK` among its own flags is left granted
//! by the purge (its force-unlock is refused, as in the kernel), and stays
//! until its lockspace is released: that is pinned here too.

use std::sync::mpsc;
use std::time::Duration;

use dlm::{Dlm, Errno, Error, LockFlags, LockMode, LockRequest, LockspaceFlags, LockspaceName};
use dlm::{ResourceName, Status};

fn res(s: &str) -> ResourceName {
    ResourceName::new(s).expect("a resource name")
}

fn is_enoent<T: std::fmt::Debug>(r: &Result<T, Error>) -> bool {
    matches!(r, Err(Error::Os(e)) if *e == Errno::ENOENT)
}

#[test]
fn a_purge_of_our_own_locks_ends_them_here_too() {
    let daemon = dlm_testkit::PrivateDaemon::start();
    let dlm = Dlm::open().expect("dlm");
    let name = LockspaceName::new("purge-own").expect("a name");
    let ls = dlm
        .create_lockspace(&name, LockspaceFlags::empty(), 0o600)
        .expect("lockspace");
    ls.start_event_loop().expect("event loop");

    let held = ls
        .lock(LockRequest::new(res("a"), LockMode::Ex))
        .expect("lock a")
        .granted()
        .expect("a granted");
    let (tx, rx) = mpsc::channel();
    let odd = ls
        .request(
            LockRequest::new(res("b"), LockMode::Pr).flags(LockFlags::FORCEUNLOCK),
            move |_, c| {
                let _ = tx.send(c.status);
            },
        )
        .expect("request b");
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)),
        Ok(Status::Granted),
        "b's grant"
    );

    // A waiting request of the same handle, queued behind `held`.
    let waiter = {
        let ls = ls.clone();
        std::thread::spawn(move || ls.lock(LockRequest::new(res("a"), LockMode::Ex)).map(drop))
    };
    let queued = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        dlm.locks(&name)
            .expect("locks")
            .iter()
            .any(|l| l.resource == "a" && l.queue.as_deref() == Some("waiting"))
    });
    assert!(queued, "the second request of a never queued");

    ls.purge(0, std::process::id())
        .expect("purge of our own locks");

    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(waiter.join().expect("the waiter's thread"));
    });
    let waited = done_rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| {
            panic!(
                "the waiting request still waits after the purge; dlmd's log:\n{}",
                daemon.log()
            )
        });
    assert!(is_enoent(&waited), "the purged waiting request: {waited:?}");
    // Before the purge ended them here, a waiting unlock of `odd` (which
    // dlmd, like the kernel, accepts and completes nothing for) waited
    // for ever.
    let unlocked = ls.unlock_wait(odd, LockFlags::empty(), None);
    assert!(
        is_enoent(&unlocked),
        "unlock of a purged lock: {unlocked:?}"
    );
    let r = held.unlock();
    assert!(is_enoent(&r), "unlock of the purged held lock: {r:?}");

    // In the DLM, `a` is free and `b` is still held, dead, until the
    // lockspace goes.
    let other = Dlm::open()
        .expect("dlm")
        .open_lockspace(&name)
        .expect("open again");
    let noqueue = |r: &str| {
        other
            .lock(LockRequest::new(res(r), LockMode::Ex).flags(LockFlags::NOQUEUE))
            .expect("a NOQUEUE request")
            .granted()
    };
    assert!(noqueue("a").is_some(), "a after the purge");
    assert!(noqueue("b").is_none(), "b, left by the purge");
    drop(other);
    dlm.release_lockspace(ls, true).expect("release");
}
