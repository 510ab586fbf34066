//! The grant rules and the resource queues, after `fs/dlm/lock.c`:
//! `queue_conflict`, `_can_be_granted`, `can_be_granted` with conversion
//! deadlock handling (`conversion_deadlock_detect`, `CONVDEADLK`,
//! `NODLCKWT`) and the `ALTPR`/`ALTCW` alternative modes,
//! `grant_pending_locks` (`grant_pending_convert`, `grant_pending_wait`),
//! the decision to send blocking ASTs (`send_blocking_asts`,
//! `lock_requires_bast`, `modes_require_bast`), and the queue moves
//! (`add_lkb`, `del_lkb`, `_remove_lock`, `revert_lock`, `_grant_lock`).
//!
//! The order of every scan and every restart is the kernel's: the golden
//! traces check callback sequences that depend on it.

use dlm_proto::flags::{LockFlags, StatusFlags};

use crate::internal::{Lkid, NIL, STS_CONVERT, STS_GRANTED, STS_NONE, STS_WAITING};
use crate::store::{Chain, Which};
use crate::tables::{compat, CW, EX, IV, NL, PR};
use crate::Engine;

impl Engine {
    /// `queue_conflict`: is `id`'s requested mode incompatible with the
    /// granted mode of any other lock on the queue?
    fn queue_conflict(&self, head: u32, id: Lkid) -> bool {
        let rq = self.lk(id).rqmode;
        let mut it = head;
        while it != NIL {
            let this = self.lk(it);
            if it != id && !compat(this.grmode, rq) {
                return true;
            }
            it = this.q.next;
        }
        false
    }

    /// `_can_be_granted` with `recover` 0.
    pub(crate) fn _can_be_granted(&self, r: u32, id: Lkid, now: bool) -> bool {
        let lkb = self.lk(id);
        let rsb = self.rsb(r);
        let conv = lkb.grmode != IV;
        if lkb.exflags & LockFlags::EXPEDITE.bits() != 0 {
            return true;
        }
        if self.queue_conflict(rsb.grant.head, id) {
            return false;
        }
        if self.queue_conflict(rsb.convert.head, id) {
            return false;
        }
        let quecvt = lkb.exflags & LockFlags::QUECVT.bits() != 0;
        if now && conv && !quecvt {
            return true;
        }
        if now && conv && quecvt {
            return rsb.convert.head == NIL;
        }
        if lkb.exflags & LockFlags::NOORDER.bits() != 0 {
            return true;
        }
        if !now && conv && rsb.convert.head == id {
            return true;
        }
        if now && !conv && rsb.convert.head == NIL && rsb.wait.head == NIL {
            return true;
        }
        if !now && !conv && rsb.convert.head == NIL && rsb.wait.head == id {
            return true;
        }
        false
    }

    /// `conversion_deadlock_detect`.
    fn conversion_deadlock_detect(&self, r: u32, id2: Lkid) -> bool {
        let l2 = self.lk(id2);
        let mut ahead = false;
        let mut it = self.rsb(r).convert.head;
        while it != NIL {
            let l1 = self.lk(it);
            if it == id2 {
                ahead = true;
            } else if !ahead {
                if !compat(l2.grmode, l1.rqmode) {
                    return true;
                }
            } else if !compat(l2.grmode, l1.rqmode) && !compat(l1.grmode, l2.rqmode) {
                return true;
            }
            it = l1.q.next;
        }
        false
    }

    /// `can_be_granted`: `_can_be_granted`, then conversion-deadlock
    /// handling (`CONVDEADLK` demotes, otherwise `err`), then `ALTPR` /
    /// `ALTCW`.
    pub(crate) fn can_be_granted(
        &mut self,
        r: u32,
        id: Lkid,
        now: bool,
        err: Option<&mut bool>,
    ) -> bool {
        let rqmode = self.lk(id).rqmode;
        let is_convert = self.lk(id).grmode != IV;
        if self._can_be_granted(r, id, now) {
            return true;
        }
        if is_convert && self.can_be_queued(id) && self.conversion_deadlock_detect(r, id) {
            let lkb = self.lk_mut(id);
            if lkb.exflags & LockFlags::CONVDEADLK.bits() != 0 {
                lkb.grmode = NL;
                lkb.sbflags |= StatusFlags::DEMOTED.bits();
            } else if let Some(e) = err {
                *e = true;
            }
            return false;
        }
        let exflags = self.lk(id).exflags;
        let alt = if rqmode != PR && exflags & LockFlags::ALTPR.bits() != 0 {
            PR
        } else if rqmode != CW && exflags & LockFlags::ALTCW.bits() != 0 {
            CW
        } else {
            return false;
        };
        self.lk_mut(id).rqmode = alt;
        if self._can_be_granted(r, id, now) {
            self.lk_mut(id).sbflags |= StatusFlags::ALTMODE.bits();
            true
        } else {
            self.lk_mut(id).rqmode = rqmode;
            false
        }
    }

    /// `grant_pending_convert`: returns the highest blocked conversion mode
    /// (at least `high`); sets `cw` if a blocked conversion wants CW.
    pub(crate) fn grant_pending_convert(
        &mut self,
        r: u32,
        high: i8,
        mut cw: Option<&mut bool>,
    ) -> i8 {
        let mut quit = false;
        loop {
            let mut grant_restart = false;
            let mut demote_restart = false;
            let mut hi = IV;
            let mut it = self.rsb(r).convert.head;
            while it != NIL {
                let next = self.lk(it).q.next;
                let demoted = self.lk(it).sbflags & StatusFlags::DEMOTED.bits() != 0;
                let mut deadlk = false;
                if self.can_be_granted(r, it, false, Some(&mut deadlk)) {
                    self.grant_lock_pending(r, it);
                    grant_restart = true;
                    it = next;
                    continue;
                }
                if !demoted && self.lk(it).sbflags & StatusFlags::DEMOTED.bits() != 0 {
                    demote_restart = true;
                    it = next;
                    continue;
                }
                if deadlk {
                    let lkb = self.lk(it);
                    if lkb.exflags & LockFlags::NODLCKWT.bits() != 0 && lkb.highbast < lkb.rqmode {
                        let rq = lkb.rqmode;
                        self.queue_bast(it, rq);
                        self.lk_mut(it).highbast = rq;
                    }
                    it = next;
                    continue;
                }
                let rq = self.lk(it).rqmode;
                hi = hi.max(rq);
                if rq == CW {
                    if let Some(c) = cw.as_deref_mut() {
                        *c = true;
                    }
                }
                it = next;
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

    fn grant_pending_wait(&mut self, r: u32, mut high: i8, cw: &mut bool) -> i8 {
        let mut it = self.rsb(r).wait.head;
        while it != NIL {
            let next = self.lk(it).q.next;
            if self.can_be_granted(r, it, false, None) {
                self.grant_lock_pending(r, it);
            } else {
                let rq = self.lk(it).rqmode;
                high = high.max(rq);
                if rq == CW {
                    *cw = true;
                }
            }
            it = next;
        }
        high
    }

    // Blocking ASTs: who is told that a request waits.

    fn lock_requires_bast(&self, gr: Lkid, high: i8, cw: bool) -> bool {
        let g = self.lk(gr);
        if g.grmode == PR && cw {
            return g.highbast < EX;
        }
        g.highbast < high && !compat(g.grmode, high)
    }

    /// `grant_pending_locks`: grant what has become grantable, then send
    /// blocking ASTs for the highest mode still blocked.
    pub(crate) fn grant_pending_locks(&mut self, r: u32) {
        let mut cw = false;
        let high = self.grant_pending_convert(r, IV, Some(&mut cw));
        let high = self.grant_pending_wait(r, high, &mut cw);
        if high == IV {
            return;
        }
        let mut it = self.rsb(r).grant.head;
        while it != NIL {
            let next = self.lk(it).q.next;
            if self.lock_requires_bast(it, high, cw) {
                if cw && high == PR && self.lk(it).grmode == PR {
                    self.queue_bast(it, CW);
                } else {
                    self.queue_bast(it, high);
                }
                self.lk_mut(it).highbast = high;
            }
            it = next;
        }
    }

    fn modes_require_bast(&self, gr: Lkid, rq: Lkid) -> bool {
        let g = self.lk(gr);
        let rqmode = self.lk(rq).rqmode;
        if (g.grmode == PR && rqmode == CW) || (g.grmode == CW && rqmode == PR) {
            return g.highbast < EX;
        }
        g.highbast < rqmode && !compat(g.grmode, rqmode)
    }

    fn send_bast_queue(&mut self, head: u32, id: Lkid) {
        let rqmode = self.lk(id).rqmode;
        let mut it = head;
        while it != NIL {
            let next = self.lk(it).q.next;
            if it != id && self.modes_require_bast(it, id) {
                self.queue_bast(it, rqmode);
                self.lk_mut(it).highbast = rqmode;
            }
            it = next;
        }
    }

    pub(crate) fn send_blocking_asts(&mut self, r: u32, id: Lkid) {
        let head = self.rsb(r).grant.head;
        self.send_bast_queue(head, id);
    }

    pub(crate) fn send_blocking_asts_all(&mut self, r: u32, id: Lkid) {
        let head = self.rsb(r).grant.head;
        self.send_bast_queue(head, id);
        let head = self.rsb(r).convert.head;
        self.send_bast_queue(head, id);
    }

    // Queue moves.

    pub(crate) fn add_lkb(&mut self, r: u32, id: Lkid, status: u8) {
        let headque = self.lk(id).exflags & LockFlags::HEADQUE.bits() != 0;
        {
            let lkb = self.lk_mut(id);
            lkb.refs += 1;
            lkb.status = status;
        }
        match status {
            STS_WAITING if headque => self.list_push_front(Which::Wait(r), Chain::Queue, id),
            STS_WAITING => self.list_push_back(Which::Wait(r), Chain::Queue, id),
            STS_CONVERT if headque => self.list_push_front(Which::Convert(r), Chain::Queue, id),
            STS_CONVERT => self.list_push_back(Which::Convert(r), Chain::Queue, id),
            _ => {
                // lkb_add_ordered: before the first lock whose rqmode is
                // below our granted mode (in practice the head, since a
                // granted lock's rqmode is usually IV).
                let mode = self.lk(id).grmode;
                let mut it = self.rsb(r).grant.head;
                while it != NIL && self.lk(it).rqmode >= mode {
                    it = self.lk(it).q.next;
                }
                if it == NIL {
                    self.list_push_back(Which::Grant(r), Chain::Queue, id);
                } else {
                    self.list_insert_before(Which::Grant(r), Chain::Queue, it, id);
                }
            }
        }
    }

    pub(crate) fn del_lkb(&mut self, r: u32, id: Lkid) {
        let which = match self.lk(id).status {
            STS_WAITING => Which::Wait(r),
            STS_CONVERT => Which::Convert(r),
            _ => Which::Grant(r),
        };
        self.list_remove(which, Chain::Queue, id);
        let lkb = self.lk_mut(id);
        lkb.status = STS_NONE;
        lkb.refs -= 1;
    }

    pub(crate) fn remove_lock(&mut self, r: u32, id: Lkid) {
        // _remove_lock: off the queue, and the create reference goes.
        self.del_lkb(r, id);
        let lkb = self.lk_mut(id);
        lkb.grmode = IV;
        lkb.refs -= 1;
    }

    /// `revert_lock`: 0 did nothing, 1 moved back to granted, -1 removed.
    pub(crate) fn revert_lock(&mut self, r: u32, id: Lkid) -> i32 {
        self.lk_mut(id).rqmode = IV;
        match self.lk(id).status {
            STS_CONVERT => {
                self.del_lkb(r, id);
                self.add_lkb(r, id, STS_GRANTED);
                1
            }
            STS_WAITING => {
                self.del_lkb(r, id);
                let lkb = self.lk_mut(id);
                lkb.grmode = IV;
                lkb.refs -= 1;
                -1
            }
            _ => 0,
        }
    }

    pub(crate) fn grant_lock(&mut self, r: u32, id: Lkid) {
        self.set_lvb_lock(r, id);
        // _grant_lock
        let (gr, rq, st) = {
            let l = self.lk(id);
            (l.grmode, l.rqmode, l.status)
        };
        if gr != rq {
            self.lk_mut(id).grmode = rq;
            if st != STS_NONE {
                self.del_lkb(r, id);
            }
            self.add_lkb(r, id, STS_GRANTED);
        }
        let lkb = self.lk_mut(id);
        lkb.rqmode = IV;
        lkb.highbast = 0;
    }

    pub(crate) fn grant_lock_pending(&mut self, r: u32, id: Lkid) {
        self.grant_lock(r, id);
        self.queue_cast(id, 0);
    }
}
