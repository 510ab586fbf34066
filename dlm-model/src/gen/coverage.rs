//! Coverage of the generator itself: every choice a [`Mix`] gives a
//! weight must come up in a sample of its cases, and nothing else may.
//! A guard against a weight or a choice dropped by mistake, for the
//! strategy and for the byte decoder alike.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::RangeInclusive;

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;

use super::select::{LONG_GAMMA, TOO_LONG};
use super::strategy::{CANCEL_FLAGS, CONVERT_FLAGS, DEADLOCK_FLAGS, REQUEST_FLAGS, UNLOCK_FLAGS};
use super::{case_strategy, Case, Mix, Op};

/// Choices a sample of cases left out, or produced though it should not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoverageGap {
    /// What the sample was, for the message.
    pub sample: String,
    /// Choices the sample never produced.
    pub missing: Vec<String>,
    /// Choices the sample produced that the mix does not allow.
    pub stray: Vec<String>,
}

impl fmt::Display for CoverageGap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.missing.is_empty() {
            write!(f, "{} never produced {:?}", self.sample, self.missing)?;
        }
        if !self.stray.is_empty() {
            if !self.missing.is_empty() {
                f.write_str("; ")?;
            }
            write!(f, "{} produced unexpected {:?}", self.sample, self.stray)?;
        }
        Ok(())
    }
}

impl std::error::Error for CoverageGap {}

/// Checks that `cases` sampled cases of `mix` over `names` contain every
/// kind of operation the mix gives a weight, every flag candidate of every
/// table, and every mode, name, pid, argument and read-count choice those
/// operations can carry, and no other.
pub fn check_coverage(mix: Mix, names: RangeInclusive<u8>, cases: u32) -> Result<(), CoverageGap> {
    let want = wanted(mix, names.clone());
    let mut seen = BTreeSet::new();
    let strategy = case_strategy(mix, names);
    let mut runner = TestRunner::deterministic();
    for _ in 0..cases {
        match strategy.new_tree(&mut runner) {
            Ok(tree) => record(&tree.current(), &mut seen),
            Err(e) => {
                return Err(CoverageGap {
                    sample: format!("{cases} cases of {mix:?}"),
                    missing: vec![format!("a case (the strategy failed: {e})")],
                    stray: Vec::new(),
                })
            }
        }
    }
    compare(&format!("{cases} cases of {mix:?}"), &want, &seen)
}

/// The result of comparing what a sample should contain with what it did.
pub(crate) fn compare(
    sample: &str,
    want: &BTreeSet<String>,
    seen: &BTreeSet<String>,
) -> Result<(), CoverageGap> {
    let missing: Vec<String> = want.difference(seen).cloned().collect();
    let stray: Vec<String> = seen.difference(want).cloned().collect();
    if missing.is_empty() && stray.is_empty() {
        Ok(())
    } else {
        Err(CoverageGap {
            sample: sample.to_string(),
            missing,
            stray,
        })
    }
}

/// Every choice cases of `mix` over `names` can contain.
pub(crate) fn wanted(mix: Mix, names: RangeInclusive<u8>) -> BTreeSet<String> {
    let mut want = BTreeSet::new();
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
    want
}

/// Adds every choice `case` contains to `seen`.
pub(crate) fn record(case: &Case, seen: &mut BTreeSet<String>) {
    let flags = |set: &mut BTreeSet<String>, kind: &str, table: &[(u32, u64)], f: u32| {
        for (i, (flag, _)) in table.iter().enumerate() {
            if f & flag == *flag {
                set.insert(format!("{kind} flag #{i}"));
            }
        }
    };
    seen.insert(format!("{} slots", case.slots));
    for op in &case.ops {
        let s = &mut *seen;
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
