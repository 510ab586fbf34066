//! What the device gives back: `struct dlm_lock_result` (and the 32-bit
//! `dlm_lock_result32`), with its value block, and the in-place view the
//! client reads without copying.

use core::mem::offset_of;

use dlm_sys::{dlm_lksb, dlm_lock_result};

use super::{
    get_u32, get_u64, put_u32, put_u64, LVB_LEN, RESULT32_SIZE, RESULT_SIZE, RESULT_WITH_LVB_SIZE,
    VERSION,
};
use crate::error::Errno;

pub(super) const RES_LENGTH: usize = offset_of!(dlm_lock_result, length);
pub(super) const RES_ASTADDR: usize = offset_of!(dlm_lock_result, user_astaddr);
pub(super) const RES_ASTPARAM: usize = offset_of!(dlm_lock_result, user_astparam);
pub(super) const RES_USER_LKSB: usize = offset_of!(dlm_lock_result, user_lksb);
pub(super) const RES_LKSB: usize = offset_of!(dlm_lock_result, lksb);
pub(super) const RES_STATUS: usize = RES_LKSB + offset_of!(dlm_lksb, sb_status);
pub(super) const RES_LKID: usize = RES_LKSB + offset_of!(dlm_lksb, sb_lkid);
pub(super) const RES_SBFLAGS: usize = RES_LKSB + offset_of!(dlm_lksb, sb_flags);
pub(super) const RES_BAST_MODE: usize = offset_of!(dlm_lock_result, bast_mode);
pub(super) const RES_LVB_OFFSET: usize = offset_of!(dlm_lock_result, lvb_offset);

/// A decoded `struct dlm_lock_result` (and its value block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockResult {
    /// `user_astaddr`.
    pub astaddr: u64,
    /// `user_astparam`.
    pub astparam: u64,
    /// `user_lksb`.
    pub user_lksb: u64,
    /// `lksb.sb_status` (kernel sign: negative errno).
    pub status: i32,
    /// `lksb.sb_lkid`.
    pub lkid: u32,
    /// `lksb.sb_flags`.
    pub sb_flags: u8,
    /// Non-zero for a blocking AST.
    pub bast_mode: u8,
    /// The value block, when `lvb_offset` pointed at one.
    pub lvb: Option<[u8; LVB_LEN]>,
}

/// What the kernel keeps of a process's user arguments for a lock
/// (`struct dlm_user_args`), echoed back in every callback record.
///
/// The engine never looks inside these values, except that a zero
/// `castaddr` or `lksb` is refused (as the kernel refuses NULL), and that a
/// zero `bastaddr` means blocking ASTs are not queued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct UserArgs {
    /// Argument for the completion AST.
    pub castparam: u64,
    /// Completion AST address (or token).
    pub castaddr: u64,
    /// Argument for the blocking AST.
    pub bastparam: u64,
    /// Blocking AST address (or token); 0 means no blocking ASTs.
    pub bastaddr: u64,
    /// The caller's status block address (or token).
    pub lksb: u64,
    /// Transaction id. The kernel stores it and never uses or returns
    /// it; the engine does not keep it.
    pub xid: u64,
}

/// One callback, as a `read()` of the lockspace device returns it
/// (`struct dlm_lock_result`, less the version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AstRecord {
    /// The lock's id (`lksb.sb_lkid`).
    pub lkid: u32,
    /// `user_astaddr`: castaddr for a completion, bastaddr for a blocking AST.
    pub astaddr: u64,
    /// `user_astparam`.
    pub astparam: u64,
    /// `user_lksb`.
    pub user_lksb: u64,
    /// `lksb.sb_status`: the kernel's negative status. For a blocking AST
    /// this is the status of the last completion read, as in Linux 6.1.
    pub status: i32,
    /// `lksb.sb_flags` (of the last completion read, for a blocking AST).
    pub sb_flags: u8,
    /// Non-zero for a blocking AST: the mode that is blocked.
    pub bast_mode: u8,
    /// The value block, when the kernel would copy it (`lvb_offset != 0`
    /// given a large enough read buffer).
    pub lvb: Option<[u8; LVB_LEN]>,
}

impl AstRecord {
    /// Whether this is a blocking AST.
    pub fn is_bast(&self) -> bool {
        self.bast_mode != 0
    }
}

impl From<&AstRecord> for LockResult {
    fn from(r: &AstRecord) -> LockResult {
        LockResult {
            astaddr: r.astaddr,
            astparam: r.astparam,
            user_lksb: r.user_lksb,
            status: r.status,
            lkid: r.lkid,
            sb_flags: r.sb_flags,
            bast_mode: r.bast_mode,
            lvb: r.lvb,
        }
    }
}

/// Encode a result as `copy_result_to_user` does for a reader whose buffer
/// holds `count` bytes: the value block is appended only if the record
/// has one and `count` leaves room. Returns the bytes and their length
/// (the `read()` return value). `count` below the result size is `EINVAL`.
pub fn encode_result(
    r: &LockResult,
    count: usize,
) -> Result<([u8; RESULT_WITH_LVB_SIZE], usize), Errno> {
    if count < RESULT_SIZE {
        return Err(Errno::EINVAL);
    }
    let mut b = [0u8; RESULT_WITH_LVB_SIZE];
    for (i, v) in VERSION.iter().enumerate() {
        put_u32(&mut b, i * 4, *v);
    }
    put_u64(&mut b, RES_ASTADDR, r.astaddr);
    put_u64(&mut b, RES_ASTPARAM, r.astparam);
    put_u64(&mut b, RES_USER_LKSB, r.user_lksb);
    put_u32(&mut b, RES_STATUS, r.status as u32);
    put_u32(&mut b, RES_LKID, r.lkid);
    b[RES_SBFLAGS] = r.sb_flags;
    b[RES_BAST_MODE] = r.bast_mode;
    let mut len = RESULT_SIZE;
    if let Some(lvb) = r.lvb.filter(|_| count >= RESULT_WITH_LVB_SIZE) {
        b[RESULT_SIZE..RESULT_WITH_LVB_SIZE].copy_from_slice(&lvb);
        put_u32(&mut b, RES_LVB_OFFSET, RESULT_SIZE as u32);
        len = RESULT_WITH_LVB_SIZE;
    }
    put_u32(&mut b, RES_LENGTH, len as u32);
    Ok((b, len))
}

/// A compat result with its value block appended (84).
pub const RESULT32_WITH_LVB_SIZE: usize = RESULT32_SIZE + LVB_LEN;

// `struct dlm_lock_result32`: every pointer is a `__u32`, and the status
// block is `struct dlm_lksb32 { __u32 sb_status, sb_lkid; __u8 sb_flags;
// __u32 sb_lvbptr; }` (16 bytes).
pub(super) const R32_LENGTH: usize = 12;
pub(super) const R32_ASTADDR: usize = 16;
pub(super) const R32_ASTPARAM: usize = 20;
pub(super) const R32_USER_LKSB: usize = 24;
pub(super) const R32_STATUS: usize = 28;
pub(super) const R32_LKID: usize = 32;
pub(super) const R32_SBFLAGS: usize = 36;
pub(super) const R32_BAST_MODE: usize = 44;
pub(super) const R32_LVB_OFFSET: usize = 48;

/// Encode a result in the 32-bit compat layout (`compat_output` in the
/// kernel's `fs/dlm/user.c`), as the kernel does for a process that wrote
/// a compat request: a 52-byte record, pointers truncated to 32 bits, and
/// the value block at offset 52 if `count` leaves room (84 bytes in all).
/// `count` below 52 is `EINVAL`.
pub fn encode_result32(
    r: &LockResult,
    count: usize,
) -> Result<([u8; RESULT32_WITH_LVB_SIZE], usize), Errno> {
    if count < RESULT32_SIZE {
        return Err(Errno::EINVAL);
    }
    let mut b = [0u8; RESULT32_WITH_LVB_SIZE];
    for (i, v) in VERSION.iter().enumerate() {
        put_u32(&mut b, i * 4, *v);
    }
    put_u32(&mut b, R32_ASTADDR, r.astaddr as u32);
    put_u32(&mut b, R32_ASTPARAM, r.astparam as u32);
    put_u32(&mut b, R32_USER_LKSB, r.user_lksb as u32);
    put_u32(&mut b, R32_STATUS, r.status as u32);
    put_u32(&mut b, R32_LKID, r.lkid);
    b[R32_SBFLAGS] = r.sb_flags;
    b[R32_BAST_MODE] = r.bast_mode;
    let mut len = RESULT32_SIZE;
    if let Some(lvb) = r.lvb.filter(|_| count >= RESULT32_WITH_LVB_SIZE) {
        b[RESULT32_SIZE..RESULT32_WITH_LVB_SIZE].copy_from_slice(&lvb);
        put_u32(&mut b, R32_LVB_OFFSET, RESULT32_SIZE as u32);
        len = RESULT32_WITH_LVB_SIZE;
    }
    put_u32(&mut b, R32_LENGTH, len as u32);
    Ok((b, len))
}

/// A result record as read, checked, with its fields read in place: what
/// a client on the hot path looks at without copying the record out.
#[derive(Clone, Copy, Debug)]
pub struct ResultView<'a> {
    head: &'a [u8; RESULT_SIZE],
    lvb: Option<&'a [u8; LVB_LEN]>,
}

impl<'a> ResultView<'a> {
    /// Check a record read from the device (or the daemon): its length
    /// and `lvb_offset` must hold together, or it is `EPROTO`.
    #[inline(always)]
    pub fn parse(buf: &'a [u8]) -> Result<ResultView<'a>, Errno> {
        let Some((head, _)) = buf.split_first_chunk::<RESULT_SIZE>() else {
            return Err(Errno::EPROTO);
        };
        if get_u32(head, 0) != VERSION[0] {
            return Err(Errno::EPROTO);
        }
        let length = get_u32(head, RES_LENGTH) as usize;
        if length < RESULT_SIZE || length > buf.len() {
            return Err(Errno::EPROTO);
        }
        let lvb_offset = get_u32(head, RES_LVB_OFFSET) as usize;
        let lvb = if lvb_offset == 0 {
            None
        } else {
            if lvb_offset < RESULT_SIZE || lvb_offset + LVB_LEN > length {
                return Err(Errno::EPROTO);
            }
            buf[lvb_offset..].first_chunk::<LVB_LEN>()
        };
        Ok(ResultView { head, lvb })
    }

    /// `user_astaddr`.
    #[inline]
    pub fn astaddr(&self) -> u64 {
        get_u64(self.head, RES_ASTADDR)
    }

    /// `user_astparam`.
    #[inline]
    pub fn astparam(&self) -> u64 {
        get_u64(self.head, RES_ASTPARAM)
    }

    /// `user_lksb`.
    #[inline]
    pub fn user_lksb(&self) -> u64 {
        get_u64(self.head, RES_USER_LKSB)
    }

    /// `lksb.sb_status` (kernel sign: negative errno).
    #[inline]
    pub fn status(&self) -> i32 {
        get_u32(self.head, RES_STATUS) as i32
    }

    /// `lksb.sb_lkid`.
    #[inline]
    pub fn lkid(&self) -> u32 {
        get_u32(self.head, RES_LKID)
    }

    /// `lksb.sb_flags`.
    #[inline]
    pub fn sb_flags(&self) -> u8 {
        self.head[RES_SBFLAGS]
    }

    /// Non-zero for a blocking AST.
    #[inline]
    pub fn bast_mode(&self) -> u8 {
        self.head[RES_BAST_MODE]
    }

    /// The value block, when `lvb_offset` pointed at one.
    #[inline]
    pub fn lvb(&self) -> Option<&'a [u8; LVB_LEN]> {
        self.lvb
    }

    /// The record copied out.
    #[inline]
    pub fn to_result(&self) -> LockResult {
        LockResult {
            astaddr: self.astaddr(),
            astparam: self.astparam(),
            user_lksb: self.user_lksb(),
            status: self.status(),
            lkid: self.lkid(),
            sb_flags: self.sb_flags(),
            bast_mode: self.bast_mode(),
            lvb: self.lvb.copied(),
        }
    }
}

/// Decode a result read from the device (or the daemon): a checked
/// [`ResultView`], copied out.
#[inline]
pub fn decode_result(buf: &[u8]) -> Result<LockResult, Errno> {
    ResultView::parse(buf).map(|v| v.to_result())
}
