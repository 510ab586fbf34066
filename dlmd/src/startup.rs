//! Finding and claiming the socket.
//!
//! The path comes from [`socket_path`]: `--socket`, then `DLM_SOCKET`,
//! then the scope's default (the same rules as the client library's
//! [`dlm::paths`]).
//!
//! Claiming it is safe against concurrent starters (the client library
//! auto-starts a per-user daemon whenever none answers, so several
//! processes may start one at once): each starter first takes an
//! exclusive `flock` on `P.lock` next to the socket `P`, and the winner
//! holds it for as long as it serves. A starter that cannot take the lock
//! waits until the holder answers on the socket (then there is a daemon
//! already) or goes away (then it takes over). The lock holder removes a
//! stale socket (one that refuses connections) before binding, and refuses
//! to start if a daemon it did not know of answers on it.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{flock, FlockOperation, Mode};

/// Which daemon this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The system daemon: serves every user; only root manages lockspaces.
    System,
    /// A per-user daemon: serves its own uid only.
    User,
}

/// How long a starter that lost the lock waits for the winner to answer.
const WINNER_TIMEOUT: Duration = Duration::from_secs(10);

/// The socket to serve: `flag`, else `DLM_SOCKET`, else the default of
/// `scope`.
pub fn socket_path(flag: Option<PathBuf>, scope: Scope) -> PathBuf {
    if let Some(p) = flag {
        return p;
    }
    if let Some(p) = std::env::var_os("DLM_SOCKET").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    match scope {
        Scope::System => PathBuf::from(dlm::paths::SYSTEM_SOCKET),
        Scope::User => dlm::paths::user_socket_path(),
    }
}

/// A bound socket, and the lock that makes it ours.
#[derive(Debug)]
pub struct Claimed {
    /// The listening socket (blocking; the server makes it non-blocking).
    pub listener: UnixListener,
    /// What to undo when the daemon stops.
    pub guard: SocketGuard,
}

/// The socket file and the lock, until the daemon stops.
#[derive(Debug)]
pub struct SocketGuard {
    path: PathBuf,
    /// Device and inode of the socket file we bound, so that we only ever
    /// remove our own.
    ident: Option<(u64, u64)>,
    _lock: File,
}

impl SocketGuard {
    /// Remove the socket (if it is still ours) and drop the lock.
    pub fn release(self) {
        let ours = fs::symlink_metadata(&self.path)
            .map(|m| Some((m.dev(), m.ino())) == self.ident)
            .unwrap_or(false);
        if ours {
            match fs::remove_file(&self.path) {
                Ok(()) => log::debug!("removed {}", self.path.display()),
                Err(e) => log::warn!("cannot remove {}: {e}", self.path.display()),
            }
        }
    }
}

/// The outcome of [`claim`].
#[derive(Debug)]
pub enum Claim {
    /// We serve.
    Bound(Claimed),
    /// Another daemon answers on the socket.
    AlreadyRunning,
}

/// Prepare the socket's directory, take the lock, and bind.
pub fn claim(path: &Path, scope: Scope) -> Result<Claim, String> {
    prepare_dir(path, scope)?;
    let lock_path = lock_path(path);
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| format!("cannot open the lock file {}: {e}", lock_path.display()))?;
    if !try_lock(&lock, &lock_path)? {
        log::debug!(
            "{} is held by another dlmd; waiting for it to answer",
            lock_path.display()
        );
        let deadline = Instant::now() + WINNER_TIMEOUT;
        loop {
            if UnixStream::connect(path).is_ok() {
                return Ok(Claim::AlreadyRunning);
            }
            if try_lock(&lock, &lock_path)? {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "another dlmd holds {} but does not answer on {}",
                    lock_path.display(),
                    path.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // We hold the lock: nobody else is binding now.
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => return Ok(Claim::AlreadyRunning),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                log::info!("removing stale socket {}", path.display());
                fs::remove_file(path)
                    .map_err(|e| format!("cannot remove stale socket {}: {e}", path.display()))?;
            }
            Err(e) => {
                return Err(format!(
                    "{} exists and cannot be probed: {e}",
                    path.display()
                ))
            }
        },
        Ok(_) => {
            return Err(format!(
                "{} exists and is not a socket; not touching it",
                path.display()
            ))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot inspect {}: {e}", path.display())),
    }
    let (umask, perm) = match scope {
        Scope::System => (0o111, 0o666),
        Scope::User => (0o177, 0o600),
    };
    let old = rustix::process::umask(Mode::from_raw_mode(umask));
    let bound = UnixListener::bind(path);
    rustix::process::umask(old);
    let listener = bound.map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(perm))
        .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))?;
    let ident = fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()));
    Ok(Claim::Bound(Claimed {
        listener,
        guard: SocketGuard {
            path: path.to_path_buf(),
            ident,
            _lock: lock,
        },
    }))
}

/// `P.lock` for socket `P`.
fn lock_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// Take the lock without waiting: `Ok(false)` if someone else holds it.
fn try_lock(file: &File, path: &Path) -> Result<bool, String> {
    loop {
        match flock(file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(true),
            Err(rustix::io::Errno::WOULDBLOCK) => return Ok(false),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(format!("cannot lock {}: {e}", path.display())),
        }
    }
}

/// Make sure the socket's directory exists, and that the per-user default
/// directory is private.
fn prepare_dir(path: &Path, scope: Scope) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => return Ok(()),
    };
    let default_user_dir = dlm::paths::user_socket_path()
        .parent()
        .map(Path::to_path_buf);
    if scope == Scope::User && default_user_dir.as_deref() == Some(dir) {
        return ensure_private_dir(dir, rustix::process::getuid().as_raw());
    }
    if dir.exists() {
        return Ok(());
    }
    let mode = match scope {
        Scope::System => 0o755,
        Scope::User => 0o700,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// Create `dir` mode 0700 if it is missing; refuse it if it is not a
/// directory of ours closed to group and others.
pub fn ensure_private_dir(dir: &Path, uid: u32) -> Result<(), String> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => log::debug!("created {}", dir.display()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
    }
    let m =
        fs::symlink_metadata(dir).map_err(|e| format!("cannot inspect {}: {e}", dir.display()))?;
    if !m.file_type().is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    if m.uid() != uid {
        return Err(format!(
            "{} belongs to uid {}, not to us (uid {uid}); refusing to use it",
            dir.display(),
            m.uid()
        ));
    }
    if m.mode() & 0o077 != 0 {
        return Err(format!(
            "{} is open to group or others (mode {:o}); refusing to use it",
            dir.display(),
            m.mode() & 0o7777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_over_everything() {
        let p = socket_path(Some(PathBuf::from("/x/y.sock")), Scope::System);
        assert_eq!(p, PathBuf::from("/x/y.sock"));
    }

    #[test]
    fn lock_file_sits_next_to_the_socket() {
        assert_eq!(
            lock_path(Path::new("/run/dlm/dlmd.sock")),
            PathBuf::from("/run/dlm/dlmd.sock.lock")
        );
    }

    #[test]
    fn private_dirs_are_checked() {
        let base = std::env::temp_dir().join(format!("dlmd-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(&base).expect("temp dir");
        let uid = rustix::process::getuid().as_raw();
        let d = base.join("private");
        assert_eq!(ensure_private_dir(&d, uid), Ok(()));
        let mode = fs::metadata(&d).expect("created").mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(
            ensure_private_dir(&d, uid),
            Ok(()),
            "an existing one is fine"
        );
        fs::set_permissions(&d, fs::Permissions::from_mode(0o750)).expect("chmod");
        assert!(ensure_private_dir(&d, uid).is_err(), "group access");
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).expect("chmod");
        assert!(
            ensure_private_dir(&d, uid.wrapping_add(1)).is_err(),
            "foreign owner"
        );
        let f = base.join("file");
        fs::write(&f, b"").expect("file");
        assert!(ensure_private_dir(&f, uid).is_err(), "not a directory");
        let _ = fs::remove_dir_all(&base);
    }
}
