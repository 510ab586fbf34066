//! Whether a daemon socket can be trusted: its directory, and the process
//! that answers on it.
//!
//! A socket under `/tmp` is reachable by every local user, and so is the
//! name of its directory: another user can create `/tmp/dlm-<uid>` before
//! its owner does and answer there. A client that talked to such a server
//! would hand it every lockspace and resource name, and would believe
//! whatever grants it made up. So before a client sends anything, and
//! before `dlmd` binds, both call the same checks:
//!
//! - [`check_socket_dir`]: the socket's directory is a real directory (not
//!   a symbolic link), owned by the user or by root, and writable by nobody
//!   else. Every directory above it is owned by the user or by root and is
//!   writable by others only if it has the sticky bit (as `/tmp` has), so
//!   that nobody else can rename it away and put another in its place. A
//!   symbolic link on the way is followed only if it belongs to the user
//!   or root, and its target is checked the same way (the rules of
//!   OpenSSH's secure-path check).
//! - [`check_peer`]: once connected, the `SO_PEERCRED` uid of the process
//!   at the other end is the user's own, or root's.
//!
//! A failure is an [`UntrustedSocket`] (inside
//! [`Error::UntrustedSocket`]): it names the path, its owner and its mode,
//! and says what to do about it.
//!
//! Root is trusted throughout: root can read and replace anything anyway,
//! and the system daemon (`/run/dlm`) is root's.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Component, Path, PathBuf};

use crate::error::{Errno, Error, Result};

/// What made a socket untrusted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Distrust {
    /// The socket's directory is not a directory (a symbolic link, a
    /// file, ...).
    NotADirectory,
    /// The path belongs to a user who is neither the caller nor root.
    ForeignOwner,
    /// Users other than its owner can write to the path (for a directory
    /// above the socket's: without the sticky bit).
    WritableByOthers,
    /// The process answering on the socket runs as another user.
    ForeignPeer {
        /// Its pid, as the kernel reports it (0 if it reports none).
        pid: i32,
    },
}

/// A socket that failed [`check_socket_dir`] or [`check_peer`], with all a
/// user needs to put it right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UntrustedSocket {
    /// The socket's directory, as it was given.
    pub dir: PathBuf,
    /// What failed the check: `dir`, a directory or link above it, or
    /// (for [`Distrust::ForeignPeer`]) the socket.
    pub path: PathBuf,
    /// What is wrong with it.
    pub why: Distrust,
    /// The uid that owns `path` (for a peer: the peer's uid).
    pub owner: u32,
    /// That uid's name, if `/etc/passwd` has it.
    pub owner_name: Option<String>,
    /// `path`'s type and mode bits (`st_mode`; 0 for a peer).
    pub mode: u32,
    /// The user the check was made for.
    pub user: u32,
}

impl UntrustedSocket {
    fn error(dir: &Path, path: &Path, why: Distrust, owner: u32, mode: u32, user: u32) -> Error {
        Error::UntrustedSocket(Box::new(UntrustedSocket {
            dir: dir.to_path_buf(),
            path: path.to_path_buf(),
            why,
            owner,
            owner_name: user_name(owner),
            mode,
            user,
        }))
    }

    fn owner_text(&self) -> String {
        match &self.owner_name {
            Some(n) => format!("uid {} ({n})", self.owner),
            None => format!("uid {}", self.owner),
        }
    }

    fn kind_text(&self) -> &'static str {
        match self.mode & libc::S_IFMT {
            libc::S_IFLNK => "a symbolic link",
            libc::S_IFREG => "a regular file",
            libc::S_IFSOCK => "a socket",
            libc::S_IFIFO => "a FIFO",
            libc::S_IFCHR | libc::S_IFBLK => "a device node",
            _ => "not a directory",
        }
    }
}

/// The advice that ends every message.
const ELSEWHERE: &str = "or set XDG_RUNTIME_DIR or DLM_SOCKET to a directory of your own";

impl fmt::Display for UntrustedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        let owner = self.owner_text();
        let mode = self.mode & 0o7777;
        let user = self.user;
        if let Distrust::ForeignPeer { pid } = self.why {
            return write!(
                f,
                "untrusted dlm daemon at {path}: the process answering there (pid {pid}) runs as \
                 {owner}, not as you (uid {user}) or root, and nothing was sent to it; stop it and \
                 remove {path}, {ELSEWHERE}"
            );
        }
        let dir = self.dir.display();
        if self.path == self.dir {
            match self.why {
                Distrust::NotADirectory => write!(
                    f,
                    "untrusted dlm socket directory {dir}: it is {} (owner {owner}, mode {mode:04o}), \
                     not a directory; remove {dir}, {ELSEWHERE}",
                    self.kind_text()
                ),
                Distrust::ForeignOwner => write!(
                    f,
                    "untrusted dlm socket directory {dir}: it belongs to {owner}, not to you \
                     (uid {user}) or root (mode {mode:04o}); remove {dir} (only its owner or root \
                     can), {ELSEWHERE}"
                ),
                _ if mode & STICKY != 0 => write!(
                    f,
                    "untrusted dlm socket directory {dir}: it is shared with other users \
                     (mode {mode:04o}, owner {owner}), who could take the socket's name first; \
                     put the socket in a directory of your own inside it (dlmd makes a missing \
                     one), {ELSEWHERE}"
                ),
                _ => write!(
                    f,
                    "untrusted dlm socket directory {dir}: other users can write to it \
                     (mode {mode:04o}, owner {owner}); run `chmod go-w {dir}`, {ELSEWHERE}"
                ),
            }
        } else {
            match self.why {
                Distrust::NotADirectory => write!(
                    f,
                    "untrusted dlm socket directory {dir}: {path} on its way is {} (owner {owner}, \
                     mode {mode:04o}), not a directory; {ELSEWHERE}",
                    self.kind_text()
                ),
                Distrust::ForeignOwner => write!(
                    f,
                    "untrusted dlm socket directory {dir}: {path} on its way belongs to {owner}, \
                     not to you (uid {user}) or root (mode {mode:04o}), so its owner could replace \
                     what is below it; {ELSEWHERE}"
                ),
                _ => write!(
                    f,
                    "untrusted dlm socket directory {dir}: other users can write to {path} on its \
                     way (mode {mode:04o}, no sticky bit, owner {owner}), so they could replace \
                     what is below it; run `chmod go-w {path}` (or `chmod +t {path}`), {ELSEWHERE}"
                ),
            }
        }
    }
}

impl std::error::Error for UntrustedSocket {}

/// Whether `owner` may own what `user` relies on: `user` itself, or root.
fn trusted_owner(owner: u32, user: u32) -> bool {
    owner == user || owner == 0
}

/// Group- or other-writable.
const WRITABLE_BY_OTHERS: u32 = 0o022;
/// The sticky bit: only an entry's owner may rename or remove it.
const STICKY: u32 = 0o1000;

/// The directory a socket path sits in (`.` for a bare file name).
pub fn socket_dir(socket: &Path) -> PathBuf {
    match socket.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Check that `dir` may hold `user`'s daemon socket: see the [module
/// documentation](self) for the rules.
///
/// `Err(Error::UntrustedSocket(..))` when it may not; `Err(Error::Os(..))`
/// when it cannot be inspected (`ENOENT` when it, or a directory above
/// it, does not exist).
pub fn check_socket_dir(dir: &Path, user: u32) -> Result<()> {
    let abs = std::path::absolute(dir).map_err(Error::from)?;
    let mut comps: Vec<Component<'_>> = abs.components().collect();
    // The last plain name is the directory itself, which is not followed
    // if it is a link; everything before it is walked (and resolved).
    let last = match comps.last() {
        Some(Component::Normal(name)) => {
            let name = name.to_os_string();
            comps.pop();
            Some(name)
        }
        _ => None,
    };
    let mut real = PathBuf::from("/");
    check_above(dir, &real, user)?;
    for c in comps {
        match c {
            Component::Normal(name) => {
                real = step(dir, &real.join(name), user)?;
            }
            Component::ParentDir => {
                // `real` has no links in it, so its parent is the one the
                // kernel would take.
                real.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    let target = match last {
        Some(name) => real.join(name),
        None => real,
    };
    // Whatever led there, the directory is reported as it was given.
    let here = dir;
    let m = lstat(&target)?;
    if !m.file_type().is_dir() {
        return Err(UntrustedSocket::error(
            dir,
            here,
            Distrust::NotADirectory,
            m.uid(),
            m.mode(),
            user,
        ));
    }
    if !trusted_owner(m.uid(), user) {
        return Err(UntrustedSocket::error(
            dir,
            here,
            Distrust::ForeignOwner,
            m.uid(),
            m.mode(),
            user,
        ));
    }
    if m.mode() & WRITABLE_BY_OTHERS != 0 {
        return Err(UntrustedSocket::error(
            dir,
            here,
            Distrust::WritableByOthers,
            m.uid(),
            m.mode(),
            user,
        ));
    }
    Ok(())
}

/// One step down from a checked directory to `next`: check it, following
/// it if it is a link we may follow. Returns where it leads (no links).
fn step(dir: &Path, next: &Path, user: u32) -> Result<PathBuf> {
    let m = lstat(next)?;
    if m.file_type().is_symlink() {
        // The directory holding the link was checked, so only its owner
        // or root could have made it, unless that directory is sticky and
        // shared: then the link's own owner counts.
        if !trusted_owner(m.uid(), user) {
            return Err(UntrustedSocket::error(
                dir,
                next,
                Distrust::ForeignOwner,
                m.uid(),
                m.mode(),
                user,
            ));
        }
        let resolved = std::fs::canonicalize(next).map_err(Error::from)?;
        let mut real = PathBuf::from("/");
        check_above(dir, &real, user)?;
        for c in resolved.components() {
            if let Component::Normal(name) = c {
                real.push(name);
                check_above(dir, &real, user)?;
            }
        }
        return Ok(real);
    }
    check_meta_above(dir, next, &m, user)?;
    Ok(next.to_path_buf())
}

/// Check a directory above the socket's (one with no links in its path).
fn check_above(dir: &Path, path: &Path, user: u32) -> Result<()> {
    let m = lstat(path)?;
    check_meta_above(dir, path, &m, user)
}

fn check_meta_above(dir: &Path, path: &Path, m: &std::fs::Metadata, user: u32) -> Result<()> {
    let why = if !m.file_type().is_dir() {
        Distrust::NotADirectory
    } else if !trusted_owner(m.uid(), user) {
        Distrust::ForeignOwner
    } else if m.mode() & WRITABLE_BY_OTHERS != 0 && m.mode() & STICKY == 0 {
        Distrust::WritableByOthers
    } else {
        return Ok(());
    };
    Err(UntrustedSocket::error(
        dir,
        path,
        why,
        m.uid(),
        m.mode(),
        user,
    ))
}

fn lstat(path: &Path) -> Result<std::fs::Metadata> {
    std::fs::symlink_metadata(path).map_err(Error::from)
}

/// Check that the process at the other end of `stream` (connected to
/// `socket`) runs as `user` or root. Call it before sending anything.
pub fn check_peer(stream: &UnixStream, socket: &Path, user: u32) -> Result<()> {
    let cred = rustix::net::sockopt::socket_peercred(stream)
        .map_err(|e| Error::Os(Errno::from_raw(e.raw_os_error())))?;
    let uid = cred.uid.as_raw();
    if trusted_owner(uid, user) {
        return Ok(());
    }
    Err(UntrustedSocket::error(
        &socket_dir(socket),
        socket,
        Distrust::ForeignPeer {
            pid: cred.pid.as_raw_nonzero().get(),
        },
        uid,
        0,
        user,
    ))
}

/// The name of `uid` in `/etc/passwd`, if it is there.
fn user_name(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        let id: u32 = fields.next()?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    /// A scratch directory under the system's temporary directory.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let p = std::env::temp_dir().join(format!("dlm-trust-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir(&p).expect("scratch dir");
            fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).expect("chmod");
            Scratch(p)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn me() -> u32 {
        rustix::process::getuid().as_raw()
    }

    fn why(r: Result<()>) -> Option<(Distrust, PathBuf)> {
        match r {
            Ok(()) => None,
            Err(Error::UntrustedSocket(u)) => Some((u.why, u.path)),
            Err(e) => panic!("not a trust error: {e}"),
        }
    }

    fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn a_private_directory_passes_and_an_open_one_does_not() {
        let s = Scratch::new("open");
        let d = s.0.join("d");
        fs::create_dir(&d).expect("dir");
        chmod(&d, 0o700);
        assert_eq!(why(check_socket_dir(&d, me())), None);
        chmod(&d, 0o755);
        assert_eq!(why(check_socket_dir(&d, me())), None, "readable is fine");
        for mode in [0o775, 0o757, 0o1777] {
            chmod(&d, mode);
            assert_eq!(
                why(check_socket_dir(&d, me())),
                Some((Distrust::WritableByOthers, d.clone())),
                "mode {mode:o}"
            );
        }
    }

    #[test]
    fn the_owner_must_be_the_user_or_root() {
        let s = Scratch::new("owner");
        let owner = fs::metadata(&s.0).expect("stat").uid();
        let other = if owner == 0 { 4242 } else { owner + 1 };
        let r = check_socket_dir(&s.0, other);
        if owner == 0 {
            assert_eq!(why(r), None, "root is trusted by everyone");
        } else {
            assert_eq!(why(r), Some((Distrust::ForeignOwner, s.0.clone())));
        }
    }

    #[test]
    fn a_link_as_the_directory_is_refused_but_links_above_are_followed() {
        let s = Scratch::new("link");
        let real = s.0.join("real");
        fs::create_dir(&real).expect("dir");
        chmod(&real, 0o700);
        let link = s.0.join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        assert_eq!(
            why(check_socket_dir(&link, me())),
            Some((Distrust::NotADirectory, link.clone()))
        );
        let below = real.join("below");
        fs::create_dir(&below).expect("dir");
        chmod(&below, 0o700);
        assert_eq!(why(check_socket_dir(&link.join("below"), me())), None);
        // The target of a link above is checked too.
        chmod(&real, 0o777);
        assert_eq!(
            why(check_socket_dir(&link.join("below"), me())),
            Some((Distrust::WritableByOthers, real.clone()))
        );
    }

    #[test]
    fn a_parent_writable_by_others_needs_the_sticky_bit() {
        let s = Scratch::new("parent");
        let p = s.0.join("p");
        let d = p.join("d");
        fs::create_dir_all(&d).expect("dirs");
        chmod(&d, 0o700);
        chmod(&p, 0o777);
        assert_eq!(
            why(check_socket_dir(&d, me())),
            Some((Distrust::WritableByOthers, p.clone()))
        );
        chmod(&p, 0o1777);
        assert_eq!(why(check_socket_dir(&d, me())), None, "sticky, as /tmp");
        // `..` is taken from the real path.
        let dotted = d.join("..").join("d");
        assert_eq!(why(check_socket_dir(&dotted, me())), None);
    }

    #[test]
    fn a_missing_directory_is_enoent_and_a_file_is_not_a_directory() {
        let s = Scratch::new("missing");
        let gone = s.0.join("gone");
        match check_socket_dir(&gone, me()) {
            Err(Error::Os(e)) => assert_eq!(e, Errno::ENOENT),
            other => panic!("{other:?}"),
        }
        let f = s.0.join("file");
        fs::write(&f, b"").expect("file");
        assert_eq!(
            why(check_socket_dir(&f, me())),
            Some((Distrust::NotADirectory, f.clone()))
        );
    }

    #[test]
    fn messages_name_the_path_the_owner_and_the_fix() {
        let u = UntrustedSocket {
            dir: PathBuf::from("/tmp/dlm-1000"),
            path: PathBuf::from("/tmp/dlm-1000"),
            why: Distrust::ForeignOwner,
            owner: 1001,
            owner_name: Some("mallory".into()),
            mode: libc::S_IFDIR | 0o755,
            user: 1000,
        };
        assert_eq!(
            u.to_string(),
            "untrusted dlm socket directory /tmp/dlm-1000: it belongs to uid 1001 (mallory), \
             not to you (uid 1000) or root (mode 0755); remove /tmp/dlm-1000 (only its owner or \
             root can), or set XDG_RUNTIME_DIR or DLM_SOCKET to a directory of your own"
        );
        let peer = UntrustedSocket {
            path: PathBuf::from("/tmp/dlm-1000/dlmd.sock"),
            why: Distrust::ForeignPeer { pid: 77 },
            mode: 0,
            owner_name: None,
            ..u
        };
        let text = peer.to_string();
        assert!(
            text.contains("(pid 77) runs as uid 1001, not as you (uid 1000)")
                && text.contains("nothing was sent"),
            "{text}"
        );
        let shared = UntrustedSocket {
            dir: PathBuf::from("/tmp"),
            path: PathBuf::from("/tmp"),
            why: Distrust::WritableByOthers,
            owner: 0,
            owner_name: Some("root".into()),
            mode: libc::S_IFDIR | 0o1777,
            user: 0,
        };
        let text = shared.to_string();
        assert!(
            text.contains("shared with other users (mode 1777")
                && text.contains("a directory of your own inside it")
                && !text.contains("chmod"),
            "{text}"
        );
        let e = Error::UntrustedSocket(Box::new(peer));
        assert_eq!(e.errno(), Errno::EACCES);
    }

    #[test]
    fn root_has_a_name() {
        assert_eq!(user_name(0).as_deref(), Some("root"));
    }
}
