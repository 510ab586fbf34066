//! The status blocks of `lock_resource()` and `unlock_resource()`, which
//! take none from their caller.
//!
//! libdlm gives each call a status block on its own stack. A lock's
//! callbacks go to the status block of its latest operation, so one that
//! comes after the call has returned writes into a stack frame that is
//! gone: `unlock_resource()` of a lock whose asynchronous request's
//! completion is not delivered yet gets that completion first, returns
//! (-1 with errno 0), and the unlock's own completion follows into the
//! dead frame. AddressSanitizer found this in the `capi_args` fuzz target
//! (`fuzz/regressions/capi_args/unlock-resource-stale-completion`).
//!
//! Here each such status block is on the heap and lives as long as a
//! callback may still be written into it: with its lock while the lock
//! lives (a later `unlock_resource()` or converting `lock_resource()` of
//! the lock takes it again), and after an unlock until the unlock's own
//! completion (`EUNLOCK`) is in it. What the calls return is libdlm's.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::sync::Mutex;

use crate::ffi::{self, Addr};
use crate::{DlmLksb, EUNLOCK};

/// A status block of this module's, at a fixed address until dropped.
pub(crate) struct Block(Box<DlmLksb>);

// SAFETY: the block's one pointer, `sb_lvbptr`, is always NULL; the block
// is plain data that any thread may hold (the lock calls' threads write it
// through its address, as they write a caller's lksb).
unsafe impl Send for Block {}

impl Block {
    fn new(lkid: u32) -> Block {
        Block(Box::new(DlmLksb {
            sb_status: 0,
            sb_lkid: lkid,
            sb_flags: 0,
            sb_lvbptr: std::ptr::null_mut(),
        }))
    }

    /// The block's address, for a lock call.
    pub(crate) fn ptr(&mut self) -> *mut DlmLksb {
        &mut *self.0
    }

    pub(crate) fn addr(&mut self) -> Addr {
        Addr::of(self.ptr())
    }

    /// Its status, as the last callback (or the call) left it.
    pub(crate) fn status(&mut self) -> i32 {
        // SAFETY: the block is ours and alive; callbacks write it on the
        // thread that runs them, as they write a caller's lksb.
        unsafe { ffi::status(self.addr()) }
    }

    pub(crate) fn lkid(&mut self) -> u32 {
        // SAFETY: as in `status`.
        unsafe { ffi::lkid(self.addr()) }
    }
}

#[derive(Default)]
struct Blocks {
    /// The blocks of live locks, by lock id.
    held: HashMap<u32, Block>,
    /// Blocks of unlocks whose completion has not come yet.
    ending: Vec<Block>,
}

static BLOCKS: Mutex<Option<Blocks>> = Mutex::new(None);

fn with<T>(f: impl FnOnce(&mut Blocks) -> T) -> T {
    let mut g = BLOCKS.lock().unwrap_or_else(|p| p.into_inner());
    f(g.get_or_insert_with(Blocks::default))
}

/// The block for an operation on lock `lkid` (0: a new lock): the lock's
/// own if it has one (`true`), else a new one.
pub(crate) fn take(lkid: u32) -> (Block, bool) {
    if lkid != 0 {
        if let Some(b) = with(|b| b.held.remove(&lkid)) {
            return (b, true);
        }
    }
    (Block::new(lkid), false)
}

/// After a lock call on `b` (`kept`: it was the lock's own): keep it with
/// its lock while the lock lives (`lives`), else drop it, since no
/// callback of the lock can come into it. A block that no operation used
/// is dropped too (`lives` false and not `kept`).
pub(crate) fn after_lock(mut b: Block, kept: bool, lives: bool) {
    let lkid = b.lkid();
    with(|s| {
        if (lives || kept) && lkid != 0 {
            // An entry for the same id is an ended lock's (the DLM reuses
            // the ids of ended locks only): nothing writes into it now.
            s.held.insert(lkid, b);
        }
        sweep(s);
    });
}

/// After an unlock call of lock `lkid` on `b` (`kept`: the lock's own):
/// `sent`, the unlock was written, so its completion will come, and the
/// block stays until it is in.
pub(crate) fn after_unlock(mut b: Block, kept: bool, lkid: u32, sent: bool) {
    with(|s| {
        if !sent {
            if kept {
                // The lock lives on, and so may its block's callbacks.
                s.held.insert(lkid, b);
            }
        } else if b.status() != EUNLOCK {
            s.ending.push(b);
        }
        sweep(s);
    });
}

/// Drop the blocks of unlocks that have completed.
fn sweep(s: &mut Blocks) {
    s.ending.retain_mut(|b| b.status() != EUNLOCK);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_keeps_its_block_and_an_unlock_keeps_it_until_its_completion() {
        let (mut b, kept) = take(0);
        assert!(!kept);
        // SAFETY: the block is alive.
        unsafe { ffi::set_lkid(b.addr(), 0x70001) };
        let p = b.ptr();
        after_lock(b, false, true);
        let (mut again, kept) = take(0x70001);
        assert!(kept);
        assert_eq!(again.ptr(), p, "the lock's own block again");
        // SAFETY: as above.
        unsafe { ffi::set_status(again.addr(), 0) };
        after_unlock(again, true, 0x70001, true);
        let n = with(|s| s.ending.iter().filter(|b| std::ptr::eq(&*b.0, p)).count());
        assert_eq!(n, 1, "kept while its completion is to come");
        // The completion comes.
        // SAFETY: the block is alive (kept in `ending`).
        unsafe { ffi::set_status(Addr::of(p), EUNLOCK) };
        with(sweep);
        let n = with(|s| s.ending.iter().filter(|b| std::ptr::eq(&*b.0, p)).count());
        assert_eq!(n, 0, "dropped once it is in");
    }
}
