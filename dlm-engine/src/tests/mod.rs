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

    /// A lockspace following Linux 6.12.
    fn v612() -> T {
        T {
            e: Engine::with_model(KernelModel::V6_12),
        }
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

fn vb() -> LockFlags {
    LockFlags::VALBLK
}

mod callbacks;
mod grant;
mod lvb;
mod owners;
mod recover;
mod registry;
mod replay_props;
mod request;
mod store;
mod unlock;
