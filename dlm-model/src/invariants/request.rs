//! Requests, conversions and adoptions: what the engine must answer, and
//! what the lock must be afterwards.

use dlm_engine::{LockInfo, LockParams, Queue};
use dlm_proto::{Errno, LockMode};

use super::rules::{lock_args_valid, lvb_writes, mode, quecvt_allowed};
use super::{fail, snap, state, Before, LvbChange, World};
use crate::gen::flags::IVVALBLK;
use crate::gen::flags::{ALTCW, ALTPR, CONVDEADLK, EXPEDITE, NOORDER, NOQUEUE, QUECVT, VALBLK};
use crate::gen::{lock_pid, lvb_bytes, user_args, LockSel, NAMES};
use dlm_engine::KernelModel;

impl World {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn request(
        &mut self,
        slot: u8,
        mode_raw: u8,
        name: u8,
        flags: u32,
        args: u8,
        pid_sel: u8,
        b: &Before,
    ) -> Result<(), String> {
        let Some((si, s)) = self.usable(slot) else {
            return Ok(());
        };
        let name = NAMES[usize::from(name)];
        let ua = user_args(args);
        let pid = lock_pid(pid_sel, s.pid, &self.pids);
        let p = LockParams {
            mode: mode_raw,
            flags,
            lkid: 0,
            name,
            lvb: lvb_bytes(0xEE),
            args: ua,
            pid,
        };
        let rv = self.e.lock(s.eng, &p);
        let after = snap(&self.e);
        let expect = if !s.open {
            Err(Errno::EBADF)
        } else if ua.castaddr == 0 || ua.lksb == 0 || !lock_args_valid(mode_raw, flags, name.len())
        {
            Err(Errno::EINVAL)
        } else {
            Ok(())
        };
        let id = match (rv, expect) {
            (Err(e), Err(x)) if e == x => return self.unchanged(b, &after, "a refused request"),
            (Ok(id), Ok(())) => id,
            _ => return fail(format!("request returned {rv:?}, expected {expect:?}")),
        };
        // Lock ids are the lowest free id.
        let lowest = (1u32..)
            .find(|i| !b.locks.contains_key(i))
            .expect("free id");
        ensure!(
            id == lowest,
            "new lock id {id}, the lowest free is {lowest}"
        );
        let rq = mode(mode_raw).expect("valid mode");
        let Some(l) = after.get(&id) else {
            if self.model == KernelModel::V6_12 && flags & NOQUEUE != 0 {
                // Refused with EAGAIN: under 6.12 the lock is gone at
                // once, its completion waiting in the owner's queue.
                let same: Vec<&LockInfo> =
                    b.locks.values().filter(|x| x.resource == name).collect();
                let grantable = same
                    .iter()
                    .all(|x| !matches!(x.queue, Some(Queue::Converting | Queue::Waiting)))
                    && same
                        .iter()
                        .all(|x| x.granted.into_iter().all(|g| g.compatible(rq)));
                ensure!(
                    !grantable,
                    "new lock {id} ({rq}) is compatible with everything and nothing is queued, yet it was refused"
                );
                self.new_lock(id, name, (si, s.gen), ua, flags & VALBLK != 0);
                self.bump(name, 0, Some(id), &b.locks, &after);
                self.check_lvbs(b, &[])?;
                return Ok(());
            }
            return fail(format!("new lock {id} is not in locks()"));
        };
        ensure!(
            l.resource == name && l.pid == pid && l.flags.bits() == flags,
            "new lock {l:?} does not have the request's name, pid and flags"
        );
        ensure!(
            l.owner == Some(s.eng),
            "new lock {id} is not the requester's"
        );
        // A request compatible with every mode held on a resource with
        // nothing queued is granted at once, in its own mode.
        let same: Vec<&LockInfo> = b.locks.values().filter(|x| x.resource == name).collect();
        let nothing_queued = same
            .iter()
            .all(|x| !matches!(x.queue, Some(Queue::Converting | Queue::Waiting)));
        if nothing_queued
            && same
                .iter()
                .all(|x| x.granted.into_iter().all(|g| g.compatible(rq)))
        {
            ensure!(
                l.queue == Some(Queue::Granted) && l.granted == Some(rq),
                "new lock {id} ({rq}) is compatible with everything and nothing is queued, yet it is {l:?}"
            );
        }
        match l.queue {
            Some(Queue::Granted) => {
                let g = l.granted.expect("granted");
                let alt = (flags & ALTPR != 0 && g == LockMode::Pr)
                    || (flags & ALTCW != 0 && g == LockMode::Cw);
                ensure!(g == rq || alt, "lock {id} asked for {rq}, granted {g}");
                if flags & (NOORDER | EXPEDITE) == 0 {
                    let queued = b
                        .locks
                        .values()
                        .find(|x| x.resource == name && x.requested.is_some());
                    ensure!(
                        queued.is_none(),
                        "new lock {id} was granted at once past queued lock {:?}",
                        queued.map(|x| x.lkid)
                    );
                }
            }
            Some(Queue::Waiting) => {
                ensure!(flags & NOQUEUE == 0, "NOQUEUE lock {id} is waiting");
                ensure!(
                    l.requested == Some(rq),
                    "lock {id} waits for {:?}",
                    l.requested
                );
            }
            None => ensure!(flags & NOQUEUE != 0, "lock {id} ended though it could wait"),
            Some(Queue::Converting) => return fail(format!("new lock {id} is converting")),
        }
        if let Some(old) = self.locks.get(&id) {
            return fail(format!(
                "lock id {id} reused while the test still knows it: {old:?}"
            ));
        }
        self.new_lock(id, name, (si, s.gen), ua, flags & VALBLK != 0);
        if flags & NOORDER != 0 && l.queue == Some(Queue::Granted) {
            self.mark_untold(&[id], &after);
        }
        self.bump(name, 0, Some(id), &b.locks, &after);
        self.check_lvbs(b, &[])?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn convert(
        &mut self,
        slot: u8,
        sel: LockSel,
        mode_raw: u8,
        flags: u32,
        lvb: u8,
        args: u8,
        pid_sel: u8,
        b: &Before,
    ) -> Result<(), String> {
        let Some((_, s)) = self.usable(slot) else {
            return Ok(());
        };
        let lkid = self.resolve(sel, &b.locks);
        let ua = user_args(args);
        let value = lvb_bytes(lvb);
        let pid = lock_pid(pid_sel, s.pid, &self.pids);
        let p = LockParams {
            mode: mode_raw,
            flags,
            lkid,
            name: &[],
            lvb: value,
            args: ua,
            pid,
        };
        let rv = self.e.lock(s.eng, &p);
        let after = snap(&self.e);
        let old = b.locks.get(&lkid);
        let expect = if !s.open {
            Err(Errno::EBADF)
        } else if ua.castaddr == 0 || ua.lksb == 0 {
            Err(Errno::EINVAL)
        } else if old.is_none() {
            Err(Errno::ENOENT)
        } else if !lock_args_valid(mode_raw, flags, 0) {
            Err(Errno::EINVAL)
        } else if old.is_some_and(|o| o.queue != Some(Queue::Granted)) {
            Err(Errno::EBUSY)
        } else if flags & QUECVT != 0
            && !old
                .and_then(|o| o.granted)
                .is_some_and(|g| quecvt_allowed(g, mode(mode_raw).expect("valid")))
        {
            Err(Errno::EINVAL)
        } else {
            Ok(0)
        };
        ensure!(
            rv == expect,
            "convert of {lkid} returned {rv:?}, expected {expect:?}"
        );
        if matches!(expect, Err(e) if e != Errno::ENOENT && e != Errno::EBADF)
            && !(ua.castaddr == 0 || ua.lksb == 0)
        {
            // The kernel takes the new arguments before checking them.
            self.set_ua(lkid, ua);
            self.take_lvb(lkid, flags, value);
        }
        if rv.is_err() {
            return self.unchanged(b, &after, "a refused conversion");
        }
        let old = old.expect("exists");
        let rq = mode(mode_raw).expect("valid");
        self.set_ua(lkid, ua);
        self.take_lvb(lkid, flags, value);
        if let Some(t) = self.locks.get_mut(&lkid) {
            t.attached |= t.buf.is_some();
            if t.owner.is_some() {
                t.owed += 1;
            }
        }
        // Callbacks this conversion may have sent, whatever else is checked.
        let res = old.resource.clone();
        self.bump(&res, 1, Some(lkid), &b.locks, &after);
        let rogue_here = b.locks.values().any(|x| {
            x.resource == old.resource && self.locks.get(&x.lkid).is_some_and(|t| t.rogue)
        });
        let Some(gr) = old.granted.filter(|_| !rogue_here) else {
            // A lock "granted" IV by quirk 1 converts like a new request;
            // a rogue holder makes any conversion on its resource odd.
            return Ok(());
        };
        let Some(l) = after.get(&lkid) else {
            return fail(format!("converted lock {lkid} is gone"));
        };
        ensure!(
            l.flags.bits() == flags && l.pid == pid,
            "conversion did not replace the flags and the pid ({pid}): {l:?}"
        );
        // A conversion compatible with every other mode held on the
        // resource is granted at once ("in place"); with QUECVT only if no
        // other conversion is queued.
        let others: Vec<&LockInfo> = b
            .locks
            .values()
            .filter(|x| x.resource == old.resource && x.lkid != lkid)
            .collect();
        let compatible = others
            .iter()
            .all(|x| x.granted.into_iter().all(|g| g.compatible(rq)));
        let queued = others.iter().any(|x| x.queue == Some(Queue::Converting));
        if compatible && (flags & QUECVT == 0 || !queued) {
            ensure!(
                l.queue == Some(Queue::Granted) && l.granted == Some(rq),
                "conversion of {lkid} from {gr} to {rq} is compatible with every held mode, yet it is {l:?}"
            );
        }
        match l.queue {
            Some(Queue::Granted) => {
                let g = l.granted.expect("granted");
                let alt = (flags & ALTPR != 0 && g == LockMode::Pr)
                    || (flags & ALTCW != 0 && g == LockMode::Cw);
                ensure!(
                    g == rq || g == gr || alt,
                    "lock {lkid} converted {gr} to {rq} is granted {g}"
                );
            }
            Some(Queue::Converting) => {
                ensure!(
                    flags & NOQUEUE == 0,
                    "NOQUEUE conversion of {lkid} is queued"
                );
                ensure!(
                    l.requested == Some(rq),
                    "lock {lkid} converts to {:?}",
                    l.requested
                );
                let demoted = flags & CONVDEADLK != 0 && l.granted == Some(LockMode::Nl);
                ensure!(
                    l.granted == Some(gr) || demoted,
                    "converting lock {lkid} holds {:?}, it held {gr}",
                    l.granted
                );
            }
            q => return fail(format!("converted lock {lkid} is on {q:?}")),
        }
        // A conversion from PW or EX down (or to the same mode) is always
        // granted at once and writes the value block.
        let mut changes = Vec::new();
        if lvb_writes(gr, rq) {
            ensure!(
                l.queue == Some(Queue::Granted) && l.granted == Some(rq),
                "down-conversion of {lkid} from {gr} to {rq} was not granted at once"
            );
        }
        // The mode it was granted, if it was (ALTPR / ALTCW may have
        // turned an up-conversion from PW into a writing one).
        let granted_to = match l.queue {
            Some(Queue::Granted) if l.granted != Some(gr) || rq == gr => l.granted,
            _ => None,
        };
        if granted_to.is_some_and(|g| lvb_writes(gr, g)) {
            if flags & IVVALBLK != 0 {
                changes.push((old.resource.as_slice(), LvbChange::Invalidate));
            } else if flags & VALBLK != 0 {
                changes.push((old.resource.as_slice(), LvbChange::Write(value)));
            }
        }
        changes.extend(self.pending_writes(&b.locks, &after, lkid));
        self.check_lvbs(b, &changes)?;
        if flags & CONVDEADLK != 0 && l.queue == Some(Queue::Converting) {
            // do_convert's demotion path grants other conversions with no
            // blocking-AST pass after them.
            let granted: Vec<u32> = after
                .values()
                .filter(|x| {
                    x.lkid != lkid
                        && x.queue == Some(Queue::Granted)
                        && b.locks.get(&x.lkid).is_some_and(|y| y.requested.is_some())
                })
                .map(|x| x.lkid)
                .collect();
            self.mark_untold(&granted, &after);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn adopt(
        &mut self,
        slot: u8,
        name: u8,
        mode_raw: u8,
        match_orphan: bool,
        flags: u32,
        args: u8,
        b: &Before,
    ) -> Result<(), String> {
        let Some((si, s)) = self.usable(slot) else {
            return Ok(());
        };
        let name = NAMES[usize::from(name)];
        let orphans: Vec<&LockInfo> = b
            .locks
            .values()
            .filter(|l| l.resource == name && self.locks.get(&l.lkid).is_some_and(|t| t.orphan))
            .collect();
        let mode_raw = match orphans.iter().find_map(|l| l.granted) {
            Some(m) if match_orphan => m.as_raw(),
            _ => mode_raw,
        };
        let ua = user_args(args);
        let p = LockParams {
            mode: mode_raw,
            flags,
            lkid: 0,
            name,
            lvb: lvb_bytes(0xAD),
            args: ua,
            pid: s.pid,
        };
        let rv = self.e.lock(s.eng, &p);
        let after = snap(&self.e);
        let matching = orphans
            .iter()
            .any(|l| l.granted.map(LockMode::as_raw) == Some(mode_raw));
        let expect = if !s.open {
            Err(Errno::EBADF)
        } else if ua.castaddr == 0 || ua.lksb == 0 {
            Err(Errno::EINVAL)
        } else if matching {
            Ok(())
        } else if orphans.is_empty() {
            Err(Errno::ENOENT)
        } else {
            Err(Errno::EAGAIN)
        };
        // An orphan the checks are unsure of (one whose callbacks may have
        // been dropped) can make either answer right.
        let unsure = b.locks.values().any(|l| {
            l.resource == name
                && l.owner.is_none()
                && self
                    .locks
                    .get(&l.lkid)
                    .is_some_and(|t| t.tainted || t.maybe_unlocking || t.zombie)
        });
        let id = match (rv, expect) {
            (Err(e), Err(x)) if e == x => return self.unchanged(b, &after, "a refused adoption"),
            (Err(e), _) if unsure && (e == Errno::EAGAIN || e == Errno::ENOENT) => {
                return self.unchanged(b, &after, "a refused adoption")
            }
            (Ok(id), Ok(())) => id,
            (Ok(id), _) if unsure => id,
            _ => return fail(format!("adoption returned {rv:?}, expected {expect:?}")),
        };
        let Some(was) = b.locks.get(&id) else {
            return fail(format!("adopted lock {id} did not exist"));
        };
        ensure!(
            was.owner.is_none()
                && was.resource == name
                && was.granted.map(LockMode::as_raw) == Some(mode_raw),
            "adopted {was:?}, which is not an orphan of {:?} in mode {mode_raw}",
            String::from_utf8_lossy(name)
        );
        let Some(l) = after.get(&id) else {
            return fail(format!("adopted lock {id} is gone"));
        };
        ensure!(
            l.owner == Some(s.eng) && state(l) == state(was) && l.flags.bits() == flags,
            "adoption changed more than owner and flags: {was:?} -> {l:?}"
        );
        for (lkid, x) in &after {
            if *lkid != id {
                ensure!(b.locks.get(lkid) == Some(x), "adoption changed lock {lkid}");
            }
        }
        let t = self.locks.get_mut(&id).expect("known");
        t.owner = Some((si, s.gen));
        t.orphan = false;
        t.adopted = true;
        // An orphan converted by someone else may be adopted mid-way: its
        // completion now goes to the adopter.
        t.owed = u32::from(l.requested.is_some());
        t.rogue |= flags & EXPEDITE != 0 && l.requested.is_some();
        t.bound = 0;
        t.tainted = false;
        t.maybe_unlocking = false;
        t.max_bast = None;
        self.set_ua(id, ua);
        self.check_lvbs(b, &[])?;
        Ok(())
    }
}
