//! `dlm daemon status` and `dlm daemon stop`: the fallback daemon that
//! serves this user's socket (`DLM_SOCKET`, else root's system socket or
//! the user's own; see `dlm_proto::paths`).
//!
//! The daemon is found by its socket, never by name: its pid is the one
//! the socket's peer credentials (`SO_PEERCRED`) report, after the same
//! trust checks every client makes. `stop` opens a pidfd for that pid,
//! makes sure the daemon still answers on the connection it came from
//! (so the pid cannot have been handed to another process in between),
//! sends SIGTERM through the pidfd, and waits, bounded, for it to exit.
//! Other daemons of the same uid are never touched.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dlm::{Backend, Dlm};
use rustix::process::{Pid, PidfdFlags, Signal};
use serde_json::json;

use crate::exit::{self, Failure};
use crate::Res;

/// How long `dlm daemon stop` waits for the daemon to exit.
const STOP_BOUND: Duration = Duration::from_secs(10);

/// `dlm daemon ...`.
#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Show the daemon that serves this user's socket: pid, socket, log
    /// file, uptime, lockspaces and locks. Exits 69 if none answers.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop the daemon that serves this user's socket (SIGTERM to the pid
    /// the socket reports; its locks are released), and wait for it to
    /// exit. Nothing to stop is not an error.
    Stop,
}

/// The socket this user's commands use.
fn socket() -> Res<PathBuf> {
    dlm_proto::paths::fallback_socket_path()
        .map_err(|e| Failure::usage(format!("cannot tell which socket to use: {e}")).into())
}

/// Connect without starting a daemon: `Ok(None)` if none answers.
fn connect(socket: &Path) -> Res<Option<Dlm>> {
    match Dlm::builder()
        .backend(Backend::Fallback)
        .socket(socket)
        .autostart(false)
        .open()
    {
        Ok(d) => Ok(Some(d)),
        Err(dlm::Error::DaemonUnavailable(..)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Seconds since the process started, from `/proc/PID/stat`.
fn uptime(pid: i32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // Field 22 (starttime) is the 20th after the name.
    let start: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let boot = std::fs::read_to_string("/proc/uptime").ok()?;
    let now: f64 = boot.split_whitespace().next()?.parse().ok()?;
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    Some((now - start as f64 / ticks).max(0.0))
}

/// `1d 2h 3m 4s`, the larger units only when they are not 0.
fn human(secs: f64) -> String {
    let s = secs as u64;
    let (d, h, m, s) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m {s}s"),
        _ => format!("{d}d {h}h {m}m {s}s"),
    }
}

/// `dlm daemon ...`.
pub fn run(cmd: Cmd) -> Res<u8> {
    let socket = socket()?;
    match cmd {
        Cmd::Status { json } => status(&socket, json),
        Cmd::Stop => stop(&socket),
    }
}

fn status(socket: &Path, json: bool) -> Res<u8> {
    let log = dlm_proto::paths::log_file(socket);
    let log = log.exists().then_some(log);
    let Some(dlm) = connect(socket)? else {
        if json {
            let v = json!({ "running": false, "socket": socket.display().to_string() });
            out!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            out!(
                "dlmd: not running (no daemon answers at {})",
                socket.display()
            );
            if let Some(l) = &log {
                out!("last log: {}", l.display());
            }
        }
        return Ok(exit::UNAVAILABLE);
    };
    let pid = dlm.daemon_pid();
    let up = pid.and_then(uptime);
    let spaces = dlm.lockspaces()?;
    let info = dlm.daemon_info()?;
    let locks: usize = spaces.iter().map(|s| s.locks).sum();
    let connections: usize = spaces.iter().map(|s| s.connections).sum();
    if json {
        let v = json!({
            "running": true,
            "pid": pid,
            "socket": socket.display().to_string(),
            "log_file": log.as_deref().map(|p| p.display().to_string()),
            "uptime_secs": up.map(|u| u.round() as u64),
            "lockspaces": spaces.len(),
            "locks": locks,
            "connections": connections,
            "kernel_model": info.as_ref().map(|i| i.kernel_model.clone()),
            "kernel_model_source": info.as_ref().map(|i| i.kernel_model_source.clone()),
        });
        out!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(exit::OK);
    }
    match pid {
        Some(pid) => out!("dlmd: running, pid {pid}"),
        None => out!("dlmd: running (its pid is not visible from here)"),
    }
    out!("socket: {}", socket.display());
    match &log {
        Some(l) => out!("log: {}", l.display()),
        None => out!("log: none next to the socket (started without dlm's --log-file)"),
    }
    if let Some(u) = up {
        out!("uptime: {}", human(u));
    }
    match &info {
        Some(i) => out!(
            "kernel model: Linux {} ({})",
            i.kernel_model,
            crate::show::model_source(&i.kernel_model_source)
        ),
        None => out!("kernel model: not reported (a dlmd from before --kernel-model: Linux 6.1)"),
    }
    out!(
        "lockspaces: {} ({locks} locks, {connections} lockspace connections)",
        spaces.len()
    );
    Ok(exit::OK)
}

fn stop(socket: &Path) -> Res<u8> {
    let Some(dlm) = connect(socket)? else {
        out!("no dlmd answers at {}: nothing to stop", socket.display());
        return Ok(exit::OK);
    };
    let pid = dlm.daemon_pid().and_then(Pid::from_raw).ok_or_else(|| {
        Failure::new(
            exit::UNAVAILABLE,
            format!(
                "the daemon at {} does not show its pid (another pid namespace?): \
                     stop it where it was started",
                socket.display()
            ),
        )
    })?;
    let pidfd = rustix::process::pidfd_open(pid, PidfdFlags::empty()).map_err(|e| {
        Failure::new(
            exit::OSERR,
            format!(
                "cannot open a pidfd for dlmd pid {}: {e}",
                pid.as_raw_nonzero()
            ),
        )
    })?;
    // Still answering on the connection that reported the pid: the pidfd
    // is that daemon's, not a process that got the pid since.
    dlm.version()?;
    rustix::process::pidfd_send_signal(&pidfd, Signal::TERM).map_err(|e| {
        let code = if e == rustix::io::Errno::PERM {
            exit::NOPERM
        } else {
            exit::OSERR
        };
        Failure::new(
            code,
            format!(
                "cannot send SIGTERM to dlmd pid {}: {e}",
                pid.as_raw_nonzero()
            ),
        )
    })?;
    drop(dlm);
    let deadline = Instant::now() + STOP_BOUND;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::new(
                exit::OSERR,
                format!(
                    "dlmd pid {} did not exit within {} s of SIGTERM",
                    pid.as_raw_nonzero(),
                    STOP_BOUND.as_secs()
                ),
            )
            .into());
        }
        let ts = rustix::event::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [rustix::event::PollFd::new(
            &pidfd,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(n) if n > 0 => break,
            Ok(_) | Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    out!(
        "stopped dlmd pid {} (socket {})",
        pid.as_raw_nonzero(),
        socket.display()
    );
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptimes_read_well() {
        assert_eq!(human(5.2), "5s");
        assert_eq!(human(65.0), "1m 5s");
        assert_eq!(human(3600.0 * 2.0 + 61.0), "2h 1m 1s");
        assert_eq!(human(86400.0 + 1.0), "1d 0h 0m 1s");
        let me = std::process::id() as i32;
        assert!(uptime(me).is_some_and(|u| u < 86400.0 * 365.0));
    }
}
