//! The kernel rules the checks state directly: the argument checks of
//! `set_lock_args` and `set_unlock_args`, the QUECVT matrix, and which
//! conversions write the value block.

use dlm_proto::LockMode;

use crate::gen::flags::{CANCEL, CONVDEADLK, CONVERT, EXPEDITE, FORCEUNLOCK, IVVALBLK};
use crate::gen::flags::{NOQUEUE, QUECVT, VALBLK};

/// `set_lock_args` (with the device's non-NULL ast and lksb).
pub(super) fn lock_args_valid(mode: u8, flags: u32, namelen: usize) -> bool {
    let has = |f: u32| flags & f != 0;
    !(mode > 5
        || (!has(CONVERT) && namelen > 64)
        || has(CANCEL)
        || (has(QUECVT) && !has(CONVERT))
        || (has(CONVDEADLK) && !has(CONVERT))
        || (has(CONVDEADLK) && has(NOQUEUE))
        || (has(EXPEDITE) && (has(CONVERT) || has(QUECVT) || has(NOQUEUE) || mode != 0)))
}

/// `set_unlock_args`.
pub(super) fn unlock_flags_valid(flags: u32) -> bool {
    flags & !(CANCEL | VALBLK | IVVALBLK | FORCEUNLOCK) == 0
        && !(flags & CANCEL != 0 && flags & FORCEUNLOCK != 0)
}

/// `__quecvt_compat_matrix`, written out.
pub(super) fn quecvt_allowed(gr: LockMode, rq: LockMode) -> bool {
    use LockMode::*;
    match gr {
        Nl => rq != Nl,
        Cr => rq >= Cw,
        Cw => rq >= Pr,
        Pr => matches!(rq, Cw | Pw | Ex),
        Pw => rq == Ex,
        Ex => false,
    }
}

/// Whether the conversion from `gr` to `rq` writes the value block
/// (`dlm_lvb_operations` says 0).
pub(super) fn lvb_writes(gr: LockMode, rq: LockMode) -> bool {
    match gr {
        LockMode::Pw => rq != LockMode::Ex,
        LockMode::Ex => true,
        _ => false,
    }
}

pub(super) fn mode(raw: u8) -> Option<LockMode> {
    LockMode::try_from(raw).ok()
}
