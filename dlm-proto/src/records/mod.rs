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
//!
//! `write` holds what goes in (`struct dlm_write_request` and its 32-bit
//! compat form), `result` what comes out (`struct dlm_lock_result`, its
//! compat form and the in-place [`ResultView`]); the version record and
//! the byte helpers both use are here.

use core::mem::size_of;

use dlm_sys::{dlm_lock_result, dlm_write_request};

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

mod result;
#[cfg(test)]
mod tests;
mod write;

pub use result::*;
pub use write::*;

#[inline]
pub(super) fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

#[inline]
pub(super) fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

#[inline]
pub(super) fn get_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_ne_bytes(a)
}

#[inline]
pub(super) fn get_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_ne_bytes(a)
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
