//! No lock lost when the daemon dies: a client whose daemon connection
//! fails replays its locks onto the daemon that takes its place. Real
//! daemons, real kills (SIGKILL), real processes.
#![forbid(unsafe_code)]

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::Daemon;
use dlm::{LockFlags, LockMode, LockspaceFlags, LockspaceName, ResourceName, Status};
use dlm::{LockRequest, Lockspace, Outcome, ValueBlock};

/// The client's log on the test's stderr (shown when a test fails).
fn log_to_stderr() {
    let _ = env_logger::Builder::new()
        .filter_level(log::LevelFilter::Debug)
        .is_test(true)
        .try_init();
}

fn res(s: &str) -> ResourceName {
    ResourceName::new(s).unwrap()
}

fn space(d: &Daemon, name: &str) -> (dlm::Dlm, Lockspace) {
    let dlm = d.client_replaying(dlm::DEFAULT_REPLAY_WAIT);
    let n = LockspaceName::new(name).unwrap();
    let ls = dlm
        .create_lockspace(&n, LockspaceFlags::empty(), 0o600)
        .unwrap();
    (dlm, ls)
}

/// Whether another handle gets `mode` on `name` at once.
fn grantable(ls: &Lockspace, name: &str, mode: LockMode) -> bool {
    let probe = LockRequest::new(res(name), mode).flags(LockFlags::NOQUEUE);
    match ls.lock(probe).unwrap() {
        Outcome::Granted(l) => {
            l.unlock().unwrap();
            true
        }
        Outcome::NotGranted(c) => {
            assert_eq!(c.status, Status::WouldBlock);
            false
        }
    }
}

#[test]
fn held_locks_survive_a_daemon_kill_with_their_ids_modes_and_value_blocks() {
    log_to_stderr();
    let mut d = Daemon::start_with(&["--user", "--grace-period", "30"]);
    let (_dlm, ls) = space(&d, "rp");
    let ex = ls
        .lock(LockRequest::new(res("ex"), LockMode::Ex))
        .unwrap()
        .granted()
        .unwrap();
    let pr = ls
        .lock(LockRequest::new(res("pr"), LockMode::Pr).flags(LockFlags::VALBLK))
        .unwrap()
        .granted()
        .unwrap();
    let mut pw = ls
        .lock(LockRequest::new(res("pw"), LockMode::Pw).flags(LockFlags::VALBLK))
        .unwrap()
        .granted()
        .unwrap();
    // The PW holder writes the block on its way down to CR.
    let block = ValueBlock::new([0x5a; 32]);
    pw.convert(LockMode::Cr, LockFlags::VALBLK, Some(&block))
        .unwrap();
    pw.convert(LockMode::Pw, LockFlags::VALBLK, None).unwrap();
    let ids = (ex.id(), pr.id(), pw.id());

    d.crash_and_restart(&["--user", "--grace-period", "30"]);
    // The holder meets the failure at its next use of the lockspace.
    assert_eq!(ls.dispatch().unwrap(), 0);
    assert_eq!(ls.generation(), 2, "one replay");
    assert_eq!((ex.id(), pr.id(), pw.id()), ids, "ids kept");
    let held = ls.held();
    assert_eq!(held.len(), 3, "{held:?}");

    // Another process's view (another connection of a new handle).
    let (_dlm2, other) = space(&d, "rp");
    assert!(!grantable(&other, "ex", LockMode::Cr), "EX kept");
    assert!(grantable(&other, "pr", LockMode::Pr), "PR shares");
    assert!(!grantable(&other, "pr", LockMode::Pw), "PR kept");
    assert!(!grantable(&other, "pw", LockMode::Pr), "PW kept");
    // The writer's block came back with it (read while the lock is kept
    // at NL: a resource's block lives only while some lock is on it).
    pw.convert(LockMode::Nl, LockFlags::empty(), None).unwrap();
    let reader = other
        .lock(LockRequest::new(res("pw"), LockMode::Pr).flags(LockFlags::VALBLK))
        .unwrap()
        .granted()
        .unwrap();
    assert_eq!(reader.value_block(), Some(&block));
    drop(reader);
    pw.unlock().unwrap();
    ex.unlock().unwrap();
    assert!(
        grantable(&other, "ex", LockMode::Ex),
        "unlocked by its replayed id"
    );
    drop(pr);
    let log = d.log_text();
    assert!(log.contains("grace period over"), "{log}");
}

#[test]
fn a_waiting_request_is_sent_again_and_granted_after_the_restart() {
    log_to_stderr();
    let mut d = Daemon::start_with(&["--user", "--grace-period", "30"]);
    let (_dlm, holder) = space(&d, "rw");
    let (_dlm2, waiter) = space(&d, "rw");
    let held = holder
        .lock(LockRequest::new(res("r"), LockMode::Ex))
        .unwrap()
        .granted()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let w = waiter.clone();
    let t = std::thread::spawn(move || {
        let got = w.lock(LockRequest::new(res("r"), LockMode::Ex)).unwrap();
        let _ = tx.send(());
        got.granted().map(|l| l.unlock())
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(rx.try_recv().is_err(), "waits behind the holder");
    d.crash_and_restart(&["--user", "--grace-period", "30"]);
    // The holder replays its lock (the waiter's thread replays its
    // connection, and sends its request again).
    assert_eq!(holder.dispatch().unwrap(), 0);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        rx.try_recv().is_err(),
        "still waits: the replayed EX stands"
    );
    held.unlock().unwrap();
    rx.recv_timeout(Duration::from_secs(20))
        .expect("granted once the holder let go");
    assert!(matches!(t.join().unwrap(), Some(Ok(()))));
}
