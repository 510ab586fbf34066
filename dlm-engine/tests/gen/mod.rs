//! The input side shared by the two random tests of the lock engine: the
//! property test (`engine_props.rs`) and the model test
//! (`engine_model.rs`).
//!
//! Both drive the engine with random sequences of operations over a few
//! owner slots and resources; they differ only in how they judge what
//! comes back, and that part stays in each test, independent of the
//! other. This module makes the sequences ([`case_strategy`]) and turns
//! the selectors an [`Op`] carries (a lock, a pid, a set of user
//! arguments, a value block) into concrete values when a step runs. It
//! states none of the engine's rules.
//!
//! It sits in a subdirectory of `tests/`, so Cargo does not build it as a
//! test of its own; each test includes it with `mod gen;`.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;

use dlm_engine::{UserArgs, LVB_LEN};
use dlm_proto::LockFlags;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

// ---------------------------------------------------------------------
// Flag bits as the raw numbers the engine takes (the ones only the
// generator needs are private)
// ---------------------------------------------------------------------

pub const NOQUEUE: u32 = LockFlags::NOQUEUE.bits();
pub const CANCEL: u32 = LockFlags::CANCEL.bits();
pub const CONVERT: u32 = LockFlags::CONVERT.bits();
pub const VALBLK: u32 = LockFlags::VALBLK.bits();
pub const QUECVT: u32 = LockFlags::QUECVT.bits();
pub const IVVALBLK: u32 = LockFlags::IVVALBLK.bits();
pub const CONVDEADLK: u32 = LockFlags::CONVDEADLK.bits();
pub const PERSISTENT: u32 = LockFlags::PERSISTENT.bits();
pub const NODLCKWT: u32 = LockFlags::NODLCKWT.bits();
const NODLCKBLK: u32 = LockFlags::NODLCKBLK.bits();
pub const EXPEDITE: u32 = LockFlags::EXPEDITE.bits();
pub const NOQUEUEBAST: u32 = LockFlags::NOQUEUEBAST.bits();
pub const HEADQUE: u32 = LockFlags::HEADQUE.bits();
pub const NOORDER: u32 = LockFlags::NOORDER.bits();
pub const ORPHAN: u32 = LockFlags::ORPHAN.bits();
pub const ALTPR: u32 = LockFlags::ALTPR.bits();
pub const ALTCW: u32 = LockFlags::ALTCW.bits();
pub const FORCEUNLOCK: u32 = LockFlags::FORCEUNLOCK.bits();
const TIMEOUT: u32 = LockFlags::TIMEOUT.bits();
/// A bit the kernel does not know; kept and ignored.
const UNKNOWN_BIT: u32 = 0x8000_0000;

// ---------------------------------------------------------------------
// Selectors and how a step resolves them
// ---------------------------------------------------------------------

/// Resource names, by the index an [`Op`] carries.
///
/// Index 2 has two spellings, and a case uses one of them throughout (see
/// [`case_strategy`]): a short name like the others, which the engine
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
const TOO_LONG: u8 = 4;

/// The index of the long spelling of name 2.
const LONG_GAMMA: u8 = 5;

/// Which lock an operation names, resolved when its step runs: a value
/// that is not a multiple of 8 picks one of the live locks; a multiple of
/// 8 names id `value / 8 % 20` outright, live or not. So `LockSel(8 * n)`
/// is lock id `n`.
#[derive(Clone, Copy, Debug)]
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

/// The pid a closed slot reopens with ([`Op::Open`]).
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

// ---------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------

/// One step of a case. `slot` is an owner slot (`0..Case::slots`), `name`
/// an index into [`NAMES`], `mode` a raw mode (valid or not), `args` a
/// [`user_args`] selector and `lvb` an [`lvb_bytes`] seed.
#[derive(Clone, Debug)]
pub enum Op {
    /// Open the slot again if it is closed, with a new pid or its old one
    /// ([`reopen_pid`]).
    Open {
        slot: u8,
        new_pid: bool,
    },
    Close {
        slot: u8,
    },
    /// A new lock; `pid` is a [`lock_pid`] selector.
    Request {
        slot: u8,
        mode: u8,
        name: u8,
        flags: u32,
        args: u8,
        pid: u8,
    },
    /// A conversion (`flags` has CONVERT); `pid` is a [`lock_pid`]
    /// selector.
    Convert {
        slot: u8,
        lock: LockSel,
        mode: u8,
        flags: u32,
        lvb: u8,
        args: u8,
        pid: u8,
    },
    /// A request with ORPHAN.
    Adopt {
        slot: u8,
        name: u8,
        mode: u8,
        /// Ask for the mode of an orphan of that name, if there is one.
        match_orphan: bool,
        flags: u32,
        args: u8,
    },
    Unlock {
        slot: u8,
        lock: LockSel,
        flags: u32,
        lvb: u8,
        args: u8,
    },
    /// An unlock with CANCEL.
    Cancel {
        slot: u8,
        lock: LockSel,
        flags: u32,
        args: u8,
    },
    /// A deadlock cancel.
    Deadlock {
        slot: u8,
        lock: LockSel,
        flags: u32,
    },
    /// `pid` is a [`purge_pid`] selector; nodes other than 0 and 1 are
    /// not ours.
    Purge {
        slot: u8,
        node: u8,
        pid: u8,
    },
    /// Read up to `n` callbacks.
    Read {
        slot: u8,
        n: u8,
    },
    /// Read until there is nothing left.
    Drain {
        slot: u8,
    },
}

/// Flags drawn from 64 random bits: candidate `i` of `table` uses nibble
/// `i` and is present when the nibble is at least `16 - weight`, so a
/// weight is a chance out of 16 and shrinking toward zero drops flags.
fn pick_flags(bits: u64, table: &[(u32, u64)]) -> u32 {
    table
        .iter()
        .enumerate()
        .filter(|(i, (_, w))| (bits >> (4 * i)) & 0xF >= 16 - w)
        .fold(0, |f, (_, (flag, _))| f | flag)
}

/// Candidate flags of a request or adoption, with their weights.
const REQUEST_FLAGS: [(u32, u64); 16] = [
    (NOQUEUE, 3),
    (NOQUEUEBAST, 2),
    (VALBLK, 6),
    (IVVALBLK, 1),
    (PERSISTENT, 4),
    (EXPEDITE, 1),
    (HEADQUE, 2),
    (NOORDER, 2),
    (ALTPR, 2),
    (ALTCW, 2),
    (NODLCKWT, 1),
    (QUECVT, 1),
    (CONVDEADLK, 1),
    (FORCEUNLOCK, 1),
    (TIMEOUT | NODLCKBLK, 1),
    (CANCEL | UNKNOWN_BIT, 1),
];

/// Candidate flags of a conversion, besides CONVERT.
const CONVERT_FLAGS: [(u32, u64); 16] = [
    (QUECVT, 3),
    (CONVDEADLK, 3),
    (NODLCKWT, 3),
    (NOQUEUE, 3),
    (NOQUEUEBAST, 2),
    (VALBLK, 7),
    (IVVALBLK, 2),
    (HEADQUE, 2),
    (NOORDER, 1),
    (ALTPR, 2),
    (ALTCW, 2),
    (PERSISTENT, 4),
    (EXPEDITE, 1),
    (FORCEUNLOCK, 1),
    (CANCEL, 1),
    (UNKNOWN_BIT, 1),
];

/// Candidate flags of an unlock.
const UNLOCK_FLAGS: [(u32, u64); 5] = [
    (VALBLK, 5),
    (IVVALBLK, 2),
    (FORCEUNLOCK, 4),
    (NOQUEUE, 1),
    (CANCEL, 1),
];

/// Candidate flags of a cancel, besides CANCEL.
const CANCEL_FLAGS: [(u32, u64); 4] = [(VALBLK, 2), (IVVALBLK, 2), (FORCEUNLOCK, 1), (NOQUEUE, 1)];

/// Candidate flags of a deadlock cancel.
const DEADLOCK_FLAGS: [(u32, u64); 4] =
    [(CANCEL, 3), (FORCEUNLOCK, 2), (IVVALBLK, 2), (NOQUEUE, 1)];

/// A raw mode: mostly a valid one, sometimes one past the end or 255.
fn mode_strategy() -> impl Strategy<Value = u8> {
    prop_oneof![40 => 0u8..=5, 1 => Just(6u8), 1 => Just(255u8)]
}

/// The weight of each kind of operation, and how many callbacks a
/// [`Op::Read`] may take at most (`1..=read_max`, at least 1).
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    pub open: u32,
    pub close: u32,
    pub request: u32,
    pub convert: u32,
    pub adopt: u32,
    pub unlock: u32,
    pub cancel: u32,
    pub deadlock: u32,
    pub purge: u32,
    pub read: u32,
    pub drain: u32,
    pub read_max: u8,
}

/// One operation over `slots` slots and the first `names` names, name 2
/// spelled as `third` (an index into [`NAMES`]).
fn op_strategy(slots: u8, names: u8, third: u8, mix: Mix) -> BoxedStrategy<Op> {
    let slot = move || 0..slots;
    let in_use = move || (0..names).prop_map(move |n| if n == 2 { third } else { n });
    let name = move || prop_oneof![30 => in_use(), 1 => Just(TOO_LONG)];
    let lock = || any::<u16>().prop_map(LockSel);
    prop_oneof![
        mix.open => (slot(), any::<bool>()).prop_map(|(slot, new_pid)| Op::Open { slot, new_pid }),
        mix.close => slot().prop_map(|slot| Op::Close { slot }),
        mix.request => (slot(), mode_strategy(), name(), any::<u64>(), 0u8..16, 0u8..8).prop_map(
            |(slot, mode, name, bits, args, pid)| Op::Request {
                slot,
                mode,
                name,
                flags: pick_flags(bits, &REQUEST_FLAGS),
                args,
                pid,
            }
        ),
        mix.convert => (slot(), lock(), mode_strategy(), any::<u64>(), any::<u8>(), 0u8..16, 0u8..8)
            .prop_map(|(slot, lock, mode, bits, lvb, args, pid)| Op::Convert {
                slot,
                lock,
                mode,
                flags: CONVERT | pick_flags(bits, &CONVERT_FLAGS),
                lvb,
                args,
                pid,
            }),
        mix.adopt => (slot(), name(), mode_strategy(), any::<bool>(), any::<u64>(), 0u8..16).prop_map(
            |(slot, name, mode, match_orphan, bits, args)| Op::Adopt {
                slot,
                name,
                mode,
                match_orphan,
                flags: ORPHAN | pick_flags(bits, &REQUEST_FLAGS),
                args,
            }
        ),
        mix.unlock => (slot(), lock(), any::<u64>(), any::<u8>(), 0u8..16).prop_map(
            |(slot, lock, bits, lvb, args)| Op::Unlock {
                slot,
                lock,
                flags: pick_flags(bits, &UNLOCK_FLAGS),
                lvb,
                args,
            }
        ),
        mix.cancel => (slot(), lock(), any::<u64>(), 0u8..16).prop_map(|(slot, lock, bits, args)| {
            Op::Cancel {
                slot,
                lock,
                flags: CANCEL | pick_flags(bits, &CANCEL_FLAGS),
                args,
            }
        }),
        mix.deadlock => (slot(), lock(), any::<u64>()).prop_map(|(slot, lock, bits)| Op::Deadlock {
            slot,
            lock,
            flags: pick_flags(bits, &DEADLOCK_FLAGS),
        }),
        mix.purge => (slot(), prop_oneof![8 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)], 0u8..6)
            .prop_map(|(slot, node, pid)| Op::Purge { slot, node, pid }),
        mix.read => (slot(), 1..=mix.read_max.max(1)).prop_map(|(slot, n)| Op::Read { slot, n }),
        mix.drain => slot().prop_map(|slot| Op::Drain { slot }),
    ]
    .boxed()
}

/// A whole case: how many owner slots there are (all open at the start)
/// and the operations.
#[derive(Clone, Debug)]
pub struct Case {
    pub slots: u8,
    pub ops: Vec<Op>,
}

/// Cases of 3 to 5 slots and 20 to 200 operations over the first `names`
/// resource names (at most 4), name 2 spelled short in some cases and long
/// in others.
pub fn case_strategy(mix: Mix, names: RangeInclusive<u8>) -> impl Strategy<Value = Case> {
    (3u8..=5, names, any::<bool>()).prop_flat_map(move |(slots, names, long)| {
        let third = if long { LONG_GAMMA } else { 2 };
        prop::collection::vec(op_strategy(slots, names, third, mix), 20..=200)
            .prop_map(move |ops| Case { slots, ops })
    })
}

// ---------------------------------------------------------------------
// Coverage of the generator itself
// ---------------------------------------------------------------------

/// Panics unless `cases` sampled cases of `mix` over `names` contain
/// every kind of operation the mix gives a weight, every flag candidate of
/// every table, and every mode, name, pid, argument and read-count choice
/// those operations can carry. A guard against a weight or a choice
/// dropped by mistake.
pub fn check_coverage(mix: Mix, names: RangeInclusive<u8>, cases: u32) {
    let mut want = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let add_flags = |set: &mut BTreeSet<String>, kind: &str, table: &[(u32, u64)]| {
        for i in 0..table.len() {
            set.insert(format!("{kind} flag #{i}"));
        }
    };
    let modes: Vec<u8> = (0..=6).chain([255]).collect();
    let mut name_ix: Vec<u8> = (0..*names.end()).collect();
    if *names.end() > 2 {
        name_ix.push(LONG_GAMMA);
    }
    name_ix.push(TOO_LONG);
    let weights = [
        ("open", mix.open),
        ("close", mix.close),
        ("request", mix.request),
        ("convert", mix.convert),
        ("adopt", mix.adopt),
        ("unlock", mix.unlock),
        ("cancel", mix.cancel),
        ("deadlock", mix.deadlock),
        ("purge", mix.purge),
        ("read", mix.read),
        ("drain", mix.drain),
    ];
    for (kind, w) in weights {
        if w == 0 {
            continue;
        }
        want.insert(kind.to_string());
        let table: &[(u32, u64)] = match kind {
            "request" | "adopt" => &REQUEST_FLAGS,
            "convert" => &CONVERT_FLAGS,
            "unlock" => &UNLOCK_FLAGS,
            "cancel" => &CANCEL_FLAGS,
            "deadlock" => &DEADLOCK_FLAGS,
            _ => &[],
        };
        add_flags(&mut want, kind, table);
        if matches!(kind, "request" | "convert" | "adopt") {
            want.extend(modes.iter().map(|m| format!("{kind} mode {m}")));
        }
        if matches!(kind, "request" | "adopt") {
            want.extend(name_ix.iter().map(|n| format!("{kind} name {n}")));
        }
        if matches!(kind, "request" | "convert") {
            want.extend((0..8).map(|p| format!("{kind} pid {p}")));
        }
        if matches!(kind, "request" | "convert" | "adopt" | "unlock" | "cancel") {
            want.extend((0..16).map(|a| format!("{kind} args {a}")));
        }
    }
    if mix.open != 0 {
        want.extend(["open new_pid true".into(), "open new_pid false".into()]);
    }
    if mix.adopt != 0 {
        want.extend(["adopt match true".into(), "adopt match false".into()]);
    }
    if mix.purge != 0 {
        want.extend((0..3).map(|n| format!("purge node {n}")));
        want.extend((0..6).map(|p| format!("purge pid {p}")));
    }
    if mix.read != 0 {
        want.extend((1..=mix.read_max.max(1)).map(|n| format!("read {n}")));
    }
    want.extend((3..=5).map(|s| format!("{s} slots")));

    let flags = |set: &mut BTreeSet<String>, kind: &str, table: &[(u32, u64)], f: u32| {
        for (i, (flag, _)) in table.iter().enumerate() {
            if f & flag == *flag {
                set.insert(format!("{kind} flag #{i}"));
            }
        }
    };
    let strategy = case_strategy(mix, names);
    let mut runner = TestRunner::deterministic();
    for _ in 0..cases {
        let case = strategy.new_tree(&mut runner).expect("a case").current();
        seen.insert(format!("{} slots", case.slots));
        for op in &case.ops {
            let s = &mut seen;
            match *op {
                Op::Open { new_pid, .. } => {
                    s.insert("open".into());
                    s.insert(format!("open new_pid {new_pid}"));
                }
                Op::Close { .. } => {
                    s.insert("close".into());
                }
                Op::Request {
                    mode,
                    name,
                    flags: f,
                    args,
                    pid,
                    ..
                } => {
                    let k = "request";
                    s.insert(k.into());
                    s.insert(format!("{k} mode {mode}"));
                    s.insert(format!("{k} name {name}"));
                    s.insert(format!("{k} pid {pid}"));
                    s.insert(format!("{k} args {args}"));
                    flags(s, k, &REQUEST_FLAGS, f);
                }
                Op::Convert {
                    mode,
                    flags: f,
                    args,
                    pid,
                    ..
                } => {
                    let k = "convert";
                    s.insert(k.into());
                    s.insert(format!("{k} mode {mode}"));
                    s.insert(format!("{k} pid {pid}"));
                    s.insert(format!("{k} args {args}"));
                    flags(s, k, &CONVERT_FLAGS, f);
                }
                Op::Adopt {
                    name,
                    mode,
                    match_orphan,
                    flags: f,
                    args,
                    ..
                } => {
                    let k = "adopt";
                    s.insert(k.into());
                    s.insert(format!("{k} mode {mode}"));
                    s.insert(format!("{k} name {name}"));
                    s.insert(format!("{k} match {match_orphan}"));
                    s.insert(format!("{k} args {args}"));
                    flags(s, k, &REQUEST_FLAGS, f);
                }
                Op::Unlock { flags: f, args, .. } => {
                    s.insert("unlock".into());
                    s.insert(format!("unlock args {args}"));
                    flags(s, "unlock", &UNLOCK_FLAGS, f);
                }
                Op::Cancel { flags: f, args, .. } => {
                    s.insert("cancel".into());
                    s.insert(format!("cancel args {args}"));
                    flags(s, "cancel", &CANCEL_FLAGS, f);
                }
                Op::Deadlock { flags: f, .. } => {
                    s.insert("deadlock".into());
                    flags(s, "deadlock", &DEADLOCK_FLAGS, f);
                }
                Op::Purge { node, pid, .. } => {
                    s.insert("purge".into());
                    s.insert(format!("purge node {node}"));
                    s.insert(format!("purge pid {pid}"));
                }
                Op::Read { n, .. } => {
                    s.insert("read".into());
                    s.insert(format!("read {n}"));
                }
                Op::Drain { .. } => {
                    s.insert("drain".into());
                }
            }
        }
    }
    let missing: Vec<&String> = want.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "{cases} cases of {mix:?} never produced {missing:?}"
    );
    let stray: Vec<&String> = seen.difference(&want).collect();
    assert!(
        stray.is_empty(),
        "{cases} cases of {mix:?} produced unexpected {stray:?}"
    );
}
