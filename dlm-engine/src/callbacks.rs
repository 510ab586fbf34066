//! Callbacks: each owner's AST queue, as Linux 6.1 or 6.12 keeps it.
//!
//! Linux 6.1 (`fs/dlm/ast.c` `dlm_add_lkb_callback`,
//! `dlm_rem_lkb_callback`; `fs/dlm/user.c` `dlm_user_add_ast`,
//! `device_read`, `copy_result_to_user`): a lock holds at most
//! [`CALLBACKS_SIZE`] unread callbacks in an array of its own, and sits
//! on its owner's queue, holding a reference, while it has any; a
//! blocking AST like the one queued just before it is suppressed when
//! queued, and one made moot by the last completion read is skipped when
//! read; the record is made when read, from the lock as it is then.
//!
//! Linux 6.12 (`fs/dlm/ast.c` `dlm_may_skip_callback`, `dlm_get_cb`;
//! `fs/dlm/user.c` `dlm_user_add_ast`, `device_read`): every callback is
//! decided (skipped or not, value block copied or not) and made into its
//! record when it is queued, onto one FIFO per owner, with no cap and no
//! reference to the lock.
//!
//! In both, a completion that ends the lock (`is_endoflife`) takes it off
//! its owner's list; under 6.1 the callback's reference keeps it until it
//! is read, under 6.12 nothing does.

use dlm_proto::status::{ECANCEL, EUNLOCK};

use crate::internal::{
    Cb, CbArray, Lkid, IFL_DEAD, IFL_DEADLOCK_CANCEL, IFL_ENDOFLIFE, IFL_HAS_LAST_CAST,
    IFL_LAST_CB_BAST, IFL_ON_ASTS, IFL_ON_OWNQ, IFL_ORPHAN, IFL_UNLOCKING, NIL,
};
use crate::store::Chain;
use crate::tables::{compat, lvb_op, IV, PR};
use crate::{AstRecord, Engine, KernelModel, CALLBACKS_SIZE};

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

    /// `dlm_user_add_ast`: nothing for an orphan or a dead lock, or for a
    /// BAST without a BAST address; else, under Linux 6.1, with
    /// `dlm_add_lkb_callback` into the lock's array and the lock onto its
    /// owner's AST queue, and under 6.12 as a record onto that queue
    /// ([`Engine::user_add_cb_v612`]).
    fn user_add_ast(&mut self, id: Lkid, bast: bool, mode: i8, status: i32, sbflags: u8) {
        let v612 = self.model == KernelModel::V6_12;
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
        let (o, mut slot) = (lkb.owner, lkb.cb_slot);
        if v612 {
            self.user_add_cb_v612(id, bast, mode, status, sbflags);
            return;
        }
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
        self.end_of_life(id);
    }

    /// The end of `dlm_user_add_ast`: a lock whose life has ended leaves
    /// its owner's list, and that list's reference goes.
    #[inline(always)]
    fn end_of_life(&mut self, id: Lkid) {
        if self.lk(id).iflags & IFL_ENDOFLIFE != 0 && self.lk(id).iflags & IFL_ON_OWNQ != 0 {
            self.list_remove(self.own_list(id), Chain::Own, id);
            self.lk_mut(id).iflags &= !IFL_UNLOCKING;
            self.put_lkb(id);
        }
    }

    /// Linux 6.12's `dlm_user_add_ast` past its first checks:
    /// `dlm_may_skip_callback` decides, against the callbacks queued
    /// before, whether a BAST is dropped and whether a completion carries
    /// the value block; `dlm_get_cb` and `cb->ua = *ua` make the record
    /// from the lock as it is now (addresses, status block pointer, value
    /// block bytes), and it goes to the end of the owner's FIFO. There is
    /// no cap, and the record holds no reference to the lock.
    #[inline(never)]
    fn user_add_cb_v612(&mut self, id: Lkid, bast: bool, mode: i8, status: i32, sbflags: u8) {
        let lkb = self.lk_mut(id);
        let mut copy_lvb = false;
        if bast {
            // Moot: compatible with the mode of the last completion
            // queued (none yet: IV).
            if lkb.last_cast_mode != IV && compat(mode, lkb.last_cast_mode) {
                return self.end_of_life(id);
            }
            // Redundant: the callback just before was a BAST for the same
            // mode or, above PR, a stronger one.
            if lkb.iflags & IFL_LAST_CB_BAST != 0 {
                let prev = lkb.last_cb_mode;
                if prev == mode || (prev > mode && prev > PR) {
                    return self.end_of_life(id);
                }
            }
            lkb.iflags |= IFL_LAST_CB_BAST;
        } else {
            // Against the last completion queued, not the last read.
            if status == 0 && lkb.lvb.is_some() && lvb_op(lkb.last_cast_mode, mode) != 0 {
                copy_lvb = true;
            }
            lkb.last_cast_mode = mode;
            lkb.iflags &= !IFL_LAST_CB_BAST;
        }
        lkb.last_cb_mode = mode;
        // copy_result_to_user on the record's copy of the user args: a
        // BAST carries the copy's own status block, which nothing writes
        // for a user lock (status 0, flags 0).
        let rec = AstRecord {
            lkid: id,
            astaddr: if bast {
                lkb.ua.bastaddr
            } else {
                lkb.ua.castaddr
            },
            astparam: if bast {
                lkb.ua.bastparam
            } else {
                lkb.ua.castparam
            },
            user_lksb: lkb.ua.lksb,
            status: if bast { 0 } else { status },
            sb_flags: if bast { 0 } else { sbflags },
            bast_mode: if bast { mode as u8 } else { 0 },
            lvb: if copy_lvb {
                lkb.lvb.as_deref().copied()
            } else {
                None
            },
        };
        let o = lkb.owner;
        self.proc_mut(o).records.push_back(rec);
        self.end_of_life(id);
    }

    /// `device_read` for an open owner `o`: take the first callback of the
    /// first lock on the owner's AST queue (`dlm_rem_lkb_callback`), skip
    /// a blocking AST that the last completion read makes moot (a BAST
    /// for a mode compatible with the mode granted), and build the record
    /// `copy_result_to_user` writes, value block included when the
    /// completion moved the lock across a read in the LVB table.
    ///
    /// Under Linux 6.12 the record was made when queued: the first one is
    /// taken as it is.
    pub(crate) fn device_read(&mut self, o: u32) -> Option<AstRecord> {
        loop {
            // Under 6.12 the queue of locks stays empty, and the records
            // are the queue (asked only then, to spare 6.1's path).
            let Some(&id) = self.proc(o).asts.front() else {
                if self.model == KernelModel::V6_12 {
                    return self.proc_mut(o).records.pop_front();
                }
                return None;
            };
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
        self.proc_mut(o).records.clear();
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
