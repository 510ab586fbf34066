//! Query answers, made a part at a time as the client reads them.
//!
//! An [`Answer`] never holds the whole JSON of a long answer: it keeps a
//! cursor (the next minor or lock id to list) and the JSON made but not
//! yet framed, which is under one part plus one record. The server asks
//! it for the next frame only while little output waits for the
//! connection (see `server.rs`), so a query that is not read costs the
//! daemon a part or two, whatever the number of locks.
//!
//! Each part lists what exists when it is made, from the cursor on, so
//! locks made or ended between parts may or may not appear, and a lock
//! that exists for the whole query appears exactly once; lock ids only
//! grow, so none appears twice (the guarantee documented in
//! [`dlm_proto::query`]). A lockspace that is gone before the answer is
//! finished ends its list there.
//!
//! This module does no I/O: it appends frames to a buffer.

use std::io::Write;

use dlm_proto::wire::{self, Kind};
use dlm_proto::Errno;

use crate::devices::{Cred, Devices, LsId};

/// What an answer lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// Every lockspace this peer may see: a JSON array of `LockspaceInfo`.
    Lockspaces(Cred),
    /// Every lock of a lockspace: a JSON array of `LockInfo`.
    Locks(LsId),
    /// At most `limit` locks of a lockspace: a `LockPage` object.
    Page {
        /// The lockspace.
        ls: LsId,
        /// The most locks to list.
        limit: u32,
    },
    /// The daemon itself: a `DaemonInfo` object, with this kernel model.
    Daemon(dlmd::cli::ModelChoice),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Nothing made yet.
    Start,
    /// Records are being listed; `first` until one is.
    Listing { first: bool },
    /// The JSON is complete (some may still wait in `json`).
    Done,
}

/// One query answer in the making.
#[derive(Debug)]
pub struct Answer {
    subject: Subject,
    /// The next minor or lock id to list; past `u32::MAX` when there is
    /// no more.
    next: u64,
    /// Records listed so far.
    listed: u32,
    stage: Stage,
    /// JSON made and not yet framed.
    json: Vec<u8>,
    /// The `QueryReply` has been handed out.
    finished: bool,
}

impl Answer {
    /// An answer about `subject`, from the first lockspace or lock on.
    pub fn new(subject: Subject) -> Answer {
        Answer {
            subject,
            next: 0,
            listed: 0,
            stage: Stage::Start,
            json: Vec::new(),
            finished: false,
        }
    }

    /// An answer about `subject` that lists only lock ids (or minors)
    /// greater than `after`.
    pub fn after(subject: Subject, after: u32) -> Answer {
        Answer {
            next: u64::from(after) + 1,
            ..Answer::new(subject)
        }
    }

    /// Whether the last frame (the `QueryReply`) has been handed out.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Append the next frame of the answer to `out`: a `QueryPart` with
    /// `piece` bytes of JSON (at most a frame's worth), or the
    /// `QueryReply` with the rest. After the `QueryReply` it appends
    /// nothing.
    pub fn next_frame(
        &mut self,
        devices: &Devices,
        piece: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), Errno> {
        if self.finished {
            return Ok(());
        }
        let piece = piece.clamp(1, wire::MAX_FRAME - 1);
        while self.json.len() < piece && self.stage != Stage::Done {
            self.make(devices, piece).map_err(|e| {
                log::error!("cannot encode a query answer: {e}");
                Errno::ENOMEM
            })?;
        }
        let n = self.json.len().min(piece);
        let last = self.stage == Stage::Done && n == self.json.len();
        let kind = if last {
            Kind::QueryReply
        } else {
            Kind::QueryPart
        };
        wire::put_frame(out, kind, &self.json[..n])?;
        self.json.drain(..n);
        if last {
            self.finished = true;
            self.json = Vec::new();
        }
        Ok(())
    }

    /// Make JSON until `json` holds at least `piece` bytes or the answer
    /// is complete.
    fn make(&mut self, devices: &Devices, piece: usize) -> serde_json::Result<()> {
        match self.stage {
            Stage::Start if matches!(self.subject, Subject::Daemon(_)) => {
                if let Subject::Daemon(choice) = self.subject {
                    let info = dlm_proto::query::DaemonInfo {
                        daemon: format!("dlmd {}", env!("CARGO_PKG_VERSION")),
                        kernel_model: choice.model.series().to_string(),
                        kernel_model_source: choice.source.to_string(),
                    };
                    serde_json::to_writer(&mut self.json, &info)?;
                }
                self.stage = Stage::Done;
            }
            Stage::Start => {
                let open: &[u8] = match self.subject {
                    Subject::Page { .. } => b"{\"locks\":[",
                    _ => b"[",
                };
                self.json.extend_from_slice(open);
                self.stage = Stage::Listing { first: true };
            }
            Stage::Listing { .. } => match self.subject {
                Subject::Lockspaces(_) => self.list_lockspaces(devices, piece)?,
                Subject::Locks(ls) => self.list_locks(devices, ls, u32::MAX, piece)?,
                Subject::Page { ls, limit } => self.list_locks(devices, ls, limit, piece)?,
                Subject::Daemon(_) => self.stage = Stage::Done,
            },
            Stage::Done => {}
        }
        Ok(())
    }

    fn list_lockspaces(&mut self, devices: &Devices, piece: usize) -> serde_json::Result<()> {
        let Ok(first) = u32::try_from(self.next) else {
            return self.close(0);
        };
        let Subject::Lockspaces(viewer) = &self.subject else {
            return self.close(0);
        };
        // A cheap copy (the groups are shared), so the answer can grow.
        let viewer = viewer.clone();
        let mut records = devices.lockspace_records(first, &viewer);
        while self.json.len() < piece {
            let Some(r) = records.next() else {
                return self.close(0);
            };
            self.next = u64::from(r.minor) + 1;
            self.separate();
            serde_json::to_writer(&mut self.json, &r)?;
        }
        Ok(())
    }

    fn list_locks(
        &mut self,
        devices: &Devices,
        ls: LsId,
        limit: u32,
        piece: usize,
    ) -> serde_json::Result<()> {
        let Ok(first) = u32::try_from(self.next) else {
            return self.close(0);
        };
        let Some(mut records) = devices.lock_records(ls, first) else {
            return self.close(0);
        };
        while self.json.len() < piece {
            if self.listed >= limit {
                let more = devices.count_locks_from(ls, first_unlisted(self.next));
                return self.close(more);
            }
            let Some(r) = records.next() else {
                return self.close(0);
            };
            self.next = u64::from(r.lkid) + 1;
            self.separate();
            serde_json::to_writer(&mut self.json, &r)?;
        }
        Ok(())
    }

    /// Count one more record, and put a comma before it unless it is the
    /// first.
    fn separate(&mut self) {
        if let Stage::Listing { first: false } = self.stage {
            self.json.push(b',');
        }
        self.stage = Stage::Listing { first: false };
        self.listed = self.listed.saturating_add(1);
    }

    /// End the JSON; `more` locks were left out by the limit.
    fn close(&mut self, more: usize) -> serde_json::Result<()> {
        match self.subject {
            Subject::Page { .. } => {
                write!(self.json, "],\"truncated\":{},\"more\":{more}}}", more > 0)
                    .map_err(serde_json::Error::io)?;
            }
            _ => self.json.push(b']'),
        }
        self.stage = Stage::Done;
        Ok(())
    }
}

/// The lock id from which locks are still unlisted (`u32::MAX` stands
/// for "none": no lock has that id in practice, and counting from it
/// costs nothing).
fn first_unlisted(next: u64) -> u32 {
    u32::try_from(next).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::Cred;
    use crate::startup::Scope;
    use dlm_engine::OwnerId;
    use dlm_proto::query::{LockInfo, LockPage, LockspaceInfo};
    use dlm_proto::records::{LockRequest, Request};
    use dlm_proto::wire::Decoder;

    fn alice() -> Cred {
        Cred {
            pid: 20,
            uid: 1000,
            gid: 1000,
            groups: Vec::new().into(),
        }
    }

    fn lock(d: &mut Devices, ls: LsId, owner: OwnerId, name: &str) -> u32 {
        let mut r = LockRequest::default();
        r.mode = 5;
        r.castaddr = 1;
        r.lksb = 2;
        r.set_name(name.as_bytes()).expect("short name");
        let id = d
            .lock_command(ls, owner, alice().pid, &Request::Lock(r))
            .expect("lock");
        u32::try_from(id).expect("a lock id")
    }

    fn unlock(d: &mut Devices, ls: LsId, owner: OwnerId, lkid: u32) {
        let mut r = LockRequest::default();
        r.lkid = lkid;
        r.castaddr = 1;
        r.lksb = 2;
        d.lock_command(ls, owner, alice().pid, &Request::Unlock(r))
            .expect("unlock");
        while d.engine_mut(ls).and_then(|e| e.read(owner)).is_some() {}
    }

    /// A lockspace "ls" with `n` locks r0, r1, ...
    fn setup(n: usize) -> (Devices, LsId, OwnerId, Vec<u32>) {
        let mut d = Devices::new(Scope::User, 16);
        d.create(&alice(), 0, b"ls").expect("create");
        let (ls, owner, _) = d.open(&alice(), 1, b"ls").expect("open");
        let ids = (0..n)
            .map(|i| lock(&mut d, ls, owner, &format!("r{i}")))
            .collect();
        (d, ls, owner, ids)
    }

    /// Frames until the `QueryReply`, calling `between` before each one
    /// after the first: the joined JSON and the frame bodies' sizes.
    fn stream(
        d: &mut Devices,
        mut a: Answer,
        piece: usize,
        mut between: impl FnMut(&mut Devices, usize),
    ) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let (mut json, mut sizes) = (Vec::new(), Vec::new());
        let mut dec = Decoder::new();
        for i in 0.. {
            if i > 0 {
                between(d, i);
            }
            a.next_frame(d, piece, &mut out).expect("a frame");
            dec.feed(&out);
            out.clear();
            let f = dec.next_frame().expect("framing").expect("one frame");
            sizes.push(f.body.len());
            json.extend_from_slice(f.body);
            if f.kind == Kind::QueryReply {
                assert!(a.finished());
                break;
            }
            assert_eq!(f.kind, Kind::QueryPart);
            assert!(!a.finished());
        }
        (json, sizes)
    }

    fn ids(locks: &[LockInfo]) -> Vec<u32> {
        locks.iter().map(|l| l.lkid).collect()
    }

    #[test]
    fn a_long_answer_comes_in_parts_of_the_given_size() {
        let (mut d, ls, _, all) = setup(200);
        let (json, sizes) = stream(&mut d, Answer::new(Subject::Locks(ls)), 100, |_, _| {});
        assert!(sizes.len() > 20, "{} parts", sizes.len());
        let (last, parts) = sizes.split_last().expect("frames");
        assert!(parts.iter().all(|&n| n == 100), "{sizes:?}");
        assert!((1..=100).contains(last));
        let locks: Vec<LockInfo> = serde_json::from_slice(&json).expect("an array");
        assert_eq!(ids(&locks), all);
        assert_eq!(locks, d.query_locks(ls).expect("locks"), "the same records");
        // Parts may be as small as one byte, and no larger than a frame.
        let (json1, sizes1) = stream(&mut d, Answer::new(Subject::Locks(ls)), 0, |_, _| {});
        assert!(sizes1.iter().all(|&n| n == 1));
        assert_eq!(json1, json);
        let (_, big) = stream(
            &mut d,
            Answer::new(Subject::Locks(ls)),
            usize::MAX,
            |_, _| {},
        );
        assert!(big.iter().all(|&n| n < wire::MAX_FRAME));
    }

    #[test]
    fn empty_lists_are_still_json() {
        let (mut d, ls, _, _) = setup(0);
        let (json, sizes) = stream(&mut d, Answer::new(Subject::Locks(ls)), 1000, |_, _| {});
        assert_eq!((json.as_slice(), sizes.len()), (&b"[]"[..], 1));
        let page = Answer::new(Subject::Page { ls, limit: 5 });
        let (json, _) = stream(&mut d, page, 1000, |_, _| {});
        let p: LockPage = serde_json::from_slice(&json).expect("a page");
        assert_eq!(p, LockPage::default());
    }

    #[test]
    fn pages_stop_at_the_limit_and_say_how_many_more() {
        let (mut d, ls, _, all) = setup(10);
        let page = |d: &mut Devices, limit, after| {
            let (json, _) = stream(
                d,
                Answer::after(Subject::Page { ls, limit }, after),
                64,
                |_, _| {},
            );
            serde_json::from_slice::<LockPage>(&json).expect("a page")
        };
        let p = page(&mut d, 4, 0);
        assert_eq!(
            (ids(&p.locks), p.truncated, p.more),
            (all[..4].to_vec(), true, 6)
        );
        let p = page(&mut d, 4, all[3]);
        assert_eq!(
            (ids(&p.locks), p.truncated, p.more),
            (all[4..8].to_vec(), true, 2)
        );
        let p = page(&mut d, 4, all[7]);
        assert_eq!(
            (ids(&p.locks), p.truncated, p.more),
            (all[8..].to_vec(), false, 0)
        );
        let p = page(&mut d, 10, 0);
        assert_eq!(
            (p.locks.len(), p.truncated),
            (10, false),
            "exactly the limit"
        );
        let p = page(&mut d, 0, 0);
        assert_eq!((p.locks.len(), p.truncated, p.more), (0, true, 10));
        let p = page(&mut d, 3, u32::MAX);
        assert_eq!(p, LockPage::default(), "after the greatest lock id");
    }

    #[test]
    fn locks_that_stay_appear_once_whatever_changes_between_parts() {
        let (mut d, ls, owner, all) = setup(300);
        let owner2 = d.open(&alice(), 2, b"ls").expect("open").1;
        // Between parts: end a lock and make one (which takes the lowest
        // free lock id, behind or ahead of the cursor).
        let mut gone = Vec::new();
        let mut made = Vec::new();
        let (json, sizes) = stream(&mut d, Answer::new(Subject::Locks(ls)), 500, |d, i| {
            let victim = all[(i * 37) % all.len()];
            if !gone.contains(&victim) && i % 3 == 0 {
                unlock(d, ls, owner, victim);
                gone.push(victim);
            }
            made.push(lock(d, ls, owner2, &format!("new{i}")));
        });
        assert!(sizes.len() > 10);
        let locks: Vec<LockInfo> = serde_json::from_slice(&json).expect("an array");
        let listed = ids(&locks);
        assert!(
            listed.windows(2).all(|w| w[0] < w[1]),
            "by lock id, none twice"
        );
        let stayed = all.iter().filter(|id| !gone.contains(id));
        for id in stayed {
            assert!(listed.contains(id), "lock {id} stayed but is missing");
        }
        for id in &listed {
            assert!(
                all.contains(id) || made.contains(id),
                "lock {id} never existed"
            );
        }
    }

    #[test]
    fn a_lockspace_removed_midway_ends_its_list() {
        let (mut d, ls, owner, all) = setup(50);
        let mut a = Answer::new(Subject::Page { ls, limit: 1000 });
        let mut out = Vec::new();
        a.next_frame(&d, 100, &mut out).expect("the first part");
        let minor = d.lockspace_records(0, &alice()).next().expect("ls").minor;
        assert!(matches!(
            d.remove(&alice(), 9, 2, minor),
            Ok(crate::devices::Removal::Deferred(_))
        ));
        d.close(ls, 1, owner);
        assert!(d.lockspace(ls).is_none());
        while !a.finished() {
            a.next_frame(&d, 100, &mut out).expect("a part");
        }
        let mut dec = Decoder::new();
        dec.feed(&out);
        let mut json = Vec::new();
        while let Some(f) = dec.next_frame().expect("framing") {
            json.extend_from_slice(f.body);
        }
        let p: LockPage = serde_json::from_slice(&json).expect("a page");
        assert!(
            !p.locks.is_empty() && p.locks.len() < all.len(),
            "{}",
            p.locks.len()
        );
        assert!(!p.truncated);
    }

    #[test]
    fn lockspaces_are_listed_in_parts_too() {
        let mut d = Devices::new(Scope::User, 64);
        for i in 0..40 {
            d.create(&alice(), 0, format!("space-{i}").as_bytes())
                .expect("create");
        }
        let (json, sizes) = stream(
            &mut d,
            Answer::new(Subject::Lockspaces(alice())),
            128,
            |_, _| {},
        );
        assert!(sizes.len() > 10);
        let list: Vec<LockspaceInfo> = serde_json::from_slice(&json).expect("an array");
        assert_eq!(list, d.query_lockspaces(&alice()));
        assert_eq!(list.len(), 40);
    }
}
