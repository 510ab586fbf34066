//! Grant rules: compatibility, queue order, `HEADQUE`/`NOORDER`/`EXPEDITE`,
//! `NOQUEUE`, conversion deadlock (`CONVDEADLK`, `NODLCKWT`) and the ALT modes.

use super::*;

// ---------------------------------------------------------------------
// Compatibility, queues and grant order
// ---------------------------------------------------------------------

#[test]
fn compatible_modes_are_granted_together() {
    let mut t = T::new();
    let (a, b, c) = (t.owner(), t.owner(), t.owner());
    t.granted(a, Pr, "r", none());
    t.granted(b, Pr, "r", none());
    t.granted(c, Cr, "r", none());
}

#[test]
fn incompatible_request_waits_and_blocking_ast_names_its_mode() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Ex, "r", none());
    let lb = t.lock(b, Pr, "r", none());
    assert_eq!(t.drain(b), vec![]);
    assert_eq!(t.drain(a), vec![Ev::B(la, Pr)]);
    t.unlock(a, la, none()).unwrap();
    assert_eq!(t.drain(a), vec![Ev::C(la, UNLOCKED, 0)]);
    assert_eq!(t.drain(b), vec![Ev::C(lb, 0, 0)]);
}

#[test]
fn new_request_waits_behind_the_wait_queue_even_if_compatible() {
    let mut t = T::new();
    let (a, b, c) = (t.owner(), t.owner(), t.owner());
    let la = t.granted(a, Pr, "r", none());
    let lb = t.lock(b, Ex, "r", none());
    let lc = t.lock(c, Pr, "r", none());
    assert_eq!(t.drain(c), vec![], "PR must queue behind the waiting EX");
    assert_eq!(t.drain(a), vec![Ev::B(la, Ex)]);
    t.unlock(a, la, none()).unwrap();
    assert_eq!(t.drain(b), vec![Ev::C(lb, 0, 0), Ev::B(lb, Pr)]);
    t.unlock(b, lb, none()).unwrap();
    assert_eq!(t.drain(c), vec![Ev::C(lc, 0, 0)]);
}

#[test]
fn convert_queue_is_served_before_wait_queue() {
    let mut t = T::new();
    let (a, b, c) = (t.owner(), t.owner(), t.owner());
    let la = t.granted(a, Ex, "r", none());
    let lb = t.granted(b, Nl, "r", none());
    let lc = t.lock(c, Pr, "r", none()); // waits
    t.conv(b, lb, Ex, none()); // converts, queued
    assert_eq!(t.drain(a), vec![Ev::B(la, Pr), Ev::B(la, Ex)]);
    t.unlock(a, la, none()).unwrap();
    assert_eq!(t.drain(b), vec![Ev::C(lb, 0, 0), Ev::B(lb, Pr)]);
    assert_eq!(t.drain(c), vec![]);
    t.conv(b, lb, Nl, none());
    assert_eq!(t.drain(b), vec![Ev::C(lb, 0, 0)]);
    assert_eq!(t.drain(c), vec![Ev::C(lc, 0, 0)]);
}

#[test]
fn in_place_conversion_is_granted_now_despite_waiters() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Pr, "r", none());
    let lb = t.lock(b, Ex, "r", none());
    assert_eq!(t.drain(a), vec![Ev::B(la, Ex)]);
    // PR -> CR is compatible with everything granted: granted in place.
    // The grant resets highbast, and EX is still blocked, so A is told
    // again.
    t.conv(a, la, Cr, none());
    assert_eq!(t.drain(a), vec![Ev::C(la, 0, 0), Ev::B(la, Ex)]);
    assert_eq!(t.e.lock_info(lb).unwrap().queue, Some(Queue::Waiting));
    assert_eq!(t.drain(b), vec![]);
}

#[test]
fn quecvt_conversion_queues_behind_existing_conversions() {
    let mut t = T::new();
    let (a, b, c) = (t.owner(), t.owner(), t.owner());
    let la = t.granted(a, Pr, "r", none());
    let lb = t.granted(b, Nl, "r", none());
    let lc = t.granted(c, Nl, "r", none());
    t.conv(b, lb, Ex, none()); // queued behind A's PR
    assert_eq!(t.drain(a), vec![Ev::B(la, Ex)]);
    // C's NL->CR would be compatible, but QUECVT puts it behind B.
    t.conv(c, lc, Cr, LockFlags::QUECVT);
    assert_eq!(t.drain(c), vec![]);
    t.unlock(a, la, none()).unwrap();
    assert_eq!(t.drain(b), vec![Ev::C(lb, 0, 0), Ev::B(lb, Cr)]);
    t.unlock(b, lb, none()).unwrap();
    assert_eq!(t.drain(c), vec![Ev::C(lc, 0, 0)]);
}

#[test]
fn quecvt_not_in_matrix_is_einval() {
    let mut t = T::new();
    let a = t.owner();
    let la = t.granted(a, Pr, "r", none());
    assert_eq!(t.try_conv(a, la, Cr, LockFlags::QUECVT), Err(Errno::EINVAL));
    assert_eq!(t.try_conv(a, la, Nl, LockFlags::QUECVT), Err(Errno::EINVAL));
    assert_eq!(t.try_conv(a, la, Pw, LockFlags::QUECVT), Ok(0));
    assert_eq!(t.drain(a), vec![Ev::C(la, 0, 0)]);
}

#[test]
fn grant_pending_locks_rescans_after_every_grant() {
    let mut t = T::new();
    let (a, b, c) = (t.owner(), t.owner(), t.owner());
    let la = t.granted(a, Ex, "r", none());
    let lb = t.lock(b, Cr, "r", none());
    let lc = t.lock(c, Cr, "r", none());
    assert_eq!(t.drain(a), vec![Ev::B(la, Cr)]);
    t.unlock(a, la, none()).unwrap();
    assert_eq!(t.drain(b), vec![Ev::C(lb, 0, 0)]);
    assert_eq!(t.drain(c), vec![Ev::C(lc, 0, 0)]);
}

#[test]
fn headque_puts_a_request_at_the_head_of_the_wait_queue() {
    let mut t = T::new();
    let (a, b, c) = (t.owner(), t.owner(), t.owner());
    let la = t.granted(a, Ex, "r", none());
    let lb = t.lock(b, Ex, "r", none());
    let lc = t.lock(c, Ex, "r", LockFlags::HEADQUE);
    assert_eq!(t.drain(a), vec![Ev::B(la, Ex)]);
    t.unlock(a, la, none()).unwrap();
    assert_eq!(t.drain(c), vec![Ev::C(lc, 0, 0), Ev::B(lc, Ex)]);
    assert_eq!(t.drain(b), vec![]);
    t.unlock(c, lc, none()).unwrap();
    assert_eq!(t.drain(b), vec![Ev::C(lb, 0, 0)]);
}

#[test]
fn headque_puts_a_conversion_at_the_head_of_the_convert_queue() {
    let mut t = T::new();
    let (a, b, c) = (t.owner(), t.owner(), t.owner());
    let la = t.granted(a, Ex, "r", none());
    let lb = t.granted(b, Nl, "r", none());
    let lc = t.granted(c, Nl, "r", none());
    t.conv(b, lb, Ex, none());
    t.conv(c, lc, Ex, LockFlags::HEADQUE);
    t.drain(a);
    t.unlock(a, la, none()).unwrap();
    assert_eq!(t.drain(c), vec![Ev::C(lc, 0, 0), Ev::B(lc, Ex)]);
    assert_eq!(t.drain(b), vec![]);
}

#[test]
fn noorder_request_skips_the_wait_queue_order() {
    let mut t = T::new();
    let (a, b, c) = (t.owner(), t.owner(), t.owner());
    let la = t.granted(a, Pr, "r", none());
    let lb = t.lock(b, Ex, "r", none());
    let lc = t.lock(c, Pr, "r", LockFlags::NOORDER);
    assert_eq!(t.drain(c), vec![Ev::C(lc, 0, 0)]);
    assert_eq!(t.drain(a), vec![Ev::B(la, Ex)]);
    assert_eq!(t.drain(b), vec![]);
    let _ = lb;
}

#[test]
fn expedite_grants_a_new_nl_request_at_once() {
    let mut t = T::new();
    let (a, b, c) = (t.owner(), t.owner(), t.owner());
    let la = t.granted(a, Ex, "r", none());
    t.lock(b, Ex, "r", none());
    assert_eq!(t.drain(a), vec![Ev::B(la, Ex)]);
    // A plain NL queues behind B; an EXPEDITE NL does not.
    let lc = t.lock(c, Nl, "r", LockFlags::EXPEDITE);
    assert_eq!(t.drain(c), vec![Ev::C(lc, 0, 0)]);
    let ld = t.lock(c, Nl, "r", none());
    assert_eq!(t.drain(c), vec![]);
    let _ = ld;
}

#[test]
fn expedite_is_only_for_new_nl_requests() {
    let mut t = T::new();
    let a = t.owner();
    let ex = LockFlags::EXPEDITE.bits();
    assert_eq!(t.try_lock(a, Pr as u8, b"r", ex), Err(Errno::EINVAL));
    assert_eq!(
        t.try_lock(a, Nl as u8, b"r", ex | LockFlags::NOQUEUE.bits()),
        Err(Errno::EINVAL)
    );
    let la = t.granted(a, Nl, "r", none());
    assert_eq!(
        t.try_conv(a, la, Nl, LockFlags::EXPEDITE),
        Err(Errno::EINVAL)
    );
}

// ---------------------------------------------------------------------
// NOQUEUE, conversion deadlock, ALT modes
// ---------------------------------------------------------------------

#[test]
fn noqueue_request_completes_with_eagain_and_ends() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Ex, "r", none());
    let lb = t.lock(b, Pr, "r", LockFlags::NOQUEUE);
    assert!(lb > la, "the write still returns a lock id");
    assert_eq!(t.drain(b), vec![Ev::C(lb, EAGAIN, 0)]);
    assert_eq!(t.drain(a), vec![], "no blocking AST without NOQUEUEBAST");
    // The lock ended: its id is gone and is reused.
    assert_eq!(t.unlock(b, lb, none()), Err(Errno::ENOENT));
    assert_eq!(t.lock(b, Nl, "other", none()), lb);
}

#[test]
fn noqueue_conversion_completes_with_eagain_and_keeps_the_lock() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Pr, "r", none());
    let lb = t.granted(b, Pr, "r", none());
    t.conv(b, lb, Ex, LockFlags::NOQUEUE);
    assert_eq!(t.drain(b), vec![Ev::C(lb, EAGAIN, 0)]);
    assert_eq!(t.drain(a), vec![]);
    let info = t.e.lock_info(lb).unwrap();
    assert_eq!((info.granted, info.queue), (Some(Pr), Some(Queue::Granted)));
    let _ = la;
}

#[test]
fn noqueuebast_sends_blocking_asts_to_granted_and_converting_locks() {
    let mut t = T::new();
    let (a, b, c) = (t.owner(), t.owner(), t.owner());
    let la = t.granted(a, Pr, "r", none());
    let lb = t.granted(b, Nl, "r", none());
    t.conv(b, lb, Ex, none());
    assert_eq!(t.drain(a), vec![Ev::B(la, Ex)]);
    let lc = t.lock(c, Pw, "r", LockFlags::NOQUEUE | LockFlags::NOQUEUEBAST);
    assert_eq!(t.drain(c), vec![Ev::C(lc, EAGAIN, 0)]);
    // A's highbast is EX already, so it gets nothing; B (converting,
    // granted NL) is compatible with PW, so nothing either.
    assert_eq!(t.drain(a), vec![]);
    assert_eq!(t.drain(b), vec![]);
    // A CR holder does get one for EX.
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Cr, "r", none());
    let lb = t.lock(b, Ex, "r", LockFlags::NOQUEUE | LockFlags::NOQUEUEBAST);
    assert_eq!(t.drain(b), vec![Ev::C(lb, EAGAIN, 0)]);
    assert_eq!(t.drain(a), vec![Ev::B(la, Ex)]);
}

#[test]
fn conversion_deadlock_completes_with_edeadlk_and_keeps_old_mode() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Pr, "r", none());
    let lb = t.granted(b, Pr, "r", none());
    t.conv(a, la, Ex, none());
    assert_eq!(t.drain(b), vec![Ev::B(lb, Ex)]);
    t.conv(b, lb, Ex, none());
    assert_eq!(t.drain(b), vec![Ev::C(lb, EDEADLK, 0)]);
    assert_eq!(t.drain(a), vec![]);
    let info = t.e.lock_info(lb).unwrap();
    assert_eq!((info.granted, info.queue), (Some(Pr), Some(Queue::Granted)));
    // B unlocks; A's conversion is granted.
    t.unlock(b, lb, none()).unwrap();
    assert_eq!(t.drain(b), vec![Ev::C(lb, UNLOCKED, 0)]);
    assert_eq!(t.drain(a), vec![Ev::C(la, 0, 0)]);
}

#[test]
fn convdeadlk_demotes_to_nl_and_reports_demoted() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Pr, "r", none());
    let lb = t.granted(b, Pr, "r", none());
    t.conv(a, la, Ex, none());
    assert_eq!(t.drain(b), vec![Ev::B(lb, Ex)]);
    t.conv(b, lb, Ex, LockFlags::CONVDEADLK);
    // B was demoted to NL, which let A's conversion through; B then
    // queues for EX behind A and A is told.
    assert_eq!(t.drain(a), vec![Ev::C(la, 0, 0), Ev::B(la, Ex)]);
    assert_eq!(t.drain(b), vec![]);
    assert_eq!(t.e.lock_info(lb).unwrap().granted, Some(Nl));
    t.unlock(a, la, none()).unwrap();
    assert_eq!(t.drain(b), vec![Ev::C(lb, 0, DEMOTED)]);
}

#[test]
fn convdeadlk_needs_convert_and_no_noqueue() {
    let mut t = T::new();
    let a = t.owner();
    let cd = LockFlags::CONVDEADLK.bits();
    assert_eq!(t.try_lock(a, Ex as u8, b"r", cd), Err(Errno::EINVAL));
    let la = t.granted(a, Nl, "r", none());
    assert_eq!(
        t.try_conv(a, la, Ex, LockFlags::CONVDEADLK | LockFlags::NOQUEUE),
        Err(Errno::EINVAL)
    );
}

#[test]
fn nodlckwt_queues_a_deadlocked_conversion_and_basts_itself() {
    let mut t = T::new();
    let (a, b, c) = (t.owner(), t.owner(), t.owner());
    let la = t.granted(a, Pr, "r", none());
    let lb = t.granted(b, Pr, "r", none());
    let lc = t.granted(c, Nl, "r", none());
    t.conv(a, la, Pw, none());
    assert_eq!(t.drain(b), vec![Ev::B(lb, Pw)]);
    t.conv(b, lb, Ex, LockFlags::NODLCKWT);
    assert_eq!(t.drain(b), vec![], "queued instead of EDEADLK");
    assert_eq!(t.e.lock_info(lb).unwrap().queue, Some(Queue::Converting));
    // The next grant pass sees the deadlock and tells B with its own
    // requested mode (B's highbast is PW < EX).
    t.unlock(c, lc, none()).unwrap();
    assert_eq!(t.drain(c), vec![Ev::C(lc, UNLOCKED, 0)]);
    assert_eq!(t.drain(b), vec![Ev::B(lb, Ex)]);
    assert_eq!(t.drain(a), vec![]);
}

#[test]
fn nodlckwt_self_bast_is_limited_by_highbast() {
    let mut t = T::new();
    let (a, b, c) = (t.owner(), t.owner(), t.owner());
    let la = t.granted(a, Pr, "r", none());
    let lb = t.granted(b, Pr, "r", none());
    let lc = t.granted(c, Nl, "r", none());
    t.conv(a, la, Ex, none());
    assert_eq!(t.drain(b), vec![Ev::B(lb, Ex)]);
    t.conv(b, lb, Ex, LockFlags::NODLCKWT);
    t.unlock(c, lc, none()).unwrap();
    assert_eq!(t.drain(b), vec![], "highbast is EX already");
}

#[test]
fn altpr_grants_in_pr_with_altmode() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    t.granted(a, Pr, "r", none());
    let lb = t.lock(b, Pw, "r", LockFlags::ALTPR);
    assert_eq!(t.drain(b), vec![Ev::C(lb, 0, ALTMODE)]);
    assert_eq!(t.e.lock_info(lb).unwrap().granted, Some(Pr));
}

#[test]
fn altcw_grants_in_cw_with_altmode() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    t.granted(a, Cw, "r", none());
    let lb = t.lock(b, Pr, "r", LockFlags::ALTCW);
    assert_eq!(t.drain(b), vec![Ev::C(lb, 0, ALTMODE)]);
    assert_eq!(t.e.lock_info(lb).unwrap().granted, Some(Cw));
}

#[test]
fn alt_mode_that_also_blocks_restores_the_requested_mode() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Ex, "r", none());
    let lb = t.lock(b, Pw, "r", LockFlags::ALTPR);
    assert_eq!(t.drain(b), vec![]);
    assert_eq!(t.drain(a), vec![Ev::B(la, Pw)]);
    assert_eq!(t.e.lock_info(lb).unwrap().requested, Some(Pw));
}
