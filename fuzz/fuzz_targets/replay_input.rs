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
#![no_main]

use dlm_engine::{Engine, LockParams, OwnerId, ReplayLock, UnlockParams, UserArgs};
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

fn check(e: &Engine) {
    let locks = e.locks();
    for (i, a) in locks.iter().enumerate() {
        for b in &locks[i + 1..] {
            if a.resource != b.resource {
                continue;
            }
            if let (Some(x), Some(y)) = (a.granted, b.granted) {
                assert!(
                    x.compatible(y),
                    "locks {:#x} ({x:?}) and {:#x} ({y:?}) on {:?} are both granted",
                    a.lkid,
                    b.lkid,
                    a.resource
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut e = Engine::new();
    let owners: Vec<OwnerId> = (1..=3).map(|p| e.open_owner(p)).collect();
    let mut open = [true; 3];
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
                let before = e.locks();
                let mut l = ReplayLock::new(r.lkid, r.mode, r.name.as_bytes(), ARGS).flags(r.flags);
                match r.lvb {
                    ReplayLvb::None => {}
                    ReplayLvb::Valid(v) => l = l.lvb(v, true),
                    ReplayLvb::NotValid(v) => l = l.lvb(v, false),
                }
                match e.replay_granted(owners[who], l) {
                    Ok(()) => {
                        let got = e.locks().into_iter().find(|x| x.lkid == r.lkid);
                        let got = got.expect("an accepted replay is a lock");
                        assert_eq!(got.granted, Some(r.mode));
                        assert_eq!(got.owner, Some(owners[who]));
                    }
                    Err(_) => assert_eq!(e.locks(), before, "a refused replay changes nothing"),
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
                    let _ = e.lock(owners[who], &LockParams::new(m, &name, ARGS).flags(flags));
                }
            }
            // Unlock (or cancel) some lock of the owner's.
            4 => {
                let mine: Vec<u32> = e
                    .locks()
                    .into_iter()
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
            6 => {
                while e.read(owners[who]).is_some() {}
            }
            _ => {
                if open[who] {
                    let _ = e.close_owner(owners[who]);
                    open[who] = false;
                }
            }
        }
        check(&e);
    }
});
