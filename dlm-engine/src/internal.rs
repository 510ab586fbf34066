//! The engine's records, as the kernel's `fs/dlm/dlm_internal.h` defines
//! them: the lock (`struct dlm_lkb` with the `struct dlm_user_args` that
//! `fs/dlm/user.c` hangs on it), the resource (`struct dlm_rsb`), the
//! owner (`struct dlm_user_proc`), a pending callback (`struct
//! dlm_callback`), and the status and internal flag values (`DLM_LKSTS_*`,
//! `DLM_IFL_*`) as far as they matter on one node.
//!
//! Records refer to each other by index (lock id, resource slot, owner
//! slot), never by reference; the `store` module owns the arenas.

use std::collections::VecDeque;

use crate::{AstRecord, UserArgs, CALLBACKS_SIZE, LVB_LEN};

/// A lock id, which is also the lock's index in `Engine::locks`.
pub(crate) type Lkid = u32;
/// Nil link; lock id 0 is never used.
pub(crate) const NIL: u32 = 0;

/// The user arguments a lock keeps: [`UserArgs`] less the unused `xid`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StoredArgs {
    pub(crate) castparam: u64,
    pub(crate) castaddr: u64,
    pub(crate) bastparam: u64,
    pub(crate) bastaddr: u64,
    pub(crate) lksb: u64,
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

// Kernel lkb_status values.
pub(crate) const STS_NONE: u8 = 0;
pub(crate) const STS_WAITING: u8 = 1;
pub(crate) const STS_GRANTED: u8 = 2;
pub(crate) const STS_CONVERT: u8 = 3;

// Internal lkb flags (DLM_IFL_*), as far as they matter locally.
pub(crate) const IFL_ORPHAN: u16 = 1 << 0;
pub(crate) const IFL_DEAD: u16 = 1 << 1;
pub(crate) const IFL_ENDOFLIFE: u16 = 1 << 2;
pub(crate) const IFL_DEADLOCK_CANCEL: u16 = 1 << 3;
pub(crate) const IFL_ON_ASTS: u16 = 1 << 4;
/// On an owner's lock list or on the orphan list (`lkb_ownqueue` in use).
pub(crate) const IFL_ON_OWNQ: u16 = 1 << 5;
/// A completion has been read (`lkb_last_cast.seq != 0`).
pub(crate) const IFL_HAS_LAST_CAST: u16 = 1 << 6;
/// `lkb_lvbptr` is set: the lock's value block buffer was attached by a
/// request or conversion that passed its checks. The buffer itself
/// (`ua->lksb.sb_lvbptr`) can exist without being attached: a conversion
/// with `VALBLK` allocates it before its checks, and may then fail them.
pub(crate) const IFL_LVB_ATTACHED: u16 = 1 << 8;
/// The `lkb_ownqueue` in use is the owner's `unlocking` list.
pub(crate) const IFL_UNLOCKING: u16 = 1 << 7;
/// Linux 6.12: the last callback queued was a blocking AST
/// (`lkb_last_cb_flags & DLM_CB_BAST`); its mode is `last_cb_mode`.
pub(crate) const IFL_LAST_CB_BAST: u16 = 1 << 9;

/// A lock's links on one of the lists it can be on.
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Links {
    pub(crate) prev: u32,
    pub(crate) next: u32,
}

/// The two ends of an intrusive list of locks (a `struct list_head`).
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct List {
    pub(crate) head: u32,
    pub(crate) tail: u32,
}

/// One pending callback (`struct dlm_callback`), 8 bytes.
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Cb {
    pub(crate) bast: bool,
    pub(crate) mode: i8,
    pub(crate) sbflags: u8,
    pub(crate) status: i32,
}

/// The per-lock callback array of Linux 6.1 (`lkb_callbacks`).
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct CbArray {
    pub(crate) len: u8,
    pub(crate) items: [Cb; CALLBACKS_SIZE],
}

/// A lock (`struct dlm_lkb` with its `dlm_user_args`).
#[derive(Debug)]
pub(crate) struct Lkb {
    pub(crate) rsb: u32,
    pub(crate) owner: u32,
    pub(crate) grmode: i8,
    pub(crate) rqmode: i8,
    pub(crate) highbast: i8,
    pub(crate) status: u8,
    pub(crate) sbflags: u8,
    pub(crate) iflags: u16,
    pub(crate) refs: u8,
    /// Linux 6.1: mode of the last completion read (`lkb_last_cast.mode`);
    /// 0 until one is read (see `IFL_HAS_LAST_CAST`), as the kernel's
    /// zeroed struct has it. Linux 6.12: mode of the last completion
    /// queued (`lkb_last_cast_cb_mode`), IV until one is.
    pub(crate) last_cast_mode: i8,
    /// Linux 6.12: mode of the last callback queued (`lkb_last_cb_mode`).
    pub(crate) last_cb_mode: i8,
    /// `ua->lksb.sb_flags` as last set by a read completion.
    pub(crate) lksb_flags: u8,
    pub(crate) exflags: u32,
    /// `ua->lksb.sb_status` as last set by a read completion.
    pub(crate) lksb_status: i32,
    pub(crate) pid: u32,
    /// Slot in `Engine::cbs` while callbacks are pending, else NIL.
    pub(crate) cb_slot: u32,
    pub(crate) q: Links,
    pub(crate) own: Links,
    pub(crate) ua: StoredArgs,
    pub(crate) lvb: Option<Box<[u8; LVB_LEN]>>,
}

/// A resource (`struct dlm_rsb`).
#[derive(Debug)]
pub(crate) struct Rsb {
    pub(crate) name: Name,
    pub(crate) grant: List,
    pub(crate) convert: List,
    pub(crate) wait: List,
    pub(crate) lvb: Option<Box<[u8; LVB_LEN]>>,
    /// Attached locks; 0 means tossed.
    pub(crate) refs: u32,
    /// `RSB_VALNOTVALID`: the value block cannot be trusted.
    pub(crate) valnotvalid: bool,
    /// Has an entry in `Engine::toss`.
    pub(crate) in_toss_queue: bool,
    /// `RSB_RECOVER_GRANT`: a replay joined locks waiting here, so
    /// `recover_grant` has blocking ASTs to send.
    pub(crate) recover_grant: bool,
}

/// How many bytes of a resource name are kept inline.
const INLINE_NAME: usize = 22;

/// A resource name, inline when short (no allocation), boxed otherwise.
#[derive(Debug)]
pub(crate) enum Name {
    Inline { len: u8, buf: [u8; INLINE_NAME] },
    Heap(Box<[u8]>),
}

impl Name {
    pub(crate) fn new(bytes: &[u8]) -> Name {
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

    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Name::Inline { len, buf } => &buf[..usize::from(*len)],
            Name::Heap(b) => b,
        }
    }
}

/// An owner (`struct dlm_user_proc`).
#[derive(Debug, Default)]
pub(crate) struct Proc {
    pub(crate) pid: u32,
    pub(crate) locks: List,
    /// Locks still on the owner's list after an unlock (`proc->unlocking`).
    pub(crate) unlocking: List,
    /// Linux 6.1: the locks with callbacks pending, in the order they got
    /// their first (`proc->asts` of `lkb_cb_list`s).
    pub(crate) asts: VecDeque<Lkid>,
    /// Linux 6.12: the callbacks themselves, each made when it was
    /// queued, in that order (`proc->asts` of `struct dlm_callback`s).
    pub(crate) records: VecDeque<AstRecord>,
}
