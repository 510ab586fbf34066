//! `dlm`: the operator's command for the Linux DLM and its fallback.
//!
//! ```text
//! dlm lock [-s | -x | --mode MODE] [--lockspace NAME] [-w SECS] [-n] [-o] [-F]
//!          [--on-lost term|kill|none] [--lost-on-blocking] RESOURCE [--] COMMAND...
//! dlm lock [options] RESOURCE -c 'COMMAND LINE'
//! dlm ls [--json]
//! dlm locks LOCKSPACE [--json] [--verbose] [--limit N | --all] [--after LKID]
//! dlm status [--json]
//! dlm join NAME [--perm MODE] [--newexcl]
//! dlm leave NAME [--force]
//! dlm daemon status|stop
//! dlm bench [--socket PATH]
//! ```
//!
//! The binary's `main` calls [`main`]; [`command`] gives the clap
//! definition, from which the man page and the shell completions are made.
#![forbid(unsafe_code)]

/// `println!` for functions that return [`Res`]: a closed stdout ends the
/// command with a status, not a panic (see [`exit::print_line`]).
macro_rules! out {
    ($($t:tt)*) => {
        $crate::exit::print_line(format_args!($($t)*))?
    };
}

mod bench;
mod daemon;
mod exit;
mod lock;
mod procs;
mod show;

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use dlm::{Dlm, Lockspace};
use dlm::{LockspaceFlags, LockspaceName};

pub use exit::TABLE as EXIT_TABLE;

/// Locks `dlm locks` lists unless told otherwise.
const DEFAULT_LOCKS_LIMIT: u32 = 1000;

#[derive(Parser, Debug)]
#[command(
    name = "dlm",
    version,
    about = "Use the Linux Distributed Lock Manager (kernel or fallback daemon)",
    after_help = exit::TABLE
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
    /// lost while COMMAND runs, 75; dlm's own errors exit 64 and up (see
    /// below).
    #[command(after_help = lock::AFTER_HELP)]
    Lock(lock::Args),
    /// List lockspaces: the columns are the JSON fields of --json.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the locks of a lockspace: modes, queue, flags, value block
    /// and the process that asked for each.
    ///
    /// Lists the first --limit locks by lock id and says how many more
    /// there are; --after the last lock id shown lists the next ones. With
    /// --json the output is one object: "locks" (the list), "truncated"
    /// (whether the limit cut it short) and "more" (how many were left
    /// out).
    #[command(after_help = show::LOCKS_AFTER_HELP)]
    Locks {
        /// Lockspace name.
        lockspace: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Also show the master node and the value block in full, one
        /// lock per paragraph (what dlm_tool lockdebug shows).
        #[arg(short, long)]
        verbose: bool,
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
    /// Show the backend, versions, and the daemon with its log file.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create (join) a lockspace and leave it existing, like dlm_tool join.
    Join {
        /// Lockspace name.
        name: String,
        /// Who may open it: permission bits in octal, 0 to 777 (0 means
        /// 600), checked like a file's against the opener's uid and groups.
        #[arg(long, alias = "mode", default_value = "600", value_parser = parse_octal)]
        perm: u32,
        /// Fail if it exists already (DLM_LSFL_NEWEXCL).
        #[arg(long)]
        newexcl: bool,
    },
    /// Drop one reference to a lockspace (each join took one), like
    /// dlm_tool leave; it goes when the last one is dropped.
    Leave {
        /// Lockspace name.
        name: String,
        /// Release it whatever the count of joins (and whatever locks it
        /// holds).
        #[arg(short, long)]
        force: bool,
    },
    /// Manage the fallback daemon that serves this user's socket.
    #[command(subcommand)]
    Daemon(daemon::Cmd),
    /// Measure lock round trips, handoff latency and memory, as ratios to
    /// a Unix-socket echo round trip measured in the same run, on a
    /// private daemon of its own unless --socket is given.
    Bench(bench::Args),
    /// Internal: a benchmark worker process.
    #[command(hide = true)]
    BenchWorker(bench::WorkerArgs),
}

/// The clap definition of `dlm`, for the man page and the completions.
pub fn command() -> clap::Command {
    Cli::command()
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

/// Run `dlm` with the process's arguments, and give its exit status.
pub fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return ExitCode::from(usage_error(e)),
    };
    let result = check_environment().and_then(|()| run(cli.cmd));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let text = e.to_string();
            if !text.is_empty() {
                let _ = writeln!(std::io::stderr(), "dlm: {text}");
            }
            ExitCode::from(exit::code_for(e.as_ref()))
        }
    }
}

/// Print clap's message: help and version on stdout with status 0, a
/// usage error on stderr with status 64. clap's tip to put `--` before a
/// value that starts with `-` is dropped: in `dlm lock`, `--` starts the
/// command.
fn usage_error(e: clap::Error) -> u8 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            exit::OK
        }
        _ => {
            let text = e.render().to_string();
            let mut kept: Vec<&str> = Vec::new();
            for line in text.lines() {
                if line.contains("tip:") && line.contains("'--") {
                    continue;
                }
                // No two blank lines where a tip was dropped.
                if line.trim().is_empty() && kept.last().is_some_and(|l| l.trim().is_empty()) {
                    continue;
                }
                kept.push(line);
            }
            let _ = writeln!(std::io::stderr(), "{}", kept.join("\n").trim_end());
            exit::USAGE
        }
    }
}

/// Refuse what would make every command fail in a puzzling way.
fn check_environment() -> Res<()> {
    if let Some(p) = std::env::var_os("DLM_SOCKET").filter(|p| !p.is_empty()) {
        if !std::path::Path::new(&p).is_absolute() {
            return Err(exit::Failure::usage(format!(
                "DLM_SOCKET={} is a relative path: give the socket's absolute path \
                 (a relative one would name a different socket in each directory)",
                std::path::Path::new(&p).display()
            ))
            .into());
        }
    }
    Ok(())
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn lockspace_name(s: &str) -> Res<LockspaceName> {
    LockspaceName::new(s).map_err(|_| {
        exit::Failure::usage(format!(
            "bad lockspace name {s:?}: 1 to 64 bytes, no '/' or NUL"
        ))
        .into()
    })
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
        Cmd::Ls { json } => show::ls(json),
        Cmd::Locks {
            lockspace,
            json,
            verbose,
            limit,
            all,
            after,
        } => show::locks(&show::LocksArgs {
            lockspace: lockspace_name(&lockspace)?,
            json,
            verbose,
            limit: (!all).then_some(limit),
            after: after.unwrap_or(0),
        }),
        Cmd::Status { json } => show::status(json),
        Cmd::Join {
            name,
            perm,
            newexcl,
        } => {
            let dlm = Dlm::open()?;
            let flags = if newexcl {
                LockspaceFlags::NEWEXCL
            } else {
                LockspaceFlags::empty()
            };
            let ls = dlm.create_lockspace(&lockspace_name(&name)?, flags, perm)?;
            out!("joined lockspace {} (minor {})", ls.name(), ls.minor());
            Ok(exit::OK)
        }
        Cmd::Leave { name, force } => show::leave(&lockspace_name(&name)?, force),
        Cmd::Daemon(cmd) => daemon::run(cmd),
        Cmd::Bench(args) => bench::run(args),
        Cmd::BenchWorker(args) => bench::worker(args),
    }
}
