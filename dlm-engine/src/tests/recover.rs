//! Replay: locks rebuilt granted under their own ids, what they block,
//! who hears of them, and the value block they leave on their resource.

use super::*;

impl T {
    /// Replay `lkid` for `o`, granted in `mode` on `name`.
    fn replay(
        &mut self,
        o: OwnerId,
        lkid: u32,
        mode: LockMode,
        name: &str,
        flags: LockFlags,
    ) -> Result<(), Errno> {
        let rl = ReplayLock::new(lkid, mode, name.as_bytes(), args(1)).flags(flags);
        self.e.replay_granted(o, rl)
    }

    /// Replay with a value block.
    fn replay_lvb(&mut self, o: OwnerId, lkid: u32, mode: LockMode, block: [u8; 32], valid: bool) {
        let rl = ReplayLock::new(lkid, mode, b"r", args(1))
            .flags(vb())
            .lvb(block, valid);
        self.e.replay_granted(o, rl).expect("replay accepted");
    }
}

#[test]
fn a_replayed_lock_is_granted_under_its_id_with_no_callback() {
    let mut t = T::new();
    let a = t.owner();
    let rl = ReplayLock::new(7, Pw, b"r", args(1))
        .flags(LockFlags::PERSISTENT)
        .pid(99);
    t.e.replay_granted(a, rl).unwrap();
    assert_eq!(t.drain(a), vec![], "its owner had its completion already");
    assert_eq!(
        t.e.lock_info(7),
        Some(LockInfo {
            lkid: 7,
            resource: b"r".to_vec(),
            granted: Some(Pw),
            requested: None,
            queue: Some(Queue::Granted),
            owner: Some(a),
            pid: 99,
            flags: LockFlags::PERSISTENT,
        })
    );
    assert_eq!((t.e.lock_count(), t.e.resource_count()), (1, 1));
}

#[test]
fn replayed_locks_block_later_conflicting_requests_and_get_their_basts() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    t.replay(a, 5, Ex, "r", none()).unwrap();
    let lb = t.lock(b, Pr, "r", none());
    assert_eq!(t.drain(b), vec![], "PR waits behind the replayed EX");
    assert_eq!(t.drain(a), vec![Ev::B(5, Pr)]);
    let try_b = t.lock(b, Nl, "r", none());
    assert_eq!(t.drain(b), vec![], "NL waits behind the queued PR");
    t.unlock(a, 5, none()).unwrap();
    assert_eq!(t.drain(a), vec![Ev::C(5, UNLOCKED, 0)]);
    assert_eq!(t.drain(b), vec![Ev::C(lb, 0, 0), Ev::C(try_b, 0, 0)]);
    assert!(t.e.lock_info(5).is_none(), "the replayed lock is gone");
}

#[test]
fn a_replay_sends_no_blocking_ast_even_past_a_waiter() {
    let mut t = T::new();
    let (a, b, c) = (t.owner(), t.owner(), t.owner());
    let la = t.granted(a, Pr, "r", none());
    let lc = t.lock(c, Ex, "r", none());
    assert_eq!(t.drain(a), vec![Ev::B(la, Ex)]);
    // B's PR joins A's: granted at once, past C's waiting EX, and no one
    // hears of it.
    t.replay(b, 9, Pr, "r", none()).unwrap();
    for o in [a, b, c] {
        assert_eq!(t.drain(o), vec![]);
    }
    assert_eq!(t.e.lock_info(9).and_then(|l| l.granted), Some(Pr));
    assert_eq!(
        t.e.lock_info(lc).and_then(|l| l.queue),
        Some(Queue::Waiting)
    );
    // recover_grant tells B that C waits; A has been told already.
    assert_eq!(t.e.recover_grant(), 1);
    assert_eq!(t.drain(b), vec![Ev::B(9, Ex)]);
    assert_eq!(t.drain(a), vec![]);
    assert_eq!(t.e.recover_grant(), 0, "the mark is cleared");
    t.unlock(a, la, none()).unwrap();
    t.unlock(b, 9, none()).unwrap();
    assert_eq!(t.drain(b), vec![Ev::C(9, UNLOCKED, 0)]);
    assert_eq!(t.drain(c), vec![Ev::C(lc, 0, 0)]);
}

#[test]
fn recover_grant_has_nothing_to_do_where_no_one_waits() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    t.replay(a, 1, Pr, "r", none()).unwrap();
    t.replay(b, 2, Pr, "r", none()).unwrap();
    assert_eq!(t.e.recover_grant(), 0);
    assert_eq!((t.drain(a), t.drain(b)), (vec![], vec![]));
}

#[test]
fn a_conflicting_replay_is_eagain_and_changes_nothing() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Pr, "r", none());
    assert_eq!(t.replay(b, 10, Ex, "r", none()), Err(Errno::EAGAIN));
    assert_eq!(t.replay(b, 10, Pw, "r", none()), Err(Errno::EAGAIN));
    // A converting lock counts in the mode it holds.
    let lb = t.granted(b, Nl, "q", none());
    t.granted(a, Pr, "q", none());
    t.conv(b, lb, Ex, none());
    assert_eq!(t.drain(b), vec![]);
    t.drain(a);
    assert_eq!(t.replay(a, 10, Ex, "q", none()), Err(Errno::EAGAIN));
    assert_eq!(t.e.lock_count(), 3);
    assert!(t.e.lock_info(10).is_none());
    for o in [a, b] {
        assert_eq!(t.drain(o), vec![], "a refused replay sends nothing");
    }
    // Compatible replays are taken.
    t.replay(b, 10, Cr, "r", none()).unwrap();
    t.replay(b, 11, Cr, "q", none()).unwrap();
    assert_eq!(t.e.lock_info(la).and_then(|l| l.granted), Some(Pr));
}

#[test]
fn replay_arguments_are_checked() {
    let mut t = T::new();
    let a = t.owner();
    let la = t.granted(a, Nl, "r", none());
    assert_eq!(t.replay(a, la, Nl, "s", none()), Err(Errno::EEXIST));
    assert_eq!(t.replay(a, 0, Nl, "s", none()), Err(Errno::EINVAL));
    assert_eq!(
        t.replay(a, REPLAY_LKID_MAX + 1, Nl, "s", none()),
        Err(Errno::EINVAL)
    );
    let long = "x".repeat(65);
    assert_eq!(t.replay(a, 2, Nl, &long, none()), Err(Errno::EINVAL));
    let mut rl = ReplayLock::new(2, Nl, b"s", args(1));
    rl.args.castaddr = 0;
    assert_eq!(t.e.replay_granted(a, rl), Err(Errno::EINVAL));
    let mut rl = ReplayLock::new(2, Nl, b"s", args(1));
    rl.args.lksb = 0;
    assert_eq!(t.e.replay_granted(a, rl), Err(Errno::EINVAL));
    assert_eq!(t.e.lock_count(), 1, "nothing was added");
    t.e.close_owner(a).unwrap();
    assert_eq!(t.replay(a, 2, Nl, "s", none()), Err(Errno::EBADF));
    // The highest id is taken.
    let b = t.owner();
    t.replay(b, REPLAY_LKID_MAX, Nl, "s", none()).unwrap();
    assert_eq!(
        t.e.lock_info(REPLAY_LKID_MAX).map(|l| l.lkid),
        Some(REPLAY_LKID_MAX)
    );
}

#[test]
fn the_id_allocator_skips_replayed_ids_while_they_live() {
    let mut t = T::new();
    let a = t.owner();
    // 5 first: ids 1..=4 become free; then 3, which is in the free heap.
    t.replay(a, 5, Nl, "r5", none()).unwrap();
    t.replay(a, 3, Nl, "r3", none()).unwrap();
    let ids: Vec<u32> = (0..4)
        .map(|i| t.granted(a, Nl, &format!("n{i}"), none()))
        .collect();
    assert_eq!(ids, vec![1, 2, 4, 6]);
    // A replayed lock's id comes back when it goes.
    t.unlock(a, 3, none()).unwrap();
    assert_eq!(t.drain(a), vec![Ev::C(3, UNLOCKED, 0)]);
    assert_eq!(t.granted(a, Nl, "again", none()), 3);
    assert_eq!(t.granted(a, Nl, "next", none()), 7);
    // An id freed and taken by a replay again is skipped again.
    t.unlock(a, 2, none()).unwrap();
    t.drain(a);
    t.replay(a, 2, Nl, "r2", none()).unwrap();
    assert_eq!(t.granted(a, Nl, "after", none()), 8);
    let live: Vec<u32> = t.e.locks().iter().map(|l| l.lkid).collect();
    assert_eq!(live, (1..=8).collect::<Vec<u32>>());
}

#[test]
fn a_replayed_id_above_those_handed_out_frees_the_ones_below() {
    let mut t = T::new();
    let a = t.owner();
    let l1 = t.granted(a, Nl, "a", none());
    t.replay(a, 4, Nl, "r", none()).unwrap();
    assert_eq!(t.granted(a, Nl, "b", none()), 2);
    assert_eq!(t.granted(a, Nl, "c", none()), 3);
    assert_eq!(t.granted(a, Nl, "d", none()), 5);
    assert_eq!(l1, 1);
}

#[test]
fn a_vouching_replay_sets_the_resources_value_block() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    t.replay_lvb(a, 1, Pr, lvb(7), true);
    assert_eq!(t.e.resource_lvb(b"r"), Some((Some(lvb(7)), false)));
    // A compatible request reads it, valid.
    let lb = t.lock(b, Pr, "r", vb());
    let rec = t.e.read(b).expect("a completion");
    assert_eq!((rec.lkid, rec.sb_flags, rec.lvb), (lb, 0, Some(lvb(7))));
}

#[test]
fn replays_that_cannot_vouch_leave_the_block_not_valid() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    // NL and CR holders read the block long ago: it may have changed.
    t.replay_lvb(a, 1, Nl, lvb(1), true);
    t.replay_lvb(a, 2, Cr, lvb(2), true);
    // A PR holder whose block was not valid cannot vouch either.
    t.replay_lvb(a, 3, Pr, lvb(3), false);
    assert_eq!(t.e.resource_lvb(b"r"), Some((Some(lvb(1)), true)));
    let lb = t.lock(b, Pr, "r", vb());
    let rec = t.e.read(b).expect("a completion");
    assert_eq!(
        (rec.lkid, rec.sb_flags, rec.lvb),
        (lb, VALNOTVALID, Some(lvb(1)))
    );
    // A lock without a value block is not told, as in the kernel.
    let lc = t.lock(b, Pr, "r", none());
    assert_eq!(t.drain(b), vec![Ev::C(lc, 0, 0)]);
}

#[test]
fn a_vouching_replay_wins_in_either_order() {
    for vouch_first in [false, true] {
        let mut t = T::new();
        let a = t.owner();
        if vouch_first {
            t.replay_lvb(a, 1, Pr, lvb(9), true);
            t.replay_lvb(a, 2, Nl, lvb(1), true);
        } else {
            t.replay_lvb(a, 2, Nl, lvb(1), true);
            t.replay_lvb(a, 1, Pr, lvb(9), true);
        }
        assert_eq!(
            t.e.resource_lvb(b"r"),
            Some((Some(lvb(9)), false)),
            "vouch first: {vouch_first}"
        );
    }
}

#[test]
fn replays_without_valblk_leave_the_value_block_alone() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    // A block offered without VALBLK is the lock's, not the resource's.
    let rl = ReplayLock::new(1, Ex, b"r", args(1)).lvb(lvb(4), true);
    t.e.replay_granted(a, rl).unwrap();
    t.replay(a, 2, Nl, "r", none()).unwrap();
    assert_eq!(t.e.resource_lvb(b"r"), Some((None, false)));
    // A replayed NL lock does not undo a block written since.
    let lb = t.granted(b, Nl, "w", none());
    let p = LockParams::convert(lb, Pw, args(1)).flags(vb());
    t.e.lock(b, &p).unwrap();
    t.drain(b);
    let p = LockParams::convert(lb, Nl, args(1)).flags(vb()).lvb(lvb(6));
    t.e.lock(b, &p).unwrap();
    t.drain(b);
    assert_eq!(t.e.resource_lvb(b"w"), Some((Some(lvb(6)), false)));
    let rl = ReplayLock::new(10, Nl, b"w", args(1))
        .flags(vb())
        .lvb(lvb(2), true);
    t.e.replay_granted(a, rl).unwrap();
    assert_eq!(t.e.resource_lvb(b"w"), Some((Some(lvb(6)), false)));
}

#[test]
fn a_replayed_ex_holder_writes_its_block_on_the_way_down() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    t.replay_lvb(a, 1, Ex, lvb(1), true);
    let lb = t.lock(b, Pr, "r", vb());
    assert_eq!(t.drain(a), vec![Ev::B(1, Pr)]);
    let p = LockParams::convert(1, Nl, args(1)).flags(vb()).lvb(lvb(2));
    t.e.lock(a, &p).unwrap();
    // A conversion down from EX reads nothing back.
    let rec = t.e.read(a).expect("a completion");
    assert_eq!((rec.lkid, rec.status, rec.lvb), (1, 0, None));
    let rec = t.e.read(b).expect("a completion");
    assert_eq!((rec.lkid, rec.sb_flags, rec.lvb), (lb, 0, Some(lvb(2))));
}

#[test]
fn a_replayed_nl_holder_reads_the_block_when_it_converts_up() {
    let mut t = T::new();
    let a = t.owner();
    t.replay_lvb(a, 1, Pr, lvb(5), true);
    t.replay_lvb(a, 2, Nl, lvb(0), true);
    t.unlock(a, 1, none()).unwrap();
    t.drain(a);
    t.conv(a, 2, Pr, vb());
    let rec = t.e.read(a).expect("a completion");
    assert_eq!((rec.lkid, rec.sb_flags, rec.lvb), (2, 0, Some(lvb(5))));
}

#[test]
fn closing_the_owner_of_replayed_locks_unlocks_or_orphans_them() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    t.replay(a, 1, Ex, "p", LockFlags::PERSISTENT).unwrap();
    t.replay(a, 2, Ex, "q", none()).unwrap();
    t.e.close_owner(a).unwrap();
    assert_eq!(t.e.lock_info(1).map(|l| l.owner), Some(None), "an orphan");
    assert!(t.e.lock_info(2).is_none(), "unlocked");
    // The orphan keeps protecting its resource, and can be adopted.
    let lb = t.lock(b, Pr, "p", none());
    assert_eq!(t.drain(b), vec![]);
    let p = LockParams::new(Ex, b"p", args(2)).flags(LockFlags::ORPHAN);
    assert_eq!(t.e.lock(b, &p), Ok(1));
    t.unlock(b, 1, none()).unwrap();
    assert_eq!(t.drain(b), vec![Ev::C(1, UNLOCKED, 0), Ev::C(lb, 0, 0)]);
}
