//! Callbacks.
//!
//! Linux 6.1 (`dlm_user_add_ast`, `dlm_add_lkb_callback` in `fs/dlm/ast.c`
//! and `user.c`): each lock's array of at most six, the proc's queue of
//! locks with callbacks waiting, and reading one (`device_read`,
//! `copy_result_to_user`) with its blocking-AST skip rule.
//!
//! Linux 6.12 (`dlm_user_add_ast`, `dlm_may_skip_callback`, `dlm_get_cb`):
//! each callback is judged and made into its record when queued, against
//! the callbacks queued before it, and appended to the proc's list of
//! records; a read takes the first. No cap; no lock is kept for its
//! records.

use dlm_proto::records::AstRecord;

use super::coverage::hit;
use super::tables::IV;
use super::tables::{compat, is_endoflife, lvb_op, CALLBACKS, E_CANCEL, E_DEADLK, NL, PR};
use super::{Cb, Kernel, Model};

impl Model {
    // ----- callbacks (dlm_user_add_ast, dlm_add_lkb_callback) -----

    pub(super) fn queue_cast(&mut self, id: u32, rv: i32) {
        let mut rv = rv;
        let l = self.lkm(id);
        if rv == E_CANCEL && l.deadlock_cancel {
            l.deadlock_cancel = false;
            rv = E_DEADLK;
        }
        let (mode, sbflags) = (l.grmode, l.sbflags);
        self.add_cb(id, false, mode, rv, sbflags);
    }

    pub(super) fn queue_bast(&mut self, id: u32, mode: i8) {
        self.add_cb(id, true, mode, 0, 0);
    }

    pub(super) fn add_cb(&mut self, id: u32, bast: bool, mode: i8, status: i32, sbflags: u8) {
        let l = self.lkm(id);
        if l.orphan || l.dead {
            return;
        }
        if bast && l.ua.bastaddr == 0 {
            return;
        }
        if !bast && is_endoflife(mode, status) {
            l.endoflife = true;
        }
        if self.kernel == Kernel::V6_12 {
            return self.add_record(id, bast, mode, status, sbflags);
        }
        let l = self.lkm(id);
        if l.cbs.len() == CALLBACKS {
            // "no callbacks": dropped, and nothing else happens.
            hit("callback dropped: array full");
            return;
        }
        let suppressed = match l.cbs.last() {
            Some(prev) if bast && prev.bast => {
                prev.mode == mode || (prev.mode > mode && prev.mode > PR)
            }
            _ => false,
        };
        if suppressed {
            hit("blocking AST dropped when added");
        } else {
            l.cbs.push(Cb {
                bast,
                mode,
                status,
                sbflags,
            });
        }
        let p = l.owner;
        let eol = l.endoflife;
        let proc_ = self.proc_mut(p);
        if !proc_.asts.contains(&id) {
            proc_.asts.push(id);
        }
        if eol {
            proc_.locks.retain(|&x| x != id);
            proc_.unlocking.retain(|&x| x != id);
        }
    }

    /// 6.12's `dlm_user_add_ast` past its first checks.
    fn add_record(&mut self, id: u32, bast: bool, mode: i8, status: i32, sbflags: u8) {
        let l = self.lkm(id);
        let mut copy_lvb = false;
        let skip = if bast {
            if l.last_cast_queued != IV && compat(mode, l.last_cast_queued) {
                hit("6.12: blocking AST skipped, compatible with the last completion queued");
                true
            } else if let Some((true, prev)) = l.last_cb {
                let s = prev == mode || (prev > mode && prev > PR);
                if s {
                    hit("6.12: blocking AST skipped after a blocking AST");
                }
                s
            } else {
                false
            }
        } else {
            copy_lvb = status == 0 && l.lvb.is_some() && lvb_op(l.last_cast_queued, mode) != 0;
            if copy_lvb {
                hit("6.12: value block copied when queued");
            }
            l.last_cast_queued = mode;
            false
        };
        if !skip {
            l.last_cb = Some((bast, mode));
            let rec = AstRecord {
                lkid: id,
                astaddr: if bast { l.ua.bastaddr } else { l.ua.castaddr },
                astparam: if bast { l.ua.bastparam } else { l.ua.castparam },
                user_lksb: l.ua.lksb,
                status: if bast { 0 } else { status },
                sb_flags: if bast { 0 } else { sbflags },
                bast_mode: if bast { mode as u8 } else { 0 },
                lvb: if copy_lvb { l.lvb } else { None },
            };
            let p = l.owner;
            self.proc_mut(p).records.push(rec);
        }
        let l = self.lk(id);
        if l.endoflife {
            let p = l.owner;
            let proc_ = self.proc_mut(p);
            proc_.locks.retain(|&x| x != id);
            proc_.unlocking.retain(|&x| x != id);
        }
    }

    /// Reads one callback for proc `p` (`device_read`), if it has one.
    pub fn read(&mut self, p: usize) -> Option<AstRecord> {
        let rec = self.read_one(p);
        self.collect();
        rec
    }

    pub(super) fn read_one(&mut self, p: usize) -> Option<AstRecord> {
        if !self.is_open(p) {
            return None;
        }
        if self.kernel == Kernel::V6_12 {
            let recs = &mut self.proc_mut(p).records;
            return (!recs.is_empty()).then(|| recs.remove(0));
        }
        loop {
            let id = *self.proc_mut(p).asts.first()?;
            let l = self.lkm(id);
            // lkb_last_cast is zeroed until a completion is read: mode NL.
            let old_mode = l.last_cast.unwrap_or(NL);
            let cb = l.cbs.remove(0);
            let resid = l.cbs.len();
            let skip = cb.bast && l.last_cast.is_some_and(|m| compat(cb.mode, m));
            if skip {
                hit("blocking AST skipped when read");
            }
            if !skip && !cb.bast {
                l.last_cast = Some(cb.mode);
            }
            if resid == 0 {
                self.proc_mut(p).asts.remove(0);
            }
            if skip {
                continue;
            }
            let l = self.lkm(id);
            let mut copy_lvb = false;
            if !cb.bast {
                copy_lvb = cb.status == 0 && l.lvb.is_some() && lvb_op(old_mode, cb.mode) != 0;
                if copy_lvb {
                    hit("value block copied when read");
                }
                l.sb_status = cb.status;
                l.sb_flags = cb.sbflags;
            }
            return Some(AstRecord {
                lkid: id,
                astaddr: if cb.bast {
                    l.ua.bastaddr
                } else {
                    l.ua.castaddr
                },
                astparam: if cb.bast {
                    l.ua.bastparam
                } else {
                    l.ua.castparam
                },
                user_lksb: l.ua.lksb,
                status: l.sb_status,
                sb_flags: l.sb_flags,
                bast_mode: if cb.bast { cb.mode as u8 } else { 0 },
                lvb: if copy_lvb { l.lvb } else { None },
            });
        }
    }
}
