//! What a process writes to the device: `struct dlm_write_request` (and
//! `dlm_write_request32` from 32-bit processes), encoded and decoded with
//! the kernel's own checks.

use core::mem::offset_of;

use dlm_sys::{dlm_lock_params, dlm_lspace_params, dlm_write_request};

use super::result::UserArgs;
use super::{
    get_u32, get_u64, put_u32, put_u64, LVB_LEN, MAX_WRITE_SIZE, VERSION, WRITE_REQUEST32_SIZE,
    WRITE_REQUEST_SIZE,
};
use crate::error::Errno;
use crate::name::RESNAME_MAXLEN;

pub(super) const REQ_CMD: usize = offset_of!(dlm_write_request, cmd);
pub(super) const REQ_IS64: usize = offset_of!(dlm_write_request, is64bit);
pub(super) const REQ_I: usize = offset_of!(dlm_write_request, i);
pub(super) const LP_MODE: usize = REQ_I + offset_of!(dlm_lock_params, mode);
pub(super) const LP_NAMELEN: usize = REQ_I + offset_of!(dlm_lock_params, namelen);
pub(super) const LP_FLAGS: usize = REQ_I + offset_of!(dlm_lock_params, flags);
pub(super) const LP_LKID: usize = REQ_I + offset_of!(dlm_lock_params, lkid);
pub(super) const LP_PARENT: usize = REQ_I + offset_of!(dlm_lock_params, parent);
pub(super) const LP_XID: usize = REQ_I + offset_of!(dlm_lock_params, xid);
pub(super) const LP_TIMEOUT: usize = REQ_I + offset_of!(dlm_lock_params, timeout);
pub(super) const LP_CASTPARAM: usize = REQ_I + offset_of!(dlm_lock_params, castparam);
pub(super) const LP_CASTADDR: usize = REQ_I + offset_of!(dlm_lock_params, castaddr);
pub(super) const LP_BASTPARAM: usize = REQ_I + offset_of!(dlm_lock_params, bastparam);
pub(super) const LP_BASTADDR: usize = REQ_I + offset_of!(dlm_lock_params, bastaddr);
pub(super) const LP_LKSB: usize = REQ_I + offset_of!(dlm_lock_params, lksb);
pub(super) const LP_LVB: usize = REQ_I + offset_of!(dlm_lock_params, lvb);
pub(super) const LP_NAME: usize = REQ_I + offset_of!(dlm_lock_params, name);
pub(super) const LS_FLAGS: usize = REQ_I + offset_of!(dlm_lspace_params, flags);
pub(super) const LS_MINOR: usize = REQ_I + offset_of!(dlm_lspace_params, minor);
pub(super) const LS_NAME: usize = REQ_I + offset_of!(dlm_lspace_params, name);
pub(super) const PURGE_NODEID: usize = REQ_I;
pub(super) const PURGE_PID: usize = REQ_I + 4;

// The 32-bit compat layout (kernel `struct dlm_lock_params32` inside
// `struct dlm_write_request32`): pointers are 4 bytes, u64s 8-aligned.
pub(super) const C32_MODE: usize = 16;
pub(super) const C32_NAMELEN: usize = 17;
pub(super) const C32_FLAGS: usize = 20;
pub(super) const C32_LKID: usize = 24;
pub(super) const C32_PARENT: usize = 28;
pub(super) const C32_XID: usize = 32;
pub(super) const C32_TIMEOUT: usize = 40;
pub(super) const C32_CASTPARAM: usize = 48;
pub(super) const C32_CASTADDR: usize = 52;
pub(super) const C32_BASTPARAM: usize = 56;
pub(super) const C32_BASTADDR: usize = 60;
pub(super) const C32_LKSB: usize = 64;
pub(super) const C32_LVB: usize = 68;
pub(super) const C32_NAME: usize = 100;

/// `DLM_USER_*` commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Command {
    /// `DLM_USER_LOCK`: request, convert or adopt.
    Lock = dlm_sys::DLM_USER_LOCK as u8,
    /// `DLM_USER_UNLOCK`: unlock or cancel.
    Unlock = dlm_sys::DLM_USER_UNLOCK as u8,
    /// `DLM_USER_QUERY`: never implemented by the kernel (`EINVAL`).
    Query = dlm_sys::DLM_USER_QUERY as u8,
    /// `DLM_USER_CREATE_LOCKSPACE`.
    CreateLockspace = dlm_sys::DLM_USER_CREATE_LOCKSPACE as u8,
    /// `DLM_USER_REMOVE_LOCKSPACE`.
    RemoveLockspace = dlm_sys::DLM_USER_REMOVE_LOCKSPACE as u8,
    /// `DLM_USER_PURGE`.
    Purge = dlm_sys::DLM_USER_PURGE as u8,
    /// `DLM_USER_DEADLOCK`: deadlock cancel.
    Deadlock = dlm_sys::DLM_USER_DEADLOCK as u8,
}

/// The lock parameters of a `LOCK`, `UNLOCK` or `DEADLOCK` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockRequest {
    /// Requested mode (raw).
    pub mode: u8,
    /// `DLM_LKF_*` flags (raw).
    pub flags: u32,
    /// Lock id (conversions, unlocks).
    pub lkid: u32,
    /// Parent lock id (unused by the kernel).
    pub parent: u32,
    /// Transaction id.
    pub xid: u64,
    /// Deprecated timeout (ignored since Linux 6.2).
    pub timeout: u64,
    /// Completion AST parameter.
    pub castparam: u64,
    /// Completion AST address.
    pub castaddr: u64,
    /// Blocking AST parameter.
    pub bastparam: u64,
    /// Blocking AST address.
    pub bastaddr: u64,
    /// The caller's status block address.
    pub lksb: u64,
    /// Value block (used by conversions and unlocks).
    pub lvb: [u8; LVB_LEN],
    pub(super) name: [u8; RESNAME_MAXLEN],
    pub(super) namelen: u8,
}

impl Default for LockRequest {
    #[inline]
    fn default() -> Self {
        LockRequest {
            mode: 0,
            flags: 0,
            lkid: 0,
            parent: 0,
            xid: 0,
            timeout: 0,
            castparam: 0,
            castaddr: 0,
            bastparam: 0,
            bastaddr: 0,
            lksb: 0,
            lvb: [0; LVB_LEN],
            name: [0; RESNAME_MAXLEN],
            namelen: 0,
        }
    }
}

impl LockRequest {
    /// The resource name carried by the request.
    #[inline]
    pub fn name(&self) -> &[u8] {
        // A `namelen` over 64 (possible in a decoded request) never reads
        // past the 64 bytes held: check `namelen()` to refuse such names.
        &self.name[..usize::from(self.namelen).min(RESNAME_MAXLEN)]
    }

    /// The `namelen` field as the request carried it. It may exceed 64
    /// (the kernel then refuses a new request with `EINVAL`), in which
    /// case [`name`](Self::name) must not be called: check this first.
    pub fn namelen(&self) -> usize {
        usize::from(self.namelen)
    }

    /// Set the resource name; more than 64 bytes is `EINVAL`.
    #[inline]
    pub fn set_name(&mut self, name: &[u8]) -> Result<(), Errno> {
        if name.len() > RESNAME_MAXLEN {
            return Err(Errno::EINVAL);
        }
        self.name[..name.len()].copy_from_slice(name);
        self.namelen = name.len() as u8;
        Ok(())
    }

    /// The engine's view of the user arguments.
    pub fn user_args(&self) -> UserArgs {
        UserArgs {
            castparam: self.castparam,
            castaddr: self.castaddr,
            bastparam: self.bastparam,
            bastaddr: self.bastaddr,
            lksb: self.lksb,
            xid: self.xid,
        }
    }
}

/// A decoded `struct dlm_write_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `DLM_USER_LOCK`.
    Lock(LockRequest),
    /// `DLM_USER_UNLOCK` (with `CANCEL` in the flags, a cancel).
    Unlock(LockRequest),
    /// `DLM_USER_DEADLOCK`.
    Deadlock(LockRequest),
    /// `DLM_USER_PURGE`.
    Purge {
        /// Node whose locks to purge (0 = this node).
        nodeid: u32,
        /// Owner pid (0 = all orphans).
        pid: u32,
    },
    /// `DLM_USER_CREATE_LOCKSPACE`.
    CreateLockspace {
        /// `DLM_LSFL_*` flags.
        flags: u32,
        /// Lockspace name, as given (not yet validated).
        name: Vec<u8>,
    },
    /// `DLM_USER_REMOVE_LOCKSPACE`.
    RemoveLockspace {
        /// `DLM_USER_LSFLG_*` flags.
        flags: u32,
        /// The lockspace's minor.
        minor: u32,
    },
}

/// The result of decoding a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The request.
    pub request: Request,
    /// Whether it came in the 32-bit compat layout (results to such a
    /// writer use the 52-byte compat result).
    pub compat: bool,
}

/// A write request ready to send: at most [`MAX_WRITE_SIZE`] bytes.
#[derive(Clone)]
pub struct WriteBuf {
    buf: [u8; MAX_WRITE_SIZE],
    len: usize,
}

impl WriteBuf {
    /// The bytes to write.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl core::fmt::Debug for WriteBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "WriteBuf({} bytes)", self.len)
    }
}

#[inline]
fn header(cmd: Command, version: [u32; 3]) -> WriteBuf {
    let mut w = WriteBuf {
        buf: [0; MAX_WRITE_SIZE],
        len: WRITE_REQUEST_SIZE,
    };
    for (i, v) in version.iter().enumerate() {
        put_u32(&mut w.buf, i * 4, *v);
    }
    w.buf[REQ_CMD] = cmd as u8;
    w.buf[REQ_IS64] = 1;
    w
}

/// A `LOCK`, `UNLOCK` or `DEADLOCK` request (64-bit layout) written field
/// by field straight into the bytes to send: what a client builds for
/// every operation. Fields not set stay zero.
#[derive(Clone, Debug)]
pub struct LockWrite {
    w: WriteBuf,
}

impl LockWrite {
    /// An empty request for `cmd`.
    #[inline]
    pub fn new(cmd: Command, version: [u32; 3]) -> LockWrite {
        LockWrite {
            w: header(cmd, version),
        }
    }

    /// The requested mode (raw).
    #[inline]
    pub fn set_mode(&mut self, mode: u8) {
        self.w.buf[LP_MODE] = mode;
    }

    /// The `DLM_LKF_*` flags (raw).
    #[inline]
    pub fn set_flags(&mut self, flags: u32) {
        put_u32(&mut self.w.buf, LP_FLAGS, flags);
    }

    /// The lock id (conversions, unlocks).
    #[inline]
    pub fn set_lkid(&mut self, lkid: u32) {
        put_u32(&mut self.w.buf, LP_LKID, lkid);
    }

    /// The values the kernel echoes in callback records: the completion
    /// and blocking AST parameters and addresses, and the status block
    /// address.
    #[inline]
    pub fn set_user_args(
        &mut self,
        castparam: u64,
        castaddr: u64,
        bastparam: u64,
        bastaddr: u64,
        lksb: u64,
    ) {
        let b = &mut self.w.buf;
        put_u64(b, LP_CASTPARAM, castparam);
        put_u64(b, LP_CASTADDR, castaddr);
        put_u64(b, LP_BASTPARAM, bastparam);
        put_u64(b, LP_BASTADDR, bastaddr);
        put_u64(b, LP_LKSB, lksb);
    }

    /// Of [`set_user_args`](Self::set_user_args), only the completion
    /// parameter and the status block address (an unlock's: it sends no
    /// AST addresses, which stay as they were, zero in a new request).
    #[inline]
    pub fn set_castparam_lksb(&mut self, castparam: u64, lksb: u64) {
        let b = &mut self.w.buf;
        put_u64(b, LP_CASTPARAM, castparam);
        put_u64(b, LP_LKSB, lksb);
    }

    /// The value block (written by conversions and unlocks from PW/EX).
    #[inline]
    pub fn set_lvb(&mut self, lvb: &[u8; LVB_LEN]) {
        self.w.buf[LP_LVB..LP_LVB + LVB_LEN].copy_from_slice(lvb);
    }

    /// The resource name, sent after the fixed part (new requests and
    /// adoptions only); more than 64 bytes is `EINVAL`.
    #[inline]
    pub fn set_name(&mut self, name: &[u8]) -> Result<(), Errno> {
        if name.len() > RESNAME_MAXLEN {
            return Err(Errno::EINVAL);
        }
        self.w.buf[LP_NAMELEN] = name.len() as u8;
        copy_short(&mut self.w.buf[LP_NAME..LP_NAME + name.len()], name);
        self.w.len = WRITE_REQUEST_SIZE + name.len();
        Ok(())
    }

    /// [`set_name`](Self::set_name) from a name zero-padded to 64 bytes,
    /// `len` of which are sent: one fixed-size copy.
    #[inline]
    pub fn set_name_padded(&mut self, name: &[u8; RESNAME_MAXLEN], len: usize) {
        const { assert!(LP_NAME + RESNAME_MAXLEN <= MAX_WRITE_SIZE) };
        let len = len.min(RESNAME_MAXLEN);
        self.w.buf[LP_NAMELEN] = len as u8;
        self.w.buf[LP_NAME..LP_NAME + RESNAME_MAXLEN].copy_from_slice(name);
        self.w.len = WRITE_REQUEST_SIZE + len;
    }

    /// The bytes to write.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.w.as_bytes()
    }
}

/// `dst.copy_from_slice(src)`, inline for up to 16 bytes (two copies that
/// may overlap, or three single bytes): most resource names are short,
/// and a call to `memcpy` costs more than such a copy.
#[inline(always)]
fn copy_short(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    if dst.len() != n {
        return dst.copy_from_slice(src);
    }
    match n {
        0 => {}
        1..=3 => {
            dst[0] = src[0];
            dst[n / 2] = src[n / 2];
            dst[n - 1] = src[n - 1];
        }
        4..=7 => {
            dst[..4].copy_from_slice(&src[..4]);
            dst[n - 4..].copy_from_slice(&src[n - 4..]);
        }
        8..=16 => {
            dst[..8].copy_from_slice(&src[..8]);
            dst[n - 8..].copy_from_slice(&src[n - 8..]);
        }
        _ => dst.copy_from_slice(src),
    }
}

/// Encode a `LOCK`, `UNLOCK` or `DEADLOCK` request (64-bit layout).
///
/// As libdlm does, the name is sent only for new requests and adoptions;
/// the write is `120 + namelen` bytes.
#[inline]
pub fn encode_lock(cmd: Command, req: &LockRequest, version: [u32; 3]) -> WriteBuf {
    let mut w = LockWrite::new(cmd, version);
    w.set_mode(req.mode);
    w.set_flags(req.flags);
    w.set_lkid(req.lkid);
    put_u32(&mut w.w.buf, LP_PARENT, req.parent);
    put_u64(&mut w.w.buf, LP_XID, req.xid);
    put_u64(&mut w.w.buf, LP_TIMEOUT, req.timeout);
    w.set_user_args(
        req.castparam,
        req.castaddr,
        req.bastparam,
        req.bastaddr,
        req.lksb,
    );
    w.set_lvb(&req.lvb);
    let sends_name = cmd == Command::Lock && req.flags & dlm_sys::DLM_LKF_CONVERT == 0;
    if sends_name {
        // `name()` is at most 64 bytes: this cannot fail.
        let _ = w.set_name(req.name());
    }
    w.w
}

/// Encode `DLM_USER_PURGE`.
pub fn encode_purge(nodeid: u32, pid: u32, version: [u32; 3]) -> WriteBuf {
    let mut w = header(Command::Purge, version);
    put_u32(&mut w.buf, PURGE_NODEID, nodeid);
    put_u32(&mut w.buf, PURGE_PID, pid);
    w
}

/// Encode `DLM_USER_CREATE_LOCKSPACE`; a name over 64 bytes is `EINVAL`.
pub fn encode_create(name: &[u8], flags: u32, version: [u32; 3]) -> Result<WriteBuf, Errno> {
    if name.is_empty() || name.len() > RESNAME_MAXLEN {
        return Err(Errno::EINVAL);
    }
    let mut w = header(Command::CreateLockspace, version);
    put_u32(&mut w.buf, LS_FLAGS, flags);
    w.buf[LS_NAME..LS_NAME + name.len()].copy_from_slice(name);
    // libdlm writes sizeof(request) + namelen, with the name at offset 24.
    w.len = WRITE_REQUEST_SIZE + name.len();
    Ok(w)
}

/// Encode `DLM_USER_REMOVE_LOCKSPACE`.
pub fn encode_remove(minor: u32, flags: u32, version: [u32; 3]) -> WriteBuf {
    let mut w = header(Command::RemoveLockspace, version);
    put_u32(&mut w.buf, LS_FLAGS, flags);
    put_u32(&mut w.buf, LS_MINOR, minor);
    w
}

/// Decode a write as the kernel's `device_write` does.
pub fn decode_write(buf: &[u8]) -> Result<Decoded, Errno> {
    if buf.len() < WRITE_REQUEST32_SIZE || buf.len() > MAX_WRITE_SIZE {
        return Err(Errno::EINVAL);
    }
    let (major, minor) = (get_u32(buf, 0), get_u32(buf, 4));
    if major != VERSION[0] || minor > VERSION[1] {
        return Err(Errno::EBADE);
    }
    let compat = buf[REQ_IS64] == 0;
    let cmd = buf[REQ_CMD];
    let lock = |buf: &[u8]| -> LockRequest {
        if compat {
            decode_lock32(buf)
        } else {
            decode_lock64(buf)
        }
    };
    if !compat && buf.len() < WRITE_REQUEST_SIZE {
        // A 64-bit request shorter than the 64-bit struct: the kernel would
        // read the missing tail as zeros from its NUL-padded copy; we treat
        // the fields as zero too.
        let mut padded = [0u8; MAX_WRITE_SIZE];
        padded[..buf.len()].copy_from_slice(buf);
        return decode_cmd(cmd, &padded[..WRITE_REQUEST_SIZE], compat, lock);
    }
    decode_cmd(cmd, buf, compat, lock)
}

fn decode_cmd(
    cmd: u8,
    buf: &[u8],
    compat: bool,
    lock: impl Fn(&[u8]) -> LockRequest,
) -> Result<Decoded, Errno> {
    let request = match cmd {
        c if c == Command::Lock as u8 => Request::Lock(lock(buf)),
        c if c == Command::Unlock as u8 => Request::Unlock(lock(buf)),
        c if c == Command::Deadlock as u8 => Request::Deadlock(lock(buf)),
        c if c == Command::Purge as u8 => Request::Purge {
            nodeid: get_u32(buf, PURGE_NODEID),
            pid: get_u32(buf, PURGE_PID),
        },
        c if c == Command::CreateLockspace as u8 => {
            // The kernel reads the name as a C string from its NUL-padded
            // copy of the write.
            let mut tail = buf.get(LS_NAME..).unwrap_or(&[]);
            if compat {
                // compat_input copies only `count - sizeof(request32)`.
                tail = &tail[..tail
                    .len()
                    .min(buf.len().saturating_sub(WRITE_REQUEST32_SIZE))];
            }
            let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
            Request::CreateLockspace {
                flags: get_u32(buf, LS_FLAGS),
                name: tail[..end].to_vec(),
            }
        }
        c if c == Command::RemoveLockspace as u8 => Request::RemoveLockspace {
            flags: get_u32(buf, LS_FLAGS),
            minor: get_u32(buf, LS_MINOR),
        },
        _ => return Err(Errno::EINVAL),
    };
    Ok(Decoded { request, compat })
}

fn name_from(buf: &[u8], namelen: u8, at: usize) -> ([u8; RESNAME_MAXLEN], u8) {
    // The name is whatever the write carried after the fixed part; a
    // namelen longer than that reads the kernel's zero padding. Names over
    // 64 bytes are refused later (EINVAL) from `namelen` alone.
    let mut name = [0u8; RESNAME_MAXLEN];
    let avail = buf.len().saturating_sub(at);
    let n = usize::from(namelen).min(RESNAME_MAXLEN).min(avail);
    name[..n].copy_from_slice(&buf[at..at + n]);
    (name, namelen)
}

fn decode_lock64(b: &[u8]) -> LockRequest {
    let mut lvb = [0u8; LVB_LEN];
    lvb.copy_from_slice(&b[LP_LVB..LP_LVB + LVB_LEN]);
    let (name, namelen) = name_from(b, b[LP_NAMELEN], LP_NAME);
    LockRequest {
        mode: b[LP_MODE],
        flags: get_u32(b, LP_FLAGS),
        lkid: get_u32(b, LP_LKID),
        parent: get_u32(b, LP_PARENT),
        xid: get_u64(b, LP_XID),
        timeout: get_u64(b, LP_TIMEOUT),
        castparam: get_u64(b, LP_CASTPARAM),
        castaddr: get_u64(b, LP_CASTADDR),
        bastparam: get_u64(b, LP_BASTPARAM),
        bastaddr: get_u64(b, LP_BASTADDR),
        lksb: get_u64(b, LP_LKSB),
        lvb,
        name,
        namelen,
    }
}

fn decode_lock32(b: &[u8]) -> LockRequest {
    let mut lvb = [0u8; LVB_LEN];
    lvb.copy_from_slice(&b[C32_LVB..C32_LVB + LVB_LEN]);
    // compat_input copies `count - sizeof(request32)` name bytes from the
    // 32-bit name field (offset 100); `namelen` is the field's value.
    let copied = b.len().saturating_sub(WRITE_REQUEST32_SIZE);
    let (name, namelen) = name_from(
        &b[..(C32_NAME + copied).min(b.len())],
        b[C32_NAMELEN],
        C32_NAME,
    );
    LockRequest {
        mode: b[C32_MODE],
        flags: get_u32(b, C32_FLAGS),
        lkid: get_u32(b, C32_LKID),
        parent: get_u32(b, C32_PARENT),
        xid: get_u64(b, C32_XID),
        timeout: get_u64(b, C32_TIMEOUT),
        castparam: u64::from(get_u32(b, C32_CASTPARAM)),
        castaddr: u64::from(get_u32(b, C32_CASTADDR)),
        bastparam: u64::from(get_u32(b, C32_BASTPARAM)),
        bastaddr: u64::from(get_u32(b, C32_BASTADDR)),
        lksb: u64::from(get_u32(b, C32_LKSB)),
        lvb,
        name,
        namelen,
    }
}
