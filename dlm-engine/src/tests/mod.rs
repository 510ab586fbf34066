//! One test per rule of the engine, each named after the rule. Every test
//! checks the exact sequence of callbacks each owner reads, not only the
//! final state.

use super::*;
use dlm_proto::flags::StatusFlags;
use dlm_proto::status::{ECANCEL, EUNLOCK};
use dlm_proto::LockMode::{self, *};

const EAGAIN: i32 = -libc::EAGAIN;
const EDEADLK: i32 = -libc::EDEADLK;
const UNLOCKED: i32 = -EUNLOCK;
const CANCELLED: i32 = -ECANCEL;
const DEMOTED: u8 = StatusFlags::DEMOTED.bits();
const VALNOTVALID: u8 = StatusFlags::VALNOTVALID.bits();
const ALTMODE: u8 = StatusFlags::ALTMODE.bits();

/// A callback as a test sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    /// Completion: lock id, status, sb_flags.
    C(u32, i32, u8),
    /// Blocking AST: lock id, mode.
    B(u32, LockMode),
}

struct T {
    e: Engine,
}

fn args(tag: u64) -> UserArgs {
    UserArgs {
        castparam: tag,
        castaddr: 0xC0,
        bastparam: tag,
        bastaddr: 0xB0,
        lksb: 0x1000 + tag,
        xid: 0,
    }
}

impl T {
    fn new() -> T {
        T { e: Engine::new() }
    }

    fn owner(&mut self) -> OwnerId {
        self.e.open_owner(42)
    }

    fn lock(&mut self, o: OwnerId, mode: LockMode, name: &str, flags: LockFlags) -> u32 {
        let p = LockParams::new(mode, name.as_bytes(), args(1)).flags(flags);
        self.e.lock(o, &p).expect("lock request accepted")
    }

    fn try_lock(&mut self, o: OwnerId, mode: u8, name: &[u8], flags: u32) -> Result<u32, Errno> {
        let mut p = LockParams::new(Nl, name, args(1));
        p.mode = mode;
        p.flags = flags;
        self.e.lock(o, &p)
    }

    fn conv(&mut self, o: OwnerId, id: u32, mode: LockMode, flags: LockFlags) {
        self.try_conv(o, id, mode, flags)
            .expect("conversion accepted");
    }

    fn try_conv(
        &mut self,
        o: OwnerId,
        id: u32,
        mode: LockMode,
        flags: LockFlags,
    ) -> Result<u32, Errno> {
        let p = LockParams::convert(id, mode, args(1)).flags(flags);
        self.e.lock(o, &p)
    }

    fn unlock(&mut self, o: OwnerId, id: u32, flags: LockFlags) -> Result<(), Errno> {
        self.e.unlock(o, &UnlockParams::new(id, flags, args(1)))
    }

    fn cancel(&mut self, o: OwnerId, id: u32) -> Result<(), Errno> {
        self.unlock(o, id, LockFlags::CANCEL)
    }

    fn drain(&mut self, o: OwnerId) -> Vec<Ev> {
        let mut v = Vec::new();
        while let Some(r) = self.e.read(o) {
            v.push(if r.is_bast() {
                Ev::B(
                    r.lkid,
                    LockMode::try_from(r.bast_mode).expect("valid bast mode"),
                )
            } else {
                Ev::C(r.lkid, r.status, r.sb_flags)
            });
        }
        v
    }

    fn read_lvb(&mut self, o: OwnerId) -> Option<[u8; 32]> {
        self.e.read(o).expect("a callback").lvb
    }

    fn granted(&mut self, o: OwnerId, mode: LockMode, name: &str, flags: LockFlags) -> u32 {
        let id = self.lock(o, mode, name, flags);
        assert_eq!(
            self.drain(o),
            vec![Ev::C(id, 0, 0)],
            "{mode} on {name} granted at once"
        );
        id
    }
}

fn none() -> LockFlags {
    LockFlags::empty()
}

fn lvb(byte: u8) -> [u8; 32] {
    [byte; 32]
}

// ---------------------------------------------------------------------
// Compatibility, queues and grant order
// ---------------------------------------------------------------------

#[test]
fn compatible_modes_are_granted_together() {
    let mut t = T::new();
    let (a, b, c) = (t.owner(), t.owner(), t.owner());
    t.granted(a, Pr, "r", none());
    t.granted(b, Pr, "r", none());
    t.granted(c, Cr, "r", none());
}

#[test]
fn incompatible_request_waits_and_blocking_ast_names_its_mode() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Ex, "r", none());
    let lb = t.lock(b, Pr, "r", none());
    assert_eq!(t.drain(b), vec![]);
    assert_eq!(t.drain(a), vec![Ev::B(la, Pr)]);
    t.unlock(a, la, none()).unwrap();
    assert_eq!(t.drain(a), vec![Ev::C(la, UNLOCKED, 0)]);
    assert_eq!(t.drain(b), vec![Ev::C(lb, 0, 0)]);
}

#[test]
fn new_request_waits_behind_the_wait_queue_even_if_compatible() {
    let mut t = T::new();
    let (a, b, c) = (t.owner(), t.owner(), t.owner());
    let la = t.granted(a, Pr, "r", none());
    let lb = t.lock(b, Ex, "r", none());
    let lc = t.lock(c, Pr, "r", none());
    assert_eq!(t.drain(c), vec![], "PR must queue behind the waiting EX");
    assert_eq!(t.drain(a), vec![Ev::B(la, Ex)]);
    t.unlock(a, la, none()).unwrap();
    assert_eq!(t.drain(b), vec![Ev::C(lb, 0, 0), Ev::B(lb, Pr)]);
    t.unlock(b, lb, none()).unwrap();
    assert_eq!(t.drain(c), vec![Ev::C(lc, 0, 0)]);
}

#[test]
fn convert_queue_is_served_before_wait_queue() {
    let mut t = T::new();
    let (a, b, c) = (t.owner(), t.owner(), t.owner());
    let la = t.granted(a, Ex, "r", none());
    let lb = t.granted(b, Nl, "r", none());
    let lc = t.lock(c, Pr, "r", none()); // waits
    t.conv(b, lb, Ex, none()); // converts, queued
    assert_eq!(t.drain(a), vec![Ev::B(la, Pr), Ev::B(la, Ex)]);
    t.unlock(a, la, none()).unwrap();
    assert_eq!(t.drain(b), vec![Ev::C(lb, 0, 0), Ev::B(lb, Pr)]);
    assert_eq!(t.drain(c), vec![]);
    t.conv(b, lb, Nl, none());
    assert_eq!(t.drain(b), vec![Ev::C(lb, 0, 0)]);
    assert_eq!(t.drain(c), vec![Ev::C(lc, 0, 0)]);
}

#[test]
fn in_place_conversion_is_granted_now_despite_waiters() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Pr, "r", none());
    let lb = t.lock(b, Ex, "r", none());
    assert_eq!(t.drain(a), vec![Ev::B(la, Ex)]);
    // PR -> CR is compatible with everything granted: granted in place.
    // The grant resets highbast, and EX is still blocked, so A is told
    // again.
    t.conv(a, la, Cr, none());
    assert_eq!(t.drain(a), vec![Ev::C(la, 0, 0), Ev::B(la, Ex)]);
    assert_eq!(t.e.lock_info(lb).unwrap().queue, Some(Queue::Waiting));
    assert_eq!(t.drain(b), vec![]);
}

#[test]
fn quecvt_conversion_queues_behind_existing_conversions() {
    let mut t = T::new();
    let (a, b, c) = (t.owner(), t.owner(), t.owner());
    let la = t.granted(a, Pr, "r", none());
    let lb = t.granted(b, Nl, "r", none());
    let lc = t.granted(c, Nl, "r", none());
    t.conv(b, lb, Ex, none()); // queued behind A's PR
    assert_eq!(t.drain(a), vec![Ev::B(la, Ex)]);
    // C's NL->CR would be compatible, but QUECVT puts it behind B.
    t.conv(c, lc, Cr, LockFlags::QUECVT);
    assert_eq!(t.drain(c), vec![]);
    t.unlock(a, la, none()).unwrap();
    assert_eq!(t.drain(b), vec![Ev::C(lb, 0, 0), Ev::B(lb, Cr)]);
    t.unlock(b, lb, none()).unwrap();
    assert_eq!(t.drain(c), vec![Ev::C(lc, 0, 0)]);
}

#[test]
fn quecvt_not_in_matrix_is_einval() {
    let mut t = T::new();
    let a = t.owner();
    let la = t.granted(a, Pr, "r", none());
    assert_eq!(t.try_conv(a, la, Cr, LockFlags::QUECVT), Err(Errno::EINVAL));
    assert_eq!(t.try_conv(a, la, Nl, LockFlags::QUECVT), Err(Errno::EINVAL));
    assert_eq!(t.try_conv(a, la, Pw, LockFlags::QUECVT), Ok(0));
    assert_eq!(t.drain(a), vec![Ev::C(la, 0, 0)]);
}

#[test]
fn grant_pending_locks_rescans_after_every_grant() {
    let mut t = T::new();
    let (a, b, c) = (t.owner(), t.owner(), t.owner());
    let la = t.granted(a, Ex, "r", none());
    let lb = t.lock(b, Cr, "r", none());
    let lc = t.lock(c, Cr, "r", none());
    assert_eq!(t.drain(a), vec![Ev::B(la, Cr)]);
    t.unlock(a, la, none()).unwrap();
    assert_eq!(t.drain(b), vec![Ev::C(lb, 0, 0)]);
    assert_eq!(t.drain(c), vec![Ev::C(lc, 0, 0)]);
}

#[test]
fn headque_puts_a_request_at_the_head_of_the_wait_queue() {
    let mut t = T::new();
    let (a, b, c) = (t.owner(), t.owner(), t.owner());
    let la = t.granted(a, Ex, "r", none());
    let lb = t.lock(b, Ex, "r", none());
    let lc = t.lock(c, Ex, "r", LockFlags::HEADQUE);
    assert_eq!(t.drain(a), vec![Ev::B(la, Ex)]);
    t.unlock(a, la, none()).unwrap();
    assert_eq!(t.drain(c), vec![Ev::C(lc, 0, 0), Ev::B(lc, Ex)]);
    assert_eq!(t.drain(b), vec![]);
    t.unlock(c, lc, none()).unwrap();
    assert_eq!(t.drain(b), vec![Ev::C(lb, 0, 0)]);
}

#[test]
fn headque_puts_a_conversion_at_the_head_of_the_convert_queue() {
    let mut t = T::new();
    let (a, b, c) = (t.owner(), t.owner(), t.owner());
    let la = t.granted(a, Ex, "r", none());
    let lb = t.granted(b, Nl, "r", none());
    let lc = t.granted(c, Nl, "r", none());
    t.conv(b, lb, Ex, none());
    t.conv(c, lc, Ex, LockFlags::HEADQUE);
    t.drain(a);
    t.unlock(a, la, none()).unwrap();
    assert_eq!(t.drain(c), vec![Ev::C(lc, 0, 0), Ev::B(lc, Ex)]);
    assert_eq!(t.drain(b), vec![]);
}

#[test]
fn noorder_request_skips_the_wait_queue_order() {
    let mut t = T::new();
    let (a, b, c) = (t.owner(), t.owner(), t.owner());
    let la = t.granted(a, Pr, "r", none());
    let lb = t.lock(b, Ex, "r", none());
    let lc = t.lock(c, Pr, "r", LockFlags::NOORDER);
    assert_eq!(t.drain(c), vec![Ev::C(lc, 0, 0)]);
    assert_eq!(t.drain(a), vec![Ev::B(la, Ex)]);
    assert_eq!(t.drain(b), vec![]);
    let _ = lb;
}

#[test]
fn expedite_grants_a_new_nl_request_at_once() {
    let mut t = T::new();
    let (a, b, c) = (t.owner(), t.owner(), t.owner());
    let la = t.granted(a, Ex, "r", none());
    t.lock(b, Ex, "r", none());
    assert_eq!(t.drain(a), vec![Ev::B(la, Ex)]);
    // A plain NL queues behind B; an EXPEDITE NL does not.
    let lc = t.lock(c, Nl, "r", LockFlags::EXPEDITE);
    assert_eq!(t.drain(c), vec![Ev::C(lc, 0, 0)]);
    let ld = t.lock(c, Nl, "r", none());
    assert_eq!(t.drain(c), vec![]);
    let _ = ld;
}

#[test]
fn expedite_is_only_for_new_nl_requests() {
    let mut t = T::new();
    let a = t.owner();
    let ex = LockFlags::EXPEDITE.bits();
    assert_eq!(t.try_lock(a, Pr as u8, b"r", ex), Err(Errno::EINVAL));
    assert_eq!(
        t.try_lock(a, Nl as u8, b"r", ex | LockFlags::NOQUEUE.bits()),
        Err(Errno::EINVAL)
    );
    let la = t.granted(a, Nl, "r", none());
    assert_eq!(
        t.try_conv(a, la, Nl, LockFlags::EXPEDITE),
        Err(Errno::EINVAL)
    );
}

// ---------------------------------------------------------------------
// NOQUEUE, conversion deadlock, ALT modes
// ---------------------------------------------------------------------

#[test]
fn noqueue_request_completes_with_eagain_and_ends() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Ex, "r", none());
    let lb = t.lock(b, Pr, "r", LockFlags::NOQUEUE);
    assert!(lb > la, "the write still returns a lock id");
    assert_eq!(t.drain(b), vec![Ev::C(lb, EAGAIN, 0)]);
    assert_eq!(t.drain(a), vec![], "no blocking AST without NOQUEUEBAST");
    // The lock ended: its id is gone and is reused.
    assert_eq!(t.unlock(b, lb, none()), Err(Errno::ENOENT));
    assert_eq!(t.lock(b, Nl, "other", none()), lb);
}

#[test]
fn noqueue_conversion_completes_with_eagain_and_keeps_the_lock() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Pr, "r", none());
    let lb = t.granted(b, Pr, "r", none());
    t.conv(b, lb, Ex, LockFlags::NOQUEUE);
    assert_eq!(t.drain(b), vec![Ev::C(lb, EAGAIN, 0)]);
    assert_eq!(t.drain(a), vec![]);
    let info = t.e.lock_info(lb).unwrap();
    assert_eq!((info.granted, info.queue), (Some(Pr), Some(Queue::Granted)));
    let _ = la;
}

#[test]
fn noqueuebast_sends_blocking_asts_to_granted_and_converting_locks() {
    let mut t = T::new();
    let (a, b, c) = (t.owner(), t.owner(), t.owner());
    let la = t.granted(a, Pr, "r", none());
    let lb = t.granted(b, Nl, "r", none());
    t.conv(b, lb, Ex, none());
    assert_eq!(t.drain(a), vec![Ev::B(la, Ex)]);
    let lc = t.lock(c, Pw, "r", LockFlags::NOQUEUE | LockFlags::NOQUEUEBAST);
    assert_eq!(t.drain(c), vec![Ev::C(lc, EAGAIN, 0)]);
    // A's highbast is EX already, so it gets nothing; B (converting,
    // granted NL) is compatible with PW, so nothing either.
    assert_eq!(t.drain(a), vec![]);
    assert_eq!(t.drain(b), vec![]);
    // A CR holder does get one for EX.
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Cr, "r", none());
    let lb = t.lock(b, Ex, "r", LockFlags::NOQUEUE | LockFlags::NOQUEUEBAST);
    assert_eq!(t.drain(b), vec![Ev::C(lb, EAGAIN, 0)]);
    assert_eq!(t.drain(a), vec![Ev::B(la, Ex)]);
}

#[test]
fn conversion_deadlock_completes_with_edeadlk_and_keeps_old_mode() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Pr, "r", none());
    let lb = t.granted(b, Pr, "r", none());
    t.conv(a, la, Ex, none());
    assert_eq!(t.drain(b), vec![Ev::B(lb, Ex)]);
    t.conv(b, lb, Ex, none());
    assert_eq!(t.drain(b), vec![Ev::C(lb, EDEADLK, 0)]);
    assert_eq!(t.drain(a), vec![]);
    let info = t.e.lock_info(lb).unwrap();
    assert_eq!((info.granted, info.queue), (Some(Pr), Some(Queue::Granted)));
    // B unlocks; A's conversion is granted.
    t.unlock(b, lb, none()).unwrap();
    assert_eq!(t.drain(b), vec![Ev::C(lb, UNLOCKED, 0)]);
    assert_eq!(t.drain(a), vec![Ev::C(la, 0, 0)]);
}

#[test]
fn convdeadlk_demotes_to_nl_and_reports_demoted() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Pr, "r", none());
    let lb = t.granted(b, Pr, "r", none());
    t.conv(a, la, Ex, none());
    assert_eq!(t.drain(b), vec![Ev::B(lb, Ex)]);
    t.conv(b, lb, Ex, LockFlags::CONVDEADLK);
    // B was demoted to NL, which let A's conversion through; B then
    // queues for EX behind A and A is told.
    assert_eq!(t.drain(a), vec![Ev::C(la, 0, 0), Ev::B(la, Ex)]);
    assert_eq!(t.drain(b), vec![]);
    assert_eq!(t.e.lock_info(lb).unwrap().granted, Some(Nl));
    t.unlock(a, la, none()).unwrap();
    assert_eq!(t.drain(b), vec![Ev::C(lb, 0, DEMOTED)]);
}

#[test]
fn convdeadlk_needs_convert_and_no_noqueue() {
    let mut t = T::new();
    let a = t.owner();
    let cd = LockFlags::CONVDEADLK.bits();
    assert_eq!(t.try_lock(a, Ex as u8, b"r", cd), Err(Errno::EINVAL));
    let la = t.granted(a, Nl, "r", none());
    assert_eq!(
        t.try_conv(a, la, Ex, LockFlags::CONVDEADLK | LockFlags::NOQUEUE),
        Err(Errno::EINVAL)
    );
}

#[test]
fn nodlckwt_queues_a_deadlocked_conversion_and_basts_itself() {
    let mut t = T::new();
    let (a, b, c) = (t.owner(), t.owner(), t.owner());
    let la = t.granted(a, Pr, "r", none());
    let lb = t.granted(b, Pr, "r", none());
    let lc = t.granted(c, Nl, "r", none());
    t.conv(a, la, Pw, none());
    assert_eq!(t.drain(b), vec![Ev::B(lb, Pw)]);
    t.conv(b, lb, Ex, LockFlags::NODLCKWT);
    assert_eq!(t.drain(b), vec![], "queued instead of EDEADLK");
    assert_eq!(t.e.lock_info(lb).unwrap().queue, Some(Queue::Converting));
    // The next grant pass sees the deadlock and tells B with its own
    // requested mode (B's highbast is PW < EX).
    t.unlock(c, lc, none()).unwrap();
    assert_eq!(t.drain(c), vec![Ev::C(lc, UNLOCKED, 0)]);
    assert_eq!(t.drain(b), vec![Ev::B(lb, Ex)]);
    assert_eq!(t.drain(a), vec![]);
}

#[test]
fn nodlckwt_self_bast_is_limited_by_highbast() {
    let mut t = T::new();
    let (a, b, c) = (t.owner(), t.owner(), t.owner());
    let la = t.granted(a, Pr, "r", none());
    let lb = t.granted(b, Pr, "r", none());
    let lc = t.granted(c, Nl, "r", none());
    t.conv(a, la, Ex, none());
    assert_eq!(t.drain(b), vec![Ev::B(lb, Ex)]);
    t.conv(b, lb, Ex, LockFlags::NODLCKWT);
    t.unlock(c, lc, none()).unwrap();
    assert_eq!(t.drain(b), vec![], "highbast is EX already");
}

#[test]
fn altpr_grants_in_pr_with_altmode() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    t.granted(a, Pr, "r", none());
    let lb = t.lock(b, Pw, "r", LockFlags::ALTPR);
    assert_eq!(t.drain(b), vec![Ev::C(lb, 0, ALTMODE)]);
    assert_eq!(t.e.lock_info(lb).unwrap().granted, Some(Pr));
}

#[test]
fn altcw_grants_in_cw_with_altmode() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    t.granted(a, Cw, "r", none());
    let lb = t.lock(b, Pr, "r", LockFlags::ALTCW);
    assert_eq!(t.drain(b), vec![Ev::C(lb, 0, ALTMODE)]);
    assert_eq!(t.e.lock_info(lb).unwrap().granted, Some(Cw));
}

#[test]
fn alt_mode_that_also_blocks_restores_the_requested_mode() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Ex, "r", none());
    let lb = t.lock(b, Pw, "r", LockFlags::ALTPR);
    assert_eq!(t.drain(b), vec![]);
    assert_eq!(t.drain(a), vec![Ev::B(la, Pw)]);
    assert_eq!(t.e.lock_info(lb).unwrap().requested, Some(Pw));
}

// ---------------------------------------------------------------------
// Cancel, unlock, deadlock cancel
// ---------------------------------------------------------------------

#[test]
fn cancel_of_a_waiting_request_completes_with_ecancel_and_ends() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    t.granted(a, Ex, "r", none());
    let lb = t.lock(b, Ex, "r", none());
    t.drain(a);
    t.cancel(b, lb).unwrap();
    assert_eq!(t.drain(b), vec![Ev::C(lb, CANCELLED, 0)]);
    assert_eq!(t.unlock(b, lb, none()), Err(Errno::ENOENT));
}

#[test]
fn cancel_of_a_conversion_reverts_to_the_granted_mode() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    t.granted(a, Pr, "r", none());
    let lb = t.granted(b, Cr, "r", none());
    t.conv(b, lb, Ex, none());
    t.drain(a);
    t.cancel(b, lb).unwrap();
    assert_eq!(t.drain(b), vec![Ev::C(lb, CANCELLED, 0)]);
    let info = t.e.lock_info(lb).unwrap();
    assert_eq!((info.granted, info.queue), (Some(Cr), Some(Queue::Granted)));
    // The lock is alive: it can be unlocked.
    t.unlock(b, lb, none()).unwrap();
    assert_eq!(t.drain(b), vec![Ev::C(lb, UNLOCKED, 0)]);
}

#[test]
fn cancel_of_a_granted_lock_succeeds_with_no_ast() {
    let mut t = T::new();
    let a = t.owner();
    let la = t.granted(a, Ex, "r", none());
    assert_eq!(t.cancel(a, la), Ok(()));
    assert_eq!(t.drain(a), vec![]);
    assert_eq!(t.cancel(a, 999), Err(Errno::ENOENT));
}

#[test]
fn cancel_with_forceunlock_is_einval() {
    let mut t = T::new();
    let a = t.owner();
    let la = t.granted(a, Ex, "r", none());
    assert_eq!(
        t.unlock(a, la, LockFlags::CANCEL | LockFlags::FORCEUNLOCK),
        Err(Errno::EINVAL)
    );
}

#[test]
fn unlock_of_a_waiting_request_is_allowed() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Ex, "r", none());
    let lb = t.lock(b, Ex, "r", none());
    assert_eq!(t.drain(a), vec![Ev::B(la, Ex)]);
    t.unlock(b, lb, none()).unwrap();
    assert_eq!(t.drain(b), vec![Ev::C(lb, UNLOCKED, 0)]);
}

#[test]
fn forceunlock_removes_a_converting_lock() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    t.granted(a, Pr, "r", none());
    let lb = t.granted(b, Pr, "r", none());
    t.conv(b, lb, Ex, none());
    t.drain(a);
    t.unlock(b, lb, LockFlags::FORCEUNLOCK).unwrap();
    assert_eq!(t.drain(b), vec![Ev::C(lb, UNLOCKED, 0)]);
    assert!(t.e.lock_info(lb).is_none());
}

#[test]
fn unlock_with_unknown_flags_is_einval() {
    let mut t = T::new();
    let a = t.owner();
    let la = t.granted(a, Ex, "r", none());
    assert_eq!(t.unlock(a, la, LockFlags::NOQUEUE), Err(Errno::EINVAL));
    assert_eq!(t.unlock(a, la, LockFlags::PERSISTENT), Err(Errno::EINVAL));
    assert_eq!(t.unlock(a, la, LockFlags::VALBLK), Ok(()));
}

#[test]
fn deadlock_cancel_completes_with_edeadlk() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    t.granted(a, Ex, "r", none());
    let lb = t.lock(b, Pr, "r", none());
    t.drain(a);
    t.e.deadlock_cancel(b, lb, 0).unwrap();
    assert_eq!(t.drain(b), vec![Ev::C(lb, EDEADLK, 0)]);
    assert_eq!(t.unlock(b, lb, none()), Err(Errno::ENOENT));
    assert_eq!(t.e.deadlock_cancel(b, 77, 0), Err(Errno::ENOENT));
}

#[test]
fn deadlock_cancel_of_a_granted_lock_is_silent_but_marks_the_next_cancel() {
    // Kernel quirk: the DEADLOCK_CANCEL mark stays on the lock when there
    // was nothing to cancel, so the next real cancel reports EDEADLK.
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    t.granted(a, Pr, "r", none());
    let lb = t.granted(b, Cr, "r", none());
    t.e.deadlock_cancel(b, lb, 0).unwrap();
    assert_eq!(t.drain(b), vec![]);
    t.conv(b, lb, Ex, none());
    t.drain(a);
    t.cancel(b, lb).unwrap();
    assert_eq!(t.drain(b), vec![Ev::C(lb, EDEADLK, 0)]);
}

// ---------------------------------------------------------------------
// Value blocks
// ---------------------------------------------------------------------

fn vb() -> LockFlags {
    LockFlags::VALBLK
}

#[test]
fn lvb_is_written_on_pw_or_ex_down_conversion_and_read_on_grant() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.lock(a, Ex, "r", vb());
    assert_eq!(
        t.read_lvb(a),
        Some(lvb(0)),
        "a new resource's LVB reads as zero"
    );
    let p = LockParams::convert(la, Nl, args(1)).flags(vb()).lvb(lvb(7));
    t.e.lock(a, &p).unwrap();
    assert_eq!(
        t.read_lvb(a),
        None,
        "EX->NL writes, so nothing is copied back"
    );
    let lb = t.lock(b, Pr, "r", vb());
    assert_eq!(
        t.e.read(b).map(|r| (r.lkid, r.lvb)),
        Some((lb, Some(lvb(7))))
    );
    assert_eq!(t.e.resource_lvb(b"r"), Some((Some(lvb(7)), false)));
}

#[test]
fn lvb_without_valblk_is_neither_read_nor_written() {
    let mut t = T::new();
    let a = t.owner();
    let la = t.lock(a, Ex, "r", vb());
    t.drain(a);
    // Down-convert without VALBLK: no write.
    let p = LockParams::convert(la, Nl, args(1)).lvb(lvb(9));
    t.e.lock(a, &p).unwrap();
    t.drain(a);
    assert_eq!(t.e.resource_lvb(b"r"), Some((None, false)));
}

#[test]
fn lvb_is_written_on_unlock_from_pw_with_valblk() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let keep = t.granted(b, Nl, "r", none());
    let la = t.lock(a, Pw, "r", vb());
    t.drain(a);
    let up = UnlockParams::new(la, vb(), args(1)).lvb(lvb(3));
    t.e.unlock(a, &up).unwrap();
    assert_eq!(t.drain(a), vec![Ev::C(la, UNLOCKED, 0)]);
    assert_eq!(t.e.resource_lvb(b"r"), Some((Some(lvb(3)), false)));
    let _ = keep;
}

#[test]
fn valblk_from_the_last_conversion_counts_on_unlock() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    t.granted(b, Nl, "r", none());
    let la = t.lock(a, Ex, "r", vb());
    t.drain(a);
    // Unlock without VALBLK: the lock's flags still carry it.
    let up = UnlockParams::new(la, none(), args(1)).lvb(lvb(5));
    t.e.unlock(a, &up).unwrap();
    t.drain(a);
    assert_eq!(t.e.resource_lvb(b"r"), Some((Some(lvb(5)), false)));
}

#[test]
fn ivvalblk_marks_the_lvb_invalid_and_grants_report_valnotvalid() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.lock(a, Ex, "r", vb());
    t.drain(a);
    let p = LockParams::convert(la, Nl, args(1)).flags(vb()).lvb(lvb(1));
    t.e.lock(a, &p).unwrap();
    t.conv(a, la, Ex, vb());
    assert_eq!(t.drain(a), vec![Ev::C(la, 0, 0), Ev::C(la, 0, 0)]);
    // EX -> NL with IVVALBLK invalidates; that completion is not flagged.
    t.conv(a, la, Nl, LockFlags::IVVALBLK);
    assert_eq!(t.drain(a), vec![Ev::C(la, 0, 0)]);
    assert_eq!(t.e.resource_lvb(b"r"), Some((Some(lvb(1)), true)));
    // A reader with a value block is told, and still gets the old bytes.
    let lb = t.lock(b, Pr, "r", vb());
    let r = t.e.read(b).unwrap();
    assert_eq!((r.lkid, r.sb_flags, r.lvb), (lb, VALNOTVALID, Some(lvb(1))));
    t.unlock(b, lb, none()).unwrap();
    t.drain(b);
    // A write clears the mark.
    t.conv(a, la, Ex, vb());
    assert_eq!(t.drain(a), vec![Ev::C(la, 0, VALNOTVALID)]);
    let p = LockParams::convert(la, Nl, args(1)).flags(vb()).lvb(lvb(9));
    t.e.lock(a, &p).unwrap();
    assert_eq!(t.drain(a), vec![Ev::C(la, 0, 0)]);
    assert_eq!(t.e.resource_lvb(b"r"), Some((Some(lvb(9)), false)));
}

#[test]
fn ivvalblk_invalidation_shows_only_where_a_value_block_exists() {
    // set_lvb_lock returns before the VALNOTVALID check when the lock has
    // no value block, or when the resource has none to read.
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.lock(a, Ex, "r", vb());
    t.drain(a);
    t.conv(a, la, Nl, LockFlags::IVVALBLK);
    t.drain(a);
    let lb = t.lock(b, Pr, "r", vb());
    assert_eq!(t.drain(b), vec![Ev::C(lb, 0, 0)]);
    let lb2 = t.lock(b, Cr, "r", none());
    assert_eq!(t.drain(b), vec![Ev::C(lb2, 0, 0)]);
    assert_eq!(t.e.resource_lvb(b"r"), Some((None, true)));
}

#[test]
fn lvb_is_freed_when_the_last_lock_on_the_resource_goes() {
    let mut t = T::new();
    let a = t.owner();
    let la = t.lock(a, Ex, "r", vb());
    t.drain(a);
    let up = UnlockParams::new(la, vb(), args(1)).lvb(lvb(8));
    t.e.unlock(a, &up).unwrap();
    t.drain(a);
    let lb = t.lock(a, Pr, "r", vb());
    assert_eq!(
        t.e.read(a).map(|r| (r.lkid, r.lvb)),
        Some((lb, Some(lvb(0))))
    );
    assert_eq!(t.e.resource_lvb(b"r"), Some((None, false)));
}

#[test]
fn lvb_survives_while_the_ended_lock_is_unread() {
    // The resource is held by the ended lock until its EUNLOCK is read.
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.lock(a, Ex, "r", vb());
    t.drain(a);
    let up = UnlockParams::new(la, vb(), args(1)).lvb(lvb(6));
    t.e.unlock(a, &up).unwrap();
    let lb = t.lock(b, Pr, "r", vb());
    assert_eq!(
        t.e.read(b).map(|r| (r.lkid, r.lvb)),
        Some((lb, Some(lvb(6))))
    );
}

#[test]
fn new_request_ignores_the_callers_lvb_bytes() {
    let mut t = T::new();
    let a = t.owner();
    let p = LockParams::new(Ex, b"r", args(1)).flags(vb()).lvb(lvb(4));
    let la = t.e.lock(a, &p).unwrap();
    assert_eq!(
        t.e.read(a).map(|r| (r.lkid, r.lvb)),
        Some((la, Some(lvb(0))))
    );
}

#[test]
fn lvb_copy_back_follows_the_previous_completion_mode() {
    // CR -> NL is a "nothing" cell (-1), which is truthy for the copy
    // decision: the caller's own bytes come back.
    let mut t = T::new();
    let a = t.owner();
    let la = t.lock(a, Cr, "r", vb());
    t.drain(a);
    let p = LockParams::convert(la, Nl, args(1)).flags(vb()).lvb(lvb(2));
    t.e.lock(a, &p).unwrap();
    assert_eq!(t.read_lvb(a), Some(lvb(2)));
}

// ---------------------------------------------------------------------
// Blocking ASTs
// ---------------------------------------------------------------------

#[test]
fn blocking_ast_is_sent_once_per_mode_level() {
    let mut t = T::new();
    let (a, b, c) = (t.owner(), t.owner(), t.owner());
    let la = t.granted(a, Ex, "r", none());
    t.lock(b, Pr, "r", none());
    t.lock(c, Pr, "r", none());
    assert_eq!(
        t.drain(a),
        vec![Ev::B(la, Pr)],
        "highbast suppresses a second PR"
    );
    t.lock(c, Ex, "r", none());
    assert_eq!(t.drain(a), vec![Ev::B(la, Ex)], "a higher mode is sent");
}

#[test]
fn pr_cw_pair_gets_a_blocking_ast_below_ex_highbast() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Pr, "r", none());
    t.lock(b, Cw, "r", none());
    assert_eq!(t.drain(a), vec![Ev::B(la, Cw)]);
    // Another CW still reaches PR (highbast CW < EX) but the read skips
    // a second identical BAST queued right behind the first... here it
    // was read already, so it is delivered again.
    t.lock(b, Cw, "r", none());
    assert_eq!(t.drain(a), vec![Ev::B(la, Cw)]);
}

#[test]
fn grant_pending_sends_cw_to_pr_holders_when_pr_and_cw_wait() {
    let mut t = T::new();
    let (a, b, c, d) = (t.owner(), t.owner(), t.owner(), t.owner());
    let la = t.granted(a, Ex, "r", none());
    let lc = t.lock(c, Cw, "r", none());
    let ld = t.lock(d, Pr, "r", none());
    t.drain(a);
    // A converts down to PR: D (PR) is granted; C (CW) is still blocked;
    // high is CW, and the PR holders are told CW.
    let _ = b;
    t.conv(a, la, Pr, none());
    assert_eq!(t.drain(a), vec![Ev::C(la, 0, 0), Ev::B(la, Cw)]);
    assert_eq!(t.drain(d), vec![], "D waits behind C in the wait queue");
    let _ = (lc, ld);
}

#[test]
fn no_blocking_ast_without_a_bast_address() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let mut noast = args(1);
    noast.bastaddr = 0;
    let la = t.e.lock(a, &LockParams::new(Ex, b"r", noast)).unwrap();
    assert_eq!(t.drain(a), vec![Ev::C(la, 0, 0)]);
    t.lock(b, Ex, "r", none());
    assert_eq!(t.drain(a), vec![]);
}

#[test]
fn blocking_ast_is_judged_against_the_last_completion_read() {
    // Linux 6.1 skips a BAST at read time only if it is compatible with
    // the mode of the last completion *read*. Here the BAST(PR) is read
    // before the completion of the down-conversion, so it is delivered.
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Ex, "r", none());
    let lb = t.lock(b, Pr, "r", none());
    t.conv(a, la, Pr, none());
    assert_eq!(t.drain(a), vec![Ev::B(la, Pr), Ev::C(la, 0, 0)]);
    assert_eq!(t.drain(b), vec![Ev::C(lb, 0, 0)]);
}

#[test]
fn a_blocking_ast_like_the_unread_one_before_it_is_not_queued() {
    // PR holders get CW blocking ASTs while their highbast is below EX;
    // the second CW lands right behind the unread first one and is
    // dropped when added.
    let mut t = T::new();
    let (a, b, c) = (t.owner(), t.owner(), t.owner());
    let la = t.granted(a, Pr, "r", none());
    t.lock(b, Cw, "r", none());
    t.lock(c, Cw, "r", none());
    assert_eq!(t.drain(a), vec![Ev::B(la, Cw)]);
}

#[test]
fn an_in_place_conversion_resets_highbast_and_basts_again() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Ex, "r", none());
    t.lock(b, Ex, "r", none());
    t.conv(a, la, Ex, none());
    assert_eq!(
        t.drain(a),
        vec![Ev::B(la, Ex), Ev::C(la, 0, 0), Ev::B(la, Ex)]
    );
}

// ---------------------------------------------------------------------
// Callback delivery (Linux 6.1 order and limits)
// ---------------------------------------------------------------------

#[test]
fn callbacks_of_the_head_lock_are_all_delivered_first() {
    let mut t = T::new();
    let a = t.owner();
    let b = t.owner();
    let l1 = t.lock(a, Ex, "x", none());
    let l2 = t.lock(a, Ex, "y", none());
    t.lock(b, Pr, "x", none());
    // l1 has cast then bast; l2's cast was queued between them, but the
    // kernel delivers per lock.
    assert_eq!(
        t.drain(a),
        vec![Ev::C(l1, 0, 0), Ev::B(l1, Pr), Ev::C(l2, 0, 0)]
    );
}

#[test]
fn at_most_six_callbacks_wait_per_lock() {
    let mut t = T::new();
    let a = t.owner();
    let la = t.lock(a, Nl, "r", none());
    for i in 0..7 {
        t.conv(a, la, if i % 2 == 0 { Ex } else { Nl }, none());
    }
    assert_eq!(t.drain(a).len(), CALLBACKS_SIZE);
}

#[test]
fn blocking_ast_record_carries_the_last_read_completion_status() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Pr, "r", none());
    t.conv(a, la, Ex, LockFlags::NOQUEUE);
    assert_eq!(t.drain(a), vec![Ev::C(la, 0, 0)]);
    let lb = t.lock(b, Pw, "r", LockFlags::NOQUEUE);
    assert_eq!(t.drain(b), vec![Ev::C(lb, EAGAIN, 0)]);
    let mut t2 = T::new();
    let (a, b) = (t2.owner(), t2.owner());
    let la = t2.granted(a, Pr, "r", none());
    let lx = t2.granted(b, Pr, "r", none());
    t2.conv(a, la, Ex, LockFlags::NOQUEUE);
    assert_eq!(t2.drain(a), vec![Ev::C(la, EAGAIN, 0)]);
    t2.lock(b, Ex, "r", none());
    let r = t2.e.read(a).unwrap();
    assert_eq!((r.bast_mode, r.status), (Ex as u8, EAGAIN));
    let _ = lx;
}

// ---------------------------------------------------------------------
// Lock ids
// ---------------------------------------------------------------------

#[test]
fn lock_ids_are_the_lowest_free_id_from_one() {
    let mut t = T::new();
    let a = t.owner();
    let l1 = t.granted(a, Nl, "a", none());
    let l2 = t.granted(a, Nl, "b", none());
    let l3 = t.granted(a, Nl, "c", none());
    assert_eq!((l1, l2, l3), (1, 2, 3));
    t.unlock(a, l2, none()).unwrap();
    // Not free until the final callback is read.
    assert_eq!(t.lock(a, Nl, "d", none()), 4);
    t.drain(a);
    assert_eq!(t.lock(a, Nl, "e", none()), 2);
}

// ---------------------------------------------------------------------
// Owners that go away, orphans, purge
// ---------------------------------------------------------------------

#[test]
fn closing_an_owner_releases_its_locks_and_grants_waiters() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Ex, "r", none());
    let lb = t.lock(b, Ex, "r", none());
    t.e.close_owner(a).unwrap();
    assert_eq!(t.drain(b), vec![Ev::C(lb, 0, 0)]);
    assert!(t.e.lock_info(la).is_none());
    assert_eq!(t.e.read(a), None);
    assert_eq!(t.e.close_owner(a), Err(Errno::EBADF));
}

#[test]
fn closing_an_owner_that_held_pw_marks_the_lvb_invalid() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    t.granted(b, Nl, "r", none());
    let la = t.lock(a, Pw, "r", vb());
    // Give the resource a value block: PW -> NL writes, NL -> PW reads.
    let p = LockParams::convert(la, Nl, args(1)).flags(vb()).lvb(lvb(1));
    t.e.lock(a, &p).unwrap();
    t.conv(a, la, Pw, vb());
    t.drain(a);
    t.e.close_owner(a).unwrap();
    assert_eq!(t.e.resource_lvb(b"r"), Some((Some(lvb(1)), true)));
    let lb2 = t.lock(b, Pr, "r", vb());
    assert_eq!(t.drain(b), vec![Ev::C(lb2, 0, VALNOTVALID)]);
    // Without a value block of its own a lock is not told.
    let lb3 = t.lock(b, Pr, "r", none());
    assert_eq!(t.drain(b), vec![Ev::C(lb3, 0, 0)]);
}

#[test]
fn closing_an_owner_below_pw_leaves_the_lvb_valid() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    t.granted(b, Nl, "r", none());
    t.lock(a, Pr, "r", vb());
    t.e.close_owner(a).unwrap();
    assert_eq!(t.e.resource_lvb(b"r").map(|x| x.1), Some(false));
}

#[test]
fn closing_an_owner_drops_its_pending_callbacks() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    t.lock(a, Ex, "r", none());
    let lb = t.lock(b, Ex, "r", none());
    t.e.close_owner(a).unwrap();
    assert_eq!(t.e.lock_count(), 1);
    assert_eq!(t.drain(b), vec![Ev::C(lb, 0, 0)]);
}

#[test]
fn persistent_lock_becomes_an_orphan_and_keeps_protecting() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Ex, "r", LockFlags::PERSISTENT);
    t.e.close_owner(a).unwrap();
    let info = t.e.lock_info(la).unwrap();
    assert_eq!((info.owner, info.granted), (None, Some(Ex)));
    let lb = t.lock(b, Pr, "r", LockFlags::NOQUEUE);
    assert_eq!(t.drain(b), vec![Ev::C(lb, EAGAIN, 0)]);
}

#[test]
fn orphaning_cancels_an_in_progress_conversion() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    t.granted(b, Pr, "r", none());
    let la = t.granted(a, Cr, "r", LockFlags::PERSISTENT);
    t.conv(a, la, Ex, LockFlags::PERSISTENT);
    t.drain(b);
    t.e.close_owner(a).unwrap();
    let info = t.e.lock_info(la).unwrap();
    assert_eq!((info.granted, info.queue), (Some(Cr), Some(Queue::Granted)));
}

#[test]
fn orphan_is_adopted_by_name_and_mode_without_a_callback() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Pw, "r", LockFlags::PERSISTENT);
    t.e.close_owner(a).unwrap();
    let adopt = LockFlags::ORPHAN.bits() | LockFlags::PERSISTENT.bits();
    assert_eq!(t.try_lock(b, Ex as u8, b"r", adopt), Err(Errno::EAGAIN));
    assert_eq!(t.try_lock(b, Pw as u8, b"nope", adopt), Err(Errno::ENOENT));
    assert_eq!(t.try_lock(b, Pw as u8, b"r", adopt), Ok(la));
    assert_eq!(t.drain(b), vec![]);
    let info = t.e.lock_info(la).unwrap();
    assert_eq!(info.owner, Some(b));
    t.unlock(b, la, none()).unwrap();
    assert_eq!(t.drain(b), vec![Ev::C(la, UNLOCKED, 0)]);
}

#[test]
fn purge_by_pid_removes_only_that_pids_orphans() {
    let mut t = T::new();
    let (a, c) = (t.e.open_owner(100), t.e.open_owner(300));
    let b = t.e.open_owner(200);
    let pa = LockParams::new(Ex, b"x", args(1))
        .flags(LockFlags::PERSISTENT)
        .pid(100);
    let pb = LockParams::new(Ex, b"y", args(1))
        .flags(LockFlags::PERSISTENT)
        .pid(200);
    let la = t.e.lock(a, &pa).unwrap();
    let lb = t.e.lock(b, &pb).unwrap();
    t.e.close_owner(a).unwrap();
    t.e.close_owner(b).unwrap();
    t.e.purge(c, 0, 100, 300).unwrap();
    assert!(t.e.lock_info(la).is_none());
    assert!(t.e.lock_info(lb).is_some());
    t.e.purge(c, 1, 0, 300).unwrap();
    assert!(t.e.lock_info(lb).is_none());
    assert_eq!(t.e.lock_count(), 0);
}

#[test]
fn purge_of_the_callers_own_pid_releases_its_locks_silently() {
    let mut t = T::new();
    let (a, b) = (t.e.open_owner(100), t.owner());
    let la = t.granted(a, Ex, "r", none());
    let lb = t.lock(b, Ex, "r", none());
    t.drain(a);
    t.e.purge(a, 0, 100, 100).unwrap();
    assert_eq!(t.drain(a), vec![]);
    assert!(t.e.lock_info(la).is_none());
    assert_eq!(t.drain(b), vec![Ev::C(lb, 0, 0)]);
}

#[test]
fn purge_for_another_node_is_enobufs() {
    let mut t = T::new();
    let a = t.owner();
    assert_eq!(t.e.purge(a, 2, 0, 1), Err(Errno::ENOBUFS));
}

// ---------------------------------------------------------------------
// Argument checks
// ---------------------------------------------------------------------

#[test]
fn argument_checks_return_the_kernels_errno() {
    let mut t = T::new();
    let a = t.owner();
    let b = |f: LockFlags| f.bits();
    assert_eq!(t.try_lock(a, 6, b"r", 0), Err(Errno::EINVAL), "mode > EX");
    assert_eq!(t.try_lock(a, 255, b"r", 0), Err(Errno::EINVAL), "mode 255");
    assert_eq!(
        t.try_lock(a, 0, &[1; 65], 0),
        Err(Errno::EINVAL),
        "name > 64"
    );
    assert!(t.try_lock(a, 0, &[1; 64], 0).is_ok(), "name of 64 is fine");
    assert_eq!(
        t.try_lock(a, 0, b"r", b(LockFlags::CANCEL)),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        t.try_lock(a, 3, b"r", b(LockFlags::QUECVT)),
        Err(Errno::EINVAL)
    );
    let mut p = LockParams::new(Ex, b"r", args(1));
    p.args.castaddr = 0;
    assert_eq!(t.e.lock(a, &p), Err(Errno::EINVAL), "no AST address");
    p.args.castaddr = 1;
    p.args.lksb = 0;
    assert_eq!(t.e.lock(a, &p), Err(Errno::EINVAL), "no status block");
    assert_eq!(t.try_conv(a, 99, Ex, none()), Err(Errno::ENOENT));
    assert_eq!(t.try_conv(a, 0, Ex, none()), Err(Errno::ENOENT));
    assert_eq!(t.unlock(a, 99, none()), Err(Errno::ENOENT));
    // A failed argument check leaves no lock id behind.
    t.drain(a);
    let ids: Vec<u32> = t.e.locks().iter().map(|l| l.lkid).collect();
    assert_eq!(ids, vec![1]);
}

#[test]
fn conversion_of_a_lock_not_granted_is_ebusy() {
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    t.granted(a, Ex, "r", none());
    let lb = t.lock(b, Ex, "r", none());
    assert_eq!(t.try_conv(b, lb, Pr, none()), Err(Errno::EBUSY));
}

#[test]
fn refused_conversion_still_replaces_the_callback_arguments() {
    // The kernel copies the new user arguments before validating.
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Ex, "r", none());
    let lb = t.lock(b, Ex, "r", none());
    let p = LockParams::convert(lb, Pr, args(77));
    assert_eq!(t.e.lock(b, &p), Err(Errno::EBUSY));
    t.unlock(a, la, none()).unwrap();
    let r = t.e.read(b).unwrap();
    assert_eq!((r.lkid, r.astparam, r.user_lksb), (lb, 77, 0x1000 + 77));
}

#[test]
fn operations_on_a_closed_owner_are_ebadf() {
    let mut t = T::new();
    let a = t.owner();
    t.e.close_owner(a).unwrap();
    assert_eq!(t.try_lock(a, 0, b"r", 0), Err(Errno::EBADF));
    assert_eq!(t.unlock(a, 1, none()), Err(Errno::EBADF));
    assert_eq!(t.e.purge(a, 0, 0, 0), Err(Errno::EBADF));
    assert!(!t.e.has_callbacks(a));
}

// ---------------------------------------------------------------------
// Lockspace lifetime
// ---------------------------------------------------------------------

#[test]
fn lockspace_create_count_newexcl_and_release() {
    use dlm_proto::{LockspaceFlags, LockspaceName};
    let mut reg = Registry::new();
    let name = LockspaceName::new("ls1").unwrap();
    let m = reg.create(&name, LockspaceFlags::empty()).unwrap();
    assert_eq!(reg.create(&name, LockspaceFlags::empty()), Ok(m));
    assert_eq!(
        reg.create(&name, LockspaceFlags::NEWEXCL),
        Err(Errno::EEXIST)
    );
    assert_eq!(reg.get(m).unwrap().create_count, 2);
    // A lock makes the last release without force fail.
    let eng = &mut reg.get_mut(m).unwrap().engine;
    let o = eng.open_owner(1);
    eng.lock(o, &LockParams::new(Ex, b"r", args(1))).unwrap();
    assert_eq!(reg.release(m, false), Ok(Released::StillCreated(1)));
    assert_eq!(reg.release(m, false), Err(Errno::EBUSY));
    assert_eq!(reg.release(m, true), Ok(Released::Removed));
    assert_eq!(reg.release(m, true), Err(Errno::ENOENT));
    assert!(reg.find(&name).is_none());
    let m2 = reg.create(&name, LockspaceFlags::NEWEXCL).unwrap();
    assert_eq!(reg.release(m2, false), Ok(Released::Removed));
}

#[test]
fn a_second_cancel_over_a_finished_cancel_is_einval() {
    // Found by the random differential run against Linux 6.1.
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    t.granted(b, Pr, "r", none());
    let la = t.granted(a, Nl, "r", none());
    t.conv(a, la, Ex, none());
    t.cancel(a, la).unwrap();
    assert_eq!(t.drain(a), vec![Ev::C(la, CANCELLED, 0)]);
    assert_eq!(t.cancel(a, la), Err(Errno::EINVAL));
    // A conversion replaces the flags, and cancel is quiet again.
    t.conv(a, la, Cr, none());
    assert_eq!(t.drain(a), vec![Ev::C(la, 0, 0)]);
    assert_eq!(t.cancel(a, la), Ok(()));
}

#[test]
fn a_refused_valblk_conversion_does_not_attach_its_value_block() {
    // Found by the random differential run: the buffer exists, but the
    // unlock does not write it, since lkb_lvbptr was never set.
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Ex, "r", none());
    assert_eq!(
        t.try_conv(a, la, Ex, LockFlags::VALBLK | LockFlags::QUECVT),
        Err(Errno::EINVAL)
    );
    let up = UnlockParams::new(la, vb(), args(1)).lvb(lvb(5));
    t.e.unlock(a, &up).unwrap();
    t.drain(a);
    let lb = t.lock(b, Ex, "r", vb());
    assert_eq!(
        t.e.read(b).map(|r| (r.lkid, r.lvb)),
        Some((lb, Some(lvb(0))))
    );
}

#[test]
fn an_orphan_unlocked_by_another_owner_cannot_be_unlocked_again() {
    // Linux 6.1 oopses on the second unlock; the engine says ENOENT.
    let mut t = T::new();
    let (a, b) = (t.owner(), t.owner());
    let la = t.granted(a, Ex, "r", LockFlags::PERSISTENT);
    t.e.close_owner(a).unwrap();
    t.unlock(b, la, none()).unwrap();
    assert_eq!(t.drain(b), vec![], "an orphan's completion goes nowhere");
    assert_eq!(t.unlock(b, la, LockFlags::FORCEUNLOCK), Err(Errno::ENOENT));
    let lb = t.granted(b, Ex, "r", none());
    assert_ne!(lb, la);
}

#[test]
fn locks_can_be_listed_from_a_lock_id_on() {
    let mut t = T::new();
    let a = t.owner();
    let ids: Vec<u32> = (0..5)
        .map(|i| t.granted(a, Pr, &format!("r{i}"), none()))
        .collect();
    t.unlock(a, ids[2], none()).unwrap();
    t.drain(a);
    let from = |first: u32| -> Vec<u32> { t.e.locks_from(first).map(|l| l.lkid).collect() };
    assert_eq!(from(0), vec![ids[0], ids[1], ids[3], ids[4]]);
    assert_eq!(from(ids[1] + 1), vec![ids[3], ids[4]], "past a freed id");
    assert_eq!(from(ids[4]), vec![ids[4]]);
    assert!(from(ids[4] + 1).is_empty());
    assert!(from(u32::MAX).is_empty());
    assert_eq!(t.e.count_locks_from(0), 4);
    assert_eq!(t.e.count_locks_from(ids[2]), 2);
    assert_eq!(t.e.count_locks_from(u32::MAX), 0);
    let all: Vec<LockInfo> = t.e.locks_from(0).collect();
    assert_eq!(all, t.e.locks(), "the same snapshots as locks()");
}

#[test]
fn lockspaces_can_be_listed_from_a_minor_on() {
    let mut r = Registry::new();
    let names = ["a", "b", "c"].map(|n| dlm_proto::LockspaceName::new(n).unwrap());
    let minors: Vec<u32> = names
        .iter()
        .map(|n| r.create(n, dlm_proto::LockspaceFlags::empty()).unwrap())
        .collect();
    r.release(minors[1], false).unwrap();
    let from = |first: u32| -> Vec<u32> { r.iter_from(first).map(|(m, _)| m).collect() };
    assert_eq!(from(0), vec![minors[0], minors[2]]);
    assert_eq!(from(minors[0] + 1), vec![minors[2]]);
    assert!(from(minors[2] + 1).is_empty());
}
