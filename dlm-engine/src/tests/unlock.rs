//! Unlock, cancel, `FORCEUNLOCK` and deadlock cancel.

use super::*;

#[test]
fn cancel_of_a_waiting_request_completes_with_ecancel_and_ends() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    t.granted(a, Ex, "r", none());
    let lb = t.lock(b, Ex, "r", none());
    t.drain(a);
    t.cancel(b, lb).unwrap();
    assert_eq!(t.drain(b), vec![Ev::C(lb, CANCELLED, 0)]);
    assert_eq!(t.unlock(b, lb, none()), Err(Errno::ENOENT));
}

#[test]
fn cancel_of_a_conversion_reverts_to_the_granted_mode() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    t.granted(a, Pr, "r", none());
    let lb = t.granted(b, Cr, "r", none());
    t.conv(b, lb, Ex, none());
    t.drain(a);
    t.cancel(b, lb).unwrap();
    assert_eq!(t.drain(b), vec![Ev::C(lb, CANCELLED, 0)]);
    let info = t.e.lock_info(lb).unwrap();
    assert_eq!((info.granted, info.queue), (Some(Cr), Some(Queue::Granted)));
    // The lock is alive: it can be unlocked.
    t.unlock(b, lb, none()).unwrap();
    assert_eq!(t.drain(b), vec![Ev::C(lb, UNLOCKED, 0)]);
}

#[test]
fn cancel_of_a_granted_lock_succeeds_with_no_ast() {
    let mut t = T::new();
    let a = t.owner();
    let la = t.granted(a, Ex, "r", none());
    assert_eq!(t.cancel(a, la), Ok(()));
    assert_eq!(t.drain(a), vec![]);
    assert_eq!(t.cancel(a, 999), Err(Errno::ENOENT));
}

#[test]
fn cancel_with_forceunlock_is_einval() {
    let mut t = T::new();
    let a = t.owner();
    let la = t.granted(a, Ex, "r", none());
    assert_eq!(
        t.unlock(a, la, LockFlags::CANCEL | LockFlags::FORCEUNLOCK),
        Err(Errno::EINVAL)
    );
}

#[test]
fn unlock_of_a_waiting_request_is_allowed() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Ex, "r", none());
    let lb = t.lock(b, Ex, "r", none());
    assert_eq!(t.drain(a), vec![Ev::B(la, Ex)]);
    t.unlock(b, lb, none()).unwrap();
    assert_eq!(t.drain(b), vec![Ev::C(lb, UNLOCKED, 0)]);
}

#[test]
fn forceunlock_removes_a_converting_lock() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    t.granted(a, Pr, "r", none());
    let lb = t.granted(b, Pr, "r", none());
    t.conv(b, lb, Ex, none());
    t.drain(a);
    t.unlock(b, lb, LockFlags::FORCEUNLOCK).unwrap();
    assert_eq!(t.drain(b), vec![Ev::C(lb, UNLOCKED, 0)]);
    assert!(t.e.lock_info(lb).is_none());
}

#[test]
fn unlock_with_unknown_flags_is_einval() {
    let mut t = T::new();
    let a = t.owner();
    let la = t.granted(a, Ex, "r", none());
    assert_eq!(t.unlock(a, la, LockFlags::NOQUEUE), Err(Errno::EINVAL));
    assert_eq!(t.unlock(a, la, LockFlags::PERSISTENT), Err(Errno::EINVAL));
    assert_eq!(t.unlock(a, la, LockFlags::VALBLK), Ok(()));
}

#[test]
fn deadlock_cancel_completes_with_edeadlk() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    t.granted(a, Ex, "r", none());
    let lb = t.lock(b, Pr, "r", none());
    t.drain(a);
    t.e.deadlock_cancel(b, lb, 0).unwrap();
    assert_eq!(t.drain(b), vec![Ev::C(lb, EDEADLK, 0)]);
    assert_eq!(t.unlock(b, lb, none()), Err(Errno::ENOENT));
    assert_eq!(t.e.deadlock_cancel(b, 77, 0), Err(Errno::ENOENT));
}

#[test]
fn deadlock_cancel_of_a_granted_lock_is_silent_but_marks_the_next_cancel() {
    // Kernel quirk: the DEADLOCK_CANCEL mark stays on the lock when there
    // was nothing to cancel, so the next real cancel reports EDEADLK.
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    t.granted(a, Pr, "r", none());
    let lb = t.granted(b, Cr, "r", none());
    t.e.deadlock_cancel(b, lb, 0).unwrap();
    assert_eq!(t.drain(b), vec![]);
    t.conv(b, lb, Ex, none());
    t.drain(a);
    t.cancel(b, lb).unwrap();
    assert_eq!(t.drain(b), vec![Ev::C(lb, EDEADLK, 0)]);
}

#[test]
fn a_second_cancel_over_a_finished_cancel_is_einval() {
    // Found by the random differential run against Linux 6.1.
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    t.granted(b, Pr, "r", none());
    let la = t.granted(a, Nl, "r", none());
    t.conv(a, la, Ex, none());
    t.cancel(a, la).unwrap();
    assert_eq!(t.drain(a), vec![Ev::C(la, CANCELLED, 0)]);
    assert_eq!(t.cancel(a, la), Err(Errno::EINVAL));
    // A conversion replaces the flags, and cancel is quiet again.
    t.conv(a, la, Cr, none());
    assert_eq!(t.drain(a), vec![Ev::C(la, 0, 0)]);
    assert_eq!(t.cancel(a, la), Ok(()));
}
