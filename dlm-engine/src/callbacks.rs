//! Callbacks: the per-lock callback arrays and each owner's AST queue, as
//! Linux 6.1 keeps them (`fs/dlm/ast.c` `dlm_add_lkb_callback`,
//! `dlm_rem_lkb_callback`; `fs/dlm/user.c` `dlm_user_add_ast`,
//! `device_read`, `copy_result_to_user`).
//!
//! A lock holds at most [`CALLBACKS_SIZE`] unread callbacks; a blocking
//! AST like the one queued just before it is suppressed when queued, and
//! one made moot by the last completion read is skipped when read. A
//! completion that ends the lock (`is_endoflife`) takes it off its owner's
//! list; the callback's reference keeps it until it is read.

use dlm_proto::status::{ECANCEL, EUNLOCK};

use crate::internal::{
    Cb, CbArray, Lkid, IFL_DEAD, IFL_DEADLOCK_CANCEL, IFL_ENDOFLIFE, IFL_HAS_LAST_CAST,
    IFL_ON_ASTS, IFL_ON_OWNQ, IFL_ORPHAN, IFL_UNLOCKING, NIL,
};
use crate::store::Chain;
use crate::tables::{compat, lvb_op, IV, PR};
use crate::{AstRecord, Engine, CALLBACKS_SIZE};

/// `dlm_user_add_ast`'s test: a completion with this status ends the
/// lock's life (its id is freed once the completion is read).
fn is_endoflife(mode: i8, status: i32) -> bool {
    match status {
        s if s == -EUNLOCK => true,
        s if s == -ECANCEL
            || s == -libc::ETIMEDOUT
            || s == -libc::EDEADLK
            || s == -libc::EAGAIN =>
        {
            mode == IV
        }
        _ => false,
    }
}

impl Engine {
    /// `queue_cast`: queue a completion with `status` in the lock's
    /// granted mode (an `EDEADLK` for a deadlock cancel's `ECANCEL`).
    pub(crate) fn queue_cast(&mut self, id: Lkid, status: i32) {
        let mut status = status;
        let lkb = self.lk_mut(id);
        if status == -ECANCEL && lkb.iflags & IFL_DEADLOCK_CANCEL != 0 {
            lkb.iflags &= !IFL_DEADLOCK_CANCEL;
            status = -libc::EDEADLK;
        }
        let (mode, sbflags) = (lkb.grmode, lkb.sbflags);
        self.user_add_ast(id, false, mode, status, sbflags);
    }

    /// `queue_bast`: queue a blocking AST for `mode`.
    pub(crate) fn queue_bast(&mut self, id: Lkid, mode: i8) {
        self.user_add_ast(id, true, mode, 0, 0);
    }

    /// `dlm_user_add_ast` with `dlm_add_lkb_callback`: nothing for an
    /// orphan or a dead lock, or for a BAST without a BAST address; else
    /// into the lock's array and the lock onto its owner's AST queue.
    fn user_add_ast(&mut self, id: Lkid, bast: bool, mode: i8, status: i32, sbflags: u8) {
        let lkb = self.lk_mut(id);
        if lkb.iflags & (IFL_ORPHAN | IFL_DEAD) != 0 {
            return;
        }
        if bast && lkb.ua.bastaddr == 0 {
            return;
        }
        if !bast && is_endoflife(mode, status) {
            lkb.iflags |= IFL_ENDOFLIFE;
        }
        let o = lkb.owner;
        let mut slot = lkb.cb_slot;
        if slot == NIL {
            slot = match self.free_cbs.pop() {
                Some(s) => s,
                None => {
                    self.cbs.push(CbArray::default());
                    (self.cbs.len() - 1) as u32
                }
            };
            self.lk_mut(id).cb_slot = slot;
        }
        let arr = &mut self.cbs[slot as usize];
        let n = usize::from(arr.len);
        let mut added = false;
        if n < CALLBACKS_SIZE {
            let suppressed = n > 0 && bast && arr.items[n - 1].bast && {
                let prev = arr.items[n - 1].mode;
                prev == mode || (prev > mode && prev > PR)
            };
            if !suppressed {
                arr.items[n] = Cb {
                    bast,
                    mode,
                    sbflags,
                    status,
                };
                arr.len += 1;
            }
            // A suppressed BAST is a success for the kernel too.
            added = true;
        } else {
            log::warn!("lock {id:x}: callback array full, callback dropped");
        }
        if !added {
            return;
        }
        if self.lk(id).iflags & IFL_ON_ASTS == 0 {
            let lkb = self.lk_mut(id);
            lkb.iflags |= IFL_ON_ASTS;
            lkb.refs += 1;
            self.proc_mut(o).asts.push_back(id);
        }
        if self.lk(id).iflags & IFL_ENDOFLIFE != 0 && self.lk(id).iflags & IFL_ON_OWNQ != 0 {
            self.list_remove(self.own_list(id), Chain::Own, id);
            self.lk_mut(id).iflags &= !IFL_UNLOCKING;
            self.put_lkb(id);
        }
    }

    /// `device_read` for an open owner `o`: take the first callback of the
    /// first lock on the owner's AST queue (`dlm_rem_lkb_callback`), skip
    /// a blocking AST that the last completion read makes moot (a BAST
    /// for a mode compatible with the mode granted), and build the record
    /// `copy_result_to_user` writes, value block included when the
    /// completion moved the lock across a read in the LVB table.
    pub(crate) fn device_read(&mut self, o: u32) -> Option<AstRecord> {
        loop {
            let id = *self.proc(o).asts.front()?;
            let old_mode = self.lk(id).last_cast_mode;
            let slot = self.lk(id).cb_slot;
            let arr = &mut self.cbs[slot as usize];
            let cb = arr.items[0];
            arr.items.copy_within(1..usize::from(arr.len), 0);
            arr.len -= 1;
            let resid = arr.len;
            let mut skip = false;
            {
                let lkb = self.lk_mut(id);
                if cb.bast
                    && lkb.iflags & IFL_HAS_LAST_CAST != 0
                    && compat(cb.mode, lkb.last_cast_mode)
                {
                    skip = true;
                }
                if !cb.bast {
                    lkb.iflags |= IFL_HAS_LAST_CAST;
                    lkb.last_cast_mode = cb.mode;
                }
            }
            if resid == 0 {
                self.proc_mut(o).asts.pop_front();
                self.free_cbs.push(slot);
                let lkb = self.lk_mut(id);
                lkb.cb_slot = NIL;
                lkb.iflags &= !IFL_ON_ASTS;
            }
            if skip {
                if resid == 0 {
                    self.put_lkb(id);
                }
                continue;
            }
            let lkb = self.lk_mut(id);
            let mut copy_lvb = false;
            if !cb.bast {
                if cb.status == 0 && lkb.lvb.is_some() && lvb_op(old_mode, cb.mode) != 0 {
                    copy_lvb = true;
                }
                lkb.lksb_status = cb.status;
                lkb.lksb_flags = cb.sbflags;
            }
            let rec = AstRecord {
                lkid: id,
                astaddr: if cb.bast {
                    lkb.ua.bastaddr
                } else {
                    lkb.ua.castaddr
                },
                astparam: if cb.bast {
                    lkb.ua.bastparam
                } else {
                    lkb.ua.castparam
                },
                user_lksb: lkb.ua.lksb,
                status: lkb.lksb_status,
                sb_flags: lkb.lksb_flags,
                bast_mode: if cb.bast { cb.mode as u8 } else { 0 },
                lvb: if copy_lvb {
                    lkb.lvb.as_deref().copied()
                } else {
                    None
                },
            };
            if resid == 0 {
                self.put_lkb(id);
            }
            return Some(rec);
        }
    }

    /// Drop every callback the owner has not read (its fd is closing, or
    /// it purges its own locks).
    pub(crate) fn drop_asts(&mut self, o: u32) {
        while let Some(id) = self.proc_mut(o).asts.pop_front() {
            let slot = self.lk(id).cb_slot;
            self.cbs[slot as usize] = CbArray::default();
            self.free_cbs.push(slot);
            let lkb = self.lk_mut(id);
            lkb.cb_slot = NIL;
            lkb.iflags &= !IFL_ON_ASTS;
            self.put_lkb(id);
        }
    }
}
