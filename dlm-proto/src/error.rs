//! Errors: calls that could not be made.
//!
//! A lock operation that was made but did not grant (a `NOQUEUE` request
//! that would block, a conversion deadlock, a cancel) is *not* an error: it
//! is a [`Status`](crate::Status) delivered in a completion. [`Error`] is
//! for calls the DLM refused outright, as `write()` on the kernel device
//! refuses them with an errno.

use core::fmt;

/// An error number, as the kernel or libdlm reports it.
///
/// This is a newtype, not an enum, because the host may report numbers this
/// crate does not name. The constants cover every errno the DLM device and
/// libdlm are documented to return.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Errno(i32);

impl Errno {
    /// `EPERM`: the caller lacks `CAP_SYS_ADMIN` (create/remove lockspace).
    pub const EPERM: Errno = Errno(libc::EPERM);
    /// `ENOENT`: no such lock id, lockspace or orphan.
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    /// `EBADF`: the handle is closed.
    pub const EBADF: Errno = Errno(libc::EBADF);
    /// `EAGAIN`: an orphan exists in another mode, or no data yet.
    pub const EAGAIN: Errno = Errno(libc::EAGAIN);
    /// `ENOMEM`: out of memory or over a configured limit.
    pub const ENOMEM: Errno = Errno(libc::ENOMEM);
    /// `EACCES`: the lockspace's mode does not let the caller in.
    pub const EACCES: Errno = Errno(libc::EACCES);
    /// `EBUSY`: the lock has an operation in progress, or the lockspace
    /// still holds locks.
    pub const EBUSY: Errno = Errno(libc::EBUSY);
    /// `EEXIST`: the lockspace exists and `NEWEXCL` was given.
    pub const EEXIST: Errno = Errno(libc::EEXIST);
    /// `EINVAL`: an argument check failed.
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    /// `ENOSPC`: no lock id is left.
    pub const ENOSPC: Errno = Errno(libc::ENOSPC);
    /// `EPIPE`: the peer went away.
    pub const EPIPE: Errno = Errno(libc::EPIPE);
    /// `EDEADLK`: a conversion deadlock (only ever a completion status).
    pub const EDEADLK: Errno = Errno(libc::EDEADLK);
    /// `ENOSYS`: the operation does not exist (libdlm: `range` given).
    pub const ENOSYS: Errno = Errno(libc::ENOSYS);
    /// `EBADE`: the request's device version does not match.
    pub const EBADE: Errno = Errno(libc::EBADE);
    /// `EUNATCH`: no cluster controller is running.
    pub const EUNATCH: Errno = Errno(libc::EUNATCH);
    /// `ENOBUFS`: a message to another node could not be built.
    pub const ENOBUFS: Errno = Errno(libc::ENOBUFS);
    /// `ENOTCONN`: no local node address, or no lockspace handle.
    pub const ENOTCONN: Errno = Errno(libc::ENOTCONN);
    /// `ETIMEDOUT`: a lock timed out.
    pub const ETIMEDOUT: Errno = Errno(libc::ETIMEDOUT);
    /// `EPROTO`: a malformed record.
    pub const EPROTO: Errno = Errno(libc::EPROTO);
    /// `EMSGSIZE`: a record of the wrong size.
    pub const EMSGSIZE: Errno = Errno(libc::EMSGSIZE);
    /// `EMFILE`: `dlmd` has its maximum of connections open (for a uid
    /// other than root: all but the slots it keeps for root).
    pub const EMFILE: Errno = Errno(libc::EMFILE);
    /// `EUSERS`: the connecting uid has its quota of `dlmd` connections
    /// open.
    pub const EUSERS: Errno = Errno(libc::EUSERS);

    /// Wrap a raw, positive error number.
    pub const fn from_raw(raw: i32) -> Errno {
        Errno(raw)
    }

    /// The raw, positive error number.
    pub const fn raw(self) -> i32 {
        self.0
    }

    /// The errno of the last failed libc call on this thread.
    pub fn last_os_error() -> Errno {
        Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }

    /// Decode a kernel-style return value: negative means `-errno`.
    pub fn result(ret: i64) -> Result<u64, Errno> {
        if ret < 0 {
            Err(Errno(i32::try_from(-ret).unwrap_or(i32::MAX)))
        } else {
            Ok(ret as u64)
        }
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Errno({} {})", self.0, self)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let io = std::io::Error::from_raw_os_error(self.0);
        let text = io.to_string();
        // std appends " (os error N)"; keep only the message.
        let msg = text.split(" (os error").next().unwrap_or(&text);
        f.write_str(msg)
    }
}

impl std::error::Error for Errno {}

impl From<Errno> for std::io::Error {
    fn from(e: Errno) -> std::io::Error {
        std::io::Error::from_raw_os_error(e.0)
    }
}

impl From<std::io::Error> for Errno {
    fn from(e: std::io::Error) -> Errno {
        Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

/// Everything that can stop a DLM call from being made.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The DLM (kernel or daemon) refused the call with this errno.
    Os(Errno),
    /// An argument was rejected before anything was sent.
    InvalidArgument(&'static str),
    /// The kernel backend cannot be used; the text says why and what to do.
    KernelUnavailable(String),
    /// No fallback daemon answers at this socket (and none could be
    /// started).
    DaemonUnavailable(std::path::PathBuf, Errno),
    /// No `dlmd` program to start: the text says where it was looked for
    /// and how to install it.
    DaemonMissing(String),
    /// The daemon socket, its directory, or the process answering on it
    /// is not to be trusted: it is another user's, or others could have
    /// replaced it (see [`trust`](crate::trust)). Nothing was sent.
    /// `EACCES` for C callers.
    UntrustedSocket(Box<crate::trust::UntrustedSocket>),
    /// The fallback daemon answered, and turned the connection away.
    DaemonRefused {
        /// The daemon's socket.
        path: std::path::PathBuf,
        /// Why.
        reason: Refusal,
    },
    /// An operation completed with a status that makes no sense for it
    /// (for example an unlock that did not report "unlocked").
    Unexpected(crate::status::Status),
    /// The kernel has no `dlm-control` misc device: the module is not
    /// loaded.
    ModuleNotLoaded,
    /// `EUNATCH` from the kernel: no cluster controller runs
    /// (dlm_controld, or `dlm-controld --single-node`).
    NoController,
    /// `ENOTCONN` from the kernel: no local node address is configured.
    NoLocalAddress,
    /// The device speaks another interface version (`EBADE` on writes).
    VersionMismatch {
        /// What this library speaks.
        ours: [u32; 3],
        /// What the device reported.
        theirs: [u32; 3],
    },
    /// A lockspace operation failed: `EPERM`, `EEXIST`, `EBUSY`,
    /// `ENOENT`, …, with the lockspace named.
    Lockspace {
        /// What was being done: "create", "open", "release", "list the
        /// locks of".
        op: &'static str,
        /// The lockspace.
        name: String,
        /// Why.
        errno: Errno,
    },
}

/// Why `dlmd` turned a connection away (see `dlmd --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The daemon has its maximum of connections open
    /// (`--max-connections`), or, for a uid other than root, all but the
    /// slots it keeps for root: `EMFILE`.
    Full,
    /// This uid has its quota of connections open
    /// (`--max-connections-per-user`): `EUSERS`.
    UserQuota {
        /// The uid that was refused (the caller's effective uid).
        uid: u32,
    },
}

impl Refusal {
    /// The refusal a daemon's answer `errno` to a `Hello` stands for, if
    /// it is one; `uid` is the connecting process's effective uid.
    pub fn from_errno(errno: Errno, uid: u32) -> Option<Refusal> {
        match errno.raw() {
            libc::EMFILE => Some(Refusal::Full),
            libc::EUSERS => Some(Refusal::UserQuota { uid }),
            _ => None,
        }
    }

    /// The errno the daemon sent.
    pub fn errno(&self) -> Errno {
        match self {
            Refusal::Full => Errno::EMFILE,
            Refusal::UserQuota { .. } => Errno::EUSERS,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Full => f.write_str(
                "it has its maximum of connections open (EMFILE; dlmd --max-connections, of \
                 which the last few are kept for root)",
            ),
            Refusal::UserQuota { uid } => write!(
                f,
                "uid {uid} has as many connections open as its quota allows (EUSERS; dlmd \
                 --max-connections-per-user); close some of them"
            ),
        }
    }
}

impl Error {
    /// The errno a C caller would see for this error.
    pub fn errno(&self) -> Errno {
        match self {
            Error::Os(e) => *e,
            Error::InvalidArgument(_) => Errno::EINVAL,
            Error::KernelUnavailable(_) => Errno::ENOSYS,
            Error::DaemonUnavailable(_, e) => *e,
            Error::DaemonMissing(_) => Errno::ENOENT,
            Error::UntrustedSocket(_) => Errno::EACCES,
            Error::DaemonRefused { reason, .. } => reason.errno(),
            Error::Unexpected(_) => Errno::EPROTO,
            Error::ModuleNotLoaded => Errno::ENOENT,
            Error::NoController => Errno::EUNATCH,
            Error::NoLocalAddress => Errno::ENOTCONN,
            Error::VersionMismatch { .. } => Errno::EBADE,
            Error::Lockspace { errno, .. } => *errno,
        }
    }
}

/// What an errno from a lock call means here, in words, for the errnos
/// whose C text says little (`Broken pipe`) or too little (`No such file
/// or directory`), with the errno's name.
fn errno_words(e: Errno) -> Option<&'static str> {
    Some(match e.raw() {
        libc::EPIPE => "the connection to the dlm daemon closed: the daemon exited or dropped this client (EPIPE",
        libc::ECONNRESET => "the dlm daemon reset the connection: it exited or dropped this client (ECONNRESET",
        libc::ENOENT => "no such lock, lockspace or orphan (ENOENT",
        libc::EBUSY => "the lock has an operation in progress (EBUSY",
        libc::EAGAIN => "an orphan of the resource exists in another mode (EAGAIN",
        libc::ENOSPC => "no lock id is left (ENOSPC",
        libc::ENOMEM => "out of memory, or over a limit of the DLM (ENOMEM",
        libc::EPROTO => "a malformed record from the DLM (EPROTO",
        _ => return None,
    })
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Os(e) => match errno_words(*e) {
                Some(words) => write!(f, "{words}, errno {})", e.raw()),
                None => write!(f, "{e} (errno {})", e.raw()),
            },
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Error::KernelUnavailable(why) => write!(f, "kernel DLM unavailable: {why}"),
            Error::DaemonUnavailable(path, e) => write!(
                f,
                "no dlm daemon answers at {} ({e}); start one with `dlmd --socket {}` or set DLM_SOCKET",
                path.display(),
                path.display()
            ),
            Error::DaemonMissing(text) => f.write_str(text),
            Error::UntrustedSocket(u) => u.fmt(f),
            Error::DaemonRefused { path, reason } => write!(
                f,
                "dlmd at {} refused the connection: {reason}",
                path.display()
            ),
            Error::Unexpected(st) => write!(f, "unexpected completion status: {st}"),
            Error::ModuleNotLoaded => f.write_str(
                "the kernel DLM is not loaded (no dlm-control in /proc/misc): run `modprobe dlm`, \
                 or use the fallback daemon (DLM_BACKEND=fallback)",
            ),
            Error::NoController => f.write_str(
                "no cluster controller is running (EUNATCH): start dlm_controld, or \
                 `dlm-controld --single-node` for one host",
            ),
            Error::NoLocalAddress => f.write_str(
                "the kernel DLM has no local node address (ENOTCONN): the cluster controller has \
                 not configured this node's comms",
            ),
            Error::VersionMismatch { ours, theirs } => write!(
                f,
                "DLM device interface version mismatch: this library speaks {}.{}.{}, the device {}.{}.{}",
                ours[0], ours[1], ours[2], theirs[0], theirs[1], theirs[2]
            ),
            Error::Lockspace { op, name, errno } => {
                let why = match errno.raw() {
                    libc::EPERM => "permission denied: creating or removing a lockspace needs \
                                    CAP_SYS_ADMIN (root)"
                        .to_string(),
                    libc::EACCES => "permission denied by the lockspace's mode".to_string(),
                    libc::EEXIST => "it exists already (NEWEXCL)".to_string(),
                    libc::EBUSY => "it still has locks (release with force, or unlock them)".to_string(),
                    libc::ENOENT => "no such lockspace".to_string(),
                    libc::EPIPE | libc::ECONNRESET => {
                        "the connection to the dlm daemon closed: the daemon exited or dropped \
                         this client"
                            .to_string()
                    }
                    _ => errno.to_string(),
                };
                write!(f, "cannot {op} lockspace {name}: {why}")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Os(e) | Error::DaemonUnavailable(_, e) => Some(e),
            Error::Lockspace { errno, .. } => Some(errno),
            _ => None,
        }
    }
}

impl From<Errno> for Error {
    /// The kernel's errnos that mean something beyond the call become their
    /// own variants (`EUNATCH`, `ENOTCONN`); the rest stay `Os`.
    fn from(e: Errno) -> Error {
        match e.raw() {
            libc::EUNATCH => Error::NoController,
            libc::ENOTCONN => Error::NoLocalAddress,
            _ => Error::Os(e),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::Os(e.into())
    }
}

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = core::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_round_trip() {
        assert_eq!(Errno::EINVAL.to_string(), "Invalid argument");
        assert_eq!(Errno::result(-22), Err(Errno::EINVAL));
        assert_eq!(Errno::result(7), Ok(7));
        let e: Error = Errno::EBUSY.into();
        assert_eq!(e.errno(), Errno::EBUSY);
        assert!(e.to_string().contains("errno 16"));
        assert_eq!(Error::InvalidArgument("x").errno(), Errno::EINVAL);
    }

    #[test]
    fn errnos_that_say_little_are_put_in_words_and_kept() {
        let e = Error::Os(Errno::EPIPE);
        let text = e.to_string();
        assert!(
            text.contains("dlm daemon") && text.contains("EPIPE"),
            "{text}"
        );
        assert!(!text.contains("Broken pipe"), "{text}");
        assert_eq!(e.errno(), Errno::EPIPE);
        let e = Error::Lockspace {
            op: "list the locks of",
            name: "x".into(),
            errno: Errno::ENOENT,
        };
        assert_eq!(
            e.to_string(),
            "cannot list the locks of lockspace x: no such lockspace"
        );
        assert_eq!(e.errno(), Errno::ENOENT);
    }

    #[test]
    fn refusals_say_so() {
        assert_eq!(Refusal::from_errno(Errno::EMFILE, 5), Some(Refusal::Full));
        assert_eq!(
            Refusal::from_errno(Errno::EUSERS, 5),
            Some(Refusal::UserQuota { uid: 5 })
        );
        assert_eq!(Refusal::from_errno(Errno::EACCES, 5), None);
        let e = Error::DaemonRefused {
            path: "/run/dlm/dlmd.sock".into(),
            reason: Refusal::UserQuota { uid: 1001 },
        };
        assert_eq!(e.errno(), Errno::EUSERS);
        let text = e.to_string();
        assert!(
            text.starts_with("dlmd at /run/dlm/dlmd.sock refused the connection: uid 1001 "),
            "{text}"
        );
        assert!(text.contains("quota"), "{text}");
        assert!(!text.contains("no dlm daemon answers"), "{text}");
    }
}
