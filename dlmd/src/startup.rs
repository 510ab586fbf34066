//! Finding and claiming the socket.
//!
//! The path comes from [`socket_path`]: `--socket`, then `DLM_SOCKET`,
//! then the scope's default (the same rules as the client library's
//! [`dlm_proto::paths`]).
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
//!
//! Before any of that, the socket's directory must pass
//! [`dlm_proto::trust::check_socket_dir`], the same check the clients make: a
//! directory of another user's, or one that others could write to, is
//! refused with a message that says what to do.

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
/// `scope`. A relative `DLM_SOCKET` is refused, as the clients refuse it
/// (it would name another socket in each working directory); a relative
/// `--socket` is taken from the current directory.
pub fn socket_path(flag: Option<PathBuf>, scope: Scope) -> Result<PathBuf, String> {
    if let Some(p) = flag {
        return Ok(p);
    }
    if let Some(p) = std::env::var_os("DLM_SOCKET").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_absolute() {
            return Err(format!(
                "DLM_SOCKET={} is a relative path: give the socket's absolute path",
                p.display()
            ));
        }
        return Ok(p);
    }
    Ok(match scope {
        Scope::System => PathBuf::from(dlm_proto::paths::SYSTEM_SOCKET),
        Scope::User => dlm_proto::paths::user_socket_path(),
    })
}

/// A bound socket, and the lock that makes it ours.
#[derive(Debug)]
pub struct Claimed {
    /// The listening socket (blocking; the server makes it non-blocking).
    pub listener: UnixListener,
    /// What to undo when the daemon stops (nothing for a socket the
    /// service manager passed: it stays its owner's).
    pub guard: Option<SocketGuard>,
}

/// The socket file and the lock, until the daemon stops.
#[derive(Debug)]
pub struct SocketGuard {
    path: PathBuf,
    /// Device and inode of the socket file we bound, so that we only ever
    /// remove our own.
    ident: Option<(u64, u64)>,
    lock: Locked,
}

impl SocketGuard {
    /// Remove the socket (if it is still ours) and the lock file, then
    /// drop the lock.
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
        self.lock.remove();
    }
}

/// The lock file, locked by us.
///
/// It is removed when the daemon stops, while still locked, so that no
/// `.lock` file is left behind. A starter may have opened it just before
/// and then get the lock on a file that no longer has a name, so every
/// starter checks, once it holds the lock, that the path still names the
/// file it locked, and starts over if not: two starters never both think
/// they hold the lock.
#[derive(Debug)]
struct Locked {
    path: PathBuf,
    file: File,
}

impl Locked {
    /// Whether the path still names the file we hold.
    fn current(&self) -> bool {
        match (self.file.metadata(), fs::symlink_metadata(&self.path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }

    /// Remove the lock file if it is still ours, then unlock it.
    fn remove(self) {
        if self.current() {
            match fs::remove_file(&self.path) {
                Ok(()) => log::debug!("removed {}", self.path.display()),
                Err(e) => log::warn!("cannot remove {}: {e}", self.path.display()),
            }
        }
    }
}

/// Open the lock file (made 0600 if missing).
fn open_lock(lock_path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(lock_path)
        .map_err(|e| format!("cannot open the lock file {}: {e}", lock_path.display()))
}

/// How a starter fared with the lock file.
enum Lockout {
    /// We hold it.
    Held(Locked),
    /// A daemon answers on the socket.
    Answered,
}

/// Take the lock file: at once, or once its holder has gone (or answers
/// on the socket, which makes this starter redundant).
fn take_lock(path: &Path, lock_path: &Path) -> Result<Lockout, String> {
    let deadline = Instant::now() + WINNER_TIMEOUT;
    let mut waited = false;
    loop {
        let file = open_lock(lock_path)?;
        loop {
            if try_lock(&file, lock_path)? {
                break;
            }
            if !waited {
                log::debug!(
                    "{} is held by another dlmd; waiting for it to answer",
                    lock_path.display()
                );
                waited = true;
            }
            if UnixStream::connect(path).is_ok() {
                return Ok(Lockout::Answered);
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
        let locked = Locked {
            path: lock_path.to_path_buf(),
            file,
        };
        if locked.current() {
            return Ok(Lockout::Held(locked));
        }
        // The daemon that held it removed it as it stopped: try the new one.
        log::debug!("{} was removed while we waited; again", lock_path.display());
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
    let lock = match take_lock(path, &lock_path)? {
        Lockout::Held(l) => l,
        Lockout::Answered => return Ok(Claim::AlreadyRunning),
    };
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
        guard: Some(SocketGuard {
            path: path.to_path_buf(),
            ident,
            lock,
        }),
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

/// Make the socket's directory if it is missing (mode 0700; 0755 for the
/// system daemon, whose socket every user must reach), then refuse it
/// unless it passes [`dlm_proto::trust::check_socket_dir`], the check every
/// client makes too: the default directory and an explicit `--socket`'s
/// alike.
fn prepare_dir(path: &Path, scope: Scope) -> Result<(), String> {
    let dir = dlm_proto::trust::socket_dir(path);
    let mode = match scope {
        Scope::System => 0o755,
        Scope::User => 0o700,
    };
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(&dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
    }
    dlm_proto::trust::check_socket_dir(&dir, rustix::process::getuid().as_raw()).map_err(
        |e| match e {
            dlm_proto::Error::UntrustedSocket(u) => u.to_string(),
            other => format!("cannot inspect {}: {other}", dir.display()),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_over_everything() {
        let p = socket_path(Some(PathBuf::from("/x/y.sock")), Scope::System);
        assert_eq!(p, Ok(PathBuf::from("/x/y.sock")));
    }

    #[test]
    fn lock_file_sits_next_to_the_socket() {
        assert_eq!(
            lock_path(Path::new("/run/dlm/dlmd.sock")),
            PathBuf::from("/run/dlm/dlmd.sock.lock")
        );
    }

    #[test]
    fn socket_dirs_are_made_private_and_checked() {
        let base = std::env::temp_dir().join(format!("dlmd-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(&base).expect("temp dir");
        fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).expect("chmod");
        let d = base.join("private").join("run");
        let sock = d.join("dlmd.sock");
        assert_eq!(prepare_dir(&sock, Scope::User), Ok(()));
        let mode = fs::metadata(&d).expect("created").mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(prepare_dir(&sock, Scope::User), Ok(()), "an existing one");
        fs::set_permissions(&d, fs::Permissions::from_mode(0o770)).expect("chmod");
        let e = prepare_dir(&sock, Scope::User).expect_err("group-writable");
        assert!(e.contains("other users can write to it"), "{e}");
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).expect("chmod");
        let f = base.join("file");
        fs::write(&f, b"").expect("file");
        let e = prepare_dir(&f.join("dlmd.sock"), Scope::User).expect_err("not a directory");
        assert!(e.contains("not a directory"), "{e}");
        let _ = fs::remove_dir_all(&base);
    }
}
