//! The holders file, `P.holders` next to the socket `P`: how many
//! lockspace connections are open, kept up to date while the daemon runs
//! and removed when it stops cleanly.
//!
//! A daemon that finds the file at startup knows that its predecessor
//! died with that many connections open, whose clients may come back to
//! replay their locks: it opens a grace period for them (see
//! [`crate::server`]'s replay module). A daemon that stopped cleanly
//! released every lock, and leaves no file.
//!
//! The file lives in the socket's directory, which startup has checked
//! (ours, and no one else may write to it). It is read only if it is a
//! regular file of ours, never through a symbolic link, and written by a
//! rename over it, so a reader sees an old count or a new one.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The longest file accepted (a count, a newline).
const MAX_LEN: u64 = 32;

/// The holders file of one daemon.
#[derive(Debug)]
pub struct Holders {
    path: PathBuf,
    tmp: PathBuf,
    /// The count last written (`None` before the first write).
    written: Option<usize>,
    /// A failure to write it was logged (once, until it works again).
    warned: bool,
}

impl Holders {
    /// The file for socket `socket`.
    pub fn for_socket(socket: &Path) -> Holders {
        let with = |ext: &str| {
            let mut s = socket.as_os_str().to_owned();
            s.push(ext);
            PathBuf::from(s)
        };
        Holders {
            path: with(".holders"),
            tmp: with(".holders.new"),
            written: None,
            warned: false,
        }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The count a daemon that did not stop cleanly left, if any: 0 when
    /// there is no file. A file that is not a regular file of `uid`'s, or
    /// does not hold a count, is ignored with a warning.
    pub fn left_behind(&self, uid: u32) -> usize {
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc_o_nofollow())
            .open(&self.path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return 0,
            Err(e) => {
                log::warn!("ignoring {}: {e}", self.path.display());
                return 0;
            }
        };
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => {
                log::warn!("ignoring {}: {e}", self.path.display());
                return 0;
            }
        };
        if !meta.is_file() || meta.uid() != uid || meta.len() > MAX_LEN {
            log::warn!(
                "ignoring {}: not a small regular file of uid {uid}",
                self.path.display()
            );
            return 0;
        }
        let mut text = String::new();
        if let Err(e) = (&file).take(MAX_LEN).read_to_string(&mut text) {
            log::warn!("ignoring {}: {e}", self.path.display());
            return 0;
        }
        match text.trim().parse::<usize>() {
            Ok(n) => n,
            Err(_) => {
                log::warn!(
                    "ignoring {}: {:?} is not a count",
                    self.path.display(),
                    text.trim()
                );
                0
            }
        }
    }

    /// Record that `n` lockspace connections are open (nothing to do if
    /// that is what the file says already). A failure is logged once and
    /// costs only the grace period after a crash.
    pub fn record(&mut self, n: usize) {
        if self.written == Some(n) {
            return;
        }
        match self.write(n) {
            Ok(()) => {
                self.written = Some(n);
                self.warned = false;
            }
            Err(e) => {
                if !self.warned {
                    log::warn!(
                        "cannot update {} ({e}): after a crash, clients' lock replay gets no \
                         grace period",
                        self.path.display()
                    );
                    self.warned = true;
                }
            }
        }
    }

    fn write(&self, n: usize) -> std::io::Result<()> {
        // A leftover temporary (a crash in the middle of a write) goes.
        match fs::remove_file(&self.tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc_o_nofollow())
            .open(&self.tmp)?;
        writeln!(f, "{n}")?;
        drop(f);
        fs::rename(&self.tmp, &self.path)
    }

    /// The daemon stops cleanly (its locks go with it): no file is left.
    pub fn remove(&self) {
        for p in [&self.path, &self.tmp] {
            match fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => log::warn!("cannot remove {}: {e}", p.display()),
            }
        }
    }
}

/// `O_NOFOLLOW`.
fn libc_o_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_round_trip_and_a_clean_stop_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let uid = rustix::process::getuid().as_raw();
        let mut h = Holders::for_socket(&dir.path().join("dlmd.sock"));
        assert_eq!(h.left_behind(uid), 0, "no file");
        h.record(3);
        assert_eq!(h.left_behind(uid), 3);
        h.record(0);
        assert_eq!(h.left_behind(uid), 0);
        h.record(7);
        assert_eq!(h.left_behind(uid), 7);
        h.remove();
        assert!(!h.path().exists());
        assert_eq!(h.left_behind(uid), 0);
    }

    #[test]
    fn ignores_what_is_not_a_count_of_ours() {
        let dir = tempfile::tempdir().unwrap();
        let uid = rustix::process::getuid().as_raw();
        let h = Holders::for_socket(&dir.path().join("dlmd.sock"));
        fs::write(h.path(), "many\n").unwrap();
        assert_eq!(h.left_behind(uid), 0, "not a number");
        fs::write(h.path(), "9".repeat(100)).unwrap();
        assert_eq!(h.left_behind(uid), 0, "too long");
        fs::remove_file(h.path()).unwrap();
        let target = dir.path().join("elsewhere");
        fs::write(&target, "5\n").unwrap();
        std::os::unix::fs::symlink(&target, h.path()).unwrap();
        assert_eq!(h.left_behind(uid), 0, "a symbolic link is not followed");
        assert_eq!(h.left_behind(uid + 1), 0);
        fs::remove_file(h.path()).unwrap();
        fs::write(h.path(), "5\n").unwrap();
        assert_eq!(h.left_behind(uid + 1), 0, "another uid's");
        assert_eq!(h.left_behind(uid), 5);
    }
}
