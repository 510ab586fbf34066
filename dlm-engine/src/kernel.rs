//! Which kernel the engine follows: [`KernelModel`].

use std::fmt;
use std::str::FromStr;

/// The kernel generation whose `fs/dlm` rules an [`Engine`](crate::Engine)
/// follows where they differ.
///
/// Linux 6.1 and 6.12 (both shipped by Debian 12) answer the same device
/// writes the same way, but deliver callbacks differently. Read side by
/// side (Debian's `linux-source-6.1` 6.1.192 and `linux-source-6.12`
/// 6.12.118), their `fs/dlm/lock.c` differs only in flag plumbing, the
/// removed lock timeouts, the xarray that replaced the idr (lowest free id
/// from 1 in both) and the multi-node paths; `fs/dlm/ast.c` and
/// `fs/dlm/user.c` differ in the callback queue. In 6.1 a lock with
/// callbacks pending sits on its owner's AST queue holding a reference,
/// with up to six callbacks in an array of its own, and `device_read`
/// decides at read time which to skip and whether to copy the value
/// block. In 6.12 (`dlm_user_add_ast`, `dlm_may_skip_callback`) each
/// callback is a record of its own, made when it is queued, on one FIFO
/// per open fd, with no cap and no reference to the lock. Everything
/// else that differs follows from that:
///
/// - a lock that has ended is freed, and its id is free again, as soon
///   as its last operation completes, not when that completion is read;
///   so a conversion, unlock or cancel of it answers `ENOENT` (6.1,
///   until that completion is read: `EBUSY` for a conversion, `ENOENT`
///   for the others), and a resource whose last lock ended is released
///   at once, value block and all;
/// - skips and value-block copies are decided against the callbacks
///   queued, not those read, and a record carries the addresses, status
///   block pointer and value block bytes of the moment it was queued;
/// - a blocking AST's record carries status 0 and flags 0 (6.1: those of
///   the last completion read);
/// - callbacks come out in the order they were queued, across locks
///   (6.1: every pending callback of the first lock, then the next lock).
///
/// One more difference is in `fs/dlm/lockspace.c`: 6.12's
/// `dlm_new_user_lockspace` refuses `DLM_LSFL_SOFTIRQ` (0x10), a flag for
/// kernel users, with `EINVAL`; 6.1's has no such flag and checks none
/// ([`Registry::create`](crate::Registry::create)).
///
/// Each rule that differs says so where it is implemented, naming the
/// kernel function of each variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum KernelModel {
    /// Linux 6.1 (Debian 12's `linux-image-amd64`).
    #[default]
    V6_1,
    /// Linux 6.12 (Debian 12's `linux-image-6.12-amd64`, Debian 13's
    /// default).
    V6_12,
}

impl KernelModel {
    /// Every model, oldest first.
    pub const ALL: [KernelModel; 2] = [KernelModel::V6_1, KernelModel::V6_12];

    /// The newest model, the default when the running kernel is neither.
    pub const NEWEST: KernelModel = KernelModel::V6_12;

    /// The kernel series: `"6.1"` or `"6.12"`.
    pub fn series(self) -> &'static str {
        match self {
            KernelModel::V6_1 => "6.1",
            KernelModel::V6_12 => "6.12",
        }
    }

    /// The model of a kernel release as `uname -r` prints it
    /// (`6.1.0-57-amd64`, `6.12.117+deb12-amd64`), or `None` for any
    /// other series.
    pub fn from_release(release: &str) -> Option<KernelModel> {
        let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?;
        let minor = parts.next()?;
        match (major, minor) {
            ("6", "1") => Some(KernelModel::V6_1),
            ("6", "12") => Some(KernelModel::V6_12),
            _ => None,
        }
    }

    /// The default for a daemon on a kernel of `release` (`uname -r`):
    /// that kernel's model when it is one of the two, else the newest.
    pub fn for_release(release: Option<&str>) -> KernelModel {
        release
            .and_then(KernelModel::from_release)
            .unwrap_or(KernelModel::NEWEST)
    }
}

impl fmt::Display for KernelModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.series())
    }
}

/// A kernel series that is not one the engine models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKernelModel(pub String);

impl fmt::Display for UnknownKernelModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown kernel model {:?} (the engine models 6.1 and 6.12)",
            self.0
        )
    }
}

impl std::error::Error for UnknownKernelModel {}

impl FromStr for KernelModel {
    type Err = UnknownKernelModel;

    /// `"6.1"` or `"6.12"` (a `v` or `linux-` in front is accepted).
    fn from_str(s: &str) -> Result<KernelModel, UnknownKernelModel> {
        let t = s.trim();
        let t = t.strip_prefix("linux-").unwrap_or(t);
        let t = t.strip_prefix('v').unwrap_or(t);
        match t {
            "6.1" => Ok(KernelModel::V6_1),
            "6.12" => Ok(KernelModel::V6_12),
            _ => Err(UnknownKernelModel(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::KernelModel;

    #[test]
    fn releases_and_series() {
        assert_eq!(
            KernelModel::from_release("6.1.0-57-amd64"),
            Some(KernelModel::V6_1)
        );
        assert_eq!(
            KernelModel::from_release("6.12.117+deb12-amd64"),
            Some(KernelModel::V6_12)
        );
        assert_eq!(KernelModel::from_release("6.10.3"), None);
        assert_eq!(KernelModel::from_release("6.11"), None);
        assert_eq!(KernelModel::from_release("5.10.0-30-amd64"), None);
        assert_eq!(KernelModel::from_release(""), None);
        assert_eq!(
            KernelModel::for_release(Some("6.1.0-57-amd64")),
            KernelModel::V6_1
        );
        assert_eq!(KernelModel::for_release(Some("6.8.0")), KernelModel::V6_12);
        assert_eq!(KernelModel::for_release(None), KernelModel::V6_12);
        for m in KernelModel::ALL {
            assert_eq!(m.series().parse::<KernelModel>(), Ok(m));
            assert_eq!(m.to_string(), m.series());
        }
        assert!("6.2".parse::<KernelModel>().is_err());
        assert!("6.12.1".parse::<KernelModel>().is_err());
    }
}
