//! The proptest strategy for cases: the weight of each kind of operation
//! ([`Mix`]), and the candidate flags of each kind with their weights.
//! The flag tables are shared with the byte decoder and the coverage
//! check, so all three agree on what a case may contain.

use std::ops::RangeInclusive;

use proptest::prelude::*;

use super::flags::{ALTCW, ALTPR, CANCEL, CONVDEADLK, CONVERT, EXPEDITE, FORCEUNLOCK};
use super::flags::{HEADQUE, IVVALBLK, NODLCKBLK, NODLCKWT, NOORDER, NOQUEUE, NOQUEUEBAST};
use super::flags::{ORPHAN, PERSISTENT, QUECVT, TIMEOUT, UNKNOWN_BIT, VALBLK};
use super::select::{LONG_GAMMA, TOO_LONG};
use super::{Case, LockSel, Op};

/// Flags drawn from 64 random bits: candidate `i` of `table` uses nibble
/// `i` and is present when the nibble is at least `16 - weight`, so a
/// weight is a chance out of 16 and shrinking toward zero drops flags.
pub(crate) fn pick_flags(bits: u64, table: &[(u32, u64)]) -> u32 {
    table
        .iter()
        .enumerate()
        .filter(|(i, (_, w))| (bits >> (4 * i)) & 0xF >= 16 - w)
        .fold(0, |f, (_, (flag, _))| f | flag)
}

/// Candidate flags of a request or adoption, with their weights.
pub(crate) const REQUEST_FLAGS: [(u32, u64); 16] = [
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
pub(crate) const CONVERT_FLAGS: [(u32, u64); 16] = [
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
pub(crate) const UNLOCK_FLAGS: [(u32, u64); 5] = [
    (VALBLK, 5),
    (IVVALBLK, 2),
    (FORCEUNLOCK, 4),
    (NOQUEUE, 1),
    (CANCEL, 1),
];

/// Candidate flags of a cancel, besides CANCEL.
pub(crate) const CANCEL_FLAGS: [(u32, u64); 4] =
    [(VALBLK, 2), (IVVALBLK, 2), (FORCEUNLOCK, 1), (NOQUEUE, 1)];

/// Candidate flags of a deadlock cancel.
pub(crate) const DEADLOCK_FLAGS: [(u32, u64); 4] =
    [(CANCEL, 3), (FORCEUNLOCK, 2), (IVVALBLK, 2), (NOQUEUE, 1)];

/// A raw mode: mostly a valid one, sometimes one past the end or 255.
fn mode_strategy() -> impl Strategy<Value = u8> {
    prop_oneof![40 => 0u8..=5, 1 => Just(6u8), 1 => Just(255u8)]
}

/// The weight of each kind of operation, and how many callbacks a
/// [`Op::Read`] may take at most (`1..=read_max`, at least 1).
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)] // one weight per kind of [`Op`], named after it
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

impl Mix {
    /// Every kind of operation, reads of up to three callbacks interleaved
    /// at random: the property tests' general mix, and the fuzz seeds'.
    pub const GENERAL: Mix = Mix {
        open: 3,
        close: 2,
        request: 20,
        convert: 16,
        adopt: 3,
        unlock: 8,
        cancel: 5,
        deadlock: 2,
        purge: 2,
        read: 30,
        drain: 8,
        read_max: 3,
    };
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
