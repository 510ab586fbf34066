//! Value blocks, after `fs/dlm/lock.c`: `set_lvb_lock` on a grant, with
//! the `dlm_lvb_operations` table (`lvb_table.h`) deciding between a read
//! and a write, `set_lvb_unlock` on an unlock, and `RSB_VALNOTVALID`,
//! which `IVVALBLK` sets and a write clears.
//!
//! A lock's buffer (`ua->lksb.sb_lvbptr` in `fs/dlm/user.c`) is allocated
//! when a request or conversion first asks for `VALBLK`; it takes part in
//! these rules only once attached (`lkb_lvbptr`, set by
//! `validate_lock_args`).
//!
//! The kernel counts writes in `res_lvbseq` and `lkb_lvbseq`; those
//! numbers only serve recovery and remote masters, so the engine keeps
//! none (see `recover` for what recovery does without them).

use dlm_proto::flags::{LockFlags, StatusFlags};

use crate::internal::{Lkb, Lkid, IFL_LVB_ATTACHED};
use crate::tables::{lvb_op, PW};
use crate::{Engine, LVB_LEN};

impl Lkb {
    /// `lkb->lkb_lvbptr = args->lksb->sb_lvbptr` in `validate_lock_args`.
    pub(crate) fn attach_lvb(&mut self) {
        if self.lvb.is_some() {
            self.iflags |= IFL_LVB_ATTACHED;
        }
    }

    /// The value block as `lkb_lvbptr` sees it.
    pub(crate) fn attached_lvb(&self) -> Option<[u8; LVB_LEN]> {
        if self.iflags & IFL_LVB_ATTACHED == 0 {
            return None;
        }
        self.lvb.as_deref().copied()
    }
}

impl Engine {
    /// `set_lvb_lock`: on a grant, copy the resource's block to the lock
    /// (a read in the `dlm_lvb_operations` table), or the lock's to the
    /// resource (a write), or invalidate it (`IVVALBLK`); report
    /// `VALNOTVALID` while the resource's block is not valid.
    pub(crate) fn set_lvb_lock(&mut self, r: u32, id: Lkid) {
        let (gr, rq, exflags) = {
            let l = self.lk(id);
            (l.grmode, l.rqmode, l.exflags)
        };
        let b = lvb_op(gr, rq);
        let valblk = exflags & LockFlags::VALBLK.bits() != 0;
        if b == 1 {
            let has_lvb = self.lk(id).attached_lvb().is_some();
            if !has_lvb || !valblk {
                return;
            }
            let Some(res) = self.rsb(r).lvb.as_deref().copied() else {
                return;
            };
            if let Some(buf) = self.lk_mut(id).lvb.as_deref_mut() {
                *buf = res;
            }
        } else if b == 0 {
            if exflags & LockFlags::IVVALBLK.bits() != 0 {
                self.rsb_mut(r).valnotvalid = true;
                return;
            }
            let Some(mine) = self.lk(id).attached_lvb() else {
                return;
            };
            if !valblk {
                return;
            }
            let rsb = self.rsb_mut(r);
            rsb.lvb = Some(Box::new(mine));
            rsb.valnotvalid = false;
        }
        if self.rsb(r).valnotvalid {
            self.lk_mut(id).sbflags |= StatusFlags::VALNOTVALID.bits();
        }
    }

    /// `set_lvb_unlock`: an unlock from PW or EX writes the lock's block
    /// to the resource (`VALBLK`) or invalidates it (`IVVALBLK`).
    pub(crate) fn set_lvb_unlock(&mut self, r: u32, id: Lkid) {
        let (gr, exflags) = {
            let l = self.lk(id);
            (l.grmode, l.exflags)
        };
        if gr < PW {
            return;
        }
        if exflags & LockFlags::IVVALBLK.bits() != 0 {
            self.rsb_mut(r).valnotvalid = true;
            return;
        }
        let Some(mine) = self.lk(id).attached_lvb() else {
            return;
        };
        if exflags & LockFlags::VALBLK.bits() == 0 {
            return;
        }
        let rsb = self.rsb_mut(r);
        rsb.lvb = Some(Box::new(mine));
        rsb.valnotvalid = false;
    }
}
