//! Lock replay after a restart, and the grace period that protects it.
//!
//! A daemon that died leaves its [`Holders`](crate::holders::Holders)
//! file: how many lockspace connections were open. Its successor opens a
//! grace period for their clients, which reconnect with
//! [`HELLO_REPLAY`](wire::HELLO_REPLAY), re-create their lockspaces, send
//! a `Replay` frame for each lock they hold and then `ReplayDone`.
//!
//! During the grace period the daemon grants nothing new: the first
//! device write (a request, conversion, unlock or purge) of any lockspace
//! connection is held, with everything the connection sends after it,
//! until the period ends. Replays, control requests (a lockspace is
//! re-created before its locks are replayed), queries and reads go on.
//! So no new request can take a lock that a client still has to replay.
//! The period ends when as many connections have said `ReplayDone` as the
//! file counted, or after `--grace-period`, whichever comes first (or,
//! once all but the connections an earlier daemon already awaited have
//! replayed, at the end of the grace period first opened for those: see
//! [`crate::holders`]); then
//! every lockspace grants what the replayed locks let through, with the
//! blocking callbacks they call for (the kernel's `dlm_recover_grant`),
//! and the held writes are carried out in the order they came.
//!
//! Outside a grace period a replay is still taken, and checked the same
//! way: a lock id in use is `EEXIST`, a mode that conflicts with a lock
//! granted now is `EAGAIN` (the client reports such a lock lost). What a
//! replay may claim: any lock id (up to the engine's replay bound) not
//! in use in that lockspace, in any mode that conflicts with no granted
//! lock, on a lockspace the connection was allowed to open. It cannot
//! take or change another connection's lock, and no replay, true or made
//! up, can make two incompatible locks granted: a client that replays a
//! lock it never held gets no more than a request would have given it
//! (it jumps the queue, as replays do, but only while nothing conflicts).

use super::*;
use dlm_proto::replay::Replay;

/// Where a lockspace connection is with its replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReplayState {
    /// It did not ask to replay.
    No,
    /// Its `Hello` had `HELLO_REPLAY`; `Replay` frames are taken.
    Replaying,
    /// It said `ReplayDone`.
    Done,
}

/// The least time connections an earlier daemon awaited are waited for
/// on a new one (see [`Grace::overdue`]).
const OVERDUE_FLOOR: std::time::Duration = std::time::Duration::from_secs(1);

/// An open grace period.
#[derive(Debug)]
pub(super) struct Grace {
    pub(super) started: Instant,
    pub(super) until: Instant,
    /// Connections the previous daemon had open.
    pub(super) expected: usize,
    /// Of `expected`, the connections an earlier daemon's grace period
    /// was still waiting for when it died (see [`crate::holders`]), and
    /// when that period ends: once it has, they are waited for no more.
    pub(super) overdue: usize,
    pub(super) overdue_until: Instant,
    /// Connections that came back (a replaying `Hello`): from then on
    /// they count among the open ones, not the awaited ones.
    pub(super) arrived: usize,
    /// Connections that have said `ReplayDone`.
    pub(super) done: usize,
    /// Locks replayed, and refused.
    pub(super) replayed: usize,
    pub(super) refused: usize,
}

impl Server {
    /// At startup: open a grace period if the previous daemon left
    /// connections behind (and the period is not 0).
    pub(super) fn open_grace(&mut self, now: Instant) {
        let Some(h) = &self.holders else {
            return;
        };
        let behind = h.left_behind(self.config.uid, self.config.grace_period);
        let left = behind.open;
        if left == 0 {
            return;
        }
        log::debug!("{} says {behind:?}", h.path().display());
        if self.config.grace_period.is_zero() {
            log::warn!(
                "the previous dlmd stopped uncleanly with {left} lockspace connection(s) open; \
                 --grace-period is 0, so new requests are not held back while their clients \
                 replay their locks"
            );
            return;
        }
        log::warn!(
            "the previous dlmd stopped uncleanly with {left} lockspace connection(s) open: \
             holding new requests for at most {:.1} s (--grace-period) while their clients \
             replay their locks",
            self.config.grace_period.as_secs_f64()
        );
        let (overdue, overdue_until) = match behind.overdue {
            Some(o) => {
                log::warn!(
                    "{} of them were awaited already by a dlmd that died in its grace period: \
                     they are waited for {:.1} s more at most",
                    o.count,
                    o.left.as_secs_f64()
                );
                (o.count, now + o.left)
            }
            None => (0, now),
        };
        // Clients reconnect within milliseconds of a daemon being there:
        // awaited ones are given at least a moment on this one.
        let overdue_until = overdue_until.max(now + OVERDUE_FLOOR.min(self.config.grace_period));
        self.grace = Some(Grace {
            started: now,
            until: now + self.config.grace_period,
            expected: left,
            overdue,
            overdue_until,
            arrived: 0,
            done: 0,
            replayed: 0,
            refused: 0,
        });
    }

    /// Whether new requests are held now.
    pub(super) fn in_grace(&self) -> bool {
        self.grace.is_some()
    }

    /// A `Replay` frame.
    pub(super) fn replay(&mut self, idx: usize, body: &[u8]) -> Result<i64, Errno> {
        let Some(c) = self.conn(idx) else {
            return Err(Errno::EBADF);
        };
        let (role, state, pid) = (c.role, c.replay, c.cred.pid);
        let Role::Lockspace { ls, owner } = role else {
            if matches!(role, Role::None) {
                self.misuse(idx, "Replay before Hello".into());
                return Err(Errno::ENOTCONN);
            }
            self.misuse(idx, "Replay on the control connection".into());
            return Err(Errno::EINVAL);
        };
        if state != ReplayState::Replaying {
            self.misuse(idx, format!("Replay without a replaying Hello ({state:?})"));
            return Err(Errno::EINVAL);
        }
        let r = match Replay::decode(body) {
            Ok(r) => r,
            Err(e) => {
                self.misuse(idx, format!("bad {}-byte Replay", body.len()));
                return Err(e);
            }
        };
        let got = self.devices.replay(ls, owner, pid, &r);
        match got {
            Ok(()) => {
                log::debug!(
                    "connection {idx} (pid {pid}) replayed lock {:#x} {} on {:?}",
                    r.lkid,
                    r.mode.name(),
                    r.name
                );
            }
            Err(e) => self.peer_log(
                Level::Warn,
                format_args!(
                    "connection {idx} (pid {pid}): replay of lock {:#x} {} on {:?} refused: {e}",
                    r.lkid,
                    r.mode.name(),
                    r.name
                ),
            ),
        }
        if let Some(g) = &mut self.grace {
            match got {
                Ok(()) => g.replayed += 1,
                Err(_) => g.refused += 1,
            }
        }
        got.map(|()| 0)
    }

    /// A `ReplayDone` frame.
    pub(super) fn replay_done(&mut self, idx: usize, body: &[u8]) -> Result<i64, Errno> {
        let Some(c) = self.conn_mut(idx) else {
            return Err(Errno::EBADF);
        };
        if c.replay != ReplayState::Replaying || !body.is_empty() {
            let what = format!(
                "ReplayDone out of place ({:?}, {} bytes)",
                c.replay,
                body.len()
            );
            self.misuse(idx, what);
            return Err(Errno::EINVAL);
        }
        c.replay = ReplayState::Done;
        if let Some(g) = &mut self.grace {
            g.done += 1;
        }
        self.grace_check(Instant::now());
        self.sync_holders();
        Ok(0)
    }

    /// Hold a lockspace connection's `Write` for the end of the grace
    /// period: the connection handles nothing more until then.
    pub(super) fn hold_write(&mut self, idx: usize, body: &[u8]) {
        if let Some(c) = self.conn_mut(idx) {
            c.held_write = Some(body.to_vec());
        }
    }

    /// The grace period ends (`why`): recover the grants, then carry out
    /// the held writes.
    pub(super) fn end_grace(&mut self, why: &str) {
        let Some(g) = self.grace.take() else {
            return;
        };
        log::warn!(
            "grace period over after {:.3} s ({why}): {} of {} connection(s) replayed {} lock(s), \
             {} refused",
            g.started.elapsed().as_secs_f64(),
            g.done,
            g.expected,
            g.replayed,
            g.refused
        );
        self.sync_holders();
        for ls in self.devices.recover_grant_all() {
            self.deliver(ls);
        }
        let held: Vec<usize> = (0..self.conns.len())
            .filter(|&i| self.conn(i).is_some_and(|c| c.held_write.is_some()))
            .collect();
        for idx in held {
            let Some(body) = self.conn_mut(idx).and_then(|c| c.held_write.take()) else {
                continue;
            };
            self.handle_frame(idx, Kind::Write, &body);
            self.mark_ready(idx);
        }
    }

    /// End the grace period if it is over at `now`: every connection
    /// counted has replayed; or its bound is up; or the ones an earlier
    /// daemon awaited are past their own bound and all the others have
    /// replayed.
    pub(super) fn grace_check(&mut self, now: Instant) {
        let Some(g) = &self.grace else {
            return;
        };
        if g.done >= g.expected {
            self.end_grace("every connection that was open has replayed");
        } else if now >= g.until {
            self.end_grace("--grace-period is up");
        } else if g.overdue > 0
            && now >= g.overdue_until
            && g.done >= g.expected.saturating_sub(g.overdue)
        {
            self.end_grace(
                "every connection that was open has replayed but those an earlier dlmd awaited, \
                 whose --grace-period is up",
            );
        }
    }

    /// When the grace period may next end by time, if one is open: its
    /// bound, or before it that of the connections an earlier daemon
    /// awaited.
    pub(super) fn grace_due(&self) -> Option<Instant> {
        self.grace.as_ref().map(|g| {
            if g.overdue > 0 && Instant::now() < g.overdue_until {
                g.overdue_until.min(g.until)
            } else {
                g.until
            }
        })
    }

    /// Keep the holders file's count of lockspace connections true.
    /// `opened`: a lockspace connection opened (`replaying`: one of those
    /// the grace period awaits came back), else one closed.
    pub(super) fn record_holders(&mut self, opened: bool, replaying: bool) {
        if let (true, true, Some(g)) = (opened, replaying, &mut self.grace) {
            g.arrived += 1;
        }
        if opened {
            self.ls_conns += 1;
        } else {
            self.ls_conns = self.ls_conns.saturating_sub(1);
        }
        self.sync_holders();
    }

    /// Write the holders file: the lockspace connections open, and during
    /// a grace period those of the previous daemon not yet replayed (so a
    /// daemon that dies in its grace period leaves them for the next).
    ///
    /// Those not yet replayed are passed on as overdue, with the bound of
    /// this grace period, or the earlier one they inherited if that ends
    /// first, so that daemons killed one after another within their grace
    /// periods do not wait for them for ever.
    pub(super) fn sync_holders(&mut self) {
        let (pending, overdue) = match &self.grace {
            Some(g) => {
                let pending = g.expected.saturating_sub(g.arrived.max(g.done));
                let until = if g.overdue > 0 {
                    g.overdue_until.min(g.until)
                } else {
                    g.until
                };
                (pending, Some((pending, until)))
            }
            None => (0, None),
        };
        let n = self.ls_conns + pending;
        if let Some(h) = &mut self.holders {
            h.record(n, overdue);
        }
    }
}
