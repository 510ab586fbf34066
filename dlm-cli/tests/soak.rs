//! The soak (issue 12 §3): 32 processes doing random operations of every
//! kind on one private `dlmd` while it is killed (SIGKILL) and restarted
//! every few seconds. Real processes (this test binary run again as
//! workers), real kills.
//!
//! `DLM_SOAK_SECS` sets the length (default 60 s, what CI runs; the full
//! run is `DLM_SOAK_SECS=600`), `DLM_SOAK_SEED` the random seed (default:
//! from the clock; printed). See the README's testing section for what is
//! checked.
#![forbid(unsafe_code)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::Daemon;
use dlm::{Completion, Dlm, Errno, Lock, LockFlags, LockId, LockMode, LockRequest, Lockspace};
use dlm::{LockspaceFlags, LockspaceName, Outcome, ResourceName, Status, StatusFlags, ValueBlock};

const WORKERS: u32 = 32;
/// The daemons' `--grace-period`.
const GRACE: &str = "10";
/// Shared resources for plain requests, and for value blocks.
const RESOURCES: u64 = 6;
const LVBS: u64 = 2;
/// At most this many locks held by a worker at a time.
const MAX_HELD: usize = 3;
/// A wait that has not ended after this long is a hang.
const HANG: Duration = Duration::from_secs(60);
/// The anomaly of a completion that came unasked.
const STALE: &str = "a completion no operation of the lock was waiting for";
/// How long after a replay an undocumented outcome is put down to it
/// (see `Worker::step`).
const AFTERMATH: Duration = Duration::from_secs(15);

fn secs_from_env() -> u64 {
    std::env::var("DLM_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
}

// ---------------------------------------------------------------------
// Small helpers shared by the parent and the workers.

/// xorshift64*: the workers' random choices, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
    fn mode(&mut self) -> LockMode {
        LockMode::ALL[self.below(6) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn rn(s: &str) -> ResourceName {
    ResourceName::new(s).expect("resource name")
}

fn lsn(s: &str) -> LockspaceName {
    LockspaceName::new(s).expect("lockspace name")
}

/// A value block a writer leaves: `SOAK`, its worker number, a sequence
/// number and a check of both; all else zero.
fn block(worker: u32, seq: u64) -> ValueBlock {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(b"SOAK");
    b[4..8].copy_from_slice(&worker.to_le_bytes());
    b[8..16].copy_from_slice(&seq.to_le_bytes());
    b[16..24].copy_from_slice(&check(worker, seq).to_le_bytes());
    ValueBlock::new(b)
}

fn check(worker: u32, seq: u64) -> u64 {
    (u64::from(worker) ^ seq.rotate_left(17)).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed
}

/// A block no writer could have left (torn, mixed up, garbage)?
fn well_formed(v: &ValueBlock) -> bool {
    let b = v.as_bytes();
    if v.is_zero() {
        return true;
    }
    let word = |r: std::ops::Range<usize>| {
        let mut w = [0u8; 8];
        w[..r.len()].copy_from_slice(&b[r]);
        u64::from_le_bytes(w)
    };
    &b[..4] == b"SOAK"
        && word(16..24) == check(word(4..8) as u32, word(8..16))
        && b[24..].iter().all(|&x| x == 0)
}

// ---------------------------------------------------------------------
// The tracker: outside the daemon, every holder of a tracked resource
// writes its mode into a file of that resource (under a blocking flock
// of the file, held for the read-modify-write only) once granted, and
// takes it out before it unlocks. A holder that finds an incompatible
// mode there has found two incompatible holders inside at once.

struct Tracker {
    dir: PathBuf,
}

impl Tracker {
    /// Take out this process's records on every tracked resource but
    /// those of `keep`.
    fn forget_others(&self, keep: &HashSet<String>) {
        let me = std::process::id().to_string();
        let names = (0..RESOURCES)
            .map(|i| format!("r{i}"))
            .chain((0..LVBS).map(|i| format!("lvb{i}")));
        for res in names {
            let path = self.dir.join(format!("track.{res}"));
            let Ok(s) = std::fs::read_to_string(&path) else {
                continue;
            };
            for line in s.lines() {
                let mut w = line.split(' ');
                if let (Some(k), Some(pid)) = (w.next(), w.next()) {
                    if pid == me && !keep.contains(k) {
                        let _ = self.set(&res, k, None);
                    }
                }
            }
        }
    }

    /// Set (`Some`) or remove (`None`) `key`'s mode on `res`; `Err` names
    /// the incompatible holder found.
    fn set(&self, res: &str, key: &str, mode: Option<LockMode>) -> Result<(), String> {
        let path = self.dir.join(format!("track.{res}"));
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("tracker {}: {e}", path.display()))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| format!("tracker flock: {e}"))?;
        let mut s = String::new();
        f.read_to_string(&mut s)
            .map_err(|e| format!("tracker read: {e}"))?;
        let mut out = String::new();
        let mut clash = None;
        for line in s.lines() {
            let mut words = line.split(' ');
            let (Some(k), Some(pid), Some(m)) = (words.next(), words.next(), words.next()) else {
                continue;
            };
            if k == key {
                continue;
            }
            // A worker that died (and failed the run) left its records:
            // its locks went with its connections.
            let alive = pid
                .parse()
                .ok()
                .and_then(rustix::process::Pid::from_raw)
                .is_some_and(|p| rustix::process::test_kill_process(p).is_ok());
            if !alive {
                continue;
            }
            if let Some(mine) = mode {
                let theirs = LockMode::ALL.iter().find(|x| x.name() == m);
                if let Some(&theirs) = theirs {
                    if !mine.compatible(theirs) {
                        clash = Some(format!(
                            "{key} entered {res} in {} while {k} (pid {pid}) was inside in {}",
                            mine.name(),
                            theirs.name()
                        ));
                    }
                }
            }
            out.push_str(line);
            out.push('\n');
        }
        if let Some(m) = mode {
            out.push_str(&format!("{key} {} {}\n", std::process::id(), m.name()));
        }
        f.rewind().map_err(|e| format!("tracker: {e}"))?;
        f.set_len(0).map_err(|e| format!("tracker: {e}"))?;
        f.write_all(out.as_bytes())
            .map_err(|e| format!("tracker write: {e}"))?;
        match clash {
            Some(c) => Err(c),
            None => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------
// The worker.

/// An anomaly's message without what varies (resource names, lock ids).
fn anomaly_kind(e: &str) -> String {
    // "…: Completion { status: Cancelled, flags: …" -> "…: Cancelled".
    let shorter;
    let e = match e.split_once("Completion { status: ") {
        Some((head, tail)) => {
            shorter = format!("{head}{}", tail.split(',').next().unwrap_or(tail));
            shorter.as_str()
        }
        None => e,
    };
    let varies = |w: &str| {
        let w = w.trim_end_matches([':', ',']);
        let digits = |p: &str| w.strip_prefix(p).is_some_and(|n| n.parse::<u32>().is_ok());
        digits("r") || digits("lvb") || digits("orph") || w.starts_with("LockId")
    };
    e.split(' ')
        .filter(|w| !varies(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A lock a worker holds: from a waiting call, or from a request with a
/// completion callback (its completions come on `rx`).
enum Handle {
    Sync(Lock),
    Async {
        id: LockId,
        rx: mpsc::Receiver<Completion>,
    },
}

struct Held {
    res: String,
    key: String,
    mode: LockMode,
    h: Handle,
}

/// How a request waits.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Wait {
    Blocking,
    NoQueue,
    Timeout,
}

/// A worker's failure: `Violation` exits 3, anything else 2.
enum Fail {
    Violation(String),
    Error(String),
}

type R<T> = Result<T, Fail>;

fn err<T>(what: impl std::fmt::Display) -> R<T> {
    Err(Fail::Error(what.to_string()))
}

trait Context<T> {
    fn ctx(self, what: &str) -> R<T>;
}

impl<T, E: std::fmt::Debug> Context<T> for Result<T, E> {
    fn ctx(self, what: &str) -> R<T> {
        self.map_err(|e| Fail::Error(format!("{what}: {e:?}")))
    }
}

struct Worker {
    me: u32,
    dir: PathBuf,
    socket: PathBuf,
    rng: Rng,
    dlm: Dlm,
    ls: Lockspace,
    tracker: Tracker,
    held: Vec<Held>,
    seq: u64,
    counts: BTreeMap<&'static str, u64>,
    /// Undocumented outcomes of operations that met a daemon kill.
    anomalies: BTreeMap<String, u64>,
    basts: Arc<AtomicU64>,
    lost: Arc<Mutex<HashSet<LockId>>>,
    /// An orphan of ours is (as far as we know) in `soak-o<me>`.
    orphan: bool,
    /// The generation of `ls` last seen, and the longest replay.
    generation: u32,
    last_replay: Option<Instant>,
    max_replay: Duration,
    counter: std::fs::File,
    counter_flock: std::fs::File,
}

impl Worker {
    fn count(&mut self, what: &'static str) {
        *self.counts.entry(what).or_default() += 1;
    }

    fn next_key(&mut self) -> String {
        self.seq += 1;
        format!("w{}.{}", self.me, self.seq)
    }

    /// A request carrying the worker's blocking and lost callbacks.
    fn request(&self, res: &str, mode: LockMode) -> LockRequest {
        let basts = self.basts.clone();
        let lost = self.lost.clone();
        LockRequest::new(rn(res), mode)
            .on_blocking(move |_, _| {
                basts.fetch_add(1, Ordering::Relaxed);
            })
            .on_lost(move |id, _| {
                lost.lock().unwrap_or_else(|p| p.into_inner()).insert(id);
            })
    }

    /// A shared resource (`prefix0`..) this worker holds no lock on.
    fn free(&mut self, prefix: &str, n: u64) -> Option<String> {
        let start = self.rng.below(n);
        (0..n)
            .map(|i| format!("{prefix}{}", (start + i) % n))
            .find(|r| self.held.iter().all(|h| &h.res != r))
    }

    /// How long a wait may last: a worker holding locks waits briefly
    /// (so that no cycle of waiters is ever stuck), one holding nothing
    /// until [`HANG`], which fails the run.
    fn bound(&mut self) -> Duration {
        if self.held.is_empty() {
            HANG
        } else {
            self.rng.ms(1, 150)
        }
    }

    fn track(&self, res: &str, key: &str, mode: Option<LockMode>) -> R<()> {
        self.tracker.set(res, key, mode).map_err(Fail::Violation)
    }

    fn note_replay(&mut self) {
        let g = self.ls.generation();
        if g != self.generation {
            // One step of the generation a replay (several kills may have
            // come between two looks).
            *self
                .counts
                .entry("replays of the worker's lockspace")
                .or_default() += u64::from(g.wrapping_sub(self.generation));
            self.generation = g;
            self.last_replay = Some(Instant::now());
            if let Some(r) = self.ls.last_replay() {
                self.max_replay = self.max_replay.max(r.took);
                // Of the last replay seen only.
                *self
                    .counts
                    .entry("locks replayed (last replay seen)")
                    .or_default() += r.replayed as u64;
                *self
                    .counts
                    .entry("locks refused at replay (last replay seen)")
                    .or_default() += r.refused as u64;
                *self
                    .counts
                    .entry("operations sent again (last replay seen)")
                    .or_default() += r.resent as u64;
            }
        }
    }

    /// One random operation. One that meets a daemon kill (the
    /// lockspace's generation moved while it ran), or starts less than
    /// [`AFTERMATH`] after a replay, and ends in an outcome the API does
    /// not document is counted as an anomaly, by its message, and the
    /// worker goes on, so that the run lists them all; the run then fails
    /// at its end. The same outcome far from any kill fails the worker at
    /// once, and so does anything the tracker or the counter's flock
    /// sees, whenever it happens.
    fn step(&mut self) -> R<()> {
        let g0 = self.ls.generation();
        let recent = self.last_replay.is_some_and(|t| t.elapsed() < AFTERMATH);
        let r = self.one_op();
        let replayed = |ls: &Lockspace| {
            // A replay run by another thread (the event loop's) counts
            // once it has ended: give it a moment.
            let until = Instant::now() + Duration::from_secs(3);
            while ls.generation() == g0 && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            ls.generation() != g0
        };
        match r {
            Err(Fail::Error(e)) if recent || replayed(&self.ls) => {
                eprintln!("worker {}: after a replay: {e}", self.me);
                let kind = anomaly_kind(&e);
                *self.anomalies.entry(kind).or_default() += 1;
                // Records of locks the failed operation dropped go.
                let keep: HashSet<String> = self.held.iter().map(|h| h.key.clone()).collect();
                self.tracker.forget_others(&keep);
                self.revive()
            }
            r => r,
        }
    }

    /// Locks the library holds for this lockspace that no call of this
    /// worker returned: a waiting call that failed (an anomaly across a
    /// replay) while the request it had sent was sent again, and granted
    /// later. Unlocked by id, and counted: left alone, they would block
    /// others for good.
    fn reap_strays(&mut self) -> R<()> {
        let mine: HashSet<LockId> = self
            .held
            .iter()
            .filter_map(|h| match &h.h {
                Handle::Sync(l) => l.info().map(|i| i.id),
                Handle::Async { id, .. } => self.ls.held_lock(*id).map(|i| i.id),
            })
            .collect();
        let strays: Vec<_> = self
            .ls
            .held()
            .into_iter()
            .filter(|h| h.granted.is_some() && h.requested.is_none() && !mine.contains(&h.id))
            .collect();
        for h in strays {
            eprintln!(
                "worker {}: a stray lock: {:?} on {:?}, granted {:?}",
                self.me, h.id, h.resource, h.granted
            );
            *self
                .anomalies
                .entry("a granted lock that no call returned (unlocked by id)".into())
                .or_default() += 1;
            match self.ls.unlock(h.id, LockFlags::empty(), None) {
                Ok(()) => {}
                Err(e) if e.errno() == Errno::ENOENT => {}
                Err(e) => return err(format!("unlock a stray lock: {e}")),
            }
        }
        Ok(())
    }

    fn one_op(&mut self) -> R<()> {
        self.reap_strays()?;
        // Start the event loop again should it have ended (idempotent):
        // the async requests' callbacks run there.
        self.ls.start_event_loop().ctx("event loop")?;
        let full = self.held.len() >= MAX_HELD;
        let r = self.rng.below(100);
        match r {
            0..=9 => self.counter_increment(),
            10..=19 if !full => self.take(Wait::Blocking),
            20..=29 if !full => self.take(Wait::NoQueue),
            30..=36 if !full => self.take(Wait::Timeout),
            37..=45 if !full => self.take_async(),
            46..=49 if !full => self.cancelled(false),
            50..=52 if !full => self.cancelled(true),
            53..=59 if !full => self.lvb_write(),
            60..=65 if !full => self.lvb_read(),
            66..=77 => self.convert(),
            78..=81 => self.orphans(),
            82..=84 => self.lockspace_open_close(),
            _ => self.unlock_one(),
        }
    }

    /// Add one to the shared counter under EX, alone inside by `flock -n`.
    fn counter_increment(&mut self) -> R<()> {
        let bound = self.bound();
        let req = LockRequest::new(rn("counter"), LockMode::Ex).timeout(bound);
        let lock = match self.ls.lock(req).ctx("counter lock")? {
            Outcome::Granted(l) => l,
            Outcome::NotGranted(c) if c.status == Status::TimedOut && bound < HANG => {
                self.count("counter: timed out (bounded wait)");
                return Ok(());
            }
            Outcome::NotGranted(c) => return err(format!("counter lock: {c:?}")),
        };
        if rustix::fs::flock(
            &self.counter_flock,
            rustix::fs::FlockOperation::NonBlockingLockExclusive,
        )
        .is_err()
        {
            return Err(Fail::Violation(
                "another holder is inside the counter's EX".into(),
            ));
        }
        let mut s = String::new();
        self.counter.rewind().ctx("counter")?;
        self.counter.read_to_string(&mut s).ctx("counter")?;
        let v: u64 = s.trim().parse().ctx("counter value")?;
        self.counter.rewind().ctx("counter")?;
        self.counter.set_len(0).ctx("counter")?;
        write!(self.counter, "{}", v + 1).ctx("counter")?;
        // Counted once written: the unlock may still fail (an anomaly
        // after a replay), and the increment stands.
        self.count("counter increments");
        rustix::fs::flock(&self.counter_flock, rustix::fs::FlockOperation::Unlock)
            .ctx("counter flock")?;
        lock.unlock().ctx("counter unlock")?;
        Ok(())
    }

    /// A request on a free shared resource in a random mode, waiting in
    /// one of the three ways.
    fn take(&mut self, wait: Wait) -> R<()> {
        let Some(res) = self.free("r", RESOURCES) else {
            return Ok(());
        };
        let mode = self.rng.mode();
        let mut req = self.request(&res, mode);
        let bound = self.bound();
        req = match wait {
            Wait::Blocking => req.timeout(bound),
            Wait::NoQueue => req.flags(LockFlags::NOQUEUE),
            Wait::Timeout => req.timeout(self.rng.ms(1, 30)),
        };
        match self.ls.lock(req).ctx("lock")? {
            Outcome::Granted(l) => {
                let key = self.next_key();
                self.track(&res, &key, Some(mode))?;
                self.held.push(Held {
                    res,
                    key,
                    mode,
                    h: Handle::Sync(l),
                });
                self.count(match wait {
                    Wait::Blocking => "request (waiting): granted",
                    Wait::NoQueue => "request NOQUEUE: granted",
                    Wait::Timeout => "request with a timeout: granted",
                });
            }
            Outcome::NotGranted(c) => match (wait, c.status) {
                (Wait::NoQueue, Status::WouldBlock) => self.count("request NOQUEUE: would block"),
                (Wait::Timeout, Status::TimedOut) => {
                    self.count("request with a timeout: timed out")
                }
                (Wait::Blocking, Status::TimedOut) if bound < HANG => {
                    self.count("request (waiting): timed out (bounded wait)")
                }
                _ => return err(format!("{mode:?} on {res} ({wait:?}): {c:?}")),
            },
        }
        Ok(())
    }

    /// Send an asynchronous request (completion callback) for `mode` on
    /// `res`.
    fn send_async(
        &mut self,
        res: &str,
        mode: LockMode,
        flags: LockFlags,
    ) -> R<(LockId, mpsc::Receiver<Completion>)> {
        let (tx, rx) = mpsc::channel();
        let req = self.request(res, mode).flags(flags);
        let id = self
            .ls
            .request(req, move |_, c| {
                let _ = tx.send(*c);
            })
            .ctx("async request")?;
        Ok((id, rx))
    }

    /// Keep an async lock that was granted.
    fn keep_async(
        &mut self,
        res: String,
        mode: LockMode,
        id: LockId,
        rx: mpsc::Receiver<Completion>,
    ) -> R<()> {
        let key = self.next_key();
        self.track(&res, &key, Some(mode))?;
        self.held.push(Held {
            res,
            key,
            mode,
            h: Handle::Async { id, rx },
        });
        Ok(())
    }

    /// An async request, waited for a bounded time on its callback, and
    /// cancelled if the time runs out.
    fn take_async(&mut self) -> R<()> {
        let Some(res) = self.free("r", RESOURCES) else {
            return Ok(());
        };
        let mode = self.rng.mode();
        let bound = self.bound();
        let (id, rx) = self.send_async(&res, mode, LockFlags::empty())?;
        match rx.recv_timeout(bound) {
            Ok(c) if c.status == Status::Granted => {
                self.count("async request: granted (callback)");
                self.keep_async(res, mode, id, rx)
            }
            Ok(c) => err(format!("async {mode:?} on {res}: {c:?}")),
            Err(_) if bound < HANG => {
                self.cancel(id)?;
                self.settle_cancel(res, mode, id, rx, &[Status::Cancelled], "async request")
            }
            Err(_) => err(format!("async {mode:?} on {res}: no callback in {HANG:?}")),
        }
    }

    /// A request likely to wait (EX on a shared resource), cancelled (or
    /// deadlock-cancelled) at once or after a moment.
    fn cancelled(&mut self, deadlock: bool) -> R<()> {
        let Some(res) = self.free("r", RESOURCES) else {
            return Ok(());
        };
        let (id, rx) = self.send_async(&res, LockMode::Ex, LockFlags::empty())?;
        let pause = self.rng.ms(0, 5);
        std::thread::sleep(pause);
        if deadlock {
            // Only while it is still waiting: a granted lock has nothing
            // to cancel (the completion may still cross the call).
            if let Ok(c) = rx.try_recv() {
                if c.status != Status::Granted {
                    return err(format!("EX on {res}: {c:?}"));
                }
                self.count("deadlock cancel: granted first");
                return self.keep_async(res, LockMode::Ex, id, rx);
            }
            match self.ls.deadlock_cancel(id) {
                Err(e) if e.errno() != Errno::ENOENT => {
                    return err(format!("deadlock cancel: {e}"))
                }
                _ => {}
            }
            self.settle_cancel(
                res,
                LockMode::Ex,
                id,
                rx,
                &[Status::DeadlockCancelled],
                "deadlock cancel",
            )
        } else {
            self.cancel(id)?;
            self.settle_cancel(res, LockMode::Ex, id, rx, &[Status::Cancelled], "cancel")
        }
    }

    /// Cancel an async request; `ENOENT` means it has ended already, and
    /// its completion (on its channel) says how.
    fn cancel(&self, id: LockId) -> R<()> {
        match self.ls.cancel(id) {
            Err(e) if e.errno() != Errno::ENOENT => err(format!("cancel: {e}")),
            _ => Ok(()),
        }
    }

    /// After a cancel: the request ends cancelled, or was granted first
    /// (and is kept).
    fn settle_cancel(
        &mut self,
        res: String,
        mode: LockMode,
        id: LockId,
        rx: mpsc::Receiver<Completion>,
        want: &[Status],
        what: &'static str,
    ) -> R<()> {
        match rx.recv_timeout(HANG) {
            Ok(c) if want.contains(&c.status) => {
                self.count(match what {
                    "cancel" => "cancel: cancelled",
                    "deadlock cancel" => "deadlock cancel: cancelled (EDEADLK)",
                    _ => "async request: cancelled after its bounded wait",
                });
                Ok(())
            }
            Ok(c) if c.status == Status::Granted => {
                self.count(match what {
                    "cancel" => "cancel: granted first",
                    "deadlock cancel" => "deadlock cancel: granted first",
                    _ => "async request: granted as it was cancelled",
                });
                self.keep_async(res, mode, id, rx)
            }
            Ok(c) => err(format!("{what} of {mode:?} on {res}: {c:?}")),
            Err(_) => err(format!(
                "{what} of {mode:?} on {res}: no completion in {HANG:?}"
            )),
        }
    }

    /// Convert a held lock, up or down. Only between modes where one's
    /// conflicts include the other's (not PR <-> CW), so that the tracker
    /// can be told first (down) or after the grant (up) without a false
    /// alarm.
    fn convert(&mut self) -> R<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        let i = self.rng.below(self.held.len() as u64) as usize;
        let to = self.rng.mode();
        let from = self.held[i].mode;
        let weaker = |a: LockMode, b: LockMode| {
            // a is weaker than (or as strong as) b.
            LockMode::ALL
                .iter()
                .all(|&m| !b.compatible(m) || a.compatible(m))
        };
        let down = weaker(to, from);
        if to == from || (!down && !weaker(from, to)) {
            return Ok(());
        }
        let (res, key) = (self.held[i].res.clone(), self.held[i].key.clone());
        if down {
            self.track(&res, &key, Some(to))?;
        }
        let bound = self.rng.ms(1, 100);
        let granted = match &mut self.held[i].h {
            Handle::Sync(l) => {
                // A waiting call cannot be bounded: up only with NOQUEUE.
                let flags = if down {
                    LockFlags::empty()
                } else {
                    LockFlags::NOQUEUE
                };
                let c = l.convert(to, flags, None).ctx("convert")?;
                match c.status {
                    Status::Granted => Some(true),
                    Status::WouldBlock | Status::ConversionDeadlock if !down => Some(false),
                    _ => return err(format!("convert {from:?} -> {to:?}: {c:?}")),
                }
            }
            Handle::Async { id, rx } => {
                let id = *id;
                let stale = rx.try_iter().count() as u64;
                if stale > 0 {
                    *self.anomalies.entry(STALE.into()).or_default() += stale;
                }
                self.ls
                    .convert(id, to, LockFlags::empty(), None)
                    .ctx("convert")?;
                let c = match rx.recv_timeout(bound) {
                    Ok(c) => c,
                    Err(_) => {
                        match self.ls.cancel(id) {
                            Err(e) if e.errno() != Errno::ENOENT => {
                                return err(format!("cancel a conversion: {e}"))
                            }
                            _ => {}
                        }
                        match rx.recv_timeout(HANG) {
                            Ok(c) => c,
                            Err(_) => return err("a cancelled conversion never completed"),
                        }
                    }
                };
                match c.status {
                    Status::Granted => Some(true),
                    Status::Cancelled | Status::ConversionDeadlock if !down => Some(false),
                    _ => return err(format!("async convert {from:?} -> {to:?}: {c:?}")),
                }
            }
        };
        match (granted, down) {
            (Some(true), _) => {
                self.held[i].mode = to;
                if !down {
                    self.track(&res, &key, Some(to))?;
                }
                self.count(if down {
                    "convert down: granted"
                } else {
                    "convert up: granted"
                });
            }
            _ => self.count("convert up: would block, cancelled or deadlock"),
        }
        Ok(())
    }

    /// Write a value block under EX (on the way down to PW), and read it
    /// back exact going up to EX again (no writer could come between:
    /// PW was held all along, across any replay).
    fn lvb_write(&mut self) -> R<()> {
        let Some(res) = self.free("lvb", LVBS) else {
            return Ok(());
        };
        let bound = self.bound();
        let req = self
            .request(&res, LockMode::Ex)
            .value_block()
            .timeout(bound);
        let mut l = match self.ls.lock(req).ctx("lvb lock")? {
            Outcome::Granted(l) => l,
            Outcome::NotGranted(c) if c.status == Status::TimedOut && bound < HANG => {
                self.count("value block write: timed out (bounded wait)");
                return Ok(());
            }
            Outcome::NotGranted(c) => return err(format!("lvb EX: {c:?}")),
        };
        let key = self.next_key();
        self.track(&res, &key, Some(LockMode::Ex))?;
        match self.lvb_write_under(&res, &key, &mut l) {
            Ok(mode) => {
                self.held.push(Held {
                    res,
                    key,
                    mode,
                    h: Handle::Sync(l),
                });
                Ok(())
            }
            Err(e) => {
                // Out of the tracker before the lock goes (dropped, so
                // unlocked), as every holder does: else the next holder
                // would see this one still inside.
                let _ = self.tracker.set(&res, &key, None);
                drop(l);
                Err(e)
            }
        }
    }

    /// [`lvb_write`](Self::lvb_write) with EX held on `res`, tracked
    /// under `key`: the mode it ends in.
    fn lvb_write_under(&mut self, res: &str, key: &str, l: &mut Lock) -> R<LockMode> {
        if let Some(v) = l.value_block() {
            if !well_formed(v) {
                return err(format!("value block of {res} garbled: {v:?}"));
            }
        }
        let seq = self.seq;
        let b = block(self.me, seq);
        self.track(res, key, Some(LockMode::Pw))?;
        let c = l
            .convert(LockMode::Pw, LockFlags::VALBLK, Some(&b))
            .ctx("lvb write")?;
        if c.status != Status::Granted {
            return err(format!("EX -> PW: {c:?}"));
        }
        let c = l
            .convert(LockMode::Ex, LockFlags::VALBLK | LockFlags::NOQUEUE, None)
            .ctx("lvb read back")?;
        match c.status {
            Status::Granted => {
                self.track(res, key, Some(LockMode::Ex))?;
                if c.flags.contains(StatusFlags::VALNOTVALID) {
                    self.count("value block read back: VALNOTVALID");
                } else if l.value_block() != Some(&b) {
                    return err(format!(
                        "{res}: wrote {b:?} under PW, read back {:?}",
                        l.value_block()
                    ));
                } else {
                    self.count("value block written and read back exact");
                }
                Ok(LockMode::Ex)
            }
            Status::WouldBlock => {
                self.count("value block written (read back would block)");
                Ok(LockMode::Pw)
            }
            _ => err(format!("PW -> EX: {c:?}")),
        }
    }

    /// Read a value block under PR or CR, asynchronously: well formed,
    /// zero (a new resource), or flagged VALNOTVALID (after a replay).
    fn lvb_read(&mut self) -> R<()> {
        let Some(res) = self.free("lvb", LVBS) else {
            return Ok(());
        };
        let mode = if self.rng.chance(50) {
            LockMode::Pr
        } else {
            LockMode::Cr
        };
        let bound = self.bound();
        let (id, rx) = self.send_async(&res, mode, LockFlags::VALBLK)?;
        let c = match rx.recv_timeout(bound) {
            Ok(c) => c,
            Err(_) if bound < HANG => {
                self.cancel(id)?;
                return self.settle_cancel(res, mode, id, rx, &[Status::Cancelled], "lvb read");
            }
            Err(_) => return err(format!("lvb read of {res}: no callback in {HANG:?}")),
        };
        if c.status != Status::Granted {
            return err(format!("lvb read {mode:?} on {res}: {c:?}"));
        }
        if c.flags.contains(StatusFlags::VALNOTVALID) {
            self.count("value block read: VALNOTVALID");
        } else {
            match c.value_block {
                Some(v) if !well_formed(&v) => {
                    return err(format!("value block of {res} garbled: {v:?}"))
                }
                Some(v) if v.is_zero() => self.count("value block read: zero"),
                Some(_) => self.count("value block read: valid"),
                None => return err(format!("lvb read of {res}: no block")),
            }
        }
        self.keep_async(res, mode, id, rx)
    }

    /// Unlock a held lock: waiting, by dropping it, or by id with the
    /// completion on the callback.
    fn unlock_one(&mut self) -> R<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        let i = self.rng.below(self.held.len() as u64) as usize;
        let h = self.held.swap_remove(i);
        self.release(h)
    }

    fn release(&mut self, h: Held) -> R<()> {
        self.track(&h.res, &h.key, None)?;
        match h.h {
            Handle::Sync(l) => {
                let id = l.id();
                if self.rng.chance(30) {
                    drop(l);
                    self.count("unlock: by drop");
                } else {
                    match l.unlock() {
                        Ok(()) => self.count("unlock: waited"),
                        Err(_) if self.is_lost(id) => self.count("unlock: the lock was lost"),
                        Err(e) => return err(format!("unlock {}: {e}", h.res)),
                    }
                }
            }
            Handle::Async { id, rx } => {
                self.drain_stale(&rx);
                match self.ls.unlock(id, LockFlags::empty(), None) {
                    Ok(()) => {}
                    Err(_) if self.is_lost(id) => {
                        self.count("unlock: the lock was lost");
                        return Ok(());
                    }
                    Err(e) => return err(format!("unlock {} by id: {e}", h.res)),
                }
                match rx.recv_timeout(HANG) {
                    Ok(c) if c.status == Status::Unlocked => self.count("unlock: by id (callback)"),
                    Ok(c) => return err(format!("unlock {} by id: {c:?}", h.res)),
                    Err(_) => return err(format!("unlock {}: no callback in {HANG:?}", h.res)),
                }
            }
        }
        Ok(())
    }

    /// Completions that came for a held lock with no operation of it in
    /// progress (after a replay: see [`step`](Self::step)); counted, so
    /// that the next operation reads its own.
    fn drain_stale(&mut self, rx: &mpsc::Receiver<Completion>) {
        let stale = rx.try_iter().count() as u64;
        if stale > 0 {
            *self.anomalies.entry(STALE.into()).or_default() += stale;
        }
    }

    fn is_lost(&self, id: LockId) -> bool {
        self.lost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&id)
    }

    /// Open the worker's own orphan lockspace on a handle of its own
    /// (created if a daemon kill took it away).
    fn orphan_space(&mut self) -> R<(Dlm, Lockspace)> {
        let name = lsn(&format!("soak-o{}", self.me));
        let mut tries = 0;
        loop {
            // A control call fails when the daemon dies under it
            // (documented): a new handle, a few times.
            let r = open_handle(&self.socket).and_then(|dlm| {
                let ls = match dlm.open_lockspace(&name) {
                    Ok(ls) => Ok(ls),
                    Err(e) if e.errno() == Errno::ENOENT => dlm
                        .create_lockspace(&name, LockspaceFlags::empty(), 0o600)
                        .ctx("create the orphan lockspace"),
                    Err(e) => err(format!("open the orphan lockspace: {e}")),
                }?;
                Ok((dlm, ls))
            });
            match r {
                Ok(x) => return Ok(x),
                Err(Fail::Error(e)) if tries < 50 => {
                    tries += 1;
                    if tries == 1 {
                        self.count("control call failed with the daemon, tried again");
                    }
                    log::warn!("worker {}: {e}; again", self.me);
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// After an anomaly: if the worker's lockspace is dead (its replay
    /// failed, a kill coming in the middle of it), open it again, as a
    /// program would; its locks went with it.
    fn revive(&mut self) -> R<()> {
        let probe = LockRequest::new(rn(&format!("probe{}", self.me)), LockMode::Nl)
            .flags(LockFlags::NOQUEUE);
        match self.ls.lock(probe) {
            Ok(_) => return Ok(()),
            Err(e) if e.errno() != Errno::EPIPE => return Ok(()),
            Err(_) => {}
        }
        for h in std::mem::take(&mut self.held) {
            let _ = self.tracker.set(&h.res, &h.key, None);
        }
        self.dlm = open_handle(&self.socket)?;
        self.ls = self
            .dlm
            .create_lockspace(&lsn("soak"), LockspaceFlags::empty(), 0o600)
            .ctx("create soak again")?;
        self.ls.start_event_loop().ctx("event loop")?;
        self.generation = self.ls.generation();
        self.last_replay = Some(Instant::now());
        *self
            .anomalies
            .entry("the lockspace died with its replay, opened again".into())
            .or_default() += 1;
        Ok(())
    }

    /// Leave a PERSISTENT lock behind as an orphan (closing the handle),
    /// or deal with the one left: adopt it and unlock it, or purge it.
    /// A daemon kill in between takes it away (nobody replays orphans).
    fn orphans(&mut self) -> R<()> {
        let (dlm, ls) = self.orphan_space()?;
        let res = format!("orph{}", self.me);
        if !self.orphan {
            let req = LockRequest::new(rn(&res), LockMode::Ex)
                .flags(LockFlags::PERSISTENT | LockFlags::NOQUEUE);
            match ls.lock(req).ctx("persistent lock")? {
                Outcome::Granted(l) => {
                    let _ = l.into_id();
                    self.orphan = true;
                    self.count("orphan: left behind");
                }
                Outcome::NotGranted(c) => return err(format!("persistent EX on {res}: {c:?}")),
            }
        } else if self.rng.chance(50) {
            let req = LockRequest::new(rn(&res), LockMode::Ex).flags(LockFlags::ORPHAN);
            match ls.lock(req) {
                Ok(Outcome::Granted(l)) => {
                    l.unlock().ctx("unlock the adopted orphan")?;
                    self.count("orphan: adopted and unlocked");
                }
                Err(e) if e.errno() == Errno::ENOENT => {
                    self.count("orphan: gone with a killed daemon")
                }
                other => return err(format!("adopt {res}: {other:?}")),
            }
            self.orphan = false;
        } else {
            // Every orphan of this node in the worker's own lockspace
            // (pid 0: the kernel takes the caller's own pid to mean the
            // caller's locks, not its orphans).
            ls.purge(0, 0).ctx("purge")?;
            self.orphan = false;
            // Gone: the name is free at once (nobody else uses it).
            let probe = LockRequest::new(rn(&res), LockMode::Ex).flags(LockFlags::NOQUEUE);
            match ls.lock(probe).ctx("probe after purge")? {
                Outcome::Granted(l) => l.unlock().ctx("unlock the probe")?,
                Outcome::NotGranted(c) => return err(format!("purge left {res}: {c:?}")),
            }
            self.count("orphan: purged");
        }
        drop(ls);
        drop(dlm);
        Ok(())
    }

    /// Create a lockspace of the worker's own, lock in it, release it;
    /// or open the shared one a second time and close it.
    fn lockspace_open_close(&mut self) -> R<()> {
        if self.rng.chance(50) {
            let name = lsn(&format!("soak-w{}", self.me));
            let ls = match self
                .dlm
                .create_lockspace(&name, LockspaceFlags::empty(), 0o600)
            {
                Ok(ls) => ls,
                // The handle's control connection does not outlive its
                // daemon (documented: EPIPE); a new handle, once.
                Err(e) if conn_failure(e.errno()) => {
                    self.count(
                        "lockspace: control call failed with a killed daemon, handle reopened",
                    );
                    self.dlm = open_handle(&self.socket)?;
                    self.dlm
                        .create_lockspace(&name, LockspaceFlags::empty(), 0o600)
                        .ctx("create a lockspace")?
                }
                Err(e) => return err(format!("create a lockspace: {e:?}")),
            };
            let req = LockRequest::new(rn("x"), LockMode::Ex).flags(LockFlags::NOQUEUE);
            // Whatever the lock gave, the lockspace is released (a lock that
            // met a kill must not leave the worker's lockspace behind).
            let used = match ls.lock(req).ctx("lock in a new lockspace") {
                Ok(Outcome::Granted(l)) => l.unlock().ctx("unlock"),
                Ok(Outcome::NotGranted(c)) => err(format!("own lockspace: {c:?}")),
                Err(e) => Err(e),
            };
            if let Err(e) = self.dlm.release_lockspace(ls, false) {
                if !conn_failure(e.errno()) {
                    return err(format!("release a lockspace: {e:?}"));
                }
                // As above; the new daemon may not have it (no handle
                // was open to replay it).
                self.count("lockspace: control call failed with a killed daemon, handle reopened");
                self.dlm = open_handle(&self.socket)?;
                match self.dlm.open_lockspace(&name) {
                    Ok(ls) => self.dlm.release_lockspace(ls, false).ctx("release")?,
                    Err(e) if e.errno() == Errno::ENOENT => {}
                    Err(e) => return err(format!("open {name}: {e:?}")),
                }
            }
            used?;
            self.count("lockspace: created, used, released");
        } else {
            let mut tries = 0;
            let (_other, ls) = loop {
                let r = open_handle(&self.socket).and_then(|d| {
                    let ls = d.open_lockspace(&lsn("soak")).ctx("open soak again")?;
                    Ok((d, ls))
                });
                match r {
                    Ok(x) => break x,
                    // As for the orphan lockspace: a control call meets a
                    // kill.
                    Err(Fail::Error(e)) if tries < 50 => {
                        tries += 1;
                        if tries == 1 {
                            self.count("control call failed with the daemon, tried again");
                        }
                        log::warn!("worker {}: {e}; again", self.me);
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Err(e) => return Err(e),
                }
            };
            let req = LockRequest::new(rn("r0"), LockMode::Nl).flags(LockFlags::NOQUEUE);
            // NOQUEUE fails even for NL while requests wait (the kernel's
            // rule 6-4: no new request passes the waiting ones).
            match ls.lock(req).ctx("NL on a second handle")? {
                Outcome::Granted(l) => drop(l),
                Outcome::NotGranted(c) if c.status == Status::WouldBlock => {}
                Outcome::NotGranted(c) => return err(format!("NL: {c:?}")),
            }
            drop(ls);
            self.count("lockspace: opened again and closed");
        }
        Ok(())
    }

    /// Let go of everything, the orphan too, and say what was done.
    fn finish(&mut self) -> R<()> {
        while let Some(h) = self.held.pop() {
            self.release(h)?;
        }
        if self.orphan {
            let (_dlm, ls) = self.orphan_space()?;
            ls.purge(0, 0).ctx("purge")?;
            self.orphan = false;
        }
        // Release the orphan lockspace as often as it was created.
        for _ in 0..10_000 {
            let dlm = open_handle(&self.socket)?;
            match dlm.open_lockspace(&lsn(&format!("soak-o{}", self.me))) {
                Ok(ls) => dlm.release_lockspace(ls, true).ctx("release")?,
                Err(e) if e.errno() == Errno::ENOENT => break,
                Err(e) => return err(format!("open the orphan lockspace: {e}")),
            }
        }
        self.note_replay();
        let lost = self.lost.lock().unwrap_or_else(|p| p.into_inner()).len() as u64;
        let mut out = String::new();
        for (k, v) in &self.counts {
            out.push_str(&format!("{k}\t{v}\n"));
        }
        out.push_str(&format!(
            "blocking callbacks\t{}\n",
            self.basts.load(Ordering::Relaxed)
        ));
        out.push_str(&format!("locks lost\t{lost}\n"));
        for (k, v) in &self.anomalies {
            out.push_str(&format!("anomaly after a replay: {k}\t{v}\n"));
        }
        out.push_str(&format!("max replay us\t{}\n", self.max_replay.as_micros()));
        std::fs::write(self.dir.join(format!("report.{}", self.me)), out).ctx("report")?;
        Ok(())
    }
}

/// The daemon connection itself failed (the daemon died under the call).
fn conn_failure(e: Errno) -> bool {
    [
        libc::EPIPE,
        libc::ECONNRESET,
        libc::ECONNREFUSED,
        libc::ENOENT,
    ]
    .contains(&e.raw())
}

/// A new handle on the daemon. One opened while the daemon is being
/// restarted finds no daemon (`DaemonUnavailable`, documented): tried
/// again for as long as a replay would wait.
fn open_handle(socket: &Path) -> R<Dlm> {
    let deadline = Instant::now() + dlm::DEFAULT_REPLAY_WAIT;
    loop {
        let r = Dlm::builder()
            .backend(dlm::Backend::Fallback)
            .socket(socket)
            .autostart(false)
            .replay_wait(dlm::DEFAULT_REPLAY_WAIT)
            .open();
        match r {
            Err(dlm::Error::DaemonUnavailable(_, e))
                if conn_failure(e) && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            r => return r.ctx("connect to dlmd"),
        }
    }
}

fn worker_main(me: u32, dir: PathBuf, socket: PathBuf, seed: u64) -> R<()> {
    let dlm = open_handle(&socket)?;
    let ls = dlm
        .create_lockspace(&lsn("soak"), LockspaceFlags::empty(), 0o600)
        .ctx("create soak")?;
    ls.start_event_loop().ctx("event loop")?;
    let open = |n: &str| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join(n))
            .ctx(n)
    };
    let mut w = Worker {
        me,
        rng: Rng::new(seed ^ (u64::from(me) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        tracker: Tracker { dir: dir.clone() },
        counter: open("counter")?,
        counter_flock: open("counter.flock")?,
        dir,
        socket,
        generation: ls.generation(),
        dlm,
        ls,
        held: Vec::new(),
        seq: 0,
        counts: BTreeMap::new(),
        anomalies: BTreeMap::new(),
        basts: Arc::new(AtomicU64::new(0)),
        lost: Arc::new(Mutex::new(HashSet::new())),
        orphan: false,
        last_replay: None,
        max_replay: Duration::ZERO,
    };
    let stop = w.dir.join("stop");
    // Told to stop long before this; otherwise the parent is gone.
    let deadline = Instant::now() + Duration::from_secs(secs_from_env() + 300);
    let r = (|| {
        while !stop.exists() {
            if Instant::now() > deadline {
                return err("never told to stop");
            }
            w.step()?;
            w.note_replay();
            w.count("operations");
        }
        w.finish()
    })();
    if r.is_err() {
        // Out of the tracker before exiting: the locks go with the
        // process, and records left behind would accuse others.
        for h in &w.held {
            let _ = w.tracker.set(&h.res, &h.key, None);
        }
    }
    r
}

/// A soak worker: random operations until the file `stop` appears in
/// `DLM_SOAK_DIR`, then a report in `report.N`. Exits 3 when the tracker
/// or the counter's flock finds two incompatible holders inside, 2 on
/// any other failure. Run only by [`soak`].
#[test]
#[ignore = "a worker process that the soak test starts"]
fn soak_worker() {
    let Ok(me) = std::env::var("DLM_SOAK_WORKER") else {
        return;
    };
    // DLM_SOAK_LOG=debug: the client's debug log in each worker's log.
    let level = std::env::var("DLM_SOAK_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(log::LevelFilter::Warn);
    let _ = env_logger::Builder::new().filter_level(level).try_init();
    let me: u32 = me.parse().expect("worker number");
    let dir = PathBuf::from(std::env::var_os("DLM_SOAK_DIR").expect("DLM_SOAK_DIR"));
    let socket = PathBuf::from(std::env::var_os("DLM_SOAK_SOCKET").expect("DLM_SOAK_SOCKET"));
    let seed: u64 = std::env::var("DLM_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    match worker_main(me, dir.clone(), socket, seed) {
        Ok(()) => {}
        Err(Fail::Violation(v)) => {
            eprintln!("worker {me} (pid {}): VIOLATION: {v}", std::process::id());
            let _ = std::fs::write(dir.join(format!("violation.{me}")), &v);
            std::process::exit(3);
        }
        Err(Fail::Error(e)) => {
            eprintln!("worker {me} (pid {}): {e}", std::process::id());
            std::process::exit(2);
        }
    }
}

// ---------------------------------------------------------------------
// The parent.

/// The last lines of a worker's stderr.
fn worker_tail(dir: &Path, n: u32) -> String {
    if let Ok(keep) = std::env::var("DLM_SOAK_KEEP_LOGS") {
        let _ = std::fs::copy(
            dir.join(format!("worker.{n}.log")),
            Path::new(&keep).join(format!("worker.{n}.log")),
        );
    }
    let text = std::fs::read_to_string(dir.join(format!("worker.{n}.log"))).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Print every worker's last words and the daemon's log tail, and fail.
fn fail(d: &Daemon, dir: &Path, why: String) -> ! {
    let mut tails = String::new();
    for n in 0..WORKERS {
        let t = worker_tail(dir, n);
        if !t.is_empty() {
            tails.push_str(&format!("--- worker {n}:\n{t}\n"));
        }
    }
    eprintln!("{tails}--- dlmd's log (tail):\n{}", d.log_tail(200));
    panic!("{why}");
}

/// The daemon's own view, once every worker has gone: only `soak` (the
/// observer's), with no lock and one connection.
fn daemon_idle(observer: &Dlm) -> Result<(), String> {
    let spaces = observer.lockspaces().map_err(|e| e.to_string())?;
    match spaces.as_slice() {
        [s] if s.name == "soak" && s.locks == 0 && s.connections == 1 => Ok(()),
        _ => Err(format!("{spaces:?}")),
    }
}

#[test]
fn soak() {
    let secs = secs_from_env();
    let seed: u64 = std::env::var("DLM_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("soak: {WORKERS} processes, {secs} s, DLM_SOAK_SEED={seed}");
    let args = ["--user", "--grace-period", GRACE];
    let mut d = Daemon::start_logging("info", &args);
    let dir = common::TempDir::new("soak");
    std::fs::write(dir.0.join("counter"), "0").unwrap();
    std::fs::write(dir.0.join("counter.flock"), "").unwrap();

    // The baseline: a daemon like the one measured at the end, a
    // restarted one with one client (the observer) replayed onto it and
    // idle, so that both have run the same code (a fresh daemon's
    // resident size lacks the replay's pages, and two processes' mapped
    // library pages differ by a few per cent anyway).
    let observer = d.client_replaying(dlm::DEFAULT_REPLAY_WAIT);
    let obs_ls = observer
        .create_lockspace(&lsn("soak"), LockspaceFlags::empty(), 0o600)
        .unwrap();
    // Its event loop meets each kill at once and replays (an idle handle
    // that did not would hold every grace period to its end).
    obs_ls.start_event_loop().unwrap();
    d.crash_and_restart(&args);
    let replayed = Instant::now() + Duration::from_secs(20);
    while obs_ls.generation() < 2 {
        if Instant::now() > replayed {
            fail(
                &d,
                &dir.0,
                "the observer did not replay onto the restarted daemon".into(),
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(2));
    let (baseline, baseline_anon) = (d.rss_kib(), d.rss_anon_kib());

    let t0 = Instant::now();
    let seed_s = seed.to_string();
    let mut workers: Vec<common::Reaped> = (0..WORKERS)
        .map(|n| {
            let n_s = n.to_string();
            let log = std::fs::File::create(dir.0.join(format!("worker.{n}.log"))).unwrap();
            let mut c = common::worker_command(
                "soak_worker",
                &[
                    ("DLM_SOAK_WORKER", n_s.as_ref()),
                    ("DLM_SOAK_SOCKET", d.socket.as_os_str()),
                    ("DLM_SOAK_DIR", dir.0.as_os_str()),
                    ("DLM_SOAK_SEED", seed_s.as_ref()),
                    ("DLM_SOAK_SECS", secs.to_string().as_ref()),
                ],
            );
            c.stdout(std::process::Stdio::null()).stderr(log);
            common::spawn(c)
        })
        .collect();
    let fail = |d: &Daemon, why: String| fail(d, &dir.0, why);
    let check_alive = |d: &Daemon, workers: &mut Vec<common::Reaped>| {
        for (n, w) in workers.iter_mut().enumerate() {
            if let Ok(Some(st)) = w.0.try_wait() {
                fail(d, format!("worker {n} ended early: {st}"));
            }
        }
    };

    // Kills every 1 to 4 s over the first two thirds; the last third is
    // the final daemon's, so that the memory compared is a daemon's that
    // carried the full load.
    let mut rng = Rng::new(seed);
    // DLM_SOAK_KILLS=0: no kills (to tell the daemon's deaths from the
    // rest when looking into a failure).
    let kills_on = std::env::var("DLM_SOAK_KILLS").map_or(true, |v| v != "0");
    let kills_end = Duration::from_secs(if kills_on { secs * 2 / 3 } else { 0 });
    let end = Duration::from_secs(secs);
    let mut kills = 0u32;
    let mut rss_before_kill = Vec::new();
    let mut next_kill = rng.ms(1000, 4000);
    while t0.elapsed() < end {
        std::thread::sleep(Duration::from_millis(100));
        check_alive(&d, &mut workers);
        if t0.elapsed() >= next_kill && t0.elapsed() < kills_end {
            rss_before_kill.push(d.rss_kib());
            d.crash_and_restart(&args);
            kills += 1;
            next_kill = t0.elapsed() + rng.ms(1000, 4000);
        }
    }
    let last_rss_loaded = d.rss_kib();
    std::fs::write(dir.0.join("stop"), "").unwrap();
    let stop_deadline = Instant::now() + HANG + Duration::from_secs(30);
    for (n, w) in workers.iter_mut().enumerate() {
        let st = loop {
            if let Ok(Some(st)) = w.0.try_wait() {
                break st;
            }
            if Instant::now() > stop_deadline {
                fail(&d, format!("worker {n} did not stop (a hang)"));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if !st.success() {
            fail(&d, format!("worker {n} ended {st}"));
        }
    }
    let ran = t0.elapsed();

    // The figures: every worker's report, summed.
    let mut sums: BTreeMap<String, u64> = BTreeMap::new();
    let mut max_replay_us = 0u64;
    for n in 0..WORKERS {
        // DLM_SOAK_KEEP_LOGS: every worker's log kept, pass or fail.
        worker_tail(&dir.0, n);
        let r = std::fs::read_to_string(dir.0.join(format!("report.{n}")))
            .unwrap_or_else(|e| fail(&d, format!("worker {n}'s report: {e}")));
        for line in r.lines() {
            let Some((k, v)) = line.split_once('\t') else {
                continue;
            };
            let v: u64 = v.parse().unwrap_or(0);
            if k == "max replay us" {
                max_replay_us = max_replay_us.max(v);
            } else {
                *sums.entry(k.to_string()).or_default() += v;
            }
        }
    }
    let counter: u64 = std::fs::read_to_string(dir.0.join("counter"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let increments = sums.get("counter increments").copied().unwrap_or(0);

    // The daemons' grace periods: each restart opens one; it ends once
    // every connection the holders file counted has replayed, or at its
    // bound, or never, when the next kill comes first. A connection that
    // was open at the kill and closed since never replays, so the count
    // is not reached: the daemons that follow wait for it only until the
    // bound of the grace period first opened for it ("overdue"). The last
    // daemon's must have ended.
    let log = d.log_text();
    let mut graces: Vec<f64> = Vec::new();
    let (mut opened, mut early, mut overdue, mut last_ended) = (0u32, 0u32, 0u32, false);
    // The baseline's restart (before the workers) opened the first, and
    // the observer's replay ended it.
    let mut lines = log
        .lines()
        .skip_while(|l| !l.contains("grace period over after "));
    lines.next();
    for l in lines {
        if l.contains("stopped uncleanly") {
            opened += 1;
            last_ended = false;
        } else if let Some(rest) = l.split("grace period over after ").nth(1) {
            if let Some(t) = rest.split(' ').next().and_then(|t| t.parse().ok()) {
                graces.push(t);
            }
            if rest.contains("those an earlier dlmd awaited") {
                overdue += 1;
            } else if rest.contains("every connection that was open has replayed") {
                early += 1;
            }
            last_ended = true;
        }
    }
    graces.sort_by(f64::total_cmp);

    // The memory: the last daemon once every worker has gone, with the
    // observer (replayed onto it) its one client again, idle.
    // (A handle's control connection does not outlive its daemon: the
    // query goes through a new one.)
    obs_ls.dispatch().unwrap();
    let query = d.client();
    let idle_deadline = Instant::now() + Duration::from_secs(20);
    while let Err(state) = daemon_idle(&query) {
        if Instant::now() > idle_deadline {
            fail(&d, format!("the daemon did not come back to idle: {state}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    let (after, after_anon) = (d.rss_kib(), d.rss_anon_kib());

    let mut table = String::new();
    for (k, v) in &sums {
        table.push_str(&format!("  {k:<66} {v:>8}\n"));
    }
    let peak = rss_before_kill
        .iter()
        .copied()
        .chain([last_rss_loaded])
        .max()
        .unwrap_or(0);
    eprintln!(
        "soak: {WORKERS} processes for {:.1} s, seed {seed}\n{table}  \
         daemon kills {kills}, grace periods opened {opened}, ended {} ({early} once every \
         connection had replayed, {overdue} once all but those an earlier daemon awaited \
         had and their bound was up, the others at their 10 s bound; the rest cut short by \
         the next kill; median {:.1} ms, max {:.1} ms), \
         longest replay of one lockspace {:.1} ms\n  \
         counter {counter}, increments reported {increments}\n  \
         daemon VmRSS: baseline {baseline} KiB (restarted, one idle client replayed), \
         under load up to {peak} KiB, after {after} KiB (last daemon, workers gone, \
         2 s settle): {:+.1} %; of which anonymous (RssAnon, not checked): \
         {baseline_anon} KiB and {after_anon} KiB",
        ran.as_secs_f64(),
        graces.len(),
        graces.get(graces.len() / 2).map_or(0.0, |g| g * 1e3),
        graces.last().map_or(0.0, |g| g * 1e3),
        max_replay_us as f64 / 1e3,
        (after as f64 / baseline as f64 - 1.0) * 100.0
    );

    let violations: Vec<_> = (0..WORKERS)
        .filter(|n| dir.0.join(format!("violation.{n}")).exists())
        .collect();
    if !violations.is_empty() {
        fail(&d, format!("incompatible holders seen by {violations:?}"));
    }
    // Outcomes the API does not document, met around a replay: the
    // workers went on (to list them all), and the run fails.
    let anomalies: Vec<String> = sums
        .iter()
        .filter(|(k, _)| k.starts_with("anomaly"))
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    if !anomalies.is_empty() {
        fail(
            &d,
            format!("outcomes the API does not document: {anomalies:?}"),
        );
    }
    if counter != increments {
        fail(
            &d,
            format!("counter {counter}, but {increments} increments reported"),
        );
    }
    if increments == 0 || (kills_on && kills == 0) {
        fail(&d, format!("{increments} increments, {kills} kills"));
    }
    if opened != kills || (kills > 0 && !last_ended) {
        fail(
            &d,
            format!(
                "{kills} kills, {opened} grace periods opened; the last one ended: {last_ended}"
            ),
        );
    }
    if after * 10 > baseline * 11 {
        fail(
            &d,
            format!("daemon memory: {after} KiB after, {baseline} KiB baseline (> +10 %)"),
        );
    }
}
