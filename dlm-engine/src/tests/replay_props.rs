//! Replay as a whole: a lockspace rebuilt by replaying its granted locks,
//! in any order, into a new engine grants, queues and refuses exactly as
//! the original does from then on.
//!
//! Random operations build a lockspace; its requests and conversions in
//! progress are cancelled, so that only granted locks remain; those are
//! replayed into a fresh engine in a random order. Both engines must then
//! list the same locks, and answer the same random operations with the
//! same results and the same completions. Blocking ASTs are left out of
//! the comparison: the rebuilt locks have sent none yet (the kernel's new
//! master copies start with `lkb_highbast` 0 too), so they may be sent
//! where the original would not repeat them. Value blocks are left out as
//! well (no `VALBLK`): the unit tests in `recover.rs` cover them.

use super::*;
use proptest::prelude::*;

const NAMES: [&[u8]; 3] = [b"a", b"b", b"c"];
const OWNERS: usize = 3;

/// Flags a random operation may carry; the ALT modes only after the
/// replay (before it they can leave a lock granted in no mode, which no
/// replay can express).
const FLAGS: [LockFlags; 11] = [
    LockFlags::NOQUEUE,
    LockFlags::QUECVT,
    LockFlags::CONVDEADLK,
    LockFlags::NODLCKWT,
    LockFlags::HEADQUE,
    LockFlags::NOORDER,
    LockFlags::EXPEDITE,
    LockFlags::NOQUEUEBAST,
    LockFlags::PERSISTENT,
    LockFlags::ALTPR,
    LockFlags::ALTCW,
];
const FLAGS_BEFORE: usize = 9;

#[derive(Debug, Clone)]
enum Op {
    Lock(usize, u8, usize, Vec<usize>),
    Convert(usize, usize, u8, Vec<usize>),
    Unlock(usize, usize, bool),
    Cancel(usize, usize),
}

fn op(flags: usize) -> impl Strategy<Value = Op> {
    let o = 0..OWNERS;
    let f = prop::collection::vec(0..flags, 0..3);
    prop_oneof![
        3 => (o.clone(), 0u8..6, 0..NAMES.len(), f.clone()).prop_map(|(o, m, n, f)| Op::Lock(o, m, n, f)),
        3 => (o.clone(), any::<usize>(), 0u8..6, f).prop_map(|(o, l, m, f)| Op::Convert(o, l, m, f)),
        2 => (o.clone(), any::<usize>(), any::<bool>()).prop_map(|(o, l, force)| Op::Unlock(o, l, force)),
        1 => (o, any::<usize>()).prop_map(|(o, l)| Op::Cancel(o, l)),
    ]
}

fn mode(raw: u8) -> LockMode {
    LockMode::try_from(raw).expect("a mode from 0..6")
}

fn flags(picks: &[usize]) -> LockFlags {
    picks
        .iter()
        .fold(LockFlags::empty(), |acc, &i| acc | FLAGS[i])
}

/// Apply `op`; `ids` is every lock id handed out so far.
fn apply(e: &mut Engine, owners: &[OwnerId], ids: &mut Vec<u32>, op: &Op) -> Result<u32, Errno> {
    let pick = |ids: &Vec<u32>, l: usize| ids.get(l % ids.len().max(1)).copied().unwrap_or(1);
    let rv = match op {
        Op::Lock(o, m, n, f) => {
            let p = LockParams::new(mode(*m), NAMES[*n], args(1)).flags(flags(f));
            let rv = e.lock(owners[*o], &p);
            if let Ok(id) = rv {
                ids.push(id);
            }
            rv
        }
        Op::Convert(o, l, m, f) => {
            let p = LockParams::convert(pick(ids, *l), mode(*m), args(1)).flags(flags(f));
            e.lock(owners[*o], &p)
        }
        Op::Unlock(o, l, force) => {
            let f = if *force {
                LockFlags::FORCEUNLOCK
            } else {
                LockFlags::empty()
            };
            let p = UnlockParams::new(pick(ids, *l), f, args(1));
            e.unlock(owners[*o], &p).map(|()| 0)
        }
        Op::Cancel(o, l) => {
            let p = UnlockParams::new(pick(ids, *l), LockFlags::CANCEL, args(1));
            e.unlock(owners[*o], &p).map(|()| 0)
        }
    };
    rv
}

/// Read every owner's callbacks; the completions, by owner.
fn completions(e: &mut Engine, owners: &[OwnerId]) -> Vec<Vec<AstRecord>> {
    owners
        .iter()
        .map(|&o| {
            std::iter::from_fn(|| e.read(o))
                .filter(|r| !r.is_bast())
                .collect()
        })
        .collect()
}

/// Cancel (or, if that is refused, force-unlock) every request and
/// conversion in progress, until only granted locks remain.
fn settle(e: &mut Engine, owners: &[OwnerId]) -> Result<(), TestCaseError> {
    for _ in 0..20 {
        completions(e, owners);
        let busy: Vec<LockInfo> = e
            .locks()
            .into_iter()
            .filter(|l| l.queue != Some(Queue::Granted))
            .collect();
        if busy.is_empty() {
            return Ok(());
        }
        for l in busy {
            let o = l.owner.expect("no owner closes here");
            let cancel = UnlockParams::new(l.lkid, LockFlags::CANCEL, args(1));
            if e.unlock(o, &cancel).is_err() {
                let force = UnlockParams::new(l.lkid, LockFlags::FORCEUNLOCK, args(1));
                e.unlock(o, &force).expect("a force-unlock of a busy lock");
            }
        }
    }
    Err(TestCaseError::fail(
        "requests still in progress after settling",
    ))
}

/// Fisher-Yates with a small LCG, so that the order is part of the case.
fn shuffle<T>(v: &mut [T], mut seed: u64) {
    for i in (1..v.len()).rev() {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let j = (seed >> 33) as usize % (i + 1);
        v.swap(i, j);
    }
}

proptest! {
    #[test]
    fn a_replayed_lockspace_grants_as_the_original_does(
        before in prop::collection::vec(op(FLAGS_BEFORE), 0..40),
        after in prop::collection::vec(op(FLAGS.len()), 0..40),
        seed in any::<u64>(),
    ) {
        let mut e1 = Engine::new();
        let owners: Vec<OwnerId> = (0..OWNERS).map(|_| e1.open_owner(42)).collect();
        let mut ids = Vec::new();
        for op in &before {
            let _ = apply(&mut e1, &owners, &mut ids, op);
            completions(&mut e1, &owners);
        }
        settle(&mut e1, &owners)?;

        let mut e2 = Engine::new();
        for &o in &owners {
            prop_assert_eq!(e2.open_owner(42), o);
        }
        let mut held = e1.locks();
        shuffle(&mut held, seed);
        for l in &held {
            let m = l.granted.expect("a granted lock has a mode");
            let rl = ReplayLock::new(l.lkid, m, &l.resource, args(1))
                .flags(l.flags)
                .pid(l.pid);
            prop_assert_eq!(e2.replay_granted(l.owner.expect("an owner"), rl), Ok(()));
        }
        prop_assert_eq!(e2.locks(), e1.locks());
        prop_assert_eq!(e2.resource_count(), e1.resource_count());
        e2.recover_grant();
        completions(&mut e2, &owners);

        let mut ids2 = ids.clone();
        for op in &after {
            let r1 = apply(&mut e1, &owners, &mut ids, op);
            let r2 = apply(&mut e2, &owners, &mut ids2, op);
            prop_assert_eq!(r1, r2, "{:?}", op);
            prop_assert_eq!(completions(&mut e1, &owners), completions(&mut e2, &owners), "{:?}", op);
        }
        prop_assert_eq!(e2.locks(), e1.locks());
    }
}
