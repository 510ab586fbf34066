//! Lockspace lifetime and listing.

use super::*;

#[test]
fn linux_6_12_refuses_the_softirq_flag_from_userspace() {
    use dlm_proto::{LockspaceFlags, LockspaceName};
    let name = LockspaceName::new("ls1").unwrap();
    let softirq = LockspaceFlags::from_bits_retain(0x10);
    let mut reg = Registry::with_model(KernelModel::V6_12);
    assert_eq!(reg.create(&name, softirq), Err(Errno::EINVAL));
    assert!(reg.find(&name).is_none());
    let mut reg = Registry::new();
    assert!(reg.create(&name, softirq).is_ok());
}

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
