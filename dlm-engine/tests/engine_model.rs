//! Model test: the engine against the reference model of `dlm-model`, a
//! separate, deliberately simple implementation of the Linux 6.1 and 6.12
//! `fs/dlm` rules (`lock.c`, `ast.c`, `user.c`) on one node; every
//! sequence runs under both kernel models (the regression cases below
//! replay their steps under 6.1, where they were found).
//!
//! Both are driven with the same random operation sequences; after every
//! step the comparison (`dlm_model::check_case`) looks at the `write()`
//! result, the record of every read, the `locks()` snapshot, the
//! callbacks-pending flag of every owner, the resource value blocks and
//! the lock and resource counts. The model, the generator and the
//! comparison live in `dlm-model`, which the property test
//! (`engine_props.rs`) and fuzz targets share; the mixes of operations
//! and the regression cases are this file's own.
//!
//! `DLM_MODEL_CASES` sets the number of sequences (default 2000), split
//! between the two tests of this file; `DLM_MODEL_STATS` prints how often
//! the model took each of its paths.
#![forbid(unsafe_code)]

use dlm_engine::Queue;
use dlm_model::gen::{case_strategy, check_coverage, Case, LockSel, Mix, Op};
use dlm_model::gen::{ALTCW, CANCEL, CONVERT, FORCEUNLOCK, NODLCKWT, NOQUEUE, ORPHAN, PERSISTENT};
use dlm_model::{check_case, report_coverage, Outcome, World};
use dlm_proto::Errno;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

fn cases_from_env() -> u32 {
    std::env::var("DLM_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn run(mix: Mix, names: std::ops::RangeInclusive<u8>, cases: u32, salt: &str) {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&case_strategy(mix, names), |case| {
        check_case(&case).map_err(|e| TestCaseError::fail(e.to_string()))
    });
    if let Err(e) = result {
        panic!("{salt}: engine and model disagree: {e}");
    }
    report_coverage();
}

/// Every kind of operation, with reads interleaved at random. A read
/// takes one callback: the engine and the model are compared after each.
const GENERAL: Mix = Mix {
    request: 22,
    read: 24,
    drain: 5,
    read_max: 1,
    ..Mix::GENERAL
};

/// One or two resources, few reads and many conversions, so that callback
/// arrays fill up, queues grow long and conversions deadlock.
const CONTENTION: Mix = Mix {
    open: 2,
    close: 1,
    request: 20,
    convert: 26,
    adopt: 2,
    unlock: 5,
    cancel: 6,
    deadlock: 2,
    purge: 1,
    read: 6,
    drain: 2,
    read_max: 1,
};

#[test]
fn engine_matches_model() {
    let cases = cases_from_env();
    run(GENERAL, 2..=4, cases - cases / 2, "general mix");
}

#[test]
fn engine_matches_model_under_contention() {
    run(CONTENTION, 1..=2, cases_from_env() / 2, "contention mix");
}

/// The generator still produces every choice the two mixes above rely on.
#[test]
fn generator_covers_both_mixes() {
    for (mix, names) in [(GENERAL, 2..=4), (CONTENTION, 1..=2)] {
        if let Err(gap) = check_coverage(mix, names, 500) {
            panic!("{gap}");
        }
    }
}

/// The engine bugs these tests found, each as a fixed sequence run through
/// the same comparison, with the fact that shows the fix asserted too.
/// `LockSel(8 * n)` names lock id `n`.
#[test]
fn engine_bugs_found_by_the_model_stay_fixed() {
    let none = 0u32;
    let args = 0u8;
    let request = |slot, mode, name, flags| Op::Request {
        slot,
        mode,
        name,
        flags,
        args,
        pid: 0,
    };
    let convert = |slot, id: u16, mode, flags| Op::Convert {
        slot,
        lock: LockSel(8 * id),
        mode,
        flags: CONVERT | flags,
        lvb: 0,
        args,
        pid: 0,
    };
    let unlock = |slot, id: u16, flags| Op::Unlock {
        slot,
        lock: LockSel(8 * id),
        flags,
        lvb: 0,
        args,
    };
    let run = |ops: Vec<Op>| {
        let case = Case { slots: 3, ops };
        if let Err(e) = check_case(&case) {
            panic!("{e}");
        }
        let mut w = World::new(3);
        let outcomes: Vec<Outcome> = case.ops.iter().map(|op| w.step(op).0).collect();
        (w, outcomes)
    };

    // A: an unlock whose EUNLOCK does not fit in the lock's six callbacks
    // leaves the lock on its owner's list; dlm_user_unlock moves it to
    // proc->unlocking, so closing the owner drops it instead of orphaning
    // it. (The engine orphaned it: an ended orphan, adoptable as EAGAIN.)
    let mut ops = vec![request(0, 0, 0, PERSISTENT)];
    // Five conversions (keeping PERSISTENT) fill the array with the grant.
    ops.extend((0..5).map(|_| convert(0, 1, 0, PERSISTENT)));
    ops.extend([
        unlock(0, 1, none),
        Op::Close { slot: 0 },
        Op::Adopt {
            slot: 1,
            name: 0,
            mode: 0,
            match_orphan: false,
            flags: ORPHAN,
            args,
        },
    ]);
    let (w, out) = run(ops);
    assert_eq!(out[8], Outcome::Lock(Err(Errno::ENOENT)));
    assert_eq!(w.engine().lock_count(), 0);

    // B: unlocking an orphan whose waiting request was cancelled when its
    // owner closed (it is on no queue) corrupted the grant queue, and a
    // later EX request was granted beside a PR holder.
    let (w, out) = run(vec![
        request(1, 3, 0, none),
        request(0, 5, 0, PERSISTENT),
        Op::Close { slot: 0 },
        unlock(2, 2, none),
        request(2, 5, 0, none),
    ]);
    assert_eq!(out[3], Outcome::Unit(Err(Errno::ENOENT)));
    assert_eq!(
        w.engine().lock_info(3).and_then(|l| l.queue),
        Some(Queue::Waiting)
    );

    // C: a dead lock left queued (its flags carried FORCEUNLOCK when its
    // owner closed) and then unlocked by someone else was never freed:
    // the engine lacked the reference find_lkb holds until dlm_put_lkb.
    let (w, out) = run(vec![
        request(1, 0, 0, none),
        convert(0, 1, 1, FORCEUNLOCK),
        Op::Close { slot: 1 },
        unlock(0, 1, none),
        request(0, 0, 1, none),
    ]);
    assert_eq!(
        out[4],
        Outcome::Lock(Ok(1)),
        "the dead lock's id is free again"
    );
    assert!(w
        .engine()
        .lock_info(1)
        .is_some_and(|l| l.resource == b"beta"));

    // D: a lock that the ALTCW quirk left granted in no mode, converted
    // and then deadlock-cancelled, ends (IV-mode EDEADLK) while still on
    // the grant queue and off its owner's list. Once the owner closed, a
    // completion for it hit `unreachable!` (Linux 6.1: use after free).
    let (w, out) = run(vec![
        request(0, 2, 0, none),
        request(1, 2, 0, none),
        convert(1, 2, 5, none),
        convert(0, 1, 3, ALTCW | NODLCKWT),
        Op::Cancel {
            slot: 1,
            lock: LockSel(16),
            flags: CANCEL,
            args,
        },
        Op::Drain { slot: 0 },
        request(1, 5, 0, none),
        convert(0, 1, 5, none),
        Op::Deadlock {
            slot: 0,
            lock: LockSel(8),
            flags: none,
        },
        Op::Close { slot: 0 },
        convert(1, 1, 0, NOQUEUE),
    ]);
    assert_eq!(out[10], Outcome::Lock(Ok(0)));
    let zombie = w.engine().lock_info(1).expect("still queued");
    assert_eq!(
        (zombie.queue, zombie.granted, zombie.owner),
        (Some(Queue::Granted), None, None)
    );
}
