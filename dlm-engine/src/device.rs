//! The lockspace device's `write()`, after `fs/dlm/user.c`
//! `device_write`: a decoded request record becomes a call of the
//! matching operation, with the writer's pid, and the operation's result
//! becomes what `write()` returns.

use dlm_proto::error::Errno;
use dlm_proto::flags::LockFlags;
use dlm_proto::name::RESNAME_MAXLEN;

use crate::{Engine, LockParams, OwnerId, UnlockParams};

impl Engine {
    /// `device_write` on a lockspace fd, decoded: the lock, unlock,
    /// deadlock-cancel or purge the record asks for.
    pub(crate) fn dispatch_write(
        &mut self,
        owner: OwnerId,
        pid: u32,
        request: &dlm_proto::records::Request,
    ) -> Result<i64, Errno> {
        use dlm_proto::records::Request;
        match request {
            Request::Lock(r) => {
                let convert = r.flags & LockFlags::CONVERT.bits() != 0;
                // A `namelen` over 64 names no resource: refused from the
                // length alone (EINVAL for a request, ENOENT for an
                // adoption), so zeros stand in for the missing bytes.
                let long;
                let name: &[u8] = if convert {
                    &[]
                } else if r.namelen() <= RESNAME_MAXLEN {
                    r.name()
                } else {
                    long = vec![0u8; r.namelen()];
                    &long
                };
                let p = LockParams {
                    mode: r.mode,
                    flags: r.flags,
                    lkid: r.lkid,
                    name,
                    lvb: r.lvb,
                    args: r.user_args(),
                    pid,
                };
                self.lock(owner, &p).map(i64::from)
            }
            Request::Unlock(r) => {
                let p = UnlockParams {
                    lkid: r.lkid,
                    flags: r.flags,
                    lvb: r.lvb,
                    args: r.user_args(),
                };
                self.unlock(owner, &p).map(|()| 0)
            }
            Request::Deadlock(r) => self.deadlock_cancel(owner, r.lkid, r.flags).map(|()| 0),
            Request::Purge {
                nodeid,
                pid: target,
            } => self.purge(owner, *nodeid, *target, pid).map(|()| 0),
            Request::CreateLockspace { .. } | Request::RemoveLockspace { .. } => Err(Errno::EINVAL),
        }
    }
}
