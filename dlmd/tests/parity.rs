//! The daemon gives the same answers and callback records as the
//! in-process engine, for the same requests.
#![forbid(unsafe_code)]

mod common;

use common::*;
use dlm_engine::{Engine, LockParams, OwnerId, UnlockParams};
use dlm_proto::records::{Command as Cmd, LockRequest, LockResult};
use dlm_proto::{Errno, LockFlags as F, LockMode as M};

/// One request by owner `who` (0 or 1).
struct Step {
    who: usize,
    cmd: Cmd,
    req: LockRequest,
}

fn step(who: usize, cmd: Cmd, req: LockRequest) -> Step {
    Step { who, cmd, req }
}

/// What one step produced: the write's return value and the callbacks
/// each owner read afterwards.
type Trace = Vec<(i64, [Vec<LockResult>; 2])>;

/// The device's dispatch, applied to the engine directly.
fn apply(e: &mut Engine, owner: OwnerId, pid: u32, s: &Step) -> i64 {
    let r = &s.req;
    let res = match s.cmd {
        Cmd::Lock => {
            let name = if r.flags & F::CONVERT.bits() != 0 {
                &[][..]
            } else {
                r.name()
            };
            let p = LockParams {
                mode: r.mode,
                flags: r.flags,
                lkid: r.lkid,
                name,
                lvb: r.lvb,
                args: r.user_args(),
                pid,
            };
            e.lock(owner, &p).map(i64::from)
        }
        Cmd::Unlock => {
            let p = UnlockParams {
                lkid: r.lkid,
                flags: r.flags,
                lvb: r.lvb,
                args: r.user_args(),
            };
            e.unlock(owner, &p).map(|()| 0)
        }
        Cmd::Deadlock => e.deadlock_cancel(owner, r.lkid, r.flags).map(|()| 0),
        other => panic!("not a lock command: {other:?}"),
    };
    res.unwrap_or_else(neg)
}

fn run_engine(steps: &[Step]) -> Trace {
    let mut e = Engine::new();
    let owners = [e.open_owner(1), e.open_owner(2)];
    steps
        .iter()
        .map(|s| {
            let v = apply(&mut e, owners[s.who], 1, s);
            let mut asts: [Vec<LockResult>; 2] = Default::default();
            for (i, o) in owners.iter().enumerate() {
                while let Some(r) = e.read(*o) {
                    asts[i].push(LockResult::from(&r));
                }
            }
            (v, asts)
        })
        .collect()
}

fn run_daemon(d: &Daemon, ls: &str, steps: &[Step]) -> Trace {
    let (_ctl, a, _) = d.lockspace(ls);
    let b = d.open(ls);
    let mut clients = [a, b];
    steps
        .iter()
        .map(|s| {
            let v = clients[s.who].cmd(s.cmd, &s.req);
            let asts = [clients[0].take_asts(), clients[1].take_asts()];
            (v, asts)
        })
        .collect()
}

fn compare(name: &str, steps: &[Step]) -> Trace {
    let d = Daemon::start();
    let want = run_engine(steps);
    let got = run_daemon(&d, name, steps);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "{name}: step {i} differs (daemon, engine)");
    }
    assert_eq!(got.len(), steps.len());
    got
}

fn with_lvb(mut r: LockRequest, lvb: [u8; 32]) -> LockRequest {
    r.lvb = lvb;
    r
}

#[test]
fn contention_conversion_and_unlock() {
    let none = F::empty();
    let steps = [
        step(0, Cmd::Lock, req(M::Ex, b"r", none)),
        step(1, Cmd::Lock, req(M::Pr, b"r", none)),
        step(1, Cmd::Lock, req(M::Ex, b"r", F::NOQUEUE)),
        step(0, Cmd::Lock, conv(1, M::Pr, none)),
        step(1, Cmd::Lock, conv(2, M::Ex, none)),
        step(0, Cmd::Unlock, unl(1, none)),
        step(1, Cmd::Unlock, unl(2, F::CANCEL)),
        step(1, Cmd::Unlock, unl(2, none)),
        step(0, Cmd::Unlock, unl(1, none)),
    ];
    let t = compare("contend", &steps);
    // Spot checks, so that an engine and a daemon wrong the same way
    // still fail.
    assert_eq!(t[0].0, 1);
    assert_eq!(t[0].1[0][0].status, 0, "A granted EX");
    assert_eq!(t[1].0, 2);
    assert_eq!(t[1].1[0][0].bast_mode, M::Pr as u8, "A blocks PR");
    assert_eq!(t[2].1[1][0].status, neg(Errno::EAGAIN) as i32);
    assert!(t[3].1[1].iter().any(|r| r.lkid == 2 && r.status == 0));
    assert_eq!(t[5].1[0][0].status, EUNLOCK);
    assert!(t[6].1[1].is_empty(), "cancel with nothing in progress");
    assert_eq!(t[8].0, neg(Errno::ENOENT));
}

#[test]
fn value_blocks_cancel_and_deadlock_cancel() {
    let none = F::empty();
    let lvb = [7u8; 32];
    let steps = [
        step(0, Cmd::Lock, req(M::Ex, b"v", F::VALBLK)),
        step(0, Cmd::Lock, with_lvb(conv(1, M::Nl, F::VALBLK), lvb)),
        step(1, Cmd::Lock, req(M::Pr, b"v", F::VALBLK)),
        step(0, Cmd::Lock, conv(1, M::Ex, F::VALBLK)),
        step(0, Cmd::Unlock, unl(1, F::CANCEL)),
        step(0, Cmd::Lock, conv(1, M::Ex, F::VALBLK)),
        step(0, Cmd::Deadlock, unl(1, none)),
        step(1, Cmd::Unlock, unl(2, F::VALBLK)),
        step(0, Cmd::Unlock, unl(1, none)),
    ];
    let t = compare("lvb", &steps);
    assert_eq!(t[2].1[1][0].lvb, Some(lvb), "B reads A's value block");
    assert_eq!(t[4].1[0][0].status, ECANCEL);
    assert_eq!(t[6].1[0][0].status, neg(Errno::EDEADLK) as i32);
}

#[test]
fn conversion_deadlock_and_flags() {
    let none = F::empty();
    let steps = [
        step(0, Cmd::Lock, req(M::Pr, b"d", none)),
        step(1, Cmd::Lock, req(M::Pr, b"d", none)),
        step(0, Cmd::Lock, conv(1, M::Ex, none)),
        step(1, Cmd::Lock, conv(2, M::Ex, none)),
        step(1, Cmd::Lock, conv(2, M::Ex, F::CONVDEADLK)),
        step(0, Cmd::Lock, req(M::Cw, b"e", none)),
        step(1, Cmd::Lock, req(M::Pr, b"e", F::ALTCW)),
        step(1, Cmd::Lock, req(M::Ex, b"e", F::QUECVT)),
        step(0, Cmd::Unlock, unl(1, F::FORCEUNLOCK)),
        step(1, Cmd::Unlock, unl(2, none)),
    ];
    let t = compare("deadlk", &steps);
    let all: Vec<&LockResult> = t.iter().flat_map(|s| s.1.iter().flatten()).collect();
    assert!(
        all.iter().any(|r| r.status == neg(Errno::EDEADLK) as i32),
        "a conversion deadlock was reported"
    );
    assert_eq!(t[7].0, neg(Errno::EINVAL), "QUECVT without CONVERT");
}
