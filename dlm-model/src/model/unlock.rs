//! Unlock and cancel paths (`fs/dlm/lock.c` `validate_unlock_args`,
//! `do_unlock`, `do_cancel`; `fs/dlm/user.c` `dlm_user_unlock`,
//! `dlm_user_cancel`, `dlm_user_deadlock`): the device's unlock and
//! deadlock-cancel commands, and the force-unlock a close or purge does.

use dlm_proto::records::UserArgs;
use dlm_proto::Errno;

use super::coverage::hit;
use super::tables::{set_unlock_args_ok, E_CANCEL, E_UNLOCK, IV};
use super::{Lvb, Model, St};
use crate::gen::flags::{CANCEL, FORCEUNLOCK, IVVALBLK};

impl Model {
    pub(super) fn validate_unlock_args(&mut self, id: u32, flags: u32) -> Result<(), Errno> {
        let l = self.lkm(id);
        if l.endoflife {
            hit("operation on an ended lock (ENOENT)");
            return Err(Errno::ENOENT);
        }
        if l.status == St::None {
            // Not the kernel: only an orphan (whose waiting request was
            // cancelled, or which was unlocked, after its owner closed) is
            // on no queue without having ended; Linux 6.1 would unlink it
            // a second time and oops. The engine treats it as ended.
            hit("unlock or cancel of an orphan on no queue");
            return Err(Errno::ENOENT);
        }
        // `rv` is still -EINVAL when a cancel finds CANCEL already in the
        // lock's flags, or a FORCEUNLOCK finds FORCEUNLOCK there.
        if flags & CANCEL != 0 {
            if l.exflags & CANCEL != 0 {
                return Err(Errno::EINVAL);
            }
            // Nothing to cancel.
            if l.status == St::Granted {
                return Err(Errno::EBUSY);
            }
        } else if flags & FORCEUNLOCK != 0 && l.exflags & FORCEUNLOCK != 0 {
            return Err(Errno::EINVAL);
        }
        l.exflags |= flags;
        l.sbflags = 0;
        Ok(())
    }

    pub(super) fn unlock_lock(&mut self, id: u32) {
        // Not the kernel: a lock on no queue (an orphan whose waiting
        // request was cancelled, or which was unlocked, after its owner
        // closed) would be unlinked a second time by Linux 6.1, which
        // crashes. The engine leaves such a lock alone.
        if self.lk(id).status == St::None {
            return;
        }
        let r = self.lk(id).res;
        self.set_lvb_unlock(r, id);
        self.del_lkb(r, id);
        self.lkm(id).grmode = IV;
        self.queue_cast(id, E_UNLOCK);
        self.grant_pending_locks(r);
    }

    pub(super) fn cancel_lock(&mut self, id: u32) {
        let r = self.lk(id).res;
        if self.revert_lock(r, id) != 0 {
            self.queue_cast(id, E_CANCEL);
            self.grant_pending_locks(r);
        }
    }

    pub(super) fn unlock_proc_lock(&mut self, id: u32) {
        if self
            .validate_unlock_args(id, FORCEUNLOCK | IVVALBLK)
            .is_ok()
        {
            self.unlock_lock(id);
        }
    }

    /// The device's unlock command (`DLM_USER_UNLOCK`) from proc `p`: an
    /// unlock, or with CANCEL a cancel, of lock `lkid`, with the caller's
    /// value block and user arguments.
    pub fn unlock(
        &mut self,
        p: usize,
        lkid: u32,
        flags: u32,
        lvb: Lvb,
        args: UserArgs,
    ) -> Result<(), Errno> {
        if !self.is_open(p) {
            return Err(Errno::EBADF);
        }
        let rv = if flags & CANCEL != 0 {
            self.user_cancel(lkid, flags, args)
        } else {
            self.user_unlock(lkid, flags, lvb, args)
        };
        self.collect();
        rv
    }

    pub(super) fn user_unlock(
        &mut self,
        id: u32,
        flags: u32,
        lvb: Lvb,
        args: UserArgs,
    ) -> Result<(), Errno> {
        let Some(l) = self.locks.get_mut(&id) else {
            return Err(Errno::ENOENT);
        };
        if let Some(b) = l.lvb.as_mut() {
            *b = lvb;
        }
        if args.castparam != 0 {
            l.ua.castparam = args.castparam;
        }
        l.ua.lksb = args.lksb;
        if !set_unlock_args_ok(flags) {
            return Err(Errno::EINVAL);
        }
        match self.validate_unlock_args(id, flags) {
            Ok(()) => self.unlock_lock(id),
            Err(e) if e == Errno::EBUSY && flags & FORCEUNLOCK != 0 => {}
            Err(e) => return Err(e),
        }
        // dlm_user_unlock: a lock still on its owner's list moves to the
        // owner's "unlocking" list. (For an orphan the kernel would move it
        // onto the list of the proc that is gone; it stays an orphan here,
        // as in the engine.)
        let l = self.lk(id);
        if !l.orphan && !l.dead {
            let p = l.owner;
            let pr = self.proc_mut(p);
            if pr.locks.contains(&id) || pr.unlocking.contains(&id) {
                hit("lock moved to the unlocking list");
                pr.locks.retain(|&x| x != id);
                pr.unlocking.retain(|&x| x != id);
                pr.unlocking.insert(0, id);
            }
        }
        Ok(())
    }

    pub(super) fn user_cancel(&mut self, id: u32, flags: u32, args: UserArgs) -> Result<(), Errno> {
        let Some(l) = self.locks.get_mut(&id) else {
            return Err(Errno::ENOENT);
        };
        if args.castparam != 0 {
            l.ua.castparam = args.castparam;
        }
        l.ua.lksb = args.lksb;
        if !set_unlock_args_ok(flags) {
            return Err(Errno::EINVAL);
        }
        match self.validate_unlock_args(id, flags) {
            Ok(()) => self.cancel_lock(id),
            Err(e) if e == Errno::EBUSY => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// The device's deadlock cancel (`DLM_USER_DEADLOCK`) of lock `id`
    /// from proc `p`.
    pub fn deadlock(&mut self, p: usize, id: u32, flags: u32) -> Result<(), Errno> {
        if !self.is_open(p) {
            return Err(Errno::EBADF);
        }
        if !self.locks.contains_key(&id) {
            return Err(Errno::ENOENT);
        }
        if !set_unlock_args_ok(flags) {
            return Err(Errno::EINVAL);
        }
        match self.validate_unlock_args(id, flags) {
            Ok(()) => {
                self.lkm(id).deadlock_cancel = true;
                self.cancel_lock(id);
            }
            Err(e) if e == Errno::EBUSY => {}
            Err(e) => return Err(e),
        }
        self.collect();
        Ok(())
    }
}
