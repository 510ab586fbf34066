//! dlm-rs's extension to libdlm, `capi/include/dlm_rs.h`: recovery
//! callbacks, the kernel's `struct dlm_lockspace_ops`, for C programs.
//!
//! [`new_lockspace_ops`] is `dlm_new_lockspace_ops()`: the kernel's
//! `dlm_new_lockspace()` arguments adapted to userspace, over
//! [`dlm::Dlm::create_lockspace_with`] with a [`dlm::Recovery`] that calls
//! the C callbacks (a private `COps`). The symbol is exported, under the
//! version node `DLM_RS_1` (`capi/dlm_rs.map`), by
//! [`export_dlm_rs!`](crate::export_dlm_rs), which the cdylibs invoke
//! beside [`export_libdlm!`](crate::export_libdlm).
#![allow(unsafe_code)]

use std::os::raw::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use dlm::{LockspaceFlags, LockspaceName, LockspaceOptions, Member, Recovery};

use crate::ffi;
use crate::registry;
use crate::{DLM_LOCKSPACE_LEN, DLM_LVB_LEN};

/// `struct dlm_slot`: a member's node id and slot.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DlmSlot {
    /// The node id (1 and up).
    pub nodeid: c_int,
    /// The slot (1 and up).
    pub slot: c_int,
}

/// `void (*recover_prep)(void *ops_arg)`.
pub type RecoverPrepFn = Option<unsafe extern "C" fn(*mut c_void)>;
/// `void (*recover_slot)(void *ops_arg, struct dlm_slot *slot)`.
pub type RecoverSlotFn = Option<unsafe extern "C" fn(*mut c_void, *mut DlmSlot)>;
/// `void (*recover_done)(void *ops_arg, struct dlm_slot *slots, int
/// num_slots, int our_slot, uint32_t generation)`.
pub type RecoverDoneFn = Option<unsafe extern "C" fn(*mut c_void, *mut DlmSlot, c_int, c_int, u32)>;

/// `struct dlm_lockspace_ops`: the kernel's members, in its order.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DlmLockspaceOps {
    /// Recovery begins.
    pub recover_prep: RecoverPrepFn,
    /// A member failed.
    pub recover_slot: RecoverSlotFn,
    /// Recovery is over.
    pub recover_done: RecoverDoneFn,
}

/// The C callbacks as a [`dlm::Recovery`]: a copy of the caller's
/// `struct dlm_lockspace_ops` and its `ops_arg` (an address only).
#[derive(Debug)]
struct COps {
    ops: DlmLockspaceOps,
    arg: usize,
}

fn slot_of(m: Member) -> DlmSlot {
    DlmSlot {
        nodeid: c_int::try_from(m.nodeid).unwrap_or(c_int::MAX),
        slot: c_int::try_from(m.slot).unwrap_or(c_int::MAX),
    }
}

impl Recovery for COps {
    fn recover_prep(&self) {
        if let Some(f) = self.ops.recover_prep {
            // SAFETY: the caller gave this callback and argument for this
            // lockspace, to be called as dlm_rs.h says.
            unsafe { f(self.arg as *mut c_void) }
        }
    }

    fn recover_slot(&self, failed: Member) {
        if let Some(f) = self.ops.recover_slot {
            let mut s = slot_of(failed);
            // SAFETY: as above; `s` lives for the call.
            unsafe { f(self.arg as *mut c_void, &mut s) }
        }
    }

    fn recover_done(&self, members: &[Member], our_slot: u32, generation: u32) {
        if let Some(f) = self.ops.recover_done {
            let mut slots: Vec<DlmSlot> = members.iter().copied().map(slot_of).collect();
            let n = c_int::try_from(slots.len()).unwrap_or(c_int::MAX);
            let ours = c_int::try_from(our_slot).unwrap_or(c_int::MAX);
            // SAFETY: as above; `slots` holds `n` entries and lives for
            // the call (dlm_rs.h: valid only during it).
            unsafe {
                f(
                    self.arg as *mut c_void,
                    slots.as_mut_ptr(),
                    n,
                    ours,
                    generation,
                )
            }
        }
    }
}

/// `dlm_new_lockspace_ops()` (dlm_rs.h): create or join lockspace `name`
/// with recovery callbacks; its handle, or NULL with `errno`.
///
/// # Safety
/// `name` and `cluster` are NULL or NUL-terminated; `ops` NULL or a valid
/// `struct dlm_lockspace_ops` whose callbacks may be called, with
/// `ops_arg`, until the handle is closed; `ops_result` NULL or valid for
/// a write.
#[allow(clippy::too_many_arguments)]
pub unsafe fn new_lockspace_ops(
    name: *const c_char,
    cluster: *const c_char,
    flags: u32,
    lvblen: c_int,
    mode: u32,
    ops: *const DlmLockspaceOps,
    ops_arg: *mut c_void,
    ops_result: *mut c_int,
) -> *mut c_void {
    // The kernel's cluster name check cannot be made from userspace: the
    // device interface carries no cluster name.
    let _ = cluster;
    let r = catch_unwind(AssertUnwindSafe(|| -> Result<*mut c_void, c_int> {
        if name.is_null() || ops.is_null() || ops_result.is_null() {
            return Err(libc::EINVAL);
        }
        if lvblen != 0 && lvblen as usize != DLM_LVB_LEN {
            return Err(libc::EINVAL);
        }
        // SAFETY: non-NULL and NUL-terminated by the caller's contract.
        let bytes = unsafe { ffi::c_str(name) };
        if bytes.len() > DLM_LOCKSPACE_LEN {
            return Err(libc::EINVAL);
        }
        let name = LockspaceName::new(bytes).map_err(|e| e.raw())?;
        // SAFETY: non-NULL, a valid struct by the caller's contract.
        let ops = unsafe { ops.read() };
        let cops = Arc::new(COps {
            ops,
            arg: ops_arg as usize,
        });
        let flags = LockspaceFlags::from_bits_retain(flags) - LockspaceFlags::TIMEWARN;
        let options = LockspaceOptions::new()
            .flags(flags)
            .mode(mode)
            .recovery(cops);
        let ls = registry::dlm()?
            .create_lockspace_with(&name, options)
            .map_err(|e| e.errno().raw())?;
        let status = match ls.recovery_status() {
            Ok(()) => 0,
            Err(e) => -e.raw(),
        };
        let key = registry::add(ls)?;
        // SAFETY: non-NULL, valid for a write by the caller's contract.
        unsafe { ffi::put(ops_result, status) };
        Ok(key as *mut c_void)
    }));
    match r {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            ffi::set_errno(e);
            std::ptr::null_mut()
        }
        Err(_) => {
            log::error!("libdlm: a panic was caught at the C boundary");
            ffi::set_errno(libc::EINVAL);
            std::ptr::null_mut()
        }
    }
}

/// The C-ABI body of `dlm_new_lockspace_ops`, for
/// [`export_dlm_rs!`](crate::export_dlm_rs) to export under its versioned
/// name.
///
/// # Safety
/// As [`new_lockspace_ops`].
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn new_lockspace_ops_c(
    name: *const c_char,
    cluster: *const c_char,
    flags: u32,
    lvblen: c_int,
    mode: libc::mode_t,
    ops: *const DlmLockspaceOps,
    ops_arg: *mut c_void,
    ops_result: *mut c_int,
) -> *mut c_void {
    // SAFETY: the caller's contract, passed on.
    unsafe { new_lockspace_ops(name, cluster, flags, lvblen, mode, ops, ops_arg, ops_result) }
}

/// Export dlm_rs.h's functions from a cdylib: `dlm_new_lockspace_ops`,
/// defined in assembly as a jump to [`new_lockspace_ops_c`], so that the
/// symbol is not in the list of `#[no_mangle]` exports rustc hands the
/// linker (unversioned) and the library's export map can put it under
/// its own version node, `DLM_RS_1`. On targets without that assembly it
/// is an ordinary (unversioned) `#[no_mangle]` export.
#[macro_export]
macro_rules! export_dlm_rs {
    () => {
        #[cfg(target_arch = "x86_64")]
        ::std::arch::global_asm!(
            ".globl dlm_new_lockspace_ops",
            ".type dlm_new_lockspace_ops,@function",
            "dlm_new_lockspace_ops:",
            "jmp {f}@PLT",
            ".size dlm_new_lockspace_ops, .-dlm_new_lockspace_ops",
            f = sym $crate::recovery::new_lockspace_ops_c,
        );
        #[cfg(target_arch = "aarch64")]
        ::std::arch::global_asm!(
            ".globl dlm_new_lockspace_ops",
            ".type dlm_new_lockspace_ops,%function",
            "dlm_new_lockspace_ops:",
            "b {f}",
            ".size dlm_new_lockspace_ops, .-dlm_new_lockspace_ops",
            f = sym $crate::recovery::new_lockspace_ops_c,
        );
        /// `dlm_new_lockspace_ops()` (dlm_rs.h).
        ///
        /// # Safety
        /// As dlm_rs.h says.
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        #[allow(unsafe_code, clippy::too_many_arguments)]
        #[no_mangle]
        pub unsafe extern "C" fn dlm_new_lockspace_ops(
            name: *const ::std::os::raw::c_char,
            cluster: *const ::std::os::raw::c_char,
            flags: u32,
            lvblen: ::std::os::raw::c_int,
            mode: u32,
            ops: *const $crate::recovery::DlmLockspaceOps,
            ops_arg: *mut ::std::os::raw::c_void,
            ops_result: *mut ::std::os::raw::c_int,
        ) -> *mut ::std::os::raw::c_void {
            $crate::recovery::new_lockspace_ops(
                name, cluster, flags, lvblen, mode, ops, ops_arg, ops_result,
            )
        }
    };
}
