//! What a checker returns when a case fails: where in the case, what was
//! wrong, and the trace of the steps up to there.

use std::fmt;

use crate::gen::{InvalidCase, Op};

/// Where in a case a check failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The case itself cannot be run ([`Case::validate`](crate::Case::validate)).
    Input,
    /// Operation `index` (`op`) returned something wrong.
    Step {
        /// Its index in the case.
        index: usize,
        /// The operation.
        op: Op,
    },
    /// The state after operation `index` (`op`) is wrong.
    AfterStep {
        /// Its index in the case.
        index: usize,
        /// The operation.
        op: Op,
    },
    /// Reading what was left for slot `slot` once the case was over.
    FinalDrain {
        /// The slot.
        slot: u8,
    },
    /// The state once every slot was drained.
    End,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stage::Input => f.write_str("the input"),
            Stage::Step { index, op } => write!(f, "step {index} {op:?}"),
            Stage::AfterStep { index, op } => write!(f, "after step {index} {op:?}"),
            Stage::FinalDrain { slot } => write!(f, "final drain of slot {slot}"),
            Stage::End => f.write_str("after the final drain"),
        }
    }
}

/// A failed check: the engine disagreed with the model, or broke an
/// invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Where.
    pub stage: Stage,
    /// What was wrong.
    pub detail: String,
    /// One line per step run up to the failure (what it returned, and for
    /// the invariant checks the locks after it).
    pub trace: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}\ntrace:\n{}", self.stage, self.detail, self.trace)
    }
}

impl std::error::Error for Failure {}

impl From<InvalidCase> for Failure {
    fn from(e: InvalidCase) -> Failure {
        Failure {
            stage: Stage::Input,
            detail: e.to_string(),
            trace: String::new(),
        }
    }
}
