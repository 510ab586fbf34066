//! The device's records, as the daemon decodes what a client writes and
//! the client decodes what comes back.
//!
//! Checked: no panic on any input; a decoded lock request encodes back to
//! a write that decodes to the same request, field for field (64-bit
//! layout; the name where one travels); a decoded
//! result agrees with its in-place view.
#![no_main]

use dlm_proto::records::{self, Command, Request, ResultView};
use libfuzzer_sys::fuzz_target;

const CONVERT: u32 = dlm_proto::flags::LockFlags::CONVERT.bits();

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = records::decode_write(data) {
        let lock = match d.request {
            Request::Lock(r) => Some((Command::Lock, r)),
            Request::Unlock(r) => Some((Command::Unlock, r)),
            Request::Deadlock(r) => Some((Command::Deadlock, r)),
            _ => None,
        };
        if let Some((cmd, req)) = lock {
            let again = records::encode_lock(cmd, &req, records::VERSION);
            let back = records::decode_write(again.as_bytes())
                .expect("a request we encoded decodes");
            assert!(!back.compat);
            let back = match (cmd, back.request) {
                (Command::Lock, Request::Lock(r))
                | (Command::Unlock, Request::Unlock(r))
                | (Command::Deadlock, Request::Deadlock(r)) => r,
                (_, other) => panic!("{cmd:?} came back as {other:?}"),
            };
            // Every field travels; the name only with a new request (a
            // conversion, unlock or deadlock cancel names no resource),
            // and only a name the kernel would take (at most 64 bytes).
            let fields = |r: &records::LockRequest| {
                (r.mode, r.flags, r.lkid, r.parent, r.xid, r.timeout)
            };
            let args = |r: &records::LockRequest| {
                (r.castparam, r.castaddr, r.bastparam, r.bastaddr, r.lksb, r.lvb)
            };
            let new_lock = cmd == Command::Lock && req.flags & CONVERT == 0;
            let same = fields(&back) == fields(&req)
                && args(&back) == args(&req)
                && (!new_lock || req.namelen() > 64 || back.name() == req.name());
            assert!(same, "{cmd:?} {req:?} did not survive a round trip");
        }
    }
    let decoded = records::decode_result(data);
    let view = ResultView::parse(data);
    assert_eq!(decoded.is_ok(), view.is_ok());
    if let (Ok(r), Ok(v)) = (decoded, view) {
        assert_eq!(r.lkid, v.lkid());
        assert_eq!(r.status, v.status());
        assert_eq!(r.astparam, v.astparam());
    }
    let _ = records::decode_version(data);
});
