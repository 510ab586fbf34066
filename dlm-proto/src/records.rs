//! The kernel device's records, byte for byte: `struct dlm_write_request`
//! in, `struct dlm_lock_result` out.
//!
//! Both backends speak these records: the kernel backend writes them to
//! `/dev/misc/dlm_<ls>` and reads results back, and the fallback backend
//! sends the very same bytes to `dlmd` over a Unix socket. Encoding and
//! decoding live here once, in safe code: every offset comes from the
//! `dlm-sys` types (`offset_of!`), so the layout is the C header's.
//!
//! Decoding applies the kernel's own checks (`device_write` and
//! `check_version` in `fs/dlm/user.c`), with the kernel's errnos:
//! too short or too long is `EINVAL`, a major version other than 6 or a
//! minor above 0 is `EBADE`, an unknown command is `EINVAL`. Requests from
//! 32-bit processes (`is64bit == 0`) are decoded with the kernel's compat
//! layout.

use core::mem::{offset_of, size_of};

use dlm_sys::{dlm_lksb, dlm_lock_params, dlm_lock_result, dlm_lspace_params, dlm_write_request};

use crate::error::Errno;
use crate::name::RESNAME_MAXLEN;

/// Length of every value block in a lockspace made from userspace: the
/// kernel's `DLM_USER_LVB_LEN`, fixed for such lockspaces.
pub const LVB_LEN: usize = crate::lvb::USER_LVB_LEN;
/// `sizeof(struct dlm_write_request)`: 120 on 64-bit.
pub const WRITE_REQUEST_SIZE: usize = size_of::<dlm_write_request>();
/// The largest write the kernel accepts: a request plus a 64-byte name.
pub const MAX_WRITE_SIZE: usize = WRITE_REQUEST_SIZE + RESNAME_MAXLEN;
/// `sizeof(struct dlm_write_request32)`: the smallest write a kernel with
/// 32-bit compat accepts.
pub const WRITE_REQUEST32_SIZE: usize = 104;
/// `sizeof(struct dlm_lock_result)`: 72 on 64-bit.
pub const RESULT_SIZE: usize = size_of::<dlm_lock_result>();
/// `sizeof(struct dlm_lock_result32)`.
pub const RESULT32_SIZE: usize = 52;
/// A result with its value block appended: what libdlm reads (104).
pub const RESULT_WITH_LVB_SIZE: usize = RESULT_SIZE + LVB_LEN;
/// `sizeof(struct dlm_device_version)`: a read of exactly this many bytes
/// returns the version.
pub const VERSION_SIZE: usize = 12;
/// The device interface version: 6.0.2.
pub const VERSION: [u32; 3] = [
    dlm_sys::DLM_DEVICE_VERSION_MAJOR,
    dlm_sys::DLM_DEVICE_VERSION_MINOR,
    dlm_sys::DLM_DEVICE_VERSION_PATCH,
];

const REQ_CMD: usize = offset_of!(dlm_write_request, cmd);
const REQ_IS64: usize = offset_of!(dlm_write_request, is64bit);
const REQ_I: usize = offset_of!(dlm_write_request, i);
const LP_MODE: usize = REQ_I + offset_of!(dlm_lock_params, mode);
const LP_NAMELEN: usize = REQ_I + offset_of!(dlm_lock_params, namelen);
const LP_FLAGS: usize = REQ_I + offset_of!(dlm_lock_params, flags);
const LP_LKID: usize = REQ_I + offset_of!(dlm_lock_params, lkid);
const LP_PARENT: usize = REQ_I + offset_of!(dlm_lock_params, parent);
const LP_XID: usize = REQ_I + offset_of!(dlm_lock_params, xid);
const LP_TIMEOUT: usize = REQ_I + offset_of!(dlm_lock_params, timeout);
const LP_CASTPARAM: usize = REQ_I + offset_of!(dlm_lock_params, castparam);
const LP_CASTADDR: usize = REQ_I + offset_of!(dlm_lock_params, castaddr);
const LP_BASTPARAM: usize = REQ_I + offset_of!(dlm_lock_params, bastparam);
const LP_BASTADDR: usize = REQ_I + offset_of!(dlm_lock_params, bastaddr);
const LP_LKSB: usize = REQ_I + offset_of!(dlm_lock_params, lksb);
const LP_LVB: usize = REQ_I + offset_of!(dlm_lock_params, lvb);
const LP_NAME: usize = REQ_I + offset_of!(dlm_lock_params, name);
const LS_FLAGS: usize = REQ_I + offset_of!(dlm_lspace_params, flags);
const LS_MINOR: usize = REQ_I + offset_of!(dlm_lspace_params, minor);
const LS_NAME: usize = REQ_I + offset_of!(dlm_lspace_params, name);
const PURGE_NODEID: usize = REQ_I;
const PURGE_PID: usize = REQ_I + 4;

const RES_LENGTH: usize = offset_of!(dlm_lock_result, length);
const RES_ASTADDR: usize = offset_of!(dlm_lock_result, user_astaddr);
const RES_ASTPARAM: usize = offset_of!(dlm_lock_result, user_astparam);
const RES_USER_LKSB: usize = offset_of!(dlm_lock_result, user_lksb);
const RES_LKSB: usize = offset_of!(dlm_lock_result, lksb);
const RES_STATUS: usize = RES_LKSB + offset_of!(dlm_lksb, sb_status);
const RES_LKID: usize = RES_LKSB + offset_of!(dlm_lksb, sb_lkid);
const RES_SBFLAGS: usize = RES_LKSB + offset_of!(dlm_lksb, sb_flags);
const RES_BAST_MODE: usize = offset_of!(dlm_lock_result, bast_mode);
const RES_LVB_OFFSET: usize = offset_of!(dlm_lock_result, lvb_offset);

// The 32-bit compat layout (kernel `struct dlm_lock_params32` inside
// `struct dlm_write_request32`): pointers are 4 bytes, u64s 8-aligned.
const C32_MODE: usize = 16;
const C32_NAMELEN: usize = 17;
const C32_FLAGS: usize = 20;
const C32_LKID: usize = 24;
const C32_PARENT: usize = 28;
const C32_XID: usize = 32;
const C32_TIMEOUT: usize = 40;
const C32_CASTPARAM: usize = 48;
const C32_CASTADDR: usize = 52;
const C32_BASTPARAM: usize = 56;
const C32_BASTADDR: usize = 60;
const C32_LKSB: usize = 64;
const C32_LVB: usize = 68;
const C32_NAME: usize = 100;

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
    name: [u8; RESNAME_MAXLEN],
    namelen: u8,
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

#[inline]
fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

#[inline]
fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

#[inline]
fn get_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_ne_bytes(a)
}

#[inline]
fn get_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_ne_bytes(a)
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
        self.w.buf[LP_NAME..LP_NAME + name.len()].copy_from_slice(name);
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
const R32_LENGTH: usize = 12;
const R32_ASTADDR: usize = 16;
const R32_ASTPARAM: usize = 20;
const R32_USER_LKSB: usize = 24;
const R32_STATUS: usize = 28;
const R32_LKID: usize = 32;
const R32_SBFLAGS: usize = 36;
const R32_BAST_MODE: usize = 44;
const R32_LVB_OFFSET: usize = 48;

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

/// Encode the 12-byte version a version read returns.
pub fn encode_version() -> [u8; VERSION_SIZE] {
    let mut b = [0u8; VERSION_SIZE];
    for (i, v) in VERSION.iter().enumerate() {
        put_u32(&mut b, i * 4, *v);
    }
    b
}

/// Decode a 12-byte version read.
pub fn decode_version(buf: &[u8]) -> Result<[u32; 3], Errno> {
    if buf.len() != VERSION_SIZE {
        return Err(Errno::EPROTO);
    }
    Ok([get_u32(buf, 0), get_u32(buf, 4), get_u32(buf, 8)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LockRequest {
        let mut r = LockRequest {
            mode: 5,
            flags: dlm_sys::DLM_LKF_VALBLK,
            castparam: 11,
            castaddr: 12,
            bastparam: 13,
            bastaddr: 14,
            lksb: 15,
            xid: 16,
            lvb: [7; LVB_LEN],
            ..Default::default()
        };
        r.set_name(b"resource").unwrap();
        r
    }

    #[test]
    fn sizes_are_the_kernels() {
        assert_eq!(WRITE_REQUEST_SIZE, 120);
        assert_eq!(MAX_WRITE_SIZE, 184);
        assert_eq!(RESULT_SIZE, 72);
        assert_eq!(LP_NAME, 120);
        assert_eq!(LS_NAME, 24);
        assert_eq!(RES_LVB_OFFSET, 68);
    }

    #[test]
    fn lock_request_round_trips() {
        let r = sample();
        let w = encode_lock(Command::Lock, &r, VERSION);
        assert_eq!(w.as_bytes().len(), 120 + 8);
        let d = decode_write(w.as_bytes()).unwrap();
        assert!(!d.compat);
        assert_eq!(d.request, Request::Lock(r));
    }

    #[test]
    fn conversions_carry_no_name() {
        let mut r = sample();
        r.flags |= dlm_sys::DLM_LKF_CONVERT;
        let w = encode_lock(Command::Lock, &r, VERSION);
        assert_eq!(w.as_bytes().len(), 120);
        match decode_write(w.as_bytes()).unwrap().request {
            Request::Lock(d) => assert_eq!(d.name(), b""),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn kernel_checks_on_writes() {
        let w = encode_lock(Command::Lock, &sample(), VERSION);
        assert_eq!(decode_write(&w.as_bytes()[..103]), Err(Errno::EINVAL));
        assert_eq!(decode_write(&[0u8; 185]), Err(Errno::EINVAL));
        let bad = encode_lock(Command::Lock, &sample(), [5, 0, 0]);
        assert_eq!(decode_write(bad.as_bytes()), Err(Errno::EBADE));
        let bad = encode_lock(Command::Lock, &sample(), [6, 1, 0]);
        assert_eq!(decode_write(bad.as_bytes()), Err(Errno::EBADE));
        let ok = encode_lock(Command::Lock, &sample(), [6, 0, 9]);
        assert!(
            decode_write(ok.as_bytes()).is_ok(),
            "patch level is ignored"
        );
        let mut unknown = encode_purge(0, 0, VERSION).as_bytes().to_vec();
        unknown[REQ_CMD] = 3;
        assert_eq!(decode_write(&unknown), Err(Errno::EINVAL));
    }

    #[test]
    fn lockspace_requests_round_trip() {
        let w = encode_create(b"vg0", 8, VERSION).unwrap();
        assert_eq!(w.as_bytes().len(), 123);
        assert_eq!(
            decode_write(w.as_bytes()).unwrap().request,
            Request::CreateLockspace {
                flags: 8,
                name: b"vg0".to_vec()
            }
        );
        let w = encode_remove(42, 2, VERSION);
        assert_eq!(
            decode_write(w.as_bytes()).unwrap().request,
            Request::RemoveLockspace {
                flags: 2,
                minor: 42
            }
        );
        let w = encode_purge(1, 99, VERSION);
        assert_eq!(
            decode_write(w.as_bytes()).unwrap().request,
            Request::Purge { nodeid: 1, pid: 99 }
        );
        assert_eq!(encode_create(b"", 0, VERSION).err(), Some(Errno::EINVAL));
    }

    #[test]
    fn compat_requests_are_decoded_with_the_32_bit_layout() {
        let mut b = vec![0u8; WRITE_REQUEST32_SIZE + 3];
        b[C32_NAMELEN] = 3;
        put_u32(&mut b, 0, 6);
        b[REQ_CMD] = Command::Lock as u8;
        b[REQ_IS64] = 0;
        b[C32_MODE] = 3;
        put_u32(&mut b, C32_FLAGS, 1);
        put_u32(&mut b, C32_CASTADDR, 0xabc);
        put_u32(&mut b, C32_LKSB, 0xdef);
        b[C32_NAME..C32_NAME + 3].copy_from_slice(b"abc");
        let d = decode_write(&b).unwrap();
        assert!(d.compat);
        match d.request {
            Request::Lock(r) => {
                assert_eq!((r.mode, r.flags, r.castaddr, r.lksb), (3, 1, 0xabc, 0xdef));
                assert_eq!(r.name(), b"abc");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn results_round_trip_with_and_without_lvb() {
        let r = LockResult {
            astaddr: 1,
            astparam: 2,
            user_lksb: 3,
            status: -65538,
            lkid: 4,
            sb_flags: 2,
            bast_mode: 0,
            lvb: Some([9; LVB_LEN]),
        };
        let (b, n) = encode_result(&r, 104).unwrap();
        assert_eq!(n, 104);
        assert_eq!(decode_result(&b[..n]), Ok(r));
        let (b, n) = encode_result(&r, 72).unwrap();
        assert_eq!(n, 72);
        assert_eq!(decode_result(&b[..n]), Ok(LockResult { lvb: None, ..r }));
        assert_eq!(encode_result(&r, 71).err(), Some(Errno::EINVAL));
    }

    #[test]
    fn compat_results_use_the_52_byte_layout() {
        let r = LockResult {
            astaddr: 0x1_0000_0011,
            astparam: 0x22,
            user_lksb: 0x33,
            status: -65538,
            lkid: 0x44,
            sb_flags: 2,
            bast_mode: 5,
            lvb: Some([9; LVB_LEN]),
        };
        let (b, n) = encode_result32(&r, 84).unwrap();
        assert_eq!(n, 84);
        assert_eq!(get_u32(&b, 0), 6);
        assert_eq!(get_u32(&b, R32_LENGTH), 84);
        assert_eq!(get_u32(&b, R32_ASTADDR), 0x11, "pointers are truncated");
        assert_eq!(get_u32(&b, R32_ASTPARAM), 0x22);
        assert_eq!(get_u32(&b, R32_USER_LKSB), 0x33);
        assert_eq!(get_u32(&b, R32_STATUS) as i32, -65538);
        assert_eq!(get_u32(&b, R32_LKID), 0x44);
        assert_eq!((b[R32_SBFLAGS], b[R32_BAST_MODE]), (2, 5));
        assert_eq!(get_u32(&b, R32_LVB_OFFSET), 52);
        assert_eq!(&b[52..84], &[9; LVB_LEN]);
        let (b, n) = encode_result32(&r, 83).unwrap();
        assert_eq!((n, get_u32(&b, R32_LVB_OFFSET)), (52, 0));
        assert_eq!(get_u32(&b, R32_LENGTH), 52);
        assert_eq!(encode_result32(&r, 51).err(), Some(Errno::EINVAL));
    }

    #[test]
    fn result_view_reads_the_fields_in_place() {
        let r = LockResult {
            astaddr: 11,
            astparam: 0x1234_5678_9abc,
            user_lksb: 13,
            status: -65538,
            lkid: 0x10002,
            sb_flags: 2,
            bast_mode: 0,
            lvb: Some([7; LVB_LEN]),
        };
        let (b, n) = encode_result(&r, 104).unwrap();
        let v = ResultView::parse(&b[..n]).unwrap();
        assert_eq!(
            (
                v.astaddr(),
                v.astparam(),
                v.user_lksb(),
                v.status(),
                v.lkid()
            ),
            (11, 0x1234_5678_9abc, 13, -65538, 0x10002)
        );
        assert_eq!((v.sb_flags(), v.bast_mode()), (2, 0));
        assert_eq!(v.lvb(), Some(&[7; LVB_LEN]));
        assert_eq!(v.to_result(), r);
        // Without a value block the view has none, whatever follows.
        let (b, n) = encode_result(&LockResult { lvb: None, ..r }, 72).unwrap();
        assert_eq!(ResultView::parse(&b[..n]).unwrap().lvb(), None);
    }

    #[test]
    fn malformed_results_are_eproto() {
        let r = LockResult {
            astaddr: 1,
            astparam: 2,
            user_lksb: 3,
            status: 0,
            lkid: 4,
            sb_flags: 0,
            bast_mode: 0,
            lvb: Some([1; LVB_LEN]),
        };
        let (mut b, n) = encode_result(&r, 104).unwrap();
        assert_eq!(decode_result(&b[..71]), Err(Errno::EPROTO));
        assert_eq!(
            decode_result(&b[..n - 1]),
            Err(Errno::EPROTO),
            "length beyond the buffer"
        );
        put_u32(&mut b, RES_LVB_OFFSET, 90);
        assert_eq!(
            decode_result(&b[..n]),
            Err(Errno::EPROTO),
            "lvb past the end"
        );
        put_u32(&mut b, RES_LVB_OFFSET, 8);
        assert_eq!(
            decode_result(&b[..n]),
            Err(Errno::EPROTO),
            "lvb inside the header"
        );
        assert_eq!(decode_version(&encode_version()), Ok(VERSION));
    }
}
