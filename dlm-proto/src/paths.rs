//! Where the fallback daemon listens, and starting one on demand.
//!
//! The socket path is chosen in this order:
//! 1. an explicit path (`dlmd --socket`, `dlm::DlmBuilder::socket`);
//! 2. the `DLM_SOCKET` environment variable;
//! 3. for root, the system daemon's `/run/dlm/dlmd.sock`;
//! 4. otherwise the per-user daemon's `$XDG_RUNTIME_DIR/dlm/dlmd.sock`, or
//!    `/tmp/dlm-<uid>/dlmd.sock` when `XDG_RUNTIME_DIR` is unset.
//!
//! Whichever it is, the client trusts it only if its directory passes
//! [`check_socket_dir`](crate::trust::check_socket_dir) (the user's or
//! root's, writable by nobody else, and so are the directories above it)
//! and the process answering runs as the user or root; `dlmd` refuses to
//! bind in a directory that fails the same check. See [`crate::trust`].
//!
//! # When the per-user directory is taken
//!
//! `/tmp/dlm-<uid>` is a name any local user can create first. If someone
//! else has (or has made it writable to others), the client does not try
//! another location: it fails at once with
//! [`Error::UntrustedSocket`], whose message names the directory, its
//! owner and mode, and the fixes: remove the directory (its owner or root
//! can), or set `XDG_RUNTIME_DIR` (as a login session does) or
//! `DLM_SOCKET` to a directory of the user's own. No daemon is started,
//! and nothing waits for one. A fallback location would need a pointer
//! that every client of the user finds and nobody else can plant; a
//! private directory that is already the standard (`XDG_RUNTIME_DIR`) is
//! that, so the fix is left to it.

use std::path::{Path, PathBuf};

use crate::error::{Errno, Error};

/// The system daemon's socket.
pub const SYSTEM_SOCKET: &str = "/run/dlm/dlmd.sock";

/// The per-user daemon's socket for the current user.
pub fn user_socket_path() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("dlm").join("dlmd.sock"),
        _ => PathBuf::from(format!("/tmp/dlm-{}", rustix::process::getuid().as_raw()))
            .join("dlmd.sock"),
    }
}

/// The socket a client should use when none was given explicitly:
/// `DLM_SOCKET`, else the system socket for root, else the user's.
///
/// A relative `DLM_SOCKET` is refused (`EINVAL`, and a warning that says
/// why): it would name another socket in every working directory.
pub fn fallback_socket_path() -> Result<PathBuf, Errno> {
    if let Some(p) = std::env::var_os("DLM_SOCKET").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_absolute() {
            log::warn!(
                "DLM_SOCKET={} is a relative path: give the socket's absolute path",
                p.display()
            );
            return Err(Errno::EINVAL);
        }
        return Ok(p);
    }
    if rustix::process::getuid().is_root() {
        Ok(PathBuf::from(SYSTEM_SOCKET))
    } else {
        Ok(user_socket_path())
    }
}

/// The `dlmd` program to start: `$DLM_DLMD`, else a `dlmd` next to the
/// running program (as in a build tree), else `dlmd` from `PATH`.
pub fn dlmd_program() -> PathBuf {
    if let Some(p) = std::env::var_os("DLM_DLMD").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    for dir in beside_program() {
        let cand = dir.join("dlmd");
        if cand.is_file() {
            return cand;
        }
    }
    PathBuf::from("dlmd")
}

/// The directories [`dlmd_program`] looks in next to the running
/// program: its own, and the one above (a build tree's `deps/`).
fn beside_program() -> Vec<PathBuf> {
    std::env::current_exe()
        .map(|exe| {
            exe.ancestors()
                .skip(1)
                .take(2)
                .map(Path::to_path_buf)
                .collect()
        })
        .unwrap_or_default()
}

/// Where [`dlmd_program`] looked, and how to install dlmd: the message for
/// a `dlmd` that cannot be found.
pub fn dlmd_missing() -> String {
    let beside: Vec<String> = beside_program()
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    format!(
        "cannot start the fallback daemon: no dlmd program found (looked for DLM_DLMD, \
         which is unset; for dlmd in {}; and in PATH). Install it with the rest of dlm-rs \
         (ci/install.sh in the source tree, or `cargo install --path dlmd`), or set \
         DLM_DLMD to its path",
        if beside.is_empty() {
            "the running program's directory".to_string()
        } else {
            beside.join(" and ")
        }
    )
}

/// The log file of the daemon on `socket`, as the client's auto-start
/// names it: next to the socket, with its name's extension replaced by
/// `.log` (`dlmd.sock` logs to `dlmd.log`).
pub fn log_file(socket: &Path) -> PathBuf {
    socket.with_extension("log")
}

/// Start a per-user `dlmd` listening on `socket`, detached from this
/// process (its own process group; it outlives us). Many processes may
/// call this at once: the daemons agree among themselves, through a lock
/// file next to the socket, which one serves; the others exit.
///
/// The daemon logs to [`log_file`] of `socket` (bounded by `dlmd`).
/// When there is no `dlmd` to start, the error is
/// [`Error::DaemonMissing`], which says where it was looked for.
///
/// The socket's directory is made (mode 0700; 0755 for the system
/// daemon's) if it is missing, and must then pass
/// [`check_socket_dir`](crate::trust::check_socket_dir); otherwise no
/// daemon is started and the error is [`Error::UntrustedSocket`].
pub fn start_user_daemon(socket: &Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    let dir = crate::trust::socket_dir(socket);
    // The system daemon's directory must let every user reach the socket
    // (dlmd checks each peer); a user's stays private.
    let mode = if socket == Path::new(SYSTEM_SOCKET) {
        0o755
    } else {
        0o700
    };
    match std::fs::DirBuilder::new()
        .mode(mode)
        .recursive(true)
        .create(&dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e.into()),
    }
    // Made by us just now, or by someone else before: either way it must
    // be fit to hold our socket.
    crate::trust::check_socket_dir(&dir, rustix::process::getuid().as_raw())?;
    let prog = dlmd_program();
    let log = log_file(socket);
    log::info!(
        "starting {} for {} (its log: {})",
        prog.display(),
        socket.display(),
        log.display()
    );
    let mut child = Command::new(&prog)
        .arg("--socket")
        .arg(socket)
        .arg("--exit-if-running")
        .arg("--log-file")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound && std::env::var_os("DLM_DLMD").is_none() {
                return Error::DaemonMissing(dlmd_missing());
            }
            log::warn!("cannot start {}: {e}", prog.display());
            Error::from(e)
        })?;
    // Reap it if it exits (a daemon that lost the race does), without
    // waiting for one that keeps serving.
    std::thread::Builder::new()
        .name("dlmd-reaper".into())
        .spawn(move || {
            let _ = child.wait();
        })
        .map_err(Error::from)?;
    Ok(())
}
