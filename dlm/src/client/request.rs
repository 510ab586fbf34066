//! What to lock and how: [`LockRequest`], and what comes back:
//! [`LockId`], [`Outcome`], [`LostReason`], the callback types.

use std::time::Duration;

use dlm_proto::error::{Error, Result};
use dlm_proto::flags::{LockFlags, StatusFlags};
use dlm_proto::lvb::ValueBlock;
use dlm_proto::mode::LockMode;
use dlm_proto::name::ResourceName;
use dlm_proto::status::Completion;

/// A completion callback: the lock and what happened.
pub type CompletionFn = Box<dyn FnMut(LockId, &Completion) + Send + 'static>;
/// A blocking callback: the lock and the mode someone else wants.
pub type BlockingFn = Box<dyn FnMut(LockId, LockMode) + Send + 'static>;
/// A lost-lock callback: the lock and why it is lost; see
/// [`LockRequest::on_lost`].
pub type LostFn = Box<dyn FnMut(LockId, LostReason) + Send + 'static>;

/// Why a granted lock was lost while this process still held it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LostReason {
    /// The connection to the DLM closed (the fallback daemon exited, or
    /// dropped this client): every lock of the handle ended with it.
    ConnectionClosed,
    /// Another opener of the lockspace unlocked the lock by its lock id.
    UnlockedByOther,
    /// The fallback daemon died, and the one that took its place refused
    /// the lock's replay with this errno (`EAGAIN`: a conflicting lock
    /// was granted meanwhile; `EEXIST`: its lock id was taken). See the
    /// `replay` module of the client.
    NotReplayed(dlm_proto::error::Errno),
}

impl std::fmt::Display for LostReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LostReason::ConnectionClosed => {
                "the connection to the DLM closed (the dlm daemon exited or dropped this client)"
            }
            LostReason::UnlockedByOther => "another opener of the lockspace unlocked it",
            LostReason::NotReplayed(_) => {
                "the dlm daemon died and its successor refused the lock's replay"
            }
        })
    }
}

/// A lock's identity: the kernel's lock id and this process's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LockId {
    pub(crate) token: u64,
    pub(crate) lkid: u32,
}

impl LockId {
    /// The DLM's lock id (`lksb.sb_lkid`).
    pub fn lkid(&self) -> u32 {
        self.lkid
    }
}

/// What to lock, and how: the arguments of `dlm_ls_lock()`.
pub struct LockRequest {
    pub(crate) resource: ResourceName,
    pub(crate) mode: LockMode,
    pub(crate) flags: LockFlags,
    pub(crate) value_block: Option<ValueBlock>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) on_blocking: Option<BlockingFn>,
    pub(crate) on_lost: Option<LostFn>,
}

impl std::fmt::Debug for LockRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockRequest")
            .field("resource", &self.resource)
            .field("mode", &self.mode)
            .field("flags", &self.flags)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl LockRequest {
    /// A request for `resource` in `mode`.
    pub fn new(resource: ResourceName, mode: LockMode) -> LockRequest {
        LockRequest {
            resource,
            mode,
            flags: LockFlags::empty(),
            value_block: None,
            timeout: None,
            on_blocking: None,
            on_lost: None,
        }
    }

    /// Add `DLM_LKF_*` flags. `CONVERT` and `CANCEL` are not request
    /// flags here: use [`Lock::convert`](crate::Lock::convert) and [`Lockspace::cancel`](crate::Lockspace::cancel).
    pub fn flags(mut self, flags: LockFlags) -> Self {
        self.flags |= flags;
        self
    }

    /// Ask for the value block (`VALBLK`).
    pub fn value_block(mut self) -> Self {
        self.flags |= LockFlags::VALBLK;
        self
    }

    /// Give up (cancel) after this long; see the module docs. A timeout
    /// too long for the clock to represent (such as [`Duration::MAX`])
    /// means no timeout.
    ///
    /// ```
    /// # let _daemon = dlm_testkit::PrivateDaemon::start();
    /// use std::time::Duration;
    /// use dlm::{Dlm, LockFlags, LockMode, LockRequest, LockspaceFlags, LockspaceName, Outcome, ResourceName, Status};
    ///
    /// let dlm = Dlm::open()?;
    /// let name = LockspaceName::new("app")?;
    /// let ls = dlm.create_lockspace(&name, LockspaceFlags::empty(), 0o600)?;
    /// let held = ls.lock(LockRequest::new(ResourceName::new("r")?, LockMode::Ex))?;
    /// let other = Dlm::open()?.open_lockspace(&name)?;
    ///
    /// // NOQUEUE: an answer at once rather than a wait.
    /// let r = other.lock(LockRequest::new(ResourceName::new("r")?, LockMode::Pr).flags(LockFlags::NOQUEUE))?;
    /// assert!(matches!(r, Outcome::NotGranted(c) if c.status == Status::WouldBlock));
    /// // A timeout: the request is cancelled when the time is up.
    /// let r = other.lock(LockRequest::new(ResourceName::new("r")?, LockMode::Pr).timeout(Duration::from_millis(50)))?;
    /// assert!(matches!(r, Outcome::NotGranted(c) if c.status == Status::TimedOut));
    /// drop(held);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// Call `f` when another request is blocked by this lock, with the
    /// mode it asks for: the holder's cue to convert down or unlock.
    /// Like every callback it runs only where something reads the
    /// lockspace: its event loop, [`dispatch`](crate::Lockspace::dispatch),
    /// or a waiting call on it (see [`Lockspace::request`](crate::Lockspace::request)).
    ///
    /// ```
    /// # let _daemon = dlm_testkit::PrivateDaemon::start();
    /// use std::sync::mpsc;
    /// use dlm::{Dlm, LockMode, LockRequest, LockspaceFlags, LockspaceName, ResourceName};
    ///
    /// let dlm = Dlm::open()?;
    /// let name = LockspaceName::new("app")?;
    /// let holder = dlm.create_lockspace(&name, LockspaceFlags::empty(), 0o600)?;
    /// holder.start_event_loop()?;
    /// let (tx, rx) = mpsc::channel();
    /// let req = LockRequest::new(ResourceName::new("cfg")?, LockMode::Ex)
    ///     .on_blocking(move |_, wanted| { let _ = tx.send(wanted); });
    /// let lock = holder.lock(req)?.granted().ok_or("not granted")?;
    ///
    /// // Another owner (another process, or here a second handle) asks.
    /// let other = Dlm::open()?.open_lockspace(&name)?;
    /// let _id = other.request(LockRequest::new(ResourceName::new("cfg")?, LockMode::Pr), |_, _| {})?;
    /// assert_eq!(rx.recv()?, LockMode::Pr);
    /// lock.unlock()?; // and the waiter is granted
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_blocking(mut self, f: impl FnMut(LockId, LockMode) + Send + 'static) -> Self {
        self.on_blocking = Some(Box::new(f));
        self
    }

    /// Call `f` at once when the lock, once granted, is lost while still
    /// held: the connection to the DLM closed, or another opener of the
    /// lockspace unlocked it (see [`LostReason`]). `f` runs where other
    /// callbacks run (see the module docs): on the event-loop thread, in
    /// [`Lockspace::dispatch`](crate::Lockspace::dispatch), or in a call that meets the closed
    /// connection. It runs at most once; after it, the lock is gone, and
    /// dropping its [`Lock`](crate::Lock) sends nothing.
    pub fn on_lost(mut self, f: impl FnMut(LockId, LostReason) + Send + 'static) -> Self {
        self.on_lost = Some(Box::new(f));
        self
    }
}

/// The outcome of a waiting lock call: granted, or the completion that
/// says why not (`WouldBlock`, `TimedOut`, `Cancelled`, …).
#[derive(Debug)]
pub enum Outcome<T> {
    /// Granted.
    Granted(T),
    /// Not granted.
    NotGranted(Completion),
}

impl<T> Outcome<T> {
    /// The granted value, if any.
    pub fn granted(self) -> Option<T> {
        match self {
            Outcome::Granted(t) => Some(t),
            Outcome::NotGranted(_) => None,
        }
    }
}

/// Flags an unlock refuses: a cancel has its own call.
pub(crate) fn unlock_flags(flags: LockFlags) -> Result<()> {
    if flags.contains(LockFlags::CANCEL) {
        return Err(Error::InvalidArgument("use Lockspace::cancel to cancel"));
    }
    Ok(())
}

/// The mode a grant gave: the requested one, or with `ALTMODE` the
/// alternate the kernel tried (`ALTPR` first, unless PR was requested).
#[inline]
pub(crate) fn granted_mode(requested: LockMode, flags: LockFlags, sb: StatusFlags) -> LockMode {
    if !sb.contains(StatusFlags::ALTMODE) {
        requested
    } else if requested != LockMode::Pr && flags.contains(LockFlags::ALTPR) {
        LockMode::Pr
    } else {
        LockMode::Cw
    }
}
