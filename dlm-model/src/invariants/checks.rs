//! The invariants that hold after every step (queues and modes, owners,
//! compatibility of granted modes, resources, convert before wait,
//! blocking ASTs owed to holders), the checks of a step that must change
//! nothing, of a drained slot, and of the value blocks a step predicts.

use std::collections::BTreeSet;

use dlm_engine::{LockInfo, Queue};

use super::{fail, zombie_candidate, Before, LvbChange, Snap, World};
use crate::gen::flags::{CONVDEADLK, EXPEDITE, NODLCKWT, NOORDER};
use crate::gen::NAMES;

impl World {
    // -----------------------------------------------------------------
    // Invariants that hold after every step
    // -----------------------------------------------------------------

    pub(super) fn check_invariants(&self, after: &Snap) -> Result<(), String> {
        ensure!(
            self.e.lock_count() == after.len(),
            "lock_count {} but locks() has {}",
            self.e.lock_count(),
            after.len()
        );
        for l in after.values() {
            let odd = self.locks.get(&l.lkid).is_some_and(|t| t.zombie);
            // A lock is on exactly one queue, and its modes fit it.
            match l.queue {
                Some(Queue::Granted | Queue::Converting) if odd => {}
                Some(Queue::Granted) => ensure!(
                    l.granted.is_some() && l.requested.is_none(),
                    "granted lock {l:?} has a requested mode or no granted mode"
                ),
                Some(Queue::Converting) => ensure!(
                    l.granted.is_some() && l.requested.is_some(),
                    "converting lock {l:?} lacks a mode"
                ),
                Some(Queue::Waiting) => ensure!(
                    l.granted.is_none() && l.requested.is_some(),
                    "waiting lock {l:?} has a granted mode or no requested one"
                ),
                None => ensure!(
                    l.granted.is_none() && l.requested.is_none(),
                    "lock {l:?} on no queue has a mode"
                ),
            }
            // Owners are open, and the ones the checks expect.
            match l.owner {
                Some(o) => {
                    let slot = self.slots.iter().position(|s| s.open && s.eng == o);
                    let Some(slot) = slot else {
                        return fail(format!("lock {} has owner {o:?}, which is closed", l.lkid));
                    };
                    let want = self.tracked_owner(l.lkid);
                    ensure!(
                        want == Some((slot, self.slots[slot].gen)),
                        "lock {} belongs to slot {slot}, the test expected {want:?}",
                        l.lkid
                    );
                }
                None => ensure!(
                    self.tracked_owner(l.lkid).is_none(),
                    "lock {} lost its owner",
                    l.lkid
                ),
            }
        }
        // Granted modes on a resource (grant and convert queues) are
        // pairwise compatible.
        let held: Vec<&LockInfo> = after
            .values()
            .filter(|l| l.granted.is_some() && !self.locks.get(&l.lkid).is_some_and(|t| t.rogue))
            .collect();
        for (i, a) in held.iter().enumerate() {
            for b in &held[i + 1..] {
                if a.resource == b.resource {
                    let (ga, gb) = (a.granted.expect("held"), b.granted.expect("held"));
                    ensure!(
                        ga.compatible(gb),
                        "locks {} ({ga}) and {} ({gb}) on {:?} are both granted",
                        a.lkid,
                        b.lkid,
                        String::from_utf8_lossy(&a.resource)
                    );
                }
            }
        }
        // A resource exists exactly while some lock refers to it.
        for name in NAMES {
            let used = after.values().any(|l| l.resource == name);
            ensure!(
                self.e.resource_lvb(name).is_some() == used,
                "resource {:?}: exists {} but used by a lock {used}",
                String::from_utf8_lossy(name),
                self.e.resource_lvb(name).is_some()
            );
        }
        let in_use: BTreeSet<&[u8]> = after.values().map(|l| l.resource.as_slice()).collect();
        ensure!(
            self.e.resource_count() == in_use.len(),
            "resource_count {} but {} resources are in use",
            self.e.resource_count(),
            in_use.len()
        );
        // Closed owners have nothing to read.
        for (i, s) in self.slots.iter().enumerate() {
            if !s.open && self.usable(i as u8).is_some() {
                ensure!(
                    !self.e.has_callbacks(s.eng),
                    "closed slot {i} has callbacks"
                );
            }
        }
        Ok(())
    }

    /// The convert queue is served before the wait queue: with a lock
    /// still converting on a resource, no lock that was waiting (or is
    /// new) has been granted, unless NOORDER or EXPEDITE let it skip the
    /// order (`_can_be_granted`).
    pub(super) fn check_convert_before_wait(&self, b: &Snap, after: &Snap) -> Result<(), String> {
        for l in after.values() {
            let was_waiting = match b.get(&l.lkid) {
                None => true,
                Some(x) => x.queue == Some(Queue::Waiting),
            };
            if l.queue != Some(Queue::Granted) || !was_waiting {
                continue;
            }
            if l.flags.bits() & (NOORDER | EXPEDITE) != 0 {
                continue;
            }
            let converting = after
                .values()
                .find(|c| c.resource == l.resource && c.queue == Some(Queue::Converting));
            ensure!(
                converting.is_none(),
                "lock {} was granted from the wait queue while lock {} is still converting",
                l.lkid,
                converting.map_or(0, |c| c.lkid)
            );
        }
        Ok(())
    }

    /// Every granted holder blocking a blocked lock has been told so by a
    /// blocking AST of at least the blocked mode since it was last granted.
    /// Checked for the locks of a slot whose callbacks were all read.
    pub(super) fn check_blocking_asts(&self, slot: usize, after: &Snap) -> Result<(), String> {
        let gen = self.slots[slot].gen;
        for g in after.values() {
            let Some(t) = self.locks.get(&g.lkid) else {
                continue;
            };
            if g.queue != Some(Queue::Granted) || t.owner != Some((slot, gen)) {
                continue;
            }
            if t.tainted || t.nobast || t.adopted || t.ua.bastaddr == 0 || t.zombie || t.rogue {
                continue;
            }
            let Some(gm) = g.granted else {
                continue;
            };
            for w in after.values() {
                if w.resource != g.resource || w.lkid == g.lkid {
                    continue;
                }
                let Some(wm) = w.requested else {
                    continue;
                };
                if gm.compatible(wm) || self.waiter_exempt(w, after) {
                    continue;
                }
                if self.locks.get(&w.lkid).is_some_and(|x| x.zombie) {
                    continue;
                }
                let ws = self.locks.get(&w.lkid).map_or(0, |x| x.serial);
                if self.untold.contains(&(t.serial, ws)) {
                    continue;
                }
                ensure!(
                    t.max_bast.is_some_and(|m| m >= wm),
                    "lock {} (granted {gm}) blocks lock {} ({wm} {:?}) but was told only {:?}",
                    g.lkid,
                    w.lkid,
                    w.queue,
                    t.max_bast
                );
            }
        }
        Ok(())
    }

    /// A blocked lock that `grant_pending_convert` may leave out of the
    /// blocking-AST pass: one that may be in a conversion deadlock (some
    /// other conversion asks for a mode its granted mode blocks), or whose
    /// CONVDEADLK / NODLCKWT handling skips it.
    pub(super) fn waiter_exempt(&self, w: &LockInfo, after: &Snap) -> bool {
        if w.queue != Some(Queue::Converting) {
            return false;
        }
        if w.flags.bits() & (CONVDEADLK | NODLCKWT) != 0 {
            return true;
        }
        let Some(wg) = w.granted else {
            return true;
        };
        after.values().any(|x| {
            x.lkid != w.lkid
                && x.resource == w.resource
                && x.queue == Some(Queue::Converting)
                && x.requested.is_some_and(|m| !wg.compatible(m))
        })
    }

    pub(super) fn unchanged(&self, b: &Before, after: &Snap, what: &str) -> Result<(), String> {
        ensure!(
            b.locks == *after,
            "{what} changed the locks\n before {:#?}\n after {:#?}",
            b.locks,
            after
        );
        for (i, name) in NAMES.iter().enumerate() {
            ensure!(
                self.e.resource_lvb(name) == b.lvbs[i],
                "{what} changed the value block of {:?}",
                String::from_utf8_lossy(name)
            );
        }
        for (i, s) in self.slots.iter().enumerate() {
            if s.open {
                ensure!(
                    self.e.has_callbacks(s.eng) == b.callbacks[i],
                    "{what} changed the callbacks of slot {i}"
                );
            }
        }
        Ok(())
    }

    /// What holds for every lock of a slot once all its callbacks are read.
    pub(super) fn check_drained(&self, slot: usize, after: &Snap) -> Result<(), String> {
        ensure!(
            !self.e.has_callbacks(self.slots[slot].eng),
            "slot {slot} was drained but has callbacks"
        );
        let gen = self.slots[slot].gen;
        for l in after.values() {
            let Some(t) = self.locks.get(&l.lkid) else {
                continue;
            };
            if t.owner != Some((slot, gen)) || t.tainted || t.zombie {
                continue;
            }
            let want = u32::from(l.requested.is_some());
            ensure!(
                t.owed == want,
                "drained lock {} ({:?}) is owed {} completions, expected {want}",
                l.lkid,
                l.queue,
                t.owed
            );
        }
        self.check_blocking_asts(slot, after)
    }

    /// Checks and bookkeeping common to every step.
    pub(super) fn after_common(&mut self, b: &Before, after: &Snap) -> Result<(), String> {
        // Quirk 1 may only befall a conversion queued with an alternate
        // mode equal to its granted mode.
        for l in after.values() {
            let strange = match l.queue {
                Some(Queue::Granted) => l.granted.is_none(),
                Some(Queue::Converting) => l.granted.is_none() || l.requested.is_none(),
                _ => false,
            };
            let Some(t) = self.locks.get_mut(&l.lkid) else {
                continue;
            };
            if strange && !t.zombie {
                let eligible = b.locks.get(&l.lkid).is_some_and(zombie_candidate);
                ensure!(eligible, "lock {} is in an impossible state: {l:?}", l.lkid);
                t.zombie = true;
            }
        }
        self.check_invariants(after)?;
        self.check_convert_before_wait(&b.locks, after)?;
        self.retire(after)?;
        // Remember VALNOTVALID of every resource, also of one tossed in
        // this step, and check that a resource that comes back from the
        // toss list has it still, and no value block.
        let predicted = std::mem::take(&mut self.predicted);
        for (i, name) in NAMES.iter().enumerate() {
            match (b.lvbs[i], self.e.resource_lvb(name)) {
                (_, Some((lvb, vnv))) => {
                    if b.lvbs[i].is_none() {
                        ensure!(
                            lvb.is_none(),
                            "resource {:?} came back with a value block",
                            String::from_utf8_lossy(name)
                        );
                        let known = self.valnotvalid.get(*name).copied().unwrap_or(Some(false));
                        ensure!(
                            known.into_iter().all(|k| k == vnv),
                            "resource {:?} came back with VALNOTVALID {vnv}, it was {known:?}",
                            String::from_utf8_lossy(name)
                        );
                    }
                    self.valnotvalid.insert(name.to_vec(), Some(vnv));
                }
                (Some((_, vnv)), None) => {
                    let v = predicted.get(*name).copied().unwrap_or(Some(vnv));
                    self.valnotvalid.insert(name.to_vec(), v);
                }
                (None, None) => {}
            }
        }
        Ok(())
    }

    /// The value blocks of resources other than those in `changes` are
    /// untouched by the step; those in `changes` are as given.
    pub(super) fn check_lvbs(
        &mut self,
        b: &Before,
        changes: &[(&[u8], LvbChange)],
    ) -> Result<(), String> {
        for (i, name) in NAMES.iter().enumerate() {
            let Some(old) = b.lvbs[i] else {
                continue;
            };
            let mut want = old;
            let mut maybe = false;
            for (n, c) in changes {
                if n == name {
                    match *c {
                        LvbChange::Write(v) => want = (Some(v), false),
                        LvbChange::Invalidate => want.1 = true,
                        LvbChange::MaybeInvalidate => maybe = true,
                    }
                }
            }
            maybe &= !want.1;
            self.predicted
                .insert(name.to_vec(), (!maybe).then_some(want.1));
            let Some(new) = self.e.resource_lvb(name) else {
                continue;
            };
            if maybe && new.1 {
                want.1 = true;
            }
            ensure!(
                new == want,
                "value block of {:?}: {new:?}, expected {want:?}",
                String::from_utf8_lossy(name)
            );
        }
        Ok(())
    }
}
