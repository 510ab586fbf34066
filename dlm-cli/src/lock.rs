//! `dlm lock`: run a command while holding a lock, like flock(1), and
//! never let it run on without the lock.
//!
//! Once the lock is granted, `dlm` starts the command and waits, at the
//! same time, for three things:
//! - the command's end (`SIGCHLD`): `dlm` then unlocks and exits as the
//!   command did;
//! - `SIGINT`, `SIGTERM` and `SIGHUP`: passed on to the command (not one
//!   the terminal sent to the whole foreground process group, which the
//!   command has had already), while `dlm` keeps the lock until the
//!   command has exited;
//! - the lockspace: a lost lock (the daemon connection closed, another
//!   opener unlocked it, or with `--lost-on-blocking` another process
//!   asks for it) is acted on at once, as `--on-lost` says.
//!
//! The command inherits a descriptor of what owns the lock (the kernel
//! device's open file, or the daemon connection; its number is in
//! `DLM_LOCK_FD`), so the DLM keeps the lock while the command runs even
//! if `dlm` itself is killed with `SIGKILL`. `--close` withholds it.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dlm::{Dlm, Lock, LockRequest, Lockspace, LostReason, Outcome};
use dlm::{LockMode, ResourceName, Status};
use rustix::process::{Pid, Signal};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::backend::SignalDelivery;
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::low_level::siginfo::{Cause, Origin};

use crate::exit::{self, Failure};
use crate::{lockspace_name, open_or_create, Res};

/// The environment variable that tells the command its inherited
/// descriptor.
const LOCK_FD_VAR: &str = "DLM_LOCK_FD";
/// The shell `-c CMD` runs.
const SHELL: &str = "/bin/sh";

/// The text after `dlm lock --help`.
pub const AFTER_HELP: &str = concat!(
    "\
COMMAND:
  As with flock(1), COMMAND follows RESOURCE, with or without `--` before
  it: `dlm lock r make -j4` and `dlm lock r -- make -j4` are the same.
  Options go before COMMAND; everything after its first word is its own.
  -c CMD runs `sh -c CMD` instead.

",
    crate::exit::exit_table!(),
    "

The lock and COMMAND:
  COMMAND inherits a descriptor of what owns the lock: the lockspace device
  of the kernel DLM, or the connection to the fallback daemon dlmd. Its
  number is in the environment as DLM_LOCK_FD. The DLM keeps the lock while
  any copy of that descriptor is open, so if dlm itself is killed (even
  with SIGKILL) the lock stays held until COMMAND, and whatever inherited
  the descriptor from it, has exited or closed it: as with flock(1). COMMAND
  must not read or write the descriptor. With --close COMMAND gets no copy
  (and DLM_LOCK_FD is removed from its environment): then killing dlm
  releases the lock at once.

  When COMMAND exits, dlm unlocks and exits; a process COMMAND left behind
  does not keep the lock then.

Signals:
  SIGINT, SIGTERM and SIGHUP sent to dlm are passed on to COMMAND, and dlm
  keeps the lock until COMMAND has exited. One the terminal sends (Ctrl-C,
  hangup) goes to COMMAND's process group already, and is not sent twice.

A lost lock:
  The lock is lost if the daemon's connection closes, or another opener of
  the lockspace unlocks it; with --lost-on-blocking, also when another
  process asks for the resource in a mode the lock blocks. dlm notices at
  once, says so on stderr, does what --on-lost says (default: SIGTERM to
  COMMAND), waits for COMMAND to exit, and exits 75.

-F, --no-fork:
  dlm takes the lock and then becomes COMMAND (exec), which inherits the
  descriptor that owns the lock, as with flock -F. Nothing watches the lock
  then: a lost lock is not reported, and the lock is released when COMMAND
  (and whatever inherited the descriptor) has exited; the exit status is
  COMMAND's own. It cannot be combined with --close or the --on-lost,
  --lost-on-blocking and --lost-exit-code options."
);

/// What `dlm lock` does to the command when the lock is lost.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnLost {
    /// Send SIGTERM.
    Term,
    /// Send SIGKILL.
    Kill,
    /// Let it run on (dlm still exits with the lost status).
    None,
}

/// Options of `dlm lock`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Lock mode: NL, CR, CW, PR, PW or EX [default: EX].
    #[arg(short, long, value_parser = parse_mode, conflicts_with_all = ["shared", "exclusive"])]
    mode: Option<LockMode>,
    /// A shared lock: --mode PR (flock's -s).
    #[arg(short, long, conflicts_with = "exclusive")]
    shared: bool,
    /// An exclusive lock: --mode EX, the default (flock's -x and -e).
    #[arg(short = 'x', short_alias = 'e', long)]
    exclusive: bool,
    /// Lockspace (created if it does not exist).
    #[arg(short, long, default_value = "default")]
    lockspace: String,
    /// Give up after this many seconds (fractions allowed; one too long
    /// for the clock to reach waits without limit).
    #[arg(short = 'w', long, visible_alias = "wait", value_name = "SECS",
          value_parser = parse_timeout, allow_hyphen_values = true)]
    timeout: Option<Duration>,
    /// Fail at once if the lock is held (DLM_LKF_NOQUEUE).
    #[arg(short, long, visible_aliases = ["nb", "nonblock"])]
    nowait: bool,
    /// Exit status when the lock is not obtained.
    #[arg(short = 'E', long, value_name = "N", default_value_t = exit::CONFLICT,
          allow_hyphen_values = true)]
    conflict_exit_code: u8,
    /// Do not give COMMAND a descriptor of the lock (see below).
    #[arg(short = 'o', long)]
    close: bool,
    /// Take the lock, then exec COMMAND in dlm's place (see below).
    #[arg(short = 'F', long,
          conflicts_with_all = ["close", "on_lost", "lost_exit_code", "lost_on_blocking"])]
    no_fork: bool,
    /// What to do to COMMAND when the lock is lost.
    #[arg(long, value_enum, value_name = "ACTION", default_value_t = OnLost::Term)]
    on_lost: OnLost,
    /// Exit status when the lock was lost while COMMAND ran.
    #[arg(long, value_name = "N", default_value_t = exit::LOST, allow_hyphen_values = true)]
    lost_exit_code: u8,
    /// Count the lock as lost when another process asks for the resource
    /// in a mode this lock blocks (a blocking AST).
    #[arg(long)]
    lost_on_blocking: bool,
    /// Say on stderr whether dlm waits, for how long, and when it got the
    /// lock.
    #[arg(short, long)]
    verbose: bool,
    /// flock's -u has no meaning here: the lock ends with COMMAND.
    #[arg(short = 'u', long, hide = true)]
    unlock: bool,
    /// Run CMD through the shell ($SHELL, else /bin/sh) as `sh -c CMD`,
    /// like flock -c.
    #[arg(
        short = 'c',
        long = "command",
        value_name = "CMD",
        conflicts_with = "command"
    )]
    shell_command: Option<String>,
    /// Resource name.
    resource: String,
    /// The command and its arguments (`--` before it is allowed).
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    command: Vec<String>,
}

impl Args {
    /// The lock mode asked for.
    fn mode(&self) -> LockMode {
        match (self.mode, self.shared) {
            (Some(m), _) => m,
            (None, true) => LockMode::Pr,
            (None, false) => LockMode::Ex,
        }
    }

    /// The program and its arguments: COMMAND, or the shell for `-c`.
    fn argv(&self) -> Vec<String> {
        match &self.shell_command {
            Some(cmd) => {
                let shell = std::env::var("SHELL")
                    .ok()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| SHELL.to_string());
                vec![shell, "-c".to_string(), cmd.clone()]
            }
            None => self.command.clone(),
        }
    }
}

/// A `--mode`: one of the six lock modes, in any case.
fn parse_mode(s: &str) -> Result<LockMode, String> {
    s.parse().map_err(|_| {
        format!(
            "`{s}` is not a lock mode; the six modes are NL (null), CR (concurrent read), \
             CW (concurrent write), PR (protected read: shared, -s), PW (protected write) \
             and EX (exclusive, -x)"
        )
    })
}

/// A `--timeout`: seconds, zero or more, that a [`Duration`] can hold.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(format!("`{s}`: the seconds must be finite, zero or more"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| {
        format!(
            "`{s}` seconds is too long a timeout (at most {} seconds)",
            u64::MAX
        )
    })
}

/// Why the lock is lost.
#[derive(Debug, Clone)]
enum Lost {
    /// The client library says so.
    Reason(LostReason),
    /// Another process asks for the resource (`--lost-on-blocking`).
    Blocking(LockMode),
    /// Reading the lockspace failed: its records are beyond reach.
    Unreadable(String),
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::Reason(r) => write!(f, "{r}"),
            Lost::Blocking(m) => {
                write!(f, "another process asks for it in {m} (--lost-on-blocking)")
            }
            Lost::Unreadable(e) => write!(f, "the lockspace cannot be read any more: {e}"),
        }
    }
}

impl Lost {
    /// Whether the DLM still holds the lock (so `dlm` must unlock it).
    fn still_held(&self) -> bool {
        matches!(self, Lost::Blocking(_))
    }
}

/// Where the DLM's callbacks leave the news of a lost lock (the first).
type LostNews = Arc<Mutex<Option<Lost>>>;

fn report(news: &LostNews, lost: Lost) {
    let mut slot = news.lock().unwrap_or_else(|p| p.into_inner());
    slot.get_or_insert(lost);
}

/// Say something on stderr; a stderr that cannot be written is no reason
/// to stop (and must not panic).
fn say(msg: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "dlm: {msg}");
}

/// `dlm lock`.
pub fn run(a: Args) -> Res<u8> {
    if a.unlock {
        return Err(Failure::usage(
            "dlm lock has no -u/--unlock: the lock is released when COMMAND exits \
             (or, with -F, when COMMAND and whatever inherited its descriptor have exited)",
        )
        .into());
    }
    if a.command.is_empty() && a.shell_command.is_none() {
        return Err(Failure::usage(format!(
            "dlm lock {} needs a COMMAND to run while it holds the lock (or -c 'CMD'); \
             unlike flock, it cannot lock for a descriptor of the calling shell",
            a.resource
        ))
        .into());
    }
    let resource = ResourceName::new(&a.resource).map_err(|_| {
        Failure::usage(format!(
            "resource name {:?} is longer than 64 bytes",
            a.resource
        ))
    })?;
    let mode = a.mode();
    let news: LostNews = Arc::new(Mutex::new(None));
    let request = |noqueue: bool| {
        let mut req = LockRequest::new(resource, mode).on_lost({
            let news = news.clone();
            move |_, why| report(&news, Lost::Reason(why))
        });
        if a.lost_on_blocking {
            let news = news.clone();
            req = req.on_blocking(move |_, mode| report(&news, Lost::Blocking(mode)));
        }
        if noqueue {
            req = req.flags(dlm::LockFlags::NOQUEUE);
        }
        if let Some(t) = a.timeout {
            req = req.timeout(t);
        }
        req
    };
    let dlm = Dlm::open()?;
    let ls = open_or_create(&dlm, &lockspace_name(&a.lockspace)?)?;
    let what = format!(
        "the {mode} lock on {} (lockspace {})",
        a.resource, a.lockspace
    );
    let outcome = if a.verbose && !a.nowait {
        // A first try that does not queue tells whether there is a wait.
        match ls.lock(request(true))? {
            Outcome::NotGranted(c) if c.status == Status::WouldBlock => {
                let limit = match a.timeout {
                    Some(t) => format!("for at most {} s (--timeout)", t.as_secs_f64()),
                    None => "with no time limit".to_string(),
                };
                say(format_args!("{what} is held by others: waiting {limit}"));
                let start = Instant::now();
                let outcome = ls.lock(request(false))?;
                if let Outcome::Granted(_) = outcome {
                    say(format_args!(
                        "got {what} after {:.3} s",
                        start.elapsed().as_secs_f64()
                    ));
                }
                outcome
            }
            outcome => {
                if let Outcome::Granted(_) = outcome {
                    say(format_args!("got {what} at once"));
                }
                outcome
            }
        }
    } else {
        let outcome = ls.lock(request(a.nowait))?;
        if a.verbose {
            if let Outcome::Granted(_) = outcome {
                say(format_args!("got {what} at once"));
            }
        }
        outcome
    };
    let lock = match outcome {
        Outcome::Granted(lock) => lock,
        Outcome::NotGranted(c) => {
            let why = match c.status {
                Status::WouldBlock => format!("{} is locked (--nowait)", a.resource),
                Status::TimedOut => format!("timed out waiting for {}", a.resource),
                other => format!("lock on {} not granted: {other}", a.resource),
            };
            say(format_args!("{why}"));
            return Ok(a.conflict_exit_code);
        }
    };
    if a.no_fork {
        return exec(&a, &ls, lock);
    }
    let ended = supervise(&a, &ls, &news)?;
    let lost = news.lock().unwrap_or_else(|p| p.into_inner()).take();
    finish(&a, lock, ended, lost)
}

/// `--no-fork`: become the command, which inherits the descriptor that
/// owns the lock. Returns only if the exec failed.
fn exec(a: &Args, ls: &Lockspace, lock: Lock) -> Res<u8> {
    use std::os::unix::process::CommandExt;
    let argv = a.argv();
    let fd = ls.inheritable_fd()?;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env(LOCK_FD_VAR, fd.as_raw_fd().to_string());
    if a.verbose {
        say(format_args!(
            "executing {} (pid {})",
            argv[0],
            std::process::id()
        ));
    }
    // The lock stays with the descriptor: nothing to unlock here.
    let _id = lock.into_id();
    let e = cmd.exec();
    say(format_args!("cannot run {}: {e}", argv[0]));
    // The lock is released as the descriptors close when dlm exits.
    Ok(if e.kind() == std::io::ErrorKind::NotFound {
        exit::NOT_FOUND
    } else {
        exit::CANNOT_RUN
    })
}

/// How the command ended.
enum Ended {
    /// It ran and exited.
    Exited(ExitStatus),
    /// It could not be started: the exit status that says so.
    NotRun(u8),
}

/// Unlock (unless the lock is gone) and choose the exit status.
fn finish(a: &Args, lock: Lock, ended: Ended, lost: Option<Lost>) -> Res<u8> {
    let code = match ended {
        Ended::Exited(st) => status_code(st),
        Ended::NotRun(code) => code,
    };
    match lost {
        Some(lost) => {
            if lost.still_held() {
                lock.unlock()?;
            } else {
                // The DLM has no such lock any more: nothing to unlock.
                drop(lock);
            }
            Ok(a.lost_exit_code)
        }
        None => match lock.unlock() {
            Ok(()) => Ok(code),
            Err(e) => {
                // Lost after the last look: when is unknown.
                say(format_args!(
                    "the {} lock on {} was lost by the time {} ended: {e}",
                    a.mode(),
                    a.resource,
                    a.argv()[0]
                ));
                Ok(a.lost_exit_code)
            }
        },
    }
}

/// The exit status that reports the command's: its own, or 128+N for a
/// death by signal N.
fn status_code(st: ExitStatus) -> u8 {
    match (st.code(), st.signal()) {
        (Some(c), _) => c.clamp(0, 255) as u8,
        (None, Some(sig)) => (128 + sig).clamp(0, 255) as u8,
        (None, None) => exit::SOFTWARE,
    }
}

const SIGNALS: mio::Token = mio::Token(0);
const LOCKSPACE: mio::Token = mio::Token(1);

/// Run the command and wait for it, passing signals on and acting on a
/// lost lock as it happens.
fn supervise(a: &Args, ls: &Lockspace, news: &LostNews) -> Res<Ended> {
    // Before the command starts, so that no signal and no SIGCHLD is
    // missed.
    // A self-pipe the handlers write, polled with the lockspace; the
    // signals' origins come with them.
    let (read, write) = std::os::unix::net::UnixStream::pair()?;
    let wake = read.as_raw_fd();
    let mut signals = SignalDelivery::with_pipe(
        read,
        write,
        WithOrigin::default(),
        [SIGINT, SIGTERM, SIGHUP, SIGCHLD],
    )?;
    let mut poll = mio::Poll::new()?;
    poll.registry().register(
        &mut mio::unix::SourceFd(&wake),
        SIGNALS,
        mio::Interest::READABLE,
    )?;
    let mut source = ls.clone();
    poll.registry()
        .register(&mut source, LOCKSPACE, mio::Interest::READABLE)?;
    let mut child = match spawn(a, ls)? {
        Ok(c) => c,
        Err(code) => return Ok(Ended::NotRun(code)),
    };
    let mut watching = true;
    let mut acted = false;
    let mut events = mio::Events::with_capacity(8);
    // Records that came before the registration are read now.
    let mut readable = true;
    loop {
        if watching && readable {
            if let Err(e) = ls.dispatch() {
                // The library reports a closed connection itself; any
                // other failure leaves the lock beyond reach as well.
                report(news, Lost::Unreadable(e.to_string()));
                let _ = poll.registry().deregister(&mut source);
                watching = false;
            }
        }
        if !acted {
            let lost = news.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(lost) = lost {
                acted = true;
                act_on_loss(a, &child, &lost);
            }
        }
        if let Some(st) = child.try_wait()? {
            return Ok(Ended::Exited(st));
        }
        readable = false;
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        for ev in events.iter() {
            match ev.token() {
                SIGNALS => {
                    for origin in signals.pending() {
                        pass_on(&origin, &child);
                    }
                }
                _ => readable = true,
            }
        }
    }
}

/// Start the command, with its copy of the lock's descriptor unless
/// `--close`. `Err` carries the exit status for a command that could not
/// be started (127: not found; 126: otherwise).
fn spawn(a: &Args, ls: &Lockspace) -> Res<Result<Child, u8>> {
    let argv = a.argv();
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    // The parent's copy closes when `inherited` is dropped, right after
    // the spawn: the command's copy is the one that counts.
    let inherited = if a.close {
        cmd.env_remove(LOCK_FD_VAR);
        None
    } else {
        let fd = ls.inheritable_fd()?;
        cmd.env(LOCK_FD_VAR, fd.as_raw_fd().to_string());
        Some(fd)
    };
    let spawned = cmd.spawn();
    drop(inherited);
    Ok(match spawned {
        Ok(child) => Ok(child),
        Err(e) => {
            say(format_args!("cannot run {}: {e}", argv[0]));
            Err(if e.kind() == std::io::ErrorKind::NotFound {
                exit::NOT_FOUND
            } else {
                exit::CANNOT_RUN
            })
        }
    })
}

fn child_pid(child: &Child) -> Option<Pid> {
    Pid::from_raw(i32::try_from(child.id()).ok()?)
}

/// Pass a signal `dlm` received on to the command. One the kernel sent
/// to the terminal's foreground process group (Ctrl-C, a hangup) reached
/// the command already when it is in our group: it is not sent twice.
fn pass_on(origin: &Origin, child: &Child) {
    if origin.signal == SIGCHLD {
        // The command's end is seen by the wait in the loop.
        return;
    }
    let Some(pid) = child_pid(child) else { return };
    if origin.cause == Cause::Kernel
        && rustix::process::getpgid(Some(pid)).ok() == Some(rustix::process::getpgrp())
    {
        log::debug!(
            "signal {} came from the terminal to the whole group: not passed on",
            origin.signal
        );
        return;
    }
    let Some(sig) = Signal::from_named_raw(origin.signal) else {
        return;
    };
    if let Err(e) = rustix::process::kill_process(pid, sig) {
        // ESRCH: it has just exited, which the loop sees next.
        log::debug!("cannot pass signal {} on to {pid:?}: {e}", origin.signal);
    }
}

/// The lock is lost: say so, and do what `--on-lost` says.
fn act_on_loss(a: &Args, child: &Child, lost: &Lost) {
    let what = format!(
        "lost the {} lock on {} (lockspace {}): {lost}",
        a.mode(),
        a.resource,
        a.lockspace
    );
    let (sig, name) = match a.on_lost {
        OnLost::Term => (Some(Signal::TERM), "SIGTERM"),
        OnLost::Kill => (Some(Signal::KILL), "SIGKILL"),
        OnLost::None => (None, ""),
    };
    match (sig, child_pid(child)) {
        (Some(sig), Some(pid)) => {
            say(format_args!(
                "{what}; sending {name} to {} (pid {})",
                a.argv()[0],
                child.id()
            ));
            if let Err(e) = rustix::process::kill_process(pid, sig) {
                log::debug!("cannot signal {pid:?}: {e}");
            }
        }
        _ => say(format_args!(
            "{what}; {} (pid {}) runs on (--on-lost none)",
            a.argv()[0],
            child.id()
        )),
    }
}
