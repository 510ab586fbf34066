//! `dlm`: the operator's command for the Linux DLM and its fallback.
//!
//! ```text
//! dlm lock [--mode EX] [--lockspace NAME] [--timeout SECS] [--nowait] [--close]
//!          [--on-lost term|kill|none] [--lost-on-blocking] RESOURCE -- COMMAND...
//! dlm ls [--json]
//! dlm locks LOCKSPACE [--json] [--limit N | --all] [--after LKID]
//! dlm status
//! dlm join NAME
//! dlm leave NAME
//! dlm bench
//! ```
#![forbid(unsafe_code)]

mod bench;
mod lock;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dlm::query::QueryOptions;
use dlm::{Dlm, Lockspace};
use dlm::{LockspaceFlags, LockspaceName};

/// Exit status for errors (no DLM, bad arguments, a command that cannot
/// be run).
const EXIT_ERROR: u8 = 2;
/// Locks `dlm locks` lists unless told otherwise.
const DEFAULT_LOCKS_LIMIT: u32 = 1000;

#[derive(Parser, Debug)]
#[command(
    name = "dlm",
    version,
    about = "Use the Linux Distributed Lock Manager (kernel or fallback daemon)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run COMMAND while holding a lock on RESOURCE, like flock(1).
    ///
    /// Exits with COMMAND's status (128+N if it died of signal N). If the
    /// lock is not obtained (--nowait refused, --timeout expired) it exits
    /// with --conflict-exit-code (default 1) and says why; if the lock is
    /// lost while COMMAND runs, 75; errors exit 2.
    #[command(after_help = lock::AFTER_HELP)]
    Lock(lock::Args),
    /// List lockspaces.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the locks of a lockspace: mode, queue and owner pid.
    ///
    /// Lists the first --limit locks by lock id and says how many more
    /// there are; --after the last lock id shown lists the next ones. With
    /// --json the output is one object: "locks" (the list), "truncated"
    /// (whether the limit cut it short) and "more" (how many were left
    /// out).
    Locks {
        /// Lockspace name.
        lockspace: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// List at most N locks.
        #[arg(long, value_name = "N", default_value_t = DEFAULT_LOCKS_LIMIT)]
        limit: u32,
        /// List every lock, however many.
        #[arg(long, conflicts_with = "limit")]
        all: bool,
        /// Only locks whose lock id (hex, as listed) is greater than LKID.
        #[arg(long, value_name = "LKID", value_parser = parse_hex)]
        after: Option<u32>,
    },
    /// Show the backend, versions and the daemon.
    Status,
    /// Create (join) a lockspace and leave it existing, like dlm_tool join.
    Join {
        /// Lockspace name.
        name: String,
        /// Access mode: permission bits in octal, 0 to 777 (0 means 600).
        #[arg(long, default_value = "600", value_parser = parse_octal)]
        mode: u32,
        /// Fail if it exists already (DLM_LSFL_NEWEXCL).
        #[arg(long)]
        newexcl: bool,
    },
    /// Release a lockspace, like dlm_tool leave.
    Leave {
        /// Lockspace name.
        name: String,
    },
    /// Measure lock round trips, handoff latency and memory, as ratios to
    /// a Unix-socket echo round trip measured in the same run.
    Bench(bench::Args),
    /// Internal: a benchmark worker process.
    #[command(hide = true)]
    BenchWorker(bench::WorkerArgs),
}

/// A lockspace's access mode: permission bits, in octal.
fn parse_octal(s: &str) -> Result<u32, String> {
    let mode = u32::from_str_radix(s, 8).map_err(|e| format!("`{s}` is not an octal mode: {e}"))?;
    if mode > 0o777 {
        return Err(format!("`{s}`: only permission bits, 0 to 777"));
    }
    Ok(mode)
}

fn parse_hex(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0x").unwrap_or(s);
    u32::from_str_radix(digits, 16).map_err(|e| format!("not a hex lock id: {e}"))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match run(cli.cmd) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("dlm: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn lockspace_name(s: &str) -> Res<LockspaceName> {
    LockspaceName::new(s)
        .map_err(|_| format!("bad lockspace name {s:?}: 1 to 64 bytes, no '/' or NUL").into())
}

/// Open a lockspace, creating it if it does not exist.
fn open_or_create(dlm: &Dlm, name: &LockspaceName) -> Res<Lockspace> {
    match dlm.open_lockspace(name) {
        Ok(ls) => Ok(ls),
        Err(e) if e.errno() == dlm::Errno::ENOENT => {
            Ok(dlm.create_lockspace(name, LockspaceFlags::empty(), 0o600)?)
        }
        Err(e) => Err(e.into()),
    }
}

fn run(cmd: Cmd) -> Res<u8> {
    match cmd {
        Cmd::Lock(args) => lock::run(args),
        Cmd::Ls { json } => {
            let dlm = Dlm::open()?;
            let spaces = dlm.lockspaces()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&spaces)?);
            } else {
                println!(
                    "{:<24} {:>6} {:>7} {:>6} {:>6} {:>6} {:>7}",
                    "NAME", "MINOR", "CREATES", "MODE", "UID", "LOCKS", "HANDLES"
                );
                for s in spaces {
                    println!(
                        "{:<24} {:>6} {:>7} {:>6o} {:>6} {:>6} {:>7}",
                        s.name, s.minor, s.create_count, s.mode, s.uid, s.locks, s.connections
                    );
                }
            }
            Ok(0)
        }
        Cmd::Locks {
            lockspace,
            json,
            limit,
            all,
            after,
        } => {
            let dlm = Dlm::open()?;
            let options = QueryOptions {
                limit: (!all).then_some(limit),
                after: after.unwrap_or(0),
            };
            let page = dlm.locks_with(&lockspace_name(&lockspace)?, &options)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&page)?);
            } else {
                println!(
                    "{:>8} {:<24} {:>7} {:>9} {:<10} {:>8} {:>6}",
                    "LKID", "RESOURCE", "GRANTED", "REQUESTED", "QUEUE", "PID", "ORPHAN"
                );
                for l in &page.locks {
                    println!(
                        "{:>8x} {:<24} {:>7} {:>9} {:<10} {:>8} {:>6}",
                        l.lkid,
                        l.resource,
                        l.granted.as_deref().unwrap_or("-"),
                        l.requested.as_deref().unwrap_or("-"),
                        l.queue.as_deref().unwrap_or("ended"),
                        l.pid,
                        if l.orphan { "yes" } else { "no" }
                    );
                }
            }
            if page.truncated {
                let next = page
                    .locks
                    .last()
                    .map(|l| format!(" or --after {:x} for the next ones", l.lkid))
                    .unwrap_or_default();
                eprintln!(
                    "dlm: {} more lock(s) not shown; use --limit N or --all{next}",
                    page.more
                );
            }
            Ok(0)
        }
        Cmd::Status => {
            println!(
                "library: dlm-rs {} (device interface {}.{}.{})",
                env!("CARGO_PKG_VERSION"),
                dlm::DEVICE_VERSION.0,
                dlm::DEVICE_VERSION.1,
                dlm::DEVICE_VERSION.2
            );
            match dlm::kernel_control_device() {
                Some(p) => println!("kernel DLM: control device {}", p.display()),
                None => println!("kernel DLM: not available (no dlm-control device)"),
            }
            let dlm = Dlm::open()?;
            println!("backend: {}", dlm.backend());
            let (a, b, c) = dlm.version()?;
            println!("backend device version: {a}.{b}.{c}");
            if let Some(sock) = dlm.socket_path() {
                match dlm.daemon_pid() {
                    Some(pid) => println!("daemon: dlmd pid {pid} at {}", sock.display()),
                    None => println!("daemon: at {}", sock.display()),
                }
                let spaces = dlm.lockspaces()?;
                println!("lockspaces: {}", spaces.len());
            }
            Ok(0)
        }
        Cmd::Join {
            name,
            mode,
            newexcl,
        } => {
            let dlm = Dlm::open()?;
            let flags = if newexcl {
                LockspaceFlags::NEWEXCL
            } else {
                LockspaceFlags::empty()
            };
            let ls = dlm.create_lockspace(&lockspace_name(&name)?, flags, mode)?;
            println!("joined lockspace {} (minor {})", ls.name(), ls.minor());
            Ok(0)
        }
        Cmd::Leave { name } => {
            let dlm = Dlm::open()?;
            let ls = dlm.open_lockspace(&lockspace_name(&name)?)?;
            dlm.release_lockspace(ls, true)?;
            println!("left lockspace {name}");
            Ok(0)
        }
        Cmd::Bench(args) => bench::run(args),
        Cmd::BenchWorker(args) => bench::worker(args),
    }
}
