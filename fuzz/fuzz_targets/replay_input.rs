//! Replay input, as a malicious client would send it: `Replay` frames
//! decoded with `dlm_proto::replay::Replay::decode` (any bytes) and
//! handed to the engine's `replay_granted` for one of several owners,
//! mixed with ordinary requests, unlocks, owner closes, `recover_grant`
//! and callback reads, on a lockspace whose other owners hold locks.
//!
//! What a replay may claim (see dlmd's `server::replay`): any free lock
//! id, in any mode that conflicts with no granted lock. The oracle, after
//! every step: no two granted (or converting, in their granted mode)
//! locks on one resource are incompatible; a replay the engine accepts
//! is a granted lock with that id, mode and owner; a refused one changes
//! nothing; and the engine never panics.
//!
//! The target keeps the ids of the locks it made (every request's and
//! every accepted replay's) and reads back only those, each step: a
//! snapshot of the whole lock table (`Engine::locks`) walks every slot
//! up to the highest id, and a replay may take an id near
//! `REPLAY_LKID_MAX`, so that walk made the executions a second fall a
//! hundredfold as the corpus found such ids. `lock_count` tells whether
//! a lock appeared that the target does not know of.
#![no_main]

use std::collections::BTreeSet;

use dlm_engine::{Engine, LockInfo, LockParams, OwnerId, ReplayLock, UnlockParams, UserArgs};
use dlm_proto::replay::{Replay, ReplayLvb};
use dlm_proto::{LockFlags, LockMode};
use libfuzzer_sys::fuzz_target;

const ARGS: UserArgs = UserArgs {
    castparam: 1,
    castaddr: 1,
    bastparam: 1,
    bastaddr: 2,
    lksb: 1,
    xid: 0,
};

/// The locks the target made, as the engine has them now; ids that no
/// longer name a lock are forgotten.
fn snapshot(e: &Engine, ids: &mut BTreeSet<u32>) -> Vec<LockInfo> {
    let mut locks = Vec::with_capacity(ids.len());
    ids.retain(|&id| match e.lock_info(id) {
        Some(l) => {
            locks.push(l);
            true
        }
        None => false,
    });
    assert_eq!(
        locks.len(),
        e.lock_count(),
        "every lock is one the target made"
    );
    locks
}

/// No two granted modes on one resource conflict.
fn check(locks: &[LockInfo]) {
    let mut held: Vec<(&[u8], LockMode, u32)> = locks
        .iter()
        .filter_map(|l| Some((l.resource.as_slice(), l.granted?, l.lkid)))
        .collect();
    held.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for run in held.chunk_by(|a, b| a.0 == b.0) {
        for (i, &(res, x, a)) in run.iter().enumerate() {
            for &(_, y, b) in &run[i + 1..] {
                assert!(
                    x.compatible(y),
                    "locks {a:#x} ({x:?}) and {b:#x} ({y:?}) on {res:?} are both granted"
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut e = Engine::new();
    let owners: Vec<OwnerId> = (1..=3).map(|p| e.open_owner(p)).collect();
    let mut open = [true; 3];
    let mut ids = BTreeSet::new();
    let mut locks = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let op = data[i];
        i += 1;
        let who = usize::from(op >> 6) % 3;
        match op & 7 {
            // A replay frame: a length byte, then that many bytes.
            0 | 1 => {
                let n = data.get(i).map_or(0, |&n| usize::from(n));
                i += 1;
                let body = &data[i.min(data.len())..(i + n).min(data.len())];
                i += n;
                let Ok(r) = Replay::decode(body) else {
                    continue;
                };
                if !open[who] {
                    continue;
                }
                let mut l = ReplayLock::new(r.lkid, r.mode, r.name.as_bytes(), ARGS).flags(r.flags);
                match r.lvb {
                    ReplayLvb::None => {}
                    ReplayLvb::Valid(v) => l = l.lvb(v, true),
                    ReplayLvb::NotValid(v) => l = l.lvb(v, false),
                }
                let known = ids.contains(&r.lkid);
                match e.replay_granted(owners[who], l) {
                    Ok(()) => {
                        assert!(
                            !known,
                            "a replay took lock id {:#x}, which is in use",
                            r.lkid
                        );
                        let got = e.lock_info(r.lkid).expect("an accepted replay is a lock");
                        assert_eq!(got.granted, Some(r.mode));
                        assert_eq!(got.owner, Some(owners[who]));
                        ids.insert(r.lkid);
                    }
                    Err(_) => {
                        let before = std::mem::take(&mut locks);
                        locks = snapshot(&e, &mut ids);
                        assert_eq!(locks, before, "a refused replay changes nothing");
                        continue;
                    }
                }
            }
            // An ordinary request on one of four names.
            2 | 3 => {
                let m = LockMode::ALL[usize::from(op >> 3) % 6];
                let name = [b'a' + (op >> 3) % 4];
                let flags = if op & 1 == 0 {
                    LockFlags::NOQUEUE
                } else {
                    LockFlags::empty()
                };
                if open[who] {
                    if let Ok(id) =
                        e.lock(owners[who], &LockParams::new(m, &name, ARGS).flags(flags))
                    {
                        ids.insert(id);
                    }
                }
            }
            // Unlock (or cancel) some lock of the owner's.
            4 => {
                let mine: Vec<u32> = locks
                    .iter()
                    .filter(|l| l.owner == Some(owners[who]))
                    .map(|l| l.lkid)
                    .collect();
                if let Some(&id) = mine.get(usize::from(op >> 3) % mine.len().max(1)) {
                    let f = if op & 8 != 0 {
                        LockFlags::CANCEL
                    } else {
                        LockFlags::empty()
                    };
                    let _ = e.unlock(owners[who], &UnlockParams::new(id, f, ARGS));
                }
            }
            5 => {
                e.recover_grant();
            }
            6 => while e.read(owners[who]).is_some() {},
            _ => {
                if open[who] {
                    let _ = e.close_owner(owners[who]);
                    open[who] = false;
                }
            }
        }
        locks = snapshot(&e, &mut ids);
        check(&locks);
    }
});
