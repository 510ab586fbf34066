//! The lock engine: a pure state machine with the kernel's exact semantics.
//!
//! One [`Engine`] is one lockspace. It does no I/O, starts no threads and
//! contains no `unsafe`. Owners ([`OwnerId`]) stand for what the kernel
//! calls a process's open lockspace fd (a `struct dlm_user_proc`): they
//! submit operations, and each owner has a queue of callbacks that it
//! drains with [`Engine::read`], exactly as a process drains its fd with
//! `read()`.
//!
//! The engine follows Linux's `fs/dlm/lock.c`, `fs/dlm/ast.c` and
//! `fs/dlm/user.c` on a single node, where every resource is mastered
//! locally, as Linux 6.1 or 6.12 has them: the [`KernelModel`] given to
//! [`Engine::with_model`] chooses ([`Engine::new`] follows 6.1). The two
//! differ in how callbacks are queued, and in what follows from that (see
//! [`KernelModel`]'s list). Each operation is named after the kernel function it mirrors;
//! the rules are listed in `docs/lock-semantics.md` of the reference
//! material. Where that page and the kernel differ, the kernel is followed
//! and the difference is noted next to the code.
//!
//! The fallback daemon `dlmd` hosts it: it takes the device's records
//! ([`dlm_proto::records`]) in through [`Engine::device_write`] and hands
//! back [`AstRecord`]s, and it knows nothing of the client crate `dlm`.
//!
//! # Examples
//!
//! A blocking AST, and a grant when the holder unlocks:
//!
//! ```
//! use dlm_engine::{Engine, LockParams, UserArgs};
//! use dlm_proto::{LockFlags, LockMode};
//!
//! let mut ls = Engine::new();
//! let a = ls.open_owner(100);
//! let b = ls.open_owner(200);
//! let args = UserArgs { castaddr: 1, lksb: 1, bastaddr: 2, ..Default::default() };
//!
//! let la = ls.lock(a, &LockParams::new(LockMode::Ex, b"res", args)).unwrap();
//! let granted = ls.read(a).unwrap();
//! assert_eq!((granted.lkid, granted.status, granted.bast_mode), (la, 0, 0));
//!
//! // B asks for PR: it waits, and A gets a blocking AST for PR.
//! let lb = ls.lock(b, &LockParams::new(LockMode::Pr, b"res", args)).unwrap();
//! assert!(ls.read(b).is_none());
//! assert_eq!(ls.read(a).unwrap().bast_mode, LockMode::Pr as u8);
//!
//! // A unlocks: A sees EUNLOCK, B is granted.
//! ls.unlock(a, &dlm_engine::UnlockParams::new(la, LockFlags::empty(), args)).unwrap();
//! assert_eq!(ls.read(a).unwrap().status, -dlm_proto::status::EUNLOCK);
//! assert_eq!(ls.read(b).unwrap().lkid, lb);
//! ```
//!
//! Two owners contend for one resource; a `NOQUEUE` request that would
//! block completes with `EAGAIN`:
//!
//! ```
//! use dlm_engine::{Engine, LockParams, UnlockParams, UserArgs};
//! use dlm_proto::{LockFlags, LockMode, Status};
//!
//! let mut ls = Engine::new();
//! let (a, b) = (ls.open_owner(1), ls.open_owner(2));
//! let args = UserArgs { castaddr: 1, lksb: 1, ..Default::default() };
//!
//! let la = ls.lock(a, &LockParams::new(LockMode::Ex, b"disk0", args))?;
//! assert_eq!(ls.read(a).map(|r| r.status), Some(0));
//!
//! // A NOQUEUE request that would block completes with EAGAIN.
//! let try_b = LockParams::new(LockMode::Pr, b"disk0", args).flags(LockFlags::NOQUEUE);
//! ls.lock(b, &try_b)?;
//! let st = ls.read(b).map(|r| Status::from_kernel(r.status, false));
//! assert_eq!(st, Some(Ok(Status::WouldBlock)));
//!
//! ls.unlock(a, &UnlockParams::new(la, LockFlags::empty(), args))?;
//! let st = ls.read(a).map(|r| Status::from_kernel(r.status, false));
//! assert_eq!(st, Some(Ok(Status::Unlocked)));
//! # Ok::<(), dlm_proto::Errno>(())
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

// The modules follow the kernel's split of `fs/dlm`, and each one's doc
// names the kernel file and functions it follows:
//   request   lock.c   dlm_user_request/convert, do_request/do_convert
//   unlock    lock.c   dlm_user_unlock/cancel/deadlock, do_unlock/cancel
//   grant     lock.c   can_be_granted, grant_pending_locks, queues, BASTs
//   lvb       lock.c   set_lvb_lock, set_lvb_unlock (lvb_table.h)
//   callbacks ast.c, user.c  callback arrays, AST queue, device_read
//   owners    user.c, lock.c  procs, orphans, close and purge
//   device    user.c   device_write
//   internal  dlm_internal.h  the lock, resource and owner records
//   store     lock.c   lock ids (the idr), resource table, toss, lists
//   tables    lock.c, lvb_table.h  the mode tables
//   registry  lockspace.c  lockspaces by name and minor
//   recover   recover.c, lock.c  locks rebuilt granted (master copies)
//   kernel    which kernel generation (6.1, 6.12) the engine follows
// This file holds the public types and the public API, which calls into
// them.
mod callbacks;
mod device;
mod grant;
mod internal;
mod kernel;
mod lvb;
mod owners;
mod recover;
mod registry;
mod request;
mod store;
mod tables;
mod unlock;

pub use kernel::{KernelModel, UnknownKernelModel};
pub use registry::{Registry, Released, Space};

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use hashbrown::HashTable;

use dlm_proto::error::Errno;
use dlm_proto::flags::LockFlags;
use dlm_proto::mode::LockMode;

use internal::{CbArray, List, Lkb, Proc, Rsb, IFL_DEAD, IFL_ORPHAN};
use internal::{STS_CONVERT, STS_GRANTED, STS_WAITING};

pub use dlm_proto::records::{AstRecord, UserArgs, LVB_LEN};

/// How many callbacks one lock may have waiting to be read under the
/// Linux 6.1 model (`DLM_CALLBACKS_SIZE`); that kernel drops any beyond
/// this. Linux 6.12 has no such cap.
pub const CALLBACKS_SIZE: usize = 6;

/// How many resources with no locks the engine keeps, like the kernel's
/// "toss" list, before it forgets the oldest. A tossed resource has no
/// value block, but keeps its `VALNOTVALID` mark, as in the kernel until
/// its toss timer (10 s by default) runs out.
pub const TOSS_KEEP: usize = 4096;

/// An owner: one open lockspace handle (the kernel's `dlm_user_proc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerId(u32);

impl OwnerId {
    /// The owner's slot number, for logs.
    pub fn index(self) -> u32 {
        self.0
    }
}

/// A lock or convert request: the fields of `struct dlm_lock_params`.
#[derive(Debug, Clone, Copy)]
pub struct LockParams<'a> {
    /// Requested mode, raw (validated by the engine: 0..=5).
    pub mode: u8,
    /// `DLM_LKF_*` flags, raw; unknown bits are kept, as the kernel does.
    pub flags: u32,
    /// Lock id, for a conversion.
    pub lkid: u32,
    /// Resource name (ignored for a conversion).
    pub name: &'a [u8],
    /// The caller's value block (used by conversions only).
    pub lvb: [u8; LVB_LEN],
    /// Addresses and tokens echoed in callbacks.
    pub args: UserArgs,
    /// The caller's pid (the kernel's `current->pid`), recorded as the
    /// lock's owner pid for purge.
    pub pid: u32,
}

impl<'a> LockParams<'a> {
    /// A new-lock request for `name` in `mode` with no flags.
    pub fn new(mode: LockMode, name: &'a [u8], args: UserArgs) -> Self {
        LockParams {
            mode: mode.as_raw(),
            flags: 0,
            lkid: 0,
            name,
            lvb: [0; LVB_LEN],
            args,
            pid: 0,
        }
    }

    /// A conversion of lock `lkid` to `mode`.
    pub fn convert(lkid: u32, mode: LockMode, args: UserArgs) -> Self {
        LockParams {
            mode: mode.as_raw(),
            flags: LockFlags::CONVERT.bits(),
            lkid,
            name: &[],
            lvb: [0; LVB_LEN],
            args,
            pid: 0,
        }
    }

    /// Add flags.
    pub fn flags(mut self, flags: LockFlags) -> Self {
        self.flags |= flags.bits();
        self
    }

    /// Set the caller's value block.
    pub fn lvb(mut self, lvb: [u8; LVB_LEN]) -> Self {
        self.lvb = lvb;
        self
    }

    /// Set the caller's pid.
    pub fn pid(mut self, pid: u32) -> Self {
        self.pid = pid;
        self
    }
}

/// An unlock or cancel request (`DLM_USER_UNLOCK`).
#[derive(Debug, Clone, Copy)]
pub struct UnlockParams {
    /// The lock.
    pub lkid: u32,
    /// `CANCEL`, `VALBLK`, `IVVALBLK`, `FORCEUNLOCK`; others are `EINVAL`.
    pub flags: u32,
    /// The caller's value block (written on unlock from PW/EX with VALBLK).
    pub lvb: [u8; LVB_LEN],
    /// Only `castparam` (if non-zero) and `lksb` are taken from these.
    pub args: UserArgs,
}

impl UnlockParams {
    /// Unlock (or, with `CANCEL`, cancel) lock `lkid`.
    pub fn new(lkid: u32, flags: LockFlags, args: UserArgs) -> Self {
        UnlockParams {
            lkid,
            flags: flags.bits(),
            lvb: [0; LVB_LEN],
            args,
        }
    }

    /// Set the caller's value block.
    pub fn lvb(mut self, lvb: [u8; LVB_LEN]) -> Self {
        self.lvb = lvb;
        self
    }
}

/// The highest lock id [`Engine::replay_granted`] accepts. Lock ids index
/// the engine's lock table, so a replayed id costs a slot for every id
/// below it (about 120 bytes each): this bounds what one replay can make
/// the engine allocate to some 120 MiB. The engine hands out the lowest
/// free id, so only a lockspace that once held over a million locks at
/// the same time can have ids above it.
pub const REPLAY_LKID_MAX: u32 = 1 << 20;

/// A lock to rebuild in the granted state with [`Engine::replay_granted`],
/// as its owner knows it: the kernel's `struct rcom_lock`, which a node
/// sends a new master for each lock it holds there.
#[derive(Debug, Clone, Copy)]
pub struct ReplayLock<'a> {
    /// The lock's id, which it keeps: its owner knows it by that id.
    pub lkid: u32,
    /// The mode it is granted in.
    pub mode: LockMode,
    /// Resource name, at most 64 bytes.
    pub name: &'a [u8],
    /// `DLM_LKF_*` flags of the request or conversion that was granted,
    /// raw; they become the lock's flags, as the kernel keeps
    /// `rl_exflags`. `PERSISTENT` decides what closing the owner does,
    /// `VALBLK` whether the lock's value block counts.
    pub flags: u32,
    /// The lock's value block as its owner has it, if it has one. With
    /// `VALBLK` and no block, the lock gets a zeroed one.
    pub lvb: Option<[u8; LVB_LEN]>,
    /// Whether that block is valid: the owner's last completion did not
    /// carry `VALNOTVALID` (or, at PW and EX, the owner wrote the block
    /// since). Only a valid block can vouch for the resource's.
    pub lvb_valid: bool,
    /// Addresses and tokens echoed in callbacks, as for a request.
    pub args: UserArgs,
    /// The owner pid recorded for purge.
    pub pid: u32,
}

impl<'a> ReplayLock<'a> {
    /// Lock `lkid` on `name`, granted in `mode`, with no flags and no
    /// value block.
    pub fn new(lkid: u32, mode: LockMode, name: &'a [u8], args: UserArgs) -> Self {
        ReplayLock {
            lkid,
            mode,
            name,
            flags: 0,
            lvb: None,
            lvb_valid: false,
            args,
            pid: 0,
        }
    }

    /// Add flags.
    pub fn flags(mut self, flags: LockFlags) -> Self {
        self.flags |= flags.bits();
        self
    }

    /// Set the owner's value block, and whether it is valid.
    pub fn lvb(mut self, lvb: [u8; LVB_LEN], valid: bool) -> Self {
        self.lvb = Some(lvb);
        self.lvb_valid = valid;
        self
    }

    /// Set the owner pid.
    pub fn pid(mut self, pid: u32) -> Self {
        self.pid = pid;
        self
    }
}

/// Which queue of its resource a lock is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Queue {
    /// Granted.
    Granted,
    /// Waiting to convert.
    Converting,
    /// Waiting for a first grant.
    Waiting,
}

/// A snapshot of one lock, for the query API and for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    /// Lock id.
    pub lkid: u32,
    /// Resource name.
    pub resource: Vec<u8>,
    /// Granted mode, if any.
    pub granted: Option<LockMode>,
    /// Requested mode, if a request or conversion is in progress.
    pub requested: Option<LockMode>,
    /// Queue, or `None` for a lock that has ended but whose last callback
    /// is still unread (Linux 6.1 only: under 6.12 such a lock is gone).
    pub queue: Option<Queue>,
    /// Owner, or `None` for an orphan.
    pub owner: Option<OwnerId>,
    /// Pid recorded by the last request, conversion or adoption.
    pub pid: u32,
    /// `DLM_LKF_*` flags of the last operation.
    pub flags: LockFlags,
}

/// One lockspace's lock state: see the [module documentation](self).
pub struct Engine {
    /// Locks by lock id (the kernel's `ls_lkbidr`); slot 0 is never used.
    locks: Vec<Option<Lkb>>,
    /// Free lock ids below `next_id`, lowest first.
    free_ids: BinaryHeap<Reverse<u32>>,
    /// The lowest lock id never handed out; `locks.len()` equals it.
    next_id: u32,
    /// How many slots of `locks` hold a lock.
    live_locks: usize,
    /// Resources by slot, and the free slots.
    rsbs: Vec<Option<Rsb>>,
    free_rsbs: Vec<u32>,
    /// Resource slots by name hash (the kernel's `ls_rsbtbl`).
    index: HashTable<u32>,
    hasher: hashbrown::DefaultHashBuilder,
    /// Resources with no locks, oldest first (the toss list), and how
    /// many of them there are.
    toss: VecDeque<u32>,
    tossed: usize,
    /// Owners by slot, and the free slots.
    procs: Vec<Option<Proc>>,
    free_procs: Vec<u32>,
    /// Persistent locks whose owner has gone (`ls_orphans`).
    orphans: List,
    /// Callback arrays of the locks with callbacks pending, and the free
    /// ones.
    cbs: Vec<CbArray>,
    free_cbs: Vec<u32>,
    our_nodeid: u32,
    /// The kernel whose rules are followed where 6.1 and 6.12 differ.
    model: KernelModel,
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new()
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("locks", &self.live_locks)
            .field("resources", &(self.index.len() - self.tossed))
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An empty lockspace on node 1, following Linux 6.1.
    pub fn new() -> Engine {
        Engine::with_model(KernelModel::V6_1)
    }

    /// An empty lockspace on node 1, following `model`'s rules.
    ///
    /// ```
    /// use dlm_engine::{Engine, KernelModel, LockParams, UnlockParams, UserArgs};
    /// use dlm_proto::{LockFlags, LockMode};
    ///
    /// let args = UserArgs { castaddr: 1, lksb: 1, ..Default::default() };
    /// for model in KernelModel::ALL {
    ///     let mut ls = Engine::with_model(model);
    ///     let a = ls.open_owner(1);
    ///     let l1 = ls.lock(a, &LockParams::new(LockMode::Ex, b"r", args)).unwrap();
    ///     ls.read(a);
    ///     ls.unlock(a, &UnlockParams::new(l1, LockFlags::empty(), args)).unwrap();
    ///     // The EUNLOCK completion is not read yet. Linux 6.1 keeps the
    ///     // lock (and its id) until it is; 6.12 frees it at once.
    ///     let l2 = ls.lock(a, &LockParams::new(LockMode::Ex, b"r", args)).unwrap();
    ///     let reused = l2 == l1;
    ///     assert_eq!(reused, model == KernelModel::V6_12);
    /// }
    /// ```
    pub fn with_model(model: KernelModel) -> Engine {
        Engine {
            locks: vec![None],
            free_ids: BinaryHeap::new(),
            next_id: 1,
            live_locks: 0,
            rsbs: Vec::new(),
            free_rsbs: Vec::new(),
            index: HashTable::new(),
            hasher: Default::default(),
            toss: VecDeque::new(),
            tossed: 0,
            procs: Vec::new(),
            free_procs: Vec::new(),
            orphans: List::default(),
            // Slot 0 is never handed out, so NIL can mean "no slot".
            cbs: vec![CbArray::default()],
            free_cbs: Vec::new(),
            our_nodeid: 1,
            model,
        }
    }

    /// The kernel whose rules this engine follows.
    pub fn model(&self) -> KernelModel {
        self.model
    }

    /// Set this node's id (default 1), which `purge` compares against.
    pub fn set_our_nodeid(&mut self, nodeid: u32) {
        self.our_nodeid = nodeid;
    }

    /// Number of locks that exist (granted, queued, orphaned, or ended
    /// with an unread callback). A lockspace with any is busy.
    pub fn lock_count(&self) -> usize {
        self.live_locks
    }

    /// Number of resources that have at least one lock.
    pub fn resource_count(&self) -> usize {
        self.index.len() - self.tossed
    }

    // Owners.

    /// Open a new owner, as `open()` of the lockspace device does.
    pub fn open_owner(&mut self, pid: u32) -> OwnerId {
        OwnerId(self.add_proc(pid))
    }

    /// The pid `owner` was opened with.
    pub fn owner_pid(&self, owner: OwnerId) -> Option<u32> {
        self.procs.get(owner.0 as usize)?.as_ref().map(|p| p.pid)
    }

    /// Whether `owner` is open.
    pub fn owner_exists(&self, owner: OwnerId) -> bool {
        matches!(self.procs.get(owner.0 as usize), Some(Some(_)))
    }

    fn check_owner(&self, owner: OwnerId) -> Result<(), Errno> {
        if self.owner_exists(owner) {
            Ok(())
        } else {
            Err(Errno::EBADF)
        }
    }

    /// Close an owner, as the last `close()` of its fd does
    /// (`dlm_clear_proc_locks`): non-persistent locks are force-unlocked
    /// with `IVVALBLK` (so a lock held at PW or above marks the value block
    /// invalid), persistent ones become orphans with any in-progress
    /// request or conversion cancelled, and pending callbacks are dropped.
    pub fn close_owner(&mut self, owner: OwnerId) -> Result<(), Errno> {
        self.check_owner(owner)?;
        self.clear_proc_locks(owner.0);
        Ok(())
    }

    /// How many callbacks wait to be read by `owner`: under Linux 6.1 the
    /// locks with callbacks queued (each holds at most six), under 6.12
    /// the records queued (no cap: a process that never reads lets them
    /// pile up, in the kernel as here, so dlmd bounds them per client).
    pub fn pending_callbacks(&self, owner: OwnerId) -> usize {
        self.procs
            .get(owner.0 as usize)
            .and_then(|p| p.as_ref())
            .map_or(0, |p| p.asts.len() + p.records.len())
    }

    /// Whether `owner` has a callback to read (the device's `poll`).
    pub fn has_callbacks(&self, owner: OwnerId) -> bool {
        self.procs
            .get(owner.0 as usize)
            .and_then(|p| p.as_ref())
            .is_some_and(|p| !p.asts.is_empty() || !p.records.is_empty())
    }

    // ----------------------------------------------------------------
    // Operations (fs/dlm/user.c device_user_* and lock.c dlm_user_*)
    // ----------------------------------------------------------------

    /// `DLM_USER_LOCK`: a new request, a conversion (`CONVERT`) or an
    /// orphan adoption (`ORPHAN`).
    ///
    /// Returns what the device's `write()` returns: the lock id for a new
    /// request or an adoption, 0 for a conversion. The outcome of a request
    /// or conversion arrives later as a completion callback; adoption
    /// produces none.
    pub fn lock(&mut self, owner: OwnerId, p: &LockParams<'_>) -> Result<u32, Errno> {
        self.check_owner(owner)?;
        if p.args.castaddr == 0 || p.args.lksb == 0 {
            return Err(Errno::EINVAL);
        }
        if p.flags & LockFlags::CONVERT.bits() != 0 {
            self.user_convert(p).map(|()| 0)
        } else if p.flags & LockFlags::ORPHAN.bits() != 0 {
            self.user_adopt_orphan(owner.0, p)
        } else {
            self.user_request(owner.0, p)
        }
    }

    /// `DLM_USER_UNLOCK`: unlock, or cancel with `CANCEL`.
    ///
    /// Cancelling a lock with nothing in progress returns `Ok` and produces
    /// no callback, as in the kernel.
    pub fn unlock(&mut self, owner: OwnerId, p: &UnlockParams) -> Result<(), Errno> {
        self.check_owner(owner)?;
        let id = self.find_lkb(p.lkid)?;
        self.hold_lkb(id);
        let rv = if p.flags & LockFlags::CANCEL.bits() != 0 {
            self.user_cancel(p)
        } else {
            self.user_unlock(p)
        };
        self.put_lkb(id);
        rv
    }

    /// `DLM_USER_DEADLOCK`: cancel the lock's in-progress operation with
    /// status `EDEADLK` instead of `ECANCEL`.
    pub fn deadlock_cancel(&mut self, owner: OwnerId, lkid: u32, flags: u32) -> Result<(), Errno> {
        self.check_owner(owner)?;
        let id = self.find_lkb(lkid)?;
        self.hold_lkb(id);
        let rv = self.user_deadlock(id, flags);
        self.put_lkb(id);
        rv
    }

    /// `DLM_USER_PURGE`: `nodeid` 0 or ours and `pid` equal to the caller's
    /// pid purges the caller's own locks; any other pid purges the orphans
    /// with that owner pid, and pid 0 purges every orphan. Another node
    /// would need a message, which a single node cannot send (`ENOBUFS`).
    pub fn purge(
        &mut self,
        owner: OwnerId,
        nodeid: u32,
        pid: u32,
        caller_pid: u32,
    ) -> Result<(), Errno> {
        self.check_owner(owner)?;
        if nodeid != 0 && nodeid != self.our_nodeid {
            return Err(Errno::ENOBUFS);
        }
        if pid == caller_pid {
            self.purge_proc_locks(owner.0);
        } else {
            self.do_purge(pid);
        }
        Ok(())
    }

    /// A `write()` on a lockspace device, decoded: dispatch it as the
    /// kernel's `device_write` does for a lockspace fd, and return what
    /// `write()` returns. `pid` is the writer's (`current->pid`).
    /// Lockspace commands are `EINVAL` here (they belong to the control
    /// device).
    pub fn device_write(
        &mut self,
        owner: OwnerId,
        pid: u32,
        request: &dlm_proto::records::Request,
    ) -> Result<i64, Errno> {
        self.dispatch_write(owner, pid, request)
    }

    /// Read the next callback of `owner`, as `read()` of its fd does, or
    /// `None` when there is none (`EAGAIN` on a non-blocking fd).
    pub fn read(&mut self, owner: OwnerId) -> Option<AstRecord> {
        let o = owner.0;
        self.procs.get(o as usize)?.as_ref()?;
        self.device_read(o)
    }

    /// A snapshot of every lock, ordered by lock id.
    pub fn locks(&self) -> Vec<LockInfo> {
        self.locks_from(0).collect()
    }

    /// Snapshots of the locks whose id is `first` or more, in order of
    /// lock id, made as the iterator is advanced: a query can take a few
    /// and come back later for the rest, starting after the last id it
    /// saw. Finding `first` costs nothing, whatever the number of locks.
    pub fn locks_from(&self, first: u32) -> impl Iterator<Item = LockInfo> + '_ {
        let start = (first as usize).min(self.locks.len());
        self.locks[start..]
            .iter()
            .zip(first..)
            .filter_map(|(l, id)| l.as_ref().map(|l| self.info(id, l)))
    }

    /// How many locks have an id of `first` or more.
    pub fn count_locks_from(&self, first: u32) -> usize {
        let start = (first as usize).min(self.locks.len());
        self.locks[start..].iter().filter(|l| l.is_some()).count()
    }

    /// A snapshot of one lock.
    pub fn lock_info(&self, lkid: u32) -> Option<LockInfo> {
        let l = self.locks.get(lkid as usize)?.as_ref()?;
        Some(self.info(lkid, l))
    }

    fn info(&self, id: u32, l: &Lkb) -> LockInfo {
        let rsb = self.rsbs[l.rsb as usize].as_ref();
        LockInfo {
            lkid: id,
            resource: rsb.map(|r| r.name.as_bytes().to_vec()).unwrap_or_default(),
            granted: LockMode::from_raw_iv(l.grmode.into()).ok().flatten(),
            requested: if l.status == STS_WAITING || l.status == STS_CONVERT {
                LockMode::from_raw_iv(l.rqmode.into()).ok().flatten()
            } else {
                None
            },
            queue: match l.status {
                STS_GRANTED => Some(Queue::Granted),
                STS_CONVERT => Some(Queue::Converting),
                STS_WAITING => Some(Queue::Waiting),
                _ => None,
            },
            owner: if l.iflags & (IFL_ORPHAN | IFL_DEAD) != 0 {
                None
            } else {
                Some(OwnerId(l.owner))
            },
            pid: l.pid,
            flags: LockFlags::from_bits_retain(l.exflags),
        }
    }

    /// The resource's value block and its `VALNOTVALID` mark, if the
    /// resource exists (tests and the query API).
    pub fn resource_lvb(&self, name: &[u8]) -> Option<(Option<[u8; LVB_LEN]>, bool)> {
        let r = self.find_rsb(name)?;
        let rsb = self.rsbs[r as usize].as_ref()?;
        if rsb.refs == 0 {
            return None;
        }
        Some((rsb.lvb.as_deref().copied(), rsb.valnotvalid))
    }

    // Recovery (fs/dlm/recover.c, lock.c dlm_recover_master_copy).

    /// Rebuild a lock that `owner` holds, granted in `lock.mode` under
    /// its own id, as the kernel's master-copy recovery does
    /// (`dlm_recover_master_copy`): for a daemon that restarts and
    /// learns its state back from its clients.
    ///
    /// The lock queues behind nothing and no callback is sent: its owner
    /// already had its completion, and no blocking AST goes out (call
    /// [`Engine::recover_grant`] once the replays are done). Afterwards it
    /// is an ordinary granted lock: it blocks conflicting requests, gets
    /// their blocking ASTs, converts and unlocks.
    ///
    /// The resource's value block is rebuilt as the kernel's `recover_lvb`
    /// rebuilds it: a lock with `VALBLK` granted above CR and a valid
    /// block vouches for it, and its block becomes the resource's; a lock
    /// with `VALBLK` that cannot vouch marks the block not valid
    /// (`VALNOTVALID` on the next grant), unless the resource's block is
    /// valid already (a holder vouched for it, or a lock wrote it); locks
    /// without `VALBLK` leave it alone.
    ///
    /// Replays belong before any new request on their resources, as the
    /// kernel keeps a lockspace stopped while it recovers: the engine can
    /// refuse a replay that conflicts with a lock granted now, but not one
    /// that conflicts with a lock granted and released since the state
    /// was lost.
    ///
    /// # Examples
    ///
    /// ```
    /// use dlm_engine::{Engine, LockParams, ReplayLock, UserArgs};
    /// use dlm_proto::{LockFlags, LockMode, StatusFlags};
    ///
    /// let mut ls = Engine::new();
    /// let (a, b) = (ls.open_owner(1), ls.open_owner(2));
    /// let args = UserArgs { castaddr: 1, lksb: 1, ..Default::default() };
    ///
    /// // Before the restart, A held lock 12 at CR on "disk0", with the
    /// // value block it read when it was granted.
    /// let held = ReplayLock::new(12, LockMode::Cr, b"disk0", args)
    ///     .flags(LockFlags::VALBLK)
    ///     .lvb([7; 32], true);
    /// ls.replay_granted(a, held)?;
    /// assert!(ls.read(a).is_none(), "no callback");
    ///
    /// // A CR holder cannot vouch for the block: the next reader is told.
    /// let p = LockParams::new(LockMode::Pr, b"disk0", args).flags(LockFlags::VALBLK);
    /// let lb = ls.lock(b, &p)?;
    /// let granted = ls.read(b).expect("a completion");
    /// assert_eq!((granted.lkid, granted.lvb), (lb, Some([7; 32])));
    /// assert_ne!(granted.sb_flags & StatusFlags::VALNOTVALID.bits(), 0);
    /// # Ok::<(), dlm_proto::Errno>(())
    /// ```
    ///
    /// # Errors
    ///
    /// - `EBADF`: `owner` is not open.
    /// - `EINVAL`: no AST address or status block in `args`, a name over
    ///   64 bytes, or lock id 0 or above [`REPLAY_LKID_MAX`].
    /// - `EEXIST`: a lock with that id exists.
    /// - `EAGAIN`: the mode conflicts with a lock granted on the resource
    ///   (a converting lock counts in its granted mode).
    ///
    /// A refused replay changes nothing.
    pub fn replay_granted(&mut self, owner: OwnerId, lock: ReplayLock<'_>) -> Result<(), Errno> {
        self.check_owner(owner)?;
        self.recover_master_copy(owner.0, &lock)
    }

    /// After the replays, `dlm_recover_grant`: on every resource where a
    /// replayed lock joined requests or conversions that were waiting,
    /// grant what can be granted and send the blocking ASTs that the
    /// waiting modes call for, so that a replayed holder learns that it
    /// is in someone's way. Returns how many resources it looked at.
    pub fn recover_grant(&mut self) -> usize {
        self.recover_grant_all()
    }
}

#[cfg(test)]
mod tests;
