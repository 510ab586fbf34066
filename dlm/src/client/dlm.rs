//! [`Dlm`]: the control device, and the one place the backend is chosen.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dlm_proto::error::{Errno, Error, Result};
use dlm_proto::flags::LockspaceFlags;
use dlm_proto::name::LockspaceName;
use dlm_proto::records;
use dlm_proto::wire;

use super::kernel;
use super::lockspace::Lockspace;
use super::recovery::{Recovery, SharedRecovery};
use super::replay::Reconnect;
use super::transport::{KernelDev, Socket, Transport};
use super::{kernel_control_device, Backend};

/// Options for [`Dlm`]; see [`Dlm::builder`].
#[derive(Debug, Clone, Default)]
pub struct DlmBuilder {
    backend: Option<Backend>,
    socket: Option<PathBuf>,
    autostart: Option<bool>,
    replay_wait: Option<Duration>,
}

/// How a lockspace is created or opened: see
/// [`Dlm::create_lockspace_with`] and [`Dlm::open_lockspace_with`].
#[derive(Clone, Default)]
pub struct LockspaceOptions {
    flags: LockspaceFlags,
    mode: u32,
    recovery: Option<SharedRecovery>,
}

impl std::fmt::Debug for LockspaceOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockspaceOptions")
            .field("flags", &self.flags)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("recovery", &self.recovery.is_some())
            .finish()
    }
}

impl LockspaceOptions {
    /// No flags, the default mode (0600), no recovery callbacks.
    pub fn new() -> LockspaceOptions {
        LockspaceOptions::default()
    }

    /// Lockspace flags (creation only).
    pub fn flags(mut self, flags: LockspaceFlags) -> Self {
        self.flags = flags;
        self
    }

    /// The access mode (creation only; 0 is the default, 0600).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Recovery callbacks for the lockspace (see [`Recovery`]).
    pub fn recovery(mut self, r: Arc<dyn Recovery>) -> Self {
        self.recovery = Some(r);
        self
    }
}

/// How long a lockspace whose daemon died waits for one to answer again,
/// by default, before its locks are lost.
pub const DEFAULT_REPLAY_WAIT: Duration = Duration::from_secs(10);

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

    /// Fallback backend: when a lockspace's daemon dies, how long to wait
    /// for a daemon to answer on the socket again (one is started at once
    /// if auto-start is on) and replay the lockspace's locks onto it;
    /// default [`DEFAULT_REPLAY_WAIT`]. `Duration::ZERO` turns replay off:
    /// the locks are lost with the connection (`LostReason::ConnectionClosed`).
    /// See the crate docs on lock replay.
    pub fn replay_wait(mut self, wait: Duration) -> Self {
        self.replay_wait = Some(wait);
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
        let conn = match backend {
            Backend::Kernel => {
                let control = KernelDev::open(&kernel::control_node()?)?;
                kernel::check_version(control.version()?)?;
                Conn::Kernel { control }
            }
            Backend::Fallback => {
                let socket = match self.socket {
                    Some(p) => p,
                    None => dlm_proto::paths::fallback_socket_path().map_err(Error::Os)?,
                };
                let autostart = self
                    .autostart
                    .unwrap_or_else(|| std::env::var_os("DLM_NO_AUTOSTART").is_none());
                let control = connect_or_start(&socket, autostart)?;
                kernel::check_version(control.version()?)?;
                Conn::Daemon {
                    control: Box::new(control),
                    socket,
                    autostart,
                    replay_wait: self.replay_wait.unwrap_or(DEFAULT_REPLAY_WAIT),
                }
            }
        };
        Ok(Dlm { conn })
    }
}

/// Name the lockspace in errors that are about it.
pub(crate) fn lockspace_error(op: &'static str, name: &LockspaceName, e: Error) -> Error {
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
pub(crate) fn connect_or_start(socket: &Path, autostart: bool) -> Result<Socket> {
    let hello = |_: ()| Socket::connect(socket, wire::ROLE_CONTROL, 0, b"");
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

/// The backend, chosen once: everything [`Dlm`] does matches on this.
#[derive(Debug)]
enum Conn {
    Kernel {
        control: KernelDev,
    },
    Daemon {
        control: Box<Socket>,
        socket: PathBuf,
        /// Whether this handle starts a per-user daemon when none answers
        /// (also when a lockspace replays onto a new one).
        autostart: bool,
        /// See [`DlmBuilder::replay_wait`].
        replay_wait: Duration,
    },
}

/// A connection to the DLM: the control device (kernel) or the control
/// side of `dlmd`.
///
/// On the fallback backend every call here is a round trip to the daemon:
/// if the daemon stops answering (stopped, not dead), the call waits until
/// it answers again, with no timeout; other threads, and calls on other
/// daemons' or the kernel's lockspaces, go on meanwhile. A daemon that
/// exits makes the call fail at once (`EPIPE`).
#[derive(Debug)]
pub struct Dlm {
    conn: Conn,
}

impl Dlm {
    /// Connect to the backend chosen from the environment: see
    /// [`DlmBuilder::open`].
    pub fn open() -> Result<Dlm> {
        DlmBuilder::default().open()
    }

    /// Options.
    ///
    /// ```
    /// # let d = dlm_testkit::PrivateDaemon::start();
    /// # let socket = d.socket().to_path_buf();
    /// use dlm::{Backend, Dlm};
    ///
    /// // The fallback daemon on a socket of your choosing, never started for you.
    /// let dlm = Dlm::builder().backend(Backend::Fallback).socket(&socket).autostart(false).open()?;
    /// assert_eq!(dlm.backend(), Backend::Fallback);
    /// assert_eq!(dlm.version()?, (6, 0, 2));
    /// # Ok::<(), dlm::Error>(())
    /// ```
    pub fn builder() -> DlmBuilder {
        DlmBuilder::default()
    }

    /// Which backend this handle uses.
    pub fn backend(&self) -> Backend {
        match self.conn {
            Conn::Kernel { .. } => Backend::Kernel,
            Conn::Daemon { .. } => Backend::Fallback,
        }
    }

    /// The daemon's pid (fallback backend), from the socket's peer
    /// credentials.
    pub fn daemon_pid(&self) -> Option<i32> {
        match &self.conn {
            Conn::Kernel { .. } => None,
            Conn::Daemon { control, .. } => control.peer_pid(),
        }
    }

    /// The daemon socket, for the fallback backend.
    pub fn socket_path(&self) -> Option<&Path> {
        match &self.conn {
            Conn::Kernel { .. } => None,
            Conn::Daemon { socket, .. } => Some(socket),
        }
    }

    fn control_write(&self, bytes: &[u8]) -> std::result::Result<i64, Errno> {
        match &self.conn {
            Conn::Kernel { control } => control.write(bytes),
            Conn::Daemon { .. } => self.on_daemon(|c| c.write(bytes)),
        }
    }

    /// `f` on the daemon's control connection. If the daemon has gone
    /// since (killed, restarted: the connection says `EPIPE` or
    /// `ECONNRESET`), connect again, starting a per-user daemon if this
    /// handle does so, and try `f` once more on the new connection: the
    /// lockspaces replay onto the new daemon by themselves, and the
    /// control side (creating, releasing lockspaces, queries) must follow
    /// them there. A request the old daemon took and did not answer is
    /// sent again.
    fn on_daemon<T>(
        &self,
        f: impl Fn(&Socket) -> std::result::Result<T, Errno>,
    ) -> std::result::Result<T, Errno> {
        let Conn::Daemon {
            control,
            socket,
            autostart,
            ..
        } = &self.conn
        else {
            return Err(Errno::from_raw(libc::ENOTCONN));
        };
        let gone = |e: Errno| e == Errno::EPIPE || e == Errno::from_raw(libc::ECONNRESET);
        match f(control) {
            Err(e) if gone(e) => {
                let fresh = connect_or_start(socket, *autostart).map_err(|e2| {
                    log::debug!("dlm: the daemon's control connection is gone ({e}): {e2}");
                    e
                })?;
                control.adopt(fresh)?;
                log::debug!("dlm: control connection to {} made again", socket.display());
                f(control)
            }
            r => r,
        }
    }

    /// `dlm_kernel_version()`: the device interface version (6.0.2).
    pub fn version(&self) -> Result<(u32, u32, u32)> {
        let v = match &self.conn {
            Conn::Kernel { control } => control.version(),
            Conn::Daemon { .. } => self.on_daemon(|c| c.version()),
        }?;
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
        self.create_lockspace_with(name, LockspaceOptions::new().flags(flags).mode(mode))
    }

    /// [`create_lockspace`](Self::create_lockspace) with options: flags,
    /// mode and recovery callbacks (the kernel's `dlm_new_lockspace` with
    /// `ops`; see [`Recovery`] for when they run).
    ///
    /// ```
    /// # let _daemon = dlm_testkit::PrivateDaemon::start();
    /// use std::sync::{Arc, Mutex};
    /// use dlm::{Dlm, LockspaceName, LockspaceOptions, Member, Recovery};
    ///
    /// #[derive(Default)]
    /// struct Journal(Mutex<Vec<(Vec<Member>, u32, u32)>>);
    /// impl Recovery for Journal {
    ///     fn recover_done(&self, members: &[Member], our_slot: u32, generation: u32) {
    ///         self.0.lock().unwrap().push((members.to_vec(), our_slot, generation));
    ///     }
    /// }
    ///
    /// let j = Arc::new(Journal::default());
    /// let dlm = Dlm::open()?;
    /// let ls = dlm.create_lockspace_with(
    ///     &LockspaceName::new("fs0")?,
    ///     LockspaceOptions::new().recovery(j.clone()),
    /// )?;
    /// // At join: this host alone, in slot 1, generation 1.
    /// let one = Member { nodeid: 1, slot: 1 };
    /// assert_eq!(*j.0.lock().unwrap(), [(vec![one], 1, 1)]);
    /// assert!(ls.recovery_status().is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn create_lockspace_with(
        &self,
        name: &LockspaceName,
        options: LockspaceOptions,
    ) -> Result<Lockspace> {
        let flags = options.flags - LockspaceFlags::TIMEWARN;
        let req = records::encode_create(name.as_bytes(), flags.bits(), records::VERSION)?;
        let minor = self
            .control_write(req.as_bytes())
            .map_err(|e| lockspace_error("create", name, e.into()))?;
        let mode = if options.mode == 0 {
            0o600
        } else {
            options.mode
        };
        let ls = self.open_with_mode(name, Some(mode))?;
        ls.chmod(mode)?;
        debug_assert!(minor >= 0);
        ls.joined(options.recovery);
        Ok(ls)
    }

    /// `dlm_open_lockspace()`: open an existing lockspace.
    ///
    /// ```
    /// # let _daemon = dlm_testkit::PrivateDaemon::start();
    /// use dlm::{Dlm, Errno, LockspaceFlags, LockspaceName};
    ///
    /// let dlm = Dlm::open()?;
    /// let name = LockspaceName::new("shared")?;
    /// // Opening needs the lockspace to exist: ENOENT until someone creates it.
    /// assert_eq!(dlm.open_lockspace(&name).unwrap_err().errno(), Errno::ENOENT);
    /// let made = dlm.create_lockspace(&name, LockspaceFlags::empty(), 0o600)?;
    /// let opened = dlm.open_lockspace(&name)?;
    /// drop(opened);
    /// dlm.release_lockspace(made, false)?; // the last reference: it goes
    /// # Ok::<(), dlm::Error>(())
    /// ```
    pub fn open_lockspace(&self, name: &LockspaceName) -> Result<Lockspace> {
        self.open_with_mode(name, None)
    }

    /// [`open_lockspace`](Self::open_lockspace) with options: of these,
    /// only the recovery callbacks count (see [`Recovery`]).
    pub fn open_lockspace_with(
        &self,
        name: &LockspaceName,
        options: LockspaceOptions,
    ) -> Result<Lockspace> {
        let ls = self.open_with_mode(name, None)?;
        ls.joined(options.recovery);
        Ok(ls)
    }

    /// Open lockspace `name`; `mode`: the access mode this handle created
    /// it with, for a replay onto a new daemon to create it again so.
    fn open_with_mode(&self, name: &LockspaceName, mode: Option<u32>) -> Result<Lockspace> {
        let mut reconnect = None;
        let (transport, minor) = match &self.conn {
            Conn::Daemon {
                socket,
                autostart,
                replay_wait,
                ..
            } => {
                reconnect = (!replay_wait.is_zero()).then(|| Reconnect {
                    socket: socket.clone(),
                    autostart: *autostart,
                    mode,
                    wait: *replay_wait,
                });
                let (dev, minor) =
                    Socket::connect(socket, wire::ROLE_LOCKSPACE, 0, name.as_bytes())
                        .map_err(|e| lockspace_error("open", name, e))?;
                (
                    Transport::Socket(Box::new(dev)),
                    u32::try_from(minor).unwrap_or(0),
                )
            }
            Conn::Kernel { .. } => {
                let dev_name = String::from_utf8_lossy(&name.device_name()).into_owned();
                let path =
                    kernel::device_node(&dev_name).map_err(|e| lockspace_error("open", name, e))?;
                let dev =
                    KernelDev::open(&path).map_err(|e| lockspace_error("open", name, e.into()))?;
                let minor = dev.minor().unwrap_or(0);
                (Transport::Kernel(dev), minor)
            }
        };
        Lockspace::new(*name, minor, transport, self.backend(), reconnect)
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
        self.control_write(req.as_bytes())
            .map_err(|e| lockspace_error("release", &ls_name, e.into()))?;
        Ok(())
    }

    /// Every lockspace the DLM has (a query libdlm does not offer).
    ///
    /// On the kernel backend this is best effort (sysfs and debugfs): see
    /// the fields' notes.
    pub fn lockspaces(&self) -> Result<Vec<dlm_proto::query::LockspaceInfo>> {
        match &self.conn {
            Conn::Kernel { .. } => kernel::lockspaces(),
            Conn::Daemon { .. } => {
                let body = self.on_daemon(|c| {
                    c.request(
                        wire::Kind::Query,
                        &[wire::QUERY_LOCKSPACES],
                        wire::Kind::QueryReply,
                    )
                })?;
                dlm_proto::query::parse(&body).map_err(Error::Os)
            }
        }
    }

    /// The daemon's version and the kernel model its lockspaces follow
    /// (`dlmd --kernel-model`): `Ok(None)` on the kernel backend, which
    /// is the kernel itself, and from a daemon older than the query.
    pub fn daemon_info(&self) -> Result<Option<dlm_proto::query::DaemonInfo>> {
        match &self.conn {
            Conn::Kernel { .. } => Ok(None),
            Conn::Daemon { control, .. } => {
                match control.request(
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
        }
    }

    /// Every lock of a lockspace, with mode, queue, owner pid, and the
    /// value block where the backend shows it.
    ///
    /// On the kernel backend this reads debugfs
    /// (`/sys/kernel/debug/dlm/<ls>_all`, as `dlm_tool lockdebug` does),
    /// which must be mounted.
    ///
    /// ```
    /// # let _daemon = dlm_testkit::PrivateDaemon::start();
    /// use dlm::{Dlm, LockMode, LockRequest, LockspaceFlags, LockspaceName, ResourceName};
    ///
    /// let dlm = Dlm::open()?;
    /// let name = LockspaceName::new("inventory")?;
    /// let ls = dlm.create_lockspace(&name, LockspaceFlags::empty(), 0o600)?;
    /// let _lock = ls.lock(LockRequest::new(ResourceName::new("disk0")?, LockMode::Pr))?;
    /// assert!(dlm.lockspaces()?.iter().any(|l| l.name == "inventory"));
    /// let locks = dlm.locks(&name)?;
    /// assert_eq!((locks.len(), locks[0].granted.as_deref()), (1, Some("PR")));
    /// # Ok::<(), dlm::Error>(())
    /// ```
    pub fn locks(&self, name: &LockspaceName) -> Result<Vec<dlm_proto::query::LockInfo>> {
        match &self.conn {
            Conn::Kernel { .. } => kernel::locks(&name.to_string()),
            Conn::Daemon { .. } => {
                let mut q = vec![wire::QUERY_LOCKS];
                q.extend_from_slice(name.as_bytes());
                let body = self
                    .on_daemon(|c| c.request(wire::Kind::Query, &q, wire::Kind::QueryReply))
                    .map_err(|e| lockspace_error("list the locks of", name, e.into()))?;
                dlm_proto::query::parse(&body).map_err(Error::Os)
            }
        }
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
        let control = match &self.conn {
            Conn::Kernel { .. } => return Ok(options.apply(kernel::locks(&name.to_string())?)),
            Conn::Daemon { control, .. } => control,
        };
        let limit = options.limit.unwrap_or(u32::MAX);
        let q = wire::page_query(limit, options.after, name.as_bytes());
        match control.request(wire::Kind::Query, &q, wire::Kind::QueryReply) {
            Ok(body) => dlm_proto::query::parse(&body).map_err(Error::Os),
            // A daemon from before page queries: the whole list, cut here.
            Err(e) if e == Errno::EINVAL => Ok(options.apply(self.locks(name)?)),
            Err(e) => Err(lockspace_error("list the locks of", name, e.into())),
        }
    }
}

/// The daemon's lockspaces, asked on a control connection.
pub(crate) fn query_lockspaces(control: &Socket) -> Result<Vec<dlm_proto::query::LockspaceInfo>> {
    let body = control.request(
        wire::Kind::Query,
        &[wire::QUERY_LOCKSPACES],
        wire::Kind::QueryReply,
    )?;
    dlm_proto::query::parse(&body).map_err(Error::Os)
}
