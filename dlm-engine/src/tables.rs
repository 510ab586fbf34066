//! The kernel's mode tables on raw `i8` modes, where `-1` is `DLM_LOCK_IV`.
//!
//! The engine keeps modes as the kernel does (an `int` with `-1` for
//! "invalid") so that every comparison `fs/dlm/lock.c` makes on modes,
//! including those against `DLM_LOCK_IV`, is made the same way here.

/// `DLM_LOCK_IV`.
pub(crate) const IV: i8 = -1;
/// `DLM_LOCK_NL`.
pub(crate) const NL: i8 = 0;
/// `DLM_LOCK_CR`.
pub(crate) const CR: i8 = 1;
/// `DLM_LOCK_CW`.
pub(crate) const CW: i8 = 2;
/// `DLM_LOCK_PR`.
pub(crate) const PR: i8 = 3;
/// `DLM_LOCK_PW`.
pub(crate) const PW: i8 = 4;
/// `DLM_LOCK_EX`.
pub(crate) const EX: i8 = 5;

/// `__dlm_compat_matrix` rows and columns UN, NL..EX (the PD padding
/// row/column is never indexed by valid modes).
const COMPAT: [[bool; 7]; 7] = {
    const T: bool = true;
    const F: bool = false;
    [
        [T, T, T, T, T, T, T], // UN
        [T, T, T, T, T, T, T], // NL
        [T, T, T, T, T, T, F], // CR
        [T, T, T, T, F, F, F], // CW
        [T, T, T, F, T, F, F], // PR
        [T, T, T, F, F, F, F], // PW
        [T, T, F, F, F, F, F], // EX
    ]
};

/// `dlm_lvb_operations` rows and columns UN, NL..EX.
const LVB_OPS: [[i8; 7]; 7] = [
    [-1, 1, 1, 1, 1, 1, 1],    // UN
    [-1, 1, 1, 1, 1, 1, 1],    // NL
    [-1, -1, 1, 1, 1, 1, 1],   // CR
    [-1, -1, -1, 1, 1, 1, 1],  // CW
    [-1, -1, -1, -1, 1, 1, 1], // PR
    [-1, 0, 0, 0, 0, 0, 1],    // PW
    [-1, 0, 0, 0, 0, 0, 0],    // EX
];

#[inline]
fn idx(mode: i8) -> usize {
    // Modes handed to these tables are always IV..=EX: the engine checks
    // request modes before storing them.
    debug_assert!((IV..=EX).contains(&mode));
    (mode + 1) as usize
}

/// `dlm_modes_compat(gr, rq)`.
#[inline]
pub(crate) fn compat(gr: i8, rq: i8) -> bool {
    COMPAT[idx(gr)][idx(rq)]
}

/// `dlm_lvb_operations[gr + 1][rq + 1]`.
#[inline]
pub(crate) fn lvb_op(gr: i8, rq: i8) -> i8 {
    LVB_OPS[idx(gr)][idx(rq)]
}

/// `__quecvt_compat_matrix[gr + 1][rq + 1]`.
#[inline]
pub(crate) fn quecvt_ok(gr: i8, rq: i8) -> bool {
    match (
        dlm_proto::LockMode::try_from(i32::from(gr)),
        dlm_proto::LockMode::try_from(i32::from(rq)),
    ) {
        (Ok(g), Ok(r)) => g.quecvt_allowed(r),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dlm_proto::LockMode;

    #[test]
    fn raw_tables_agree_with_the_typed_ones() {
        for g in LockMode::ALL {
            for r in LockMode::ALL {
                assert_eq!(compat(g as i8, r as i8), g.compatible(r));
                let typed = match LockMode::lvb_op(Some(g), r) {
                    dlm_proto::mode::LvbOp::Read => 1,
                    dlm_proto::mode::LvbOp::Write => 0,
                    dlm_proto::mode::LvbOp::None => -1,
                };
                assert_eq!(lvb_op(g as i8, r as i8), typed);
            }
            assert!(compat(IV, g as i8));
            assert_eq!(lvb_op(IV, g as i8), 1);
            assert_eq!(lvb_op(g as i8, IV), -1);
        }
    }
}
