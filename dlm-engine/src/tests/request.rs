//! Argument checks of requests and conversions, with the kernel's errnos.

use super::*;

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
