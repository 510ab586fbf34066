//! The checks' bookkeeping after a step: callback bounds, retired locks,
//! holders the kernel owes no blocking AST, owners that are gone, new
//! locks, the user's value block buffer and the writes a grant pass makes.

use std::collections::BTreeMap;

use dlm_engine::{LockInfo, Queue};
use dlm_proto::records::{UserArgs, LVB_LEN};

use super::rules::lvb_writes;
use super::{fail, state, Lvb, LvbChange, Snap, TLock, World, KERNEL_CALLBACKS};
use crate::gen::flags::{IVVALBLK, NODLCKWT, VALBLK};
use dlm_engine::KernelModel;

impl TLock {
    /// Change the user arguments, remembering the old ones (records
    /// queued before may still echo them under 6.12).
    pub(super) fn change_ua(&mut self, f: impl FnOnce(&mut UserArgs)) {
        let old = self.ua;
        f(&mut self.ua);
        if !self.past_ua.contains(&old) {
            self.past_ua.push(old);
        }
    }

    /// Whether `pick`'s fields of the current arguments or (`any_past`) of
    /// earlier ones equal `want`.
    pub(super) fn echoes<T: PartialEq>(
        &self,
        any_past: bool,
        want: T,
        pick: impl Fn(&UserArgs) -> T,
    ) -> bool {
        pick(&self.ua) == want || (any_past && self.past_ua.iter().any(|u| pick(u) == want))
    }
}

impl World {
    // -----------------------------------------------------------------
    // Bookkeeping after a step
    // -----------------------------------------------------------------

    /// Raise the callback bound of every lock on `res` that the step may
    /// have sent callbacks to; `passes` is how many grant passes the step
    /// ran there.
    pub(super) fn bump(
        &mut self,
        res: &[u8],
        passes: u32,
        target: Option<u32>,
        b: &Snap,
        after: &Snap,
    ) {
        for (id, t) in self.locks.iter_mut() {
            if t.name != res || t.owner.is_none() {
                continue;
            }
            let changed = match (b.get(id), after.get(id)) {
                (Some(x), Some(y)) => state(x) != state(y),
                _ => true,
            };
            let cast = u32::from(changed || target == Some(*id));
            let bast = if t.ua.bastaddr != 0 || t.nobast {
                passes.max(1)
            } else {
                0
            };
            let flags = |s: &Snap| s.get(id).map_or(0, |l| l.flags.bits());
            let own = u32::from((flags(b) | flags(after)) & NODLCKWT != 0);
            t.bound += cast + bast + own;
            // Linux 6.12 has no cap: nothing is dropped.
            if t.bound > KERNEL_CALLBACKS && self.model == KernelModel::V6_1 {
                t.tainted = true;
            }
        }
    }

    /// Locks that are gone: each must have had every completion read.
    pub(super) fn retire(&mut self, after: &Snap) -> Result<(), String> {
        let gone: Vec<u32> = self
            .locks
            .keys()
            .filter(|id| !after.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            let t = self.locks.remove(&id).expect("known");
            if self.model == KernelModel::V6_12 && t.owner.is_some() && (t.owed > 0 || t.zombie) {
                // Gone as its last operation completed; its callbacks
                // wait in its owner's queue.
                self.ghosts.push((id, t));
                continue;
            }
            if t.owner.is_some() && !t.tainted && !t.zombie {
                ensure!(
                    t.owed == 0,
                    "lock {id} is gone with {} completions unread",
                    t.owed
                );
            }
        }
        // Pairs naming a lock that is no longer granted or no longer
        // blocked are moot.
        let live: BTreeMap<u64, &LockInfo> = after
            .values()
            .filter_map(|l| self.locks.get(&l.lkid).map(|t| (t.serial, l)))
            .collect();
        self.untold.retain(|(g, w)| {
            live.get(g).is_some_and(|l| l.queue == Some(Queue::Granted))
                && live.get(w).is_some_and(|l| l.requested.is_some())
        });
        Ok(())
    }

    /// Holder/waiter pairs for holders granted in this step by a path with
    /// no blocking-AST pass after it.
    pub(super) fn mark_untold(&mut self, granted: &[u32], after: &Snap) {
        for &g in granted {
            let (Some(gl), Some(gt)) = (after.get(&g), self.locks.get(&g)) else {
                continue;
            };
            let Some(gm) = gl.granted else {
                continue;
            };
            for w in after.values() {
                if w.resource == gl.resource && w.requested.is_some_and(|m| !gm.compatible(m)) {
                    if let Some(wt) = self.locks.get(&w.lkid) {
                        self.untold.insert((gt.serial, wt.serial));
                    }
                }
            }
        }
    }

    /// The owner is gone (closed or purged): its locks are no longer
    /// tracked, and what remains of them is orphans or dead locks.
    pub(super) fn disown(&mut self, slot: usize, gen: u32) {
        // Its unread callbacks went with it.
        self.ghosts.retain(|(_, t)| t.owner != Some((slot, gen)));
        for t in self.locks.values_mut() {
            if t.owner == Some((slot, gen)) {
                t.owner = None;
            }
        }
    }

    pub(super) fn new_lock(
        &mut self,
        id: u32,
        name: &[u8],
        owner: (usize, u32),
        ua: UserArgs,
        valblk: bool,
    ) {
        let serial = self.next_serial;
        self.next_serial += 1;
        self.locks.insert(
            id,
            TLock {
                serial,
                name: name.to_vec(),
                owner: Some(owner),
                owed: 1,
                bound: 0,
                tainted: false,
                ua,
                past_ua: Vec::new(),
                buf: valblk.then_some([0; LVB_LEN]),
                attached: valblk,
                nobast: ua.bastaddr == 0,
                adopted: false,
                max_bast: None,
                last_status: 0,
                last_flags: 0,
                orphan: false,
                maybe_unlocking: false,
                zombie: false,
                rogue: false,
            },
        );
    }

    /// A conversion's value block goes into the lock's (allocated first
    /// if VALBLK is given), checked or not.
    pub(super) fn take_lvb(&mut self, id: u32, flags: u32, value: Lvb) {
        if let Some(t) = self.locks.get_mut(&id) {
            if flags & VALBLK != 0 || t.buf.is_some() {
                t.buf = Some(value);
            }
        }
    }

    /// Value-block writes by queued conversions from PW that a grant pass
    /// granted in a lower (alternate) mode.
    pub(super) fn pending_writes<'a>(
        &self,
        b: &'a Snap,
        after: &Snap,
        target: u32,
    ) -> Vec<(&'a [u8], LvbChange)> {
        let mut v = Vec::new();
        for x in b.values() {
            let (Some(Queue::Converting), Some(gr)) = (x.queue, x.granted) else {
                continue;
            };
            let Some(now) = after.get(&x.lkid) else {
                continue;
            };
            let (Some(Queue::Granted), Some(g)) = (now.queue, now.granted) else {
                continue;
            };
            if x.lkid == target || !lvb_writes(gr, g) || g == gr {
                continue;
            }
            let f = x.flags.bits();
            if f & IVVALBLK != 0 {
                v.push((x.resource.as_slice(), LvbChange::Invalidate));
            } else if let (true, Some(buf)) = (
                f & VALBLK != 0,
                self.locks
                    .get(&x.lkid)
                    .and_then(|t| t.buf.filter(|_| t.attached)),
            ) {
                v.push((x.resource.as_slice(), LvbChange::Write(buf)));
            }
        }
        v
    }

    pub(super) fn set_ua(&mut self, id: u32, ua: UserArgs) {
        if let Some(t) = self.locks.get_mut(&id) {
            t.change_ua(|u| *u = ua);
            t.nobast |= ua.bastaddr == 0;
        }
    }
}
