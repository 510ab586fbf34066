//! The controller's errors.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// `Result` with the controller's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the controller could not do something.
#[derive(Debug)]
pub enum Error {
    /// A file-system operation on a kernel interface failed.
    Io {
        /// What was being done (`mkdir`, `write`, ...).
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// dlm_controld (or another dlm-controld) already controls the DLM.
    OtherController {
        /// Its pid.
        pid: u32,
        /// Its command name.
        comm: String,
    },
    /// Lockspaces exist that this controller did not join; it refuses to
    /// take over (or to stop while they exist).
    Lockspaces(Vec<OsString>),
    /// The kernel DLM is not available (module not loaded, configfs
    /// missing).
    NoDlm(String),
    /// A DLM misc device could not be found or created.
    NoDevice(String),
    /// The uevent netlink socket failed.
    Netlink(io::Error),
    /// The kernel did not take the configuration as written.
    Config(String),
    /// A lockspace name that cannot be configured.
    InvalidName(OsString),
    /// Bad command line.
    Usage(String),
    /// A lockspace this controller has not joined.
    NotJoined(OsString),
}

impl Error {
    /// Wrap an I/O error with the operation and path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The errno to report to the kernel for this error (positive), as a
    /// failed join's `event_done` value.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Io { source, .. } | Error::Netlink(source) => source.raw_os_error().unwrap_or(5),
            Error::InvalidName(_) => 22, // EINVAL
            Error::NotJoined(_) => 2,    // ENOENT
            _ => 5,                      // EIO
        }
    }
}

fn names(list: &[OsString]) -> String {
    list.iter()
        .map(|n| n.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { op, path, source } if path.as_os_str().is_empty() => {
                write!(f, "{op}: {source}")
            }
            Error::Io { op, path, source } => write!(f, "{op} {}: {source}", path.display()),
            Error::OtherController { pid, comm } => {
                write!(
                    f,
                    "{comm} (pid {pid}) is running; only one DLM controller may run"
                )
            }
            Error::Lockspaces(ls) => write!(f, "lockspaces exist: {}", names(ls)),
            Error::NoDlm(why) => write!(f, "the kernel DLM is not available: {why}"),
            Error::NoDevice(why) => write!(f, "{why}"),
            Error::Netlink(e) => write!(f, "uevent socket: {e}"),
            Error::Config(why) => write!(f, "{why}"),
            Error::InvalidName(n) => write!(f, "lockspace name {n:?} cannot be configured"),
            Error::Usage(why) => write!(f, "{why}"),
            Error::NotJoined(n) => write!(f, "no lockspace {:?} joined by this controller", n),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } | Error::Netlink(source) => Some(source),
            _ => None,
        }
    }
}
