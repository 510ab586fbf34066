//! Replay: a lock rebuilt directly in the granted state, as the kernel's
//! master-copy recovery rebuilds the locks of a resource whose master is
//! new (`fs/dlm/lock.c` `dlm_recover_master_copy`,
//! `receive_rcom_lock_args`; `fs/dlm/recover.c` `recover_lvb`,
//! `recover_grant`, `dlm_recover_grant` in `lock.c`).
//!
//! In the kernel, each node sends the new master one `rcom_lock` per lock
//! it holds there; the master adds the lock to the queue it was on,
//! without any grant rule, and once every lock is in, works out the
//! resource's value block from them and grants what it can. Here the
//! host (a restarted `dlmd`) replays each client's granted locks with
//! [`Engine::replay_granted`], then calls [`Engine::recover_grant`].
//!
//! Where this follows the kernel:
//! - The lock is put straight on the grant queue in its mode
//!   (`add_lkb`, ordered by mode), keeps its flags as given (`rl_exflags`)
//!   and sends no callback of any kind.
//! - The value block: a lock counts only with `VALBLK`. One granted above
//!   CR vouches for the block (no writer can have been granted since it
//!   read or wrote it), and its block becomes the resource's; if only
//!   NL and CR locks have one, the resource keeps a block but marks it
//!   not valid (`RSB_VALNOTVALID`), so that the next grant with `VALBLK`
//!   carries `VALNOTVALID`. With no `VALBLK` lock, the block is left
//!   alone.
//! - A replay joining requests that wait marks the resource
//!   (`RSB_RECOVER_GRANT`), and `recover_grant` runs `grant_pending_locks`
//!   there.
//!
//! Where it deviates, and why:
//! - The lock keeps the id its owner gives, where a kernel master gives
//!   its copy an id of its own: here the master and the owner's copy are
//!   one lock, and the owner knows it by its id. An id in use is `EEXIST`.
//! - Replays come one at a time, not all before `recover_lvb` runs, so
//!   the value block is worked out as each lock arrives; the outcome is
//!   the same whatever the order: a vouching lock's block wins over any
//!   that cannot vouch, and the last vouching lock replayed wins among
//!   vouching ones (the kernel takes the first on its grant queue, which,
//!   as `add_lkb` puts each lock at the head, is the last added). A valid
//!   block already on the resource (written by a lock granted since) is
//!   kept against locks that cannot vouch.
//! - No sequence numbers. The kernel counts writes (`res_lvbseq`,
//!   `lkb_lvbseq`) and, among NL and CR holders, takes the block with the
//!   highest count. A client's status block has no such count to send, so
//!   the first block replayed is kept; it is marked not valid either way.
//! - A holder whose block the owner knows to be not valid does not vouch
//!   ([`ReplayLock::lvb_valid`](crate::ReplayLock::lvb_valid)). The kernel
//!   has no such mark: a PR holder granted with `VALNOTVALID` vouches
//!   there, and the mark is lost.
//! - A replay that conflicts with a lock granted on the resource (or
//!   converting, in its granted mode) is refused with `EAGAIN`. The kernel
//!   never meets one, since every node replays what the same master once
//!   granted; here a client can replay anything, and another local user
//!   is an adversary.
//! - Only granted locks replay. A request or conversion in progress is
//!   not rebuilt: its owner replays the lock in its granted mode, if any,
//!   and asks again; so the kernel's `recover_conversion` (the PR/CW
//!   middle conversions) has nothing to do here.
//! - `recover_grant` grants in queue order. The kernel grants waiting
//!   conversions regardless of their order while `RSB_RECOVER_GRANT` is
//!   set (`_can_be_granted`'s `recover`), since its rebuilt convert queue
//!   has lost the old order; here no queue is rebuilt, so the order
//!   stands. (A replay only adds a holder, so `recover_grant` finds
//!   nothing new to grant: it sends the blocking ASTs.)
//! - The replayed lock counts as one whose completion was read in its
//!   mode, with status 0 and no status flags (a later blocking AST is
//!   judged against that mode, and a conversion's completion copies the
//!   block by it).

use dlm_proto::error::Errno;
use dlm_proto::flags::LockFlags;
use dlm_proto::name::RESNAME_MAXLEN;

use crate::internal::{Lkid, IFL_HAS_LAST_CAST, NIL, STS_GRANTED};
use crate::store::{Chain, Which};
use crate::tables::{compat, CR, IV};
use crate::{Engine, ReplayLock, LVB_LEN, REPLAY_LKID_MAX};

impl Engine {
    /// `dlm_recover_master_copy` for open owner `o`: check, then build the
    /// lock granted, then `recover_lvb` for it. Nothing changes on an
    /// error.
    pub(crate) fn recover_master_copy(&mut self, o: u32, rl: &ReplayLock<'_>) -> Result<(), Errno> {
        if rl.args.castaddr == 0 || rl.args.lksb == 0 {
            return Err(Errno::EINVAL);
        }
        if rl.name.len() > RESNAME_MAXLEN || rl.lkid == NIL || rl.lkid > REPLAY_LKID_MAX {
            return Err(Errno::EINVAL);
        }
        if self.lkid_in_use(rl.lkid) {
            return Err(Errno::EEXIST);
        }
        let mode = rl.mode.as_raw() as i8;
        if let Some(r) = self.find_rsb(rl.name) {
            if self.held_conflict(r, mode) {
                return Err(Errno::EAGAIN);
            }
        }

        let id = rl.lkid;
        self.create_lkb_at(id, o);
        {
            let valblk = rl.flags & LockFlags::VALBLK.bits() != 0;
            let lkb = self.lk_mut(id);
            lkb.ua = rl.args.into();
            lkb.exflags = rl.flags;
            lkb.pid = rl.pid;
            lkb.rqmode = IV;
            lkb.grmode = mode;
            // Its owner read a completion in this mode before the state
            // was lost.
            lkb.iflags |= IFL_HAS_LAST_CAST;
            lkb.last_cast_mode = mode;
            if valblk || rl.lvb.is_some() {
                lkb.lvb = Some(Box::new(rl.lvb.unwrap_or([0; LVB_LEN])));
            }
            lkb.attach_lvb();
        }
        let r = self.get_rsb(rl.name);
        self.lk_mut(id).rsb = r;
        self.rsb_mut(r).refs += 1;
        self.add_lkb(r, id, STS_GRANTED);
        // The owner list's reference, as for a granted request.
        self.lk_mut(id).refs += 1;
        self.list_push_back(Which::Locks(o), Chain::Own, id);

        self.recover_lvb_one(r, id, rl.lvb_valid && rl.lvb.is_some());
        let rsb = self.rsb_mut(r);
        if rsb.wait.head != NIL || rsb.convert.head != NIL {
            rsb.recover_grant = true;
        }
        Ok(())
    }

    /// Whether a lock granted or converting on resource `r` holds a mode
    /// that `mode` conflicts with.
    fn held_conflict(&self, r: u32, mode: i8) -> bool {
        let rsb = self.rsb(r);
        [rsb.grant.head, rsb.convert.head].into_iter().any(|head| {
            let mut it = head;
            while it != NIL {
                let l = self.lk(it);
                if !compat(l.grmode, mode) {
                    return true;
                }
                it = l.q.next;
            }
            false
        })
    }

    /// `recover_lvb`, one lock at a time: the replayed lock `id` on `r`,
    /// whose owner says its block is valid if `valid`.
    fn recover_lvb_one(&mut self, r: u32, id: Lkid, valid: bool) {
        let lkb = self.lk(id);
        if lkb.exflags & LockFlags::VALBLK.bits() == 0 {
            return;
        }
        let vouches = valid && lkb.grmode > CR;
        let block = lkb.attached_lvb().unwrap_or([0; LVB_LEN]);
        let rsb = self.rsb_mut(r);
        if vouches {
            if rsb.lvb.as_deref().is_some_and(|b| *b != block) && !rsb.valnotvalid {
                log::warn!(
                    "replayed lock {id:x}: its value block differs from the one the resource \
                     has; the replayed one is kept"
                );
            }
            rsb.lvb = Some(Box::new(block));
            rsb.valnotvalid = false;
        } else if rsb.lvb.is_none() {
            rsb.lvb = Some(Box::new(block));
            rsb.valnotvalid = true;
        }
        // Otherwise the resource has a block already: valid (a vouching
        // lock or a write set it), or marked not valid with the first
        // block replayed.
    }

    /// `dlm_recover_grant`: `grant_pending_locks` on each resource marked
    /// by a replay; the number of them.
    pub(crate) fn recover_grant_all(&mut self) -> usize {
        let marked: Vec<u32> = self
            .rsbs
            .iter()
            .zip(0u32..)
            .filter_map(|(x, r)| x.as_ref().filter(|x| x.recover_grant).map(|_| r))
            .collect();
        for &r in &marked {
            self.rsb_mut(r).recover_grant = false;
            if self.rsb(r).refs > 0 {
                self.grant_pending_locks(r);
            }
        }
        marked.len()
    }
}
