//! Procs and orphans (`fs/dlm/user.c` `device_close`,
//! `dlm_clear_proc_locks`, `dlm_user_purge`; `fs/dlm/lock.c`
//! `purge_proc_locks`, `do_purge`): closing a proc, which orphans its
//! PERSISTENT locks and unlocks the rest, and purging.

use dlm_proto::Errno;

use super::coverage::hit;
use super::tables::OUR_NODE;
use super::{Model, St};
use crate::gen::flags::PERSISTENT;

impl Model {
    /// The device's purge (`DLM_USER_PURGE`) from proc `p`, whose pid is
    /// `caller_pid`: its own locks if `pid` is its own, otherwise the
    /// orphans of `pid` (every orphan for 0).
    pub fn purge(&mut self, p: usize, nodeid: u32, pid: u32, caller_pid: u32) -> Result<(), Errno> {
        if !self.is_open(p) {
            return Err(Errno::EBADF);
        }
        if nodeid != 0 && nodeid != OUR_NODE {
            return Err(Errno::ENOBUFS);
        }
        if pid == caller_pid {
            hit("purge of the caller's own locks");
            while let Some(&id) = self.proc_mut(p).locks.first() {
                self.proc_mut(p).locks.remove(0);
                self.lkm(id).dead = true;
                self.unlock_proc_lock(id);
            }
            self.release_unlocking_and_asts(p);
        } else {
            // do_purge: pid 0 means every orphan.
            for id in self.orphans.clone() {
                if pid != 0 && self.lk(id).pid != pid {
                    continue;
                }
                hit("orphan purged");
                self.unlock_proc_lock(id);
                self.orphans.retain(|&x| x != id);
            }
        }
        self.collect();
        Ok(())
    }

    pub(super) fn release_unlocking_and_asts(&mut self, p: usize) {
        for id in std::mem::take(&mut self.proc_mut(p).unlocking) {
            hit("unlocking lock released on close or purge");
            self.lkm(id).dead = true;
        }
        for id in std::mem::take(&mut self.proc_mut(p).asts) {
            self.lkm(id).cbs.clear();
        }
        self.proc_mut(p).records.clear();
    }

    /// Closes proc `p` (`device_close`): its PERSISTENT locks become
    /// orphans, the others are unlocked, and its callbacks are dropped.
    pub fn close(&mut self, p: usize) -> Result<(), Errno> {
        if !self.is_open(p) {
            return Err(Errno::EBADF);
        }
        while let Some(&id) = self.proc_mut(p).locks.first() {
            self.proc_mut(p).locks.remove(0);
            if self.lk(id).exflags & PERSISTENT != 0 {
                hit("lock orphaned on close");
                self.lkm(id).orphan = true;
                self.orphans.push(id);
                if self.validate_unlock_args(id, 0).is_ok() {
                    self.cancel_lock(id);
                }
            } else {
                hit("lock unlocked on close");
                self.lkm(id).dead = true;
                self.unlock_proc_lock(id);
                if self.lk(id).status != St::None {
                    hit("dead lock left queued (FORCEUNLOCK in its flags)");
                }
            }
        }
        self.release_unlocking_and_asts(p);
        // Not the kernel: a lock that ended while still on a queue (after
        // the ALTPR/ALTCW quirk) is on none of the owner's lists; Linux
        // 6.1 leaves it pointing at the freed proc. The engine marks it
        // dead.
        for l in self.locks.values_mut() {
            if l.owner == p && !l.orphan && !l.dead && l.status != St::None {
                hit("ended lock still queued when its owner closed");
                l.dead = true;
            }
        }
        self.procs[p] = None;
        self.collect();
        Ok(())
    }
}
