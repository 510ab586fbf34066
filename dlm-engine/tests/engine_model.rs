//! Model test: the engine against a separate, deliberately simple reference
//! implementation of the Linux 6.1 `fs/dlm` rules (`lock.c`, `ast.c`,
//! `user.c`) on one node.
//!
//! The model below is written from the kernel source and the reference
//! notes, in the plainest form available: queues are `Vec`s of lock ids,
//! every lookup is a linear scan or a map lookup, and a lock is freed when
//! nothing refers to it any more (it is on no queue, on no owner, unlocking
//! or orphan list, and has no callback waiting), which is what the kernel's
//! reference counts amount to.
//!
//! Both are driven with the same random operation sequences; after every
//! step the test compares the `write()` result, the record of every read,
//! the `locks()` snapshot, the callbacks-pending flag of every owner, the
//! resource value blocks and the lock and resource counts.
//!
//! Where the kernel itself has no defined behaviour (it would crash), the
//! model follows the engine's documented choice; each such place says so.
//!
//! The sequences come from the generator in `gen/mod.rs`, which the
//! property test (`engine_props.rs`) shares; the model is this file's own.
//!
//! `DLM_MODEL_CASES` sets the number of sequences (default 2000), split
//! between the two tests of this file.
#![forbid(unsafe_code)]

mod gen;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use dlm_engine::{AstRecord, Engine, LockInfo, LockParams, OwnerId, Queue, UnlockParams};
use dlm_engine::{UserArgs, LVB_LEN};
use dlm_proto::status::{ECANCEL, EUNLOCK};
use dlm_proto::{Errno, LockMode, StatusFlags};
use gen::{case_strategy, check_coverage, first_pid, lock_pid, lvb_bytes, purge_pid, reopen_pid};
use gen::{user_args, Case, LockSel, Mix, Op, NAMES};
use gen::{ALTCW, ALTPR, CANCEL, CONVDEADLK, CONVERT, EXPEDITE, FORCEUNLOCK, HEADQUE, IVVALBLK};
use gen::{NODLCKWT, NOORDER, NOQUEUE, NOQUEUEBAST, ORPHAN, PERSISTENT, QUECVT, VALBLK};
use proptest::test_runner::{Config, TestCaseError, TestRunner};

type Lvb = [u8; LVB_LEN];

// ---------------------------------------------------------------------
// Kernel constants and tables (fs/dlm/lock.c), indexed [mode + 1]
// ---------------------------------------------------------------------

const IV: i8 = -1;
const NL: i8 = 0;
const CW: i8 = 2;
const PR: i8 = 3;
const PW: i8 = 4;
const EX: i8 = 5;

/// `__dlm_compat_matrix`: UN NL CR CW PR PW EX PD.
const COMPAT: [[u8; 8]; 8] = [
    [1, 1, 1, 1, 1, 1, 1, 0],
    [1, 1, 1, 1, 1, 1, 1, 0],
    [1, 1, 1, 1, 1, 1, 0, 0],
    [1, 1, 1, 1, 0, 0, 0, 0],
    [1, 1, 1, 0, 1, 0, 0, 0],
    [1, 1, 1, 0, 0, 0, 0, 0],
    [1, 1, 0, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, 0, 0],
];

/// `dlm_lvb_operations`: 1 read, 0 write, -1 nothing.
const LVB_OPS: [[i8; 8]; 8] = [
    [-1, 1, 1, 1, 1, 1, 1, -1],
    [-1, 1, 1, 1, 1, 1, 1, 0],
    [-1, -1, 1, 1, 1, 1, 1, 0],
    [-1, -1, -1, 1, 1, 1, 1, 0],
    [-1, -1, -1, -1, 1, 1, 1, 0],
    [-1, 0, 0, 0, 0, 0, 1, 0],
    [-1, 0, 0, 0, 0, 0, 0, 0],
    [-1, 0, 0, 0, 0, 0, 0, 0],
];

/// `__quecvt_compat_matrix`.
const QUECVT_OK: [[u8; 8]; 8] = [
    [0, 0, 0, 0, 0, 0, 0, 0],
    [0, 0, 1, 1, 1, 1, 1, 0],
    [0, 0, 0, 1, 1, 1, 1, 0],
    [0, 0, 0, 0, 1, 1, 1, 0],
    [0, 0, 0, 1, 0, 1, 1, 0],
    [0, 0, 0, 0, 0, 0, 1, 0],
    [0, 0, 0, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, 0, 0],
];

fn ix(mode: i8) -> usize {
    (mode + 1) as usize
}

fn compat(a: i8, b: i8) -> bool {
    COMPAT[ix(a)][ix(b)] == 1
}

fn lvb_op(gr: i8, rq: i8) -> i8 {
    LVB_OPS[ix(gr)][ix(rq)]
}

const SBF_DEMOTED: u8 = StatusFlags::DEMOTED.bits();
const SBF_VALNOTVALID: u8 = StatusFlags::VALNOTVALID.bits();
const SBF_ALTMODE: u8 = StatusFlags::ALTMODE.bits();

const E_AGAIN: i32 = -libc::EAGAIN;
const E_DEADLK: i32 = -libc::EDEADLK;
const E_INPROGRESS: i32 = -libc::EINPROGRESS;
const E_UNLOCK: i32 = -EUNLOCK;
const E_CANCEL: i32 = -ECANCEL;

/// `DLM_CALLBACKS_SIZE`.
const CALLBACKS: usize = 6;
/// This node's id (the engine's default).
const OUR_NODE: u32 = 1;

// ---------------------------------------------------------------------
// Coverage: how often the model took each interesting path
// ---------------------------------------------------------------------

const PATHS: [&str; 42] = [
    "request granted now",
    "request queued",
    "request EAGAIN",
    "NOQUEUEBAST blocking ASTs",
    "conversion granted now",
    "conversion queued",
    "conversion EDEADLK",
    "CONVDEADLK demotion",
    "demoted conversion granted after grant_pending_convert",
    "NODLCKWT self blocking AST",
    "grant_pending_convert demote restart",
    "granted in the alternate mode",
    "EXPEDITE grant",
    "NOORDER grant (not otherwise grantable)",
    "grant_pending_convert grant",
    "grant_pending_wait grant",
    "grant_pending blocking AST",
    "grant_pending CW blocking AST to a PR holder",
    "send_bast_queue blocking AST",
    "callback dropped: array full",
    "blocking AST dropped when added",
    "blocking AST skipped when read",
    "value block copied when read",
    "resource value block written",
    "VALNOTVALID set",
    "VALNOTVALID reported in a grant",
    "orphan adopted",
    "adoption EAGAIN",
    "purge of the caller's own locks",
    "orphan purged",
    "lock orphaned on close",
    "lock unlocked on close",
    "lock moved to the unlocking list",
    "unlocking lock released on close or purge",
    "unlock or cancel of an orphan on no queue",
    "dead lock left queued (FORCEUNLOCK in its flags)",
    "operation on an ended lock (ENOENT)",
    "HEADQUE insertion",
    "grant queue insertion not at the head",
    "resource revived from the toss list",
    "ended lock still queued when its owner closed",
    "lock granted in no mode (ALTPR/ALTCW quirk)",
];

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static HITS: [std::sync::atomic::AtomicU64; PATHS.len()] = [ZERO; PATHS.len()];

fn hit(path: &str) {
    let i = PATHS.iter().position(|p| *p == path).expect("known path");
    HITS[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

// ---------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum St {
    /// On no queue.
    None,
    Waiting,
    Granted,
    Convert,
}

#[derive(Clone, Copy, Debug)]
struct Cb {
    bast: bool,
    mode: i8,
    status: i32,
    sbflags: u8,
}

/// `struct dlm_user_args` less `xid` and `proc`.
#[derive(Clone, Copy, Debug, Default)]
struct Ua {
    castparam: u64,
    castaddr: u64,
    bastparam: u64,
    bastaddr: u64,
    lksb: u64,
}

impl From<UserArgs> for Ua {
    fn from(a: UserArgs) -> Ua {
        Ua {
            castparam: a.castparam,
            castaddr: a.castaddr,
            bastparam: a.bastparam,
            bastaddr: a.bastaddr,
            lksb: a.lksb,
        }
    }
}

#[derive(Debug)]
struct MLock {
    res: usize,
    /// The owning proc (`ua->proc`); meaningless once orphan or dead.
    owner: usize,
    orphan: bool,
    dead: bool,
    endoflife: bool,
    deadlock_cancel: bool,
    status: St,
    grmode: i8,
    rqmode: i8,
    highbast: i8,
    exflags: u32,
    sbflags: u8,
    pid: u32,
    ua: Ua,
    /// The user's value block buffer (`ua->lksb.sb_lvbptr`): allocated by
    /// a request or conversion with VALBLK, even one that then fails.
    lvb: Option<Lvb>,
    /// `lkb_lvbptr` is set: `validate_lock_args` attached the buffer. The
    /// grant and unlock value-block rules look only at this.
    lvb_attached: bool,
    /// `ua->lksb.sb_status` / `sb_flags`, written when a completion is read.
    sb_status: i32,
    sb_flags: u8,
    /// Mode of the last completion read, if any was.
    last_cast: Option<i8>,
    cbs: Vec<Cb>,
}

#[derive(Debug)]
struct MRes {
    name: Vec<u8>,
    grant: Vec<u32>,
    convert: Vec<u32>,
    wait: Vec<u32>,
    lvb: Option<Lvb>,
    valnotvalid: bool,
    /// Some lock refers to it (otherwise it is on the toss list).
    active: bool,
}

#[derive(Debug, Default)]
struct MProc {
    locks: Vec<u32>,
    unlocking: Vec<u32>,
    /// Locks with callbacks waiting, in the order they got their first.
    asts: Vec<u32>,
}

/// A lock or convert request as the model takes it.
#[derive(Clone, Debug)]
struct Req {
    mode: u8,
    flags: u32,
    lkid: u32,
    name: Vec<u8>,
    lvb: Lvb,
    args: UserArgs,
    pid: u32,
}

/// A lock as the snapshot shows it, with the owner as a model proc id.
#[derive(Clone, Debug, PartialEq, Eq)]
struct MInfo {
    lkid: u32,
    resource: Vec<u8>,
    granted: Option<LockMode>,
    requested: Option<LockMode>,
    queue: Option<Queue>,
    owner: Option<usize>,
    pid: u32,
    flags: u32,
}

#[derive(Default)]
struct Model {
    locks: BTreeMap<u32, MLock>,
    res: Vec<MRes>,
    procs: Vec<Option<MProc>>,
    orphans: Vec<u32>,
}

fn mode_of(m: i8) -> Option<LockMode> {
    LockMode::try_from(i32::from(m)).ok()
}

fn is_endoflife(mode: i8, status: i32) -> bool {
    match status {
        E_UNLOCK => true,
        E_CANCEL | E_DEADLK | E_AGAIN => mode == IV,
        s if s == -libc::ETIMEDOUT => mode == IV,
        _ => false,
    }
}

/// `set_lock_args` as reached from the device (ast and lksb exist).
fn set_lock_args_ok(mode: u8, flags: u32, namelen: usize) -> bool {
    if mode > 5 {
        return false;
    }
    if flags & CONVERT == 0 && namelen > 64 {
        return false;
    }
    if flags & CANCEL != 0 {
        return false;
    }
    if flags & QUECVT != 0 && flags & CONVERT == 0 {
        return false;
    }
    if flags & CONVDEADLK != 0 && flags & CONVERT == 0 {
        return false;
    }
    if flags & CONVDEADLK != 0 && flags & NOQUEUE != 0 {
        return false;
    }
    if flags & EXPEDITE != 0 && flags & CONVERT != 0 {
        return false;
    }
    if flags & EXPEDITE != 0 && flags & QUECVT != 0 {
        return false;
    }
    if flags & EXPEDITE != 0 && flags & NOQUEUE != 0 {
        return false;
    }
    if flags & EXPEDITE != 0 && mode != 0 {
        return false;
    }
    true
}

fn set_unlock_args_ok(flags: u32) -> bool {
    if flags & !(CANCEL | VALBLK | IVVALBLK | FORCEUNLOCK) != 0 {
        return false;
    }
    !(flags & CANCEL != 0 && flags & FORCEUNLOCK != 0)
}

impl Model {
    fn lk(&self, id: u32) -> &MLock {
        &self.locks[&id]
    }

    fn lkm(&mut self, id: u32) -> &mut MLock {
        self.locks.get_mut(&id).expect("model lock exists")
    }

    fn proc_mut(&mut self, p: usize) -> &mut MProc {
        self.procs[p].as_mut().expect("model proc is open")
    }

    fn is_open(&self, p: usize) -> bool {
        matches!(self.procs.get(p), Some(Some(_)))
    }

    fn open(&mut self) -> usize {
        self.procs.push(Some(MProc::default()));
        self.procs.len() - 1
    }

    // ----- bookkeeping -----

    fn on_own_list(&self, id: u32) -> bool {
        if self.orphans.contains(&id) {
            return true;
        }
        self.procs
            .iter()
            .flatten()
            .any(|p| p.locks.contains(&id) || p.unlocking.contains(&id))
    }

    /// Free every lock nothing refers to, then toss every resource no
    /// lock refers to (which frees its value block but keeps its
    /// VALNOTVALID mark).
    fn collect(&mut self) {
        let ids: Vec<u32> = self.locks.keys().copied().collect();
        for id in ids {
            let l = self.lk(id);
            if l.status == St::None && l.cbs.is_empty() && !self.on_own_list(id) {
                self.locks.remove(&id);
            }
        }
        for i in 0..self.res.len() {
            let used = self.locks.values().any(|l| l.res == i);
            if !used {
                self.res[i].lvb = None;
            }
            self.res[i].active = used;
        }
    }

    fn find_or_create_res(&mut self, name: &[u8]) -> usize {
        if let Some(i) = self.res.iter().position(|r| r.name == name) {
            if !self.res[i].active {
                hit("resource revived from the toss list");
            }
            return i;
        }
        self.res.push(MRes {
            name: name.to_vec(),
            grant: Vec::new(),
            convert: Vec::new(),
            wait: Vec::new(),
            lvb: None,
            valnotvalid: false,
            active: false,
        });
        self.res.len() - 1
    }

    // ----- callbacks (dlm_user_add_ast, dlm_add_lkb_callback) -----

    fn queue_cast(&mut self, id: u32, rv: i32) {
        let mut rv = rv;
        let l = self.lkm(id);
        if rv == E_CANCEL && l.deadlock_cancel {
            l.deadlock_cancel = false;
            rv = E_DEADLK;
        }
        let (mode, sbflags) = (l.grmode, l.sbflags);
        self.add_cb(id, false, mode, rv, sbflags);
    }

    fn queue_bast(&mut self, id: u32, mode: i8) {
        self.add_cb(id, true, mode, 0, 0);
    }

    fn add_cb(&mut self, id: u32, bast: bool, mode: i8, status: i32, sbflags: u8) {
        let l = self.lkm(id);
        if l.orphan || l.dead {
            return;
        }
        if bast && l.ua.bastaddr == 0 {
            return;
        }
        if !bast && is_endoflife(mode, status) {
            l.endoflife = true;
        }
        if l.cbs.len() == CALLBACKS {
            // "no callbacks": dropped, and nothing else happens.
            hit("callback dropped: array full");
            return;
        }
        let suppressed = match l.cbs.last() {
            Some(prev) if bast && prev.bast => {
                prev.mode == mode || (prev.mode > mode && prev.mode > PR)
            }
            _ => false,
        };
        if suppressed {
            hit("blocking AST dropped when added");
        } else {
            l.cbs.push(Cb {
                bast,
                mode,
                status,
                sbflags,
            });
        }
        let p = l.owner;
        let eol = l.endoflife;
        let proc_ = self.proc_mut(p);
        if !proc_.asts.contains(&id) {
            proc_.asts.push(id);
        }
        if eol {
            proc_.locks.retain(|&x| x != id);
            proc_.unlocking.retain(|&x| x != id);
        }
    }

    // ----- queues -----

    fn add_lkb(&mut self, r: usize, id: u32, st: St) {
        let headque = self.lk(id).exflags & HEADQUE != 0;
        self.lkm(id).status = st;
        match st {
            St::Waiting | St::Convert if headque && hit_and("HEADQUE insertion") => {
                unreachable!()
            }
            St::Waiting if headque => self.res[r].wait.insert(0, id),
            St::Waiting => self.res[r].wait.push(id),
            St::Convert if headque => self.res[r].convert.insert(0, id),
            St::Convert => self.res[r].convert.push(id),
            St::Granted => {
                // lkb_add_ordered: in front of the first lock whose
                // *rqmode* is below our granted mode.
                let mode = self.lk(id).grmode;
                let pos = self.res[r]
                    .grant
                    .iter()
                    .position(|&g| self.locks[&g].rqmode < mode);
                if pos.is_some_and(|i| i > 0) {
                    hit("grant queue insertion not at the head");
                }
                match pos {
                    Some(i) => self.res[r].grant.insert(i, id),
                    None => self.res[r].grant.push(id),
                }
            }
            St::None => unreachable!("add_lkb to no queue"),
        }
    }

    fn del_lkb(&mut self, r: usize, id: u32) {
        let res = &mut self.res[r];
        match self.locks[&id].status {
            St::Waiting => res.wait.retain(|&x| x != id),
            St::Convert => res.convert.retain(|&x| x != id),
            St::Granted => res.grant.retain(|&x| x != id),
            St::None => unreachable!("del_lkb of a lock on no queue"),
        }
        self.lkm(id).status = St::None;
    }

    // ----- grant rules -----

    fn queue_conflict(&self, queue: &[u32], id: u32) -> bool {
        let rq = self.lk(id).rqmode;
        queue
            .iter()
            .any(|&o| o != id && !compat(self.lk(o).grmode, rq))
    }

    fn can_be_granted_raw(&self, r: usize, id: u32, now: bool) -> bool {
        let l = self.lk(id);
        let res = &self.res[r];
        let conv = l.grmode != IV;
        if l.exflags & EXPEDITE != 0 {
            return true;
        }
        if self.queue_conflict(&res.grant, id) {
            return false;
        }
        if self.queue_conflict(&res.convert, id) {
            return false;
        }
        if now && conv && l.exflags & QUECVT == 0 {
            return true;
        }
        if now && conv && l.exflags & QUECVT != 0 {
            return res.convert.is_empty();
        }
        if l.exflags & NOORDER != 0 {
            hit("NOORDER grant (not otherwise grantable)");
            return true;
        }
        if !now && conv && res.convert.first() == Some(&id) {
            return true;
        }
        if now && !conv && res.convert.is_empty() && res.wait.is_empty() {
            return true;
        }
        if !now && !conv && res.convert.is_empty() && res.wait.first() == Some(&id) {
            return true;
        }
        false
    }

    fn conversion_deadlock(&self, r: usize, id2: u32) -> bool {
        let l2 = self.lk(id2);
        let mut ahead = false;
        for &id1 in &self.res[r].convert {
            if id1 == id2 {
                ahead = true;
                continue;
            }
            let l1 = self.lk(id1);
            if !ahead {
                if !compat(l2.grmode, l1.rqmode) {
                    return true;
                }
            } else if !compat(l2.grmode, l1.rqmode) && !compat(l1.grmode, l2.rqmode) {
                return true;
            }
        }
        false
    }

    /// `can_be_granted`: (granted?, conversion deadlock reported?).
    fn can_be_granted(&mut self, r: usize, id: u32, now: bool) -> (bool, bool) {
        let rqmode = self.lk(id).rqmode;
        let is_convert = self.lk(id).grmode != IV;
        if self.can_be_granted_raw(r, id, now) {
            return (true, false);
        }
        let exflags = self.lk(id).exflags;
        if is_convert && exflags & NOQUEUE == 0 && self.conversion_deadlock(r, id) {
            if exflags & CONVDEADLK != 0 {
                hit("CONVDEADLK demotion");
                let l = self.lkm(id);
                l.grmode = NL;
                l.sbflags |= SBF_DEMOTED;
                return (false, false);
            }
            return (false, true);
        }
        let alt = if rqmode != PR && exflags & ALTPR != 0 {
            PR
        } else if rqmode != CW && exflags & ALTCW != 0 {
            CW
        } else {
            return (false, false);
        };
        self.lkm(id).rqmode = alt;
        if self.can_be_granted_raw(r, id, now) {
            hit("granted in the alternate mode");
            self.lkm(id).sbflags |= SBF_ALTMODE;
            (true, false)
        } else {
            self.lkm(id).rqmode = rqmode;
            (false, false)
        }
    }

    fn set_lvb_lock(&mut self, r: usize, id: u32) {
        let l = self.lk(id);
        let b = lvb_op(l.grmode, l.rqmode);
        let valblk = l.exflags & VALBLK != 0;
        let attached = if l.lvb_attached { l.lvb } else { None };
        if b == 1 {
            if attached.is_none() || !valblk {
                return;
            }
            let Some(src) = self.res[r].lvb else {
                return;
            };
            self.lkm(id).lvb = Some(src);
        } else if b == 0 {
            if l.exflags & IVVALBLK != 0 {
                hit("VALNOTVALID set");
                self.res[r].valnotvalid = true;
                return;
            }
            let Some(mine) = attached else {
                return;
            };
            if !valblk {
                return;
            }
            hit("resource value block written");
            self.res[r].lvb = Some(mine);
            self.res[r].valnotvalid = false;
        }
        if self.res[r].valnotvalid {
            hit("VALNOTVALID reported in a grant");
            self.lkm(id).sbflags |= SBF_VALNOTVALID;
        }
    }

    fn set_lvb_unlock(&mut self, r: usize, id: u32) {
        let l = self.lk(id);
        if l.grmode < PW {
            return;
        }
        if l.exflags & IVVALBLK != 0 {
            hit("VALNOTVALID set");
            self.res[r].valnotvalid = true;
            return;
        }
        let Some(mine) = l.lvb.filter(|_| l.lvb_attached) else {
            return;
        };
        if l.exflags & VALBLK == 0 {
            return;
        }
        hit("resource value block written");
        self.res[r].lvb = Some(mine);
        self.res[r].valnotvalid = false;
    }

    fn grant_lock(&mut self, r: usize, id: u32) {
        self.set_lvb_lock(r, id);
        let l = self.lk(id);
        if l.grmode != l.rqmode {
            let st = l.status;
            self.lkm(id).grmode = self.lk(id).rqmode;
            if st != St::None {
                self.del_lkb(r, id);
            }
            self.add_lkb(r, id, St::Granted);
        }
        let l = self.lkm(id);
        l.rqmode = IV;
        l.highbast = 0;
    }

    fn grant_lock_pending(&mut self, r: usize, id: u32) {
        self.grant_lock(r, id);
        self.queue_cast(id, 0);
    }

    /// 0 nothing, 1 back to granted, -1 removed.
    fn revert_lock(&mut self, r: usize, id: u32) -> i32 {
        self.lkm(id).rqmode = IV;
        match self.lk(id).status {
            St::Convert => {
                self.del_lkb(r, id);
                self.add_lkb(r, id, St::Granted);
                1
            }
            St::Waiting => {
                self.del_lkb(r, id);
                self.lkm(id).grmode = IV;
                -1
            }
            St::Granted | St::None => 0,
        }
    }

    fn grant_pending_convert(&mut self, r: usize, high: i8, mut cw: Option<&mut bool>) -> i8 {
        let mut quit = false;
        loop {
            let mut grant_restart = false;
            let mut demote_restart = false;
            let mut hi = IV;
            for id in self.res[r].convert.clone() {
                let demoted = self.lk(id).sbflags & SBF_DEMOTED != 0;
                let (ok, deadlk) = self.can_be_granted(r, id, false);
                if ok {
                    hit("grant_pending_convert grant");
                    if self.lk(id).rqmode == IV {
                        hit("lock granted in no mode (ALTPR/ALTCW quirk)");
                    }
                    self.grant_lock_pending(r, id);
                    grant_restart = true;
                    continue;
                }
                if !demoted && self.lk(id).sbflags & SBF_DEMOTED != 0 {
                    hit("grant_pending_convert demote restart");
                    demote_restart = true;
                    continue;
                }
                if deadlk {
                    let l = self.lk(id);
                    if l.exflags & NODLCKWT != 0 && l.highbast < l.rqmode {
                        let rq = l.rqmode;
                        hit("NODLCKWT self blocking AST");
                        self.queue_bast(id, rq);
                        self.lkm(id).highbast = rq;
                    }
                    continue;
                }
                let rq = self.lk(id).rqmode;
                hi = hi.max(rq);
                if rq == CW {
                    if let Some(c) = cw.as_deref_mut() {
                        *c = true;
                    }
                }
            }
            if grant_restart {
                continue;
            }
            if demote_restart && !quit {
                quit = true;
                continue;
            }
            return high.max(hi);
        }
    }

    fn grant_pending_wait(&mut self, r: usize, high: i8, cw: &mut bool) -> i8 {
        let mut high = high;
        for id in self.res[r].wait.clone() {
            if self.can_be_granted(r, id, false).0 {
                hit("grant_pending_wait grant");
                self.grant_lock_pending(r, id);
            } else {
                let rq = self.lk(id).rqmode;
                high = high.max(rq);
                if rq == CW {
                    *cw = true;
                }
            }
        }
        high
    }

    fn grant_pending_locks(&mut self, r: usize) {
        let mut cw = false;
        let high = self.grant_pending_convert(r, IV, Some(&mut cw));
        let high = self.grant_pending_wait(r, high, &mut cw);
        if high == IV {
            return;
        }
        for id in self.res[r].grant.clone() {
            let l = self.lk(id);
            let needed = if l.grmode == PR && cw {
                l.highbast < EX
            } else {
                l.highbast < high && !compat(l.grmode, high)
            };
            if needed {
                let mode = if cw && high == PR && l.grmode == PR {
                    hit("grant_pending CW blocking AST to a PR holder");
                    CW
                } else {
                    high
                };
                hit("grant_pending blocking AST");
                self.queue_bast(id, mode);
                self.lkm(id).highbast = high;
            }
        }
    }

    fn send_bast_queue(&mut self, queue: Vec<u32>, id: u32) {
        let rq = self.lk(id).rqmode;
        for g in queue {
            if g == id {
                continue;
            }
            let gl = self.lk(g);
            let needed = if (gl.grmode == PR && rq == CW) || (gl.grmode == CW && rq == PR) {
                gl.highbast < EX
            } else {
                gl.highbast < rq && !compat(gl.grmode, rq)
            };
            if needed {
                hit("send_bast_queue blocking AST");
                self.queue_bast(g, rq);
                self.lkm(g).highbast = rq;
            }
        }
    }

    fn send_blocking_asts(&mut self, r: usize, id: u32) {
        self.send_bast_queue(self.res[r].grant.clone(), id);
    }

    fn send_blocking_asts_all(&mut self, r: usize, id: u32) {
        self.send_bast_queue(self.res[r].grant.clone(), id);
        self.send_bast_queue(self.res[r].convert.clone(), id);
    }

    // ----- do_* and their effects -----

    fn do_request(&mut self, r: usize, id: u32) -> i32 {
        if self.can_be_granted(r, id, true).0 {
            hit("request granted now");
            if self.lk(id).exflags & EXPEDITE != 0 {
                hit("EXPEDITE grant");
            }
            self.grant_lock(r, id);
            self.queue_cast(id, 0);
            return 0;
        }
        if self.lk(id).exflags & NOQUEUE == 0 {
            hit("request queued");
            self.add_lkb(r, id, St::Waiting);
            return E_INPROGRESS;
        }
        hit("request EAGAIN");
        self.queue_cast(id, E_AGAIN);
        E_AGAIN
    }

    fn do_request_effects(&mut self, r: usize, id: u32, err: i32) {
        if err == E_AGAIN {
            if self.lk(id).exflags & NOQUEUEBAST != 0 {
                hit("NOQUEUEBAST blocking ASTs");
                self.send_blocking_asts_all(r, id);
            }
        } else if err == E_INPROGRESS {
            self.send_blocking_asts(r, id);
        }
    }

    fn do_convert(&mut self, r: usize, id: u32) -> i32 {
        let (ok, deadlk) = self.can_be_granted(r, id, true);
        if ok {
            hit("conversion granted now");
            self.grant_lock(r, id);
            self.queue_cast(id, 0);
            return 0;
        }
        if deadlk && self.lk(id).exflags & NODLCKWT == 0 {
            hit("conversion EDEADLK");
            self.revert_lock(r, id);
            self.queue_cast(id, E_DEADLK);
            return E_DEADLK;
        }
        if self.lk(id).sbflags & SBF_DEMOTED != 0 {
            self.grant_pending_convert(r, IV, None);
            if self.can_be_granted_raw(r, id, true) {
                hit("demoted conversion granted after grant_pending_convert");
                self.grant_lock(r, id);
                self.queue_cast(id, 0);
                return 0;
            }
        }
        if self.lk(id).exflags & NOQUEUE == 0 {
            hit("conversion queued");
            self.del_lkb(r, id);
            self.add_lkb(r, id, St::Convert);
            return E_INPROGRESS;
        }
        self.queue_cast(id, E_AGAIN);
        E_AGAIN
    }

    fn do_convert_effects(&mut self, r: usize, id: u32, err: i32) {
        if err == 0 {
            self.grant_pending_locks(r);
        } else if err == E_AGAIN {
            if self.lk(id).exflags & NOQUEUEBAST != 0 {
                self.send_blocking_asts_all(r, id);
            }
        } else if err == E_INPROGRESS {
            self.send_blocking_asts(r, id);
        }
    }

    fn validate_unlock_args(&mut self, id: u32, flags: u32) -> Result<(), Errno> {
        let l = self.lkm(id);
        if l.endoflife {
            hit("operation on an ended lock (ENOENT)");
            return Err(Errno::ENOENT);
        }
        if l.status == St::None {
            // Not the kernel: only an orphan (whose waiting request was
            // cancelled, or which was unlocked, after its owner closed) is
            // on no queue without having ended; Linux 6.1 would unlink it
            // a second time and oops. The engine treats it as ended.
            hit("unlock or cancel of an orphan on no queue");
            return Err(Errno::ENOENT);
        }
        // `rv` is still -EINVAL when a cancel finds CANCEL already in the
        // lock's flags, or a FORCEUNLOCK finds FORCEUNLOCK there.
        if flags & CANCEL != 0 {
            if l.exflags & CANCEL != 0 {
                return Err(Errno::EINVAL);
            }
            // Nothing to cancel.
            if l.status == St::Granted {
                return Err(Errno::EBUSY);
            }
        } else if flags & FORCEUNLOCK != 0 && l.exflags & FORCEUNLOCK != 0 {
            return Err(Errno::EINVAL);
        }
        l.exflags |= flags;
        l.sbflags = 0;
        Ok(())
    }

    fn unlock_lock(&mut self, id: u32) {
        // Not the kernel: a lock on no queue (an orphan whose waiting
        // request was cancelled, or which was unlocked, after its owner
        // closed) would be unlinked a second time by Linux 6.1, which
        // crashes. The engine leaves such a lock alone.
        if self.lk(id).status == St::None {
            return;
        }
        let r = self.lk(id).res;
        self.set_lvb_unlock(r, id);
        self.del_lkb(r, id);
        self.lkm(id).grmode = IV;
        self.queue_cast(id, E_UNLOCK);
        self.grant_pending_locks(r);
    }

    fn cancel_lock(&mut self, id: u32) {
        let r = self.lk(id).res;
        if self.revert_lock(r, id) != 0 {
            self.queue_cast(id, E_CANCEL);
            self.grant_pending_locks(r);
        }
    }

    fn unlock_proc_lock(&mut self, id: u32) {
        if self
            .validate_unlock_args(id, FORCEUNLOCK | IVVALBLK)
            .is_ok()
        {
            self.unlock_lock(id);
        }
    }

    // ----- the device's commands -----

    fn lock(&mut self, p: usize, q: &Req) -> Result<u32, Errno> {
        if !self.is_open(p) {
            return Err(Errno::EBADF);
        }
        if q.args.castaddr == 0 || q.args.lksb == 0 {
            return Err(Errno::EINVAL);
        }
        let rv = if q.flags & CONVERT != 0 {
            self.user_convert(q).map(|()| 0)
        } else if q.flags & ORPHAN != 0 {
            self.user_adopt(p, q)
        } else {
            self.user_request(p, q)
        };
        self.collect();
        rv
    }

    fn user_request(&mut self, p: usize, q: &Req) -> Result<u32, Errno> {
        let id = (1u32..)
            .find(|i| !self.locks.contains_key(i))
            .expect("a free id");
        if !set_lock_args_ok(q.mode, q.flags, q.name.len()) {
            return Err(Errno::EINVAL);
        }
        let r = self.find_or_create_res(&q.name);
        self.locks.insert(
            id,
            MLock {
                res: r,
                owner: p,
                orphan: false,
                dead: false,
                endoflife: false,
                deadlock_cancel: false,
                status: St::None,
                grmode: IV,
                rqmode: q.mode as i8,
                highbast: 0,
                exflags: q.flags,
                sbflags: 0,
                pid: q.pid,
                ua: q.args.into(),
                lvb: (q.flags & VALBLK != 0).then_some([0; LVB_LEN]),
                lvb_attached: q.flags & VALBLK != 0,
                sb_status: 0,
                sb_flags: 0,
                last_cast: None,
                cbs: Vec::new(),
            },
        );
        let err = self.do_request(r, id);
        self.do_request_effects(r, id, err);
        if err != E_AGAIN {
            self.proc_mut(p).locks.push(id);
        }
        Ok(id)
    }

    fn user_convert(&mut self, q: &Req) -> Result<(), Errno> {
        let id = q.lkid;
        let Some(l) = self.locks.get_mut(&id) else {
            return Err(Errno::ENOENT);
        };
        // The user's arguments and value block are taken before any check.
        if q.flags & VALBLK != 0 && l.lvb.is_none() {
            l.lvb = Some([0; LVB_LEN]);
        }
        if let Some(b) = l.lvb.as_mut() {
            *b = q.lvb;
        }
        l.ua = q.args.into();
        if !set_lock_args_ok(q.mode, q.flags, 0) {
            return Err(Errno::EINVAL);
        }
        if l.status != St::Granted {
            return Err(Errno::EBUSY);
        }
        if q.flags & QUECVT != 0 && QUECVT_OK[ix(l.grmode)][ix(q.mode as i8)] == 0 {
            return Err(Errno::EINVAL);
        }
        l.exflags = q.flags;
        l.sbflags = 0;
        l.rqmode = q.mode as i8;
        l.pid = q.pid;
        l.lvb_attached |= l.lvb.is_some();
        let r = l.res;
        let err = self.do_convert(r, id);
        self.do_convert_effects(r, id, err);
        Ok(())
    }

    fn user_adopt(&mut self, p: usize, q: &Req) -> Result<u32, Errno> {
        let mut other_mode = false;
        for id in self.orphans.clone() {
            let l = self.lk(id);
            if self.res[l.res].name != q.name {
                continue;
            }
            if i32::from(l.grmode) != i32::from(q.mode) {
                other_mode = true;
                continue;
            }
            hit("orphan adopted");
            self.orphans.retain(|&x| x != id);
            let l = self.lkm(id);
            l.orphan = false;
            l.exflags = q.flags;
            l.pid = q.pid;
            l.owner = p;
            l.ua = q.args.into();
            self.proc_mut(p).locks.push(id);
            return Ok(id);
        }
        if other_mode {
            hit("adoption EAGAIN");
        }
        Err(if other_mode {
            Errno::EAGAIN
        } else {
            Errno::ENOENT
        })
    }

    fn unlock(
        &mut self,
        p: usize,
        lkid: u32,
        flags: u32,
        lvb: Lvb,
        args: UserArgs,
    ) -> Result<(), Errno> {
        if !self.is_open(p) {
            return Err(Errno::EBADF);
        }
        let rv = if flags & CANCEL != 0 {
            self.user_cancel(lkid, flags, args)
        } else {
            self.user_unlock(lkid, flags, lvb, args)
        };
        self.collect();
        rv
    }

    fn user_unlock(&mut self, id: u32, flags: u32, lvb: Lvb, args: UserArgs) -> Result<(), Errno> {
        let Some(l) = self.locks.get_mut(&id) else {
            return Err(Errno::ENOENT);
        };
        if let Some(b) = l.lvb.as_mut() {
            *b = lvb;
        }
        if args.castparam != 0 {
            l.ua.castparam = args.castparam;
        }
        l.ua.lksb = args.lksb;
        if !set_unlock_args_ok(flags) {
            return Err(Errno::EINVAL);
        }
        match self.validate_unlock_args(id, flags) {
            Ok(()) => self.unlock_lock(id),
            Err(e) if e == Errno::EBUSY && flags & FORCEUNLOCK != 0 => {}
            Err(e) => return Err(e),
        }
        // dlm_user_unlock: a lock still on its owner's list moves to the
        // owner's "unlocking" list. (For an orphan the kernel would move it
        // onto the list of the proc that is gone; it stays an orphan here,
        // as in the engine.)
        let l = self.lk(id);
        if !l.orphan && !l.dead {
            let p = l.owner;
            let pr = self.proc_mut(p);
            if pr.locks.contains(&id) || pr.unlocking.contains(&id) {
                hit("lock moved to the unlocking list");
                pr.locks.retain(|&x| x != id);
                pr.unlocking.retain(|&x| x != id);
                pr.unlocking.insert(0, id);
            }
        }
        Ok(())
    }

    fn user_cancel(&mut self, id: u32, flags: u32, args: UserArgs) -> Result<(), Errno> {
        let Some(l) = self.locks.get_mut(&id) else {
            return Err(Errno::ENOENT);
        };
        if args.castparam != 0 {
            l.ua.castparam = args.castparam;
        }
        l.ua.lksb = args.lksb;
        if !set_unlock_args_ok(flags) {
            return Err(Errno::EINVAL);
        }
        match self.validate_unlock_args(id, flags) {
            Ok(()) => self.cancel_lock(id),
            Err(e) if e == Errno::EBUSY => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }

    fn deadlock(&mut self, p: usize, id: u32, flags: u32) -> Result<(), Errno> {
        if !self.is_open(p) {
            return Err(Errno::EBADF);
        }
        if !self.locks.contains_key(&id) {
            return Err(Errno::ENOENT);
        }
        if !set_unlock_args_ok(flags) {
            return Err(Errno::EINVAL);
        }
        match self.validate_unlock_args(id, flags) {
            Ok(()) => {
                self.lkm(id).deadlock_cancel = true;
                self.cancel_lock(id);
            }
            Err(e) if e == Errno::EBUSY => {}
            Err(e) => return Err(e),
        }
        self.collect();
        Ok(())
    }

    fn purge(&mut self, p: usize, nodeid: u32, pid: u32, caller_pid: u32) -> Result<(), Errno> {
        if !self.is_open(p) {
            return Err(Errno::EBADF);
        }
        if nodeid != 0 && nodeid != OUR_NODE {
            return Err(Errno::ENOBUFS);
        }
        if pid == caller_pid {
            hit("purge of the caller's own locks");
            while let Some(&id) = self.proc_mut(p).locks.first() {
                self.proc_mut(p).locks.remove(0);
                self.lkm(id).dead = true;
                self.unlock_proc_lock(id);
            }
            self.release_unlocking_and_asts(p);
        } else {
            // do_purge: pid 0 means every orphan.
            for id in self.orphans.clone() {
                if pid != 0 && self.lk(id).pid != pid {
                    continue;
                }
                hit("orphan purged");
                self.unlock_proc_lock(id);
                self.orphans.retain(|&x| x != id);
            }
        }
        self.collect();
        Ok(())
    }

    fn release_unlocking_and_asts(&mut self, p: usize) {
        for id in std::mem::take(&mut self.proc_mut(p).unlocking) {
            hit("unlocking lock released on close or purge");
            self.lkm(id).dead = true;
        }
        for id in std::mem::take(&mut self.proc_mut(p).asts) {
            self.lkm(id).cbs.clear();
        }
    }

    fn close(&mut self, p: usize) -> Result<(), Errno> {
        if !self.is_open(p) {
            return Err(Errno::EBADF);
        }
        while let Some(&id) = self.proc_mut(p).locks.first() {
            self.proc_mut(p).locks.remove(0);
            if self.lk(id).exflags & PERSISTENT != 0 {
                hit("lock orphaned on close");
                self.lkm(id).orphan = true;
                self.orphans.push(id);
                if self.validate_unlock_args(id, 0).is_ok() {
                    self.cancel_lock(id);
                }
            } else {
                hit("lock unlocked on close");
                self.lkm(id).dead = true;
                self.unlock_proc_lock(id);
                if self.lk(id).status != St::None {
                    hit("dead lock left queued (FORCEUNLOCK in its flags)");
                }
            }
        }
        self.release_unlocking_and_asts(p);
        // Not the kernel: a lock that ended while still on a queue (after
        // the ALTPR/ALTCW quirk) is on none of the owner's lists; Linux
        // 6.1 leaves it pointing at the freed proc. The engine marks it
        // dead.
        for l in self.locks.values_mut() {
            if l.owner == p && !l.orphan && !l.dead && l.status != St::None {
                hit("ended lock still queued when its owner closed");
                l.dead = true;
            }
        }
        self.procs[p] = None;
        self.collect();
        Ok(())
    }

    fn read(&mut self, p: usize) -> Option<AstRecord> {
        let rec = self.read_one(p);
        self.collect();
        rec
    }

    fn read_one(&mut self, p: usize) -> Option<AstRecord> {
        if !self.is_open(p) {
            return None;
        }
        loop {
            let id = *self.proc_mut(p).asts.first()?;
            let l = self.lkm(id);
            // lkb_last_cast is zeroed until a completion is read: mode NL.
            let old_mode = l.last_cast.unwrap_or(NL);
            let cb = l.cbs.remove(0);
            let resid = l.cbs.len();
            let skip = cb.bast && l.last_cast.is_some_and(|m| compat(cb.mode, m));
            if skip {
                hit("blocking AST skipped when read");
            }
            if !skip && !cb.bast {
                l.last_cast = Some(cb.mode);
            }
            if resid == 0 {
                self.proc_mut(p).asts.remove(0);
            }
            if skip {
                continue;
            }
            let l = self.lkm(id);
            let mut copy_lvb = false;
            if !cb.bast {
                copy_lvb = cb.status == 0 && l.lvb.is_some() && lvb_op(old_mode, cb.mode) != 0;
                if copy_lvb {
                    hit("value block copied when read");
                }
                l.sb_status = cb.status;
                l.sb_flags = cb.sbflags;
            }
            return Some(AstRecord {
                lkid: id,
                astaddr: if cb.bast {
                    l.ua.bastaddr
                } else {
                    l.ua.castaddr
                },
                astparam: if cb.bast {
                    l.ua.bastparam
                } else {
                    l.ua.castparam
                },
                user_lksb: l.ua.lksb,
                status: l.sb_status,
                sb_flags: l.sb_flags,
                bast_mode: if cb.bast { cb.mode as u8 } else { 0 },
                lvb: if copy_lvb { l.lvb } else { None },
            });
        }
    }

    // ----- observation -----

    fn snapshot(&self) -> Vec<MInfo> {
        self.locks
            .iter()
            .map(|(&id, l)| MInfo {
                lkid: id,
                resource: self.res[l.res].name.clone(),
                granted: mode_of(l.grmode),
                requested: match l.status {
                    St::Waiting | St::Convert => mode_of(l.rqmode),
                    _ => None,
                },
                queue: match l.status {
                    St::None => None,
                    St::Waiting => Some(Queue::Waiting),
                    St::Granted => Some(Queue::Granted),
                    St::Convert => Some(Queue::Converting),
                },
                owner: (!l.orphan && !l.dead).then_some(l.owner),
                pid: l.pid,
                flags: l.exflags,
            })
            .collect()
    }

    fn resource_lvb(&self, name: &[u8]) -> Option<(Option<Lvb>, bool)> {
        let r = self.res.iter().find(|r| r.name == name && r.active)?;
        Some((r.lvb, r.valnotvalid))
    }

    fn has_callbacks(&self, p: usize) -> bool {
        matches!(self.procs.get(p), Some(Some(pr)) if !pr.asts.is_empty())
    }

    fn resource_count(&self) -> usize {
        self.res.iter().filter(|r| r.active).count()
    }
}

// ---------------------------------------------------------------------
// The harness: one engine, one model, owner slots mapped to both
// ---------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Slot {
    open: bool,
    eng: OwnerId,
    model: usize,
    pid: u32,
}

struct World {
    e: Engine,
    m: Model,
    slots: Vec<Slot>,
    /// Every pid ever used by a slot, for purges of orphans.
    pids: Vec<u32>,
}

/// What one step returned, on either side.
#[derive(Debug, PartialEq)]
enum Outcome {
    Lock(Result<u32, Errno>),
    Unit(Result<(), Errno>),
    Reads(Vec<AstRecord>),
    Skipped,
}

impl World {
    fn new(slots: u8) -> World {
        let mut w = World {
            e: Engine::new(),
            m: Model::default(),
            slots: Vec::new(),
            pids: Vec::new(),
        };
        for s in 0..slots {
            let pid = first_pid(s);
            let eng = w.e.open_owner(pid);
            let model = w.m.open();
            w.slots.push(Slot {
                open: true,
                eng,
                model,
                pid,
            });
            w.pids.push(pid);
        }
        w
    }

    /// The slot's owners, unless the slot is closed and its engine id
    /// has been reused by an open slot (then the step is skipped).
    fn owners(&self, slot: u8) -> Option<Slot> {
        let s = self.slots[usize::from(slot)];
        if !s.open && self.slots.iter().any(|o| o.open && o.eng == s.eng) {
            return None;
        }
        Some(s)
    }

    fn resolve(&self, sel: LockSel) -> u32 {
        sel.resolve(self.m.locks.keys().copied())
    }

    fn req_pid(&self, s: &Slot, sel: u8) -> u32 {
        lock_pid(sel, s.pid, &self.pids)
    }

    /// Run one operation on both sides.
    fn step(&mut self, op: &Op) -> (Outcome, Outcome) {
        match *op {
            Op::Open { slot, new_pid } => {
                let s = &mut self.slots[usize::from(slot)];
                if s.open {
                    return (Outcome::Skipped, Outcome::Skipped);
                }
                let pid = reopen_pid(s.pid, new_pid);
                s.pid = pid;
                s.eng = self.e.open_owner(pid);
                s.model = self.m.open();
                s.open = true;
                self.pids.push(pid);
                (Outcome::Skipped, Outcome::Skipped)
            }
            Op::Close { slot } => {
                let Some(s) = self.owners(slot) else {
                    return (Outcome::Skipped, Outcome::Skipped);
                };
                let a = self.e.close_owner(s.eng);
                let b = self.m.close(s.model);
                self.slots[usize::from(slot)].open = false;
                (Outcome::Unit(a), Outcome::Unit(b))
            }
            Op::Request {
                slot,
                mode,
                name,
                flags,
                args,
                pid,
            } => {
                let Some(s) = self.owners(slot) else {
                    return (Outcome::Skipped, Outcome::Skipped);
                };
                let q = Req {
                    mode,
                    flags,
                    lkid: 0,
                    name: NAMES[usize::from(name)].to_vec(),
                    lvb: lvb_bytes(0xEE),
                    args: user_args(args),
                    pid: self.req_pid(&s, pid),
                };
                self.lock_both(&s, &q)
            }
            Op::Convert {
                slot,
                lock,
                mode,
                flags,
                lvb,
                args,
                pid,
            } => {
                let Some(s) = self.owners(slot) else {
                    return (Outcome::Skipped, Outcome::Skipped);
                };
                let q = Req {
                    mode,
                    flags,
                    lkid: self.resolve(lock),
                    name: Vec::new(),
                    lvb: lvb_bytes(lvb),
                    args: user_args(args),
                    pid: self.req_pid(&s, pid),
                };
                self.lock_both(&s, &q)
            }
            Op::Adopt {
                slot,
                name,
                mode,
                match_orphan,
                flags,
                args,
            } => {
                let Some(s) = self.owners(slot) else {
                    return (Outcome::Skipped, Outcome::Skipped);
                };
                let name_bytes = NAMES[usize::from(name)];
                let orphan_mode = self
                    .m
                    .orphans
                    .iter()
                    .map(|id| self.m.lk(*id))
                    .find(|l| self.m.res[l.res].name == name_bytes && l.grmode != IV)
                    .map(|l| l.grmode as u8);
                let q = Req {
                    mode: match (match_orphan, orphan_mode) {
                        (true, Some(m)) => m,
                        _ => mode,
                    },
                    flags,
                    lkid: 0,
                    name: NAMES[usize::from(name)].to_vec(),
                    lvb: lvb_bytes(0xAD),
                    args: user_args(args),
                    pid: s.pid,
                };
                self.lock_both(&s, &q)
            }
            Op::Unlock {
                slot,
                lock,
                flags,
                lvb,
                args,
            } => self.unlock_both(slot, lock, flags, lvb, args),
            Op::Cancel {
                slot,
                lock,
                flags,
                args,
            } => self.unlock_both(slot, lock, flags, 0x11, args),
            Op::Deadlock { slot, lock, flags } => {
                let Some(s) = self.owners(slot) else {
                    return (Outcome::Skipped, Outcome::Skipped);
                };
                let lkid = self.resolve(lock);
                let a = self.e.deadlock_cancel(s.eng, lkid, flags);
                let b = self.m.deadlock(s.model, lkid, flags);
                (Outcome::Unit(a), Outcome::Unit(b))
            }
            Op::Purge { slot, node, pid } => {
                let Some(s) = self.owners(slot) else {
                    return (Outcome::Skipped, Outcome::Skipped);
                };
                let target = purge_pid(pid, s.pid, &self.pids);
                let node = u32::from(node);
                let a = self.e.purge(s.eng, node, target, s.pid);
                let b = self.m.purge(s.model, node, target, s.pid);
                (Outcome::Unit(a), Outcome::Unit(b))
            }
            Op::Read { slot, .. } | Op::Drain { slot } => {
                let Some(s) = self.owners(slot) else {
                    return (Outcome::Skipped, Outcome::Skipped);
                };
                let max = match *op {
                    Op::Read { n, .. } => n,
                    _ => 64,
                };
                let (mut a, mut b) = (Vec::new(), Vec::new());
                for _ in 0..max {
                    let x = self.e.read(s.eng);
                    let y = self.m.read(s.model);
                    let done = x.is_none() && y.is_none();
                    a.extend(x);
                    b.extend(y);
                    if done || a.len() != b.len() {
                        break;
                    }
                }
                (Outcome::Reads(a), Outcome::Reads(b))
            }
        }
    }

    fn unlock_both(
        &mut self,
        slot: u8,
        lock: LockSel,
        flags: u32,
        lvb: u8,
        args: u8,
    ) -> (Outcome, Outcome) {
        let Some(s) = self.owners(slot) else {
            return (Outcome::Skipped, Outcome::Skipped);
        };
        let lkid = self.resolve(lock);
        let up = UnlockParams {
            lkid,
            flags,
            lvb: lvb_bytes(lvb),
            args: user_args(args),
        };
        let a = self.e.unlock(s.eng, &up);
        let b = self.m.unlock(s.model, lkid, flags, up.lvb, up.args);
        (Outcome::Unit(a), Outcome::Unit(b))
    }

    fn lock_both(&mut self, s: &Slot, q: &Req) -> (Outcome, Outcome) {
        let p = LockParams {
            mode: q.mode,
            flags: q.flags,
            lkid: q.lkid,
            name: &q.name,
            lvb: q.lvb,
            args: q.args,
            pid: q.pid,
        };
        let a = self.e.lock(s.eng, &p);
        let b = self.m.lock(s.model, q);
        (Outcome::Lock(a), Outcome::Lock(b))
    }

    fn slot_of_engine(&self, o: OwnerId) -> Result<usize, String> {
        self.slots
            .iter()
            .position(|s| s.open && s.eng == o)
            .ok_or_else(|| format!("owner {o:?} is not an open slot"))
    }

    fn slot_of_model(&self, p: usize) -> Result<usize, String> {
        self.slots
            .iter()
            .position(|s| s.open && s.model == p)
            .ok_or_else(|| format!("model proc {p} is not an open slot"))
    }

    /// Compare everything observable; `Err` describes the first difference.
    fn compare(&self) -> Result<(), String> {
        let eng: Vec<LockInfo> = self.e.locks();
        let model = self.m.snapshot();
        let norm_e: Vec<String> = eng
            .iter()
            .map(|l| {
                let owner = l.owner.map(|o| self.slot_of_engine(o));
                format!(
                    "{} {:?} gr={:?} rq={:?} q={:?} owner={:?} pid={} flags={:#x}",
                    l.lkid,
                    String::from_utf8_lossy(&l.resource),
                    l.granted,
                    l.requested,
                    l.queue,
                    owner,
                    l.pid,
                    l.flags.bits()
                )
            })
            .collect();
        let norm_m: Vec<String> = model
            .iter()
            .map(|l| {
                let owner = l.owner.map(|p| self.slot_of_model(p));
                format!(
                    "{} {:?} gr={:?} rq={:?} q={:?} owner={:?} pid={} flags={:#x}",
                    l.lkid,
                    String::from_utf8_lossy(&l.resource),
                    l.granted,
                    l.requested,
                    l.queue,
                    owner,
                    l.pid,
                    l.flags
                )
            })
            .collect();
        if norm_e != norm_m {
            return Err(format!(
                "locks() differ\n  engine: {norm_e:#?}\n  model:  {norm_m:#?}"
            ));
        }
        if self.e.lock_count() != self.m.locks.len() {
            return Err(format!(
                "lock_count {} vs model {}",
                self.e.lock_count(),
                self.m.locks.len()
            ));
        }
        if self.e.resource_count() != self.m.resource_count() {
            return Err(format!(
                "resource_count {} vs model {}",
                self.e.resource_count(),
                self.m.resource_count()
            ));
        }
        for name in NAMES {
            let a = self.e.resource_lvb(name);
            let b = self.m.resource_lvb(name);
            if a != b {
                return Err(format!(
                    "resource_lvb({:?}): engine {a:?}, model {b:?}",
                    String::from_utf8_lossy(name)
                ));
            }
        }
        for (i, s) in self.slots.iter().enumerate() {
            if !s.open {
                continue;
            }
            let a = self.e.has_callbacks(s.eng);
            let b = self.m.has_callbacks(s.model);
            if a != b {
                return Err(format!("has_callbacks(slot {i}): engine {a}, model {b}"));
            }
        }
        Ok(())
    }
}

fn run_case(case: &Case) -> Result<(), TestCaseError> {
    let mut w = World::new(case.slots);
    let mut trace = String::new();
    for (i, op) in case.ops.iter().enumerate() {
        let (a, b) = w.step(op);
        let _ = writeln!(trace, "  #{i}: {op:?} -> {a:?}");
        if a != b {
            return Err(TestCaseError::fail(format!(
                "step {i} {op:?}: engine {a:?}, model {b:?}\ntrace:\n{trace}"
            )));
        }
        if let Err(msg) = w.compare() {
            return Err(TestCaseError::fail(format!(
                "after step {i} {op:?}: {msg}\ntrace:\n{trace}"
            )));
        }
    }
    // Drain everyone: the last callbacks must agree too.
    for slot in 0..case.slots {
        let op = Op::Drain { slot };
        let (a, b) = w.step(&op);
        if a != b {
            return Err(TestCaseError::fail(format!(
                "final drain of slot {slot}: engine {a:?}, model {b:?}\ntrace:\n{trace}"
            )));
        }
    }
    w.compare()
        .map_err(|msg| TestCaseError::fail(format!("after final drain: {msg}\ntrace:\n{trace}")))
}

fn hit_and(path: &str) -> bool {
    hit(path);
    false
}

/// With `DLM_MODEL_STATS` set, print how often each path was taken.
fn report_coverage() {
    if std::env::var_os("DLM_MODEL_STATS").is_none() {
        return;
    }
    for (name, n) in PATHS.iter().zip(HITS.iter()) {
        eprintln!(
            "{:>10}  {name}",
            n.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
}

fn cases_from_env() -> u32 {
    std::env::var("DLM_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn run(mix: Mix, names: std::ops::RangeInclusive<u8>, cases: u32, salt: &str) {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&case_strategy(mix, names), |case| run_case(&case));
    if let Err(e) = result {
        panic!("{salt}: engine and model disagree: {e}");
    }
    report_coverage();
}

/// Every kind of operation, with reads interleaved at random. A read
/// takes one callback: the engine and the model are compared after each.
const GENERAL: Mix = Mix {
    open: 3,
    close: 2,
    request: 22,
    convert: 16,
    adopt: 3,
    unlock: 8,
    cancel: 5,
    deadlock: 2,
    purge: 2,
    read: 24,
    drain: 5,
    read_max: 1,
};

/// One or two resources, few reads and many conversions, so that callback
/// arrays fill up, queues grow long and conversions deadlock.
const CONTENTION: Mix = Mix {
    open: 2,
    close: 1,
    request: 20,
    convert: 26,
    adopt: 2,
    unlock: 5,
    cancel: 6,
    deadlock: 2,
    purge: 1,
    read: 6,
    drain: 2,
    read_max: 1,
};

#[test]
fn engine_matches_model() {
    let cases = cases_from_env();
    run(GENERAL, 2..=4, cases - cases / 2, "general mix");
}

#[test]
fn engine_matches_model_under_contention() {
    run(CONTENTION, 1..=2, cases_from_env() / 2, "contention mix");
}

/// The generator still produces every choice the two mixes above rely on.
#[test]
fn generator_covers_both_mixes() {
    check_coverage(GENERAL, 2..=4, 500);
    check_coverage(CONTENTION, 1..=2, 500);
}

/// The engine bugs these tests found, each as a fixed sequence run through
/// the same comparison, with the fact that shows the fix asserted too.
/// `LockSel(8 * n)` names lock id `n`.
#[test]
fn engine_bugs_found_by_the_model_stay_fixed() {
    let none = 0u32;
    let args = 0u8;
    let request = |slot, mode, name, flags| Op::Request {
        slot,
        mode,
        name,
        flags,
        args,
        pid: 0,
    };
    let convert = |slot, id: u16, mode, flags| Op::Convert {
        slot,
        lock: LockSel(8 * id),
        mode,
        flags: CONVERT | flags,
        lvb: 0,
        args,
        pid: 0,
    };
    let unlock = |slot, id: u16, flags| Op::Unlock {
        slot,
        lock: LockSel(8 * id),
        flags,
        lvb: 0,
        args,
    };
    let run = |ops: Vec<Op>| {
        let case = Case { slots: 3, ops };
        if let Err(e) = run_case(&case) {
            panic!("{e}");
        }
        let mut w = World::new(3);
        let outcomes: Vec<Outcome> = case.ops.iter().map(|op| w.step(op).0).collect();
        (w, outcomes)
    };

    // A: an unlock whose EUNLOCK does not fit in the lock's six callbacks
    // leaves the lock on its owner's list; dlm_user_unlock moves it to
    // proc->unlocking, so closing the owner drops it instead of orphaning
    // it. (The engine orphaned it: an ended orphan, adoptable as EAGAIN.)
    let mut ops = vec![request(0, 0, 0, PERSISTENT)];
    // Five conversions (keeping PERSISTENT) fill the array with the grant.
    ops.extend((0..5).map(|_| convert(0, 1, 0, PERSISTENT)));
    ops.extend([
        unlock(0, 1, none),
        Op::Close { slot: 0 },
        Op::Adopt {
            slot: 1,
            name: 0,
            mode: 0,
            match_orphan: false,
            flags: ORPHAN,
            args,
        },
    ]);
    let (w, out) = run(ops);
    assert_eq!(out[8], Outcome::Lock(Err(Errno::ENOENT)));
    assert_eq!(w.e.lock_count(), 0);

    // B: unlocking an orphan whose waiting request was cancelled when its
    // owner closed (it is on no queue) corrupted the grant queue, and a
    // later EX request was granted beside a PR holder.
    let (w, out) = run(vec![
        request(1, 3, 0, none),
        request(0, 5, 0, PERSISTENT),
        Op::Close { slot: 0 },
        unlock(2, 2, none),
        request(2, 5, 0, none),
    ]);
    assert_eq!(out[3], Outcome::Unit(Err(Errno::ENOENT)));
    assert_eq!(w.e.lock_info(3).and_then(|l| l.queue), Some(Queue::Waiting));

    // C: a dead lock left queued (its flags carried FORCEUNLOCK when its
    // owner closed) and then unlocked by someone else was never freed:
    // the engine lacked the reference find_lkb holds until dlm_put_lkb.
    let (w, out) = run(vec![
        request(1, 0, 0, none),
        convert(0, 1, 1, FORCEUNLOCK),
        Op::Close { slot: 1 },
        unlock(0, 1, none),
        request(0, 0, 1, none),
    ]);
    assert_eq!(
        out[4],
        Outcome::Lock(Ok(1)),
        "the dead lock's id is free again"
    );
    assert!(w.e.lock_info(1).is_some_and(|l| l.resource == b"beta"));

    // D: a lock that the ALTCW quirk left granted in no mode, converted
    // and then deadlock-cancelled, ends (IV-mode EDEADLK) while still on
    // the grant queue and off its owner's list. Once the owner closed, a
    // completion for it hit `unreachable!` (Linux 6.1: use after free).
    let (w, out) = run(vec![
        request(0, 2, 0, none),
        request(1, 2, 0, none),
        convert(1, 2, 5, none),
        convert(0, 1, 3, ALTCW | NODLCKWT),
        Op::Cancel {
            slot: 1,
            lock: LockSel(16),
            flags: CANCEL,
            args,
        },
        Op::Drain { slot: 0 },
        request(1, 5, 0, none),
        convert(0, 1, 5, none),
        Op::Deadlock {
            slot: 0,
            lock: LockSel(8),
            flags: none,
        },
        Op::Close { slot: 0 },
        convert(1, 1, 0, NOQUEUE),
    ]);
    assert_eq!(out[10], Outcome::Lock(Ok(0)));
    let zombie = w.e.lock_info(1).expect("still queued");
    assert_eq!(
        (zombie.queue, zombie.granted, zombie.owner),
        (Some(Queue::Granted), None, None)
    );
}
