//! `dlmd`: the dlm-rs fallback daemon.
//!
//! It hosts the kernel-exact lock engine ([`dlm_engine`]) behind a Unix
//! socket and plays the kernel's DLM devices for its clients: a control
//! connection is `dlm-control`, a lockspace connection is one open
//! `dlm_<name>` fd. The protocol is documented in [`dlm_proto::wire`].
//!
//! The code is split in three: [`startup`] finds the socket and claims it
//! (lock file, stale sockets, concurrent starters), [`server`] is the mio
//! event loop and the connections, and [`devices`] is what the kernel's
//! `fs/dlm/user.c` does with each request.
#![forbid(unsafe_code)]

mod answer;
mod devices;
mod quota;
mod ratelimit;
mod server;
mod startup;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::startup::Scope;

/// Default bound of a connection's queue of unsent output (4 MiB).
const DEFAULT_MAX_OUTPUT: usize = 4 << 20;
/// Default for `--max-connections`.
const DEFAULT_MAX_CONNECTIONS: u32 = 4096;
/// Default for `--max-lockspaces`.
const DEFAULT_MAX_LOCKSPACES: u32 = 1024;
/// File descriptors kept back from the connection cap for the listener,
/// the poll instance, the lock file, logging and the like.
const RESERVED_FDS: u64 = 32;

const AFTER_HELP: &str = "\
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
lockspace's mode (default 0600, set with chmod by its owner) says who may
open it, checked like a file's against the peer's uid, primary group and
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

Logging goes to stderr; --log-level wins over RUST_LOG (default: info).
SIGTERM or SIGINT stop the daemon cleanly: it closes the socket, removes
it and exits 0. Locks do not survive the daemon.";

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "dlmd",
    version,
    about = "The dlm-rs fallback daemon: the Linux DLM's lock engine behind a Unix socket",
    after_help = AFTER_HELP
)]
struct Args {
    /// Run as the system daemon (the default for root).
    #[arg(long, conflicts_with = "user")]
    system: bool,

    /// Run as a per-user daemon (the default for other users).
    #[arg(long)]
    user: bool,

    /// Listen on PATH (overrides DLM_SOCKET and the defaults).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,

    /// Disconnect a client once more than BYTES of output wait for it.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_OUTPUT,
          value_parser = parse_size)]
    max_output: usize,

    /// Refuse connections (with EMFILE) while N are open.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,

    /// System daemon: refuse a uid other than root (with EUSERS) while it
    /// has N connections open [default: an eighth of --max-connections].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections_per_user: Option<u32>,

    /// Close a connection that has not completed its Hello SECS seconds
    /// after it was accepted.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    hello_timeout: Duration,

    /// Refuse to create lockspaces (with ENOSPC) while N exist.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_LOCKSPACES,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_lockspaces: u32,

    /// Stay in the foreground (always the case; dlmd never daemonizes).
    #[arg(long)]
    foreground: bool,

    /// Log level: off, error, warn, info, debug or trace (overrides RUST_LOG).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<log::LevelFilter>,

    /// If a daemon already answers on the socket, exit 0 quietly instead
    /// of failing.
    #[arg(long)]
    exit_if_running: bool,
}

/// Parse a positive number of seconds (fractions allowed), at most an hour.
fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(secs > 0.0 && secs <= 3600.0) {
        return Err(format!("{s} is not between 0 (exclusive) and 3600 seconds"));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("`{s}`: {e}"))
}

/// Parse a byte count with an optional K, M or G suffix (powers of 1024).
fn parse_size(s: &str) -> Result<usize, String> {
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

/// Raise the soft open-file limit as far as the hard one allows (up to
/// what `want` connections need), and return the connection cap that fits
/// under it: a cap above the limit would leave clients waiting on a
/// listener that cannot accept, instead of refused.
fn fit_fd_limit(want: u32) -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    let need = u64::from(want) + RESERVED_FDS;
    let cur = lim.current.unwrap_or(u64::MAX);
    if cur < need {
        let raised = lim.maximum.map_or(need, |max| max.min(need));
        if raised > cur {
            lim.current = Some(raised);
            match setrlimit(Resource::Nofile, lim) {
                Ok(()) => log::debug!("open-file limit raised from {cur} to {raised}"),
                Err(e) => log::debug!("cannot raise the open-file limit from {cur}: {e}"),
            }
        }
    }
    let cur = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let fits = cur.saturating_sub(RESERVED_FDS).max(1);
    if u64::from(want) > fits {
        log::warn!("--max-connections {want} lowered to {fits}: the open-file limit is {cur}");
    }
    u64::from(want).min(fits) as usize
}

fn init_logging(level: Option<log::LevelFilter>) {
    let env = env_logger::Env::default().default_filter_or("info");
    let mut b = env_logger::Builder::from_env(env);
    if let Some(level) = level {
        b.filter_level(level);
    }
    b.format_timestamp_millis();
    b.init();
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_level);
    let is_root = rustix::process::getuid().is_root();
    let scope = if args.system {
        Scope::System
    } else if args.user || !is_root {
        Scope::User
    } else {
        Scope::System
    };
    let socket = startup::socket_path(args.socket.clone(), scope);
    match run(&args, scope, socket) {
        Ok(code) => code,
        Err(msg) => {
            log::error!("{msg}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args, scope: Scope, socket: PathBuf) -> Result<ExitCode, String> {
    // SIGTERM and SIGINT are caught before the socket is bound: from the
    // moment it answers, a signal must make the daemon remove the socket
    // and exit 0, not kill it and leave a stale socket behind. (A signal
    // during the claim is acted on once the claim is decided.)
    let signals =
        server::stop_signals().map_err(|e| format!("cannot catch SIGTERM and SIGINT: {e}"))?;
    let claimed = match startup::claim(&socket, scope)? {
        startup::Claim::Bound(c) => c,
        startup::Claim::AlreadyRunning => {
            if args.exit_if_running {
                log::info!(
                    "a dlmd already answers on {}; leaving it be",
                    socket.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            return Err(format!(
                "a dlmd is already running on {} (use --exit-if-running to make this not an error)",
                socket.display()
            ));
        }
    };
    let uid = rustix::process::getuid().as_raw();
    let max_connections = fit_fd_limit(args.max_connections);
    let max_connections_per_user = match scope {
        Scope::System => Some(
            args.max_connections_per_user
                .map_or_else(|| quota::default_per_user(max_connections), |n| n as usize)
                .min(max_connections),
        ),
        Scope::User => None,
    };
    let config = server::Config {
        scope,
        uid,
        max_output: args.max_output,
        max_connections,
        max_connections_per_user,
        max_lockspaces: args.max_lockspaces as usize,
        hello_timeout: args.hello_timeout,
    };
    log::info!(
        "dlmd {} serving on {} ({}, max output {} bytes, at most {} connections{} and {} \
         lockspaces)",
        env!("CARGO_PKG_VERSION"),
        socket.display(),
        match scope {
            Scope::System => "system daemon".to_string(),
            Scope::User => format!("per-user daemon for uid {uid}"),
        },
        args.max_output,
        config.max_connections,
        match config.max_connections_per_user {
            Some(n) => format!(
                " ({n} per uid other than root, the last {} kept for root)",
                quota::root_reserve(config.max_connections)
            ),
            None => String::new(),
        },
        config.max_lockspaces
    );
    let result = server::Server::new(config, claimed.listener, signals)
        .map_err(|e| format!("cannot set up the event loop: {e}"))
        .and_then(|mut s| s.run().map_err(|e| format!("event loop failed: {e}")));
    claimed.guard.release();
    result.map(|()| {
        log::info!("stopped");
        ExitCode::SUCCESS
    })
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
    }
}
