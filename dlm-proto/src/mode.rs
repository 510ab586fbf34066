//! Lock modes and the kernel's mode matrices.

use core::fmt;

use crate::error::Errno;

/// `DLM_LOCK_NL` … `DLM_LOCK_EX`: the six VMS lock modes.
///
/// The kernel's "invalid" mode `DLM_LOCK_IV` (-1) is not a variant: where a
/// mode may be absent (a lock that was never granted), the API uses
/// `Option<LockMode>`.
///
/// The order of the variants is the kernel's numeric order, so `Ord`
/// compares modes the way `fs/dlm/lock.c` compares `int` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum LockMode {
    /// `DLM_LOCK_NL`: null mode, grants nothing and blocks nothing.
    Nl = 0,
    /// `DLM_LOCK_CR`: concurrent read.
    Cr = 1,
    /// `DLM_LOCK_CW`: concurrent write.
    Cw = 2,
    /// `DLM_LOCK_PR`: protected read.
    Pr = 3,
    /// `DLM_LOCK_PW`: protected write.
    Pw = 4,
    /// `DLM_LOCK_EX`: exclusive.
    Ex = 5,
}

/// The kernel's `__dlm_compat_matrix` without its UN and padding rows,
/// indexed `[granted][requested]`.
const COMPAT: [[bool; 6]; 6] = {
    const T: bool = true;
    const F: bool = false;
    [
        // NL CR CW PR PW EX   (requested)
        [T, T, T, T, T, T], // NL granted
        [T, T, T, T, T, F], // CR
        [T, T, T, F, F, F], // CW
        [T, T, F, T, F, F], // PR
        [T, T, F, F, F, F], // PW
        [T, F, F, F, F, F], // EX
    ]
};

/// The kernel's `__quecvt_compat_matrix`: which conversions may carry
/// `DLM_LKF_QUECVT`, indexed `[granted][requested]`.
const QUECVT: [[bool; 6]; 6] = {
    const T: bool = true;
    const F: bool = false;
    [
        [F, T, T, T, T, T], // NL -> CR..EX
        [F, F, T, T, T, T], // CR -> CW..EX
        [F, F, F, T, T, T], // CW -> PR..EX
        [F, F, T, F, T, T], // PR -> CW, PW, EX
        [F, F, F, F, F, T], // PW -> EX
        [F, F, F, F, F, F], // EX -> none
    ]
};

/// What happens to the value block when a lock moves from one mode to
/// another: the kernel's `dlm_lvb_operations`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LvbOp {
    /// The resource's value block is returned to the caller (`1`).
    Read,
    /// The caller's value block is written to the resource (`0`).
    Write,
    /// Nothing happens to the value block (`-1`).
    None,
}

/// `dlm_lvb_operations` with the UN row as index 0 (a new request) and the
/// real modes at 1..=6, indexed `[granted + 1][requested]`.
const LVB_OPS: [[LvbOp; 6]; 7] = {
    use LvbOp::{None as N, Read as R, Write as W};
    [
        [R, R, R, R, R, R], // IV (new request)
        [R, R, R, R, R, R], // NL
        [N, R, R, R, R, R], // CR
        [N, N, R, R, R, R], // CW
        [N, N, N, R, R, R], // PR
        [W, W, W, W, W, R], // PW
        [W, W, W, W, W, W], // EX
    ]
};

impl LockMode {
    /// All six modes, weakest first.
    pub const ALL: [LockMode; 6] = [
        LockMode::Nl,
        LockMode::Cr,
        LockMode::Cw,
        LockMode::Pr,
        LockMode::Pw,
        LockMode::Ex,
    ];

    /// The mode's numeric value as the kernel uses it (`DLM_LOCK_*`).
    pub const fn as_raw(self) -> u8 {
        self as u8
    }

    /// `dlm_modes_compat()`: may a lock granted in `self` coexist with a
    /// request for `requested`? The matrix is symmetric.
    pub const fn compatible(self, requested: LockMode) -> bool {
        COMPAT[self as usize][requested as usize]
    }

    /// Whether a `DLM_LKF_QUECVT` conversion from `self` to `requested` is
    /// allowed (`__quecvt_compat_matrix`).
    pub const fn quecvt_allowed(self, requested: LockMode) -> bool {
        QUECVT[self as usize][requested as usize]
    }

    /// `dlm_lvb_operations[granted + 1][requested + 1]`, with `None` as
    /// the granted mode of a new request.
    pub const fn lvb_op(granted: Option<LockMode>, requested: LockMode) -> LvbOp {
        let row = match granted {
            Some(m) => m as usize + 1,
            None => 0,
        };
        LVB_OPS[row][requested as usize]
    }

    /// Decode a kernel mode where `-1` (`DLM_LOCK_IV`) means "no mode".
    pub fn from_raw_iv(raw: i32) -> Result<Option<LockMode>, Errno> {
        if raw == dlm_sys::DLM_LOCK_IV {
            return Ok(None);
        }
        LockMode::try_from(raw).map(Some)
    }

    /// The short upper-case name the DLM tools print (`NL`, `CR`, …).
    pub const fn name(self) -> &'static str {
        match self {
            LockMode::Nl => "NL",
            LockMode::Cr => "CR",
            LockMode::Cw => "CW",
            LockMode::Pr => "PR",
            LockMode::Pw => "PW",
            LockMode::Ex => "EX",
        }
    }
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl core::str::FromStr for LockMode {
    type Err = Errno;

    /// Parses `NL`, `CR`, `CW`, `PR`, `PW` or `EX`, in any case.
    fn from_str(s: &str) -> Result<Self, Errno> {
        LockMode::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s))
            .ok_or(Errno::EINVAL)
    }
}

impl TryFrom<i32> for LockMode {
    type Error = Errno;

    /// Accepts 0..=5; anything else (including `DLM_LOCK_IV`) is `EINVAL`,
    /// as the kernel's `set_lock_args` answers.
    fn try_from(raw: i32) -> Result<Self, Errno> {
        match raw {
            0 => Ok(LockMode::Nl),
            1 => Ok(LockMode::Cr),
            2 => Ok(LockMode::Cw),
            3 => Ok(LockMode::Pr),
            4 => Ok(LockMode::Pw),
            5 => Ok(LockMode::Ex),
            _ => Err(Errno::EINVAL),
        }
    }
}

impl TryFrom<u32> for LockMode {
    type Error = Errno;

    fn try_from(raw: u32) -> Result<Self, Errno> {
        i32::try_from(raw)
            .map_err(|_| Errno::EINVAL)
            .and_then(LockMode::try_from)
    }
}

impl TryFrom<u8> for LockMode {
    type Error = Errno;

    fn try_from(raw: u8) -> Result<Self, Errno> {
        LockMode::try_from(i32::from(raw))
    }
}

impl From<LockMode> for u8 {
    fn from(m: LockMode) -> u8 {
        m as u8
    }
}

impl From<LockMode> for i32 {
    fn from(m: LockMode) -> i32 {
        m as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_values_match_the_uapi_header() {
        assert_eq!(LockMode::Nl as i32, dlm_sys::DLM_LOCK_NL as i32);
        assert_eq!(LockMode::Cr as i32, dlm_sys::DLM_LOCK_CR as i32);
        assert_eq!(LockMode::Cw as i32, dlm_sys::DLM_LOCK_CW as i32);
        assert_eq!(LockMode::Pr as i32, dlm_sys::DLM_LOCK_PR as i32);
        assert_eq!(LockMode::Pw as i32, dlm_sys::DLM_LOCK_PW as i32);
        assert_eq!(LockMode::Ex as i32, dlm_sys::DLM_LOCK_EX as i32);
    }

    #[test]
    fn try_from_rejects_iv_and_out_of_range() {
        assert_eq!(LockMode::try_from(-1i32), Err(Errno::EINVAL));
        assert_eq!(LockMode::try_from(6i32), Err(Errno::EINVAL));
        assert_eq!(LockMode::try_from(200u8), Err(Errno::EINVAL));
        assert_eq!(LockMode::try_from(u32::MAX), Err(Errno::EINVAL));
        assert_eq!(LockMode::from_raw_iv(-1), Ok(None));
        assert_eq!(LockMode::from_raw_iv(5), Ok(Some(LockMode::Ex)));
        for m in LockMode::ALL {
            assert_eq!(LockMode::try_from(m.as_raw()), Ok(m));
            assert_eq!(m.name().parse::<LockMode>(), Ok(m));
        }
        assert!("xx".parse::<LockMode>().is_err());
    }

    #[test]
    fn compatibility_matrix_is_symmetric_and_matches_vms() {
        use LockMode::*;
        for a in LockMode::ALL {
            for b in LockMode::ALL {
                assert_eq!(a.compatible(b), b.compatible(a), "{a} {b}");
            }
            assert!(Nl.compatible(a));
        }
        assert!(Cr.compatible(Pw));
        assert!(!Cr.compatible(Ex));
        assert!(Cw.compatible(Cw));
        assert!(!Cw.compatible(Pr));
        assert!(Pr.compatible(Pr));
        assert!(!Pr.compatible(Pw));
        assert!(!Pw.compatible(Pw));
        assert!(!Ex.compatible(Cr));
    }

    #[test]
    fn quecvt_matrix() {
        use LockMode::*;
        assert!(Nl.quecvt_allowed(Cr));
        assert!(!Nl.quecvt_allowed(Nl));
        assert!(Pr.quecvt_allowed(Cw));
        assert!(!Pr.quecvt_allowed(Cr));
        assert!(Pw.quecvt_allowed(Ex));
        assert!(!Pw.quecvt_allowed(Pr));
        assert!(LockMode::ALL.iter().all(|m| !Ex.quecvt_allowed(*m)));
    }

    #[test]
    fn lvb_matrix_cells() {
        use LockMode::*;
        assert_eq!(LockMode::lvb_op(None, Ex), LvbOp::Read);
        assert_eq!(LockMode::lvb_op(Some(Cr), Nl), LvbOp::None);
        assert_eq!(LockMode::lvb_op(Some(Pw), Ex), LvbOp::Read);
        assert_eq!(LockMode::lvb_op(Some(Pw), Pw), LvbOp::Write);
        assert_eq!(LockMode::lvb_op(Some(Ex), Ex), LvbOp::Write);
        assert_eq!(LockMode::lvb_op(Some(Pr), Pr), LvbOp::Read);
        assert_eq!(LockMode::lvb_op(Some(Pr), Cw), LvbOp::None);
    }
}
