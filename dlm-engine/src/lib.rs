//! The lock engine: a pure state machine with the kernel's exact semantics.
//!
//! One [`Engine`] is one lockspace. It does no I/O, starts no threads and
//! contains no `unsafe`. Owners ([`OwnerId`]) stand for what the kernel
//! calls a process's open lockspace fd (a `struct dlm_user_proc`): they
//! submit operations, and each owner has a queue of callbacks that it
//! drains with [`Engine::read`], exactly as a process drains its fd with
//! `read()`.
//!
//! The engine follows Linux 6.1's `fs/dlm/lock.c`, `fs/dlm/ast.c` and
//! `fs/dlm/user.c` on a single node, where every resource is mastered
//! locally. Each operation is named after the kernel function it mirrors;
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

mod registry;
mod tables;

pub use registry::{Registry, Released, Space};

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use hashbrown::HashTable;

use dlm_proto::error::Errno;
use dlm_proto::flags::{LockFlags, StatusFlags};
use dlm_proto::mode::LockMode;
use dlm_proto::name::RESNAME_MAXLEN;
use dlm_proto::status::{ECANCEL, EUNLOCK};
use tables::{compat, lvb_op, quecvt_ok, CW, EX, IV, NL, PR, PW};

pub use dlm_proto::records::{AstRecord, UserArgs, LVB_LEN};

/// How many callbacks one lock may have waiting to be read
/// (`DLM_CALLBACKS_SIZE`); the kernel drops any beyond this.
pub const CALLBACKS_SIZE: usize = 6;

/// How many resources with no locks the engine keeps, like the kernel's
/// "toss" list, before it forgets the oldest. A tossed resource has no
/// value block, but keeps its `VALNOTVALID` mark, as in the kernel until
/// its toss timer (10 s by default) runs out.
pub const TOSS_KEEP: usize = 4096;

type Lkid = u32;
/// Nil link; lock id 0 is never used.
const NIL: u32 = 0;

/// An owner: one open lockspace handle (the kernel's `dlm_user_proc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerId(u32);

impl OwnerId {
    /// The owner's slot number, for logs.
    pub fn index(self) -> u32 {
        self.0
    }
}

/// The user arguments a lock keeps: [`UserArgs`] less the unused `xid`.
#[derive(Debug, Clone, Copy, Default)]
struct StoredArgs {
    castparam: u64,
    castaddr: u64,
    bastparam: u64,
    bastaddr: u64,
    lksb: u64,
}

impl From<UserArgs> for StoredArgs {
    fn from(a: UserArgs) -> StoredArgs {
        StoredArgs {
            castparam: a.castparam,
            castaddr: a.castaddr,
            bastparam: a.bastparam,
            bastaddr: a.bastaddr,
            lksb: a.lksb,
        }
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
    /// is still unread.
    pub queue: Option<Queue>,
    /// Owner, or `None` for an orphan.
    pub owner: Option<OwnerId>,
    /// Pid recorded by the last request, conversion or adoption.
    pub pid: u32,
    /// `DLM_LKF_*` flags of the last operation.
    pub flags: LockFlags,
}

// Kernel lkb_status values.
const STS_NONE: u8 = 0;
const STS_WAITING: u8 = 1;
const STS_GRANTED: u8 = 2;
const STS_CONVERT: u8 = 3;

// Internal lkb flags (DLM_IFL_*), as far as they matter locally.
const IFL_ORPHAN: u16 = 1 << 0;
const IFL_DEAD: u16 = 1 << 1;
const IFL_ENDOFLIFE: u16 = 1 << 2;
const IFL_DEADLOCK_CANCEL: u16 = 1 << 3;
const IFL_ON_ASTS: u16 = 1 << 4;
/// On an owner's lock list or on the orphan list (`lkb_ownqueue` in use).
const IFL_ON_OWNQ: u16 = 1 << 5;
/// A completion has been read (`lkb_last_cast.seq != 0`).
const IFL_HAS_LAST_CAST: u16 = 1 << 6;
/// `lkb_lvbptr` is set: the lock's value block buffer was attached by a
/// request or conversion that passed its checks. The buffer itself
/// (`ua->lksb.sb_lvbptr`) can exist without being attached: a conversion
/// with `VALBLK` allocates it before its checks, and may then fail them.
const IFL_LVB_ATTACHED: u16 = 1 << 8;
/// The `lkb_ownqueue` in use is the owner's `unlocking` list.
const IFL_UNLOCKING: u16 = 1 << 7;

#[derive(Clone, Copy, Default, Debug)]
struct Links {
    prev: u32,
    next: u32,
}

#[derive(Clone, Copy, Default, Debug)]
struct List {
    head: u32,
    tail: u32,
}

/// One pending callback (`struct dlm_callback`), 8 bytes.
#[derive(Clone, Copy, Default, Debug)]
struct Cb {
    bast: bool,
    mode: i8,
    sbflags: u8,
    status: i32,
}

/// The per-lock callback array of Linux 6.1 (`lkb_callbacks`).
#[derive(Clone, Copy, Default, Debug)]
struct CbArray {
    len: u8,
    items: [Cb; CALLBACKS_SIZE],
}

/// A lock (`struct dlm_lkb` with its `dlm_user_args`).
#[derive(Debug)]
struct Lkb {
    rsb: u32,
    owner: u32,
    grmode: i8,
    rqmode: i8,
    highbast: i8,
    status: u8,
    sbflags: u8,
    iflags: u16,
    refs: u8,
    /// Mode of the last completion read (`lkb_last_cast.mode`); 0 until
    /// one is read (see `IFL_HAS_LAST_CAST`), as the kernel's zeroed
    /// struct has it.
    last_cast_mode: i8,
    /// `ua->lksb.sb_flags` as last set by a read completion.
    lksb_flags: u8,
    exflags: u32,
    /// `ua->lksb.sb_status` as last set by a read completion.
    lksb_status: i32,
    pid: u32,
    /// Slot in `Engine::cbs` while callbacks are pending, else NIL.
    cb_slot: u32,
    q: Links,
    own: Links,
    ua: StoredArgs,
    lvb: Option<Box<[u8; LVB_LEN]>>,
}

impl Lkb {
    /// `lkb->lkb_lvbptr = args->lksb->sb_lvbptr` in `validate_lock_args`.
    fn attach_lvb(&mut self) {
        if self.lvb.is_some() {
            self.iflags |= IFL_LVB_ATTACHED;
        }
    }

    /// The value block as `lkb_lvbptr` sees it.
    fn attached_lvb(&self) -> Option<[u8; LVB_LEN]> {
        if self.iflags & IFL_LVB_ATTACHED == 0 {
            return None;
        }
        self.lvb.as_deref().copied()
    }
}

/// A resource (`struct dlm_rsb`).
#[derive(Debug)]
struct Rsb {
    name: Name,
    grant: List,
    convert: List,
    wait: List,
    lvb: Option<Box<[u8; LVB_LEN]>>,
    /// Attached locks; 0 means tossed.
    refs: u32,
    valnotvalid: bool,
    /// Has an entry in `Engine::toss`.
    in_toss_queue: bool,
}

/// How many bytes of a resource name are kept inline.
const INLINE_NAME: usize = 22;

/// A resource name, inline when short (no allocation), boxed otherwise.
#[derive(Debug)]
enum Name {
    Inline { len: u8, buf: [u8; INLINE_NAME] },
    Heap(Box<[u8]>),
}

impl Name {
    fn new(bytes: &[u8]) -> Name {
        if bytes.len() <= INLINE_NAME {
            let mut buf = [0u8; INLINE_NAME];
            buf[..bytes.len()].copy_from_slice(bytes);
            Name::Inline {
                len: bytes.len() as u8,
                buf,
            }
        } else {
            Name::Heap(bytes.into())
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Name::Inline { len, buf } => &buf[..usize::from(*len)],
            Name::Heap(b) => b,
        }
    }
}

/// An owner (`struct dlm_user_proc`).
#[derive(Debug, Default)]
struct Proc {
    pid: u32,
    locks: List,
    /// Locks still on the owner's list after an unlock (`proc->unlocking`).
    unlocking: List,
    asts: VecDeque<Lkid>,
}

#[derive(Clone, Copy)]
enum Chain {
    Queue,
    Own,
}

#[derive(Clone, Copy)]
enum Which {
    Grant(u32),
    Convert(u32),
    Wait(u32),
    Locks(u32),
    Unlocking(u32),
    Orphans,
}

/// One lockspace's lock state: see the [module documentation](self).
pub struct Engine {
    locks: Vec<Option<Lkb>>,
    free_ids: BinaryHeap<Reverse<u32>>,
    next_id: u32,
    live_locks: usize,
    rsbs: Vec<Option<Rsb>>,
    free_rsbs: Vec<u32>,
    index: HashTable<u32>,
    hasher: hashbrown::DefaultHashBuilder,
    toss: VecDeque<u32>,
    tossed: usize,
    procs: Vec<Option<Proc>>,
    free_procs: Vec<u32>,
    orphans: List,
    cbs: Vec<CbArray>,
    free_cbs: Vec<u32>,
    our_nodeid: u32,
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
            .finish_non_exhaustive()
    }
}

fn is_endoflife(mode: i8, status: i32) -> bool {
    match status {
        s if s == -EUNLOCK => true,
        s if s == -ECANCEL
            || s == -libc::ETIMEDOUT
            || s == -libc::EDEADLK
            || s == -libc::EAGAIN =>
        {
            mode == IV
        }
        _ => false,
    }
}

impl Engine {
    /// An empty lockspace on node 1.
    pub fn new() -> Engine {
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
        }
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

    // ----------------------------------------------------------------
    // Owners
    // ----------------------------------------------------------------

    /// Open a new owner, as `open()` of the lockspace device does.
    pub fn open_owner(&mut self, pid: u32) -> OwnerId {
        let proc = Proc {
            pid,
            ..Default::default()
        };
        match self.free_procs.pop() {
            Some(i) => {
                self.procs[i as usize] = Some(proc);
                OwnerId(i)
            }
            None => {
                self.procs.push(Some(proc));
                OwnerId((self.procs.len() - 1) as u32)
            }
        }
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
        let o = owner.0;
        loop {
            // del_proc_lock
            let id = self.proc(o).locks.head;
            if id == NIL {
                break;
            }
            self.list_remove(Which::Locks(o), Chain::Own, id);
            let persistent = self.lk(id).exflags & LockFlags::PERSISTENT.bits() != 0;
            self.lk_mut(id).iflags |= if persistent { IFL_ORPHAN } else { IFL_DEAD };
            if persistent {
                self.orphan_proc_lock(id);
            } else {
                self.unlock_proc_lock(id);
            }
            // The reference of the owner's lock list.
            self.put_lkb(id);
        }
        self.release_unlocking(o);
        self.drop_asts(o);
        // A lock can end while still on a resource queue (one the
        // ALTPR/ALTCW quirk left granted in no mode, then cancelled or
        // refused with an IV-mode completion): it is on none of the
        // owner's lists, so the loops above miss it. Linux 6.1 leaves it
        // pointing at the freed proc (its next callback is a use after
        // free); mark it dead, so that its callbacks are dropped.
        for lkb in self.locks.iter_mut().flatten() {
            if lkb.owner == o && lkb.iflags & (IFL_ORPHAN | IFL_DEAD) == 0 {
                lkb.iflags |= IFL_DEAD;
            }
        }
        self.procs[o as usize] = None;
        self.free_procs.push(o);
        Ok(())
    }

    /// Whether `owner` has a callback to read (the device's `poll`).
    pub fn has_callbacks(&self, owner: OwnerId) -> bool {
        self.procs
            .get(owner.0 as usize)
            .and_then(|p| p.as_ref())
            .is_some_and(|p| !p.asts.is_empty())
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

    fn user_deadlock(&mut self, id: Lkid, flags: u32) -> Result<(), Errno> {
        set_unlock_args(flags)?;
        match self.validate_unlock_args(id, flags) {
            Ok(()) => {}
            Err(e) if e == Errno::EBUSY => return Ok(()),
            Err(e) => return Err(e),
        }
        self.lk_mut(id).iflags |= IFL_DEADLOCK_CANCEL;
        self.cancel_lock(id);
        Ok(())
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
        use dlm_proto::records::Request;
        match request {
            Request::Lock(r) => {
                let convert = r.flags & LockFlags::CONVERT.bits() != 0;
                // A `namelen` over 64 names no resource: refused from the
                // length alone (EINVAL for a request, ENOENT for an
                // adoption), so zeros stand in for the missing bytes.
                let long;
                let name: &[u8] = if convert {
                    &[]
                } else if r.namelen() <= RESNAME_MAXLEN {
                    r.name()
                } else {
                    long = vec![0u8; r.namelen()];
                    &long
                };
                let p = LockParams {
                    mode: r.mode,
                    flags: r.flags,
                    lkid: r.lkid,
                    name,
                    lvb: r.lvb,
                    args: r.user_args(),
                    pid,
                };
                self.lock(owner, &p).map(i64::from)
            }
            Request::Unlock(r) => {
                let p = UnlockParams {
                    lkid: r.lkid,
                    flags: r.flags,
                    lvb: r.lvb,
                    args: r.user_args(),
                };
                self.unlock(owner, &p).map(|()| 0)
            }
            Request::Deadlock(r) => self.deadlock_cancel(owner, r.lkid, r.flags).map(|()| 0),
            Request::Purge {
                nodeid,
                pid: target,
            } => self.purge(owner, *nodeid, *target, pid).map(|()| 0),
            Request::CreateLockspace { .. } | Request::RemoveLockspace { .. } => Err(Errno::EINVAL),
        }
    }

    /// Read the next callback of `owner`, as `read()` of its fd does, or
    /// `None` when there is none (`EAGAIN` on a non-blocking fd).
    pub fn read(&mut self, owner: OwnerId) -> Option<AstRecord> {
        let o = owner.0;
        self.procs.get(o as usize)?.as_ref()?;
        loop {
            let id = *self.proc(o).asts.front()?;
            let old_mode = self.lk(id).last_cast_mode;
            let slot = self.lk(id).cb_slot;
            let arr = &mut self.cbs[slot as usize];
            let cb = arr.items[0];
            arr.items.copy_within(1..usize::from(arr.len), 0);
            arr.len -= 1;
            let resid = arr.len;
            let mut skip = false;
            {
                let lkb = self.lk_mut(id);
                if cb.bast
                    && lkb.iflags & IFL_HAS_LAST_CAST != 0
                    && compat(cb.mode, lkb.last_cast_mode)
                {
                    skip = true;
                }
                if !cb.bast {
                    lkb.iflags |= IFL_HAS_LAST_CAST;
                    lkb.last_cast_mode = cb.mode;
                }
            }
            if resid == 0 {
                self.proc_mut(o).asts.pop_front();
                self.free_cbs.push(slot);
                let lkb = self.lk_mut(id);
                lkb.cb_slot = NIL;
                lkb.iflags &= !IFL_ON_ASTS;
            }
            if skip {
                if resid == 0 {
                    self.put_lkb(id);
                }
                continue;
            }
            let lkb = self.lk_mut(id);
            let mut copy_lvb = false;
            if !cb.bast {
                if cb.status == 0 && lkb.lvb.is_some() && lvb_op(old_mode, cb.mode) != 0 {
                    copy_lvb = true;
                }
                lkb.lksb_status = cb.status;
                lkb.lksb_flags = cb.sbflags;
            }
            let rec = AstRecord {
                lkid: id,
                astaddr: if cb.bast {
                    lkb.ua.bastaddr
                } else {
                    lkb.ua.castaddr
                },
                astparam: if cb.bast {
                    lkb.ua.bastparam
                } else {
                    lkb.ua.castparam
                },
                user_lksb: lkb.ua.lksb,
                status: lkb.lksb_status,
                sb_flags: lkb.lksb_flags,
                bast_mode: if cb.bast { cb.mode as u8 } else { 0 },
                lvb: if copy_lvb {
                    lkb.lvb.as_deref().copied()
                } else {
                    None
                },
            };
            if resid == 0 {
                self.put_lkb(id);
            }
            return Some(rec);
        }
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

    // ----------------------------------------------------------------
    // dlm_user_request / convert / adopt / unlock / cancel
    // ----------------------------------------------------------------

    fn user_request(&mut self, o: u32, p: &LockParams<'_>) -> Result<u32, Errno> {
        let id = self.create_lkb(o);
        if p.flags & LockFlags::VALBLK.bits() != 0 {
            self.lk_mut(id).lvb = Some(Box::new([0; LVB_LEN]));
        }
        if let Err(e) = set_lock_args(p.mode, p.flags, p.name.len()) {
            self.put_lkb(id);
            return Err(e);
        }
        {
            let lkb = self.lk_mut(id);
            lkb.ua = p.args.into();
            // validate_lock_args for a new request.
            lkb.exflags = p.flags;
            lkb.sbflags = 0;
            lkb.rqmode = p.mode as i8;
            lkb.pid = p.pid;
            lkb.attach_lvb();
        }
        let r = self.get_rsb(p.name);
        self.lk_mut(id).rsb = r;
        self.rsb_mut(r).refs += 1;
        let error = self.do_request(r, id);
        self.do_request_effects(r, id, error);
        if error == -libc::EAGAIN {
            // Not added to the owner's list; the callback holds it.
            self.put_lkb(id);
        } else {
            self.lk_mut(id).refs += 1;
            self.list_push_back(Which::Locks(o), Chain::Own, id);
            self.lk_mut(id).iflags |= IFL_ON_OWNQ;
        }
        Ok(id)
    }

    fn user_convert(&mut self, p: &LockParams<'_>) -> Result<(), Errno> {
        let id = self.find_lkb(p.lkid)?;
        // The kernel updates the lock's user arguments and value block
        // before it checks the request, so a refused conversion still
        // changes them.
        {
            let lkb = self.lk_mut(id);
            if p.flags & LockFlags::VALBLK.bits() != 0 && lkb.lvb.is_none() {
                lkb.lvb = Some(Box::new([0; LVB_LEN]));
            }
            if let Some(buf) = lkb.lvb.as_deref_mut() {
                *buf = p.lvb;
            }
            lkb.ua = p.args.into();
        }
        set_lock_args(p.mode, p.flags, 0)?;
        // validate_lock_args for a conversion.
        {
            let lkb = self.lk(id);
            if lkb.status != STS_GRANTED {
                return Err(Errno::EBUSY);
            }
            if p.flags & LockFlags::QUECVT.bits() != 0 && !quecvt_ok(lkb.grmode, p.mode as i8) {
                return Err(Errno::EINVAL);
            }
        }
        {
            let lkb = self.lk_mut(id);
            lkb.exflags = p.flags;
            lkb.sbflags = 0;
            lkb.rqmode = p.mode as i8;
            lkb.pid = p.pid;
            lkb.attach_lvb();
        }
        let r = self.lk(id).rsb;
        let error = self.do_convert(r, id);
        self.do_convert_effects(r, id, error);
        Ok(())
    }

    fn user_adopt_orphan(&mut self, o: u32, p: &LockParams<'_>) -> Result<u32, Errno> {
        let mut found_other_mode = false;
        let mut found = NIL;
        let mut it = self.orphans.head;
        while it != NIL {
            let lkb = self.lk(it);
            let next = lkb.own.next;
            let name = &self.rsbs[lkb.rsb as usize]
                .as_ref()
                .map(|r| r.name.as_bytes());
            if *name == Some(p.name) {
                if i32::from(lkb.grmode) != i32::from(p.mode) {
                    found_other_mode = true;
                } else {
                    found = it;
                    break;
                }
            }
            it = next;
        }
        if found == NIL {
            return Err(if found_other_mode {
                Errno::EAGAIN
            } else {
                Errno::ENOENT
            });
        }
        let id = found;
        self.list_remove(Which::Orphans, Chain::Own, id);
        {
            let lkb = self.lk_mut(id);
            lkb.iflags &= !IFL_ORPHAN;
            lkb.exflags = p.flags;
            lkb.pid = p.pid;
            lkb.owner = o;
            lkb.ua = p.args.into();
        }
        // The orphan list's reference becomes the owner list's.
        self.list_push_back(Which::Locks(o), Chain::Own, id);
        Ok(id)
    }

    fn user_unlock(&mut self, p: &UnlockParams) -> Result<(), Errno> {
        let id = self.find_lkb(p.lkid)?;
        {
            let lkb = self.lk_mut(id);
            if let Some(buf) = lkb.lvb.as_deref_mut() {
                *buf = p.lvb;
            }
            if p.args.castparam != 0 {
                lkb.ua.castparam = p.args.castparam;
            }
            lkb.ua.lksb = p.args.lksb;
        }
        set_unlock_args(p.flags)?;
        match self.validate_unlock_args(id, p.flags) {
            Ok(()) => self.unlock_lock(id),
            Err(e) if e == Errno::EBUSY && p.flags & LockFlags::FORCEUNLOCK.bits() != 0 => {}
            Err(e) => return Err(e),
        }
        // A lock still on its owner's list (its EUNLOCK was not queued, or
        // FORCEUNLOCK found one in progress) moves to the owner's
        // `unlocking` list, so that closing or purging the owner only marks
        // it dead: it is neither orphaned nor unlocked again. An orphan
        // stays on the orphan list (Linux 6.1 would move it onto the list
        // of the owner that is gone).
        let l = self.lk(id);
        if l.iflags & IFL_ON_OWNQ != 0 && l.iflags & (IFL_ORPHAN | IFL_DEAD) == 0 {
            let o = l.owner;
            self.list_remove(self.own_list(id), Chain::Own, id);
            self.list_push_front(Which::Unlocking(o), Chain::Own, id);
            self.lk_mut(id).iflags |= IFL_UNLOCKING;
        }
        Ok(())
    }

    fn user_cancel(&mut self, p: &UnlockParams) -> Result<(), Errno> {
        let id = self.find_lkb(p.lkid)?;
        {
            let lkb = self.lk_mut(id);
            if p.args.castparam != 0 {
                lkb.ua.castparam = p.args.castparam;
            }
            lkb.ua.lksb = p.args.lksb;
        }
        set_unlock_args(p.flags)?;
        match self.validate_unlock_args(id, p.flags) {
            Ok(()) => {}
            Err(e) if e == Errno::EBUSY => return Ok(()),
            Err(e) => return Err(e),
        }
        self.cancel_lock(id);
        Ok(())
    }

    /// `validate_unlock_args` on a local lock (no waiters, no lookups, no
    /// resends). On success the flags are ORed into the lock's flags.
    fn validate_unlock_args(&mut self, id: Lkid, flags: u32) -> Result<(), Errno> {
        let lkb = self.lk(id);
        if lkb.iflags & IFL_ENDOFLIFE != 0 {
            return Err(Errno::ENOENT);
        }
        if lkb.status == STS_NONE {
            // Only an orphan whose waiting request was cancelled when its
            // owner closed is on no queue without having ended. Linux 6.1
            // unlinks it a second time here and oopses (seen in the QEMU
            // differential run); the engine treats it as ended.
            return Err(Errno::ENOENT);
        }
        // In the kernel `rv` is already -EINVAL when these checks run, so a
        // cancel over an earlier cancel (CANCEL still in the lock's flags,
        // until a conversion replaces them) is EINVAL, not EBUSY; likewise
        // a FORCEUNLOCK over an earlier one. (Found by the differential
        // run against Linux 6.1; the reference notes said EBUSY.)
        if flags & LockFlags::CANCEL.bits() != 0 {
            if lkb.exflags & LockFlags::CANCEL.bits() != 0 {
                return Err(Errno::EINVAL);
            }
            if lkb.status == STS_GRANTED {
                // Nothing to cancel.
                return Err(Errno::EBUSY);
            }
        } else if flags & LockFlags::FORCEUNLOCK.bits() != 0
            && lkb.exflags & LockFlags::FORCEUNLOCK.bits() != 0
        {
            return Err(Errno::EINVAL);
        }
        let lkb = self.lk_mut(id);
        lkb.exflags |= flags;
        lkb.sbflags = 0;
        Ok(())
    }

    fn unlock_lock(&mut self, id: Lkid) {
        // A lock on no queue (an orphan whose waiting request was
        // cancelled, or which was unlocked, after its owner closed) has
        // nothing left to unlock; Linux 6.1 would unlink it from its queue
        // a second time and crash. Leave it alone, as `do_purge` does.
        if self.lk(id).status == STS_NONE {
            return;
        }
        let r = self.lk(id).rsb;
        // do_unlock
        self.set_lvb_unlock(r, id);
        self.remove_lock(r, id);
        self.queue_cast(id, -EUNLOCK);
        // do_unlock_effects
        self.grant_pending_locks(r);
    }

    fn cancel_lock(&mut self, id: Lkid) {
        let r = self.lk(id).rsb;
        // do_cancel
        if self.revert_lock(r, id) != 0 {
            self.queue_cast(id, -ECANCEL);
            // do_cancel_effects
            self.grant_pending_locks(r);
        }
    }

    /// `orphan_proc_lock`: move to the orphan list, then cancel whatever is
    /// in progress (with unlock flags 0, as the kernel does).
    fn orphan_proc_lock(&mut self, id: Lkid) {
        self.lk_mut(id).refs += 1;
        self.list_push_back(Which::Orphans, Chain::Own, id);
        self.lk_mut(id).iflags |= IFL_ON_OWNQ;
        if self.validate_unlock_args(id, 0).is_ok() {
            self.cancel_lock(id);
        }
    }

    /// `unlock_proc_lock`: `FORCEUNLOCK | IVVALBLK` from whatever queue.
    fn unlock_proc_lock(&mut self, id: Lkid) {
        let flags = (LockFlags::FORCEUNLOCK | LockFlags::IVVALBLK).bits();
        if self.validate_unlock_args(id, flags).is_ok() {
            self.unlock_lock(id);
        }
    }

    fn purge_proc_locks(&mut self, o: u32) {
        loop {
            let id = self.proc(o).locks.head;
            if id == NIL {
                break;
            }
            self.list_remove(Which::Locks(o), Chain::Own, id);
            self.lk_mut(id).iflags |= IFL_DEAD;
            self.unlock_proc_lock(id);
            self.put_lkb(id);
        }
        self.release_unlocking(o);
        self.drop_asts(o);
    }

    /// The owner's in-progress unlocks go with it: marked dead, and their
    /// list reference dropped.
    fn release_unlocking(&mut self, o: u32) {
        loop {
            let id = self.proc(o).unlocking.head;
            if id == NIL {
                break;
            }
            self.list_remove(Which::Unlocking(o), Chain::Own, id);
            let lkb = self.lk_mut(id);
            lkb.iflags &= !IFL_UNLOCKING;
            lkb.iflags |= IFL_DEAD;
            self.put_lkb(id);
        }
    }

    /// The owner list a lock with `IFL_ON_OWNQ` (and not an orphan) is on.
    fn own_list(&self, id: Lkid) -> Which {
        let l = self.lk(id);
        if l.iflags & IFL_UNLOCKING != 0 {
            Which::Unlocking(l.owner)
        } else {
            Which::Locks(l.owner)
        }
    }

    fn do_purge(&mut self, pid: u32) {
        let mut it = self.orphans.head;
        while it != NIL {
            let next = self.lk(it).own.next;
            if pid == 0 || self.lk(it).pid == pid {
                if self.lk(it).status != STS_NONE {
                    self.unlock_proc_lock(it);
                }
                // An orphan whose waiting request was cancelled when its
                // owner closed is on no queue; Linux 6.1 would unlink it
                // a second time here (and trip an assertion). The engine
                // just frees it.
                self.list_remove(Which::Orphans, Chain::Own, it);
                self.put_lkb(it);
            }
            it = next;
        }
    }

    fn drop_asts(&mut self, o: u32) {
        while let Some(id) = self.proc_mut(o).asts.pop_front() {
            let slot = self.lk(id).cb_slot;
            self.cbs[slot as usize] = CbArray::default();
            self.free_cbs.push(slot);
            let lkb = self.lk_mut(id);
            lkb.cb_slot = NIL;
            lkb.iflags &= !IFL_ON_ASTS;
            self.put_lkb(id);
        }
    }

    // ----------------------------------------------------------------
    // do_request / do_convert and their effects
    // ----------------------------------------------------------------

    fn do_request(&mut self, r: u32, id: Lkid) -> i32 {
        if self.can_be_granted(r, id, true, None) {
            self.grant_lock(r, id);
            self.queue_cast(id, 0);
            return 0;
        }
        if self.can_be_queued(id) {
            self.add_lkb(r, id, STS_WAITING);
            return -libc::EINPROGRESS;
        }
        self.queue_cast(id, -libc::EAGAIN);
        -libc::EAGAIN
    }

    fn do_request_effects(&mut self, r: u32, id: Lkid, error: i32) {
        if error == -libc::EAGAIN {
            if self.force_blocking_asts(id) {
                self.send_blocking_asts_all(r, id);
            }
        } else if error == -libc::EINPROGRESS {
            self.send_blocking_asts(r, id);
        }
    }

    fn do_convert(&mut self, r: u32, id: Lkid) -> i32 {
        let mut deadlk = false;
        if self.can_be_granted(r, id, true, Some(&mut deadlk)) {
            self.grant_lock(r, id);
            self.queue_cast(id, 0);
            return 0;
        }
        if deadlk && self.lk(id).exflags & LockFlags::NODLCKWT.bits() == 0 {
            // Left on the grant queue in its old mode.
            self.revert_lock(r, id);
            self.queue_cast(id, -libc::EDEADLK);
            return -libc::EDEADLK;
        }
        if self.lk(id).sbflags & StatusFlags::DEMOTED.bits() != 0 {
            self.grant_pending_convert(r, IV, None);
            if self._can_be_granted(r, id, true) {
                self.grant_lock(r, id);
                self.queue_cast(id, 0);
                return 0;
            }
        }
        if self.can_be_queued(id) {
            self.del_lkb(r, id);
            self.add_lkb(r, id, STS_CONVERT);
            return -libc::EINPROGRESS;
        }
        self.queue_cast(id, -libc::EAGAIN);
        -libc::EAGAIN
    }

    fn do_convert_effects(&mut self, r: u32, id: Lkid, error: i32) {
        if error == 0 {
            self.grant_pending_locks(r);
        } else if error == -libc::EAGAIN {
            if self.force_blocking_asts(id) {
                self.send_blocking_asts_all(r, id);
            }
        } else if error == -libc::EINPROGRESS {
            self.send_blocking_asts(r, id);
        }
    }

    fn can_be_queued(&self, id: Lkid) -> bool {
        self.lk(id).exflags & LockFlags::NOQUEUE.bits() == 0
    }

    fn force_blocking_asts(&self, id: Lkid) -> bool {
        self.lk(id).exflags & LockFlags::NOQUEUEBAST.bits() != 0
    }

    // ----------------------------------------------------------------
    // Grant rules
    // ----------------------------------------------------------------

    /// `queue_conflict`: is `id`'s requested mode incompatible with the
    /// granted mode of any other lock on the queue?
    fn queue_conflict(&self, head: u32, id: Lkid) -> bool {
        let rq = self.lk(id).rqmode;
        let mut it = head;
        while it != NIL {
            let this = self.lk(it);
            if it != id && !compat(this.grmode, rq) {
                return true;
            }
            it = this.q.next;
        }
        false
    }

    /// `_can_be_granted` with `recover` 0.
    fn _can_be_granted(&self, r: u32, id: Lkid, now: bool) -> bool {
        let lkb = self.lk(id);
        let rsb = self.rsb(r);
        let conv = lkb.grmode != IV;
        if lkb.exflags & LockFlags::EXPEDITE.bits() != 0 {
            return true;
        }
        if self.queue_conflict(rsb.grant.head, id) {
            return false;
        }
        if self.queue_conflict(rsb.convert.head, id) {
            return false;
        }
        let quecvt = lkb.exflags & LockFlags::QUECVT.bits() != 0;
        if now && conv && !quecvt {
            return true;
        }
        if now && conv && quecvt {
            return rsb.convert.head == NIL;
        }
        if lkb.exflags & LockFlags::NOORDER.bits() != 0 {
            return true;
        }
        if !now && conv && rsb.convert.head == id {
            return true;
        }
        if now && !conv && rsb.convert.head == NIL && rsb.wait.head == NIL {
            return true;
        }
        if !now && !conv && rsb.convert.head == NIL && rsb.wait.head == id {
            return true;
        }
        false
    }

    /// `conversion_deadlock_detect`.
    fn conversion_deadlock_detect(&self, r: u32, id2: Lkid) -> bool {
        let l2 = self.lk(id2);
        let mut ahead = false;
        let mut it = self.rsb(r).convert.head;
        while it != NIL {
            let l1 = self.lk(it);
            if it == id2 {
                ahead = true;
            } else if !ahead {
                if !compat(l2.grmode, l1.rqmode) {
                    return true;
                }
            } else if !compat(l2.grmode, l1.rqmode) && !compat(l1.grmode, l2.rqmode) {
                return true;
            }
            it = l1.q.next;
        }
        false
    }

    /// `can_be_granted`: `_can_be_granted`, then conversion-deadlock
    /// handling (`CONVDEADLK` demotes, otherwise `err`), then `ALTPR` /
    /// `ALTCW`.
    fn can_be_granted(&mut self, r: u32, id: Lkid, now: bool, err: Option<&mut bool>) -> bool {
        let rqmode = self.lk(id).rqmode;
        let is_convert = self.lk(id).grmode != IV;
        if self._can_be_granted(r, id, now) {
            return true;
        }
        if is_convert && self.can_be_queued(id) && self.conversion_deadlock_detect(r, id) {
            let lkb = self.lk_mut(id);
            if lkb.exflags & LockFlags::CONVDEADLK.bits() != 0 {
                lkb.grmode = NL;
                lkb.sbflags |= StatusFlags::DEMOTED.bits();
            } else if let Some(e) = err {
                *e = true;
            }
            return false;
        }
        let exflags = self.lk(id).exflags;
        let alt = if rqmode != PR && exflags & LockFlags::ALTPR.bits() != 0 {
            PR
        } else if rqmode != CW && exflags & LockFlags::ALTCW.bits() != 0 {
            CW
        } else {
            return false;
        };
        self.lk_mut(id).rqmode = alt;
        if self._can_be_granted(r, id, now) {
            self.lk_mut(id).sbflags |= StatusFlags::ALTMODE.bits();
            true
        } else {
            self.lk_mut(id).rqmode = rqmode;
            false
        }
    }

    /// `grant_pending_convert`: returns the highest blocked conversion mode
    /// (at least `high`); sets `cw` if a blocked conversion wants CW.
    fn grant_pending_convert(&mut self, r: u32, high: i8, mut cw: Option<&mut bool>) -> i8 {
        let mut quit = false;
        loop {
            let mut grant_restart = false;
            let mut demote_restart = false;
            let mut hi = IV;
            let mut it = self.rsb(r).convert.head;
            while it != NIL {
                let next = self.lk(it).q.next;
                let demoted = self.lk(it).sbflags & StatusFlags::DEMOTED.bits() != 0;
                let mut deadlk = false;
                if self.can_be_granted(r, it, false, Some(&mut deadlk)) {
                    self.grant_lock_pending(r, it);
                    grant_restart = true;
                    it = next;
                    continue;
                }
                if !demoted && self.lk(it).sbflags & StatusFlags::DEMOTED.bits() != 0 {
                    demote_restart = true;
                    it = next;
                    continue;
                }
                if deadlk {
                    let lkb = self.lk(it);
                    if lkb.exflags & LockFlags::NODLCKWT.bits() != 0 && lkb.highbast < lkb.rqmode {
                        let rq = lkb.rqmode;
                        self.queue_bast(it, rq);
                        self.lk_mut(it).highbast = rq;
                    }
                    it = next;
                    continue;
                }
                let rq = self.lk(it).rqmode;
                hi = hi.max(rq);
                if rq == CW {
                    if let Some(c) = cw.as_deref_mut() {
                        *c = true;
                    }
                }
                it = next;
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

    fn grant_pending_wait(&mut self, r: u32, mut high: i8, cw: &mut bool) -> i8 {
        let mut it = self.rsb(r).wait.head;
        while it != NIL {
            let next = self.lk(it).q.next;
            if self.can_be_granted(r, it, false, None) {
                self.grant_lock_pending(r, it);
            } else {
                let rq = self.lk(it).rqmode;
                high = high.max(rq);
                if rq == CW {
                    *cw = true;
                }
            }
            it = next;
        }
        high
    }

    fn lock_requires_bast(&self, gr: Lkid, high: i8, cw: bool) -> bool {
        let g = self.lk(gr);
        if g.grmode == PR && cw {
            return g.highbast < EX;
        }
        g.highbast < high && !compat(g.grmode, high)
    }

    /// `grant_pending_locks`: grant what has become grantable, then send
    /// blocking ASTs for the highest mode still blocked.
    fn grant_pending_locks(&mut self, r: u32) {
        let mut cw = false;
        let high = self.grant_pending_convert(r, IV, Some(&mut cw));
        let high = self.grant_pending_wait(r, high, &mut cw);
        if high == IV {
            return;
        }
        let mut it = self.rsb(r).grant.head;
        while it != NIL {
            let next = self.lk(it).q.next;
            if self.lock_requires_bast(it, high, cw) {
                if cw && high == PR && self.lk(it).grmode == PR {
                    self.queue_bast(it, CW);
                } else {
                    self.queue_bast(it, high);
                }
                self.lk_mut(it).highbast = high;
            }
            it = next;
        }
    }

    fn modes_require_bast(&self, gr: Lkid, rq: Lkid) -> bool {
        let g = self.lk(gr);
        let rqmode = self.lk(rq).rqmode;
        if (g.grmode == PR && rqmode == CW) || (g.grmode == CW && rqmode == PR) {
            return g.highbast < EX;
        }
        g.highbast < rqmode && !compat(g.grmode, rqmode)
    }

    fn send_bast_queue(&mut self, head: u32, id: Lkid) {
        let rqmode = self.lk(id).rqmode;
        let mut it = head;
        while it != NIL {
            let next = self.lk(it).q.next;
            if it != id && self.modes_require_bast(it, id) {
                self.queue_bast(it, rqmode);
                self.lk_mut(it).highbast = rqmode;
            }
            it = next;
        }
    }

    fn send_blocking_asts(&mut self, r: u32, id: Lkid) {
        let head = self.rsb(r).grant.head;
        self.send_bast_queue(head, id);
    }

    fn send_blocking_asts_all(&mut self, r: u32, id: Lkid) {
        let head = self.rsb(r).grant.head;
        self.send_bast_queue(head, id);
        let head = self.rsb(r).convert.head;
        self.send_bast_queue(head, id);
    }

    // ----------------------------------------------------------------
    // Queue manipulation and value blocks
    // ----------------------------------------------------------------

    fn add_lkb(&mut self, r: u32, id: Lkid, status: u8) {
        let headque = self.lk(id).exflags & LockFlags::HEADQUE.bits() != 0;
        {
            let lkb = self.lk_mut(id);
            lkb.refs += 1;
            lkb.status = status;
        }
        match status {
            STS_WAITING if headque => self.list_push_front(Which::Wait(r), Chain::Queue, id),
            STS_WAITING => self.list_push_back(Which::Wait(r), Chain::Queue, id),
            STS_CONVERT if headque => self.list_push_front(Which::Convert(r), Chain::Queue, id),
            STS_CONVERT => self.list_push_back(Which::Convert(r), Chain::Queue, id),
            _ => {
                // lkb_add_ordered: before the first lock whose rqmode is
                // below our granted mode (in practice the head, since a
                // granted lock's rqmode is usually IV).
                let mode = self.lk(id).grmode;
                let mut it = self.rsb(r).grant.head;
                while it != NIL && self.lk(it).rqmode >= mode {
                    it = self.lk(it).q.next;
                }
                if it == NIL {
                    self.list_push_back(Which::Grant(r), Chain::Queue, id);
                } else {
                    self.list_insert_before(Which::Grant(r), Chain::Queue, it, id);
                }
            }
        }
    }

    fn del_lkb(&mut self, r: u32, id: Lkid) {
        let which = match self.lk(id).status {
            STS_WAITING => Which::Wait(r),
            STS_CONVERT => Which::Convert(r),
            _ => Which::Grant(r),
        };
        self.list_remove(which, Chain::Queue, id);
        let lkb = self.lk_mut(id);
        lkb.status = STS_NONE;
        lkb.refs -= 1;
    }

    fn remove_lock(&mut self, r: u32, id: Lkid) {
        // _remove_lock: off the queue, and the create reference goes.
        self.del_lkb(r, id);
        let lkb = self.lk_mut(id);
        lkb.grmode = IV;
        lkb.refs -= 1;
    }

    /// `revert_lock`: 0 did nothing, 1 moved back to granted, -1 removed.
    fn revert_lock(&mut self, r: u32, id: Lkid) -> i32 {
        self.lk_mut(id).rqmode = IV;
        match self.lk(id).status {
            STS_CONVERT => {
                self.del_lkb(r, id);
                self.add_lkb(r, id, STS_GRANTED);
                1
            }
            STS_WAITING => {
                self.del_lkb(r, id);
                let lkb = self.lk_mut(id);
                lkb.grmode = IV;
                lkb.refs -= 1;
                -1
            }
            _ => 0,
        }
    }

    fn grant_lock(&mut self, r: u32, id: Lkid) {
        self.set_lvb_lock(r, id);
        // _grant_lock
        let (gr, rq, st) = {
            let l = self.lk(id);
            (l.grmode, l.rqmode, l.status)
        };
        if gr != rq {
            self.lk_mut(id).grmode = rq;
            if st != STS_NONE {
                self.del_lkb(r, id);
            }
            self.add_lkb(r, id, STS_GRANTED);
        }
        let lkb = self.lk_mut(id);
        lkb.rqmode = IV;
        lkb.highbast = 0;
    }

    fn grant_lock_pending(&mut self, r: u32, id: Lkid) {
        self.grant_lock(r, id);
        self.queue_cast(id, 0);
    }

    fn set_lvb_lock(&mut self, r: u32, id: Lkid) {
        let (gr, rq, exflags) = {
            let l = self.lk(id);
            (l.grmode, l.rqmode, l.exflags)
        };
        let b = lvb_op(gr, rq);
        let valblk = exflags & LockFlags::VALBLK.bits() != 0;
        if b == 1 {
            let has_lvb = self.lk(id).attached_lvb().is_some();
            if !has_lvb || !valblk {
                return;
            }
            let Some(res) = self.rsb(r).lvb.as_deref().copied() else {
                return;
            };
            if let Some(buf) = self.lk_mut(id).lvb.as_deref_mut() {
                *buf = res;
            }
        } else if b == 0 {
            if exflags & LockFlags::IVVALBLK.bits() != 0 {
                self.rsb_mut(r).valnotvalid = true;
                return;
            }
            let Some(mine) = self.lk(id).attached_lvb() else {
                return;
            };
            if !valblk {
                return;
            }
            let rsb = self.rsb_mut(r);
            rsb.lvb = Some(Box::new(mine));
            rsb.valnotvalid = false;
        }
        if self.rsb(r).valnotvalid {
            self.lk_mut(id).sbflags |= StatusFlags::VALNOTVALID.bits();
        }
    }

    fn set_lvb_unlock(&mut self, r: u32, id: Lkid) {
        let (gr, exflags) = {
            let l = self.lk(id);
            (l.grmode, l.exflags)
        };
        if gr < PW {
            return;
        }
        if exflags & LockFlags::IVVALBLK.bits() != 0 {
            self.rsb_mut(r).valnotvalid = true;
            return;
        }
        let Some(mine) = self.lk(id).attached_lvb() else {
            return;
        };
        if exflags & LockFlags::VALBLK.bits() == 0 {
            return;
        }
        let rsb = self.rsb_mut(r);
        rsb.lvb = Some(Box::new(mine));
        rsb.valnotvalid = false;
    }

    // ----------------------------------------------------------------
    // Callbacks (dlm_add_cb / dlm_user_add_ast / dlm_add_lkb_callback)
    // ----------------------------------------------------------------

    fn queue_cast(&mut self, id: Lkid, status: i32) {
        let mut status = status;
        let lkb = self.lk_mut(id);
        if status == -ECANCEL && lkb.iflags & IFL_DEADLOCK_CANCEL != 0 {
            lkb.iflags &= !IFL_DEADLOCK_CANCEL;
            status = -libc::EDEADLK;
        }
        let (mode, sbflags) = (lkb.grmode, lkb.sbflags);
        self.user_add_ast(id, false, mode, status, sbflags);
    }

    fn queue_bast(&mut self, id: Lkid, mode: i8) {
        self.user_add_ast(id, true, mode, 0, 0);
    }

    fn user_add_ast(&mut self, id: Lkid, bast: bool, mode: i8, status: i32, sbflags: u8) {
        let lkb = self.lk_mut(id);
        if lkb.iflags & (IFL_ORPHAN | IFL_DEAD) != 0 {
            return;
        }
        if bast && lkb.ua.bastaddr == 0 {
            return;
        }
        if !bast && is_endoflife(mode, status) {
            lkb.iflags |= IFL_ENDOFLIFE;
        }
        let o = lkb.owner;
        let mut slot = lkb.cb_slot;
        if slot == NIL {
            slot = match self.free_cbs.pop() {
                Some(s) => s,
                None => {
                    self.cbs.push(CbArray::default());
                    (self.cbs.len() - 1) as u32
                }
            };
            self.lk_mut(id).cb_slot = slot;
        }
        let arr = &mut self.cbs[slot as usize];
        let n = usize::from(arr.len);
        let mut added = false;
        if n < CALLBACKS_SIZE {
            let suppressed = n > 0 && bast && arr.items[n - 1].bast && {
                let prev = arr.items[n - 1].mode;
                prev == mode || (prev > mode && prev > PR)
            };
            if !suppressed {
                arr.items[n] = Cb {
                    bast,
                    mode,
                    sbflags,
                    status,
                };
                arr.len += 1;
            }
            // A suppressed BAST is a success for the kernel too.
            added = true;
        } else {
            log::warn!("lock {id:x}: callback array full, callback dropped");
        }
        if !added {
            return;
        }
        if self.lk(id).iflags & IFL_ON_ASTS == 0 {
            let lkb = self.lk_mut(id);
            lkb.iflags |= IFL_ON_ASTS;
            lkb.refs += 1;
            self.proc_mut(o).asts.push_back(id);
        }
        if self.lk(id).iflags & IFL_ENDOFLIFE != 0 && self.lk(id).iflags & IFL_ON_OWNQ != 0 {
            self.list_remove(self.own_list(id), Chain::Own, id);
            self.lk_mut(id).iflags &= !IFL_UNLOCKING;
            self.put_lkb(id);
        }
    }

    // ----------------------------------------------------------------
    // Lock ids, lock lifetime, resources
    // ----------------------------------------------------------------

    fn create_lkb(&mut self, owner: u32) -> Lkid {
        let id = match self.free_ids.pop() {
            Some(Reverse(id)) => id,
            None => {
                let id = self.next_id;
                self.next_id += 1;
                self.locks.push(None);
                id
            }
        };
        self.locks[id as usize] = Some(Lkb {
            rsb: u32::MAX,
            owner,
            grmode: IV,
            rqmode: IV,
            highbast: 0,
            status: STS_NONE,
            sbflags: 0,
            iflags: 0,
            refs: 1,
            last_cast_mode: 0,
            lksb_flags: 0,
            exflags: 0,
            lksb_status: 0,
            pid: 0,
            cb_slot: NIL,
            q: Links::default(),
            own: Links::default(),
            ua: StoredArgs::default(),
            lvb: None,
        });
        self.live_locks += 1;
        id
    }

    /// The reference `find_lkb` takes for the length of an unlock or
    /// cancel, dropped with `put_lkb` (`dlm_put_lkb`) at the end: the lock
    /// may have lost every other reference by then (a dead lock's
    /// callbacks are never queued), and that last put frees it.
    fn hold_lkb(&mut self, id: Lkid) {
        self.lk_mut(id).refs += 1;
    }

    fn find_lkb(&self, lkid: u32) -> Result<Lkid, Errno> {
        match self.locks.get(lkid as usize) {
            Some(Some(_)) => Ok(lkid),
            _ => Err(Errno::ENOENT),
        }
    }

    /// Drop one reference; the last one frees the lock id and detaches the
    /// lock from its resource.
    fn put_lkb(&mut self, id: Lkid) {
        let lkb = self.lk_mut(id);
        debug_assert!(lkb.refs > 0, "lock {id} over-released");
        lkb.refs = lkb.refs.saturating_sub(1);
        if lkb.refs > 0 {
            return;
        }
        let r = lkb.rsb;
        if let Some(slot) = Some(lkb.cb_slot).filter(|&s| s != NIL) {
            self.cbs[slot as usize] = CbArray::default();
            self.free_cbs.push(slot);
        }
        self.locks[id as usize] = None;
        self.live_locks -= 1;
        self.free_ids.push(Reverse(id));
        if r != u32::MAX {
            self.put_rsb(r);
        }
    }

    fn hash_name(&self, name: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(name)
    }

    fn find_rsb(&self, name: &[u8]) -> Option<u32> {
        let h = self.hash_name(name);
        let rsbs = &self.rsbs;
        self.index
            .find(h, |&i| {
                rsbs[i as usize]
                    .as_ref()
                    .is_some_and(|r| r.name.as_bytes() == name)
            })
            .copied()
    }

    /// `find_rsb(R_REQUEST)`: the resource, created or revived from the
    /// toss list as needed.
    fn get_rsb(&mut self, name: &[u8]) -> u32 {
        debug_assert!(name.len() <= RESNAME_MAXLEN);
        if let Some(r) = self.find_rsb(name) {
            if self.rsb(r).refs == 0 {
                self.tossed -= 1;
            }
            return r;
        }
        let hash = self.hash_name(name);
        let rsb = Rsb {
            name: Name::new(name),
            grant: List::default(),
            convert: List::default(),
            wait: List::default(),
            lvb: None,
            refs: 0,
            valnotvalid: false,
            in_toss_queue: false,
        };
        let r = match self.free_rsbs.pop() {
            Some(r) => {
                self.rsbs[r as usize] = Some(rsb);
                r
            }
            None => {
                self.rsbs.push(Some(rsb));
                (self.rsbs.len() - 1) as u32
            }
        };
        let (rsbs, hasher) = (&self.rsbs, &self.hasher);
        self.index.insert_unique(hash, r, |&i| {
            use std::hash::BuildHasher;
            rsbs[i as usize]
                .as_ref()
                .map_or(0, |x| hasher.hash_one(x.name.as_bytes()))
        });
        r
    }

    /// Drop a lock's hold on a resource; the last one tosses it, which
    /// frees its value block.
    fn put_rsb(&mut self, r: u32) {
        let rsb = self.rsb_mut(r);
        rsb.refs -= 1;
        if rsb.refs > 0 {
            return;
        }
        rsb.lvb = None;
        if !rsb.in_toss_queue {
            rsb.in_toss_queue = true;
            self.toss.push_back(r);
        }
        self.tossed += 1;
        // Forget the oldest tossed resources beyond the limit. Every tossed
        // resource has exactly one queue entry; an entry whose resource
        // was revived since is dropped when it comes up (so a resource
        // tossed, revived and tossed again may go a little early).
        while self.tossed > TOSS_KEEP {
            let Some(old) = self.toss.pop_front() else {
                break;
            };
            let rsb = self.rsb_mut(old);
            rsb.in_toss_queue = false;
            if rsb.refs == 0 {
                self.free_rsb(old);
            }
        }
    }

    fn free_rsb(&mut self, r: u32) {
        let Some(rsb) = self.rsbs[r as usize].take() else {
            return;
        };
        let hash = self.hash_name(rsb.name.as_bytes());
        if let Ok(entry) = self.index.find_entry(hash, |&i| i == r) {
            entry.remove();
        }
        self.tossed -= 1;
        self.free_rsbs.push(r);
    }

    // ----------------------------------------------------------------
    // Intrusive lists
    // ----------------------------------------------------------------

    fn list(&mut self, which: Which) -> &mut List {
        match which {
            Which::Grant(r) => &mut self.rsb_mut(r).grant,
            Which::Convert(r) => &mut self.rsb_mut(r).convert,
            Which::Wait(r) => &mut self.rsb_mut(r).wait,
            Which::Locks(o) => &mut self.proc_mut(o).locks,
            Which::Unlocking(o) => &mut self.proc_mut(o).unlocking,
            Which::Orphans => &mut self.orphans,
        }
    }

    fn links(&mut self, id: Lkid, chain: Chain) -> &mut Links {
        let lkb = self.lk_mut(id);
        match chain {
            Chain::Queue => &mut lkb.q,
            Chain::Own => &mut lkb.own,
        }
    }

    fn list_push_back(&mut self, which: Which, chain: Chain, id: Lkid) {
        let tail = self.list(which).tail;
        *self.links(id, chain) = Links {
            prev: tail,
            next: NIL,
        };
        if tail == NIL {
            self.list(which).head = id;
        } else {
            self.links(tail, chain).next = id;
        }
        self.list(which).tail = id;
        if let Chain::Own = chain {
            self.lk_mut(id).iflags |= IFL_ON_OWNQ;
        }
    }

    fn list_push_front(&mut self, which: Which, chain: Chain, id: Lkid) {
        let head = self.list(which).head;
        if head == NIL {
            self.list_push_back(which, chain, id);
            return;
        }
        self.list_insert_before(which, chain, head, id);
    }

    fn list_insert_before(&mut self, which: Which, chain: Chain, at: Lkid, id: Lkid) {
        let prev = self.links(at, chain).prev;
        *self.links(id, chain) = Links { prev, next: at };
        self.links(at, chain).prev = id;
        if prev == NIL {
            self.list(which).head = id;
        } else {
            self.links(prev, chain).next = id;
        }
        if let Chain::Own = chain {
            self.lk_mut(id).iflags |= IFL_ON_OWNQ;
        }
    }

    fn list_remove(&mut self, which: Which, chain: Chain, id: Lkid) {
        let Links { prev, next } = *self.links(id, chain);
        if prev == NIL {
            self.list(which).head = next;
        } else {
            self.links(prev, chain).next = next;
        }
        if next == NIL {
            self.list(which).tail = prev;
        } else {
            self.links(next, chain).prev = prev;
        }
        *self.links(id, chain) = Links::default();
        if let Chain::Own = chain {
            self.lk_mut(id).iflags &= !IFL_ON_OWNQ;
        }
    }

    // ----------------------------------------------------------------
    // Accessors. Ids handed to these always name live entries: they come
    // from the engine's own lists, never straight from a caller.
    // ----------------------------------------------------------------

    fn lk(&self, id: Lkid) -> &Lkb {
        match self.locks.get(id as usize) {
            Some(Some(l)) => l,
            _ => unreachable!("engine invariant: lock {id} is live"),
        }
    }

    fn lk_mut(&mut self, id: Lkid) -> &mut Lkb {
        match self.locks.get_mut(id as usize) {
            Some(Some(l)) => l,
            _ => unreachable!("engine invariant: lock {id} is live"),
        }
    }

    fn rsb(&self, r: u32) -> &Rsb {
        match self.rsbs.get(r as usize) {
            Some(Some(x)) => x,
            _ => unreachable!("engine invariant: resource {r} is live"),
        }
    }

    fn rsb_mut(&mut self, r: u32) -> &mut Rsb {
        match self.rsbs.get_mut(r as usize) {
            Some(Some(x)) => x,
            _ => unreachable!("engine invariant: resource {r} is live"),
        }
    }

    fn proc(&self, o: u32) -> &Proc {
        match self.procs.get(o as usize) {
            Some(Some(p)) => p,
            _ => unreachable!("engine invariant: owner {o} is open"),
        }
    }

    fn proc_mut(&mut self, o: u32) -> &mut Proc {
        match self.procs.get_mut(o as usize) {
            Some(Some(p)) => p,
            _ => unreachable!("engine invariant: owner {o} is open"),
        }
    }
}

/// `set_lock_args` as reached from userspace, where the AST function and
/// status block always exist (the device checked the user's pointers).
fn set_lock_args(mode: u8, flags: u32, namelen: usize) -> Result<(), Errno> {
    let has = |f: LockFlags| flags & f.bits() != 0;
    let bad = mode > LockMode::Ex as u8
        || (!has(LockFlags::CONVERT) && namelen > RESNAME_MAXLEN)
        || has(LockFlags::CANCEL)
        || (has(LockFlags::QUECVT) && !has(LockFlags::CONVERT))
        || (has(LockFlags::CONVDEADLK) && !has(LockFlags::CONVERT))
        || (has(LockFlags::CONVDEADLK) && has(LockFlags::NOQUEUE))
        || (has(LockFlags::EXPEDITE) && has(LockFlags::CONVERT))
        || (has(LockFlags::EXPEDITE) && has(LockFlags::QUECVT))
        || (has(LockFlags::EXPEDITE) && has(LockFlags::NOQUEUE))
        || (has(LockFlags::EXPEDITE) && mode != LockMode::Nl as u8);
    if bad {
        Err(Errno::EINVAL)
    } else {
        Ok(())
    }
}

/// `set_unlock_args`.
fn set_unlock_args(flags: u32) -> Result<(), Errno> {
    if flags & !LockFlags::UNLOCK_ALLOWED.bits() != 0 {
        return Err(Errno::EINVAL);
    }
    if flags & LockFlags::CANCEL.bits() != 0 && flags & LockFlags::FORCEUNLOCK.bits() != 0 {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
