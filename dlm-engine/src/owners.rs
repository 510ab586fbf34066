//! Owners and orphans, after `fs/dlm/user.c` and `fs/dlm/lock.c`: an
//! owner is an open lockspace fd (`struct dlm_user_proc`); closing it
//! (`device_close`, `dlm_clear_proc_locks`) force-unlocks its locks with
//! `IVVALBLK`, except persistent ones, which become orphans
//! (`orphan_proc_lock`) that keep protecting their resources until they
//! are adopted (`dlm_user_adopt_orphan`) or purged (`DLM_USER_PURGE`:
//! `purge_proc_locks` for the caller's own locks, `do_purge` for
//! orphans).

use dlm_proto::error::Errno;
use dlm_proto::flags::LockFlags;

use crate::internal::{
    Lkid, Proc, IFL_DEAD, IFL_ON_OWNQ, IFL_ORPHAN, IFL_UNLOCKING, NIL, STS_NONE,
};
use crate::store::{Chain, Which};
use crate::{Engine, LockParams};

impl Engine {
    /// A new owner with `pid` (`device_open`'s `struct dlm_user_proc`):
    /// its slot number.
    pub(crate) fn add_proc(&mut self, pid: u32) -> u32 {
        let proc = Proc {
            pid,
            ..Default::default()
        };
        match self.free_procs.pop() {
            Some(i) => {
                self.procs[i as usize] = Some(proc);
                i
            }
            None => {
                self.procs.push(Some(proc));
                (self.procs.len() - 1) as u32
            }
        }
    }

    /// `dlm_clear_proc_locks` for open owner `o`, then the owner's slot is
    /// freed.
    pub(crate) fn clear_proc_locks(&mut self, o: u32) {
        loop {
            // del_proc_lock
            let id = self.proc(o).locks.head;
            if id == NIL {
                break;
            }
            self.list_remove(Which::Locks(o), Chain::Own, id);
            let persistent = self.lk(id).exflags & LockFlags::PERSISTENT.bits() != 0;
            self.lk_mut(id).iflags |= if persistent { IFL_ORPHAN } else { IFL_DEAD };
            if persistent {
                self.orphan_proc_lock(id);
            } else {
                self.unlock_proc_lock(id);
            }
            // The reference of the owner's lock list.
            self.put_lkb(id);
        }
        self.release_unlocking(o);
        self.drop_asts(o);
        // A lock can end while still on a resource queue (one the
        // ALTPR/ALTCW quirk left granted in no mode, then cancelled or
        // refused with an IV-mode completion): it is on none of the
        // owner's lists, so the loops above miss it. Linux 6.1 leaves it
        // pointing at the freed proc (its next callback is a use after
        // free); mark it dead, so that its callbacks are dropped.
        for lkb in self.locks.iter_mut().flatten() {
            if lkb.owner == o && lkb.iflags & (IFL_ORPHAN | IFL_DEAD) == 0 {
                lkb.iflags |= IFL_DEAD;
            }
        }
        self.procs[o as usize] = None;
        self.free_procs.push(o);
    }

    /// `orphan_proc_lock`: move to the orphan list, then cancel whatever is
    /// in progress (with unlock flags 0, as the kernel does).
    fn orphan_proc_lock(&mut self, id: Lkid) {
        self.lk_mut(id).refs += 1;
        self.list_push_back(Which::Orphans, Chain::Own, id);
        self.lk_mut(id).iflags |= IFL_ON_OWNQ;
        if self.validate_unlock_args(id, 0).is_ok() {
            self.cancel_lock(id);
        }
    }

    /// `unlock_proc_lock`: `FORCEUNLOCK | IVVALBLK` from whatever queue.
    fn unlock_proc_lock(&mut self, id: Lkid) {
        let flags = (LockFlags::FORCEUNLOCK | LockFlags::IVVALBLK).bits();
        if self.validate_unlock_args(id, flags).is_ok() {
            self.unlock_lock(id);
        }
    }

    /// `purge_proc_locks`: the owner's own locks go, silently.
    pub(crate) fn purge_proc_locks(&mut self, o: u32) {
        loop {
            let id = self.proc(o).locks.head;
            if id == NIL {
                break;
            }
            self.list_remove(Which::Locks(o), Chain::Own, id);
            self.lk_mut(id).iflags |= IFL_DEAD;
            self.unlock_proc_lock(id);
            self.put_lkb(id);
        }
        self.release_unlocking(o);
        self.drop_asts(o);
    }

    /// The owner's in-progress unlocks go with it: marked dead, and their
    /// list reference dropped.
    fn release_unlocking(&mut self, o: u32) {
        loop {
            let id = self.proc(o).unlocking.head;
            if id == NIL {
                break;
            }
            self.list_remove(Which::Unlocking(o), Chain::Own, id);
            let lkb = self.lk_mut(id);
            lkb.iflags &= !IFL_UNLOCKING;
            lkb.iflags |= IFL_DEAD;
            self.put_lkb(id);
        }
    }

    /// The owner list a lock with `IFL_ON_OWNQ` (and not an orphan) is on.
    pub(crate) fn own_list(&self, id: Lkid) -> Which {
        let l = self.lk(id);
        if l.iflags & IFL_UNLOCKING != 0 {
            Which::Unlocking(l.owner)
        } else {
            Which::Locks(l.owner)
        }
    }

    /// `do_purge`: unlock and free the orphans of `pid` (every orphan for
    /// pid 0).
    pub(crate) fn do_purge(&mut self, pid: u32) {
        let mut it = self.orphans.head;
        while it != NIL {
            let next = self.lk(it).own.next;
            if pid == 0 || self.lk(it).pid == pid {
                if self.lk(it).status != STS_NONE {
                    self.unlock_proc_lock(it);
                }
                // An orphan whose waiting request was cancelled when its
                // owner closed is on no queue; Linux 6.1 would unlink it
                // a second time here (and trip an assertion). The engine
                // just frees it.
                self.list_remove(Which::Orphans, Chain::Own, it);
                self.put_lkb(it);
            }
            it = next;
        }
    }

    /// `dlm_user_adopt_orphan`: the first orphan on `p.name` granted in
    /// `p.mode` becomes owner `o`'s, with no callback; `EAGAIN` if the
    /// orphans there are in other modes, `ENOENT` if there are none.
    pub(crate) fn user_adopt_orphan(&mut self, o: u32, p: &LockParams<'_>) -> Result<u32, Errno> {
        let mut found_other_mode = false;
        let mut found = NIL;
        let mut it = self.orphans.head;
        while it != NIL {
            let lkb = self.lk(it);
            let next = lkb.own.next;
            let name = &self.rsbs[lkb.rsb as usize]
                .as_ref()
                .map(|r| r.name.as_bytes());
            if *name == Some(p.name) {
                if i32::from(lkb.grmode) != i32::from(p.mode) {
                    found_other_mode = true;
                } else {
                    found = it;
                    break;
                }
            }
            it = next;
        }
        if found == NIL {
            return Err(if found_other_mode {
                Errno::EAGAIN
            } else {
                Errno::ENOENT
            });
        }
        let id = found;
        self.list_remove(Which::Orphans, Chain::Own, id);
        {
            let lkb = self.lk_mut(id);
            lkb.iflags &= !IFL_ORPHAN;
            lkb.exflags = p.flags;
            lkb.pid = p.pid;
            lkb.owner = o;
            lkb.ua = p.args.into();
        }
        // The orphan list's reference becomes the owner list's.
        self.list_push_back(Which::Locks(o), Chain::Own, id);
        Ok(id)
    }
}
