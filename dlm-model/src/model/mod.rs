//! The reference model: a separate, deliberately simple implementation of
//! the Linux 6.1 and 6.12 `fs/dlm` rules (`lock.c`, `ast.c`, `user.c`) on
//! one node, the oracle the engine is compared with. [`Kernel`] chooses;
//! the two differ only in callbacks (`callbacks.rs` says how), and in
//! what follows from those: under 6.12 no callback keeps a lock alive.
//!
//! It is written from the kernel source and the reference notes, in the
//! plainest form available: queues are `Vec`s of lock ids, every lookup is
//! a linear scan or a map lookup, and a lock is freed when nothing refers
//! to it any more (it is on no queue, on no owner, unlocking or orphan
//! list, and has no callback waiting), which is what the kernel's
//! reference counts amount to.
//!
//! Where the kernel itself has no defined behaviour (it would crash), the
//! model follows the engine's documented choice; each such place says so.
//!
//! The model is independent of the engine: it takes nothing from
//! `dlm-engine`, only dlm-proto's safe types and records, so that a rule
//! the engine gets wrong cannot leak into the oracle.
//!
//! The files follow the kernel's topics: `tables.rs` (the mode
//! matrices and argument checks), queues and grant rules (`grant.rs`),
//! value blocks (`lvb.rs`), callbacks and reads (`callbacks.rs`),
//! request and convert paths (`request.rs`), unlock and cancel paths
//! (`unlock.rs`), and procs, purge and close (`owners.rs`).

mod callbacks;
mod coverage;
mod grant;
mod lvb;
mod owners;
mod request;
mod tables;
mod unlock;

pub use coverage::{path_counts, report_coverage};

use std::collections::BTreeMap;

use dlm_proto::records::{UserArgs, LVB_LEN};
use dlm_proto::LockMode;

use coverage::hit;
use tables::IV;

/// A value block.
pub type Lvb = [u8; LVB_LEN];

/// Which kernel's rules the model follows where they differ: its own
/// type, so that the model takes nothing from the engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kernel {
    /// Linux 6.1.
    #[default]
    V6_1,
    /// Linux 6.12.
    V6_12,
}

/// Where a lock is (`lkb_status`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum St {
    /// On no queue.
    None,
    Waiting,
    Granted,
    Convert,
}

/// One callback waiting in a lock's array (`struct dlm_callback`).
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

/// A lock (`struct dlm_lkb`).
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
    /// Mode of the last completion read, if any was (6.1).
    last_cast: Option<i8>,
    cbs: Vec<Cb>,
    /// 6.12: mode of the last completion queued (`lkb_last_cast_cb_mode`,
    /// IV until one is), and the last callback queued, if any, as
    /// (blocking, mode).
    last_cast_queued: i8,
    last_cb: Option<(bool, i8)>,
}

/// A resource (`struct dlm_rsb`), kept for good once made: one that no
/// lock refers to is on the toss list.
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

/// An open lockspace handle (`struct dlm_user_proc`).
#[derive(Debug, Default)]
struct MProc {
    locks: Vec<u32>,
    unlocking: Vec<u32>,
    /// Locks with callbacks waiting, in the order they got their first
    /// (6.1).
    asts: Vec<u32>,
    /// The records waiting, in the order they were queued (6.12).
    records: Vec<dlm_proto::records::AstRecord>,
}

/// A lock or convert request as the model takes it: the device's
/// `DLM_USER_LOCK` parameters.
#[derive(Clone, Debug)]
pub struct Req {
    /// The raw mode, valid or not.
    pub mode: u8,
    /// The raw `DLM_LKF_*` flags; CONVERT makes it a conversion of
    /// `lkid`, ORPHAN an adoption.
    pub flags: u32,
    /// The lock a conversion converts (ignored otherwise).
    pub lkid: u32,
    /// The resource name (ignored by a conversion).
    pub name: Vec<u8>,
    /// The caller's value block.
    pub lvb: Lvb,
    /// The caller's user arguments.
    pub args: UserArgs,
    /// The pid to record.
    pub pid: u32,
}

/// Which queue of its resource a lock is on, as the model names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queue {
    /// Granted.
    Granted,
    /// Waiting to convert.
    Converting,
    /// Waiting for a first grant.
    Waiting,
}

/// A lock as the model's snapshot shows it, with the owner as a model
/// proc id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockSnapshot {
    /// Lock id.
    pub lkid: u32,
    /// Resource name.
    pub resource: Vec<u8>,
    /// Granted mode, if any.
    pub granted: Option<LockMode>,
    /// Requested mode, while a request or conversion is queued.
    pub requested: Option<LockMode>,
    /// Queue, or `None` for a lock that has ended (its last callback is
    /// still unread) or an orphan whose request was cancelled.
    pub queue: Option<Queue>,
    /// The owning proc, or `None` for an orphan or a dead lock.
    pub owner: Option<usize>,
    /// Pid recorded by the last request, conversion or adoption.
    pub pid: u32,
    /// Raw `DLM_LKF_*` flags of the last operation.
    pub flags: u32,
}

/// The model of one lockspace on one node: locks, resources, procs (open
/// lockspace handles, numbered from 0 in the order they were opened) and
/// the orphan list.
#[derive(Debug, Default)]
pub struct Model {
    locks: BTreeMap<u32, MLock>,
    res: Vec<MRes>,
    procs: Vec<Option<MProc>>,
    orphans: Vec<u32>,
    kernel: Kernel,
}

/// A kernel mode number as a mode (`None` for IV).
fn mode_of(m: i8) -> Option<LockMode> {
    LockMode::try_from(i32::from(m)).ok()
}

impl Model {
    /// An empty lockspace following `kernel` (`Model::default()` follows
    /// 6.1).
    pub fn new(kernel: Kernel) -> Model {
        Model {
            kernel,
            ..Model::default()
        }
    }

    /// The kernel the model follows.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// The lock `id`, which must exist.
    fn lk(&self, id: u32) -> &MLock {
        &self.locks[&id]
    }

    /// The lock `id`, which must exist, to change.
    fn lkm(&mut self, id: u32) -> &mut MLock {
        self.locks.get_mut(&id).expect("model lock exists")
    }

    /// The proc `p`, which must be open.
    fn proc_mut(&mut self, p: usize) -> &mut MProc {
        self.procs[p].as_mut().expect("model proc is open")
    }

    /// Whether proc `p` is open.
    fn is_open(&self, p: usize) -> bool {
        matches!(self.procs.get(p), Some(Some(_)))
    }

    /// Opens a proc (`device_open`) and returns its id.
    pub fn open(&mut self) -> usize {
        self.procs.push(Some(MProc::default()));
        self.procs.len() - 1
    }

    // ----- bookkeeping -----

    /// Whether lock `id` is on a proc's lock or unlocking list, or on the
    /// orphan list.
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

    /// The resource `name`, made if it never existed.
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

    // ----- observation -----

    /// Every lock, by ascending id.
    pub fn snapshot(&self) -> Vec<LockSnapshot> {
        self.locks
            .iter()
            .map(|(&id, l)| LockSnapshot {
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

    /// The value block and VALNOTVALID mark of the resource `name`, if it
    /// is in use (not tossed).
    pub fn resource_lvb(&self, name: &[u8]) -> Option<(Option<Lvb>, bool)> {
        let r = self.res.iter().find(|r| r.name == name && r.active)?;
        Some((r.lvb, r.valnotvalid))
    }

    /// Whether proc `p` has callbacks to read.
    pub fn has_callbacks(&self, p: usize) -> bool {
        matches!(self.procs.get(p), Some(Some(pr)) if !pr.asts.is_empty() || !pr.records.is_empty())
    }

    /// How many resources are in use.
    pub fn resource_count(&self) -> usize {
        self.res.iter().filter(|r| r.active).count()
    }

    /// How many locks exist (ended ones with a callback unread included).
    pub fn lock_count(&self) -> usize {
        self.locks.len()
    }

    /// The ids of every lock, ascending.
    pub fn lock_ids(&self) -> impl ExactSizeIterator<Item = u32> + '_ {
        self.locks.keys().copied()
    }

    /// The granted mode of the first orphan (in orphan list order) on the
    /// resource `name` that holds one.
    pub fn orphan_mode(&self, name: &[u8]) -> Option<u8> {
        self.orphans
            .iter()
            .map(|id| self.lk(*id))
            .find(|l| self.res[l.res].name == name && l.grmode != IV)
            .map(|l| l.grmode as u8)
    }
}
