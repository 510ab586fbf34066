//! `dlmd`: the dlm-rs fallback daemon.
//!
//! It hosts the kernel-exact lock engine ([`dlm_engine`]) behind a Unix
//! socket and plays the kernel's DLM devices for its clients: a control
//! connection is `dlm-control`, a lockspace connection is one open
//! `dlm_<name>` fd. The protocol is documented in [`dlm_proto::wire`].
//!
//! The code is split in three: [`startup`] finds the socket and claims it
//! (lock file, stale sockets, concurrent starters), or [`activation`]
//! takes the one systemd passed; [`server`] is the mio event loop and the
//! connections, and [`devices`] is what the kernel's `fs/dlm/user.c` does
//! with each request. The command line is `dlmd::cli`, in the library,
//! and [`logfile`] is `--log-file`.
#![forbid(unsafe_code)]

mod activation;
mod answer;
mod devices;
mod holders;
mod logfile;
mod quota;
mod ratelimit;
mod server;
mod startup;

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use dlmd::cli::Args;

use crate::startup::Scope;

/// File descriptors kept back from the connection cap for the listener,
/// the poll instance, the lock file, logging and the like.
const RESERVED_FDS: u64 = 32;

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

/// Log to stderr, or to `--log-file`. A log file that cannot be opened is
/// said on stderr, and the daemon does not start.
fn init_logging(args: &Args) -> Result<(), String> {
    let env = env_logger::Env::default().default_filter_or("info");
    let mut b = env_logger::Builder::from_env(env);
    if let Some(level) = args.log_level {
        b.filter_level(level);
    }
    if let Some(path) = &args.log_file {
        let file = logfile::LogFile::open(path, args.log_max_size)?;
        b.target(env_logger::Target::Pipe(Box::new(file)));
    }
    b.format_timestamp_millis();
    b.init();
    Ok(())
}

fn main() -> ExitCode {
    // First, before anything could reuse the passed descriptor's number.
    let activated = activation::listener();
    let args = Args::parse();
    if let Err(msg) = init_logging(&args) {
        eprintln!("dlmd: {msg}");
        return ExitCode::from(1);
    }
    let activated = match activated {
        Ok(l) => l,
        Err(msg) => {
            log::error!("socket activation: {msg}");
            return ExitCode::from(1);
        }
    };
    let is_root = rustix::process::getuid().is_root();
    let scope = if args.system {
        Scope::System
    } else if args.user || !is_root {
        Scope::User
    } else {
        Scope::System
    };
    let socket = match startup::socket_path(args.socket.clone(), scope) {
        Ok(s) => s,
        Err(msg) => {
            log::error!("{msg}");
            return ExitCode::from(1);
        }
    };
    match run(&args, scope, socket, activated) {
        Ok(code) => code,
        Err(msg) => {
            log::error!("{msg}");
            ExitCode::from(1)
        }
    }
}

fn run(
    args: &Args,
    scope: Scope,
    socket: PathBuf,
    activated: Option<UnixListener>,
) -> Result<ExitCode, String> {
    // SIGTERM and SIGINT are caught before the socket is bound: from the
    // moment it answers, a signal must make the daemon remove the socket
    // and exit 0, not kill it and leave a stale socket behind. (A signal
    // during the claim is acted on once the claim is decided.)
    let signals =
        server::stop_signals().map_err(|e| format!("cannot catch SIGTERM and SIGINT: {e}"))?;
    let claim = match activated {
        Some(listener) => {
            log::info!("serving the socket passed by the service manager (LISTEN_FDS)");
            startup::Claim::Bound(startup::Claimed {
                listener,
                guard: None,
            })
        }
        None => startup::claim(&socket, scope)?,
    };
    let claimed = match claim {
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
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok();
    let kernel_model = dlmd::cli::ModelChoice::choose(args.kernel_model, release.as_deref());
    let config = server::Config {
        kernel_model,
        scope,
        uid,
        max_output: args.max_output,
        max_connections,
        max_connections_per_user,
        max_lockspaces: args.max_lockspaces as usize,
        hello_timeout: args.hello_timeout,
        grace_period: args.grace_period,
        holders_beside: Some(socket.clone()),
    };
    log::info!(
        "dlmd {} serving on {} ({}, Linux {} model ({}), max output {} bytes, at most {} \
         connections{} and {} lockspaces)",
        env!("CARGO_PKG_VERSION"),
        socket.display(),
        match scope {
            Scope::System => "system daemon".to_string(),
            Scope::User => format!("per-user daemon for uid {uid}"),
        },
        kernel_model.model,
        match kernel_model.source {
            "option" => "--kernel-model".to_string(),
            "running kernel" => format!(
                "the running kernel, {}",
                release.as_deref().unwrap_or("").trim()
            ),
            _ => format!(
                "the newest; the running kernel, {}, is neither",
                release.as_deref().unwrap_or("unknown").trim()
            ),
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
    if let Some(guard) = claimed.guard {
        guard.release();
    }
    result.map(|()| {
        log::info!("stopped");
        ExitCode::SUCCESS
    })
}
