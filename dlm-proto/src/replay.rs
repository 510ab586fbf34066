//! Lock replay: the body of a [`Kind::Replay`](crate::wire::Kind::Replay)
//! frame, one lock that a client held before its daemon died, to be
//! granted again under the same id.
//!
//! When a `dlmd` dies, its clients are the only ones who know what was
//! granted, as the surviving nodes are when a kernel DLM master fails.
//! A client that reconnects says so in its `Hello`
//! ([`HELLO_REPLAY`](crate::wire::HELLO_REPLAY)), sends one `Replay` frame
//! per granted lock, then a [`Kind::ReplayDone`](crate::wire::Kind::ReplayDone).
//!
//! ```text
//! body := lkid:u32le mode:u8 flags:u32le lvb_state:u8 [lvb:32]
//!         castparam:u64le castaddr:u64le bastparam:u64le bastaddr:u64le
//!         lksb:u64le name[1..=64]
//! ```
//!
//! `lvb_state` is 0 (no value block), 1 (a valid block follows) or 2 (a
//! block follows, which its holder cannot vouch for: its last grant said
//! `VALNOTVALID`, or it holds the lock below PW and another holder may
//! have written it since). The name is the rest of the body.
//!
//! ```
//! use dlm_proto::replay::{Replay, ReplayLvb};
//! use dlm_proto::{LockFlags, LockMode, ResourceName};
//!
//! let r = Replay {
//!     lkid: 7,
//!     mode: LockMode::Pw,
//!     flags: LockFlags::VALBLK,
//!     lvb: ReplayLvb::Valid([1; 32]),
//!     castparam: 9, castaddr: 1, bastparam: 9, bastaddr: 2, lksb: 9,
//!     name: ResourceName::new("disk0")?,
//! };
//! assert_eq!(Replay::decode(&r.encode())?, r);
//! # Ok::<(), dlm_proto::Errno>(())
//! ```

use crate::error::Errno;
use crate::flags::LockFlags;
use crate::lvb::USER_LVB_LEN;
use crate::mode::LockMode;
use crate::name::ResourceName;

/// A replayed lock's value block, as its holder has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayLvb {
    /// The lock has no value block.
    None,
    /// A block its holder vouches for.
    Valid([u8; USER_LVB_LEN]),
    /// A block its holder cannot vouch for.
    NotValid([u8; USER_LVB_LEN]),
}

/// One granted lock to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replay {
    /// The lock's id, which it keeps.
    pub lkid: u32,
    /// The mode it is granted in.
    pub mode: LockMode,
    /// The flags of the request or conversion that was granted (only
    /// those [`REPLAY_FLAGS`] allows).
    pub flags: LockFlags,
    /// Its value block.
    pub lvb: ReplayLvb,
    /// Completion AST argument, echoed in callbacks.
    pub castparam: u64,
    /// Completion AST address; not 0.
    pub castaddr: u64,
    /// Blocking AST argument.
    pub bastparam: u64,
    /// Blocking AST address; 0 means no blocking ASTs.
    pub bastaddr: u64,
    /// Status block address; not 0.
    pub lksb: u64,
    /// The resource.
    pub name: ResourceName,
}

/// The flags a replayed lock may carry: what a granted lock keeps of
/// its request (the one-time operation flags `CONVERT`, `CANCEL`,
/// `FORCEUNLOCK`, `IVVALBLK`, `ORPHAN` and the removed `TIMEOUT` are
/// refused).
pub const REPLAY_FLAGS: LockFlags = LockFlags::NOQUEUE
    .union(LockFlags::VALBLK)
    .union(LockFlags::QUECVT)
    .union(LockFlags::CONVDEADLK)
    .union(LockFlags::PERSISTENT)
    .union(LockFlags::NODLCKWT)
    .union(LockFlags::NODLCKBLK)
    .union(LockFlags::EXPEDITE)
    .union(LockFlags::NOQUEUEBAST)
    .union(LockFlags::HEADQUE)
    .union(LockFlags::NOORDER)
    .union(LockFlags::ALTPR)
    .union(LockFlags::ALTCW);

/// The bytes before the name, with and without a value block.
const FIXED: usize = 4 + 1 + 4 + 1 + 5 * 8;

impl Replay {
    /// The frame body.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(FIXED + USER_LVB_LEN + self.name.len());
        b.extend_from_slice(&self.lkid.to_le_bytes());
        b.push(self.mode.as_raw());
        b.extend_from_slice(&self.flags.bits().to_le_bytes());
        match &self.lvb {
            ReplayLvb::None => b.push(0),
            ReplayLvb::Valid(v) => {
                b.push(1);
                b.extend_from_slice(v);
            }
            ReplayLvb::NotValid(v) => {
                b.push(2);
                b.extend_from_slice(v);
            }
        }
        for v in [
            self.castparam,
            self.castaddr,
            self.bastparam,
            self.bastaddr,
            self.lksb,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(self.name.as_bytes());
        b
    }

    /// Decode a frame body. `EINVAL` for a short body, an unknown mode or
    /// value-block state, a flag outside [`REPLAY_FLAGS`], lock id 0, a
    /// zero `castaddr` or `lksb`, or a name that is empty or over 64
    /// bytes.
    pub fn decode(body: &[u8]) -> Result<Replay, Errno> {
        let mut r = Reader { b: body };
        let lkid = u32::from_le_bytes(r.take()?);
        let [mode] = r.take::<1>()?;
        let mode = LockMode::try_from(i32::from(mode)).map_err(|_| Errno::EINVAL)?;
        let flags = LockFlags::from_bits(u32::from_le_bytes(r.take()?))
            .filter(|f| REPLAY_FLAGS.contains(*f))
            .ok_or(Errno::EINVAL)?;
        let lvb = match r.take::<1>()? {
            [0] => ReplayLvb::None,
            [1] => ReplayLvb::Valid(r.take()?),
            [2] => ReplayLvb::NotValid(r.take()?),
            _ => return Err(Errno::EINVAL),
        };
        let mut v = [0u64; 5];
        for x in &mut v {
            *x = u64::from_le_bytes(r.take()?);
        }
        let [castparam, castaddr, bastparam, bastaddr, lksb] = v;
        if lkid == 0 || castaddr == 0 || lksb == 0 || r.b.is_empty() {
            return Err(Errno::EINVAL);
        }
        let name = ResourceName::new(r.b)?;
        Ok(Replay {
            lkid,
            mode,
            flags,
            lvb,
            castparam,
            castaddr,
            bastparam,
            bastaddr,
            lksb,
            name,
        })
    }
}

struct Reader<'a> {
    b: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], Errno> {
        let (head, rest) = self.b.split_first_chunk::<N>().ok_or(Errno::EINVAL)?;
        self.b = rest;
        Ok(*head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Replay {
        Replay {
            lkid: 0x0102_0304,
            mode: LockMode::Ex,
            flags: LockFlags::VALBLK | LockFlags::PERSISTENT,
            lvb: ReplayLvb::NotValid([5; 32]),
            castparam: 11,
            castaddr: 1,
            bastparam: 12,
            bastaddr: 0,
            lksb: 13,
            name: ResourceName::new("r").unwrap(),
        }
    }

    #[test]
    fn round_trips_every_value_block_state() {
        for lvb in [
            ReplayLvb::None,
            ReplayLvb::Valid([1; 32]),
            ReplayLvb::NotValid([2; 32]),
        ] {
            let r = Replay { lvb, ..sample() };
            assert_eq!(Replay::decode(&r.encode()), Ok(r));
        }
        let long = Replay {
            name: ResourceName::new([b'n'; 64]).unwrap(),
            ..sample()
        };
        assert_eq!(Replay::decode(&long.encode()), Ok(long));
    }

    #[test]
    fn refuses_what_a_granted_lock_cannot_be() {
        let good = sample().encode();
        // Every truncation, down to an empty body (the name is required).
        for n in 0..FIXED + 32 + 1 {
            assert_eq!(Replay::decode(&good[..n]), Err(Errno::EINVAL), "{n} bytes");
        }
        let mut bad = good.clone();
        bad[4] = 6; // no such mode
        assert_eq!(Replay::decode(&bad), Err(Errno::EINVAL));
        let mut bad = good.clone();
        bad[9] = 3; // no such value-block state
        assert_eq!(Replay::decode(&bad), Err(Errno::EINVAL));
        for f in [
            LockFlags::CONVERT,
            LockFlags::CANCEL,
            LockFlags::FORCEUNLOCK,
            LockFlags::IVVALBLK,
            LockFlags::ORPHAN,
            LockFlags::TIMEOUT,
        ] {
            let r = Replay {
                flags: f,
                ..sample()
            };
            assert_eq!(Replay::decode(&r.encode()), Err(Errno::EINVAL), "{f:?}");
        }
        let mut unknown = good.clone();
        unknown[5..9].copy_from_slice(&0x8000_0000u32.to_le_bytes());
        assert_eq!(Replay::decode(&unknown), Err(Errno::EINVAL));
        for r in [
            Replay {
                lkid: 0,
                ..sample()
            },
            Replay {
                castaddr: 0,
                ..sample()
            },
            Replay {
                lksb: 0,
                ..sample()
            },
        ] {
            assert_eq!(Replay::decode(&r.encode()), Err(Errno::EINVAL));
        }
        let mut long = good;
        long.extend_from_slice(&[b'x'; 64]);
        assert_eq!(Replay::decode(&long), Err(Errno::EINVAL), "65-byte name");
    }
}
