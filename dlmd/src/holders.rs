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
//! A daemon that dies in its own grace period passes on, besides the
//! count, how many of them are connections of an earlier daemon that
//! never came back, and when the grace period opened for those ends
//! (`N W D`: `W` of the `N`, until `D` milliseconds of `CLOCK_BOOTTIME`).
//! Without it a client that never returns (its process died, or it
//! closed the lockspace while no daemon was there) would make every
//! daemon killed within its grace period start a full one again, and
//! under repeated kills new requests would be held for ever.
//!
//! The file lives in the socket's directory, which startup has checked
//! (ours, and no one else may write to it). It is read only if it is a
//! regular file of ours, never through a symbolic link, and written by a
//! rename over it, so a reader sees an old count or a new one.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest file accepted (three numbers, a newline).
const MAX_LEN: u64 = 64;

/// What a daemon that did not stop cleanly left in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeftBehind {
    /// Lockspace connections that were open (or still awaited) when it
    /// died.
    pub open: usize,
    /// Of those, the ones an earlier daemon's grace period was waiting
    /// for, and how long that period had still to run (from now).
    pub overdue: Option<Overdue>,
}

/// Connections awaited since an earlier daemon's death (see
/// [`LeftBehind::overdue`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overdue {
    pub count: usize,
    /// What is left of their grace period (zero if it is over).
    pub left: Duration,
}

/// `CLOCK_BOOTTIME` in milliseconds: one clock for every process of this
/// boot, that goes on while the machine sleeps.
fn boot_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    (t.tv_sec.max(0) as u64)
        .saturating_mul(1000)
        .saturating_add(t.tv_nsec.max(0) as u64 / 1_000_000)
}

/// The holders file of one daemon.
#[derive(Debug)]
pub struct Holders {
    path: PathBuf,
    tmp: PathBuf,
    /// What was last written (`None` before the first write).
    written: Option<(usize, Option<(usize, u64)>)>,
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

    /// What a daemon that did not stop cleanly left, if anything: nothing
    /// open when there is no file. A file that is not a regular file of
    /// `uid`'s, or does not hold a count, is ignored with a warning; so is
    /// an overdue part that makes no sense (more than the count), and a
    /// deadline further off than `bound` is cut to `bound`.
    pub fn left_behind(&self, uid: u32, bound: Duration) -> LeftBehind {
        let Some(text) = self.read(uid) else {
            return LeftBehind::default();
        };
        let ignore = |why: &str| {
            log::warn!("ignoring {}: {why}", self.path.display());
            LeftBehind::default()
        };
        let nums: Vec<u64> = match text
            .split_ascii_whitespace()
            .map(str::parse::<u64>)
            .collect::<Result<_, _>>()
        {
            Ok(v) => v,
            Err(_) => return ignore(&format!("{:?} is not a count", text.trim())),
        };
        let open = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        match nums[..] {
            [n] => LeftBehind {
                open: open(n),
                overdue: None,
            },
            [n, w, _] if w == 0 || w > n => {
                ignore(&format!("{:?}: bad overdue count", text.trim()))
            }
            [n, w, until] => {
                let left = Duration::from_millis(until.saturating_sub(boot_ms())).min(bound);
                LeftBehind {
                    open: open(n),
                    overdue: Some(Overdue {
                        count: open(w),
                        left,
                    }),
                }
            }
            _ => ignore(&format!("{:?} is not a count", text.trim())),
        }
    }

    /// The file's text, if it is a small regular file of `uid`'s.
    fn read(&self, uid: u32) -> Option<String> {
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc_o_nofollow())
            .open(&self.path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return None,
            Err(e) => {
                log::warn!("ignoring {}: {e}", self.path.display());
                return None;
            }
        };
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => {
                log::warn!("ignoring {}: {e}", self.path.display());
                return None;
            }
        };
        if !meta.is_file() || meta.uid() != uid || meta.len() > MAX_LEN {
            log::warn!(
                "ignoring {}: not a small regular file of uid {uid}",
                self.path.display()
            );
            return None;
        }
        let mut text = String::new();
        if let Err(e) = (&file).take(MAX_LEN).read_to_string(&mut text) {
            log::warn!("ignoring {}: {e}", self.path.display());
            return None;
        }
        Some(text)
    }

    /// Record that `n` lockspace connections are open or awaited, of
    /// which `overdue` are awaited since an earlier daemon died, until
    /// the `Instant` given (nothing to do if that is what the file says
    /// already). A failure is logged once and costs only the grace period
    /// after a crash.
    pub fn record(&mut self, n: usize, overdue: Option<(usize, Instant)>) {
        let overdue = overdue.filter(|&(w, _)| w > 0 && w <= n).map(|(w, until)| {
            let left = until.saturating_duration_since(Instant::now());
            (w, boot_ms().saturating_add(left.as_millis() as u64))
        });
        let what = (n, overdue);
        if self.written == Some(what) {
            return;
        }
        match self.write(what) {
            Ok(()) => {
                self.written = Some(what);
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

    fn write(&self, (n, overdue): (usize, Option<(usize, u64)>)) -> std::io::Result<()> {
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
        match overdue {
            None => writeln!(f, "{n}")?,
            Some((w, until)) => writeln!(f, "{n} {w} {until}")?,
        }
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

    const BOUND: Duration = Duration::from_secs(10);

    fn open(n: usize) -> LeftBehind {
        LeftBehind {
            open: n,
            overdue: None,
        }
    }

    #[test]
    fn counts_round_trip_and_a_clean_stop_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let uid = rustix::process::getuid().as_raw();
        let mut h = Holders::for_socket(&dir.path().join("dlmd.sock"));
        assert_eq!(h.left_behind(uid, BOUND), open(0), "no file");
        h.record(3, None);
        assert_eq!(h.left_behind(uid, BOUND), open(3));
        h.record(0, None);
        assert_eq!(h.left_behind(uid, BOUND), open(0));
        h.record(7, None);
        assert_eq!(h.left_behind(uid, BOUND), open(7));
        h.remove();
        assert!(!h.path().exists());
        assert_eq!(h.left_behind(uid, BOUND), open(0));
    }

    #[test]
    fn overdue_connections_keep_their_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let uid = rustix::process::getuid().as_raw();
        let mut h = Holders::for_socket(&dir.path().join("dlmd.sock"));
        h.record(5, Some((2, Instant::now() + Duration::from_secs(4))));
        let l = h.left_behind(uid, BOUND);
        assert_eq!(l.open, 5);
        let o = l.overdue.expect("overdue part");
        assert_eq!(o.count, 2);
        assert!(o.left <= Duration::from_secs(4), "{o:?}");
        assert!(o.left > Duration::from_secs(2), "{o:?}");
        // One further off than the bound is cut to it.
        h.record(5, Some((2, Instant::now() + Duration::from_secs(60))));
        assert_eq!(
            h.left_behind(uid, BOUND).overdue.expect("overdue").left,
            BOUND
        );
        // A deadline gone by leaves nothing of the period.
        fs::write(h.path(), "5 2 1\n").unwrap();
        assert_eq!(
            h.left_behind(uid, BOUND).overdue,
            Some(Overdue {
                count: 2,
                left: Duration::ZERO
            })
        );
        // No overdue part at all, or more than the count: not recorded.
        h.record(4, Some((0, Instant::now())));
        assert_eq!(h.left_behind(uid, BOUND), open(4));
        h.record(4, Some((9, Instant::now())));
        assert_eq!(h.left_behind(uid, BOUND), open(4));
    }

    #[test]
    fn ignores_what_is_not_a_count_of_ours() {
        let dir = tempfile::tempdir().unwrap();
        let uid = rustix::process::getuid().as_raw();
        let h = Holders::for_socket(&dir.path().join("dlmd.sock"));
        for bad in [
            "many\n",
            "3 4 100\n",
            "3 0 100\n",
            "3 1\n",
            "1 2 3 4\n",
            "-1\n",
        ] {
            fs::write(h.path(), bad).unwrap();
            assert_eq!(h.left_behind(uid, BOUND), open(0), "{bad:?}");
        }
        fs::write(h.path(), "9".repeat(100)).unwrap();
        assert_eq!(h.left_behind(uid, BOUND), open(0), "too long");
        fs::remove_file(h.path()).unwrap();
        let target = dir.path().join("elsewhere");
        fs::write(&target, "5\n").unwrap();
        std::os::unix::fs::symlink(&target, h.path()).unwrap();
        assert_eq!(
            h.left_behind(uid, BOUND),
            open(0),
            "a symbolic link is not followed"
        );
        assert_eq!(h.left_behind(uid + 1, BOUND), open(0));
        fs::remove_file(h.path()).unwrap();
        fs::write(h.path(), "5\n").unwrap();
        assert_eq!(h.left_behind(uid + 1, BOUND), open(0), "another uid's");
        assert_eq!(h.left_behind(uid, BOUND), open(5));
    }
}
