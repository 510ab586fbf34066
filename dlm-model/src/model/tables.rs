//! The kernel's constants and tables (`fs/dlm/lock.c`), the mode
//! matrices indexed `[mode + 1]`, and the argument checks of
//! `set_lock_args` and `set_unlock_args`, as the model takes them.

use dlm_proto::status::{ECANCEL, EUNLOCK};
use dlm_proto::StatusFlags;

use crate::gen::flags::{CANCEL, CONVDEADLK, CONVERT, EXPEDITE, FORCEUNLOCK, IVVALBLK};
use crate::gen::flags::{NOQUEUE, QUECVT, VALBLK};

pub(super) const IV: i8 = -1;
pub(super) const NL: i8 = 0;
pub(super) const CW: i8 = 2;
pub(super) const PR: i8 = 3;
pub(super) const PW: i8 = 4;
pub(super) const EX: i8 = 5;

/// `__dlm_compat_matrix`: UN NL CR CW PR PW EX PD.
pub(super) const COMPAT: [[u8; 8]; 8] = [
    [1, 1, 1, 1, 1, 1, 1, 0],
    [1, 1, 1, 1, 1, 1, 1, 0],
    [1, 1, 1, 1, 1, 1, 0, 0],
    [1, 1, 1, 1, 0, 0, 0, 0],
    [1, 1, 1, 0, 1, 0, 0, 0],
    [1, 1, 1, 0, 0, 0, 0, 0],
    [1, 1, 0, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, 0, 0],
];

/// `dlm_lvb_operations`: 1 read, 0 write, -1 nothing.
pub(super) const LVB_OPS: [[i8; 8]; 8] = [
    [-1, 1, 1, 1, 1, 1, 1, -1],
    [-1, 1, 1, 1, 1, 1, 1, 0],
    [-1, -1, 1, 1, 1, 1, 1, 0],
    [-1, -1, -1, 1, 1, 1, 1, 0],
    [-1, -1, -1, -1, 1, 1, 1, 0],
    [-1, 0, 0, 0, 0, 0, 1, 0],
    [-1, 0, 0, 0, 0, 0, 0, 0],
    [-1, 0, 0, 0, 0, 0, 0, 0],
];

/// `__quecvt_compat_matrix`.
pub(super) const QUECVT_OK: [[u8; 8]; 8] = [
    [0, 0, 0, 0, 0, 0, 0, 0],
    [0, 0, 1, 1, 1, 1, 1, 0],
    [0, 0, 0, 1, 1, 1, 1, 0],
    [0, 0, 0, 0, 1, 1, 1, 0],
    [0, 0, 0, 1, 0, 1, 1, 0],
    [0, 0, 0, 0, 0, 0, 1, 0],
    [0, 0, 0, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, 0, 0],
];

pub(super) fn ix(mode: i8) -> usize {
    (mode + 1) as usize
}

pub(super) fn compat(a: i8, b: i8) -> bool {
    COMPAT[ix(a)][ix(b)] == 1
}

pub(super) fn lvb_op(gr: i8, rq: i8) -> i8 {
    LVB_OPS[ix(gr)][ix(rq)]
}

pub(super) const SBF_DEMOTED: u8 = StatusFlags::DEMOTED.bits();
pub(super) const SBF_VALNOTVALID: u8 = StatusFlags::VALNOTVALID.bits();
pub(super) const SBF_ALTMODE: u8 = StatusFlags::ALTMODE.bits();

pub(super) const E_AGAIN: i32 = -libc::EAGAIN;
pub(super) const E_DEADLK: i32 = -libc::EDEADLK;
pub(super) const E_INPROGRESS: i32 = -libc::EINPROGRESS;
pub(super) const E_UNLOCK: i32 = -EUNLOCK;
pub(super) const E_CANCEL: i32 = -ECANCEL;

/// `DLM_CALLBACKS_SIZE`.
pub(super) const CALLBACKS: usize = 6;
/// This node's id (the engine's default).
pub(super) const OUR_NODE: u32 = 1;

pub(super) fn is_endoflife(mode: i8, status: i32) -> bool {
    match status {
        E_UNLOCK => true,
        E_CANCEL | E_DEADLK | E_AGAIN => mode == IV,
        s if s == -libc::ETIMEDOUT => mode == IV,
        _ => false,
    }
}

/// `set_lock_args` as reached from the device (ast and lksb exist).
pub(super) fn set_lock_args_ok(mode: u8, flags: u32, namelen: usize) -> bool {
    if mode > 5 {
        return false;
    }
    if flags & CONVERT == 0 && namelen > 64 {
        return false;
    }
    if flags & CANCEL != 0 {
        return false;
    }
    if flags & QUECVT != 0 && flags & CONVERT == 0 {
        return false;
    }
    if flags & CONVDEADLK != 0 && flags & CONVERT == 0 {
        return false;
    }
    if flags & CONVDEADLK != 0 && flags & NOQUEUE != 0 {
        return false;
    }
    if flags & EXPEDITE != 0 && flags & CONVERT != 0 {
        return false;
    }
    if flags & EXPEDITE != 0 && flags & QUECVT != 0 {
        return false;
    }
    if flags & EXPEDITE != 0 && flags & NOQUEUE != 0 {
        return false;
    }
    if flags & EXPEDITE != 0 && mode != 0 {
        return false;
    }
    true
}

pub(super) fn set_unlock_args_ok(flags: u32) -> bool {
    if flags & !(CANCEL | VALBLK | IVVALBLK | FORCEUNLOCK) != 0 {
        return false;
    }
    !(flags & CANCEL != 0 && flags & FORCEUNLOCK != 0)
}
