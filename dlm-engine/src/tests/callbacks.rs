//! Callbacks: when a blocking AST is sent or suppressed, and the order,
//! limits and contents of what an owner reads.

use super::*;

// ---------------------------------------------------------------------
// Blocking ASTs
// ---------------------------------------------------------------------

#[test]
fn blocking_ast_is_sent_once_per_mode_level() {
    let mut t = T::new();
    let (a, b, c) = (t.owner(), t.owner(), t.owner());
    let la = t.granted(a, Ex, "r", none());
    t.lock(b, Pr, "r", none());
    t.lock(c, Pr, "r", none());
    assert_eq!(
        t.drain(a),
        vec![Ev::B(la, Pr)],
        "highbast suppresses a second PR"
    );
    t.lock(c, Ex, "r", none());
    assert_eq!(t.drain(a), vec![Ev::B(la, Ex)], "a higher mode is sent");
}

#[test]
fn pr_cw_pair_gets_a_blocking_ast_below_ex_highbast() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Pr, "r", none());
    t.lock(b, Cw, "r", none());
    assert_eq!(t.drain(a), vec![Ev::B(la, Cw)]);
    // Another CW still reaches PR (highbast CW < EX) but the read skips
    // a second identical BAST queued right behind the first... here it
    // was read already, so it is delivered again.
    t.lock(b, Cw, "r", none());
    assert_eq!(t.drain(a), vec![Ev::B(la, Cw)]);
}

#[test]
fn grant_pending_sends_cw_to_pr_holders_when_pr_and_cw_wait() {
    let mut t = T::new();
    let (a, b, c, d) = (t.owner(), t.owner(), t.owner(), t.owner());
    let la = t.granted(a, Ex, "r", none());
    let lc = t.lock(c, Cw, "r", none());
    let ld = t.lock(d, Pr, "r", none());
    t.drain(a);
    // A converts down to PR: D (PR) is granted; C (CW) is still blocked;
    // high is CW, and the PR holders are told CW.
    let _ = b;
    t.conv(a, la, Pr, none());
    assert_eq!(t.drain(a), vec![Ev::C(la, 0, 0), Ev::B(la, Cw)]);
    assert_eq!(t.drain(d), vec![], "D waits behind C in the wait queue");
    let _ = (lc, ld);
}

#[test]
fn no_blocking_ast_without_a_bast_address() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let mut noast = args(1);
    noast.bastaddr = 0;
    let la = t.e.lock(a, &LockParams::new(Ex, b"r", noast)).unwrap();
    assert_eq!(t.drain(a), vec![Ev::C(la, 0, 0)]);
    t.lock(b, Ex, "r", none());
    assert_eq!(t.drain(a), vec![]);
}

#[test]
fn blocking_ast_is_judged_against_the_last_completion_read() {
    // Linux 6.1 skips a BAST at read time only if it is compatible with
    // the mode of the last completion *read*. Here the BAST(PR) is read
    // before the completion of the down-conversion, so it is delivered.
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Ex, "r", none());
    let lb = t.lock(b, Pr, "r", none());
    t.conv(a, la, Pr, none());
    assert_eq!(t.drain(a), vec![Ev::B(la, Pr), Ev::C(la, 0, 0)]);
    assert_eq!(t.drain(b), vec![Ev::C(lb, 0, 0)]);
}

#[test]
fn a_blocking_ast_like_the_unread_one_before_it_is_not_queued() {
    // PR holders get CW blocking ASTs while their highbast is below EX;
    // the second CW lands right behind the unread first one and is
    // dropped when added.
    let mut t = T::new();
    let (a, b, c) = (t.owner(), t.owner(), t.owner());
    let la = t.granted(a, Pr, "r", none());
    t.lock(b, Cw, "r", none());
    t.lock(c, Cw, "r", none());
    assert_eq!(t.drain(a), vec![Ev::B(la, Cw)]);
}

#[test]
fn an_in_place_conversion_resets_highbast_and_basts_again() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Ex, "r", none());
    t.lock(b, Ex, "r", none());
    t.conv(a, la, Ex, none());
    assert_eq!(
        t.drain(a),
        vec![Ev::B(la, Ex), Ev::C(la, 0, 0), Ev::B(la, Ex)]
    );
}

// ---------------------------------------------------------------------
// Callback delivery (Linux 6.1 order and limits)
// ---------------------------------------------------------------------

#[test]
fn callbacks_of_the_head_lock_are_all_delivered_first() {
    let mut t = T::new();
    let a = t.owner();
    let b = t.owner();
    let l1 = t.lock(a, Ex, "x", none());
    let l2 = t.lock(a, Ex, "y", none());
    t.lock(b, Pr, "x", none());
    // l1 has cast then bast; l2's cast was queued between them, but the
    // kernel delivers per lock.
    assert_eq!(
        t.drain(a),
        vec![Ev::C(l1, 0, 0), Ev::B(l1, Pr), Ev::C(l2, 0, 0)]
    );
}

#[test]
fn at_most_six_callbacks_wait_per_lock() {
    let mut t = T::new();
    let a = t.owner();
    let la = t.lock(a, Nl, "r", none());
    for i in 0..7 {
        t.conv(a, la, if i % 2 == 0 { Ex } else { Nl }, none());
    }
    assert_eq!(t.drain(a).len(), CALLBACKS_SIZE);
}

#[test]
fn blocking_ast_record_carries_the_last_read_completion_status() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Pr, "r", none());
    t.conv(a, la, Ex, LockFlags::NOQUEUE);
    assert_eq!(t.drain(a), vec![Ev::C(la, 0, 0)]);
    let lb = t.lock(b, Pw, "r", LockFlags::NOQUEUE);
    assert_eq!(t.drain(b), vec![Ev::C(lb, EAGAIN, 0)]);
    let mut t2 = T::new();
    let (a, b) = (t2.owner(), t2.owner());
    let la = t2.granted(a, Pr, "r", none());
    let lx = t2.granted(b, Pr, "r", none());
    t2.conv(a, la, Ex, LockFlags::NOQUEUE);
    assert_eq!(t2.drain(a), vec![Ev::C(la, EAGAIN, 0)]);
    t2.lock(b, Ex, "r", none());
    let r = t2.e.read(a).unwrap();
    assert_eq!((r.bast_mode, r.status), (Ex as u8, EAGAIN));
    let _ = lx;
}

// ---------------------------------------------------------------------
// Callback delivery under Linux 6.12 (dlm_user_add_ast with
// dlm_may_skip_callback: one FIFO of records per owner, made when queued)
// ---------------------------------------------------------------------

#[test]
fn v612_callbacks_come_out_in_the_order_they_were_queued() {
    let mut t = T::v612();
    let a = t.owner();
    let b = t.owner();
    let l1 = t.lock(a, Ex, "x", none());
    let l2 = t.lock(a, Ex, "y", none());
    t.lock(b, Pr, "x", none());
    // 6.1 gives l1's cast and bast, then l2's cast.
    assert_eq!(
        t.drain(a),
        vec![Ev::C(l1, 0, 0), Ev::C(l2, 0, 0), Ev::B(l1, Pr)]
    );
}

#[test]
fn v612_has_no_cap_on_the_callbacks_of_a_lock() {
    let mut t = T::v612();
    let a = t.owner();
    let la = t.lock(a, Nl, "r", none());
    for i in 0..20 {
        t.conv(a, la, if i % 2 == 0 { Ex } else { Nl }, none());
    }
    assert_eq!(t.drain(a).len(), 21);
}

#[test]
fn v612_an_ended_lock_and_its_id_go_when_its_operation_completes() {
    let mut t = T::v612();
    let a = t.owner();
    let la = t.granted(a, Ex, "r", none());
    t.unlock(a, la, none()).unwrap();
    // The EUNLOCK is unread: 6.1 keeps the lock (EBUSY, and a new lock
    // gets another id); 6.12 has freed it.
    assert_eq!(t.e.lock_count(), 0);
    assert_eq!(t.try_conv(a, la, Pr, none()), Err(Errno::ENOENT));
    let lb = t.lock(a, Pr, "r", none());
    assert_eq!(lb, la);
    assert_eq!(t.drain(a), vec![Ev::C(la, UNLOCKED, 0), Ev::C(lb, 0, 0)]);
}

#[test]
fn v612_a_blocking_ast_record_has_status_0_and_its_queue_time_addresses() {
    let mut t = T::v612();
    let (a, b, c) = (t.owner(), t.owner(), t.owner());
    let la = t.granted(a, Pr, "r", none());
    t.granted(b, Pr, "r", none());
    t.conv(a, la, Ex, LockFlags::NOQUEUE);
    t.lock(c, Ex, "r", none());
    // Both queued; then a conversion changes the lock's arguments.
    let p = LockParams::convert(la, Nl, args(7)).flags(LockFlags::NOQUEUE);
    t.e.lock(a, &p).unwrap();
    let recs: Vec<AstRecord> = std::iter::from_fn(|| t.e.read(a)).collect();
    let got: Vec<(bool, i32, u8, u64, u64)> = recs
        .iter()
        .map(|r| (r.is_bast(), r.status, r.sb_flags, r.astparam, r.user_lksb))
        .collect();
    // 6.1 would give the blocking AST status EAGAIN (the last completion
    // read) and parameter 7 and status block 0x1007 (the lock's now).
    assert_eq!(
        got,
        vec![
            (false, EAGAIN, 0, 1, 0x1001),
            (true, 0, 0, 1, 0x1001),
            (false, 0, 0, 7, 0x1007),
        ]
    );
}

#[test]
fn v612_a_blocking_ast_like_the_last_callback_is_dropped_even_once_read() {
    let mut t = T::v612();
    let (a, b, c) = (t.owner(), t.owner(), t.owner());
    let la = t.granted(a, Pr, "r", none());
    t.lock(b, Cw, "r", none());
    assert_eq!(t.drain(a), vec![Ev::B(la, Cw)]);
    // 6.1 sends it again: the array is empty once read.
    t.lock(c, Cw, "r", none());
    assert_eq!(t.drain(a), vec![]);
}
