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

#[test]
fn compacting_after_a_burst_keeps_ids_lowest_free_first_and_the_locks_as_they_were() {
    let mut t = T::new();
    let a = t.owner();
    let b = t.owner();
    let keep = t.granted(a, Ex, "keep", vb());
    let burst: Vec<u32> = (0..200)
        .map(|i| t.granted(b, Pr, &format!("b{i}"), none()))
        .collect();
    // Some of the burst's locks stay, in the middle; the rest go.
    for &id in &burst {
        if id != 50 && id != 120 {
            t.unlock(b, id, none()).unwrap();
        }
    }
    t.drain(b);
    let before = t.e.locks();
    t.e.compact();
    assert_eq!(t.e.locks(), before, "every lock as it was");
    // The lowest free ids first, as without the compaction: 2..=49, then
    // 51..=119, then 121 and up.
    let next: Vec<u32> = (0..120)
        .map(|i| t.granted(a, Nl, &format!("n{i}"), none()))
        .collect();
    let want: Vec<u32> = (2..50).chain(51..120).chain(121..124).collect();
    assert_eq!(next, want);
    assert_eq!(
        t.lock(b, Ex, "keep", none()),
        124,
        "waits behind the kept EX"
    );
    t.unlock(a, keep, none()).unwrap();
    let evs = t.drain(b);
    assert!(!evs.is_empty(), "granted once the kept lock went");
}
