//! Round trips and the kernel's checks, byte for byte.

use super::result::*;
use super::write::*;
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

#[test]
fn names_of_every_length_are_sent_whole_and_alone() {
    let long: Vec<u8> = (1..=64).collect();
    for n in 0..=64 {
        let mut w = LockWrite::new(Command::Lock, VERSION);
        // A longer name first: a request filled again sends only the new
        // name's bytes.
        w.set_name(&[0xee; 64]).unwrap();
        w.set_name(&long[..n]).unwrap();
        let b = w.as_bytes();
        assert_eq!(b.len(), WRITE_REQUEST_SIZE + n, "length {n}");
        assert_eq!(&b[WRITE_REQUEST_SIZE..], &long[..n], "name of length {n}");
        match decode_write(b).unwrap().request {
            Request::Lock(d) => assert_eq!(d.name(), &long[..n]),
            other => panic!("{other:?}"),
        }
    }
    let mut w = LockWrite::new(Command::Lock, VERSION);
    assert!(w.set_name(&[b'x'; 65]).is_err());
}
