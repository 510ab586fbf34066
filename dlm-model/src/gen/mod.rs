//! The input side of every check: random sequences of operations over a
//! few owner slots and resources, for the model test, the property test
//! and fuzz targets alike.
//!
//! A [`Case`] is a number of owner slots and a list of [`Op`]s. An `Op`
//! carries selectors rather than values (a lock, a pid, a set of user
//! arguments, a value block); [`select`] turns them into concrete values
//! when a step runs, the same way for every checker. Cases come from a
//! proptest strategy ([`case_strategy`], weighted by a [`Mix`]) or from
//! any byte string ([`Case::from_bytes`], the fuzz input decoder).
//! [`check_coverage`] guards the strategy against a choice dropped by
//! mistake.
//!
//! Nothing here states one of the engine's rules.

mod bytes;
mod coverage;
pub mod flags;
pub mod select;
mod strategy;

pub use bytes::MAX_OPS;
pub use coverage::{check_coverage, CoverageGap};
pub use flags::*;
pub use select::{first_pid, lock_pid, lvb_bytes, purge_pid, reopen_pid, user_args};
pub use select::{LockSel, LONG_GAMMA, NAMES, TOO_LONG};
pub use strategy::{case_strategy, Mix};

use std::fmt;

/// One step of a case. `slot` is an owner slot (`0..Case::slots`), `name`
/// an index into [`NAMES`], `mode` a raw mode (valid or not), `args` a
/// [`user_args`] selector and `lvb` an [`lvb_bytes`] seed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // the fields are described above, once for all
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

impl Op {
    /// The owner slot the operation runs on.
    pub fn slot(&self) -> u8 {
        match *self {
            Op::Open { slot, .. }
            | Op::Close { slot }
            | Op::Request { slot, .. }
            | Op::Convert { slot, .. }
            | Op::Adopt { slot, .. }
            | Op::Unlock { slot, .. }
            | Op::Cancel { slot, .. }
            | Op::Deadlock { slot, .. }
            | Op::Purge { slot, .. }
            | Op::Read { slot, .. }
            | Op::Drain { slot } => slot,
        }
    }

    /// The resource name index, for the operations that carry one.
    pub fn name(&self) -> Option<u8> {
        match *self {
            Op::Request { name, .. } | Op::Adopt { name, .. } => Some(name),
            _ => None,
        }
    }
}

/// A whole case: how many owner slots there are (all open at the start)
/// and the operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// Owner slots, at least one; the ops name them `0..slots`.
    pub slots: u8,
    /// The operations, in order.
    pub ops: Vec<Op>,
}

impl Case {
    /// Whether the checkers can run this case: it has a slot at least,
    /// and every operation names one of them and a name of
    /// [`NAMES`]. Cases from [`case_strategy`] and [`Case::from_bytes`]
    /// always are; the checkers refuse others with this error rather than
    /// index out of bounds.
    pub fn validate(&self) -> Result<(), InvalidCase> {
        if self.slots == 0 {
            return Err(InvalidCase("no slots".into()));
        }
        for (i, op) in self.ops.iter().enumerate() {
            if op.slot() >= self.slots {
                return Err(InvalidCase(format!(
                    "op #{i} {op:?} names slot {} of {}",
                    op.slot(),
                    self.slots
                )));
            }
            if op.name().is_some_and(|n| usize::from(n) >= NAMES.len()) {
                return Err(InvalidCase(format!(
                    "op #{i} {op:?} names a resource past the {} of NAMES",
                    NAMES.len()
                )));
            }
        }
        Ok(())
    }
}

/// Why [`Case::validate`] refused a case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidCase(pub String);

impl fmt::Display for InvalidCase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid case: {}", self.0)
    }
}

impl std::error::Error for InvalidCase {}
