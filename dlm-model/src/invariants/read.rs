//! Reading: every record a slot reads is for a lock it owns, echoes that
//! lock's user arguments, and is a completion it is owed or a blocking
//! AST of a real mode. Under 6.12 the lock may be gone (a ghost), and the
//! arguments are those of when the record was queued.

use dlm_engine::KernelModel;
use dlm_proto::records::AstRecord;
use dlm_proto::LockMode;

use super::rules::mode;
use super::{fail, World, SB_ALL, STATUSES};

impl World {
    // -----------------------------------------------------------------
    // Reading
    // -----------------------------------------------------------------

    pub(super) fn read_one(&mut self, slot: usize) -> Result<Option<AstRecord>, String> {
        let s = self.slots[slot];
        let v612 = self.model == KernelModel::V6_12;
        let Some(r) = self.e.read(s.eng) else {
            if s.open {
                for t in self.locks.values_mut() {
                    if t.owner == Some((slot, s.gen)) {
                        t.bound = 0;
                        t.past_ua.clear();
                    }
                }
                // A gone zombie (quirk 1) may have had more completions
                // than it was owed: it ends here. Any other gone lock must
                // have had all of its read.
                let mine = |t: &super::TLock| t.owner == Some((slot, s.gen));
                if let Some((id, t)) = self.ghosts.iter().find(|(_, t)| mine(t) && !t.zombie) {
                    return fail(format!(
                        "slot {slot} has nothing to read, but lock {id}, gone, is owed {}",
                        t.owed
                    ));
                }
                self.ghosts.retain(|(_, t)| !mine(t));
            }
            return Ok(None);
        };
        ensure!(s.open, "slot {slot} is closed but read {r:?}");
        // 6.12: the oldest lock gone under this id, if any, comes first.
        let ghost = self
            .ghosts
            .iter()
            .position(|(id, t)| *id == r.lkid && t.owner == Some((slot, s.gen)));
        let t = match ghost {
            Some(g) => &mut self.ghosts[g].1,
            None => match self.locks.get_mut(&r.lkid) {
                Some(t) => t,
                None => return fail(format!("read {r:?} for an unknown lock")),
            },
        };
        ensure!(
            t.owner == Some((slot, s.gen)),
            "slot {slot} (generation {}) read {r:?} of a lock owned by {:?}",
            s.gen,
            t.owner
        );
        ensure!(
            t.echoes(v612, r.user_lksb, |u| u.lksb),
            "{r:?}: lksb is not {:#x}",
            t.ua.lksb
        );
        t.bound = t.bound.saturating_sub(1);
        if r.is_bast() {
            let m = mode(r.bast_mode);
            ensure!(
                m.is_some_and(|m| m != LockMode::Nl),
                "{r:?}: bad blocking mode"
            );
            ensure!(
                t.echoes(v612, (r.astaddr, r.astparam), |u| (u.bastaddr, u.bastparam)),
                "{r:?}: blocking AST address is not the lock's {:#x}/{:#x}",
                t.ua.bastaddr,
                t.ua.bastparam
            );
            // 6.1: the status block as the last completion read left it;
            // 6.12: the record's own copy, which nothing writes.
            let want = if v612 {
                (0, 0)
            } else {
                (t.last_status, t.last_flags)
            };
            ensure!(
                (r.status, r.sb_flags) == want,
                "{r:?}: status of a blocking AST is not {want:?}"
            );
            ensure!(r.lvb.is_none(), "{r:?}: blocking AST with a value block");
            t.max_bast = t.max_bast.max(m);
        } else {
            ensure!(STATUSES.contains(&r.status), "{r:?}: unknown status");
            ensure!(r.sb_flags & !SB_ALL == 0, "{r:?}: unknown status flags");
            ensure!(
                t.echoes(v612, (r.astaddr, r.astparam), |u| (u.castaddr, u.castparam)),
                "{r:?}: completion address is not the lock's {:#x}/{:#x}",
                t.ua.castaddr,
                t.ua.castparam
            );
            ensure!(
                r.lvb.is_none() || (r.status == 0 && t.buf.is_some()),
                "{r:?}: value block without a grant or without VALBLK"
            );
            // Exactly one completion per operation: never more.
            ensure!(
                t.owed > 0 || t.zombie,
                "{r:?}: a completion that no operation is owed"
            );
            t.owed = t.owed.saturating_sub(1);
            t.last_status = r.status;
            t.last_flags = r.sb_flags;
            if r.status == 0 {
                t.max_bast = None;
                t.adopted = false;
            }
            // Its last completion: nothing of it is left to read. A zombie
            // (quirk 1) may be told more than it was owed, so its count
            // cannot say when it ends; its unlock's completion does, the
            // last record it can have (it was granted, so only an unlock
            // ends it). Records after that under the same id belong to a
            // lock that reused the id, and must not go to the ghost.
            let ended = |t: &super::TLock| {
                if t.zombie {
                    r.status == -dlm_proto::status::EUNLOCK
                } else {
                    t.owed == 0
                }
            };
            if let Some(g) = ghost.filter(|&g| ended(&self.ghosts[g].1)) {
                self.ghosts.remove(g);
            }
        }
        Ok(Some(r))
    }
}
