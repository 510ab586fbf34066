//! The unlock and cancel paths, after `fs/dlm/lock.c`: `dlm_user_unlock`,
//! `dlm_user_cancel` and `dlm_user_deadlock` with their argument checks
//! (`set_unlock_args`, `validate_unlock_args`), and `unlock_lock` and
//! `cancel_lock` with their effects. `FORCEUNLOCK` unlocks a lock that
//! is still waiting or converting.

use dlm_proto::error::Errno;
use dlm_proto::flags::LockFlags;
use dlm_proto::status::{ECANCEL, EUNLOCK};

use crate::internal::{
    Lkid, IFL_DEAD, IFL_DEADLOCK_CANCEL, IFL_ENDOFLIFE, IFL_ON_OWNQ, IFL_ORPHAN, IFL_UNLOCKING,
    STS_GRANTED, STS_NONE,
};
use crate::store::{Chain, Which};
use crate::{Engine, UnlockParams};

impl Engine {
    /// `dlm_user_deadlock`: cancel with `EDEADLK` for a status.
    pub(crate) fn user_deadlock(&mut self, id: Lkid, flags: u32) -> Result<(), Errno> {
        set_unlock_args(flags)?;
        match self.validate_unlock_args(id, flags) {
            Ok(()) => {}
            Err(e) if e == Errno::EBUSY => return Ok(()),
            Err(e) => return Err(e),
        }
        self.lk_mut(id).iflags |= IFL_DEADLOCK_CANCEL;
        self.cancel_lock(id);
        Ok(())
    }

    /// `dlm_user_unlock`: unlock lock `p.lkid` (`FORCEUNLOCK` also while
    /// a request or conversion is in progress).
    pub(crate) fn user_unlock(&mut self, p: &UnlockParams) -> Result<(), Errno> {
        let id = self.find_lkb(p.lkid)?;
        {
            let lkb = self.lk_mut(id);
            if let Some(buf) = lkb.lvb.as_deref_mut() {
                *buf = p.lvb;
            }
            if p.args.castparam != 0 {
                lkb.ua.castparam = p.args.castparam;
            }
            lkb.ua.lksb = p.args.lksb;
        }
        set_unlock_args(p.flags)?;
        match self.validate_unlock_args(id, p.flags) {
            Ok(()) => self.unlock_lock(id),
            Err(e) if e == Errno::EBUSY && p.flags & LockFlags::FORCEUNLOCK.bits() != 0 => {}
            Err(e) => return Err(e),
        }
        // A lock still on its owner's list (its EUNLOCK was not queued, or
        // FORCEUNLOCK found one in progress) moves to the owner's
        // `unlocking` list, so that closing or purging the owner only marks
        // it dead: it is neither orphaned nor unlocked again. An orphan
        // stays on the orphan list (Linux 6.1 would move it onto the list
        // of the owner that is gone).
        let l = self.lk(id);
        if l.iflags & IFL_ON_OWNQ != 0 && l.iflags & (IFL_ORPHAN | IFL_DEAD) == 0 {
            let o = l.owner;
            self.list_remove(self.own_list(id), Chain::Own, id);
            self.list_push_front(Which::Unlocking(o), Chain::Own, id);
            self.lk_mut(id).iflags |= IFL_UNLOCKING;
        }
        Ok(())
    }

    /// `dlm_user_cancel`: cancel the request or conversion in progress.
    pub(crate) fn user_cancel(&mut self, p: &UnlockParams) -> Result<(), Errno> {
        let id = self.find_lkb(p.lkid)?;
        {
            let lkb = self.lk_mut(id);
            if p.args.castparam != 0 {
                lkb.ua.castparam = p.args.castparam;
            }
            lkb.ua.lksb = p.args.lksb;
        }
        set_unlock_args(p.flags)?;
        match self.validate_unlock_args(id, p.flags) {
            Ok(()) => {}
            Err(e) if e == Errno::EBUSY => return Ok(()),
            Err(e) => return Err(e),
        }
        self.cancel_lock(id);
        Ok(())
    }

    /// `validate_unlock_args` on a local lock (no waiters, no lookups, no
    /// resends). On success the flags are ORed into the lock's flags.
    pub(crate) fn validate_unlock_args(&mut self, id: Lkid, flags: u32) -> Result<(), Errno> {
        let lkb = self.lk(id);
        if lkb.iflags & IFL_ENDOFLIFE != 0 {
            return Err(Errno::ENOENT);
        }
        if lkb.status == STS_NONE {
            // Only an orphan whose waiting request was cancelled when its
            // owner closed is on no queue without having ended. Linux 6.1
            // unlinks it a second time here and oopses (seen in the QEMU
            // differential run); the engine treats it as ended.
            return Err(Errno::ENOENT);
        }
        // In the kernel `rv` is already -EINVAL when these checks run, so a
        // cancel over an earlier cancel (CANCEL still in the lock's flags,
        // until a conversion replaces them) is EINVAL, not EBUSY; likewise
        // a FORCEUNLOCK over an earlier one. (Found by the differential
        // run against Linux 6.1; the reference notes said EBUSY.)
        if flags & LockFlags::CANCEL.bits() != 0 {
            if lkb.exflags & LockFlags::CANCEL.bits() != 0 {
                return Err(Errno::EINVAL);
            }
            if lkb.status == STS_GRANTED {
                // Nothing to cancel.
                return Err(Errno::EBUSY);
            }
        } else if flags & LockFlags::FORCEUNLOCK.bits() != 0
            && lkb.exflags & LockFlags::FORCEUNLOCK.bits() != 0
        {
            return Err(Errno::EINVAL);
        }
        let lkb = self.lk_mut(id);
        lkb.exflags |= flags;
        lkb.sbflags = 0;
        Ok(())
    }

    /// `unlock_lock` (`do_unlock`, `do_unlock_effects`): write or
    /// invalidate the value block, off the queue, `EUNLOCK`, and grant
    /// what that allows.
    pub(crate) fn unlock_lock(&mut self, id: Lkid) {
        // A lock on no queue (an orphan whose waiting request was
        // cancelled, or which was unlocked, after its owner closed) has
        // nothing left to unlock; Linux 6.1 would unlink it from its queue
        // a second time and crash. Leave it alone, as `do_purge` does.
        if self.lk(id).status == STS_NONE {
            return;
        }
        let r = self.lk(id).rsb;
        // do_unlock
        self.set_lvb_unlock(r, id);
        self.remove_lock(r, id);
        self.queue_cast(id, -EUNLOCK);
        // do_unlock_effects
        self.grant_pending_locks(r);
    }

    /// `cancel_lock` (`do_cancel`, `do_cancel_effects`): back to the
    /// granted mode or off the queues, `ECANCEL`, and grant what that
    /// allows.
    pub(crate) fn cancel_lock(&mut self, id: Lkid) {
        let r = self.lk(id).rsb;
        // do_cancel
        if self.revert_lock(r, id) != 0 {
            self.queue_cast(id, -ECANCEL);
            // do_cancel_effects
            self.grant_pending_locks(r);
        }
    }
}

/// `set_unlock_args`.
fn set_unlock_args(flags: u32) -> Result<(), Errno> {
    if flags & !LockFlags::UNLOCK_ALLOWED.bits() != 0 {
        return Err(Errno::EINVAL);
    }
    if flags & LockFlags::CANCEL.bits() != 0 && flags & LockFlags::FORCEUNLOCK.bits() != 0 {
        return Err(Errno::EINVAL);
    }
    Ok(())
}
