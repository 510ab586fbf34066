//! Reading: every record a slot reads is for a lock it owns, echoes that
//! lock's user arguments, and is a completion it is owed or a blocking
//! AST of a real mode.

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
        let Some(r) = self.e.read(s.eng) else {
            if s.open {
                for t in self.locks.values_mut() {
                    if t.owner == Some((slot, s.gen)) {
                        t.bound = 0;
                    }
                }
            }
            return Ok(None);
        };
        ensure!(s.open, "slot {slot} is closed but read {r:?}");
        let Some(t) = self.locks.get_mut(&r.lkid) else {
            return fail(format!("read {r:?} for an unknown lock"));
        };
        ensure!(
            t.owner == Some((slot, s.gen)),
            "slot {slot} (generation {}) read {r:?} of a lock owned by {:?}",
            s.gen,
            t.owner
        );
        ensure!(
            r.user_lksb == t.ua.lksb,
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
                (r.astaddr, r.astparam) == (t.ua.bastaddr, t.ua.bastparam),
                "{r:?}: blocking AST address is not the lock's {:#x}/{:#x}",
                t.ua.bastaddr,
                t.ua.bastparam
            );
            ensure!(
                (r.status, r.sb_flags) == (t.last_status, t.last_flags),
                "{r:?}: status of a blocking AST is not that of the last completion ({}, {})",
                t.last_status,
                t.last_flags
            );
            ensure!(r.lvb.is_none(), "{r:?}: blocking AST with a value block");
            t.max_bast = t.max_bast.max(m);
        } else {
            ensure!(STATUSES.contains(&r.status), "{r:?}: unknown status");
            ensure!(r.sb_flags & !SB_ALL == 0, "{r:?}: unknown status flags");
            ensure!(
                (r.astaddr, r.astparam) == (t.ua.castaddr, t.ua.castparam),
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
        }
        Ok(Some(r))
    }
}
