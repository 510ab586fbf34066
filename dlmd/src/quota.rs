//! Who may open one more connection.
//!
//! Three rules, checked when a connection is accepted, before it has said
//! anything:
//!
//! * a uid other than root may have at most `--max-connections-per-user`
//!   connections open (refused with `EUSERS`);
//! * the last [`root_reserve`] slots of the global cap are root's: other
//!   uids are refused with `EMFILE` once the rest are taken;
//! * nobody gets past `--max-connections` (`EMFILE`).
//!
//! So one unprivileged user cannot take the whole daemon, and even many
//! of them together leave root room to look and to clean up. A per-user
//! daemon serves one uid only: there only the global cap applies.

use std::collections::HashMap;
use std::fmt;

use dlm_proto::Errno;

/// The slots of a cap of `max` connections that only root may take: a
/// 32nd of them, at least 1 and at most 64, and none when the cap is a
/// single connection.
pub fn root_reserve(max: usize) -> usize {
    (max / 32).clamp(1, 64).min(max.saturating_sub(1))
}

/// The per-uid quota when none is given: an eighth of the cap, at least 1.
pub fn default_per_user(max: usize) -> usize {
    (max / 8).max(1)
}

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The uid has its quota of connections open.
    UserQuota {
        /// The uid.
        uid: u32,
        /// Its quota (what it has open).
        quota: usize,
    },
    /// Only the slots kept for root are left.
    Reserved {
        /// Connections open.
        open: usize,
        /// Slots kept for root.
        reserve: usize,
    },
    /// The daemon has its maximum of connections open.
    Full {
        /// The maximum.
        max: usize,
    },
}

impl Refusal {
    /// The errno the client's `Hello` gets: `EUSERS` for a uid's quota,
    /// `EMFILE` when the daemon (or its non-root part) is full.
    pub fn errno(&self) -> Errno {
        match self {
            Refusal::UserQuota { .. } => Errno::from_raw(rustix::io::Errno::USERS.raw_os_error()),
            Refusal::Reserved { .. } | Refusal::Full { .. } => {
                Errno::from_raw(rustix::io::Errno::MFILE.raw_os_error())
            }
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::UserQuota { uid, quota } => write!(
                f,
                "uid {uid} has {quota} connections open, its quota (--max-connections-per-user)"
            ),
            Refusal::Reserved { open, reserve } => write!(
                f,
                "{open} connections are open and the last {reserve} are kept for root \
                 (--max-connections)"
            ),
            Refusal::Full { max } => write!(f, "{max} connections are open (--max-connections)"),
        }
    }
}

/// The connections open, by uid, against the limits.
#[derive(Debug)]
pub struct Quotas {
    max: usize,
    /// `None`: no per-uid quota and no reserve (a per-user daemon).
    per_user: Option<usize>,
    reserve: usize,
    open: usize,
    by_uid: HashMap<u32, usize>,
}

impl Quotas {
    /// At most `max` connections; with `per_user`, at most that many per
    /// uid other than root, and [`root_reserve`]`(max)` slots for root.
    pub fn new(max: usize, per_user: Option<usize>) -> Quotas {
        Quotas {
            max,
            per_user,
            reserve: if per_user.is_some() {
                root_reserve(max)
            } else {
                0
            },
            open: 0,
            by_uid: HashMap::new(),
        }
    }

    /// Count one more connection of `uid`, if the rules let it in.
    pub fn admit(&mut self, uid: u32) -> Result<(), Refusal> {
        let mine = self.by_uid.get(&uid).copied().unwrap_or(0);
        if let Some(quota) = self.per_user {
            if uid != 0 && mine >= quota {
                return Err(Refusal::UserQuota { uid, quota });
            }
        }
        if self.open >= self.max {
            return Err(Refusal::Full { max: self.max });
        }
        if uid != 0 && self.open >= self.max - self.reserve {
            return Err(Refusal::Reserved {
                open: self.open,
                reserve: self.reserve,
            });
        }
        self.open += 1;
        self.by_uid.insert(uid, mine + 1);
        Ok(())
    }

    /// A connection of `uid` closed.
    pub fn release(&mut self, uid: u32) {
        match self.by_uid.get_mut(&uid) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                self.by_uid.remove(&uid);
            }
            None => {
                log::error!("a connection of uid {uid} closed that was never counted");
                return;
            }
        }
        self.open -= 1;
    }

    /// Connections open in all.
    pub fn open(&self) -> usize {
        self.open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_and_defaults() {
        assert_eq!(root_reserve(1), 0);
        assert_eq!(root_reserve(2), 1);
        assert_eq!(root_reserve(64), 2);
        assert_eq!(root_reserve(4096), 64);
        assert_eq!(root_reserve(1 << 20), 64);
        assert_eq!(default_per_user(4096), 512);
        assert_eq!(default_per_user(3), 1);
    }

    #[test]
    fn a_uid_gets_its_quota_and_root_its_reserve() {
        let mut q = Quotas::new(10, Some(4));
        assert_eq!(q.reserve, 1);
        for _ in 0..4 {
            assert_eq!(q.admit(1000), Ok(()));
        }
        assert_eq!(
            q.admit(1000),
            Err(Refusal::UserQuota {
                uid: 1000,
                quota: 4
            })
        );
        for _ in 0..4 {
            assert_eq!(q.admit(1001), Ok(()));
        }
        assert_eq!(q.admit(1002), Ok(()));
        // Nine open: the tenth is root's.
        assert_eq!(
            q.admit(1002),
            Err(Refusal::Reserved {
                open: 9,
                reserve: 1
            })
        );
        assert_eq!(q.admit(0), Ok(()));
        assert_eq!(q.admit(0), Err(Refusal::Full { max: 10 }));
        assert_eq!(q.open(), 10);
        q.release(1000);
        assert_eq!(
            q.admit(1000),
            Err(Refusal::Reserved {
                open: 9,
                reserve: 1
            })
        );
        q.release(0);
        assert_eq!(q.admit(1000), Ok(()), "back within its quota");
        assert_eq!(
            q.admit(1000),
            Err(Refusal::UserQuota {
                uid: 1000,
                quota: 4
            })
        );
    }

    #[test]
    fn root_has_no_per_uid_quota() {
        let mut q = Quotas::new(5, Some(1));
        for _ in 0..5 {
            assert_eq!(q.admit(0), Ok(()));
        }
        assert_eq!(q.admit(0), Err(Refusal::Full { max: 5 }));
    }

    #[test]
    fn a_per_user_daemon_has_the_global_cap_only() {
        let mut q = Quotas::new(3, None);
        assert_eq!(q.reserve, 0);
        for _ in 0..3 {
            assert_eq!(q.admit(1000), Ok(()));
        }
        assert_eq!(q.admit(1000), Err(Refusal::Full { max: 3 }));
        q.release(1000);
        q.release(1000);
        q.release(1000);
        assert_eq!(q.open(), 0);
        q.release(1000);
        assert_eq!(q.open(), 0, "a stray release changes nothing");
    }

    #[test]
    fn errnos_and_messages() {
        let quota = Refusal::UserQuota { uid: 7, quota: 2 };
        assert_eq!(quota.errno().raw(), rustix::io::Errno::USERS.raw_os_error());
        assert_eq!(
            quota.to_string(),
            "uid 7 has 2 connections open, its quota (--max-connections-per-user)"
        );
        let full = Refusal::Full { max: 3 };
        assert_eq!(full.errno().raw(), rustix::io::Errno::MFILE.raw_os_error());
        assert!(Refusal::Reserved {
            open: 3,
            reserve: 1
        }
        .to_string()
        .contains("kept for root"));
    }
}
