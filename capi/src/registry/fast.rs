//! The waiting calls' fast path to their handle.
//!
//! `dlm_ls_lock_wait` and `dlm_ls_unlock_wait` find their handle without
//! the table's lock or a reference count of the handle's own (together
//! four atomic operations a call): the first [`FAST`] handles opened have
//! a slot each, whose state counts the calls in progress on it and has
//! [`CLOSED`] set once the handle is closed. A call adds itself to the
//! state of the slot whose key is its handle, then checks that the key is
//! still its handle and the slot not closed. Each slot holds a reference
//! to its handle, dropped by whoever leaves the slot last once it is
//! closed: the closing thread if no call is in progress, else the last
//! call to end. A handle is thus kept for as long as a call on it lasts,
//! as its own reference count would keep it, and no longer.
#![allow(unsafe_code)]

use std::ops::Deref;
use std::os::raw::c_void;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::Arc;

use super::Handle;

/// How many handles have a fast slot; the rest are found in the table.
const FAST: usize = 16;

/// In a slot's state: the handle is closed.
const CLOSED: usize = 1 << (usize::BITS - 1);
/// In a slot's state: a thread is dropping the slot's reference.
const FREEING: usize = 1 << (usize::BITS - 2);

/// One fast slot, for a handle (`T` is another type only in the tests).
pub(crate) struct Slot<T = Handle> {
    /// The handle's key (its address), 0 for none.
    key: AtomicUsize,
    /// Calls in progress, [`CLOSED`] and [`FREEING`].
    state: AtomicUsize,
    /// The slot's reference to its handle (`Arc::into_raw`), NULL for none.
    arc: AtomicPtr<T>,
}

pub(super) static SLOTS: [Slot; FAST] = [const { Slot::empty() }; FAST];

impl<T> Slot<T> {
    const fn empty() -> Slot<T> {
        Slot {
            key: AtomicUsize::new(0),
            state: AtomicUsize::new(0),
            arc: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// Give the free slot to `h` (under the table's write lock): whether
    /// it was free (no handle, no call, not being freed).
    fn fill(&self, h: &Arc<T>) -> bool {
        let free = self.key.load(Ordering::SeqCst) == 0
            && self.state.load(Ordering::SeqCst) == 0
            && self.arc.load(Ordering::SeqCst).is_null();
        if free {
            let p = Arc::into_raw(h.clone()).cast_mut();
            self.arc.store(p, Ordering::SeqCst);
            self.key.store(p as usize, Ordering::SeqCst);
        }
        free
    }

    /// A call on the handle with key `k` counts itself in, if the slot
    /// is that handle's and open: then the handle at `k` stays until the
    /// call's [`leave`](Self::leave).
    #[inline(always)]
    fn enter(&self, k: usize) -> bool {
        if self.key.load(Ordering::SeqCst) != k {
            return false;
        }
        let was = self.state.fetch_add(1, Ordering::SeqCst);
        if was & CLOSED == 0 && self.key.load(Ordering::SeqCst) == k {
            return true;
        }
        self.leave();
        false
    }

    /// A call leaves the slot; the last one out of a closed slot frees it.
    #[inline(always)]
    fn leave(&self) {
        if self.state.fetch_sub(1, Ordering::SeqCst) == CLOSED | 1 {
            self.free();
        }
    }

    /// The handle was closed (under the table's write lock): no new call
    /// finds it here, and the last one out drops the slot's reference.
    pub(super) fn close(&self) {
        self.key.store(0, Ordering::SeqCst);
        if self.state.fetch_or(CLOSED, Ordering::SeqCst) == 0 {
            self.free();
        }
    }

    /// Drop the slot's reference, if the slot is closed with no call in
    /// it: only the one thread that moves the state from exactly
    /// [`CLOSED`] to `CLOSED | FREEING` does. Two threads can each have seen
    /// the last call go (a call that looked for the handle before it was
    /// closed counts itself in and out again after), and the later one
    /// can be late enough to find the slot given to the next handle,
    /// which only the state tells apart.
    #[cold]
    fn free(&self) {
        if self
            .state
            .compare_exchange(CLOSED, CLOSED | FREEING, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return;
        }
        let p = self.arc.swap(std::ptr::null_mut(), Ordering::SeqCst);
        if !p.is_null() {
            // SAFETY: p came from Arc::into_raw in fill(), and the swap
            // took it out of the slot: this is its one release.
            drop(unsafe { Arc::from_raw(p) });
        }
        // Free again; calls looking for another handle that counted
        // themselves in meanwhile take themselves out.
        self.state.fetch_and(!(CLOSED | FREEING), Ordering::SeqCst);
    }
}

/// A fast slot for the new handle `h` (under the table's write lock), if
/// one is free.
pub(super) fn fast_add(h: &Arc<Handle>) -> Option<usize> {
    SLOTS.iter().position(|s| s.fill(h))
}

/// A call counted in its handle's fast slot: the handle stays while it
/// lives; dropping it takes the call out again.
pub(crate) struct FastCall {
    slot: &'static Slot,
    h: NonNull<Handle>,
}

impl Deref for FastCall {
    type Target = Handle;
    #[inline(always)]
    fn deref(&self) -> &Handle {
        // SAFETY: the slot holds a reference to this handle until the
        // last call counted in it leaves, and this one has not.
        unsafe { self.h.as_ref() }
    }
}

impl Drop for FastCall {
    #[inline(always)]
    fn drop(&mut self) {
        self.slot.leave();
    }
}

impl FastCall {
    /// The handle as a reference of its own, for what keeps it past the
    /// call (the general path's timers), without looking it up again.
    pub(crate) fn arc(&self) -> Arc<Handle> {
        // SAFETY: h is the pointer fill() got from Arc::into_raw, whose
        // reference the slot keeps while this call is counted in: one
        // more strong count, owned by the Arc.
        unsafe {
            Arc::increment_strong_count(self.h.as_ptr());
            Arc::from_raw(self.h.as_ptr())
        }
    }
}

/// The handle `key` names, for the length of one call, if it is open and
/// has a fast slot.
#[inline(always)]
pub(crate) fn fast_call(key: *mut c_void) -> Option<FastCall> {
    let h = NonNull::new(key.cast::<Handle>())?;
    let k = h.as_ptr() as usize;
    let slot = SLOTS.iter().find(|s| s.enter(k))?;
    Some(FastCall { slot, h })
}

/// The handle of one call, found by [`call`].
pub(crate) enum Call {
    /// In its fast slot, which the call is counted in.
    Fast(FastCall),
    /// From the table.
    Shared(Arc<Handle>),
}

impl Deref for Call {
    type Target = Handle;
    #[inline(always)]
    fn deref(&self) -> &Handle {
        match self {
            Call::Fast(c) => c,
            Call::Shared(h) => h,
        }
    }
}

/// The handle `key` names, if it is open, for the length of one call: as
/// [`get`](super::get), but from its fast slot if it has one.
#[inline(always)]
pub(crate) fn call(key: *mut c_void) -> Option<Call> {
    if let Some(c) = fast_call(key) {
        return Some(Call::Fast(c));
    }
    super::get(key).map(Call::Shared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// A handle that says when it is dropped.
    struct Probe(Arc<AtomicBool>);
    impl Drop for Probe {
        fn drop(&mut self) {
            assert!(!self.0.swap(true, Ordering::SeqCst), "dropped twice");
        }
    }

    fn probe() -> (Arc<Probe>, Arc<AtomicBool>) {
        let gone = Arc::new(AtomicBool::new(false));
        (Arc::new(Probe(gone.clone())), gone)
    }

    #[test]
    fn a_closed_slot_keeps_its_handle_until_the_last_call_leaves() {
        let s = Slot::<Probe>::empty();
        let (h, gone) = probe();
        let k = Arc::as_ptr(&h) as usize;
        assert!(s.fill(&h));
        drop(h);
        assert!(!s.fill(&probe().0), "a slot in use is not free");
        assert!(s.enter(k) && s.enter(k));
        assert!(!s.enter(k + 8), "another key");
        s.close();
        assert!(!s.enter(k), "closed");
        s.leave();
        assert!(!gone.load(Ordering::SeqCst), "a call is still in");
        s.leave();
        assert!(gone.load(Ordering::SeqCst), "the last call out frees it");
        assert_eq!(s.state.load(Ordering::SeqCst), 0);
        assert!(s.fill(&probe().0), "free again");
    }

    #[test]
    fn a_slot_closed_with_no_call_frees_its_handle_at_once() {
        let s = Slot::<Probe>::empty();
        let (h, gone) = probe();
        assert!(s.fill(&h));
        drop(h);
        s.close();
        assert!(gone.load(Ordering::SeqCst));
        assert!(s.arc.load(Ordering::SeqCst).is_null());
        assert_eq!(s.state.load(Ordering::SeqCst), 0);
    }

    /// Callers entering and leaving while the slot is given to handle
    /// after handle and closed: a caller that got in always finds its
    /// handle alive, and every handle is dropped exactly once, by the
    /// time its slot is free again.
    #[test]
    fn calls_racing_closes_never_see_a_dropped_handle() {
        static S: Slot<Probe> = Slot::empty();
        static KEY: AtomicUsize = AtomicUsize::new(0);
        static STOP: AtomicBool = AtomicBool::new(false);
        static BAD: AtomicBool = AtomicBool::new(false);
        let callers: Vec<_> = (0..2)
            .map(|_| {
                std::thread::spawn(|| {
                    let mut inside = 0u64;
                    while !STOP.load(Ordering::SeqCst) {
                        let k = KEY.load(Ordering::SeqCst);
                        if k != 0 && S.enter(k) {
                            // SAFETY: entered: the slot keeps the handle.
                            let p = unsafe { &*(k as *const Probe) };
                            if p.0.load(Ordering::SeqCst) {
                                BAD.store(true, Ordering::SeqCst);
                            }
                            inside += 1;
                            S.leave();
                        }
                    }
                    inside
                })
            })
            .collect();
        let mut probes = Vec::new();
        for _ in 0..20_000 {
            let (h, gone) = probe();
            let since = std::time::Instant::now();
            while !S.fill(&h) {
                assert!(
                    since.elapsed().as_secs() < 20,
                    "the slot was never free again: state {:#x}",
                    S.state.load(Ordering::SeqCst)
                );
                std::thread::yield_now();
            }
            KEY.store(Arc::as_ptr(&h) as usize, Ordering::SeqCst);
            drop(h);
            std::thread::yield_now();
            S.close();
            probes.push(gone);
        }
        STOP.store(true, Ordering::SeqCst);
        let inside: u64 = callers.into_iter().map(|t| t.join().expect("caller")).sum();
        assert_eq!(S.state.load(Ordering::SeqCst), 0, "every caller has left");
        assert!(!BAD.load(Ordering::SeqCst), "a call used a dropped handle");
        assert!(
            probes.iter().all(|g| g.load(Ordering::SeqCst)),
            "a handle was never dropped"
        );
        assert!(inside > 0, "no call ever got in");
    }
}
