//! The client API: lockspaces and locks over either backend (the crate's
//! front page describes it).

mod device;
mod kernel;

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use device::Device;

use dlm_proto::error::{Errno, Error, Result};
use dlm_proto::flags::{LockFlags, LockspaceFlags, StatusFlags};
use dlm_proto::lvb::ValueBlock;
use dlm_proto::mode::LockMode;
use dlm_proto::name::{LockspaceName, ResourceName};
use dlm_proto::records::{self, Command, LockResult, LockWrite};
use dlm_proto::status::{Completion, Status};
use dlm_proto::wire;

/// Where a [`Dlm`] sends its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// The kernel DLM through `/dev/misc/dlm-control` and `dlm_<ls>`.
    Kernel,
    /// The fallback daemon `dlmd` through a Unix socket.
    Fallback,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Kernel => "kernel",
            Backend::Fallback => "fallback",
        })
    }
}

impl std::str::FromStr for Backend {
    type Err = Error;

    fn from_str(s: &str) -> Result<Backend> {
        match s {
            "kernel" => Ok(Backend::Kernel),
            "fallback" => Ok(Backend::Fallback),
            _ => Err(Error::InvalidArgument(
                "DLM_BACKEND must be \"kernel\" or \"fallback\"",
            )),
        }
    }
}

/// The kernel's control device, where it may be: `/dev/misc/dlm-control`
/// (udev's link), then `/dev/dlm-control` (devtmpfs).
pub fn kernel_control_device() -> Option<PathBuf> {
    ["/dev/misc/dlm-control", "/dev/dlm-control"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// The node of the kernel's misc device `name` (`dlm-control`, or
/// `dlm_<lockspace>`): `/dev/misc/<name>` (udev's link), then `/dev/<name>`
/// (devtmpfs). Failing both, when the kernel lists the device in
/// `/proc/misc` and we are root, the node is created in `/dev/misc`; never
/// a wait for udev. `ENOENT` when the kernel has no such device.
pub fn kernel_device_node(name: &str) -> Result<PathBuf> {
    kernel::device_node(name)
}

/// Options for [`Dlm`]; see [`Dlm::builder`].
#[derive(Debug, Clone, Default)]
pub struct DlmBuilder {
    backend: Option<Backend>,
    socket: Option<PathBuf>,
    autostart: Option<bool>,
}

impl DlmBuilder {
    /// Use this backend, whatever the environment says.
    pub fn backend(mut self, b: Backend) -> Self {
        self.backend = Some(b);
        self
    }

    /// Talk to the daemon at this socket (fallback backend). It must pass
    /// the same [`trust`](dlm_proto::trust) checks as the default one.
    pub fn socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.socket = Some(path.into());
        self
    }

    /// Whether to start a per-user `dlmd` when none answers (default:
    /// yes, unless `DLM_NO_AUTOSTART` is set).
    pub fn autostart(mut self, on: bool) -> Self {
        self.autostart = Some(on);
        self
    }

    /// Connect.
    pub fn open(self) -> Result<Dlm> {
        let backend = match self.backend {
            Some(b) => b,
            None => match std::env::var("DLM_BACKEND") {
                Ok(s) if !s.is_empty() => s.parse()?,
                _ => {
                    if kernel_control_device().is_some() {
                        Backend::Kernel
                    } else {
                        Backend::Fallback
                    }
                }
            },
        };
        match backend {
            Backend::Kernel => {
                let path = kernel::control_node()?;
                let mut control = Device::open_kernel(&path)?;
                kernel::check_version(control.version()?)?;
                Ok(Dlm {
                    backend,
                    socket: None,
                    control: Mutex::new(control),
                })
            }
            Backend::Fallback => {
                let socket = match self.socket {
                    Some(p) => p,
                    None => dlm_proto::paths::fallback_socket_path().map_err(Error::Os)?,
                };
                let autostart = self
                    .autostart
                    .unwrap_or_else(|| std::env::var_os("DLM_NO_AUTOSTART").is_none());
                let mut control = connect_or_start(&socket, autostart)?;
                kernel::check_version(control.version()?)?;
                Ok(Dlm {
                    backend,
                    socket: Some(socket),
                    control: Mutex::new(control),
                })
            }
        }
    }
}

/// Name the lockspace in errors that are about it.
fn lockspace_error(op: &'static str, name: &LockspaceName, e: Error) -> Error {
    match e {
        Error::Os(errno) => Error::Lockspace {
            op,
            name: name.to_string(),
            errno,
        },
        other => other,
    }
}

/// Connect to the control side of `dlmd`, starting a per-user daemon if
/// none answers and `autostart` is on.
///
/// A socket that fails the [`trust`](dlm_proto::trust) checks is refused at
/// once, never retried, and no daemon is started for it.
fn connect_or_start(socket: &Path, autostart: bool) -> Result<Device> {
    let hello = |_: ()| Device::connect(socket, wire::ROLE_CONTROL, 0, b"");
    let unavailable = |e: Error| match e {
        Error::Os(errno) => Error::DaemonUnavailable(socket.to_path_buf(), errno),
        other => other,
    };
    match hello(()) {
        Ok((d, _)) => return Ok(d),
        Err(Error::Os(e))
            if autostart && (e == Errno::ENOENT || e == Errno::from_raw(libc::ECONNREFUSED)) => {}
        // Untrusted, or a daemon answered and refused: said at once.
        Err(e) => return Err(unavailable(e)),
    }
    dlm_proto::paths::start_user_daemon(socket).map_err(unavailable)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pause = Duration::from_millis(2);
    loop {
        match hello(()) {
            Ok((d, _)) => return Ok(d),
            Err(e @ (Error::UntrustedSocket(_) | Error::DaemonRefused { .. })) => return Err(e),
            Err(e) if Instant::now() >= deadline => return Err(unavailable(e)),
            Err(_) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
        }
    }
}

/// A connection to the DLM: the control device (kernel) or the control
/// side of `dlmd`.
#[derive(Debug)]
pub struct Dlm {
    backend: Backend,
    socket: Option<PathBuf>,
    control: Mutex<Device>,
}

impl Dlm {
    /// Connect to the backend chosen from the environment: see
    /// [`DlmBuilder::open`].
    pub fn open() -> Result<Dlm> {
        DlmBuilder::default().open()
    }

    /// Options.
    pub fn builder() -> DlmBuilder {
        DlmBuilder::default()
    }

    /// Which backend this handle uses.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The daemon's pid (fallback backend), from the socket's peer
    /// credentials.
    pub fn daemon_pid(&self) -> Option<i32> {
        self.control().peer_pid()
    }

    /// The daemon socket, for the fallback backend.
    pub fn socket_path(&self) -> Option<&Path> {
        self.socket.as_deref()
    }

    fn control(&self) -> MutexGuard<'_, Device> {
        self.control.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `dlm_kernel_version()`: the device interface version (6.0.2).
    pub fn version(&self) -> Result<(u32, u32, u32)> {
        let v = self.control().version()?;
        Ok((v[0], v[1], v[2]))
    }

    /// `dlm_new_lockspace()`: create (or join) a lockspace and open it.
    ///
    /// `mode` is the access mode of the lockspace (like a file's, default
    /// 0600 when 0 is given); other users need read-write permission to
    /// open it.
    pub fn create_lockspace(
        &self,
        name: &LockspaceName,
        flags: LockspaceFlags,
        mode: u32,
    ) -> Result<Lockspace> {
        let flags = flags - LockspaceFlags::TIMEWARN;
        let req = records::encode_create(name.as_bytes(), flags.bits(), records::VERSION)?;
        let minor = self
            .control()
            .write(req.as_bytes())
            .map_err(|e| lockspace_error("create", name, e.into()))?;
        let ls = self.open_lockspace(name)?;
        let mode = if mode == 0 { 0o600 } else { mode };
        ls.chmod(mode)?;
        debug_assert!(minor >= 0);
        Ok(ls)
    }

    /// `dlm_open_lockspace()`: open an existing lockspace.
    pub fn open_lockspace(&self, name: &LockspaceName) -> Result<Lockspace> {
        match &self.socket {
            Some(socket) => {
                let (dev, minor) =
                    Device::connect(socket, wire::ROLE_LOCKSPACE, 0, name.as_bytes())
                        .map_err(|e| lockspace_error("open", name, e))?;
                Lockspace::new(*name, u32::try_from(minor).unwrap_or(0), dev, self.backend)
            }
            None => {
                let dev_name = String::from_utf8_lossy(&name.device_name()).into_owned();
                let path =
                    kernel::device_node(&dev_name).map_err(|e| lockspace_error("open", name, e))?;
                let dev = Device::open_kernel(&path)
                    .map_err(|e| lockspace_error("open", name, e.into()))?;
                let minor = dev.minor().unwrap_or(0);
                Lockspace::new(*name, minor, dev, self.backend)
            }
        }
    }

    /// `dlm_release_lockspace()`: close `ls` and release the lockspace.
    ///
    /// Unlike libdlm, which ignores it, the result is returned: without
    /// `force`, `EBUSY` while locks remain. The call waits until every
    /// other handle on the lockspace is closed, as the kernel does.
    pub fn release_lockspace(&self, ls: Lockspace, force: bool) -> Result<()> {
        let minor = ls.minor();
        let ls_name = *ls.name();
        drop(ls);
        let flags = if force {
            dlm_sys::DLM_USER_LSFLG_FORCEFREE
        } else {
            0
        };
        let req = records::encode_remove(minor, flags, records::VERSION);
        self.control()
            .write(req.as_bytes())
            .map_err(|e| lockspace_error("release", &ls_name, e.into()))?;
        Ok(())
    }

    /// Every lockspace the DLM has (a query libdlm does not offer).
    ///
    /// On the kernel backend this is best effort (sysfs and debugfs): see
    /// the fields' notes.
    pub fn lockspaces(&self) -> Result<Vec<dlm_proto::query::LockspaceInfo>> {
        if self.backend == Backend::Kernel {
            return kernel::lockspaces();
        }
        let body = self.control().socket_request(
            wire::Kind::Query,
            &[wire::QUERY_LOCKSPACES],
            wire::Kind::QueryReply,
        )?;
        dlm_proto::query::parse(&body).map_err(Error::Os)
    }

    /// The daemon's version and the kernel model its lockspaces follow
    /// (`dlmd --kernel-model`): `Ok(None)` on the kernel backend, which
    /// is the kernel itself, and from a daemon older than the query.
    pub fn daemon_info(&self) -> Result<Option<dlm_proto::query::DaemonInfo>> {
        if self.backend == Backend::Kernel {
            return Ok(None);
        }
        match self.control().socket_request(
            wire::Kind::Query,
            &[wire::QUERY_DAEMON],
            wire::Kind::QueryReply,
        ) {
            Ok(body) => dlm_proto::query::parse(&body).map(Some).map_err(Error::Os),
            // A daemon from before the query: an unknown subject.
            Err(Errno::EINVAL) => Ok(None),
            Err(e) => Err(Error::Os(e)),
        }
    }

    /// Every lock of a lockspace, with mode, queue and owner pid.
    ///
    /// On the kernel backend this reads debugfs
    /// (`/sys/kernel/debug/dlm/<ls>_locks`), which must be mounted, and
    /// binary resource names are cut at their first NUL.
    pub fn locks(&self, name: &LockspaceName) -> Result<Vec<dlm_proto::query::LockInfo>> {
        if self.backend == Backend::Kernel {
            return kernel::locks(&name.to_string());
        }
        let mut q = vec![wire::QUERY_LOCKS];
        q.extend_from_slice(name.as_bytes());
        let body = self
            .control()
            .socket_request(wire::Kind::Query, &q, wire::Kind::QueryReply)
            .map_err(|e| lockspace_error("list the locks of", name, e.into()))?;
        dlm_proto::query::parse(&body).map_err(Error::Os)
    }

    /// Some of the locks of a lockspace, by lock id: at most
    /// `options.limit`, with lock ids greater than `options.after`, and
    /// whether the limit cut the list short. To page through a lockspace,
    /// pass the last lock id of each page as the next one's `after`.
    ///
    /// `dlmd` makes the answer as it is read; the
    /// [`query`](dlm_proto::query) module says what it guarantees while locks
    /// come and go. On the kernel backend the whole list is read from
    /// debugfs (see [`locks`](Self::locks)) and cut here; so it is too
    /// from a `dlmd` too old to know page queries.
    pub fn locks_with(
        &self,
        name: &LockspaceName,
        options: &dlm_proto::query::QueryOptions,
    ) -> Result<dlm_proto::query::LockPage> {
        if self.backend == Backend::Kernel {
            return Ok(options.apply(kernel::locks(&name.to_string())?));
        }
        let limit = options.limit.unwrap_or(u32::MAX);
        let q = wire::page_query(limit, options.after, name.as_bytes());
        let answer = self
            .control()
            .socket_request(wire::Kind::Query, &q, wire::Kind::QueryReply);
        match answer {
            Ok(body) => dlm_proto::query::parse(&body).map_err(Error::Os),
            // A daemon from before page queries: the whole list, cut here.
            Err(e) if e == Errno::EINVAL => Ok(options.apply(self.locks(name)?)),
            Err(e) => Err(lockspace_error("list the locks of", name, e.into())),
        }
    }
}

/// A device handle at the level of `write()` and `read()`: the records of
/// [`dlm_proto::records`], nothing more. This is what libdlm itself does
/// with the device; the C ABI and the conformance suite use it. Most
/// programs want [`Lockspace`] instead.
#[derive(Debug)]
pub struct RawDevice(Device);

impl RawDevice {
    /// Open a kernel device node (`/dev/misc/dlm-control`, `/dev/dlm_<ls>`).
    pub fn open_kernel(path: &Path) -> Result<RawDevice> {
        Ok(RawDevice(Device::open_kernel(path)?))
    }

    /// Connect to `dlmd` as its control device (`lockspace` `None`) or as
    /// the named lockspace's device. With `pull`, records come only when
    /// read, one per [`read`](Self::read), as from the kernel device;
    /// otherwise the daemon pushes them as they happen.
    ///
    /// The socket is checked as [`Dlm`] checks its own (see
    /// [`trust`](dlm_proto::trust)): [`Error::UntrustedSocket`] if it fails.
    pub fn connect(
        socket: &Path,
        lockspace: Option<&LockspaceName>,
        pull: bool,
    ) -> Result<RawDevice> {
        let (role, name) = match lockspace {
            Some(n) => (wire::ROLE_LOCKSPACE, n.as_bytes()),
            None => (wire::ROLE_CONTROL, &b""[..]),
        };
        let flags = if pull { wire::HELLO_PULL } else { 0 };
        let (dev, _) = Device::connect(socket, role, flags, name)?;
        Ok(RawDevice(dev))
    }

    /// `write()` a request; its return value.
    pub fn write(&mut self, bytes: &[u8]) -> Result<i64, Errno> {
        self.0.write(bytes)
    }

    /// One `read()` of a callback record; `None` when there is none
    /// (`EAGAIN`).
    pub fn read(&mut self) -> Result<Option<LockResult>, Errno> {
        self.0.read_one()
    }

    /// The 12-byte version read.
    pub fn version(&mut self) -> Result<[u32; 3], Errno> {
        self.0.version()
    }

    /// The fd, for polling.
    pub fn raw_fd(&self) -> RawFd {
        self.0.raw_fd()
    }

    /// The daemon's lockspaces (a control connection to `dlmd` only).
    pub fn lockspaces(&mut self) -> Result<Vec<dlm_proto::query::LockspaceInfo>> {
        let body = self.0.socket_request(
            wire::Kind::Query,
            &[wire::QUERY_LOCKSPACES],
            wire::Kind::QueryReply,
        )?;
        dlm_proto::query::parse(&body).map_err(Error::Os)
    }
}

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
}

impl std::fmt::Display for LostReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LostReason::ConnectionClosed => {
                "the connection to the DLM closed (the dlm daemon exited or dropped this client)"
            }
            LostReason::UnlockedByOther => "another opener of the lockspace unlocked it",
        })
    }
}

/// A lock's identity: the kernel's lock id and this process's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LockId {
    token: u64,
    lkid: u32,
}

impl LockId {
    /// The DLM's lock id (`lksb.sb_lkid`).
    pub fn lkid(&self) -> u32 {
        self.lkid
    }
}

/// What to lock, and how: the arguments of `dlm_ls_lock()`.
pub struct LockRequest {
    resource: ResourceName,
    mode: LockMode,
    flags: LockFlags,
    value_block: Option<ValueBlock>,
    timeout: Option<Duration>,
    on_blocking: Option<BlockingFn>,
    on_lost: Option<LostFn>,
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
    /// flags here: use [`Lock::convert`] and [`Lockspace::cancel`].
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
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// Call `f` when another request is blocked by this lock.
    pub fn on_blocking(mut self, f: impl FnMut(LockId, LockMode) + Send + 'static) -> Self {
        self.on_blocking = Some(Box::new(f));
        self
    }

    /// Call `f` at once when the lock, once granted, is lost while still
    /// held: the connection to the DLM closed, or another opener of the
    /// lockspace unlocked it (see [`LostReason`]). `f` runs where other
    /// callbacks run (see the module docs): on the event-loop thread, in
    /// [`Lockspace::dispatch`], or in a call that meets the closed
    /// connection. It runs at most once; after it, the lock is gone, and
    /// dropping its [`Lock`] sends nothing.
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

/// One lock's client-side record. Slots are reused: a freed slot keeps its
/// allocations (the `done` queue), so a steady stream of locks allocates
/// nothing. The default is a vacant slot.
#[derive(Default)]
struct Slot {
    gen: u32,
    live: bool,
    /// The DLM's id of the lock, once its write has returned (0 before:
    /// the DLM never uses 0).
    lkid: u32,
    ever_granted: bool,
    on_complete: Option<CompletionFn>,
    on_blocking: Option<BlockingFn>,
    on_lost: Option<LostFn>,
    /// Completions not yet taken by a waiter.
    done: VecDeque<Completion>,
    waiting: bool,
    deadlock_cancel: bool,
    /// A cancel (or deadlock-cancel) was sent for the operation in
    /// progress; its outcome is pending.
    cancel_sent: bool,
    /// The operation in progress was sent with `NOQUEUE`: its outcome was
    /// decided during the write, so there is nothing to cancel.
    noqueue: bool,
    /// An unlock was sent: the lock ends (or has ended) in the DLM, and
    /// its id must not be used again.
    ending: bool,
    ended: bool,
    /// Unlock as soon as it is granted (an abandoned request).
    abandoned: bool,
    lvb: ValueBlock,
    #[cfg(feature = "async")]
    waker: Option<std::task::Waker>,
}

#[derive(Default)]
struct State {
    slots: Vec<Slot>,
    free: Vec<u32>,
    next_gen: u32,
    /// A thread is reading the device for everybody.
    reading: bool,
}

impl State {
    fn slot(&mut self, token: u64) -> Option<&mut Slot> {
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
    fn own_token<R: Record>(&mut self, r: &R) -> Option<u64> {
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
                return Some(token);
            }
        }
        self.slots
            .iter()
            .enumerate()
            .find(|(_, s)| s.live && s.lkid == lkid && lkid != 0)
            .map(|(idx, s)| make_token(idx, s.gen))
    }

    /// A new live slot; returns its token.
    fn new_slot(
        &mut self,
        on_complete: Option<CompletionFn>,
        on_blocking: Option<BlockingFn>,
        on_lost: Option<LostFn>,
        waiting: bool,
        noqueue: bool,
    ) -> u64 {
        self.next_gen = self.next_gen.wrapping_add(1);
        let gen = self.next_gen;
        let idx = match self.free.pop() {
            Some(i) => i as usize,
            None => {
                self.slots.push(Slot::default());
                self.slots.len() - 1
            }
        };
        let s = &mut self.slots[idx];
        s.gen = gen;
        s.live = true;
        s.lkid = 0;
        s.ever_granted = false;
        s.on_complete = on_complete;
        s.on_blocking = on_blocking;
        s.on_lost = on_lost;
        s.waiting = waiting;
        s.deadlock_cancel = false;
        s.cancel_sent = false;
        s.noqueue = noqueue;
        s.ending = false;
        s.ended = false;
        s.abandoned = false;
        s.lvb = ValueBlock::zeroed();
        make_token(idx, gen)
    }

    fn free_slot(&mut self, token: u64) {
        let (idx, gen) = split_token(token);
        if let Some(s) = self.slots.get_mut(idx).filter(|s| s.live && s.gen == gen) {
            s.release();
            self.free.push(idx as u32);
        }
    }

    /// The waiter has taken its completion: see [`Slot::finish`].
    fn finish(&mut self, token: u64) {
        let (idx, gen) = split_token(token);
        if let Some(s) = self.slots.get_mut(idx).filter(|s| s.live && s.gen == gen) {
            s.finish(idx, &mut self.free);
        }
    }
}

impl Slot {
    /// Empty the slot (it keeps its allocations for the next lock).
    #[inline(always)]
    fn release(&mut self) {
        self.live = false;
        #[cfg(feature = "async")]
        let waker = self.waker.is_some();
        #[cfg(not(feature = "async"))]
        let waker = false;
        if self.on_complete.is_some()
            || self.on_blocking.is_some()
            || self.on_lost.is_some()
            || !self.done.is_empty()
            || waker
        {
            self.drop_contents();
        }
    }

    /// Drop the callbacks, the completions and the waker (the slot keeps
    /// the queue's allocation). Waiting calls leave none of these behind.
    #[cold]
    #[inline(never)]
    fn drop_contents(&mut self) {
        self.on_complete = None;
        self.on_blocking = None;
        self.on_lost = None;
        self.done.clear();
        #[cfg(feature = "async")]
        {
            self.waker = None;
        }
    }

    /// The waiter has taken its completion: the slot (number `idx`) stops
    /// collecting completions, and goes to `free` if the lock has ended.
    #[inline]
    fn finish(&mut self, idx: usize, free: &mut Vec<u32>) {
        self.waiting = false;
        if self.ended {
            self.release();
            free.push(idx as u32);
        }
    }
}

/// What the client reads of a callback record: a record copied out of a
/// daemon connection's stash, or one read in place from the kernel.
trait Record {
    fn astparam(&self) -> u64;
    fn lkid(&self) -> u32;
    fn status(&self) -> i32;
    fn sb_flags(&self) -> u8;
    fn bast_mode(&self) -> u8;
    fn lvb(&self) -> Option<&[u8; dlm_proto::records::LVB_LEN]>;
}

impl Record for LockResult {
    #[inline(always)]
    fn astparam(&self) -> u64 {
        self.astparam
    }
    #[inline(always)]
    fn lkid(&self) -> u32 {
        self.lkid
    }
    #[inline(always)]
    fn status(&self) -> i32 {
        self.status
    }
    #[inline(always)]
    fn sb_flags(&self) -> u8 {
        self.sb_flags
    }
    #[inline(always)]
    fn bast_mode(&self) -> u8 {
        self.bast_mode
    }
    #[inline(always)]
    fn lvb(&self) -> Option<&[u8; dlm_proto::records::LVB_LEN]> {
        self.lvb.as_ref()
    }
}

impl Record for records::ResultView<'_> {
    #[inline(always)]
    fn astparam(&self) -> u64 {
        records::ResultView::astparam(self)
    }
    #[inline(always)]
    fn lkid(&self) -> u32 {
        records::ResultView::lkid(self)
    }
    #[inline(always)]
    fn status(&self) -> i32 {
        records::ResultView::status(self)
    }
    #[inline(always)]
    fn sb_flags(&self) -> u8 {
        records::ResultView::sb_flags(self)
    }
    #[inline(always)]
    fn bast_mode(&self) -> u8 {
        records::ResultView::bast_mode(self)
    }
    #[inline(always)]
    fn lvb(&self) -> Option<&[u8; dlm_proto::records::LVB_LEN]> {
        records::ResultView::lvb(self)
    }
}

/// What a completion record did to its slot, before the completion is
/// built: small enough to stay in registers on the hot path.
#[derive(Clone, Copy)]
struct Taken {
    status: Status,
    flags: StatusFlags,
    /// The lock ended with this completion.
    ends: bool,
}

impl Taken {
    /// The completion, with the record's value block if it carries one.
    #[inline(always)]
    fn completion<R: Record>(self, r: &R) -> Completion {
        Completion {
            status: self.status,
            flags: self.flags,
            value_block: r.lvb().map(|v| ValueBlock::new(*v)),
        }
    }

    /// The same as a [`Done`].
    #[inline(always)]
    fn done<R: Record>(self, r: &R) -> Done {
        Done {
            status: self.status,
            flags: self.flags,
            value_block: r.lvb().map(|v| Box::new(ValueBlock::new(*v))),
        }
    }
}

/// A waiting call's completion on its way back to the caller: a
/// [`Completion`] whose value block, which few requests ask for, is boxed,
/// so that the common case moves two words instead of forty bytes.
struct Done {
    status: Status,
    flags: StatusFlags,
    value_block: Option<Box<ValueBlock>>,
}

impl Done {
    fn completion(self) -> Completion {
        Completion {
            status: self.status,
            flags: self.flags,
            value_block: self.value_block.map(|v| *v),
        }
    }
}

impl From<Completion> for Done {
    fn from(c: Completion) -> Done {
        Done {
            status: c.status,
            flags: c.flags,
            value_block: c.value_block.map(Box::new),
        }
    }
}

/// What a callback record asks for once the state lock is released.
enum After {
    Nothing,
    /// Run the blocking callback, then put it back.
    Blocking(BlockingFn, LockId, LockMode),
    /// Run the completion callback, then put it back (or free the slot
    /// when the lock has ended).
    Complete(CompletionFn, LockId, Completion, bool),
    /// An abandoned lock was granted: unlock it.
    UnlockAbandoned(LockId),
    /// A held lock was lost: run its lost callback, then the rest.
    Lost(LostFn, LockId, LostReason, Box<After>),
    /// Wake the task of the future the completion was queued for.
    #[cfg(feature = "async")]
    Wake(std::task::Waker),
}

/// The longest a reading waiter polls before it looks at its slot again.
const READER_POLL: Duration = Duration::from_millis(200);

/// The token of slot number `idx` in generation `gen`.
#[inline(always)]
fn make_token(idx: usize, gen: u32) -> u64 {
    (u64::from(gen) << 32) | (idx as u64 + 1)
}

fn split_token(token: u64) -> (usize, u32) {
    (
        ((token & 0xffff_ffff) as usize).wrapping_sub(1),
        (token >> 32) as u32,
    )
}

struct Inner {
    name: LockspaceName,
    minor: u32,
    backend: Backend,
    dev: Mutex<Device>,
    fd: RawFd,
    /// A duplicate of the device fd, polled without holding `dev`.
    poll_fd: OwnedFd,
    /// Readable while records wait in user space (read from the socket
    /// along with a reply); registered with every poller next to `fd`.
    notify_r: OwnedFd,
    notify_w: OwnedFd,
    /// How many pollers (event loop, registered mio sources) watch
    /// `notify_r`; without any, the pipe is left alone.
    pollers: std::sync::atomic::AtomicUsize,
    /// Whether the event-loop thread runs (mirrors `event_loop`, read on
    /// every wait without taking its lock).
    loop_running: AtomicBool,
    /// The event-loop thread, once started: a waiting call made by one of
    /// its callbacks reads the device itself, since the loop cannot.
    loop_thread: Mutex<Option<std::thread::ThreadId>>,
    /// Threads waiting on `cond`; notifying nobody costs a syscall.
    waiters: std::sync::atomic::AtomicUsize,
    /// The daemon connection was found closed: every lock is lost.
    closed: AtomicBool,
    /// The lost callbacks for the close have been taken to run.
    closed_told: AtomicBool,
    state: Mutex<State>,
    cond: Condvar,
    event_loop: Mutex<Option<Arc<EventLoop>>>,
}

struct EventLoop {
    waker: mio::Waker,
    stop: AtomicBool,
}

impl Inner {
    /// Wake threads blocked in a waiting call, if there are any.
    fn wake_waiters(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.cond.notify_all();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(ev) = self.event_loop.get_mut().ok().and_then(|e| e.take()) {
            ev.stop.store(true, Ordering::SeqCst);
            let _ = ev.waker.wake();
        }
    }
}

/// An open lockspace (`dlm_lshandle_t`). Cheap to clone; the lockspace is
/// closed when the last clone and the last [`Lock`] on it are dropped,
/// which releases its non-persistent locks.
#[derive(Clone)]
pub struct Lockspace {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Lockspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lockspace")
            .field("name", &self.inner.name)
            .field("backend", &self.inner.backend)
            .finish_non_exhaustive()
    }
}

const CASTADDR: u64 = 1;
const BASTADDR: u64 = 2;

/// A request carrying the user arguments every request has: the token
/// everywhere a pointer would go, and fixed non-zero "addresses".
#[inline]
fn lock_write(cmd: Command, token: u64, has_bast: bool) -> LockWrite {
    let mut w = LockWrite::new(cmd, records::VERSION);
    let bastaddr = if has_bast { BASTADDR } else { 0 };
    w.set_user_args(token, CASTADDR, token, bastaddr, token);
    w
}

impl Lockspace {
    fn new(name: LockspaceName, minor: u32, dev: Device, backend: Backend) -> Result<Lockspace> {
        use rustix::pipe::{pipe_with, PipeFlags};
        let fd = dev.raw_fd();
        let poll_fd = dev.dup_fd()?;
        let (notify_r, notify_w) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)
            .map_err(|e| Errno::from_raw(e.raw_os_error()))?;
        Ok(Lockspace {
            inner: Arc::new(Inner {
                name,
                minor,
                backend,
                dev: Mutex::new(dev),
                fd,
                poll_fd,
                notify_r,
                notify_w,
                pollers: std::sync::atomic::AtomicUsize::new(0),
                waiters: std::sync::atomic::AtomicUsize::new(0),
                closed: AtomicBool::new(false),
                closed_told: AtomicBool::new(false),
                loop_running: AtomicBool::new(false),
                loop_thread: Mutex::new(None),
                state: Mutex::new(State::default()),
                cond: Condvar::new(),
                event_loop: Mutex::new(None),
            }),
        })
    }

    /// The lockspace's name.
    pub fn name(&self) -> &LockspaceName {
        &self.inner.name
    }

    /// The lockspace's minor (device number or daemon id).
    pub fn minor(&self) -> u32 {
        self.inner.minor
    }

    /// The backend this lockspace lives on.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// A new descriptor of what owns this handle's locks (the kernel
    /// device's open file, or the connection to `dlmd`), *without*
    /// close-on-exec, for a child process to inherit, as `flock(1)`'s
    /// child inherits its lock.
    ///
    /// The DLM keeps the handle's locks while any copy of the descriptor
    /// is open: the kernel releases them at the last `close()` of the
    /// open file, and `dlmd` when the connection's last copy closes. So a
    /// child holding a copy keeps the locks held after this process is
    /// killed, until it exits or closes it. From this call on, dropping
    /// the last [`Lockspace`] clone only closes this process's descriptor
    /// (on the fallback it no longer asks the daemon to drop the
    /// connection's locks at once); a [`Lock`] dropped or unlocked still
    /// unlocks.
    ///
    /// The child must not read or write the descriptor: the records on it
    /// are this process's. Close the copy here once the child has it.
    pub fn inheritable_fd(&self) -> Result<OwnedFd> {
        self.dev().share_with_children();
        rustix::io::dup(&self.inner.poll_fd)
            .map_err(|e| Error::Os(Errno::from_raw(e.raw_os_error())))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dev(&self) -> MutexGuard<'_, Device> {
        self.inner.dev.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn chmod(&self, mode: u32) -> Result<()> {
        if self.inner.backend == Backend::Kernel {
            return self.dev().fchmod(mode).map_err(Error::Os);
        }
        let body = self.dev().socket_request(
            wire::Kind::Chmod,
            &mode.to_le_bytes(),
            wire::Kind::Result,
        )?;
        let v = wire::result_value(&body)?;
        if v < 0 {
            return Err(Error::Os(Errno::from_raw((-v) as i32)));
        }
        Ok(())
    }

    /// Write a request, then make sure whatever callback records the write
    /// brought along (the daemon may send them with its reply) are seen.
    ///
    /// A kernel device is written through `poll_fd`, a duplicate of its
    /// fd, without taking the device lock: the kernel serialises writes
    /// itself.
    #[inline]
    fn write(&self, bytes: &[u8]) -> Result<i64, Errno> {
        let r = self.write_only(bytes);
        self.after_io();
        r
    }

    /// [`write`](Self::write) without the stashed-record check, for a
    /// caller that holds the state lock (it calls `after_io` once it has
    /// let go).
    #[inline]
    fn write_only(&self, bytes: &[u8]) -> Result<i64, Errno> {
        if self.inner.backend == Backend::Kernel {
            return device::kernel_write(self.inner.poll_fd.as_fd(), bytes);
        }
        self.write_socket(bytes)
    }

    #[inline(never)]
    fn write_socket(&self, bytes: &[u8]) -> Result<i64, Errno> {
        self.dev().write(bytes).map_err(|e| self.note_error(e))
    }

    /// Note an error from the daemon connection: one that says the
    /// connection closed makes every held lock lost. The lost callbacks
    /// run from [`after_io`](Self::after_io) or
    /// [`dispatch`](Self::dispatch), with no lock held.
    #[cold]
    #[inline(never)]
    fn note_error(&self, e: Errno) -> Errno {
        if e == Errno::EPIPE || e == Errno::from_raw(libc::ECONNRESET) {
            self.inner.closed.store(true, Ordering::SeqCst);
        }
        e
    }

    /// The daemon connection closed: run, once, the lost callback of every
    /// lock that was held (granted, not being unlocked).
    #[cold]
    #[inline(never)]
    fn tell_closed(&self) {
        if self.inner.closed_told.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut unheard = 0;
        let lost: Vec<(LostFn, LockId)> = {
            let mut st = self.state();
            st.slots
                .iter_mut()
                .enumerate()
                .filter(|(_, s)| s.live && s.ever_granted && !s.ending && !s.ended)
                .filter_map(|(idx, s)| {
                    let id = LockId {
                        token: make_token(idx, s.gen),
                        lkid: s.lkid,
                    };
                    let cb = s.on_lost.take();
                    unheard += usize::from(cb.is_none());
                    cb.map(|cb| (cb, id))
                })
                .collect()
        };
        // Said louder when nobody else hears of it.
        let level = if unheard > 0 {
            log::Level::Warn
        } else {
            log::Level::Debug
        };
        log::log!(
            level,
            "lockspace {}: the connection to the dlm daemon closed; its {} held lock(s) are lost",
            self.inner.name,
            lost.len() + unheard
        );
        for (mut cb, id) in lost {
            cb(id, LostReason::ConnectionClosed);
        }
    }

    /// The next callback record that can be read without blocking.
    #[inline(always)]
    fn read_next(&self) -> Result<Option<LockResult>, Errno> {
        if self.inner.backend == Backend::Kernel {
            return device::kernel_read_next(self.inner.poll_fd.as_fd());
        }
        self.read_next_socket()
    }

    #[inline(never)]
    fn read_next_socket(&self) -> Result<Option<LockResult>, Errno> {
        self.dev().read_next().map_err(|e| self.note_error(e))
    }

    /// Records may be stashed in user space: make sure someone handles
    /// them. Only a daemon connection reads records along with replies;
    /// on the kernel this is one comparison.
    #[inline]
    fn after_io(&self) {
        if self.inner.backend != Backend::Kernel {
            self.pass_on_stashed();
        }
    }

    #[inline(never)]
    fn pass_on_stashed(&self) {
        if self.inner.closed.load(Ordering::SeqCst) {
            self.tell_closed();
        }
        if !self.dev().has_stashed() {
            return;
        }
        // Make every poller (event loop, the caller's mio::Poll, a reading
        // waiter polling the socket) and every waiting thread see that
        // records are ready.
        if self.inner.pollers.load(Ordering::SeqCst) > 0 || self.state().reading {
            let _ = rustix::io::write(&self.inner.notify_w, &[1]);
        }
        self.inner.wake_waiters();
    }

    /// `dlm_ls_lock()`: ask for a lock; `on_complete` runs for this and
    /// every later completion of the lock (conversions, unlock).
    ///
    /// Returns the lock's id at once; the outcome arrives as a callback.
    pub fn request(
        &self,
        req: LockRequest,
        on_complete: impl FnMut(LockId, &Completion) + Send + 'static,
    ) -> Result<LockId> {
        self.submit(req, Some(Box::new(on_complete)), false)
            .map(|(id, _)| id)
    }

    /// Send a lock request. `read`: the caller will wait for the outcome
    /// on this thread; the completion, if it is there already, comes back
    /// with the id (see [`first_look`](Self::first_look)).
    fn submit(
        &self,
        req: LockRequest,
        on_complete: Option<CompletionFn>,
        read: bool,
    ) -> Result<(LockId, Option<Done>)> {
        let waiting = on_complete.is_none();
        if req.flags.intersects(LockFlags::CONVERT | LockFlags::CANCEL) {
            return Err(Error::InvalidArgument(
                "CONVERT and CANCEL are not request flags",
            ));
        }
        let has_bast = req.on_blocking.is_some();
        let token = {
            let noqueue = req.flags.contains(LockFlags::NOQUEUE);
            self.state()
                .new_slot(on_complete, req.on_blocking, req.on_lost, waiting, noqueue)
        };
        let mut w = lock_write(Command::Lock, token, has_bast);
        w.set_mode(req.mode.as_raw());
        w.set_flags(req.flags.bits());
        if let Some(v) = &req.value_block {
            w.set_lvb(v.as_bytes());
        }
        let (name, len) = req.resource.padded();
        w.set_name_padded(name, len);
        let written = self
            .write_only(w.as_bytes())
            .and_then(|lkid| u32::try_from(lkid).map_err(|_| Errno::EPROTO));
        match written {
            // The first look ends with the stashed-record check.
            Ok(lkid) if read => Ok((LockId { token, lkid }, self.first_look(token, lkid)?)),
            Ok(lkid) => {
                if let Some(s) = self.state().slot(token) {
                    s.lkid = lkid;
                }
                self.after_io();
                Ok((LockId { token, lkid }, None))
            }
            Err(e) => {
                self.after_io();
                self.state().free_slot(token);
                Err(e.into())
            }
        }
    }

    /// Send a conversion, unlock, cancel or deadlock-cancel for `id`. With
    /// `wait`, the slot collects the completion for a waiting call, and
    /// the completion, if it is there already, is read in the same turn of
    /// the state lock and returned.
    ///
    /// The DLM reuses lock ids at once, and its cancel does not check the
    /// owner (it even takes the canceller's callback argument): an
    /// operation that reaches it after the lock ended could hit someone
    /// else's lock. So operations on one lock are decided and written
    /// under the state lock, in order, and none is sent once the lock may
    /// have ended: after its unlock was sent, after a cancel was sent, or
    /// for a `NOQUEUE` request (decided during its own write).
    ///
    /// Inlined into the waiting calls of [`Lock`]; everything else goes
    /// through [`lock_op_call`](Self::lock_op_call).
    #[inline(always)]
    fn lock_op(
        &self,
        cmd: Command,
        id: LockId,
        mode: LockMode,
        flags: LockFlags,
        lvb: Option<&ValueBlock>,
        wait: bool,
    ) -> Result<Option<Done>, Errno> {
        let cancel = cmd == Command::Deadlock
            || (cmd == Command::Unlock && flags.contains(LockFlags::CANCEL));
        let unlock = cmd == Command::Unlock && !cancel;
        let mut st = self.state();
        let Some(s) = st.slot(id.token) else {
            // Its end was delivered: the id may be someone else's now.
            return Err(Errno::ENOENT);
        };
        if cancel && (s.cancel_sent || s.noqueue || s.ending) {
            // The outcome is decided or on its way: nothing to cancel.
            return Ok(None);
        }
        if s.ending {
            return Err(Errno::ENOENT);
        }
        let mut w = lock_write(cmd, id.token, s.on_blocking.is_some());
        w.set_lvb(lvb.map_or(s.lvb.as_bytes(), ValueBlock::as_bytes));
        w.set_mode(mode.as_raw());
        w.set_flags(flags.bits());
        w.set_lkid(id.lkid);
        let written = self.write_only(w.as_bytes());
        let Some(s) = st.slot(id.token) else {
            return Err(Errno::ENOENT);
        };
        if let Err(e) = written {
            // Nothing was sent: nothing will come.
            drop(st);
            self.after_io();
            return Err(e);
        }
        if cancel {
            s.cancel_sent = true;
            s.deadlock_cancel |= cmd == Command::Deadlock;
        } else if unlock {
            s.ending = true;
        } else {
            s.noqueue = flags.contains(LockFlags::NOQUEUE);
        }
        s.waiting |= wait;
        let mut other = None;
        let got = if wait {
            self.read_inline(&mut st, id.token, &mut other)
        } else {
            Ok(None)
        };
        drop(st);
        self.after_read(other);
        got
    }

    /// [`lock_op`](Self::lock_op), not inlined.
    #[inline(never)]
    fn lock_op_call(
        &self,
        cmd: Command,
        id: LockId,
        mode: LockMode,
        flags: LockFlags,
        lvb: Option<&ValueBlock>,
        wait: bool,
    ) -> Result<Option<Done>, Errno> {
        self.lock_op(cmd, id, mode, flags, lvb, wait)
    }

    /// Convert lock `id` to `mode` (`DLM_LKF_CONVERT` is added). The
    /// completion goes to the lock's completion callback.
    pub fn convert(
        &self,
        id: LockId,
        mode: LockMode,
        flags: LockFlags,
        lvb: Option<&ValueBlock>,
    ) -> Result<()> {
        let flags = flags | LockFlags::CONVERT;
        self.lock_op_call(Command::Lock, id, mode, flags, lvb, false)
            .map(drop)
            .map_err(Error::Os)
    }

    /// `dlm_ls_unlock()`: unlock (the completion status is `Unlocked`).
    pub fn unlock(&self, id: LockId, flags: LockFlags, lvb: Option<&ValueBlock>) -> Result<()> {
        unlock_flags(flags)?;
        self.lock_op_call(Command::Unlock, id, LockMode::Nl, flags, lvb, false)
            .map(drop)
            .map_err(Error::Os)
    }

    /// Cancel the lock's request or conversion in progress. If nothing is
    /// in progress, nothing happens and no callback comes; nor is anything
    /// sent when the outcome is already decided (a `NOQUEUE` operation) or
    /// a cancel is already on its way. `ENOENT` once the lock has ended.
    pub fn cancel(&self, id: LockId) -> Result<()> {
        let flags = LockFlags::CANCEL;
        self.lock_op_call(Command::Unlock, id, LockMode::Nl, flags, None, false)
            .map(drop)
            .map_err(Error::Os)
    }

    /// `dlm_ls_deadlock_cancel()`: cancel with status `DeadlockCancelled`.
    pub fn deadlock_cancel(&self, id: LockId) -> Result<()> {
        let flags = LockFlags::empty();
        self.lock_op_call(Command::Deadlock, id, LockMode::Nl, flags, None, false)
            .map(drop)
            .map_err(Error::Os)
    }

    /// `dlm_ls_purge()`: release orphans of `pid` (0: all) on `nodeid`
    /// (0: this node).
    pub fn purge(&self, nodeid: u32, pid: u32) -> Result<()> {
        let bytes = records::encode_purge(nodeid, pid, records::VERSION);
        self.write(bytes.as_bytes()).map(drop).map_err(Error::Os)
    }

    /// Read every callback record available now and run its callbacks;
    /// never blocks. Returns how many records were handled.
    pub fn dispatch(&self) -> Result<usize> {
        if self.inner.pollers.load(Ordering::SeqCst) > 0 {
            let mut drain = [0u8; 64];
            while matches!(rustix::io::read(&self.inner.notify_r, &mut drain), Ok(n) if n > 0) {}
        }
        let mut recs = VecDeque::new();
        if self.inner.backend == Backend::Kernel {
            while let Some(r) = self.read_next()? {
                recs.push_back(r);
            }
        } else {
            // The device lock goes before the error is handled.
            let read = self.dev().read_available(&mut recs);
            if let Err(e) = read {
                self.note_error(e);
                self.after_io();
                return Err(e.into());
            }
        }
        let n = recs.len();
        for r in &recs {
            self.handle_one(r);
        }
        self.inner.wake_waiters();
        Ok(n)
    }

    fn handle_one(&self, r: &LockResult) {
        let after = self.absorb(&mut self.state(), r);
        self.run(after);
    }

    /// Take in one callback record under the state lock: update the slot,
    /// hand a completion to its waiter, and say what is left to do with
    /// the lock released (callbacks run unlocked).
    fn absorb<R: Record>(&self, st: &mut State, r: &R) -> After {
        let Some(token) = st.own_token(r) else {
            log::debug!(
                "lockspace {} (fd {}): record for unknown token {:#x} (lkid {:#x}, status {})",
                self.inner.name,
                self.inner.fd,
                r.astparam(),
                r.lkid(),
                r.status()
            );
            return After::Nothing;
        };
        // An unlock this process never sent, of a lock it holds: another
        // opener's, and the lock is lost.
        let lost = match st.slot(token) {
            Some(s)
                if r.bast_mode() == 0
                    && r.status() == -dlm_proto::status::EUNLOCK
                    && s.ever_granted
                    && !s.ending =>
            {
                Some(s.on_lost.take())
            }
            _ => None,
        };
        let rest = self.absorb_own(st, r, token);
        match lost {
            None => rest,
            Some(cb) => self.lost_by_unlock(cb, r.lkid(), token, rest),
        }
    }

    /// Another opener unlocked one of our held locks: say so, and have
    /// its lost callback run (before the rest of what the record asks).
    #[cold]
    #[inline(never)]
    fn lost_by_unlock(&self, cb: Option<LostFn>, lkid: u32, token: u64, rest: After) -> After {
        // Said louder when nobody else hears of it.
        let level = if cb.is_some() {
            log::Level::Debug
        } else {
            log::Level::Warn
        };
        log::log!(
            level,
            "lockspace {}: lock {lkid:#x} was unlocked by another opener of the lockspace",
            self.inner.name
        );
        match cb {
            Some(cb) => After::Lost(
                cb,
                LockId { token, lkid },
                LostReason::UnlockedByOther,
                Box::new(rest),
            ),
            None => rest,
        }
    }

    /// [`absorb`](Self::absorb) for a record known to be for the slot of
    /// `token`.
    fn absorb_own<R: Record>(&self, st: &mut State, r: &R, token: u64) -> After {
        let id = LockId {
            token,
            lkid: r.lkid(),
        };
        if r.bast_mode() != 0 {
            let Ok(mode) = LockMode::try_from(r.bast_mode()) else {
                log::warn!(
                    "lockspace {}: blocking AST with bad mode {}",
                    self.inner.name,
                    r.bast_mode()
                );
                return After::Nothing;
            };
            return match st.slot(token).and_then(|s| s.on_blocking.take()) {
                Some(cb) => After::Blocking(cb, id, mode),
                None => After::Nothing,
            };
        }
        let Some(slot) = st.slot(token) else {
            log::debug!(
                "lockspace {} (fd {}): completion for unknown token {token:#x} (lkid {:#x}, status {})",
                self.inner.name,
                self.inner.fd,
                r.lkid(),
                r.status()
            );
            return After::Nothing;
        };
        let Some((completion, ends)) = self.take_in(slot, r) else {
            return After::Nothing;
        };
        if slot.abandoned {
            // Nobody wants this lock any more: give it back.
            if ends {
                st.free_slot(token);
                return After::Nothing;
            }
            return After::UnlockAbandoned(id);
        }
        if slot.waiting {
            slot.done.push_back(completion);
            // Woken once the state lock is let go: a waker may run anything.
            #[cfg(feature = "async")]
            if let Some(w) = slot.waker.take() {
                return After::Wake(w);
            }
            return After::Nothing;
        }
        match slot.on_complete.take() {
            Some(cb) => After::Complete(cb, id, completion, ends),
            None => {
                if ends {
                    st.free_slot(token);
                }
                After::Nothing
            }
        }
    }

    /// A completion record's effect on its slot (status, value block, end
    /// of life); the completion and whether the lock ended. `None` for a
    /// status no kernel sends (logged).
    #[inline]
    fn take_in<R: Record>(&self, slot: &mut Slot, r: &R) -> Option<(Completion, bool)> {
        let t = self.take_in_state(slot, r)?;
        Some((t.completion(r), t.ends))
    }

    /// [`take_in`](Self::take_in) without building the completion, which
    /// the caller builds from the record when it needs it (see
    /// [`Taken::completion`]).
    #[inline(always)]
    fn take_in_state<R: Record>(&self, slot: &mut Slot, r: &R) -> Option<Taken> {
        let Ok(status) = Status::from_kernel(r.status(), slot.deadlock_cancel) else {
            self.unknown_status(r.status());
            return None;
        };
        // The operation in progress is over, and with it any cancel of it.
        slot.deadlock_cancel = false;
        slot.cancel_sent = false;
        slot.noqueue = false;
        if let Some(v) = r.lvb() {
            slot.lvb = ValueBlock::new(*v);
        }
        // Lock end of life, as the kernel decides it.
        let ends = match status {
            Status::Unlocked => true,
            Status::Granted => false,
            _ => !slot.ever_granted,
        };
        if status == Status::Granted {
            slot.ever_granted = true;
        }
        slot.ended = ends;
        Some(Taken {
            status,
            flags: StatusFlags::from_bits_retain(r.sb_flags()),
            ends,
        })
    }

    #[cold]
    #[inline(never)]
    fn unknown_status(&self, status: i32) {
        log::warn!(
            "lockspace {}: completion with unknown status {status}",
            self.inner.name
        );
    }

    /// Do what [`absorb`](Self::absorb) left, with no lock held.
    fn run(&self, after: After) {
        match after {
            After::Nothing => {}
            After::Blocking(mut cb, id, mode) => {
                cb(id, mode);
                if let Some(s) = self.state().slot(id.token) {
                    s.on_blocking.get_or_insert(cb);
                }
            }
            After::Complete(mut cb, id, completion, ends) => {
                cb(id, &completion);
                let mut st = self.state();
                if ends {
                    st.free_slot(id.token);
                } else if let Some(s) = st.slot(id.token) {
                    s.on_complete.get_or_insert(cb);
                }
            }
            #[cfg(feature = "async")]
            After::Wake(w) => w.wake(),
            After::UnlockAbandoned(id) => {
                if let Err(e) = self.unlock(id, LockFlags::empty(), None) {
                    log::warn!(
                        "lockspace {}: unlock of abandoned lock failed: {e}",
                        self.inner.name
                    );
                }
            }
            After::Lost(mut cb, id, reason, rest) => {
                cb(id, reason);
                self.run(*rest);
            }
        }
    }

    /// Wait for the next completion of `token`, reading the device on this
    /// thread when no other thread does. `None` on timeout. The waiter is
    /// done with the slot once it has its completion.
    ///
    /// The common case never gets here: a waiting call first looks for its
    /// completion right after its write (see [`read_inline`](Self::read_inline)).
    #[inline(never)]
    fn wait_completion(
        &self,
        token: u64,
        deadline: Option<Instant>,
    ) -> Result<Option<Completion>, Errno> {
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            {
                let mut st = self.state();
                let Some(s) = st.slot(token) else {
                    return Err(Errno::ENOENT);
                };
                if let Some(c) = s.done.pop_front() {
                    st.finish(token);
                    return Ok(Some(c));
                }
                if left.is_some_and(|l| l.is_zero()) {
                    return Ok(None);
                }
                if !self.claim_reader(&mut st) {
                    let wait = left
                        .unwrap_or(Duration::from_secs(1))
                        .min(Duration::from_secs(1));
                    // Counted while the state lock is still held, so a
                    // waker that changes state after this check sees it.
                    self.inner.waiters.fetch_add(1, Ordering::SeqCst);
                    drop(match self.inner.cond.wait_timeout(st, wait) {
                        Ok((g, _)) => g,
                        Err(p) => p.into_inner().0,
                    });
                    self.inner.waiters.fetch_sub(1, Ordering::SeqCst);
                    continue;
                }
            }
            // A caller's own `dispatch()` on another thread may take our
            // record; the bounded poll makes the loop look again.
            let rec = self.read_record(Some(left.map_or(READER_POLL, |l| l.min(READER_POLL))));
            if let Some(c) = self.take_record(rec, token)? {
                return Ok(Some(c));
            }
        }
    }

    /// Give up the reader role and take in what it read, if anything (see
    /// [`take_in_locked`](Self::take_in_locked)); wake the waiters, who may
    /// wait for what was read or to read themselves.
    fn take_record(
        &self,
        rec: Result<Option<LockResult>, Errno>,
        token: u64,
    ) -> Result<Option<Completion>, Errno> {
        let mut st = self.state();
        st.reading = false;
        let mut other = None;
        let got = match rec {
            Ok(Some(r)) => Ok(self
                .take_in_locked(&mut st, &r, token, &mut other)
                .map(|t| t.completion(&r))),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        drop(st);
        self.inner.wake_waiters();
        self.after_read(other);
        got
    }

    /// Take in, under the state lock, a record read for the waiter of
    /// `token`. The waiter's own completion, with nothing queued ahead of
    /// it, comes straight back and the waiter is done with the slot; any
    /// other record goes where it belongs (see [`absorb`](Self::absorb)),
    /// and what is left to do with it once the lock is let go goes to
    /// `other`.
    #[inline(always)]
    fn take_in_locked<R: Record>(
        &self,
        st: &mut State,
        r: &R,
        token: u64,
        other: &mut Option<After>,
    ) -> Option<Taken> {
        if r.bast_mode() == 0 && r.astparam() == token {
            let (idx, gen) = split_token(token);
            let State { slots, free, .. } = st;
            if let Some(s) = slots.get_mut(idx).filter(|s| {
                s.live
                    && s.gen == gen
                    && s.lkid == r.lkid()
                    && s.waiting
                    && !s.abandoned
                    && s.done.is_empty()
            }) {
                let t = self.take_in_state(s, r)?;
                s.finish(idx, free);
                return Some(t);
            }
        }
        *other = Some(self.absorb(st, r));
        None
    }

    /// A waiting call's first look for its completion, in the turn of the
    /// state lock `st` that follows its write: one non-blocking `read()`,
    /// when this thread may read the device (no other thread reads it and
    /// no event loop runs). After a write the completion is usually there
    /// already, so a granted request costs one `write()` and one `read()`,
    /// as on the raw device, and no thread hand-off.
    ///
    /// Another lock's record goes to `other` (see
    /// [`take_in_locked`](Self::take_in_locked)).
    #[inline(always)]
    fn read_inline(
        &self,
        st: &mut State,
        token: u64,
        other: &mut Option<After>,
    ) -> Result<Option<Done>, Errno> {
        if !self.may_read(st) {
            return Ok(None);
        }
        if self.inner.backend == Backend::Kernel {
            // Read in place: a record is large, and copies cost.
            let mut buf = [0; records::RESULT_WITH_LVB_SIZE];
            return Ok(
                match device::kernel_read_view(self.inner.poll_fd.as_fd(), &mut buf)? {
                    Some(r) => self
                        .take_in_locked(st, &r, token, other)
                        .map(|t| t.done(&r)),
                    None => None,
                },
            );
        }
        let rec = self.read_next_socket();
        match &rec {
            Ok(Some(r)) => Ok(self.take_in_locked(st, r, token, other).map(|t| t.done(r))),
            Ok(None) => Ok(None),
            Err(e) => Err(*e),
        }
    }

    /// [`read_inline`](Self::read_inline) in a turn of the state lock of
    /// its own (a new request is written without the lock), which first
    /// records the lock id the write returned.
    #[inline(always)]
    fn first_look(&self, token: u64, lkid: u32) -> Result<Option<Done>, Errno> {
        let mut other = None;
        let mut st = self.state();
        if let Some(s) = st.slot(token) {
            s.lkid = lkid;
        }
        let got = self.read_inline(&mut st, token, &mut other);
        drop(st);
        self.after_read(other);
        got
    }

    /// Finish, with the state lock let go, what a waiter's read started:
    /// run another lock's callbacks and wake whoever waits for what was
    /// read (`other`); make sure records stashed by a daemon connection
    /// are seen.
    #[inline(always)]
    fn after_read(&self, other: Option<After>) {
        if let Some(after) = other {
            self.pass_on(after);
        }
        self.after_io();
    }

    /// Someone else's record: its callbacks run, its waiter wakes.
    #[cold]
    #[inline(never)]
    fn pass_on(&self, after: After) {
        self.run(after);
        self.inner.wake_waiters();
    }

    /// Whether this thread may read the device now: no other thread holds
    /// the reader role, and no event loop runs (or this is its thread).
    #[inline]
    fn may_read(&self, st: &State) -> bool {
        !st.reading && (!self.inner.loop_running.load(Ordering::SeqCst) || self.on_loop_thread())
    }

    /// Take the reader role for a waiting call, if this thread may read.
    /// The holder reads the device for everybody until it gives the role
    /// up (and wakes the waiters).
    #[inline]
    fn claim_reader(&self, st: &mut State) -> bool {
        if !self.may_read(st) {
            return false;
        }
        st.reading = true;
        true
    }

    /// Whether this is the event-loop thread.
    #[cold]
    fn on_loop_thread(&self) -> bool {
        let t = *self
            .inner
            .loop_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        t == Some(std::thread::current().id())
    }

    /// Block (up to `timeout`) for one record. A read comes before any
    /// poll: the record may be there already.
    fn read_record(&self, timeout: Option<Duration>) -> Result<Option<LockResult>, Errno> {
        if let Some(r) = self.read_next()? {
            return Ok(Some(r));
        }
        // Poll our own duplicate of the fd, so writers are not held up.
        if self.inner.backend == Backend::Kernel {
            if device::wait_fd(self.inner.poll_fd.as_fd(), false, timeout)? {
                return self.read_next();
            }
            return Ok(None);
        }
        // A daemon connection: another thread's request may read records
        // along with its reply and stash them; it then writes the notify
        // pipe, which is polled too.
        let fds = [self.inner.poll_fd.as_fd(), self.inner.notify_r.as_fd()];
        if device::wait_any(&fds, timeout)? {
            let mut drain = [0u8; 64];
            while matches!(rustix::io::read(&self.inner.notify_r, &mut drain), Ok(n) if n > 0) {}
            return self.read_next();
        }
        Ok(None)
    }

    #[cfg(feature = "async")]
    fn take_slot_result(&self, token: u64) {
        self.state().finish(token);
    }

    /// `dlm_ls_lock_wait()`: ask for a lock and wait for the outcome.
    ///
    /// With `ORPHAN` in the flags this adopts an orphaned `PERSISTENT` lock
    /// of the same resource and mode instead; adoption is synchronous:
    /// `EAGAIN` (an orphan exists in another mode) and `ENOENT` (none)
    /// come back as errors, as the kernel's `write()` returns them.
    pub fn lock(&self, req: LockRequest) -> Result<Outcome<Lock>> {
        let timeout = req.timeout;
        let (mode, flags) = (req.mode, req.flags);
        let adopt = flags.contains(LockFlags::ORPHAN);
        let (id, first) = self.submit(req, None, !adopt)?;
        if adopt {
            // Adoption is synchronous: the write's success is the grant,
            // and no completion follows.
            if let Some(s) = self.state().slot(id.token) {
                s.lkid = id.lkid;
                s.waiting = false;
                s.ever_granted = true;
            }
            return Ok(Outcome::Granted(Lock {
                ls: self.clone(),
                id,
                mode,
                value_block: None,
                held: true,
            }));
        }
        let completion = match first {
            Some(c) => c,
            None => self.wait_for(id, timeout)?,
        };
        if completion.status == Status::Granted {
            Ok(Outcome::Granted(Lock {
                ls: self.clone(),
                id,
                mode: granted_mode(mode, flags, completion.flags),
                value_block: completion.value_block,
                held: true,
            }))
        } else {
            Ok(Outcome::NotGranted(completion.completion()))
        }
    }

    /// Wait for the completion of the operation in progress on `id` (its
    /// slot already marked waiting), cancelling it after `timeout`: what a
    /// waiting call does when its first look right after the write found
    /// nothing. The slot stops collecting completions when this returns.
    #[inline(never)]
    fn wait_for(&self, id: LockId, timeout: Option<Duration>) -> Result<Done, Errno> {
        // A deadline the clock cannot represent is no deadline.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        match self.wait_completion(id.token, deadline)? {
            Some(c) => Ok(c.into()),
            None => self.cancel_and_wait(id).map(Done::from),
        }
    }

    /// A waiting call's time is up: cancel, then see who won.
    #[cold]
    fn cancel_and_wait(&self, id: LockId) -> Result<Completion, Errno> {
        let cancel = LockFlags::CANCEL;
        self.lock_op_call(Command::Unlock, id, LockMode::Nl, cancel, None, false)?;
        loop {
            // A cancel of a granted lock produces no AST, so the grant
            // (if it won) is the completion we get; poll with a bound.
            let bound = Some(Instant::now() + Duration::from_secs(30));
            if let Some(c) = self.wait_completion(id.token, bound)? {
                return Ok(match c.status {
                    Status::Cancelled => Completion {
                        status: Status::TimedOut,
                        ..c
                    },
                    _ => c,
                });
            }
        }
    }

    /// Start the event-loop thread: from now on every callback runs there.
    /// Idempotent.
    pub fn start_event_loop(&self) -> Result<()> {
        let mut guard = self
            .inner
            .event_loop
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // A loop that stopped on an error may be started again.
        if guard.is_some() && self.inner.loop_running.load(Ordering::SeqCst) {
            return Ok(());
        }
        let poll = mio::Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKE)?;
        poll.registry().register(
            &mut mio::unix::SourceFd(&self.inner.fd),
            DEVICE,
            mio::Interest::READABLE,
        )?;
        let notify = self.inner.notify_r.as_raw_fd();
        self.inner.pollers.fetch_add(1, Ordering::SeqCst);
        poll.registry().register(
            &mut mio::unix::SourceFd(&notify),
            DEVICE,
            mio::Interest::READABLE,
        )?;
        let ev = Arc::new(EventLoop {
            waker,
            stop: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&self.inner);
        let ev2 = ev.clone();
        let thread = std::thread::Builder::new()
            .name(format!("dlm-ls-{}", self.inner.name))
            .spawn(move || event_loop(poll, weak, ev2))?;
        *self
            .inner
            .loop_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(thread.thread().id());
        *guard = Some(ev);
        self.inner.loop_running.store(true, Ordering::SeqCst);
        Ok(())
    }
}

const DEVICE: mio::Token = mio::Token(0);
const WAKE: mio::Token = mio::Token(1);

fn event_loop(mut poll: mio::Poll, inner: Weak<Inner>, ev: Arc<EventLoop>) {
    let mut events = mio::Events::with_capacity(16);
    loop {
        if ev.stop.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            log::error!("dlm event loop: poll failed: {e}");
            break;
        }
        if ev.stop.load(Ordering::SeqCst) {
            return;
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let ls = Lockspace { inner };
        if let Err(e) = ls.dispatch() {
            log::error!("lockspace {}: event loop stops: {e}", ls.inner.name);
            break;
        }
    }
    // Stopped by an error (the daemon went away, say): waiting calls must
    // not wait for this loop any more; they read the device themselves
    // and meet the error.
    if let Some(inner) = inner.upgrade() {
        let _ = inner
            .pollers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        let st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
        inner.loop_running.store(false, Ordering::SeqCst);
        // Futures waiting for the loop are polled again (woken once the
        // lock is let go), and find out.
        #[cfg(feature = "async")]
        let wakers: Vec<std::task::Waker> = {
            let mut st = st;
            st.slots
                .iter_mut()
                .filter(|s| s.live)
                .filter_map(|s| s.waker.take())
                .collect()
        };
        #[cfg(not(feature = "async"))]
        drop(st);
        #[cfg(feature = "async")]
        wakers.into_iter().for_each(std::task::Waker::wake);
        inner.wake_waiters();
    }
}

/// The mode a grant gave: the requested one, or with `ALTMODE` the
/// alternate the kernel tried (`ALTPR` first, unless PR was requested).
/// Flags an unlock refuses: a cancel has its own call.
fn unlock_flags(flags: LockFlags) -> Result<()> {
    if flags.contains(LockFlags::CANCEL) {
        return Err(Error::InvalidArgument("use Lockspace::cancel to cancel"));
    }
    Ok(())
}

fn granted_mode(requested: LockMode, flags: LockFlags, sb: StatusFlags) -> LockMode {
    if !sb.contains(StatusFlags::ALTMODE) {
        requested
    } else if requested != LockMode::Pr && flags.contains(LockFlags::ALTPR) {
        LockMode::Pr
    } else {
        LockMode::Cw
    }
}

impl mio::event::Source for Lockspace {
    // Two fds share the token: the device, and the notification pipe that
    // becomes readable when records were read along with a reply.
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> std::io::Result<()> {
        mio::unix::SourceFd(&self.inner.fd).register(registry, token, interests)?;
        self.inner.pollers.fetch_add(1, Ordering::SeqCst);
        mio::unix::SourceFd(&self.inner.notify_r.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> std::io::Result<()> {
        mio::unix::SourceFd(&self.inner.fd).reregister(registry, token, interests)?;
        mio::unix::SourceFd(&self.inner.notify_r.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> std::io::Result<()> {
        mio::unix::SourceFd(&self.inner.fd).deregister(registry)?;
        let _ = self
            .inner
            .pollers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        mio::unix::SourceFd(&self.inner.notify_r.as_raw_fd()).deregister(registry)
    }
}

/// A granted lock. Dropping it unlocks it (without waiting); use
/// [`Lock::unlock`] to wait for the unlock, or [`Lock::into_id`] to keep
/// the lock beyond this value.
#[derive(Debug)]
pub struct Lock {
    ls: Lockspace,
    id: LockId,
    mode: LockMode,
    /// Boxed: few locks have one, and a `Lock` is moved around.
    value_block: Option<Box<ValueBlock>>,
    held: bool,
}

impl Lock {
    /// The lock's id.
    pub fn id(&self) -> LockId {
        self.id
    }

    /// The granted mode.
    pub fn mode(&self) -> LockMode {
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

    /// Convert to `mode` and wait. On a grant the lock's mode changes;
    /// otherwise (`WouldBlock`, `ConversionDeadlock`, …) it keeps its mode.
    /// `lvb` is written to the resource on a down-conversion from PW or EX
    /// when `flags` has `VALBLK`.
    pub fn convert(
        &mut self,
        mode: LockMode,
        flags: LockFlags,
        lvb: Option<&ValueBlock>,
    ) -> Result<Completion> {
        let flags = flags - LockFlags::CONVERT;
        let op_flags = flags | LockFlags::CONVERT;
        let first = self
            .ls
            .lock_op(Command::Lock, self.id, mode, op_flags, lvb, true)?;
        let c = match first {
            Some(c) => c,
            None => self.ls.wait_for(self.id, None)?,
        };
        if c.status == Status::Granted {
            self.mode = granted_mode(mode, flags, c.flags);
            if c.value_block.is_some() {
                self.value_block.clone_from(&c.value_block);
            }
        }
        Ok(c.completion())
    }

    /// Unlock and wait for the unlock to complete. `lvb` is written to the
    /// resource when unlocking from PW or EX with `VALBLK`.
    pub fn unlock_with(mut self, flags: LockFlags, lvb: Option<&ValueBlock>) -> Result<()> {
        // Held until the unlock is sent: if the write fails, the drop
        // tries again.
        unlock_flags(flags)?;
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
        self.held = false;
        if let Some(s) = self.ls.state().slot(self.id.token) {
            s.waiting = false;
        }
        self.id
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if self.held {
            if let Some(s) = self.ls.state().slot(self.id.token) {
                s.waiting = false;
                s.abandoned = true;
            } else {
                // Its end was delivered (another opener unlocked it).
                return;
            }
            if self.ls.inner.closed.load(Ordering::SeqCst) {
                // The connection closed: the lock went with it.
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
}

#[cfg(feature = "async")]
mod asynch;
#[cfg(feature = "async")]
pub use asynch::LockFuture;
