//! libdlm's C ABI, over the `dlm` crate's client API.
//!
//! This crate holds everything of `libdlm.so.3` and `libdlm_lt.so.3` but
//! the two shared objects themselves: `struct dlm_lksb` ([`DlmLksb`]), the
//! AST callback type ([`AstFn`]), the implementation of every exported
//! function ([`abi`]), and [`export_libdlm!`], which the thin cdylib crates
//! `capi/libdlm` and `capi/libdlm_lt` invoke to define the exported
//! symbols (26 threaded, 21 lite). All of the C ABI's `unsafe` is written
//! here, in [`abi`], the modules `ffi` and `direct` and the macro, each block with its `SAFETY`
//! comment.
//!
//! # How a C call becomes a Rust one
//!
//! A `dlm_lshandle_t` is a key into a table of open handles (never
//! dereferenced, so a stale or forged handle is `EINVAL`, not a crash);
//! each handle owns a [`dlm::Lockspace`]. What a lock call does next
//! depends on the backend.
//!
//! **On the kernel** the handle does what libdlm does with the lockspace
//! device, and nothing more (module `direct`): a request is one `write()`
//! whose `castaddr`, `castparam`, `bastaddr`, `bastparam` and `lksb` are
//! the caller's, which the kernel keeps with the lock and echoes in every
//! callback record; a record fills the lksb it names and calls the routine
//! it names. There is no table of locks and no allocation per lock. One
//! thread reads the device at a time: a waiting call (`*_wait`) becomes the
//! reader, writes, and reads until its own completion came (known by its
//! lksb), running the ASTs of other records as a dispatch would (lite, or
//! threaded with no AST thread) or handing them to the AST thread. The AST
//! thread polls the device only while asynchronous operations are in
//! flight or a lock has a blocking AST routine, so a threaded `_wait`
//! costs no thread hand-off, where libdlm's costs one per operation.
//!
//! **On the fallback** a lock request is [`dlm::Lockspace::request`] with
//! the lock's *sink* (module `sink`): the C AST routine, its argument and
//! the `struct dlm_lksb *`, which later conversions and unlocks of the
//! lock replace as the kernel replaces them, and which lock replay keeps
//! across a daemon restart. A completion is queued on its handle; once the
//! dispatch that read it has returned, it fills the lksb (status, lock id,
//! flags, value block) and calls the AST (so an AST may wait for its own
//! lock's next completion). The waiting calls put a waiter in the sink
//! instead, and wait for it: the lite library reads and dispatches the
//! lockspace on the calling thread, as libdlm_lt does; the threaded one
//! sleeps while the AST thread delivers, and reads inline when no AST
//! thread runs (libdlm would block forever) or when it is called from the
//! AST thread itself.
//!
//! dlm-rs's own extension, `dlm_rs.h` (recovery callbacks, outside
//! libdlm's ABI), is in [`recovery`], exported by
//! [`export_dlm_rs!`](crate::export_dlm_rs).
//!
//! What depends on the client's internals (the one pollable fd of a
//! handle, the AST thread's loop) is in one module, `seam`.
#![deny(unsafe_code)]

pub mod abi;
mod direct;
mod ffi;
pub mod recovery;
mod registry;
mod resource;
mod seam;
mod sink;

use std::os::raw::{c_char, c_int, c_void};

/// `struct dlm_lksb`: the lock status block the caller owns.
///
/// Layout as libdlm 4.2's (24 bytes on LP64): `sb_status` (positive
/// status: 0, `EAGAIN`, `EDEADLK`, `ETIMEDOUT`, [`ECANCEL`], [`EUNLOCK`],
/// or [`EINPROG`] while the operation is in progress), `sb_lkid`,
/// `sb_flags` (`DLM_SBF_*`), and `sb_lvbptr`, the caller's 32-byte value
/// block.
#[repr(C)]
#[derive(Debug)]
#[allow(non_camel_case_types)]
pub struct DlmLksb {
    /// The operation's status.
    pub sb_status: c_int,
    /// The lock id.
    pub sb_lkid: u32,
    /// `DLM_SBF_DEMOTED`, `DLM_SBF_VALNOTVALID`, `DLM_SBF_ALTMODE`.
    pub sb_flags: c_char,
    /// The value block (`DLM_LVB_LEN` bytes), or NULL.
    pub sb_lvbptr: *mut c_char,
}

/// An AST routine: `void (*)(void *astarg)`.
pub type AstFn = Option<unsafe extern "C" fn(*mut c_void)>;

/// `ECANCEL`: the request or conversion was cancelled.
pub const ECANCEL: c_int = 0x10001;
/// `EUNLOCK`: the lock was unlocked.
pub const EUNLOCK: c_int = 0x10002;
/// `EINPROG`: the operation is in progress.
pub const EINPROG: c_int = 0x10003;
/// `LKF_WAIT`: userspace only, the waiting calls' flag; never sent.
pub const LKF_WAIT: u32 = 0x8000_0000;
/// The value block's length.
pub const DLM_LVB_LEN: usize = 32;
/// The longest resource name.
pub const DLM_RESNAME_MAXLEN: usize = 64;
/// The longest lockspace name.
pub const DLM_LOCKSPACE_LEN: usize = 64;

/// Which library a call is made through: the waiting calls differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `libdlm_lt.so.3`: a waiting call reads its completion on the
    /// calling thread and returns -1 with `errno` = status on failure.
    Lite,
    /// `libdlm.so.3`: the AST thread delivers; a waiting call returns the
    /// write's result and leaves the status in the lksb.
    Threaded,
}

/// Define the exported functions of one of the two libraries:
/// `export_libdlm!(lite)` (21 symbols) or `export_libdlm!(threaded)`
/// (those and the 5 of the threaded library). Each is an `extern "C"`
/// function with libdlm.h's signature that calls into [`abi`].
#[macro_export]
macro_rules! export_libdlm {
    (lite) => {
        $crate::export_libdlm!(@common $crate::Flavor::Lite);
    };
    (threaded) => {
        $crate::export_libdlm!(@common $crate::Flavor::Threaded);
        $crate::export_libdlm!(@threaded);
    };
    (@common $flavor:expr) => {
        use ::std::os::raw::{c_int, c_uint, c_void, c_char};
        use $crate::{AstFn, DlmLksb};

        /// `dlm_kernel_version()`.
        ///
        /// # Safety
        /// Each pointer is NULL or valid for a write of a `uint32_t`.
        #[allow(unsafe_code)]
        #[no_mangle]
        pub unsafe extern "C" fn dlm_kernel_version(maj: *mut u32, min: *mut u32, patch: *mut u32) -> c_int {
            $crate::abi::kernel_version(maj, min, patch)
        }
        /// `dlm_library_version()`.
        ///
        /// # Safety
        /// Each pointer is NULL or valid for a write of a `uint32_t`.
        #[allow(unsafe_code)]
        #[no_mangle]
        pub unsafe extern "C" fn dlm_library_version(maj: *mut u32, min: *mut u32, patch: *mut u32) {
            $crate::abi::library_version(maj, min, patch)
        }
        /// `dlm_create_lockspace()`.
        ///
        /// # Safety
        /// `name` is NULL or a NUL-terminated string.
        #[allow(unsafe_code)]
        #[no_mangle]
        pub unsafe extern "C" fn dlm_create_lockspace(name: *const c_char, mode: u32) -> *mut c_void {
            $crate::abi::new_lockspace($flavor, name, mode as u32, 0, false)
        }
        /// `dlm_new_lockspace()`.
        ///
        /// # Safety
        /// `name` is NULL or a NUL-terminated string.
        #[allow(unsafe_code)]
        #[no_mangle]
        pub unsafe extern "C" fn dlm_new_lockspace(name: *const c_char, mode: u32, flags: u32) -> *mut c_void {
            $crate::abi::new_lockspace($flavor, name, mode as u32, flags, true)
        }
        /// `dlm_open_lockspace()`.
        ///
        /// # Safety
        /// `name` is NULL or a NUL-terminated string.
        #[allow(unsafe_code)]
        #[no_mangle]
        pub unsafe extern "C" fn dlm_open_lockspace(name: *const c_char) -> *mut c_void {
            $crate::abi::open_lockspace($flavor, name)
        }
        /// `dlm_close_lockspace()`.
        #[allow(unsafe_code)]
        #[no_mangle]
        pub extern "C" fn dlm_close_lockspace(ls: *mut c_void) -> c_int {
            $crate::abi::close_lockspace(ls)
        }
        /// `dlm_release_lockspace()`.
        ///
        /// # Safety
        /// `name` is NULL or a NUL-terminated string.
        #[allow(unsafe_code)]
        #[no_mangle]
        pub unsafe extern "C" fn dlm_release_lockspace(name: *const c_char, ls: *mut c_void, force: c_int) -> c_int {
            $crate::abi::release_lockspace(name, ls, force)
        }
        /// `dlm_ls_get_fd()`.
        #[allow(unsafe_code)]
        #[no_mangle]
        pub extern "C" fn dlm_ls_get_fd(ls: *mut c_void) -> c_int {
            $crate::abi::ls_get_fd(ls)
        }
        /// `dlm_get_fd()`.
        #[allow(unsafe_code)]
        #[no_mangle]
        pub extern "C" fn dlm_get_fd() -> c_int {
            $crate::abi::get_fd($flavor)
        }
        /// `dlm_dispatch()`.
        #[allow(unsafe_code)]
        #[no_mangle]
        pub extern "C" fn dlm_dispatch(fd: c_int) -> c_int {
            $crate::abi::dispatch(fd)
        }
        /// `dlm_ls_lock()`.
        ///
        /// # Safety
        /// As libdlm.h says: `lksb` (and its value block) stays valid until
        /// the lock's last AST; `name` holds `namelen` bytes.
        #[allow(unsafe_code, clippy::too_many_arguments)]
        #[no_mangle]
        pub unsafe extern "C" fn dlm_ls_lock(
            ls: *mut c_void, mode: u32, lksb: *mut DlmLksb, flags: u32, name: *const c_void,
            namelen: c_uint, parent: u32, astaddr: AstFn, astarg: *mut c_void, bastaddr: AstFn,
            range: *mut c_void,
        ) -> c_int {
            let _ = parent;
            $crate::abi::ls_lock($flavor, ls, mode, lksb, flags, name, namelen, astaddr, astarg,
                bastaddr, range, ::std::ptr::null_mut(), ::std::ptr::null_mut(), false)
        }
        /// `dlm_ls_lockx()`.
        ///
        /// # Safety
        /// As [`dlm_ls_lock`]; `xid` and `timeout` are NULL or valid.
        #[allow(unsafe_code, clippy::too_many_arguments)]
        #[no_mangle]
        pub unsafe extern "C" fn dlm_ls_lockx(
            ls: *mut c_void, mode: u32, lksb: *mut DlmLksb, flags: u32, name: *const c_void,
            namelen: c_uint, parent: u32, astaddr: AstFn, astarg: *mut c_void, bastaddr: AstFn,
            xid: *mut u64, timeout: *mut u64,
        ) -> c_int {
            let _ = parent;
            $crate::abi::ls_lock($flavor, ls, mode, lksb, flags, name, namelen, astaddr, astarg,
                bastaddr, ::std::ptr::null_mut(), xid, timeout, false)
        }
        /// `dlm_ls_lock_wait()`.
        ///
        /// # Safety
        /// As [`dlm_ls_lock`].
        #[allow(unsafe_code, clippy::too_many_arguments)]
        #[no_mangle]
        pub unsafe extern "C" fn dlm_ls_lock_wait(
            ls: *mut c_void, mode: u32, lksb: *mut DlmLksb, flags: u32, name: *const c_void,
            namelen: c_uint, parent: u32, bastarg: *mut c_void, bastaddr: AstFn,
            range: *mut c_void,
        ) -> c_int {
            let _ = parent;
            $crate::abi::ls_lock_wait($flavor, ls, mode, lksb, flags, name, namelen, bastarg,
                bastaddr, range)
        }
        /// `dlm_ls_unlock()`.
        ///
        /// # Safety
        /// `lksb` stays valid until the unlock's AST.
        #[allow(unsafe_code)]
        #[no_mangle]
        pub unsafe extern "C" fn dlm_ls_unlock(ls: *mut c_void, lkid: u32, flags: u32, lksb: *mut DlmLksb, astarg: *mut c_void) -> c_int {
            $crate::abi::ls_unlock($flavor, ls, lkid, flags, lksb, astarg, false)
        }
        /// `dlm_ls_unlock_wait()`.
        ///
        /// # Safety
        /// `lksb` is valid.
        #[allow(unsafe_code)]
        #[no_mangle]
        pub unsafe extern "C" fn dlm_ls_unlock_wait(ls: *mut c_void, lkid: u32, flags: u32, lksb: *mut DlmLksb) -> c_int {
            $crate::abi::ls_unlock_wait($flavor, ls, lkid, flags, lksb)
        }
        /// `dlm_ls_deadlock_cancel()`.
        #[allow(unsafe_code)]
        #[no_mangle]
        pub extern "C" fn dlm_ls_deadlock_cancel(ls: *mut c_void, lkid: u32, flags: u32) -> c_int {
            $crate::abi::ls_deadlock_cancel(ls, lkid, flags)
        }
        /// `dlm_ls_purge()`.
        #[allow(unsafe_code)]
        #[no_mangle]
        pub extern "C" fn dlm_ls_purge(ls: *mut c_void, nodeid: c_int, pid: c_int) -> c_int {
            $crate::abi::ls_purge(ls, nodeid, pid)
        }
        /// `dlm_lock()`: [`dlm_ls_lock`] on the default lockspace.
        ///
        /// # Safety
        /// As [`dlm_ls_lock`].
        #[allow(unsafe_code, clippy::too_many_arguments)]
        #[no_mangle]
        pub unsafe extern "C" fn dlm_lock(
            mode: u32, lksb: *mut DlmLksb, flags: u32, name: *const c_void, namelen: c_uint,
            parent: u32, astaddr: AstFn, astarg: *mut c_void, bastaddr: AstFn, range: *mut c_void,
        ) -> c_int {
            let _ = parent;
            $crate::abi::lock_default($flavor, mode, lksb, flags, name, namelen, astaddr, astarg,
                bastaddr, range, false)
        }
        /// `dlm_lock_wait()`: [`dlm_ls_lock_wait`] on the default lockspace.
        ///
        /// # Safety
        /// As [`dlm_ls_lock`].
        #[allow(unsafe_code, clippy::too_many_arguments)]
        #[no_mangle]
        pub unsafe extern "C" fn dlm_lock_wait(
            mode: u32, lksb: *mut DlmLksb, flags: u32, name: *const c_void, namelen: c_uint,
            parent: u32, bastarg: *mut c_void, bastaddr: AstFn, range: *mut c_void,
        ) -> c_int {
            let _ = parent;
            $crate::abi::lock_default($flavor, mode, lksb, flags, name, namelen, None, bastarg,
                bastaddr, range, true)
        }
        /// `dlm_unlock()`: [`dlm_ls_unlock`] on the default lockspace.
        ///
        /// # Safety
        /// As [`dlm_ls_unlock`].
        #[allow(unsafe_code)]
        #[no_mangle]
        pub unsafe extern "C" fn dlm_unlock(lkid: u32, flags: u32, lksb: *mut DlmLksb, astarg: *mut c_void) -> c_int {
            $crate::abi::unlock_default($flavor, lkid, flags, lksb, astarg, false)
        }
        /// `dlm_unlock_wait()`: [`dlm_ls_unlock_wait`] on the default lockspace.
        ///
        /// # Safety
        /// As [`dlm_ls_unlock`].
        #[allow(unsafe_code)]
        #[no_mangle]
        pub unsafe extern "C" fn dlm_unlock_wait(lkid: u32, flags: u32, lksb: *mut DlmLksb) -> c_int {
            $crate::abi::unlock_default($flavor, lkid, flags, lksb, ::std::ptr::null_mut(), true)
        }
    };
    (@threaded) => {
        /// `dlm_pthread_init()`: the AST thread of the default lockspace.
        #[allow(unsafe_code)]
        #[no_mangle]
        pub extern "C" fn dlm_pthread_init() -> c_int {
            $crate::abi::pthread_init()
        }
        /// `dlm_ls_pthread_init()`: the AST thread of a lockspace.
        #[allow(unsafe_code)]
        #[no_mangle]
        pub extern "C" fn dlm_ls_pthread_init(ls: *mut c_void) -> c_int {
            $crate::abi::ls_pthread_init(ls)
        }
        /// `dlm_pthread_cleanup()`.
        #[allow(unsafe_code)]
        #[no_mangle]
        pub extern "C" fn dlm_pthread_cleanup() -> c_int {
            $crate::abi::pthread_cleanup()
        }
        /// `lock_resource()`.
        ///
        /// # Safety
        /// `resource` is NULL or a NUL-terminated string; `lockid` NULL or
        /// valid.
        #[allow(unsafe_code)]
        #[no_mangle]
        pub unsafe extern "C" fn lock_resource(resource: *const c_char, mode: c_int, flags: c_int, lockid: *mut c_int) -> c_int {
            $crate::abi::lock_resource(resource, mode, flags, lockid)
        }
        /// `unlock_resource()`.
        #[allow(unsafe_code)]
        #[no_mangle]
        pub extern "C" fn unlock_resource(lockid: c_int) -> c_int {
            $crate::abi::unlock_resource(lockid)
        }
    };
}
