//! Purges and closes, and the locks they release: each exactly once,
//! orphaned, unlocked or left dead the way the kernel leaves it.

use std::collections::BTreeMap;

use dlm_engine::Queue;
use dlm_proto::{Errno, LockMode};

use super::{alt_grant, fail, snap, state, zombie_candidate, Before, LvbChange, Snap, World};
use crate::gen::flags::{CONVDEADLK, FORCEUNLOCK, PERSISTENT};
use crate::gen::{purge_pid, NAMES};

impl World {
    pub(super) fn purge(
        &mut self,
        slot: u8,
        node: u8,
        pid_sel: u8,
        b: &Before,
    ) -> Result<(), String> {
        let Some((si, s)) = self.usable(slot) else {
            return Ok(());
        };
        let target = purge_pid(pid_sel, s.pid, &self.pids);
        let rv = self.e.purge(s.eng, u32::from(node), target, s.pid);
        let after = snap(&self.e);
        let expect = if !s.open {
            Err(Errno::EBADF)
        } else if node > 1 {
            Err(Errno::ENOBUFS)
        } else {
            Ok(())
        };
        ensure!(rv == expect, "purge returned {rv:?}, expected {expect:?}");
        if rv.is_err() {
            return self.unchanged(b, &after, "a refused purge");
        }
        let victims: Vec<u32> = if target == s.pid {
            b.locks
                .values()
                .filter(|l| self.tracked_owner(l.lkid) == Some((si, s.gen)))
                .map(|l| l.lkid)
                .collect()
        } else {
            b.locks
                .values()
                .filter(|l| {
                    self.locks.get(&l.lkid).is_some_and(|t| t.orphan)
                        && (target == 0 || l.pid == target)
                })
                .map(|l| l.lkid)
                .collect()
        };
        self.release(&victims, false, b, &after)?;
        if target == s.pid {
            ensure!(
                !self.e.has_callbacks(s.eng),
                "purged slot {si} still has callbacks"
            );
            // All its locks are released, except one that quirk 1 left on
            // a queue after it ended: it is on none of the owner's lists,
            // so purge_proc_locks cannot see it (the owner keeps it).
            for l in after.values() {
                if l.owner == Some(s.eng) {
                    ensure!(
                        self.locks.get(&l.lkid).is_some_and(|t| t.zombie),
                        "slot {si} still owns lock {} after purging its own",
                        l.lkid
                    );
                }
            }
            let kept: Vec<u32> = after
                .values()
                .filter(|l| l.owner == Some(s.eng))
                .map(|l| l.lkid)
                .collect();
            self.disown(si, s.gen);
            for id in kept {
                if let Some(t) = self.locks.get_mut(&id) {
                    t.owner = Some((si, s.gen));
                }
            }
        }
        Ok(())
    }

    pub(super) fn close(&mut self, slot: u8, b: &Before) -> Result<(), String> {
        let Some((si, s)) = self.usable(slot) else {
            return Ok(());
        };
        let rv = self.e.close_owner(s.eng);
        let after = snap(&self.e);
        let expect = if s.open { Ok(()) } else { Err(Errno::EBADF) };
        ensure!(rv == expect, "close returned {rv:?}, expected {expect:?}");
        if rv.is_err() {
            return self.unchanged(b, &after, "closing a closed owner");
        }
        self.slots[si].open = false;
        let mine: Vec<u32> = b
            .locks
            .values()
            .filter(|l| self.tracked_owner(l.lkid) == Some((si, s.gen)))
            .map(|l| l.lkid)
            .collect();
        self.release(&mine, true, b, &after)?;
        self.disown(si, s.gen);
        ensure!(
            self.e.read(s.eng).is_none(),
            "closed slot {si} can still read"
        );
        Ok(())
    }

    /// Locks released by a close (`closing`), a purge of the caller's own
    /// locks, or a purge of orphans: each is released exactly once.
    pub(super) fn release(
        &mut self,
        ids: &[u32],
        closing: bool,
        b: &Before,
        after: &Snap,
    ) -> Result<(), String> {
        let mut changes: Vec<(Vec<u8>, LvbChange)> = Vec::new();
        let mut passes: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
        // Value blocks: a released lock that gets unlocked (not orphaned,
        // not dead on the unlocking list, no FORCEUNLOCK of its own)
        // invalidates its resource's value block if it holds PW or EX by
        // then. A queued lock may have been granted (or demoted) by an
        // earlier unlock of the same owner before its own turn came.
        let high = |m: Option<LockMode>| m.is_some_and(|m| m >= LockMode::Pw);
        for &id in ids {
            let old = &b.locks[&id];
            let t = &self.locks[&id];
            let f = old.flags.bits();
            if f & FORCEUNLOCK != 0 || t.maybe_unlocking || (closing && f & PERSISTENT != 0) {
                continue;
            }
            if old.queue == Some(Queue::Granted) && high(old.granted) && !t.zombie {
                changes.push((old.resource.clone(), LvbChange::Invalidate));
            } else if high(old.granted) || high(old.requested) {
                changes.push((old.resource.clone(), LvbChange::MaybeInvalidate));
            }
        }
        for &id in ids {
            let old = &b.locks[&id];
            let t = self.locks.get(&id).expect("known").clone();
            *passes.entry(old.resource.clone()).or_default() += 1;
            let flags = old.flags.bits();
            let ended = old.queue.is_none();
            let unsure = t.tainted || t.maybe_unlocking;
            let forced = flags & FORCEUNLOCK != 0;
            let now = after.get(&id);
            // Quirk 1 can strike during the release itself, as an earlier
            // unlock's grant pass runs; a lock already struck is beyond
            // the rules below (it may even have ended on its queue).
            let eligible = zombie_candidate(old);
            if t.zombie || eligible {
                if let Some(l) = now {
                    ensure!(
                        l.owner.is_none() || !closing,
                        "lock {id} of a closed owner still has one"
                    );
                    let tl = self.locks.get_mut(&id).expect("known");
                    tl.orphan = closing && flags & PERSISTENT != 0 && !tl.maybe_unlocking;
                    tl.zombie = true;
                }
                continue;
            }
            if ended && !t.orphan {
                // Ended locks go with their unread callbacks.
                if !unsure {
                    ensure!(now.is_none(), "ended lock {id} outlived its owner: {now:?}");
                }
                continue;
            }
            if closing && flags & PERSISTENT != 0 && unsure {
                // Orphaned, or dead if it was on the unlocking list.
                if let Some(l) = now {
                    ensure!(l.owner.is_none(), "persistent lock {id} still has an owner");
                    self.locks.get_mut(&id).expect("known").orphan = !t.maybe_unlocking;
                }
                continue;
            }
            if closing && flags & PERSISTENT != 0 {
                // Orphaned, with what was in progress cancelled.
                let Some(l) = now else {
                    return fail(format!("persistent lock {id} was not orphaned"));
                };
                // What was in progress is cancelled, unless an unlock of
                // another of the owner's locks granted it first.
                let ok = match old.queue {
                    Some(Queue::Waiting) => l.queue.is_none() || l.queue == Some(Queue::Granted),
                    Some(Queue::Converting) => {
                        let demoted = flags & CONVDEADLK != 0 && l.granted == Some(LockMode::Nl);
                        l.queue == Some(Queue::Granted)
                            && (l.granted == old.granted
                                || l.granted == old.requested
                                || alt_grant(l)
                                || demoted)
                    }
                    _ => state(l) == state(old),
                };
                ensure!(
                    l.owner.is_none() && ok,
                    "orphaned lock {id}: {old:?} became {l:?}"
                );
                self.locks.get_mut(&id).expect("known").orphan = true;
                continue;
            }
            if t.orphan || !closing || flags & PERSISTENT == 0 {
                // Force-unlocked with IVVALBLK, unless its own flags carry
                // FORCEUNLOCK already (then the kernel leaves it queued).
                if forced || unsure {
                    if let Some(l) = now {
                        ensure!(l.owner.is_none(), "released lock {id} still has an owner");
                    }
                } else {
                    ensure!(now.is_none(), "released lock {id} is still there: {now:?}");
                }
                let t = self.locks.get_mut(&id).expect("known");
                t.orphan = false;
            }
        }
        // A released conversion from PW may have been granted in its
        // alternate mode (writing the value block) before its own turn.
        let written = ids.iter().any(|id| {
            let o = &b.locks[id];
            o.queue == Some(Queue::Converting) && high(o.granted)
        });
        if !written
            && self.pending_writes(&b.locks, after, 0).is_empty()
            && ids.iter().all(|id| {
                b.locks[id].flags.bits() & FORCEUNLOCK == 0
                    && !self.locks[id].tainted
                    && !self.locks[id].maybe_unlocking
            })
        {
            let c: Vec<(&[u8], LvbChange)> =
                changes.iter().map(|(n, c)| (n.as_slice(), *c)).collect();
            self.check_lvbs(b, &c)?;
        } else {
            for name in NAMES {
                self.predicted.insert(name.to_vec(), None);
            }
        }
        for (res, n) in passes {
            self.bump(&res, n, None, &b.locks, after);
        }
        Ok(())
    }
}
