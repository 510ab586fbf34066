//! The exit statuses of `dlm`, and which one an error gets.
//!
//! dlm's own errors use the codes of sysexits.h, 64 and up, as flock(1)
//! does, so that a script can tell them from the status of the command
//! `dlm lock` ran (which is usually below 64). The table is printed by
//! `dlm --help` and `dlm lock --help` ([`TABLE`]) and the README has it.

use std::fmt;

/// The command ran and ended well, or a query was answered.
pub const OK: u8 = 0;
/// `dlm lock`: the lock was not obtained (`--nowait` refused, `--timeout`
/// ran out), unless `--conflict-exit-code` says otherwise. 1, as flock.
pub const CONFLICT: u8 = 1;
/// `EX_USAGE`: a bad command line, option value or name.
pub const USAGE: u8 = 64;
/// `EX_UNAVAILABLE`: no DLM to talk to: no kernel DLM and no daemon, the
/// daemon cannot be started (dlmd not installed) or refused the
/// connection (full, or the uid's quota).
pub const UNAVAILABLE: u8 = 69;
/// `EX_SOFTWARE`: the DLM answered something dlm cannot make sense of
/// (a protocol or version mismatch).
pub const SOFTWARE: u8 = 70;
/// `EX_OSERR`: the DLM or the system refused a call (the message has the
/// errno): no such lockspace, it still has locks, out of memory, ...
pub const OSERR: u8 = 71;
/// `EX_TEMPFAIL`: `dlm lock`: the lock was lost while the command ran,
/// unless `--lost-exit-code` says otherwise.
pub const LOST: u8 = 75;
/// `EX_NOPERM`: permission denied: by a lockspace's mode, to create or
/// remove a lockspace, or an untrusted socket.
pub const NOPERM: u8 = 77;
/// `dlm lock`: the command was found but could not be run.
pub const CANNOT_RUN: u8 = 126;
/// `dlm lock`: the command was not found.
pub const NOT_FOUND: u8 = 127;

/// The exit status table as a string literal, for `concat!` in help texts.
macro_rules! exit_table {
    () => {
        "\
Exit status:
  0        success (dlm lock: COMMAND's own status, see below)
  1        dlm lock: the lock was not obtained (--nowait refused, --timeout
           ran out); --conflict-exit-code changes it
  64       usage: a bad option, value or name (EX_USAGE)
  69       no DLM to use: no kernel DLM and no daemon answers, dlmd cannot
           be started, or the daemon refused the connection (EX_UNAVAILABLE)
  70       the DLM answered something unexpected (EX_SOFTWARE)
  71       the DLM or the system refused the call: no such lockspace, it
           still has locks, ... (EX_OSERR)
  75       dlm lock: the lock was lost while COMMAND ran, whatever COMMAND's
           status; --lost-exit-code changes it (EX_TEMPFAIL)
  77       permission denied (EX_NOPERM)
  126, 127 dlm lock: COMMAND could not be run, or was not found
  other    dlm lock: COMMAND's exit status, or 128+N if signal N killed it"
    };
}
pub(crate) use exit_table;

/// The exit status table, for `--help` and the man page.
pub const TABLE: &str = exit_table!();

/// `dlm`'s status when its output was cut off (`dlm ls | head -1`): what
/// a shell reports for a program killed by SIGPIPE, said without a word.
pub const BROKEN_PIPE: u8 = 128 + 13;

/// Write one line to stdout. A reader that went away (`EPIPE`) ends the
/// command quietly with [`BROKEN_PIPE`] instead of a panic; another write
/// error is an `EX_OSERR` with its message.
pub fn print_line(args: fmt::Arguments<'_>) -> Result<(), Failure> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                Failure::new(BROKEN_PIPE, "")
            } else {
                Failure::new(OSERR, format!("cannot write the output: {e}"))
            }
        })
}

/// An error of dlm's own with the exit status it calls for: a usage
/// error found after parsing (a bad name, say), or one whose status is
/// known where it happens.
#[derive(Debug)]
pub struct Failure {
    /// The exit status.
    pub code: u8,
    /// What to say.
    pub message: String,
}

impl Failure {
    /// A usage error (exit 64).
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: USAGE,
            message: message.into(),
        }
    }

    /// An error with the given status.
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The exit status for an error: see [`TABLE`].
pub fn code_for(e: &(dyn std::error::Error + 'static)) -> u8 {
    if let Some(f) = e.downcast_ref::<Failure>() {
        return f.code;
    }
    if let Some(e) = e.downcast_ref::<dlm::Error>() {
        return code_for_dlm(e);
    }
    if let Some(e) = e.downcast_ref::<dlm::Errno>() {
        return code_for_errno(*e);
    }
    if let Some(e) = e.downcast_ref::<std::io::Error>() {
        return match e.raw_os_error() {
            Some(raw) => code_for_errno(dlm::Errno::from_raw(raw)),
            None => OSERR,
        };
    }
    if e.downcast_ref::<serde_json::Error>().is_some() {
        return SOFTWARE;
    }
    OSERR
}

fn code_for_dlm(e: &dlm::Error) -> u8 {
    use dlm::Error as E;
    match e {
        E::InvalidArgument(_) => USAGE,
        E::KernelUnavailable(_)
        | E::DaemonUnavailable(..)
        | E::DaemonMissing(_)
        | E::DaemonRefused { .. }
        | E::ModuleNotLoaded
        | E::NoController
        | E::NoLocalAddress => UNAVAILABLE,
        E::UntrustedSocket(_) => NOPERM,
        E::Unexpected(_) | E::VersionMismatch { .. } => SOFTWARE,
        E::Os(errno) | E::Lockspace { errno, .. } => code_for_errno(*errno),
        other => code_for_errno(other.errno()),
    }
}

fn code_for_errno(e: dlm::Errno) -> u8 {
    if e == dlm::Errno::EACCES || e == dlm::Errno::EPERM {
        NOPERM
    } else if e == dlm::Errno::EPROTO || e == dlm::Errno::EBADE {
        SOFTWARE
    } else {
        OSERR
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_get_their_sysexits_status() {
        let e: Box<dyn std::error::Error> = Box::new(Failure::usage("bad"));
        assert_eq!(code_for(e.as_ref()), USAGE);
        let e: Box<dyn std::error::Error> = Box::new(dlm::Error::Lockspace {
            op: "open",
            name: "x".into(),
            errno: dlm::Errno::EACCES,
        });
        assert_eq!(code_for(e.as_ref()), NOPERM);
        let e: Box<dyn std::error::Error> = Box::new(dlm::Error::DaemonUnavailable(
            "/x".into(),
            dlm::Errno::ENOENT,
        ));
        assert_eq!(code_for(e.as_ref()), UNAVAILABLE);
        let e: Box<dyn std::error::Error> = Box::new(dlm::Error::Os(dlm::Errno::ENOENT));
        assert_eq!(code_for(e.as_ref()), OSERR);
        let e: Box<dyn std::error::Error> = Box::new(std::io::Error::from_raw_os_error(1));
        assert_eq!(code_for(e.as_ref()), NOPERM);
    }

    #[test]
    fn own_errors_never_look_like_a_command_status_below_64() {
        for c in [USAGE, UNAVAILABLE, SOFTWARE, OSERR, NOPERM] {
            assert!(c >= 64, "{c}");
        }
    }
}
