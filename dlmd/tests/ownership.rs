//! Locks belong to connections: closing one (or killing its process)
//! releases its locks, and persistent ones become orphans.
#![forbid(unsafe_code)]

mod common;

use common::*;
use dlm_proto::{Errno, LockFlags as F, LockMode as M};

#[test]
fn closing_the_holder_grants_the_waiter() {
    let d = Daemon::start();
    let (_ctl, mut a, _) = d.lockspace("own");
    let mut b = d.open("own");
    let la = a.lock(&req(M::Ex, b"r", F::empty()));
    assert_eq!(a.wait_ast().status, 0);
    let lb = b.lock(&req(M::Ex, b"r", F::empty()));
    assert!(lb > la);
    assert!(b.take_asts().is_empty(), "B waits");
    assert_eq!(
        a.wait_ast().bast_mode,
        M::Ex as u8,
        "A is asked to give way"
    );
    drop(a);
    let g = b.wait_ast();
    assert_eq!(
        (i64::from(g.lkid), g.status),
        (lb, 0),
        "B granted on A's close"
    );
    let locks = b.locks("own");
    assert_eq!(locks.len(), 1);
    assert_eq!(i64::from(locks[0].lkid), lb);
    assert_eq!(locks[0].queue.as_deref(), Some("granted"));
}

#[test]
fn persistent_locks_become_orphans_and_can_be_adopted() {
    let d = Daemon::start();
    let (_ctl, mut a, _) = d.lockspace("orph");
    let mut b = d.open("orph");
    let lp = a.lock(&req(M::Pr, b"p", F::PERSISTENT));
    assert_eq!(a.wait_ast().status, 0);
    let lq = a.lock(&req(M::Pr, b"q", F::empty()));
    assert_eq!(a.wait_ast().status, 0);
    drop(a);
    wait_until("the orphan", TIMEOUT, || {
        let l = b.locks("orph");
        l.len() == 1 && l[0].orphan
    });
    let l = b.locks("orph");
    assert_eq!(i64::from(l[0].lkid), lp, "the persistent lock stays");
    assert_ne!(lp, lq);
    // Adoption needs the orphan's mode.
    let wrong = b.lock(&req(M::Ex, b"p", F::ORPHAN));
    assert_eq!(wrong, neg(Errno::EAGAIN));
    let none = b.lock(&req(M::Pr, b"nope", F::ORPHAN));
    assert_eq!(none, neg(Errno::ENOENT));
    let adopted = b.lock(&req(M::Pr, b"p", F::ORPHAN | F::PERSISTENT));
    assert_eq!(adopted, lp, "adoption returns the orphan's lock id");
    assert!(b.take_asts().is_empty(), "adoption has no callback");
    let l = b.locks("orph");
    assert!(!l[0].orphan);
    assert_eq!(b.unlock(&unl(lp as u32, F::empty())), 0);
    assert_eq!(b.wait_ast().status, EUNLOCK);
}

#[test]
fn purge_removes_orphans() {
    let d = Daemon::start();
    let (_ctl, mut a, _) = d.lockspace("purge");
    let mut b = d.open("purge");
    a.lock(&req(M::Ex, b"x", F::PERSISTENT));
    assert_eq!(a.wait_ast().status, 0);
    drop(a);
    wait_until("the orphan", TIMEOUT, || b.locks("purge").len() == 1);
    let w = dlm_proto::records::encode_purge(0, 0, dlm_proto::records::VERSION);
    assert_eq!(b.write(w.as_bytes()), 0);
    assert!(
        b.locks("purge").is_empty(),
        "purge of pid 0 frees every orphan"
    );
}

#[test]
fn a_killed_process_releases_its_locks() {
    let d = Daemon::start();
    let (_ctl, mut b, _) = d.lockspace("kill");
    let sock = d.socket.to_str().expect("utf-8 path");
    let (mut child, out) = spawn_helper("hold", &[sock, "kill", "res"], None);
    let line = out.line().expect("the helper takes the lock");
    assert!(line.starts_with("granted "), "{line}");
    let lb = b.lock(&req(M::Ex, b"res", F::empty()));
    assert!(lb > 0);
    assert!(b.take_asts().is_empty(), "B waits behind the helper");
    let locks = b.locks("kill");
    assert_eq!(locks.len(), 2);
    assert!(locks
        .iter()
        .any(|l| i64::from(l.lkid) == lb && l.queue.as_deref() == Some("waiting")));
    assert!(
        locks.iter().any(|l| l.pid == child.pid()),
        "the helper's lock"
    );
    child.signal(rustix::process::Signal::KILL);
    let st = child.wait_timeout(TIMEOUT).expect("the helper dies");
    assert!(!st.success());
    let g = b.wait_ast();
    assert_eq!(
        (i64::from(g.lkid), g.status),
        (lb, 0),
        "granted after kill -9"
    );
    assert_eq!(b.locks("kill").len(), 1);
}
