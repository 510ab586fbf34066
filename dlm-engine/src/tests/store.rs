//! Lock ids and the listing of locks by id.

use super::*;

#[test]
fn lock_ids_are_the_lowest_free_id_from_one() {
    let mut t = T::new();
    let a = t.owner();
    let l1 = t.granted(a, Nl, "a", none());
    let l2 = t.granted(a, Nl, "b", none());
    let l3 = t.granted(a, Nl, "c", none());
    assert_eq!((l1, l2, l3), (1, 2, 3));
    t.unlock(a, l2, none()).unwrap();
    // Not free until the final callback is read.
    assert_eq!(t.lock(a, Nl, "d", none()), 4);
    t.drain(a);
    assert_eq!(t.lock(a, Nl, "e", none()), 2);
}

#[test]
fn locks_can_be_listed_from_a_lock_id_on() {
    let mut t = T::new();
    let a = t.owner();
    let ids: Vec<u32> = (0..5)
        .map(|i| t.granted(a, Pr, &format!("r{i}"), none()))
        .collect();
    t.unlock(a, ids[2], none()).unwrap();
    t.drain(a);
    let from = |first: u32| -> Vec<u32> { t.e.locks_from(first).map(|l| l.lkid).collect() };
    assert_eq!(from(0), vec![ids[0], ids[1], ids[3], ids[4]]);
    assert_eq!(from(ids[1] + 1), vec![ids[3], ids[4]], "past a freed id");
    assert_eq!(from(ids[4]), vec![ids[4]]);
    assert!(from(ids[4] + 1).is_empty());
    assert!(from(u32::MAX).is_empty());
    assert_eq!(t.e.count_locks_from(0), 4);
    assert_eq!(t.e.count_locks_from(ids[2]), 2);
    assert_eq!(t.e.count_locks_from(u32::MAX), 0);
    let all: Vec<LockInfo> = t.e.locks_from(0).collect();
    assert_eq!(all, t.e.locks(), "the same snapshots as locks()");
}
