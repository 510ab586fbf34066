//! `dlmd`'s command line: the clap definition that the daemon parses and
//! that the man page and shell completions are made from.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use dlm_engine::KernelModel;

/// Default bound of a connection's queue of unsent output (4 MiB).
pub const DEFAULT_MAX_OUTPUT: usize = 4 << 20;
/// Default for `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 4096;
/// Default for `--max-lockspaces`.
pub const DEFAULT_MAX_LOCKSPACES: u32 = 1024;
/// Default for `--log-max-size` (1 MiB).
pub const DEFAULT_LOG_MAX_SIZE: u64 = 1 << 20;

/// The text after `dlmd --help`.
pub const AFTER_HELP: &str = "\
Socket path, first that applies:
  1. --socket PATH
  2. the DLM_SOCKET environment variable
  3. system daemon: /run/dlm/dlmd.sock
     per-user daemon: $XDG_RUNTIME_DIR/dlm/dlmd.sock, or
     /tmp/dlm-<uid>/dlmd.sock when XDG_RUNTIME_DIR is unset (the directory
     is created 0700; dlmd refuses one owned by another user or open to
     group or others)

The daemon is the system daemon when run as root (or with --system) and a
per-user daemon otherwise (or with --user). The system daemon's socket is
open to every user; only root may create or remove lockspaces, and each
lockspace's mode (permission bits, default 0600, given by whoever creates
it: `dlm join NAME --perm 660`, or dlm_create_lockspace's mode; they do
not change while it exists) says who may open it, checked like a file's against the peer's uid, primary group and
supplementary groups. A uid other than root lists only the lockspaces it
may open, and asking for the locks of another is EACCES, as opening it is.
A per-user daemon serves its own user only.

dlmd never daemonizes: it always stays in the foreground (--foreground is
accepted for clarity). systemd (dlmd.service) or the client library's
auto-start (which runs `dlmd --socket P --exit-if-running` in its own
process group) detach it. It takes a lock on P.lock before binding, so
concurrent starters agree on one daemon.

Limits: a client whose unsent output passes --max-output is disconnected;
past --max-connections a new connection is answered EMFILE and closed (the
cap is lowered to fit the open-file limit, which dlmd raises as far as it
may); past --max-lockspaces creating a new lockspace fails with ENOSPC.

On the system daemon a uid other than root may hold at most
--max-connections-per-user connections (default: an eighth of the cap); one
more is answered EUSERS and closed, and the client library says that the
uid is at its quota. The last 32nd of the cap (1 to 64 slots) is kept for
root: other uids are answered EMFILE once only those are left. Root has no
per-uid quota. A per-user daemon serves one uid and has the global cap only.
A connection that has not completed its Hello within --hello-timeout is
closed. What clients can make dlmd log (protocol errors, refusals, denied
requests) is rate-limited as a whole, however many connections they use:
past the limit such lines go to the debug level, and a count of them is
logged.

Socket activation: when systemd (dlmd.socket) or systemd-socket-activate
passes a listening socket (LISTEN_FDS=1 and LISTEN_PID=dlmd's pid; with
LISTEN_FDNAMES the one named dlmd.socket or dlmd is taken), dlmd serves it
instead of binding one. It must be a listening Unix stream socket; --socket
then only names it in the log, no lock file is taken, and the socket is
left to its owner when dlmd stops.

Logging goes to stderr, or with --log-file PATH to the end of PATH (made
0600; not followed if it is a symbolic link), which is kept under
--log-max-size: once past it, PATH is renamed PATH.1 (replacing the
previous one) and a new PATH begun, so at most twice the size is kept. The
client library's auto-start logs to dlmd.log next to the socket.
--log-level wins over RUST_LOG (default: info).

Kernel model: the lockspaces follow the rules of Linux 6.1 or 6.12, which
differ in how callbacks are queued (6.12: no cap of six per lock, one
queue per handle in the order queued, an ended lock and its id freed at
once). --kernel-model 6.1|6.12 chooses; the default is the running
kernel's series (uname -r) when it is one of the two, else the newest,
6.12. `dlm status` and `dlm daemon status` show the model in use.
SIGTERM or SIGINT stop the daemon cleanly: it closes the socket, removes
it and exits 0. Locks do not survive the daemon.";

/// `dlmd`'s command line.
#[derive(Debug, Parser)]
#[command(
    name = "dlmd",
    version,
    about = "The dlm-rs fallback daemon: the Linux DLM's lock engine behind a Unix socket",
    after_help = AFTER_HELP
)]
pub struct Args {
    /// Run as the system daemon (the default for root).
    #[arg(long, conflicts_with = "user")]
    pub system: bool,

    /// Run as a per-user daemon (the default for other users).
    #[arg(long)]
    pub user: bool,

    /// Listen on PATH (overrides DLM_SOCKET and the defaults).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Disconnect a client once more than BYTES of output wait for it.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_OUTPUT,
          value_parser = parse_size)]
    pub max_output: usize,

    /// Refuse connections (with EMFILE) while N are open.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// System daemon: refuse a uid other than root (with EUSERS) while it
    /// has N connections open [default: an eighth of --max-connections].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_user: Option<u32>,

    /// Close a connection that has not completed its Hello SECS seconds
    /// after it was accepted.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    pub hello_timeout: Duration,

    /// After an unclean stop (the previous daemon was killed or crashed
    /// with lockspace connections open), hold new requests for at most
    /// SECS seconds while the clients replay the locks they hold; 0 holds
    /// nothing. The period ends sooner once every connection the previous
    /// daemon had open has replayed. Connections that a daemon killed in
    /// its own grace period was still waiting for are waited for only
    /// until that period's end (at least 1 s).
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_grace)]
    pub grace_period: Duration,

    /// Refuse to create lockspaces (with ENOSPC) while N exist.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_LOCKSPACES,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_lockspaces: u32,

    /// Stay in the foreground (always the case; dlmd never daemonizes).
    #[arg(long)]
    pub foreground: bool,

    /// Log level: off, error, warn, info, debug or trace (overrides RUST_LOG).
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<log::LevelFilter>,

    /// If a daemon already answers on the socket, exit 0 quietly instead
    /// of failing.
    #[arg(long)]
    pub exit_if_running: bool,

    /// Log to the end of PATH instead of stderr, keeping it under
    /// --log-max-size (see below).
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,

    /// Past BYTES (K, M, G suffixes), the log file is renamed PATH.1 and a
    /// new one begun.
    #[arg(long, value_name = "BYTES", default_value = "1M", value_parser = parse_log_size)]
    pub log_max_size: u64,

    /// Follow the rules of Linux SERIES (6.1 or 6.12) where the two differ
    /// [default: the running kernel's series if it is one of them, else
    /// 6.12].
    #[arg(long, value_name = "SERIES", value_parser = parse_model)]
    pub kernel_model: Option<KernelModel>,
}

/// The kernel model in use and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelChoice {
    /// The model.
    pub model: KernelModel,
    /// Where it came from: `"option"`, `"running kernel"` or `"newest"`.
    pub source: &'static str,
}

impl ModelChoice {
    /// `--kernel-model` if given, else the running kernel's series
    /// (`release`, as `uname -r` prints it) if it is 6.1 or 6.12, else
    /// the newest model.
    pub fn choose(option: Option<KernelModel>, release: Option<&str>) -> ModelChoice {
        if let Some(model) = option {
            return ModelChoice {
                model,
                source: "option",
            };
        }
        match release.and_then(KernelModel::from_release) {
            Some(model) => ModelChoice {
                model,
                source: "running kernel",
            },
            None => ModelChoice {
                model: KernelModel::NEWEST,
                source: "newest",
            },
        }
    }
}

fn parse_model(s: &str) -> Result<KernelModel, String> {
    s.parse()
        .map_err(|e: dlm_engine::UnknownKernelModel| e.to_string())
}

/// The clap definition of `dlmd`, for the man page and the completions.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    Args::command()
}

/// A `--log-max-size`: at least 4 KiB, so that a line always fits.
fn parse_log_size(s: &str) -> Result<u64, String> {
    let n = parse_size(s)? as u64;
    if n < 4096 {
        return Err(format!("`{s}`: the log needs at least 4K"));
    }
    Ok(n)
}

/// Parse a positive number of seconds (fractions allowed), at most an hour.
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(secs > 0.0 && secs <= 3600.0) {
        return Err(format!("{s} is not between 0 (exclusive) and 3600 seconds"));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("`{s}`: {e}"))
}

/// Parse a grace period: seconds from 0 (none) to 600.
pub fn parse_grace(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(0.0..=600.0).contains(&secs) {
        return Err(format!("{s} is not between 0 and 600 seconds"));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("`{s}`: {e}"))
}

/// Parse a byte count with an optional K, M or G suffix (powers of 1024).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.eq_ignore_ascii_case(&'k') => (&t[..i], 10),
        Some((i, c)) if c.eq_ignore_ascii_case(&'m') => (&t[..i], 20),
        Some((i, c)) if c.eq_ignore_ascii_case(&'g') => (&t[..i], 30),
        _ => (t, 0),
    };
    let n: usize = digits
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a byte count (e.g. 4096, 64K, 4M)"))?;
    let n = n
        .checked_mul(1usize << shift)
        .ok_or_else(|| format!("`{s}` is too large"))?;
    if n == 0 {
        return Err("the output bound must be at least 1 byte".into());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("4m"), Ok(4 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("K").is_err());
    }

    #[test]
    fn seconds_parse_with_fractions() {
        assert_eq!(parse_secs("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_secs("0.25"), Ok(Duration::from_millis(250)));
        for bad in ["0", "-1", "3601", "NaN", "inf", "soon"] {
            assert!(parse_secs(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
        assert!(Args::try_parse_from(["dlmd", "--system", "--user"]).is_err());
        let a = Args::try_parse_from(["dlmd", "--socket", "/x", "--max-output", "1K"])
            .expect("valid arguments");
        assert_eq!(a.max_output, 1024);
        assert_eq!(a.socket.as_deref(), Some(std::path::Path::new("/x")));
        assert_eq!(a.log_max_size, DEFAULT_LOG_MAX_SIZE);
        assert!(Args::try_parse_from(["dlmd", "--log-max-size", "1K"]).is_err());
        let a = Args::try_parse_from(["dlmd", "--kernel-model", "6.12"]).expect("valid");
        assert_eq!(a.kernel_model, Some(KernelModel::V6_12));
        assert!(Args::try_parse_from(["dlmd", "--kernel-model", "6.6"]).is_err());
    }

    #[test]
    fn the_kernel_model_defaults_to_the_running_kernel_or_the_newest() {
        let c = ModelChoice::choose(None, Some("6.1.0-57-amd64"));
        assert_eq!((c.model, c.source), (KernelModel::V6_1, "running kernel"));
        let c = ModelChoice::choose(None, Some("6.12.117+deb12-amd64"));
        assert_eq!((c.model, c.source), (KernelModel::V6_12, "running kernel"));
        let c = ModelChoice::choose(None, Some("6.8.0-45-generic"));
        assert_eq!((c.model, c.source), (KernelModel::V6_12, "newest"));
        let c = ModelChoice::choose(None, None);
        assert_eq!((c.model, c.source), (KernelModel::V6_12, "newest"));
        let c = ModelChoice::choose(Some(KernelModel::V6_1), Some("6.12.1"));
        assert_eq!((c.model, c.source), (KernelModel::V6_1, "option"));
    }
}
