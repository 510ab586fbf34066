//! Unlocks, cancels and deadlock cancels: what the engine must answer,
//! and what becomes of the lock and its resource's value block.

use dlm_engine::{Queue, UnlockParams};
use dlm_proto::{Errno, LockMode};

use super::rules::unlock_flags_valid;
use super::{fail, snap, with_flags, Before, LvbChange, World};
use crate::gen::flags::{CANCEL, FORCEUNLOCK, IVVALBLK, VALBLK};
use crate::gen::{lvb_bytes, user_args, LockSel};
use dlm_engine::KernelModel;

impl World {
    pub(super) fn unlock(
        &mut self,
        slot: u8,
        sel: LockSel,
        flags: u32,
        lvb: u8,
        args: u8,
        b: &Before,
    ) -> Result<(), String> {
        let Some((_, s)) = self.usable(slot) else {
            return Ok(());
        };
        let lkid = self.resolve(sel, &b.locks);
        let ua = user_args(args);
        let value = lvb_bytes(lvb);
        let rv = self.e.unlock(
            s.eng,
            &UnlockParams {
                lkid,
                flags,
                lvb: value,
                args: ua,
            },
        );
        let after = snap(&self.e);
        let old = b.locks.get(&lkid);
        // Ended, or an orphan on no queue (which the engine treats as ended:
        // Linux 6.1 would oops).
        let ended = old.is_some_and(|o| o.queue.is_none());
        let expect = if !s.open {
            Err(Errno::EBADF)
        } else if old.is_none() {
            Err(Errno::ENOENT)
        } else if !unlock_flags_valid(flags) {
            Err(Errno::EINVAL)
        } else if ended {
            Err(Errno::ENOENT)
        } else if flags & FORCEUNLOCK != 0 && old.is_some_and(|o| o.flags.bits() & FORCEUNLOCK != 0)
        {
            // A FORCEUNLOCK over an earlier one: validate_unlock_args still
            // has rv = -EINVAL when it finds that.
            Err(Errno::EINVAL)
        } else {
            Ok(())
        };
        // A zombie (quirk 1) may have ended while on its queue.
        let zombie = self.locks.get(&lkid).is_some_and(|t| t.zombie);
        let zombie_ended = zombie && rv == Err(Errno::ENOENT);
        ensure!(
            rv == expect || zombie_ended,
            "unlock of {lkid} returned {rv:?}, expected {expect:?}"
        );
        if s.open {
            if let Some(t) = self.locks.get_mut(&lkid) {
                t.change_ua(|u| {
                    if ua.castparam != 0 {
                        u.castparam = ua.castparam;
                    }
                    u.lksb = ua.lksb;
                });
                if t.buf.is_some() {
                    t.buf = Some(value);
                }
            }
        }
        if rv.is_err() {
            return self.unchanged(b, &after, "a refused unlock");
        }
        let old = old.expect("exists");
        let t = self.locks.get_mut(&lkid).expect("known");
        if t.owner.is_some() && old.queue == Some(Queue::Granted) {
            t.owed += 1;
        }
        let (tracked, has_lvb) = (t.owner.is_some(), t.attached);
        match after.get(&lkid) {
            _ if zombie => {}
            Some(l) => ensure!(
                l.queue.is_none() && (tracked || l.owner.is_none()),
                "unlocked lock {lkid} is still {l:?}"
            ),
            // 6.12: gone at once, its EUNLOCK waiting in the owner's queue.
            None => ensure!(
                !tracked || self.model == KernelModel::V6_12,
                "unlocked lock {lkid} is gone before its EUNLOCK was read"
            ),
        }
        // The value block: written from PW or EX with VALBLK, marked
        // invalid with IVVALBLK (both as ORed into the lock's flags).
        let all = old.flags.bits() | flags;
        let mut changes = Vec::new();
        if old.granted.is_some_and(|g| g >= LockMode::Pw) {
            if all & IVVALBLK != 0 {
                changes.push((old.resource.as_slice(), LvbChange::Invalidate));
            } else if all & VALBLK != 0 && has_lvb {
                changes.push((old.resource.as_slice(), LvbChange::Write(value)));
            }
        }
        changes.extend(self.pending_writes(&b.locks, &after, lkid));
        self.check_lvbs(b, &changes)?;
        let res = old.resource.clone();
        self.bump(&res, 1, Some(lkid), &b.locks, &after);
        if let Some(t) = self.locks.get_mut(&lkid) {
            // Its EUNLOCK may have been dropped, leaving it on its owner's
            // list, from which the unlock moves it to "unlocking".
            t.maybe_unlocking |= t.owner.is_some() && t.tainted;
        }
        Ok(())
    }

    /// Cancel (`args` given) or deadlock cancel.
    pub(super) fn cancel(
        &mut self,
        slot: u8,
        sel: LockSel,
        flags: u32,
        args: Option<u8>,
        b: &Before,
    ) -> Result<(), String> {
        let Some((_, s)) = self.usable(slot) else {
            return Ok(());
        };
        let lkid = self.resolve(sel, &b.locks);
        let rv = match args {
            Some(a) => self.e.unlock(
                s.eng,
                &UnlockParams {
                    lkid,
                    flags,
                    lvb: lvb_bytes(0x11),
                    args: user_args(a),
                },
            ),
            None => self.e.deadlock_cancel(s.eng, lkid, flags),
        };
        let after = snap(&self.e);
        let old = b.locks.get(&lkid);
        let expect = if !s.open {
            Err(Errno::EBADF)
        } else if old.is_none() {
            Err(Errno::ENOENT)
        } else if !unlock_flags_valid(flags) {
            Err(Errno::EINVAL)
        } else if old.is_some_and(|o| o.queue.is_none()) {
            Err(Errno::ENOENT)
        } else if old.is_some_and(|o| {
            let f = o.flags.bits();
            if flags & CANCEL != 0 {
                f & CANCEL != 0
            } else {
                flags & FORCEUNLOCK != 0 && f & FORCEUNLOCK != 0
            }
        }) {
            // A cancel over an earlier cancel, or a FORCEUNLOCK over an
            // earlier one, is EINVAL (rv is still -EINVAL there).
            Err(Errno::EINVAL)
        } else {
            Ok(())
        };
        let zombie = self.locks.get(&lkid).is_some_and(|t| t.zombie);
        let zombie_ended = zombie && rv == Err(Errno::ENOENT);
        ensure!(
            rv == expect || zombie_ended,
            "cancel of {lkid} returned {rv:?}, expected {expect:?}"
        );
        if let (Some(a), true) = (args, s.open) {
            if let Some(t) = self.locks.get_mut(&lkid) {
                let ua = user_args(a);
                t.change_ua(|u| {
                    if ua.castparam != 0 {
                        u.castparam = ua.castparam;
                    }
                    u.lksb = ua.lksb;
                });
            }
        }
        if rv.is_err() {
            return self.unchanged(b, &after, "a refused cancel");
        }
        let old = old.expect("exists");
        match old.queue {
            _ if zombie => {}
            Some(Queue::Waiting) => match after.get(&lkid) {
                Some(l) => ensure!(l.queue.is_none(), "cancelled request {lkid} is still {l:?}"),
                None => ensure!(
                    self.tracked_owner(lkid).is_none() || self.model == KernelModel::V6_12,
                    "cancelled request {lkid} is gone before its completion was read"
                ),
            },
            Some(Queue::Converting) => {
                let l = after.get(&lkid);
                ensure!(
                    l.is_some_and(|l| l.queue == Some(Queue::Granted) && l.granted == old.granted),
                    "cancelled conversion {lkid} did not go back to {:?}: {l:?}",
                    old.granted
                );
            }
            // Nothing to cancel: nothing happens, and no callback comes.
            _ => {
                return self.unchanged(
                    b,
                    &with_flags(&after, lkid, old),
                    "a cancel with nothing to cancel",
                );
            }
        }
        let changes = self.pending_writes(&b.locks, &after, lkid);
        self.check_lvbs(b, &changes)?;
        let res = old.resource.clone();
        self.bump(&res, 1, Some(lkid), &b.locks, &after);
        Ok(())
    }
}
