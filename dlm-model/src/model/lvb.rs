//! Value blocks (`set_lvb_lock`, `set_lvb_unlock` in `fs/dlm/lock.c`):
//! what a grant copies from or writes to its resource's value block, per
//! `dlm_lvb_operations`, and the VALNOTVALID mark.

use super::coverage::hit;
use super::tables::{lvb_op, PW, SBF_VALNOTVALID};
use super::Model;
use crate::gen::flags::{IVVALBLK, VALBLK};

impl Model {
    pub(super) fn set_lvb_lock(&mut self, r: usize, id: u32) {
        let l = self.lk(id);
        let b = lvb_op(l.grmode, l.rqmode);
        let valblk = l.exflags & VALBLK != 0;
        let attached = if l.lvb_attached { l.lvb } else { None };
        if b == 1 {
            if attached.is_none() || !valblk {
                return;
            }
            let Some(src) = self.res[r].lvb else {
                return;
            };
            self.lkm(id).lvb = Some(src);
        } else if b == 0 {
            if l.exflags & IVVALBLK != 0 {
                hit("VALNOTVALID set");
                self.res[r].valnotvalid = true;
                return;
            }
            let Some(mine) = attached else {
                return;
            };
            if !valblk {
                return;
            }
            hit("resource value block written");
            self.res[r].lvb = Some(mine);
            self.res[r].valnotvalid = false;
        }
        if self.res[r].valnotvalid {
            hit("VALNOTVALID reported in a grant");
            self.lkm(id).sbflags |= SBF_VALNOTVALID;
        }
    }

    pub(super) fn set_lvb_unlock(&mut self, r: usize, id: u32) {
        let l = self.lk(id);
        if l.grmode < PW {
            return;
        }
        if l.exflags & IVVALBLK != 0 {
            hit("VALNOTVALID set");
            self.res[r].valnotvalid = true;
            return;
        }
        let Some(mine) = l.lvb.filter(|_| l.lvb_attached) else {
            return;
        };
        if l.exflags & VALBLK == 0 {
            return;
        }
        hit("resource value block written");
        self.res[r].lvb = Some(mine);
        self.res[r].valnotvalid = false;
    }
}
