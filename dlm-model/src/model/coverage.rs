//! Coverage of the model: how often it took each interesting path, over
//! every case checked in this process. A test prints the counts with
//! `DLM_MODEL_STATS` set, to show that its cases reach the rare paths.

use std::sync::atomic::{AtomicU64, Ordering};

/// The paths counted.
const PATHS: [&str; 45] = [
    "request granted now",
    "request queued",
    "request EAGAIN",
    "NOQUEUEBAST blocking ASTs",
    "conversion granted now",
    "conversion queued",
    "conversion EDEADLK",
    "CONVDEADLK demotion",
    "demoted conversion granted after grant_pending_convert",
    "NODLCKWT self blocking AST",
    "grant_pending_convert demote restart",
    "granted in the alternate mode",
    "EXPEDITE grant",
    "NOORDER grant (not otherwise grantable)",
    "grant_pending_convert grant",
    "grant_pending_wait grant",
    "grant_pending blocking AST",
    "grant_pending CW blocking AST to a PR holder",
    "send_bast_queue blocking AST",
    "callback dropped: array full",
    "blocking AST dropped when added",
    "blocking AST skipped when read",
    "value block copied when read",
    "resource value block written",
    "VALNOTVALID set",
    "VALNOTVALID reported in a grant",
    "orphan adopted",
    "adoption EAGAIN",
    "purge of the caller's own locks",
    "orphan purged",
    "lock orphaned on close",
    "lock unlocked on close",
    "lock moved to the unlocking list",
    "unlocking lock released on close or purge",
    "unlock or cancel of an orphan on no queue",
    "dead lock left queued (FORCEUNLOCK in its flags)",
    "operation on an ended lock (ENOENT)",
    "HEADQUE insertion",
    "grant queue insertion not at the head",
    "resource revived from the toss list",
    "ended lock still queued when its owner closed",
    "lock granted in no mode (ALTPR/ALTCW quirk)",
    "6.12: blocking AST skipped, compatible with the last completion queued",
    "6.12: blocking AST skipped after a blocking AST",
    "6.12: value block copied when queued",
];

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
static HITS: [AtomicU64; PATHS.len()] = [ZERO; PATHS.len()];

/// Counts one pass through `path`, one of [`PATHS`].
pub(super) fn hit(path: &str) {
    let i = PATHS.iter().position(|p| *p == path).expect("known path");
    HITS[i].fetch_add(1, Ordering::Relaxed);
}

/// How often each path was taken so far in this process, in a fixed
/// order.
pub fn path_counts() -> Vec<(&'static str, u64)> {
    PATHS
        .iter()
        .zip(HITS.iter())
        .map(|(name, n)| (*name, n.load(Ordering::Relaxed)))
        .collect()
}

/// With `DLM_MODEL_STATS` set, prints how often each path was taken.
pub fn report_coverage() {
    if std::env::var_os("DLM_MODEL_STATS").is_none() {
        return;
    }
    for (name, n) in path_counts() {
        eprintln!("{n:>10}  {name}");
    }
}
