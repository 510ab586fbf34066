//! The slot and token table: one slot per lock, named by a token (its
//! number and a generation) that the DLM echoes in every record, and what
//! the slot knows of its lock (see [`HeldLock`]).

use std::collections::VecDeque;

use dlm_proto::flags::LockFlags;
use dlm_proto::lvb::ValueBlock;
use dlm_proto::mode::LockMode;
use dlm_proto::name::{LockspaceName, ResourceName};
use dlm_proto::status::Completion;

use super::request::{BlockingFn, CompletionFn, LockId, LostFn};
use super::sink::SharedSink;
use super::transport::Record;

/// What a lock is and holds, as this process last heard from the DLM: the
/// read-back of [`Lockspace::held`](crate::Lockspace::held) and
/// [`Lock::info`](crate::Lock::info), and what lock replay needs to ask
/// for the same locks again.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeldLock {
    /// The lock's id.
    pub id: LockId,
    /// The lockspace it is in.
    pub lockspace: LockspaceName,
    /// The resource.
    pub resource: ResourceName,
    /// The granted mode; `None` until the first grant.
    pub granted: Option<LockMode>,
    /// The mode of the request or conversion in progress, if one is.
    pub requested: Option<LockMode>,
    /// The flags of the last request or conversion (`CONVERT` left out).
    pub flags: LockFlags,
    /// With a value block (`VALBLK` asked for at some point): its last
    /// known contents, as the last completion brought it or, after a
    /// write of it was granted, as written.
    pub value_block: Option<ValueBlock>,
}

/// One lock's client-side record. Slots are reused: a freed slot keeps its
/// allocations (the `done` queue), so a steady stream of locks allocates
/// nothing. The default is a vacant slot.
#[derive(Default)]
pub(crate) struct Slot {
    pub(crate) gen: u32,
    pub(crate) live: bool,
    /// The DLM's id of the lock, once its write has returned (0 before:
    /// the DLM never uses 0).
    pub(crate) lkid: u32,
    pub(crate) ever_granted: bool,
    /// The status flags of the last grant (`Lock::status_flags`).
    pub(crate) sb_flags: dlm_proto::flags::StatusFlags,
    /// The lock's callbacks; none for a waiting call's lock (boxed: one
    /// word to set and to check on the hot path).
    pub(crate) cbs: Option<Box<Callbacks>>,
    /// Completions not yet taken by a waiter.
    pub(crate) done: VecDeque<Completion>,
    pub(crate) waiting: bool,
    pub(crate) deadlock_cancel: bool,
    /// A cancel (or deadlock-cancel) was sent for the operation in
    /// progress; its outcome is pending.
    pub(crate) cancel_sent: bool,
    /// The operation in progress was sent with `NOQUEUE`: its outcome was
    /// decided during the write, so there is nothing to cancel.
    pub(crate) noqueue: bool,
    /// An unlock was sent: the lock ends (or has ended) in the DLM, and
    /// its id must not be used again.
    pub(crate) ending: bool,
    pub(crate) ended: bool,
    /// Unlock as soon as it is granted (an abandoned request).
    pub(crate) abandoned: bool,
    /// Operations on the lock being written (without the state lock
    /// held), or left by a replay to send again: the next one waits for
    /// them, so operations leave in order. A count: a replay can mark a
    /// slot whose writer is still on its way (see `Redo`).
    pub(crate) writing: u32,
    /// A thread waits for `writing` to end.
    pub(crate) write_waiter: bool,
    /// The value block as last known.
    pub(crate) lvb: ValueBlock,
    /// The operation in progress writes this value block (a conversion
    /// down from PW or EX with `VALBLK`): its grant, which brings no value
    /// block back, makes it the last known one.
    pub(crate) lvb_out: Option<Box<ValueBlock>>,
    /// What the lock is: see [`HeldLock`].
    pub(crate) resource: Option<ResourceName>,
    pub(crate) granted: Option<LockMode>,
    pub(crate) requested: Option<LockMode>,
    pub(crate) flags: LockFlags,
    pub(crate) has_lvb: bool,
    /// Blocking callbacks are wanted: fixed at the request, so that an
    /// operation sent while the blocking callback runs (taken out of the
    /// slot) still asks for them.
    pub(crate) has_bast: bool,
    #[cfg(feature = "async")]
    pub(crate) waker: Option<std::task::Waker>,
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) slots: Vec<Slot>,
    pub(crate) free: Vec<u32>,
    pub(crate) next_gen: u32,
    /// A thread is reading the device for everybody.
    pub(crate) reading: bool,
}

/// The token of slot number `idx` in generation `gen`.
#[inline(always)]
pub(crate) fn make_token(idx: usize, gen: u32) -> u64 {
    (u64::from(gen) << 32) | (idx as u64 + 1)
}

#[inline(always)]
pub(crate) fn split_token(token: u64) -> (usize, u32) {
    (
        ((token & 0xffff_ffff) as usize).wrapping_sub(1),
        (token >> 32) as u32,
    )
}

/// A lock's callbacks: closures, or (instead) a sink (see `sink`).
#[derive(Default)]
pub(crate) struct Callbacks {
    pub(crate) on_complete: Option<CompletionFn>,
    pub(crate) on_blocking: Option<BlockingFn>,
    pub(crate) on_lost: Option<LostFn>,
    pub(crate) sink: Option<SharedSink>,
    /// `on_complete` is out, running on some thread: completions taken in
    /// meanwhile (on another thread, or by a waiting call it makes) wait
    /// here, and that thread delivers them in order once it returns, with
    /// whether each ended the lock.
    pub(crate) deferred: Option<std::collections::VecDeque<(Completion, bool)>>,
}

impl State {
    /// The number of the live slot of `token`.
    #[inline(always)]
    pub(crate) fn index(&self, token: u64) -> Option<usize> {
        let (idx, gen) = split_token(token);
        self.slots
            .get(idx)
            .filter(|s| s.live && s.gen == gen)
            .map(|_| idx)
    }

    #[inline(always)]
    pub(crate) fn slot(&mut self, token: u64) -> Option<&mut Slot> {
        let (idx, gen) = split_token(token);
        self.slots.get_mut(idx).filter(|s| s.live && s.gen == gen)
    }

    /// The token of the slot a callback record is for: its own token's
    /// slot when the lock ids agree. Otherwise the record is another
    /// opener's operation on one of our locks, which the DLM delivers to
    /// the lock's owner with *its* callback parameter (any value, even one
    /// of our tokens): the live slot with the record's lock id. See
    /// [`own_token_slow`](Self::own_token_slow).
    #[inline(always)]
    pub(crate) fn own_token<R: Record>(&mut self, r: &R) -> Option<u64> {
        let token = r.astparam();
        if self.slot(token).is_some_and(|s| s.lkid == r.lkid()) {
            return Some(token);
        }
        self.own_token_slow(token, r.lkid(), r.status())
    }

    /// [`own_token`](Self::own_token) when the token's slot does not know
    /// the record's lock id. A record can come before the write that made
    /// the lock has returned its id: the token's slot, with its id not yet
    /// known, takes it, unless it is an unlock that slot never sent (which
    /// is another opener's, for the lock that has the id). Records only
    /// ever come for our own locks, so with the id known the slot holding
    /// it is the one.
    #[cold]
    #[inline(never)]
    fn own_token_slow(&mut self, token: u64, lkid: u32, status: i32) -> Option<u64> {
        if let Some(s) = self.slot(token) {
            if s.lkid == 0 && (s.ending || status != -dlm_proto::status::EUNLOCK) {
                // The id is known from now on, to whoever acts on the
                // record (an AST's unlock, say) before the write returns.
                s.lkid = lkid;
                return Some(token);
            }
        }
        self.slots
            .iter()
            .enumerate()
            .find(|(_, s)| s.live && s.lkid == lkid && lkid != 0)
            .map(|(idx, s)| make_token(idx, s.gen))
    }

    /// A new live slot for a request of `resource` in `mode`; returns its
    /// token, and whether it wants blocking callbacks.
    #[inline]
    pub(crate) fn new_slot(
        &mut self,
        cbs: Option<Box<Callbacks>>,
        resource: &ResourceName,
        mode: LockMode,
        flags: LockFlags,
        waiting: bool,
    ) -> (u64, bool) {
        self.next_gen = self.next_gen.wrapping_add(1);
        let gen = self.next_gen;
        let idx = match self.free.pop() {
            Some(i) => i as usize,
            None => {
                self.slots.push(Slot::default());
                self.slots.len() - 1
            }
        };
        let has_bast = cbs.as_ref().is_some_and(|c| {
            c.on_blocking.is_some() || c.sink.as_ref().is_some_and(|s| s.wants_blocking())
        });
        let s = &mut self.slots[idx];
        s.gen = gen;
        s.has_bast = has_bast;
        s.live = true;
        s.lkid = 0;
        s.ever_granted = false;
        s.cbs = cbs;
        s.waiting = waiting;
        s.deadlock_cancel = false;
        s.cancel_sent = false;
        s.noqueue = flags.contains(LockFlags::NOQUEUE);
        s.ending = false;
        s.ended = false;
        s.abandoned = false;
        s.writing = 0;
        s.write_waiter = false;
        s.lvb = ValueBlock::zeroed();
        s.resource = Some(*resource);
        s.granted = None;
        s.requested = Some(mode);
        s.flags = flags;
        s.has_lvb = flags.contains(LockFlags::VALBLK);
        (make_token(idx, gen), has_bast)
    }

    pub(crate) fn free_slot(&mut self, token: u64) {
        let (idx, gen) = split_token(token);
        if let Some(s) = self.slots.get_mut(idx).filter(|s| s.live && s.gen == gen) {
            s.release();
            self.free.push(idx as u32);
        }
    }

    /// A purge of the handle's own locks was written: every slot whose
    /// lock the DLM knows (its id recorded) ends now, with no callback, and
    /// an async waiter is woken to find it gone. How many ended.
    pub(crate) fn end_written(&mut self) -> usize {
        let mut n = 0;
        for (idx, s) in self.slots.iter_mut().enumerate() {
            if s.live && s.lkid != 0 {
                #[cfg(feature = "async")]
                if let Some(w) = s.waker.take() {
                    w.wake();
                }
                s.release();
                self.free.push(idx as u32);
                n += 1;
            }
        }
        n
    }

    /// The waiter has taken its completion: see [`Slot::finish`].
    pub(crate) fn finish(&mut self, token: u64) {
        let (idx, gen) = split_token(token);
        if let Some(s) = self.slots.get_mut(idx).filter(|s| s.live && s.gen == gen) {
            s.finish(idx, &mut self.free);
        }
    }

    /// What the live slot of `token` holds (`None` once its unlock is
    /// sent, or it ended).
    pub(crate) fn held(&self, token: u64, lockspace: &LockspaceName) -> Option<HeldLock> {
        let (idx, gen) = split_token(token);
        let s = self
            .slots
            .get(idx)
            .filter(|s| s.live && s.gen == gen && !s.ending && !s.ended)?;
        s.held(idx, lockspace)
    }

    /// What every live lock holds (requests in progress included; locks
    /// being unlocked or ended left out).
    pub(crate) fn all_held(&self, lockspace: &LockspaceName) -> Vec<HeldLock> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.live && !s.ending && !s.ended)
            .filter_map(|(idx, s)| s.held(idx, lockspace))
            .collect()
    }
}

impl Slot {
    fn held(&self, idx: usize, lockspace: &LockspaceName) -> Option<HeldLock> {
        Some(HeldLock {
            id: LockId {
                token: make_token(idx, self.gen),
                lkid: self.lkid,
            },
            lockspace: *lockspace,
            resource: self.resource?,
            granted: self.granted,
            requested: self.requested,
            flags: self.flags,
            value_block: self.has_lvb.then_some(self.lvb),
        })
    }

    /// Empty the slot (it keeps its allocations for the next lock).
    #[inline(always)]
    pub(crate) fn release(&mut self) {
        self.live = false;
        #[cfg(feature = "async")]
        let waker = self.waker.is_some();
        #[cfg(not(feature = "async"))]
        let waker = false;
        if self.cbs.is_some() || self.lvb_out.is_some() || !self.done.is_empty() || waker {
            self.drop_contents();
        }
    }

    /// Drop the callbacks, the completions and the waker (the slot keeps
    /// the queue's allocation). Waiting calls leave none of these behind.
    #[cold]
    #[inline(never)]
    fn drop_contents(&mut self) {
        self.cbs = None;
        self.lvb_out = None;
        self.done.clear();
        #[cfg(feature = "async")]
        {
            self.waker = None;
        }
    }

    /// The waiter has taken its completion: the slot (number `idx`) stops
    /// collecting completions, and goes to `free` if the lock has ended.
    #[inline(always)]
    pub(crate) fn finish(&mut self, idx: usize, free: &mut Vec<u32>) {
        self.waiting = false;
        if self.ended {
            self.release();
            free.push(idx as u32);
        }
    }
}
