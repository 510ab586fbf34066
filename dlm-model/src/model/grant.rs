//! Queues and grant rules (`fs/dlm/lock.c`): adding and removing locks
//! on a resource's queues, `_can_be_granted` / `can_be_granted` with the
//! conversion-deadlock check and the alternate modes, `grant_lock`,
//! `revert_lock`, the `grant_pending_*` passes and the blocking-AST
//! passes (`send_bast_queue`).

use super::coverage::hit;
use super::tables::{compat, CW, EX, IV, NL, PR, SBF_ALTMODE, SBF_DEMOTED};
use super::{Model, St};
use crate::gen::flags::{ALTCW, ALTPR, CONVDEADLK, EXPEDITE, HEADQUE, NODLCKWT, NOORDER};
use crate::gen::flags::{NOQUEUE, QUECVT};

impl Model {
    // ----- queues -----

    pub(super) fn add_lkb(&mut self, r: usize, id: u32, st: St) {
        let headque = self.lk(id).exflags & HEADQUE != 0;
        self.lkm(id).status = st;
        if headque && matches!(st, St::Waiting | St::Convert) {
            hit("HEADQUE insertion");
        }
        match st {
            St::Waiting if headque => self.res[r].wait.insert(0, id),
            St::Waiting => self.res[r].wait.push(id),
            St::Convert if headque => self.res[r].convert.insert(0, id),
            St::Convert => self.res[r].convert.push(id),
            St::Granted => {
                // lkb_add_ordered: in front of the first lock whose
                // *rqmode* is below our granted mode.
                let mode = self.lk(id).grmode;
                let pos = self.res[r]
                    .grant
                    .iter()
                    .position(|&g| self.locks[&g].rqmode < mode);
                if pos.is_some_and(|i| i > 0) {
                    hit("grant queue insertion not at the head");
                }
                match pos {
                    Some(i) => self.res[r].grant.insert(i, id),
                    None => self.res[r].grant.push(id),
                }
            }
            St::None => unreachable!("add_lkb to no queue"),
        }
    }

    pub(super) fn del_lkb(&mut self, r: usize, id: u32) {
        let res = &mut self.res[r];
        match self.locks[&id].status {
            St::Waiting => res.wait.retain(|&x| x != id),
            St::Convert => res.convert.retain(|&x| x != id),
            St::Granted => res.grant.retain(|&x| x != id),
            St::None => unreachable!("del_lkb of a lock on no queue"),
        }
        self.lkm(id).status = St::None;
    }

    // ----- grant rules -----

    pub(super) fn queue_conflict(&self, queue: &[u32], id: u32) -> bool {
        let rq = self.lk(id).rqmode;
        queue
            .iter()
            .any(|&o| o != id && !compat(self.lk(o).grmode, rq))
    }

    pub(super) fn can_be_granted_raw(&self, r: usize, id: u32, now: bool) -> bool {
        let l = self.lk(id);
        let res = &self.res[r];
        let conv = l.grmode != IV;
        if l.exflags & EXPEDITE != 0 {
            return true;
        }
        if self.queue_conflict(&res.grant, id) {
            return false;
        }
        if self.queue_conflict(&res.convert, id) {
            return false;
        }
        if now && conv && l.exflags & QUECVT == 0 {
            return true;
        }
        if now && conv && l.exflags & QUECVT != 0 {
            return res.convert.is_empty();
        }
        if l.exflags & NOORDER != 0 {
            hit("NOORDER grant (not otherwise grantable)");
            return true;
        }
        if !now && conv && res.convert.first() == Some(&id) {
            return true;
        }
        if now && !conv && res.convert.is_empty() && res.wait.is_empty() {
            return true;
        }
        if !now && !conv && res.convert.is_empty() && res.wait.first() == Some(&id) {
            return true;
        }
        false
    }

    pub(super) fn conversion_deadlock(&self, r: usize, id2: u32) -> bool {
        let l2 = self.lk(id2);
        let mut ahead = false;
        for &id1 in &self.res[r].convert {
            if id1 == id2 {
                ahead = true;
                continue;
            }
            let l1 = self.lk(id1);
            if !ahead {
                if !compat(l2.grmode, l1.rqmode) {
                    return true;
                }
            } else if !compat(l2.grmode, l1.rqmode) && !compat(l1.grmode, l2.rqmode) {
                return true;
            }
        }
        false
    }

    /// `can_be_granted`: (granted?, conversion deadlock reported?).
    pub(super) fn can_be_granted(&mut self, r: usize, id: u32, now: bool) -> (bool, bool) {
        let rqmode = self.lk(id).rqmode;
        let is_convert = self.lk(id).grmode != IV;
        if self.can_be_granted_raw(r, id, now) {
            return (true, false);
        }
        let exflags = self.lk(id).exflags;
        if is_convert && exflags & NOQUEUE == 0 && self.conversion_deadlock(r, id) {
            if exflags & CONVDEADLK != 0 {
                hit("CONVDEADLK demotion");
                let l = self.lkm(id);
                l.grmode = NL;
                l.sbflags |= SBF_DEMOTED;
                return (false, false);
            }
            return (false, true);
        }
        let alt = if rqmode != PR && exflags & ALTPR != 0 {
            PR
        } else if rqmode != CW && exflags & ALTCW != 0 {
            CW
        } else {
            return (false, false);
        };
        self.lkm(id).rqmode = alt;
        if self.can_be_granted_raw(r, id, now) {
            hit("granted in the alternate mode");
            self.lkm(id).sbflags |= SBF_ALTMODE;
            (true, false)
        } else {
            self.lkm(id).rqmode = rqmode;
            (false, false)
        }
    }

    pub(super) fn grant_lock(&mut self, r: usize, id: u32) {
        self.set_lvb_lock(r, id);
        let l = self.lk(id);
        if l.grmode != l.rqmode {
            let st = l.status;
            self.lkm(id).grmode = self.lk(id).rqmode;
            if st != St::None {
                self.del_lkb(r, id);
            }
            self.add_lkb(r, id, St::Granted);
        }
        let l = self.lkm(id);
        l.rqmode = IV;
        l.highbast = 0;
    }

    pub(super) fn grant_lock_pending(&mut self, r: usize, id: u32) {
        self.grant_lock(r, id);
        self.queue_cast(id, 0);
    }

    /// 0 nothing, 1 back to granted, -1 removed.
    pub(super) fn revert_lock(&mut self, r: usize, id: u32) -> i32 {
        self.lkm(id).rqmode = IV;
        match self.lk(id).status {
            St::Convert => {
                self.del_lkb(r, id);
                self.add_lkb(r, id, St::Granted);
                1
            }
            St::Waiting => {
                self.del_lkb(r, id);
                self.lkm(id).grmode = IV;
                -1
            }
            St::Granted | St::None => 0,
        }
    }

    pub(super) fn grant_pending_convert(
        &mut self,
        r: usize,
        high: i8,
        mut cw: Option<&mut bool>,
    ) -> i8 {
        let mut quit = false;
        loop {
            let mut grant_restart = false;
            let mut demote_restart = false;
            let mut hi = IV;
            for id in self.res[r].convert.clone() {
                let demoted = self.lk(id).sbflags & SBF_DEMOTED != 0;
                let (ok, deadlk) = self.can_be_granted(r, id, false);
                if ok {
                    hit("grant_pending_convert grant");
                    if self.lk(id).rqmode == IV {
                        hit("lock granted in no mode (ALTPR/ALTCW quirk)");
                    }
                    self.grant_lock_pending(r, id);
                    grant_restart = true;
                    continue;
                }
                if !demoted && self.lk(id).sbflags & SBF_DEMOTED != 0 {
                    hit("grant_pending_convert demote restart");
                    demote_restart = true;
                    continue;
                }
                if deadlk {
                    let l = self.lk(id);
                    if l.exflags & NODLCKWT != 0 && l.highbast < l.rqmode {
                        let rq = l.rqmode;
                        hit("NODLCKWT self blocking AST");
                        self.queue_bast(id, rq);
                        self.lkm(id).highbast = rq;
                    }
                    continue;
                }
                let rq = self.lk(id).rqmode;
                hi = hi.max(rq);
                if rq == CW {
                    if let Some(c) = cw.as_deref_mut() {
                        *c = true;
                    }
                }
            }
            if grant_restart {
                continue;
            }
            if demote_restart && !quit {
                quit = true;
                continue;
            }
            return high.max(hi);
        }
    }

    pub(super) fn grant_pending_wait(&mut self, r: usize, high: i8, cw: &mut bool) -> i8 {
        let mut high = high;
        for id in self.res[r].wait.clone() {
            if self.can_be_granted(r, id, false).0 {
                hit("grant_pending_wait grant");
                self.grant_lock_pending(r, id);
            } else {
                let rq = self.lk(id).rqmode;
                high = high.max(rq);
                if rq == CW {
                    *cw = true;
                }
            }
        }
        high
    }

    pub(super) fn grant_pending_locks(&mut self, r: usize) {
        let mut cw = false;
        let high = self.grant_pending_convert(r, IV, Some(&mut cw));
        let high = self.grant_pending_wait(r, high, &mut cw);
        if high == IV {
            return;
        }
        for id in self.res[r].grant.clone() {
            let l = self.lk(id);
            let needed = if l.grmode == PR && cw {
                l.highbast < EX
            } else {
                l.highbast < high && !compat(l.grmode, high)
            };
            if needed {
                let mode = if cw && high == PR && l.grmode == PR {
                    hit("grant_pending CW blocking AST to a PR holder");
                    CW
                } else {
                    high
                };
                hit("grant_pending blocking AST");
                self.queue_bast(id, mode);
                self.lkm(id).highbast = high;
            }
        }
    }

    pub(super) fn send_bast_queue(&mut self, queue: Vec<u32>, id: u32) {
        let rq = self.lk(id).rqmode;
        for g in queue {
            if g == id {
                continue;
            }
            let gl = self.lk(g);
            let needed = if (gl.grmode == PR && rq == CW) || (gl.grmode == CW && rq == PR) {
                gl.highbast < EX
            } else {
                gl.highbast < rq && !compat(gl.grmode, rq)
            };
            if needed {
                hit("send_bast_queue blocking AST");
                self.queue_bast(g, rq);
                self.lkm(g).highbast = rq;
            }
        }
    }

    pub(super) fn send_blocking_asts(&mut self, r: usize, id: u32) {
        self.send_bast_queue(self.res[r].grant.clone(), id);
    }

    pub(super) fn send_blocking_asts_all(&mut self, r: usize, id: u32) {
        self.send_bast_queue(self.res[r].grant.clone(), id);
        self.send_bast_queue(self.res[r].convert.clone(), id);
    }
}
