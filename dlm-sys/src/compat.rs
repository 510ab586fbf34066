//! The kernel's 32-bit compat layouts of the DLM device records.
//!
//! A 64-bit kernel built with `CONFIG_COMPAT` also accepts requests from
//! 32-bit processes. It recognises them by `is64bit == 0` in the request
//! and converts them (`compat_input()` / `compat_output()` in the kernel's
//! `fs/dlm/user.c`) using private structs that the UAPI headers do not
//! export. These are Rust mirrors of those structs, as the 64-bit kernel
//! lays them out:
//!
//! * every user pointer becomes a `u32`;
//! * `__u64` fields keep the kernel's 8-byte alignment, so the lock
//!   parameters are 88 bytes (not the 84 an i386 compiler would produce).
//!   The mirrors force that alignment with `repr(align(8))`, so the sizes
//!   are the same on every target.
//!
//! The sizes are checked at compile time against named constants, and the
//! crate's `tests/abi_layout.rs` compares them with C replicas compiled
//! by the build script.

use core::ffi::c_char;
use core::mem::{size_of, ManuallyDrop};

use crate::{dlm_lspace_params, dlm_purge_params, DLM_USER_LVB_LEN};

/// Kernel `struct dlm_lock_params32`: the lock parameters of a 32-bit
/// request (88 bytes, `name` at offset 84).
#[repr(C, align(8))]
#[derive(Debug, Default, Clone, Copy)]
pub struct dlm_lock_params32 {
    /// Requested mode, `DLM_LOCK_*`.
    pub mode: u8,
    /// Length of `name` in bytes.
    pub namelen: u8,
    /// Padding.
    pub unused: u16,
    /// `DLM_LKF_*` flags.
    pub flags: u32,
    /// Lock id, for conversions and unlocks.
    pub lkid: u32,
    /// Parent lock id (unused by the kernel).
    pub parent: u32,
    /// Transaction id, used for deadlock detection.
    pub xid: u64,
    /// Lock timeout (ignored by current kernels).
    pub timeout: u64,
    /// User `castparam` pointer, truncated to 32 bits.
    pub castparam: u32,
    /// User `castaddr` pointer, truncated to 32 bits.
    pub castaddr: u32,
    /// User `bastparam` pointer, truncated to 32 bits.
    pub bastparam: u32,
    /// User `bastaddr` pointer, truncated to 32 bits.
    pub bastaddr: u32,
    /// User `struct dlm_lksb *`, truncated to 32 bits.
    pub lksb: u32,
    /// Lock value block sent with conversions and unlocks.
    pub lvb: [c_char; DLM_USER_LVB_LEN as usize],
    /// Start of the resource name (a flexible array member in C).
    pub name: [c_char; 0],
}

/// The anonymous union `i` of kernel `struct dlm_write_request32`.
#[repr(C)]
pub union dlm_write_request32_union {
    /// Parameters of `DLM_USER_LOCK`, `DLM_USER_UNLOCK`, `DLM_USER_DEADLOCK`.
    pub lock: dlm_lock_params32,
    /// Parameters of `DLM_USER_CREATE_LOCKSPACE` and
    /// `DLM_USER_REMOVE_LOCKSPACE` (the same as in 64-bit requests).
    pub lspace: ManuallyDrop<dlm_lspace_params>,
    /// Parameters of `DLM_USER_PURGE` (the same as in 64-bit requests).
    pub purge: dlm_purge_params,
}

impl Default for dlm_write_request32_union {
    /// All zeroes (the `lock` member spans the whole union).
    fn default() -> Self {
        Self {
            lock: dlm_lock_params32::default(),
        }
    }
}

/// Kernel `struct dlm_write_request32`: a request written by a 32-bit
/// process (104 bytes before the name).
#[repr(C)]
#[derive(Default)]
pub struct dlm_write_request32 {
    /// Interface version of the caller, `DLM_DEVICE_VERSION_*`.
    pub version: [u32; 3],
    /// Command, `DLM_USER_*`.
    pub cmd: u8,
    /// 0 for a compat request.
    pub is64bit: u8,
    /// Padding.
    pub unused: [u8; 2],
    /// Command parameters.
    pub i: dlm_write_request32_union,
}

/// Kernel `struct dlm_lksb32`: the lock status block as a 32-bit process
/// sees it in a result (16 bytes).
///
/// The kernel declares `sb_status` as `__u32`; it carries a negative errno,
/// so the mirror uses `i32` (same size and alignment).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct dlm_lksb32 {
    /// Completion status: 0 or a negative errno.
    pub sb_status: i32,
    /// Lock id.
    pub sb_lkid: u32,
    /// `DLM_SBF_*` flags.
    pub sb_flags: u8,
    /// User LVB pointer, truncated to 32 bits (not filled in by the kernel).
    pub sb_lvbptr: u32,
}

/// Kernel `struct dlm_lock_result32`: a record read by a 32-bit process
/// (52 bytes; an LVB, if any, follows at offset 52).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct dlm_lock_result32 {
    /// Interface version of the kernel.
    pub version: [u32; 3],
    /// Length of the record including any LVB.
    pub length: u32,
    /// The callback's `castaddr` or `bastaddr`, 32 bits.
    pub user_astaddr: u32,
    /// The callback's `castparam` or `bastparam`, 32 bits.
    pub user_astparam: u32,
    /// The user's `struct dlm_lksb *`, 32 bits.
    pub user_lksb: u32,
    /// The kernel's copy of the status block.
    pub lksb: dlm_lksb32,
    /// Mode of the blocked request for a blocking AST, else 0.
    pub bast_mode: u8,
    /// Padding.
    pub unused: [u8; 3],
    /// Offset of the LVB in the record, or 0 if none was appended.
    pub lvb_offset: u32,
}

/// `sizeof(struct dlm_write_request32)`: the shortest write a compat
/// kernel accepts (`device_write` rejects anything shorter with `EINVAL`).
pub const WRITE_REQUEST32_SIZE: usize = 104;

/// `sizeof(struct dlm_lock_result32)`: the record header a 32-bit process
/// reads, and where its LVB starts.
pub const LOCK_RESULT32_SIZE: usize = 52;

/// `sizeof(struct dlm_lksb32)`.
pub const LKSB32_SIZE: usize = 16;

/// `sizeof(struct dlm_lock_params32)`; its `name` starts at offset 84.
pub const LOCK_PARAMS32_SIZE: usize = 88;

const _: () = assert!(WRITE_REQUEST32_SIZE == size_of::<dlm_write_request32>());
const _: () = assert!(LOCK_RESULT32_SIZE == size_of::<dlm_lock_result32>());
const _: () = assert!(LKSB32_SIZE == size_of::<dlm_lksb32>());
const _: () = assert!(LOCK_PARAMS32_SIZE == size_of::<dlm_lock_params32>());
const _: () = assert!(core::mem::offset_of!(dlm_lock_params32, name) == 84);
