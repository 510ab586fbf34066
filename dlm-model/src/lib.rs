//! Test oracles for the lock engine, in one place for every test and fuzz
//! target that needs them (a dev-only crate, never published).
//!
//! - [`gen`]: the input side, random [`Case`]s of operations over a few
//!   owner slots and resources, from a proptest strategy or from any byte
//!   string ([`Case::from_bytes`]).
//! - [`model`]: the reference model, a separate and deliberately simple
//!   implementation of Linux 6.1's and 6.12's `fs/dlm` rules on one node.
//! - [`harness`]: the engine and the model driven side by side, compared
//!   after every step, under each kernel model ([`check_case`]).
//! - [`invariants`]: the property checks, every rule of the kernel that
//!   can be stated without re-implementing it, checked on the engine
//!   alone after every step ([`invariants::check_case`]).
//!
//! The two checkers are independent of each other, and the model and the
//! generator are independent of the engine: they use only dlm-proto's
//! safe types and records. The engine appears on the driving side alone
//! (the harness and the invariant checks call its public API), so a rule
//! it gets wrong cannot leak into an oracle.
//!
//! # Use
//!
//! ```
//! use dlm_model::{check_case, invariants, Case};
//!
//! // Any bytes make a valid case: what a fuzz target does with its input.
//! let case = Case::from_bytes(b"\x01\x02\x00\x05\x01\x00\x00\x00\x00\x09\x00\x00");
//! check_case(&case).expect("engine and model agree");
//! invariants::check_case(&case).expect("every invariant holds");
//! ```
//!
//! # Kernels
//!
//! The engine models two kernels (Linux 6.1 and 6.12,
//! [`dlm_engine::KernelModel`]); the model takes its own
//! [`model::Kernel`], each rule that differs kept in the module of its
//! topic, and both `check_case` functions run a case under each kernel in
//! turn ([`check_case_on`] and [`invariants::check_case_on`] under one).
//! Fuzz targets decode their input with [`Case::from_bytes`] and call the
//! two `check_case` functions; [`Case::to_bytes`] turns proptest's cases
//! into a seed corpus.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod gen;
pub mod harness;
pub mod invariants;
pub mod model;
mod report;

pub use gen::{Case, LockSel, Mix, Op};
pub use harness::{check_case, check_case_compacting, check_case_on, Outcome, World};
pub use model::{path_counts, report_coverage};
pub use report::{Failure, Stage};
