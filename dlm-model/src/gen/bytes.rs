//! Cases from arbitrary bytes: the input decoder of fuzz targets.
//!
//! [`Case::from_bytes`] maps every byte string to a valid case, and
//! [`Case::to_bytes`] maps every case the strategy or the decoder makes
//! back to bytes that decode to it (so proptest's cases can seed a fuzz
//! corpus). The decoder draws from the same choices as the strategy: the
//! same modes, names, pids, user arguments and flag candidates, every one
//! of them reachable, without the strategy's weights (a fuzzer finds its
//! own).
//!
//! The layout: one byte for the number of slots (`3 + b % 3`), then one
//! operation after another, each a kind byte (`b % 11`) and its fields in
//! the order of the [`Op`] variant, a byte each (a lock selector two,
//! little-endian; a flag set one bit per candidate of its table, one byte
//! per eight candidates). A field past the end of the input reads as 0;
//! decoding stops at the end of the input or after [`MAX_OPS`] operations.

use super::flags::{CANCEL, CONVERT, ORPHAN};
use super::strategy::{CANCEL_FLAGS, CONVERT_FLAGS, DEADLOCK_FLAGS, REQUEST_FLAGS, UNLOCK_FLAGS};
use super::{Case, LockSel, Op};

/// The most operations [`Case::from_bytes`] decodes: the longest case the
/// strategy makes.
pub const MAX_OPS: usize = 200;

/// Raw modes by their code: the six valid ones, one past the end, and 255.
const MODES: [u8; 8] = [0, 1, 2, 3, 4, 5, 6, 255];

/// Read counts are `1..=READ_MAX`, as with the largest `read_max` a test
/// uses.
const READ_MAX: u8 = 3;

/// Purge nodes `0..PURGE_NODES` (0 and 1 are ours) and pid selectors
/// `0..PURGE_PIDS`.
const PURGE_NODES: u8 = 3;
const PURGE_PIDS: u8 = 6;

/// User argument selectors `0..ARGS`, lock pid selectors `0..PIDS`.
const ARGS: u8 = 16;
const PIDS: u8 = 8;

/// The kinds of operation, by the code of their kind byte.
const KINDS: u8 = 11;

struct Reader<'a> {
    rest: &'a [u8],
}

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&b, rest)) => {
                self.rest = rest;
                b
            }
            None => 0,
        }
    }

    fn below(&mut self, n: u8) -> u8 {
        self.byte() % n
    }

    fn bool(&mut self) -> bool {
        self.byte() & 1 != 0
    }

    fn mode(&mut self) -> u8 {
        MODES[usize::from(self.byte()) % MODES.len()]
    }

    fn name(&mut self) -> u8 {
        self.below(super::NAMES.len() as u8)
    }

    fn lock(&mut self) -> LockSel {
        let lo = self.byte();
        let hi = self.byte();
        LockSel(u16::from_le_bytes([lo, hi]))
    }

    /// One bit per candidate of `table`: the union of those present.
    fn flags(&mut self, table: &[(u32, u64)]) -> u32 {
        let mut mask = 0u32;
        for i in 0..mask_bytes(table) {
            mask |= u32::from(self.byte()) << (8 * i);
        }
        table
            .iter()
            .enumerate()
            .filter(|(i, _)| mask >> i & 1 != 0)
            .fold(0, |f, (_, (flag, _))| f | flag)
    }

    fn op(&mut self, slots: u8) -> Op {
        let kind = self.below(KINDS);
        let slot = self.below(slots);
        match kind {
            0 => Op::Open {
                slot,
                new_pid: self.bool(),
            },
            1 => Op::Close { slot },
            2 => Op::Request {
                slot,
                mode: self.mode(),
                name: self.name(),
                flags: self.flags(&REQUEST_FLAGS),
                args: self.below(ARGS),
                pid: self.below(PIDS),
            },
            3 => Op::Convert {
                slot,
                lock: self.lock(),
                mode: self.mode(),
                flags: CONVERT | self.flags(&CONVERT_FLAGS),
                lvb: self.byte(),
                args: self.below(ARGS),
                pid: self.below(PIDS),
            },
            4 => Op::Adopt {
                slot,
                name: self.name(),
                mode: self.mode(),
                match_orphan: self.bool(),
                flags: ORPHAN | self.flags(&REQUEST_FLAGS),
                args: self.below(ARGS),
            },
            5 => Op::Unlock {
                slot,
                lock: self.lock(),
                flags: self.flags(&UNLOCK_FLAGS),
                lvb: self.byte(),
                args: self.below(ARGS),
            },
            6 => Op::Cancel {
                slot,
                lock: self.lock(),
                flags: CANCEL | self.flags(&CANCEL_FLAGS),
                args: self.below(ARGS),
            },
            7 => Op::Deadlock {
                slot,
                lock: self.lock(),
                flags: self.flags(&DEADLOCK_FLAGS),
            },
            8 => Op::Purge {
                slot,
                node: self.below(PURGE_NODES),
                pid: self.below(PURGE_PIDS),
            },
            9 => Op::Read {
                slot,
                n: 1 + self.below(READ_MAX),
            },
            _ => Op::Drain { slot },
        }
    }
}

fn mask_bytes(table: &[(u32, u64)]) -> usize {
    table.len().div_ceil(8)
}

struct Writer {
    out: Vec<u8>,
}

impl Writer {
    fn byte(&mut self, b: u8) {
        self.out.push(b);
    }

    fn mode(&mut self, mode: u8) {
        let code = MODES.iter().position(|&m| m == mode).unwrap_or(0);
        self.byte(code as u8);
    }

    fn lock(&mut self, lock: LockSel) {
        self.out.extend(lock.0.to_le_bytes());
    }

    fn flags(&mut self, table: &[(u32, u64)], flags: u32) {
        let mask = table
            .iter()
            .enumerate()
            .filter(|(_, (flag, _))| flags & flag == *flag)
            .fold(0u32, |m, (i, _)| m | 1 << i);
        for i in 0..mask_bytes(table) {
            self.byte((mask >> (8 * i)) as u8);
        }
    }

    fn op(&mut self, op: &Op) {
        match *op {
            Op::Open { slot, new_pid } => {
                self.out.extend([0, slot, u8::from(new_pid)]);
            }
            Op::Close { slot } => self.out.extend([1, slot]),
            Op::Request {
                slot,
                mode,
                name,
                flags,
                args,
                pid,
            } => {
                self.out.extend([2, slot]);
                self.mode(mode);
                self.byte(name);
                self.flags(&REQUEST_FLAGS, flags);
                self.out.extend([args, pid]);
            }
            Op::Convert {
                slot,
                lock,
                mode,
                flags,
                lvb,
                args,
                pid,
            } => {
                self.out.extend([3, slot]);
                self.lock(lock);
                self.mode(mode);
                self.flags(&CONVERT_FLAGS, flags);
                self.out.extend([lvb, args, pid]);
            }
            Op::Adopt {
                slot,
                name,
                mode,
                match_orphan,
                flags,
                args,
            } => {
                self.out.extend([4, slot, name]);
                self.mode(mode);
                self.byte(u8::from(match_orphan));
                self.flags(&REQUEST_FLAGS, flags);
                self.byte(args);
            }
            Op::Unlock {
                slot,
                lock,
                flags,
                lvb,
                args,
            } => {
                self.out.extend([5, slot]);
                self.lock(lock);
                self.flags(&UNLOCK_FLAGS, flags);
                self.out.extend([lvb, args]);
            }
            Op::Cancel {
                slot,
                lock,
                flags,
                args,
            } => {
                self.out.extend([6, slot]);
                self.lock(lock);
                self.flags(&CANCEL_FLAGS, flags);
                self.byte(args);
            }
            Op::Deadlock { slot, lock, flags } => {
                self.out.extend([7, slot]);
                self.lock(lock);
                self.flags(&DEADLOCK_FLAGS, flags);
            }
            Op::Purge { slot, node, pid } => self.out.extend([8, slot, node, pid]),
            Op::Read { slot, n } => self.out.extend([9, slot, n.saturating_sub(1)]),
            Op::Drain { slot } => self.out.extend([10, slot]),
        }
    }
}

impl Case {
    /// Decodes any byte string into a valid case (see the module docs for
    /// the layout): 3 to 5 slots and at most [`MAX_OPS`] operations drawn
    /// from the choices the strategy makes. The empty string is a case
    /// with 3 slots and no operations.
    pub fn from_bytes(data: &[u8]) -> Case {
        let mut r = Reader { rest: data };
        let slots = 3 + r.below(3);
        let mut ops = Vec::new();
        while !r.rest.is_empty() && ops.len() < MAX_OPS {
            ops.push(r.op(slots));
        }
        Case { slots, ops }
    }

    /// Encodes the case so that [`Case::from_bytes`] gives it back: exact
    /// for every case the strategy or the decoder makes (3 to 5 slots, at
    /// most [`MAX_OPS`] operations, flags from the candidate tables).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer {
            out: vec![self.slots.wrapping_sub(3)],
        };
        for op in &self.ops {
            w.op(op);
        }
        w.out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;

    use super::super::coverage::{compare, record, wanted};
    use super::super::{case_strategy, Mix};
    use super::*;

    /// Every kind of operation, with the largest read count a test uses.
    const ALL: Mix = Mix {
        open: 1,
        close: 1,
        request: 1,
        convert: 1,
        adopt: 1,
        unlock: 1,
        cancel: 1,
        deadlock: 1,
        purge: 1,
        read: 1,
        drain: 1,
        read_max: READ_MAX,
    };

    /// A deterministic stream of pseudo-random byte strings (xorshift).
    fn inputs(count: usize, max_len: usize) -> Vec<Vec<u8>> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        (0..count)
            .map(|_| {
                let len = (next() % (max_len as u64 + 1)) as usize;
                (0..len).map(|_| next() as u8).collect()
            })
            .collect()
    }

    #[test]
    fn the_empty_input_is_a_case_with_no_operations() {
        let case = Case::from_bytes(&[]);
        assert_eq!(
            case,
            Case {
                slots: 3,
                ops: vec![]
            }
        );
        assert_eq!(case.validate(), Ok(()));
    }

    #[test]
    fn a_short_input_fills_missing_fields_with_zero() {
        // Slots 3 + 7 % 3 = 4; kind 2 (a request) on slot 9 % 4 = 1, and
        // the rest of its fields past the end.
        let case = Case::from_bytes(&[7, 2, 9]);
        let want = Op::Request {
            slot: 1,
            mode: 0,
            name: 0,
            flags: 0,
            args: 0,
            pid: 0,
        };
        assert_eq!(
            case,
            Case {
                slots: 4,
                ops: vec![want]
            }
        );
    }

    #[test]
    fn every_byte_string_decodes_to_a_valid_case() {
        for data in inputs(3000, 800) {
            let case = Case::from_bytes(&data);
            assert_eq!(case.validate(), Ok(()), "{data:?}");
            assert!((3..=5).contains(&case.slots));
            assert!(case.ops.len() <= MAX_OPS);
            assert!(case.ops.len() <= data.len(), "an op per byte at most");
            assert_eq!(Case::from_bytes(&data), case, "decoding is deterministic");
        }
    }

    #[test]
    fn decoding_stops_after_max_ops() {
        let case = Case::from_bytes(&[1; 10 * MAX_OPS]);
        assert_eq!(case.ops.len(), MAX_OPS);
    }

    #[test]
    fn the_decoder_reaches_every_choice_of_the_strategy_and_no_other() {
        let mut seen = BTreeSet::new();
        for data in inputs(2000, 400) {
            record(&Case::from_bytes(&data), &mut seen);
        }
        if let Err(gap) = compare("decoded random bytes", &wanted(ALL, 1..=4), &seen) {
            panic!("{gap}");
        }
    }

    #[test]
    fn cases_of_the_strategy_round_trip_through_bytes() {
        let strategy = case_strategy(ALL, 1..=4);
        let mut runner = TestRunner::deterministic();
        for _ in 0..500 {
            let case = strategy.new_tree(&mut runner).expect("a case").current();
            let bytes = case.to_bytes();
            assert_eq!(Case::from_bytes(&bytes), case, "{bytes:?}");
        }
    }

    #[test]
    fn decoded_cases_round_trip_through_bytes() {
        for data in inputs(1000, 600) {
            let case = Case::from_bytes(&data);
            assert_eq!(Case::from_bytes(&case.to_bytes()), case);
        }
    }
}
