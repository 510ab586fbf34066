//! The selectors an [`Op`](super::Op) carries, and how a step turns them
//! into concrete values: resource names, lock ids, pids, user arguments
//! and value blocks. Both checkers resolve them the same way, through
//! these functions, so the engine and the model see identical inputs.

use dlm_proto::records::{UserArgs, LVB_LEN};

/// Resource names, by the index an [`Op`](super::Op) carries.
///
/// Index 2 has two spellings, and a case uses one of them throughout (see
/// [`case_strategy`](super::case_strategy)): a short name like the others, which the engine
/// keeps inline (up to 22 bytes), or a long one, which it keeps out of
/// line. [`TOO_LONG`] is over the 64-byte limit of a request.
pub const NAMES: [&[u8]; 6] = [
    b"alpha",
    b"beta",
    b"gamma",
    b"d",
    &[b'x'; 65],
    b"gamma-resource-with-a-name-longer-than-twenty-two",
];

/// The index of the name a request must refuse (EINVAL).
pub const TOO_LONG: u8 = 4;

/// The index of the long spelling of name 2.
pub const LONG_GAMMA: u8 = 5;

/// Which lock an operation names, resolved when its step runs: a value
/// that is not a multiple of 8 picks one of the live locks; a multiple of
/// 8 names id `value / 8 % 20` outright, live or not. So `LockSel(8 * n)`
/// is lock id `n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockSel(pub u16);

impl LockSel {
    /// The lock id this selects, given the ids of the live locks in
    /// ascending order.
    pub fn resolve(self, mut live: impl ExactSizeIterator<Item = u32>) -> u32 {
        let v = u32::from(self.0);
        let n = live.len();
        if n != 0 && v % 8 != 0 {
            live.nth((v / 8) as usize % n).expect("in range")
        } else {
            (v / 8) % 20
        }
    }
}

/// A pid no owner is opened with.
const STRANGER_PID: u32 = 77;

/// The pid slot `slot` is first opened with.
pub fn first_pid(slot: u8) -> u32 {
    100 + u32::from(slot)
}

/// The pid a closed slot reopens with ([`Op::Open`](super::Op::Open)).
pub fn reopen_pid(old: u32, new_pid: bool) -> u32 {
    if new_pid {
        old + 1000
    } else {
        old
    }
}

/// The pid a request or conversion gives the engine, from its selector
/// (`0..8`): mostly the caller's own (`own`), sometimes 0, a stranger's,
/// or one of `pids`, the pids slots have been opened with so far.
pub fn lock_pid(sel: u8, own: u32, pids: &[u32]) -> u32 {
    match sel {
        0..=4 => own,
        5 => 0,
        6 => STRANGER_PID,
        _ => pids[usize::from(sel) % pids.len()],
    }
}

/// The pid a purge names, from its selector (`0..6`): the caller's own
/// (its own locks), 0 (every orphan), a stranger's, or one of `pids`.
pub fn purge_pid(sel: u8, own: u32, pids: &[u32]) -> u32 {
    match sel {
        0 | 1 => own,
        2 => 0,
        3 => STRANGER_PID,
        _ => pids[usize::from(sel) * 7 % pids.len()],
    }
}

/// The user arguments of selector `v` (`0..16`). Most are valid and
/// distinct; 14 has no completion address and 15 no status block (both
/// EINVAL), 3 and 9 no blocking AST address, and 7 a zero `castparam`
/// (which an unlock does not take).
pub fn user_args(v: u8) -> UserArgs {
    let v = u64::from(v);
    match v {
        // A status block of its own, so that taking it is visible.
        14 => UserArgs {
            castaddr: 0,
            lksb: 0x5000,
            ..user_args(0)
        },
        15 => UserArgs {
            lksb: 0,
            ..user_args(0)
        },
        3 | 9 => UserArgs {
            bastaddr: 0,
            ..user_args(0)
        },
        7 => UserArgs {
            castparam: 0,
            ..user_args(1)
        },
        _ => UserArgs {
            castparam: 0x100 + v,
            castaddr: 0xC000 + v,
            bastparam: 0x200 + v,
            bastaddr: 0xB000 + v,
            lksb: 0x1000 + v,
            xid: v,
        },
    }
}

/// A value block that differs for every seed (and from all zeroes).
pub fn lvb_bytes(seed: u8) -> [u8; LVB_LEN] {
    let mut b = [0u8; LVB_LEN];
    for (i, x) in b.iter_mut().enumerate() {
        *x = seed.wrapping_add(i as u8);
    }
    b
}
