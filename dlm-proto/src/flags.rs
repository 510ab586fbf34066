//! Request, lockspace and status flags as bitflags.
//!
//! Every value comes from `dlm-sys`, i.e. from the kernel's UAPI headers.
//! Unknown bits are kept (`from_bits_retain`): the kernel accepts and
//! ignores bits it does not know, and so do we.

use bitflags::bitflags;

bitflags! {
    /// `DLM_LKF_*`: flags of a lock, convert or unlock request.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct LockFlags: u32 {
        /// `DLM_LKF_NOQUEUE`: fail with `EAGAIN` instead of waiting.
        const NOQUEUE = dlm_sys::DLM_LKF_NOQUEUE;
        /// `DLM_LKF_CANCEL`: an unlock that cancels an in-progress request.
        const CANCEL = dlm_sys::DLM_LKF_CANCEL;
        /// `DLM_LKF_CONVERT`: change the mode of an existing lock.
        const CONVERT = dlm_sys::DLM_LKF_CONVERT;
        /// `DLM_LKF_VALBLK`: read or write the lock value block.
        const VALBLK = dlm_sys::DLM_LKF_VALBLK;
        /// `DLM_LKF_QUECVT`: queue the conversion behind earlier ones.
        const QUECVT = dlm_sys::DLM_LKF_QUECVT;
        /// `DLM_LKF_IVVALBLK`: invalidate the resource's value block.
        const IVVALBLK = dlm_sys::DLM_LKF_IVVALBLK;
        /// `DLM_LKF_CONVDEADLK`: resolve a conversion deadlock by demoting
        /// the granted mode to NL (`DEMOTED`).
        const CONVDEADLK = dlm_sys::DLM_LKF_CONVDEADLK;
        /// `DLM_LKF_PERSISTENT`: the lock outlives its owner as an orphan.
        const PERSISTENT = dlm_sys::DLM_LKF_PERSISTENT;
        /// `DLM_LKF_NODLCKWT`: do not fail a deadlocked conversion; wait.
        const NODLCKWT = dlm_sys::DLM_LKF_NODLCKWT;
        /// `DLM_LKF_NODLCKBLK`: accepted and ignored by the kernel.
        const NODLCKBLK = dlm_sys::DLM_LKF_NODLCKBLK;
        /// `DLM_LKF_EXPEDITE`: grant a new NL request at once.
        const EXPEDITE = dlm_sys::DLM_LKF_EXPEDITE;
        /// `DLM_LKF_NOQUEUEBAST`: with `NOQUEUE`, still send blocking ASTs.
        const NOQUEUEBAST = dlm_sys::DLM_LKF_NOQUEUEBAST;
        /// `DLM_LKF_HEADQUE`: queue at the head instead of the tail.
        const HEADQUE = dlm_sys::DLM_LKF_HEADQUE;
        /// `DLM_LKF_NOORDER`: grant without the VMS ordering rules.
        const NOORDER = dlm_sys::DLM_LKF_NOORDER;
        /// `DLM_LKF_ORPHAN`: adopt an orphan of the same name and mode.
        const ORPHAN = dlm_sys::DLM_LKF_ORPHAN;
        /// `DLM_LKF_ALTPR`: grant in PR if the requested mode blocks.
        const ALTPR = dlm_sys::DLM_LKF_ALTPR;
        /// `DLM_LKF_ALTCW`: grant in CW if the requested mode blocks.
        const ALTCW = dlm_sys::DLM_LKF_ALTCW;
        /// `DLM_LKF_FORCEUNLOCK`: unlock whatever queue the lock is on.
        const FORCEUNLOCK = dlm_sys::DLM_LKF_FORCEUNLOCK;
        /// `DLM_LKF_TIMEOUT`: deprecated and ignored since Linux 6.2; lock
        /// timeouts live in userspace (see the client API).
        const TIMEOUT = dlm_sys::DLM_LKF_TIMEOUT;
    }
}

impl LockFlags {
    /// The flags an unlock request may carry (`set_unlock_args`).
    pub const UNLOCK_ALLOWED: LockFlags = LockFlags::CANCEL
        .union(LockFlags::VALBLK)
        .union(LockFlags::IVVALBLK)
        .union(LockFlags::FORCEUNLOCK);
}

bitflags! {
    /// `DLM_LSFL_*`: flags for creating a lockspace.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct LockspaceFlags: u32 {
        /// `DLM_LSFL_TIMEWARN`: deprecated; libdlm 4.2 strips it.
        const TIMEWARN = dlm_sys::DLM_LSFL_TIMEWARN;
        /// `DLM_LSFL_FS`: lockspace used by a filesystem. libdlm's header
        /// defines it (0x4); the UAPI header no longer does.
        const FS = 0x0000_0004;
        /// `DLM_LSFL_NEWEXCL`: fail with `EEXIST` if the lockspace exists.
        const NEWEXCL = dlm_sys::DLM_LSFL_NEWEXCL;
    }
}

bitflags! {
    /// `DLM_SBF_*`: flags in a completion's status block (`sb_flags`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct StatusFlags: u8 {
        /// `DLM_SBF_DEMOTED`: the granted mode was demoted to NL to break a
        /// conversion deadlock (`CONVDEADLK`).
        const DEMOTED = dlm_sys::DLM_SBF_DEMOTED as u8;
        /// `DLM_SBF_VALNOTVALID`: the resource's value block is invalid.
        const VALNOTVALID = dlm_sys::DLM_SBF_VALNOTVALID as u8;
        /// `DLM_SBF_ALTMODE`: granted in the alternate mode (`ALTPR`/`ALTCW`).
        const ALTMODE = dlm_sys::DLM_SBF_ALTMODE as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_match_libdlm_documentation() {
        assert_eq!(LockFlags::NOQUEUE.bits(), 0x1);
        assert_eq!(LockFlags::ORPHAN.bits(), 0x4000);
        assert_eq!(LockFlags::FORCEUNLOCK.bits(), 0x20000);
        assert_eq!(LockFlags::TIMEOUT.bits(), 0x40000);
        assert_eq!(LockspaceFlags::NEWEXCL.bits(), 0x8);
        assert_eq!(StatusFlags::ALTMODE.bits(), 0x4);
        assert_eq!(LockFlags::UNLOCK_ALLOWED.bits(), 0x2 | 0x8 | 0x20 | 0x20000);
    }

    #[test]
    fn unknown_bits_are_retained() {
        let f = LockFlags::from_bits_retain(0x8000_0001);
        assert!(f.contains(LockFlags::NOQUEUE));
        assert_eq!(f.bits(), 0x8000_0001);
    }
}
