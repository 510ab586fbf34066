//! Completion statuses: the outcome of a lock operation.

use core::fmt;

use crate::error::Errno;
use crate::flags::StatusFlags;
use crate::lvb::ValueBlock;

/// `DLM_ECANCEL`: the status of a cancelled operation.
pub const ECANCEL: i32 = dlm_sys::DLM_ECANCEL as i32;
/// `DLM_EUNLOCK`: the status of a completed unlock.
pub const EUNLOCK: i32 = dlm_sys::DLM_EUNLOCK as i32;
/// [`EUNLOCK`] as the kernel reports it (negated).
const KERNEL_EUNLOCK: i32 = -EUNLOCK;
/// libdlm's `EINPROG`: "operation in progress", set before a request is
/// sent; the kernel never reports it.
pub const EINPROG: i32 = 0x10003;

/// The outcome of a lock operation, as `sb_status` reports it.
///
/// These are results, not errors: a `NOQUEUE` request that would block
/// completes with [`Status::WouldBlock`], an unlock with
/// [`Status::Unlocked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// `0`: the lock was granted or converted.
    Granted,
    /// `EAGAIN`: a `NOQUEUE` request or conversion would have blocked.
    WouldBlock,
    /// `EDEADLK` after a conversion: it would deadlock with another
    /// conversion; the lock stays granted in its old mode.
    ConversionDeadlock,
    /// `DLM_EUNLOCK`: the lock was unlocked.
    Unlocked,
    /// `DLM_ECANCEL`: the in-progress request or conversion was cancelled.
    Cancelled,
    /// `EDEADLK` after a deadlock cancel (`DLM_USER_DEADLOCK`).
    DeadlockCancelled,
    /// `ETIMEDOUT`: the request's time ran out before it was granted,
    /// and it was cancelled. The client reports this when a waiting call
    /// with a timeout (`LockRequest::timeout` in the `dlm` crate) gives
    /// up: the timer is the client's own, since the kernel removed
    /// `DLM_LKF_TIMEOUT` in 6.2. (Kernels up to 6.1 report it too for
    /// that deprecated kernel-side timeout, which dlm-rs never asks for.)
    TimedOut,
    /// `ENOLCK`: the lock is lost, and has ended. Its master went away
    /// (the fallback daemon died) and the lock could not be replayed onto
    /// the one that took its place: another holder took a conflicting
    /// lock meanwhile, or the new daemon refused it. dlm-rs's own status
    /// (libdlm has no such case); the lock's id is no longer valid.
    Lost,
}

impl Status {
    /// Decode a kernel status (`-errno`, as in `dlm_lock_result`).
    ///
    /// `EDEADLK` means two things; `deadlock_cancel` says whether a
    /// deadlock cancel was the last operation sent for this lock.
    #[inline(always)]
    pub fn from_kernel(raw: i32, deadlock_cancel: bool) -> Result<Status, Errno> {
        // The two a lock+unlock pair gets, inline; the rest out of line.
        match raw {
            0 => Ok(Status::Granted),
            KERNEL_EUNLOCK => Ok(Status::Unlocked),
            _ => Status::from_kernel_other(raw, deadlock_cancel),
        }
    }

    #[inline(never)]
    fn from_kernel_other(raw: i32, deadlock_cancel: bool) -> Result<Status, Errno> {
        Status::from_user(raw.checked_neg().ok_or(Errno::EPROTO)?, deadlock_cancel)
    }

    /// Decode a libdlm-style status (positive, as in `lksb.sb_status`).
    pub fn from_user(raw: i32, deadlock_cancel: bool) -> Result<Status, Errno> {
        Ok(match raw {
            0 => Status::Granted,
            libc::EAGAIN => Status::WouldBlock,
            libc::EDEADLK if deadlock_cancel => Status::DeadlockCancelled,
            libc::EDEADLK => Status::ConversionDeadlock,
            EUNLOCK => Status::Unlocked,
            ECANCEL => Status::Cancelled,
            libc::ETIMEDOUT => Status::TimedOut,
            libc::ENOLCK => Status::Lost,
            _ => return Err(Errno::EPROTO),
        })
    }

    /// The libdlm-style (positive) status value.
    pub const fn to_user(self) -> i32 {
        match self {
            Status::Granted => 0,
            Status::WouldBlock => libc::EAGAIN,
            Status::ConversionDeadlock | Status::DeadlockCancelled => libc::EDEADLK,
            Status::Unlocked => EUNLOCK,
            Status::Cancelled => ECANCEL,
            Status::TimedOut => libc::ETIMEDOUT,
            Status::Lost => libc::ENOLCK,
        }
    }

    /// The kernel-style (negative) status value.
    pub const fn to_kernel(self) -> i32 {
        -self.to_user()
    }

    /// Whether the lock is now granted (in some mode).
    pub const fn is_granted(self) -> bool {
        matches!(self, Status::Granted)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Granted => "granted",
            Status::WouldBlock => "would block",
            Status::ConversionDeadlock => "conversion deadlock",
            Status::Unlocked => "unlocked",
            Status::Cancelled => "cancelled",
            Status::DeadlockCancelled => "deadlock-cancelled",
            Status::TimedOut => "timed out",
            Status::Lost => "lost (not replayed after the daemon died)",
        })
    }
}

/// A completion AST: the status block (`struct dlm_lksb`) as Rust sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Completion {
    /// What happened.
    pub status: Status,
    /// `sb_flags`: `DEMOTED`, `VALNOTVALID`, `ALTMODE`.
    pub flags: StatusFlags,
    /// The value block, when the DLM copied one back.
    pub value_block: Option<ValueBlock>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips() {
        for s in [
            Status::Granted,
            Status::WouldBlock,
            Status::ConversionDeadlock,
            Status::Unlocked,
            Status::Cancelled,
            Status::DeadlockCancelled,
            Status::TimedOut,
        ] {
            let dc = s == Status::DeadlockCancelled;
            assert_eq!(Status::from_kernel(s.to_kernel(), dc), Ok(s));
            assert_eq!(Status::from_user(s.to_user(), dc), Ok(s));
        }
        assert_eq!(Status::from_kernel(-65538, false), Ok(Status::Unlocked));
        assert_eq!(Status::from_user(EINPROG, false), Err(Errno::EPROTO));
        assert_eq!(Status::from_kernel(i32::MIN, false), Err(Errno::EPROTO));
    }
}
