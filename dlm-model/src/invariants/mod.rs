//! The property checks: every invariant of Linux 6.1's and 6.12's
//! `fs/dlm` that can be stated without re-implementing it, checked on the
//! engine alone after every step of a case, under each kernel model
//! ([`check_case`]).
//!
//! Where the kernels differ (callbacks), the checks say so: under 6.12 a
//! lock has no cap on its callbacks, a lock that ends is gone at once
//! while its last callbacks wait to be read (the checks keep it as a
//! ghost until they are: the records of a lock id reused since come
//! after them in the owner's queue), a record echoes the user arguments
//! the lock had when it was queued, and a blocking AST carries status 0
//! and flags 0.
//!
//! The checks keep only bookkeeping of their own: which completions each
//! lock is owed, an upper bound on how many callbacks each lock may have
//! waiting (the kernel keeps at most six per lock and drops the rest),
//! what each lock has been told by blocking ASTs since it was last
//! granted, which locks are orphans, and what each resource's value block
//! must be. They share nothing with the reference model: the two are
//! independent judges of the same runs.
//!
//! The files by topic: the kernel rules stated directly (`rules.rs`), the
//! invariants that hold after every step and the value-block predictions
//! (`checks.rs`), the bookkeeping after a step (`book.rs`), reading
//! (`read.rs`), requests, conversions and adoptions (`request.rs`),
//! unlocks and cancels (`unlock.rs`), and purges, closes and the locks
//! they release (`release.rs`).

use std::collections::{BTreeMap, BTreeSet};

use dlm_engine::{Engine, KernelModel, LockInfo, OwnerId, Queue};
use dlm_proto::records::{UserArgs, LVB_LEN};
use dlm_proto::status::{ECANCEL, EUNLOCK};
use dlm_proto::{LockMode, StatusFlags};

use crate::gen::flags::{ALTCW, ALTPR, CANCEL};
use crate::gen::{first_pid, reopen_pid, Case, LockSel, Op, NAMES};
use crate::report::{Failure, Stage};

macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return fail(format!($($arg)*));
        }
    };
}

mod book;
mod checks;
mod read;
mod release;
mod request;
mod rules;
mod unlock;

type Lvb = [u8; LVB_LEN];

/// `DLM_CALLBACKS_SIZE`: callbacks a lock may have waiting in Linux 6.1.
const KERNEL_CALLBACKS: u32 = 6;

const SB_ALL: u8 =
    StatusFlags::DEMOTED.bits() | StatusFlags::VALNOTVALID.bits() | StatusFlags::ALTMODE.bits();

/// The completion statuses a read may carry.
const STATUSES: [i32; 5] = [0, -libc::EAGAIN, -libc::EDEADLK, -EUNLOCK, -ECANCEL];

// ---------------------------------------------------------------------
// The checks' bookkeeping
// ---------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Slot {
    open: bool,
    eng: OwnerId,
    gen: u32,
    pid: u32,
}

/// What the checks know about one lock (one life of a lock id).
#[derive(Clone, Debug)]
struct TLock {
    serial: u64,
    name: Vec<u8>,
    /// (slot, generation) of the owner while the lock has one; `None`
    /// once it is an orphan or dead (its callbacks are then dropped).
    owner: Option<(usize, u32)>,
    /// Completions owed and not read yet.
    owed: u32,
    /// An upper bound on the callbacks waiting in the lock's array.
    bound: u32,
    /// The bound went over the array size: callbacks may have been
    /// dropped, so only "at most one completion" is checked.
    tainted: bool,
    /// The user arguments the engine must echo.
    ua: UserArgs,
    /// 6.12: those the lock had before, since its owner's queue was last
    /// seen empty (a record echoes the arguments of when it was queued).
    past_ua: Vec<UserArgs>,
    /// The user's value block buffer (allocated when VALBLK is first given,
    /// even by a conversion that then fails its checks).
    buf: Option<Lvb>,
    /// The buffer is attached to the lock (`lkb_lvbptr`): a request or
    /// conversion passed its checks since it was allocated. Only then does
    /// it reach the resource.
    attached: bool,
    /// The lock had no blocking AST address at some point.
    nobast: bool,
    /// Adopted, and no grant read by the new owner since.
    adopted: bool,
    /// Highest blocking AST mode read since the last grant was read.
    max_bast: Option<LockMode>,
    /// `sb_status` / `sb_flags` of the last completion read.
    last_status: i32,
    last_flags: u8,
    /// On the orphan list.
    orphan: bool,
    /// Possibly on its owner's `unlocking` list.
    maybe_unlocking: bool,
    /// Kernel quirk 1: a queued conversion with ALTPR/ALTCW whose
    /// alternate mode is its granted mode is "granted" by
    /// `grant_pending_convert` in place: `_grant_lock` moves a lock only
    /// when the mode changes, so it stays on the convert queue with no
    /// requested mode, and a later pass "grants" it again to IV, onto the
    /// grant queue with no mode at all. Each grant queues a completion.
    zombie: bool,
    /// Kernel quirk 2: adoption copies the flags unchecked; EXPEDITE on an
    /// orphan whose conversion someone else started makes
    /// `_can_be_granted` grant it past any conflict.
    rogue: bool,
}

/// The engine under check, and the checks' bookkeeping of it.
struct World {
    e: Engine,
    model: KernelModel,
    /// 6.12: locks gone with callbacks unread, oldest first.
    ghosts: Vec<(u32, TLock)>,
    slots: Vec<Slot>,
    pids: Vec<u32>,
    locks: BTreeMap<u32, TLock>,
    next_serial: u64,
    /// (holder, waiter) serials for which the kernel sends no blocking AST
    /// to the holder: it was granted by a path that has no blocking-AST
    /// pass after it.
    untold: BTreeSet<(u64, u64)>,
    /// VALNOTVALID of every resource, kept across its tossing (`None`:
    /// the checks cannot tell).
    valnotvalid: BTreeMap<Vec<u8>, Option<bool>>,
    /// The value block and mark this step must leave each resource with,
    /// as far as the step's checks predicted them (`None`: unknown).
    predicted: BTreeMap<Vec<u8>, Option<bool>>,
}

type Snap = BTreeMap<u32, LockInfo>;

fn snap(e: &Engine) -> Snap {
    e.locks().into_iter().map(|l| (l.lkid, l)).collect()
}

fn state(l: &LockInfo) -> (Option<Queue>, Option<LockMode>, Option<LockMode>) {
    (l.queue, l.granted, l.requested)
}

fn fail<T>(msg: String) -> Result<T, String> {
    Err(msg)
}

/// Everything a step changes that the checks compare around it.
struct Before {
    locks: Snap,
    lvbs: Vec<Option<(Option<Lvb>, bool)>>,
    callbacks: Vec<bool>,
}

impl World {
    fn new(slots: u8, model: KernelModel) -> World {
        let mut e = Engine::with_model(model);
        let mut v = Vec::new();
        let mut pids = Vec::new();
        for s in 0..slots {
            let pid = first_pid(s);
            v.push(Slot {
                open: true,
                eng: e.open_owner(pid),
                gen: 0,
                pid,
            });
            pids.push(pid);
        }
        World {
            e,
            model,
            ghosts: Vec::new(),
            slots: v,
            pids,
            locks: BTreeMap::new(),
            next_serial: 1,
            untold: BTreeSet::new(),
            valnotvalid: BTreeMap::new(),
            predicted: BTreeMap::new(),
        }
    }

    /// The slot, or `None` if it is closed and its engine id has been
    /// given to another open slot since.
    fn usable(&self, slot: u8) -> Option<(usize, Slot)> {
        let i = usize::from(slot);
        let s = self.slots[i];
        if !s.open && self.slots.iter().any(|o| o.open && o.eng == s.eng) {
            return None;
        }
        Some((i, s))
    }

    fn resolve(&self, sel: LockSel, before: &Snap) -> u32 {
        sel.resolve(before.keys().copied())
    }

    fn before(&self) -> Before {
        Before {
            locks: snap(&self.e),
            lvbs: NAMES.iter().map(|n| self.e.resource_lvb(n)).collect(),
            callbacks: self
                .slots
                .iter()
                .map(|s| s.open && self.e.has_callbacks(s.eng))
                .collect(),
        }
    }

    fn tracked_owner(&self, lkid: u32) -> Option<(usize, u32)> {
        self.locks.get(&lkid).and_then(|t| t.owner)
    }

    // -----------------------------------------------------------------
    // One step
    // -----------------------------------------------------------------

    fn step(&mut self, op: &Op) -> Result<(), String> {
        let b = self.before();
        self.op(op, &b)?;
        let after = snap(&self.e);
        self.after_common(&b, &after)?;
        if let Op::Drain { slot } = *op {
            if let Some((i, s)) = self.usable(slot) {
                if s.open {
                    self.check_drained(i, &after)?;
                }
            }
        }
        Ok(())
    }

    fn op(&mut self, op: &Op, b: &Before) -> Result<(), String> {
        match *op {
            Op::Open { slot, new_pid } => {
                let s = &mut self.slots[usize::from(slot)];
                if !s.open {
                    s.gen += 1;
                    s.pid = reopen_pid(s.pid, new_pid);
                    s.eng = self.e.open_owner(s.pid);
                    s.open = true;
                    self.pids.push(s.pid);
                }
                Ok(())
            }
            Op::Close { slot } => self.close(slot, b),
            Op::Unlock {
                slot,
                lock,
                flags,
                args,
                ..
            } if flags & CANCEL != 0 => self.cancel(slot, lock, flags, Some(args), b),
            Op::Request {
                slot,
                mode,
                name,
                flags,
                args,
                pid,
            } => self.request(slot, mode, name, flags, args, pid, b),
            Op::Convert {
                slot,
                lock,
                mode,
                flags,
                lvb,
                args,
                pid,
            } => self.convert(slot, lock, mode, flags, lvb, args, pid, b),
            Op::Adopt {
                slot,
                name,
                mode,
                match_orphan,
                flags,
                args,
            } => self.adopt(slot, name, mode, match_orphan, flags, args, b),
            Op::Unlock {
                slot,
                lock,
                flags,
                lvb,
                args,
            } => self.unlock(slot, lock, flags, lvb, args, b),
            Op::Cancel {
                slot,
                lock,
                flags,
                args,
            } => self.cancel(slot, lock, flags, Some(args), b),
            Op::Deadlock { slot, lock, flags } => self.cancel(slot, lock, flags, None, b),
            Op::Purge { slot, node, pid } => self.purge(slot, node, pid, b),
            Op::Read { slot, n } => {
                if let Some((i, _)) = self.usable(slot) {
                    for _ in 0..n {
                        if self.read_one(i)?.is_none() {
                            break;
                        }
                    }
                }
                Ok(())
            }
            Op::Drain { slot } => {
                if let Some((i, _)) = self.usable(slot) {
                    while self.read_one(i)?.is_some() {}
                }
                Ok(())
            }
        }
    }
}

/// `after` with lock `lkid`'s flags put back as in `old` (an unlock or
/// cancel ORs its flags into the lock's even when it then does nothing).
fn with_flags(after: &Snap, lkid: u32, old: &LockInfo) -> Snap {
    let mut s = after.clone();
    if let Some(l) = s.get_mut(&lkid) {
        l.flags = old.flags;
    }
    s
}

#[derive(Clone, Copy, Debug)]
enum LvbChange {
    Write(Lvb),
    Invalidate,
    MaybeInvalidate,
}

/// A queued conversion that a grant pass may grant in the mode it already
/// holds (its own, or its alternate one), which quirk 1 leaves on the
/// convert queue.
fn zombie_candidate(x: &LockInfo) -> bool {
    x.queue == Some(Queue::Converting) && (x.requested == x.granted || alt_grant(x))
}

/// Granted in the alternate mode of its flags.
fn alt_grant(l: &LockInfo) -> bool {
    let f = l.flags.bits();
    (f & ALTPR != 0 && l.granted == Some(LockMode::Pr))
        || (f & ALTCW != 0 && l.granted == Some(LockMode::Cw))
}

/// One line per lock, for failure reports.
fn describe(s: &Snap) -> String {
    s.values()
        .map(|l| {
            format!(
                "      {} {:?} gr={:?} rq={:?} q={:?} owner={:?} flags={:#x}\n",
                l.lkid,
                String::from_utf8_lossy(&l.resource),
                l.granted,
                l.requested,
                l.queue,
                l.owner.map(|o| o.index()),
                l.flags.bits()
            )
        })
        .collect()
}

/// Runs `case` on a fresh engine, checking every invariant after every
/// step, then drains every slot and checks that no lock is owed a
/// completion; once under each kernel model, 6.1 first. `Err` says where
/// an invariant first broke (its detail names the model).
pub fn check_case(case: &Case) -> Result<(), Failure> {
    for model in KernelModel::ALL {
        check_case_on(case, model).map_err(|mut f| {
            f.detail = format!("[Linux {model} model] {}", f.detail);
            f
        })?;
    }
    Ok(())
}

/// [`check_case`] under one kernel model.
pub fn check_case_on(case: &Case, model: KernelModel) -> Result<(), Failure> {
    case.validate()?;
    let mut w = World::new(case.slots, model);
    let mut trace = String::new();
    let fail = |stage, detail, trace: &String| Failure {
        stage,
        detail,
        trace: trace.clone(),
    };
    for (index, op) in case.ops.iter().enumerate() {
        let r = w.step(op);
        trace += &format!("  #{index} {op:?}\n{}", describe(&snap(&w.e)));
        if let Err(detail) = r {
            let op = op.clone();
            return Err(fail(Stage::Step { index, op }, detail, &trace));
        }
    }
    // Drain everyone: every operation has had its completion by now.
    for slot in 0..case.slots {
        if let Err(detail) = w.step(&Op::Drain { slot }) {
            return Err(fail(Stage::FinalDrain { slot }, detail, &trace));
        }
    }
    if let Some((id, t)) = w.ghosts.iter().find(|(_, t)| t.owner.is_some()) {
        let detail = format!("lock {id}, gone, is owed {} completions", t.owed);
        return Err(fail(Stage::End, detail, &trace));
    }
    for (id, t) in &w.locks {
        let queued = w.e.lock_info(*id).is_some_and(|l| l.requested.is_some());
        if t.owner.is_some() && !t.tainted && !t.zombie && t.owed != u32::from(queued) {
            let detail = format!("lock {id} is owed {} completions", t.owed);
            return Err(fail(Stage::End, detail, &trace));
        }
    }
    Ok(())
}
