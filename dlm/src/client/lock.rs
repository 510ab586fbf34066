//! [`Lock`]: a granted lock, unlocked when dropped.

use dlm_proto::error::{Error, Result};
use dlm_proto::flags::{LockFlags, StatusFlags};
use dlm_proto::lvb::ValueBlock;
use dlm_proto::mode::LockMode;
use dlm_proto::records::Command;
use dlm_proto::status::{Completion, Status};

use super::lockspace::Lockspace;
use super::request::{granted_mode, unlock_flags, LockId};
use super::slots::HeldLock;

/// A granted lock. Dropping it unlocks it (without waiting for the
/// unlock's completion; on the fallback, a drop that meets a replay of
/// the lockspace onto a restarted daemon waits for that replay, so that
/// the lock is not brought back); use [`Lock::unlock`] to wait for the
/// unlock, or [`Lock::into_id`] to keep the lock beyond this value.
#[derive(Debug)]
pub struct Lock {
    pub(super) ls: Lockspace,
    pub(super) id: LockId,
    pub(super) mode: LockMode,
    /// Boxed: few locks have one, and a `Lock` is moved around.
    pub(super) value_block: Option<Box<ValueBlock>>,
    pub(super) held: bool,
    /// A conversion was given up while in flight (a dropped
    /// `ConvertFuture`) and cancelled: its completion is still owed, and
    /// lands in the slot (kept waiting) for [`settle`](Lock::settle).
    pub(super) owed: bool,
}

impl Lock {
    #[inline]
    pub(crate) fn new(
        ls: Lockspace,
        id: LockId,
        mode: LockMode,
        value_block: Option<Box<ValueBlock>>,
    ) -> Lock {
        Lock {
            ls,
            id,
            mode,
            value_block,
            held: true,
            owed: false,
        }
    }

    /// What the lock is and holds, as last heard from the DLM (see
    /// [`HeldLock`]); `None` once it has ended (another opener unlocked
    /// it, say).
    pub fn info(&self) -> Option<HeldLock> {
        self.ls.held_lock(self.id)
    }

    /// The lock's id.
    pub fn id(&self) -> LockId {
        self.id
    }

    /// The granted mode (after a conversion given up in flight, the mode
    /// the DLM last reported).
    pub fn mode(&self) -> LockMode {
        if self.owed {
            if let Some(m) = self.info().and_then(|h| h.granted) {
                return m;
            }
        }
        self.mode
    }

    /// The value block read at the last grant, if one was requested.
    ///
    /// The DLM keeps a resource's value block only while some lock on the
    /// resource exists: when the last lock goes, the block goes with it,
    /// and the next lock reads zeros. Keep an NL lock to keep the value.
    pub fn value_block(&self) -> Option<&ValueBlock> {
        self.value_block.as_deref()
    }

    /// The status flags of the last grant (the request's, or a later
    /// conversion's): `VALNOTVALID` when the value block may be stale (its
    /// last writer's lock was lost: a node failed while holding it in PW
    /// or EX, or a lock replay onto a restarted `dlmd` could only bring it
    /// back from a holder below PW), `DEMOTED` and `ALTMODE` as the DLM
    /// sets them.
    pub fn status_flags(&self) -> StatusFlags {
        self.ls
            .state()
            .slot(self.id.token)
            .map_or(StatusFlags::empty(), |s| s.sb_flags)
    }

    /// A conversion to `mode` with `flags` completed with `c`: on a grant
    /// the lock's mode, and its value block if the grant brought one.
    pub(super) fn take_conversion(&mut self, mode: LockMode, flags: LockFlags, c: &Completion) {
        if c.status == Status::Granted {
            self.mode = granted_mode(mode, flags, c.flags);
            if let Some(v) = &c.value_block {
                self.value_block = Some(Box::new(*v));
            }
        }
    }

    /// Take in the completion a cancelled conversion still owes (see
    /// `owed`) before a new operation: one round trip at most.
    pub(super) fn settle(&mut self) -> Result<()> {
        if !self.owed {
            return Ok(());
        }
        let c = self.ls.wait_for(self.id, None)?;
        self.owed = false;
        if c.status == Status::Granted {
            if let Some(m) = self.ls.held_lock(self.id).and_then(|h| h.granted) {
                self.mode = m;
            }
            if c.value_block.is_some() {
                self.value_block.clone_from(&c.value_block);
            }
        }
        Ok(())
    }

    /// Convert to `mode` and wait. On a grant the lock's mode changes;
    /// otherwise (`WouldBlock`, `ConversionDeadlock`, …) it keeps its mode.
    /// `lvb` is written to the resource on a down-conversion from PW or EX
    /// when `flags` has `VALBLK`.
    ///
    /// ```
    /// # let _daemon = dlm_testkit::PrivateDaemon::start();
    /// use dlm::{Dlm, LockFlags, LockMode, LockRequest, LockspaceFlags, LockspaceName, ResourceName, Status, ValueBlock};
    ///
    /// let dlm = Dlm::open()?;
    /// let ls = dlm.create_lockspace(&LockspaceName::new("app")?, LockspaceFlags::empty(), 0o600)?;
    /// let res = ResourceName::new("counter")?;
    /// let mut lock = ls.lock(LockRequest::new(res, LockMode::Ex).value_block())?.granted().ok_or("busy")?;
    /// // Write the value block on the way down to NL, which keeps it alive.
    /// let c = lock.convert(LockMode::Nl, LockFlags::VALBLK, Some(&ValueBlock::from_prefix(b"42")))?;
    /// assert_eq!((c.status, lock.mode()), (Status::Granted, LockMode::Nl));
    /// // Anyone who asks for the value block now reads it.
    /// let reader = ls.lock(LockRequest::new(res, LockMode::Pr).value_block())?.granted().ok_or("busy")?;
    /// assert_eq!(&reader.value_block().unwrap().as_bytes()[..2], b"42");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn convert(
        &mut self,
        mode: LockMode,
        flags: LockFlags,
        lvb: Option<&ValueBlock>,
    ) -> Result<Completion> {
        self.settle()?;
        let flags = flags - LockFlags::CONVERT;
        let op_flags = flags | LockFlags::CONVERT;
        let first = self
            .ls
            .lock_op(Command::Lock, self.id, mode, op_flags, lvb, true)?;
        let c = match first {
            Some(c) => c,
            None => self.ls.wait_for(self.id, None)?,
        };
        let c = c.completion();
        self.take_conversion(mode, flags, &c);
        Ok(c)
    }

    /// Unlock and wait for the unlock to complete. `lvb` is written to the
    /// resource when unlocking from PW or EX with `VALBLK`.
    pub fn unlock_with(mut self, flags: LockFlags, lvb: Option<&ValueBlock>) -> Result<()> {
        // Held until the unlock is sent: if the write fails, the drop
        // tries again.
        unlock_flags(flags)?;
        self.settle()?;
        let first = self
            .ls
            .lock_op(Command::Unlock, self.id, LockMode::Nl, flags, lvb, true)?;
        self.held = false;
        let c = match first {
            Some(c) => c,
            None => self.ls.wait_for(self.id, None)?,
        };
        match c.status {
            Status::Unlocked => Ok(()),
            other => Err(Error::Unexpected(other)),
        }
    }

    /// Unlock and wait.
    pub fn unlock(self) -> Result<()> {
        self.unlock_with(LockFlags::empty(), None)
    }

    /// Keep the lock held beyond this value; it stays until unlocked by id
    /// or until the lockspace handle closes.
    pub fn into_id(mut self) -> LockId {
        if let Err(e) = self.settle() {
            log::warn!("lockspace {}: {e}", self.ls.inner.name);
        }
        self.held = false;
        if let Some(s) = self.ls.state().slot(self.id.token) {
            s.waiting = false;
        }
        self.id
    }
}

impl Drop for Lock {
    /// Inlined: the common drop, of a lock already unlocked, is only the
    /// lockspace's reference count; a held lock unlocks out of line.
    #[inline(always)]
    fn drop(&mut self) {
        if self.held {
            self.unlock_on_drop();
        }
    }
}

impl Lock {
    /// A held lock dropped: it is abandoned, and unlocked unless its end
    /// is already on its way.
    #[cold]
    #[inline(never)]
    fn unlock_on_drop(&mut self) {
        if let Some(s) = self.ls.state().slot(self.id.token) {
            s.waiting = false;
            s.abandoned = true;
            if self.owed && s.done.pop_front().is_none() {
                // The cancelled conversion's completion is still to
                // come: as the lock is abandoned, its arrival unlocks
                // it (the dispatcher gives abandoned locks back).
                return;
            }
        } else {
            // Its end was delivered (another opener unlocked it).
            return;
        }
        if self.ls.inner.transport.closed() && !self.ls.can_replay() {
            // The connection closed for good: the lock went with it. One
            // that a replay brings back (under way on another thread, or
            // still to come) is unlocked all the same: the unlock waits
            // for the replay and goes to the new daemon, or the replay
            // finds it decided and does not bring the lock back.
            return;
        }
        if let Err(e) = self.ls.unlock(self.id, LockFlags::empty(), None) {
            log::warn!(
                "lockspace {}: unlock on drop failed: {e}",
                self.ls.inner.name
            );
        }
    }
}
