//! Value blocks: reads and writes by the LVB table, `IVVALBLK` and
//! `VALNOTVALID`, and the life of a resource's block.

use super::*;

#[test]
fn lvb_is_written_on_pw_or_ex_down_conversion_and_read_on_grant() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.lock(a, Ex, "r", vb());
    assert_eq!(
        t.read_lvb(a),
        Some(lvb(0)),
        "a new resource's LVB reads as zero"
    );
    let p = LockParams::convert(la, Nl, args(1)).flags(vb()).lvb(lvb(7));
    t.e.lock(a, &p).unwrap();
    assert_eq!(
        t.read_lvb(a),
        None,
        "EX->NL writes, so nothing is copied back"
    );
    let lb = t.lock(b, Pr, "r", vb());
    assert_eq!(
        t.e.read(b).map(|r| (r.lkid, r.lvb)),
        Some((lb, Some(lvb(7))))
    );
    assert_eq!(t.e.resource_lvb(b"r"), Some((Some(lvb(7)), false)));
}

#[test]
fn lvb_without_valblk_is_neither_read_nor_written() {
    let mut t = T::new();
    let a = t.owner();
    let la = t.lock(a, Ex, "r", vb());
    t.drain(a);
    // Down-convert without VALBLK: no write.
    let p = LockParams::convert(la, Nl, args(1)).lvb(lvb(9));
    t.e.lock(a, &p).unwrap();
    t.drain(a);
    assert_eq!(t.e.resource_lvb(b"r"), Some((None, false)));
}

#[test]
fn lvb_is_written_on_unlock_from_pw_with_valblk() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let keep = t.granted(b, Nl, "r", none());
    let la = t.lock(a, Pw, "r", vb());
    t.drain(a);
    let up = UnlockParams::new(la, vb(), args(1)).lvb(lvb(3));
    t.e.unlock(a, &up).unwrap();
    assert_eq!(t.drain(a), vec![Ev::C(la, UNLOCKED, 0)]);
    assert_eq!(t.e.resource_lvb(b"r"), Some((Some(lvb(3)), false)));
    let _ = keep;
}

#[test]
fn valblk_from_the_last_conversion_counts_on_unlock() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    t.granted(b, Nl, "r", none());
    let la = t.lock(a, Ex, "r", vb());
    t.drain(a);
    // Unlock without VALBLK: the lock's flags still carry it.
    let up = UnlockParams::new(la, none(), args(1)).lvb(lvb(5));
    t.e.unlock(a, &up).unwrap();
    t.drain(a);
    assert_eq!(t.e.resource_lvb(b"r"), Some((Some(lvb(5)), false)));
}

#[test]
fn ivvalblk_marks_the_lvb_invalid_and_grants_report_valnotvalid() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.lock(a, Ex, "r", vb());
    t.drain(a);
    let p = LockParams::convert(la, Nl, args(1)).flags(vb()).lvb(lvb(1));
    t.e.lock(a, &p).unwrap();
    t.conv(a, la, Ex, vb());
    assert_eq!(t.drain(a), vec![Ev::C(la, 0, 0), Ev::C(la, 0, 0)]);
    // EX -> NL with IVVALBLK invalidates; that completion is not flagged.
    t.conv(a, la, Nl, LockFlags::IVVALBLK);
    assert_eq!(t.drain(a), vec![Ev::C(la, 0, 0)]);
    assert_eq!(t.e.resource_lvb(b"r"), Some((Some(lvb(1)), true)));
    // A reader with a value block is told, and still gets the old bytes.
    let lb = t.lock(b, Pr, "r", vb());
    let r = t.e.read(b).unwrap();
    assert_eq!((r.lkid, r.sb_flags, r.lvb), (lb, VALNOTVALID, Some(lvb(1))));
    t.unlock(b, lb, none()).unwrap();
    t.drain(b);
    // A write clears the mark.
    t.conv(a, la, Ex, vb());
    assert_eq!(t.drain(a), vec![Ev::C(la, 0, VALNOTVALID)]);
    let p = LockParams::convert(la, Nl, args(1)).flags(vb()).lvb(lvb(9));
    t.e.lock(a, &p).unwrap();
    assert_eq!(t.drain(a), vec![Ev::C(la, 0, 0)]);
    assert_eq!(t.e.resource_lvb(b"r"), Some((Some(lvb(9)), false)));
}

#[test]
fn ivvalblk_invalidation_shows_only_where_a_value_block_exists() {
    // set_lvb_lock returns before the VALNOTVALID check when the lock has
    // no value block, or when the resource has none to read.
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.lock(a, Ex, "r", vb());
    t.drain(a);
    t.conv(a, la, Nl, LockFlags::IVVALBLK);
    t.drain(a);
    let lb = t.lock(b, Pr, "r", vb());
    assert_eq!(t.drain(b), vec![Ev::C(lb, 0, 0)]);
    let lb2 = t.lock(b, Cr, "r", none());
    assert_eq!(t.drain(b), vec![Ev::C(lb2, 0, 0)]);
    assert_eq!(t.e.resource_lvb(b"r"), Some((None, true)));
}

#[test]
fn lvb_is_freed_when_the_last_lock_on_the_resource_goes() {
    let mut t = T::new();
    let a = t.owner();
    let la = t.lock(a, Ex, "r", vb());
    t.drain(a);
    let up = UnlockParams::new(la, vb(), args(1)).lvb(lvb(8));
    t.e.unlock(a, &up).unwrap();
    t.drain(a);
    let lb = t.lock(a, Pr, "r", vb());
    assert_eq!(
        t.e.read(a).map(|r| (r.lkid, r.lvb)),
        Some((lb, Some(lvb(0))))
    );
    assert_eq!(t.e.resource_lvb(b"r"), Some((None, false)));
}

#[test]
fn lvb_survives_while_the_ended_lock_is_unread() {
    // The resource is held by the ended lock until its EUNLOCK is read.
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.lock(a, Ex, "r", vb());
    t.drain(a);
    let up = UnlockParams::new(la, vb(), args(1)).lvb(lvb(6));
    t.e.unlock(a, &up).unwrap();
    let lb = t.lock(b, Pr, "r", vb());
    assert_eq!(
        t.e.read(b).map(|r| (r.lkid, r.lvb)),
        Some((lb, Some(lvb(6))))
    );
}

#[test]
fn new_request_ignores_the_callers_lvb_bytes() {
    let mut t = T::new();
    let a = t.owner();
    let p = LockParams::new(Ex, b"r", args(1)).flags(vb()).lvb(lvb(4));
    let la = t.e.lock(a, &p).unwrap();
    assert_eq!(
        t.e.read(a).map(|r| (r.lkid, r.lvb)),
        Some((la, Some(lvb(0))))
    );
}

#[test]
fn lvb_copy_back_follows_the_previous_completion_mode() {
    // CR -> NL is a "nothing" cell (-1), which is truthy for the copy
    // decision: the caller's own bytes come back.
    let mut t = T::new();
    let a = t.owner();
    let la = t.lock(a, Cr, "r", vb());
    t.drain(a);
    let p = LockParams::convert(la, Nl, args(1)).flags(vb()).lvb(lvb(2));
    t.e.lock(a, &p).unwrap();
    assert_eq!(t.read_lvb(a), Some(lvb(2)));
}

#[test]
fn a_refused_valblk_conversion_does_not_attach_its_value_block() {
    // Found by the random differential run: the buffer exists, but the
    // unlock does not write it, since lkb_lvbptr was never set.
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Ex, "r", none());
    assert_eq!(
        t.try_conv(a, la, Ex, LockFlags::VALBLK | LockFlags::QUECVT),
        Err(Errno::EINVAL)
    );
    let up = UnlockParams::new(la, vb(), args(1)).lvb(lvb(5));
    t.e.unlock(a, &up).unwrap();
    t.drain(a);
    let lb = t.lock(b, Ex, "r", vb());
    assert_eq!(
        t.e.read(b).map(|r| (r.lkid, r.lvb)),
        Some((lb, Some(lvb(0))))
    );
}
