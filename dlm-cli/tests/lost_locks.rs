//! The client library tells its user at once when a held lock is lost:
//! another opener of the lockspace unlocked it, or the daemon connection
//! closed. Real daemons, real connections, real kills.
#![forbid(unsafe_code)]

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::Daemon;
use dlm::raw::RawDevice;
use dlm::{LockFlags, LockMode, LockspaceFlags, LockspaceName, ResourceName};
use dlm::{LockId, LockRequest, Lockspace, LostReason, Outcome};
use dlm_proto::records::{Command, LockWrite, VERSION};

fn res(s: &str) -> ResourceName {
    ResourceName::new(s).unwrap()
}

fn space(d: &Daemon, name: &str) -> (dlm::Dlm, Lockspace) {
    let dlm = d.client();
    let n = LockspaceName::new(name).unwrap();
    let ls = dlm
        .create_lockspace(&n, LockspaceFlags::empty(), 0o600)
        .unwrap();
    (dlm, ls)
}

/// An EX request for `name` whose lost callback sends to `tx`.
fn reporting(name: &str, tx: &mpsc::Sender<(LockId, LostReason)>) -> LockRequest {
    let tx = tx.clone();
    LockRequest::new(res(name), LockMode::Ex).on_lost(move |id, why| {
        let _ = tx.send((id, why));
    })
}

/// Whether another handle could take `name` in EX now.
fn is_free(ls: &Lockspace, name: &str) -> bool {
    let probe = LockRequest::new(res(name), LockMode::Ex).flags(LockFlags::NOQUEUE);
    match ls.lock(probe).unwrap() {
        Outcome::Granted(l) => {
            l.unlock().unwrap();
            true
        }
        Outcome::NotGranted(_) => false,
    }
}

/// Unlock lock `lkid` from another connection, as any opener of the
/// lockspace may, passing `castparam` as its callback parameter.
fn unlock_from_outside(d: &Daemon, ls: &LockspaceName, lkid: u32, castparam: u64) {
    let mut dev = RawDevice::connect(&d.socket, Some(ls), false).unwrap();
    let mut w = LockWrite::new(Command::Unlock, VERSION);
    w.set_lkid(lkid);
    w.set_user_args(castparam, 1, castparam, 0, 1);
    dev.write(w.as_bytes())
        .expect("another opener may unlock by lock id");
}

#[test]
fn a_lock_unlocked_by_another_opener_is_reported_lost_and_no_other_lock_is_touched() {
    let d = Daemon::start_debug_log();
    let (dlm, ls) = space(&d, "foreign");
    ls.start_event_loop().unwrap();
    let (tx, rx) = mpsc::channel();
    let first = ls.lock(reporting("first", &tx)).unwrap().granted().unwrap();
    let second = ls
        .lock(reporting("second", &tx))
        .unwrap()
        .granted()
        .unwrap();
    // The unlocker's callback parameter is the first lock's token (tokens
    // are slot 1 generation 1, slot 2 generation 2, ... in every process):
    // the record must still go to the lock whose id it carries.
    let first_token = (1u64 << 32) | 1;
    unlock_from_outside(&d, ls.name(), second.id().lkid(), first_token);
    let (id, why) = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("no lost callback; daemon log:\n{}", d.log_text()));
    assert_eq!(why, LostReason::UnlockedByOther);
    assert_eq!(
        id,
        second.id(),
        "the lock that was unlocked is the one reported"
    );
    assert!(rx.try_recv().is_err(), "one report, for one lock");
    let other = dlm.open_lockspace(ls.name()).unwrap();
    assert!(is_free(&other, "second"), "the second lock is gone");
    assert!(!is_free(&other, "first"), "the first lock is still held");
    assert_eq!(
        second.unlock().unwrap_err().errno(),
        dlm::Errno::ENOENT,
        "a lost lock cannot be unlocked again"
    );
    first.unlock().unwrap();
    assert!(is_free(&other, "first"));
}

#[test]
fn dispatch_reports_a_lock_unlocked_by_another_opener() {
    let d = Daemon::start_debug_log();
    let (_dlm, ls) = space(&d, "foreign-dispatch");
    let (tx, rx) = mpsc::channel();
    let held = ls.lock(reporting("r", &tx)).unwrap().granted().unwrap();
    unlock_from_outside(&d, ls.name(), held.id().lkid(), 0x5eed);
    let mut poll = mio::Poll::new().unwrap();
    let mut src = ls.clone();
    poll.registry()
        .register(&mut src, mio::Token(0), mio::Interest::READABLE)
        .unwrap();
    let mut events = mio::Events::with_capacity(4);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (id, why) = loop {
        ls.dispatch().unwrap();
        if let Ok(got) = rx.try_recv() {
            break got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no lost callback; daemon log:\n{}",
            d.log_text()
        );
        poll.poll(&mut events, Some(Duration::from_millis(500)))
            .unwrap();
    };
    assert_eq!((id, why), (held.id(), LostReason::UnlockedByOther));
    drop(held);
    poll.registry().deregister(&mut src).unwrap();
}

#[test]
fn every_held_lock_is_reported_lost_when_the_daemon_dies() {
    let mut d = Daemon::start();
    let (_dlm, ls) = space(&d, "dies");
    ls.start_event_loop().unwrap();
    let (tx, rx) = mpsc::channel();
    let a = ls.lock(reporting("a", &tx)).unwrap().granted().unwrap();
    let b = ls.lock(reporting("b", &tx)).unwrap().granted().unwrap();
    // A lock without a lost callback is lost too, silently.
    let _c = ls
        .lock(LockRequest::new(res("c"), LockMode::Pr))
        .unwrap()
        .granted()
        .unwrap();
    d.proc.0.kill().unwrap();
    d.proc.0.wait().unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(
            rx.recv_timeout(Duration::from_secs(20))
                .expect("a lost callback for each held lock"),
        );
    }
    got.sort_by_key(|(id, _)| id.lkid());
    let mut want = vec![
        (a.id(), LostReason::ConnectionClosed),
        (b.id(), LostReason::ConnectionClosed),
    ];
    want.sort_by_key(|(id, _)| id.lkid());
    assert_eq!(got, want);
    assert!(rx.try_recv().is_err(), "each is reported once");
    let e = a.unlock().unwrap_err();
    assert_eq!(e.errno(), dlm::Errno::EPIPE);
    assert!(e.to_string().contains("dlm daemon"), "{e}");
}

#[test]
fn a_timeout_too_long_for_the_clock_waits_without_limit() {
    let d = Daemon::start();
    let (dlm, ls) = space(&d, "long-timeout");
    let other = dlm.open_lockspace(ls.name()).unwrap();
    for t in [Duration::MAX, Duration::from_secs(u64::MAX / 2)] {
        let held = other
            .lock(LockRequest::new(res("r"), LockMode::Ex))
            .unwrap()
            .granted()
            .unwrap();
        let waiter = {
            let ls = ls.clone();
            std::thread::spawn(move || {
                ls.lock(LockRequest::new(res("r"), LockMode::Ex).timeout(t))
                    .map(|o| o.granted().map(|l| l.unlock()))
            })
        };
        common::wait_for("the waiter to queue", Duration::from_secs(10), || {
            dlm.locks(ls.name()).unwrap().len() == 2
        });
        held.unlock().unwrap();
        let got = waiter.join().expect("no panic");
        assert!(
            matches!(got, Ok(Some(Ok(())))),
            "granted once free: {got:?}"
        );
    }
}

#[test]
fn locks_stay_held_while_an_inherited_copy_of_the_descriptor_is_open() {
    let d = Daemon::start_debug_log();
    let (dlm, ls) = space(&d, "inherit");
    let probe = dlm.open_lockspace(ls.name()).unwrap();
    let lock = ls
        .lock(LockRequest::new(res("r"), LockMode::Ex))
        .unwrap()
        .granted()
        .unwrap();
    let copy = ls.inheritable_fd().unwrap();
    let flags = rustix::io::fcntl_getfd(&copy).unwrap();
    assert!(
        !flags.contains(rustix::io::FdFlags::CLOEXEC),
        "a child inherits it"
    );
    // This handle goes, as when its process is killed; the copy stays.
    let _kept = lock.into_id();
    drop(ls);
    assert!(
        !is_free(&probe, "r"),
        "the copy keeps the lock\n{}",
        d.log_text()
    );
    drop(copy);
    common::wait_for(
        "the lock to go with the last copy",
        Duration::from_secs(20),
        || is_free(&probe, "r"),
    );
}
