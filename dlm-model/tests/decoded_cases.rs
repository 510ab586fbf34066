//! A short fuzz run without a fuzzer: pseudo-random byte strings decoded
//! with `Case::from_bytes`, each run through both checkers, as a fuzz
//! target would. The engine must agree with the model and keep every
//! invariant on all of them.
#![forbid(unsafe_code)]

use dlm_model::{check_case, invariants, Case};

/// A deterministic stream of pseudo-random byte strings (xorshift), of
/// lengths up to `max_len`.
fn inputs(count: usize, max_len: u64) -> impl Iterator<Item = Vec<u8>> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..count).map(move |_| {
        let len = next() % (max_len + 1);
        (0..len).map(|_| next() as u8).collect()
    })
}

#[test]
fn decoded_random_bytes_pass_both_checkers() {
    let mut ops = 0;
    for data in inputs(300, 1200) {
        let case = Case::from_bytes(&data);
        ops += case.ops.len();
        if let Err(e) = check_case(&case) {
            panic!("engine and model disagree on {data:?}: {e}");
        }
        if let Err(e) = invariants::check_case(&case) {
            panic!("an invariant broke on {data:?}: {e}");
        }
    }
    // The inputs were long enough to say something.
    assert!(ops > 300 * 50, "only {ops} operations decoded");
}

#[test]
fn an_invalid_case_is_refused_not_run() {
    let case = Case {
        slots: 2,
        ops: vec![dlm_model::Op::Close { slot: 2 }],
    };
    let e = check_case(&case).expect_err("slot 2 of 2");
    assert_eq!(e.stage, dlm_model::Stage::Input);
    let e = invariants::check_case(&case).expect_err("slot 2 of 2");
    assert_eq!(e.stage, dlm_model::Stage::Input);
    let none = Case {
        slots: 0,
        ops: vec![],
    };
    assert!(check_case(&none).is_err());
}

#[test]
fn compacting_the_engine_after_every_step_changes_nothing_the_model_sees() {
    let mut ops = 0;
    for data in inputs(300, 1200) {
        let case = Case::from_bytes(&data);
        ops += case.ops.len();
        if let Err(e) = dlm_model::check_case_compacting(&case) {
            panic!("compaction changed what the engine does on {data:?}: {e}");
        }
    }
    assert!(ops > 300 * 50, "only {ops} operations decoded");
}
