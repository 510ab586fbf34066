//! Waiting calls for the C ABI crate (`dlm-capi`): `dlm_ls_lock_wait`,
//! `dlm_ls_unlock_wait` and a waiting conversion, on a lock that also has
//! a completion callback for its later, asynchronous operations.
//!
//! They are the waiting calls of [`Lock`](crate::Lock) (one `write()`, and
//! the completion taken in by a `read()` right after it, in the same turn
//! of the state lock: no poll, no thread hand-off), except that the lock
//! keeps its callbacks: the completion these calls wait for is returned
//! to the caller instead of going to the callback, and every later one
//! goes to the callback as usual. Other locks' records read meanwhile are
//! handed to their callbacks on this thread, as in every waiting call.
//!
//! Hidden from the docs: for the C ABI only.

use dlm_proto::error::Result;
use dlm_proto::flags::LockFlags;
use dlm_proto::lvb::ValueBlock;
use dlm_proto::mode::LockMode;
use dlm_proto::records::Command;
use dlm_proto::status::Completion;

use super::lockspace::Lockspace;
use super::request::{unlock_flags, LockId, LockRequest};
use super::sink::Sink;
use std::sync::Arc;

impl Lockspace {
    /// [`request_with_sink`](Self::request_with_sink), waiting for the
    /// request's outcome on this thread: the outcome is returned, not
    /// given to `sink`, which gets the lock's later completions (and its
    /// blocking callbacks). Not for `ORPHAN` (adoption), nor with the
    /// request's `timeout` (ignored here).
    #[doc(hidden)]
    pub fn request_wait(
        &self,
        req: LockRequest,
        sink: Arc<dyn Sink>,
    ) -> Result<(LockId, Completion)> {
        if req.flags.contains(LockFlags::ORPHAN) {
            return Err(dlm_proto::error::Error::InvalidArgument(
                "request_wait cannot adopt an orphan",
            ));
        }
        let (id, first) = self.submit(req, None, Some(sink), true)?;
        let done = match first {
            Some(d) => d,
            None => self.wait_for(id, None)?,
        };
        Ok((id, done.completion()))
    }

    /// [`unlock`](Self::unlock), waiting for the unlock's completion on
    /// this thread (returned, not given to the lock's callback).
    #[doc(hidden)]
    pub fn unlock_wait(
        &self,
        id: LockId,
        flags: LockFlags,
        lvb: Option<&ValueBlock>,
    ) -> Result<Completion> {
        unlock_flags(flags)?;
        self.op_wait(Command::Unlock, id, LockMode::Nl, flags, lvb)
    }

    /// [`convert`](Self::convert), waiting for the conversion's completion
    /// on this thread (returned, not given to the lock's callback).
    #[doc(hidden)]
    pub fn convert_wait(
        &self,
        id: LockId,
        mode: LockMode,
        flags: LockFlags,
        lvb: Option<&ValueBlock>,
    ) -> Result<Completion> {
        self.op_wait(Command::Lock, id, mode, flags | LockFlags::CONVERT, lvb)
    }

    fn op_wait(
        &self,
        cmd: Command,
        id: LockId,
        mode: LockMode,
        flags: LockFlags,
        lvb: Option<&ValueBlock>,
    ) -> Result<Completion> {
        let done = match self.lock_op_call(cmd, id, mode, flags, lvb, true)? {
            Some(d) => d,
            None => self.wait_for(id, None)?,
        };
        Ok(done.completion())
    }
}
