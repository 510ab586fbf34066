//! The `DLM_LKF_*` bits as the raw numbers the engine and the model take
//! (`u32`), from dlm-proto's [`LockFlags`]. Only the ones a test or the
//! model names are public; the generator also uses a few more.

use dlm_proto::LockFlags;

/// `DLM_LKF_NOQUEUE`.
pub const NOQUEUE: u32 = LockFlags::NOQUEUE.bits();
/// `DLM_LKF_CANCEL`.
pub const CANCEL: u32 = LockFlags::CANCEL.bits();
/// `DLM_LKF_CONVERT`.
pub const CONVERT: u32 = LockFlags::CONVERT.bits();
/// `DLM_LKF_VALBLK`.
pub const VALBLK: u32 = LockFlags::VALBLK.bits();
/// `DLM_LKF_QUECVT`.
pub const QUECVT: u32 = LockFlags::QUECVT.bits();
/// `DLM_LKF_IVVALBLK`.
pub const IVVALBLK: u32 = LockFlags::IVVALBLK.bits();
/// `DLM_LKF_CONVDEADLK`.
pub const CONVDEADLK: u32 = LockFlags::CONVDEADLK.bits();
/// `DLM_LKF_PERSISTENT`.
pub const PERSISTENT: u32 = LockFlags::PERSISTENT.bits();
/// `DLM_LKF_NODLCKWT`.
pub const NODLCKWT: u32 = LockFlags::NODLCKWT.bits();
/// `DLM_LKF_NODLCKBLK`.
pub(crate) const NODLCKBLK: u32 = LockFlags::NODLCKBLK.bits();
/// `DLM_LKF_EXPEDITE`.
pub const EXPEDITE: u32 = LockFlags::EXPEDITE.bits();
/// `DLM_LKF_NOQUEUEBAST`.
pub const NOQUEUEBAST: u32 = LockFlags::NOQUEUEBAST.bits();
/// `DLM_LKF_HEADQUE`.
pub const HEADQUE: u32 = LockFlags::HEADQUE.bits();
/// `DLM_LKF_NOORDER`.
pub const NOORDER: u32 = LockFlags::NOORDER.bits();
/// `DLM_LKF_ORPHAN`.
pub const ORPHAN: u32 = LockFlags::ORPHAN.bits();
/// `DLM_LKF_ALTPR`.
pub const ALTPR: u32 = LockFlags::ALTPR.bits();
/// `DLM_LKF_ALTCW`.
pub const ALTCW: u32 = LockFlags::ALTCW.bits();
/// `DLM_LKF_FORCEUNLOCK`.
pub const FORCEUNLOCK: u32 = LockFlags::FORCEUNLOCK.bits();
/// `DLM_LKF_TIMEOUT`.
pub(crate) const TIMEOUT: u32 = LockFlags::TIMEOUT.bits();
/// A bit the kernel does not know; kept and ignored.
pub(crate) const UNKNOWN_BIT: u32 = 0x8000_0000;
