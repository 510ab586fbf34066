//! Lock replay after a restart (`Replay`/`ReplayDone` frames,
//! `HELLO_REPLAY`) and the grace period, with real `dlmd` processes and
//! real kills.

mod common;

use std::io::ErrorKind;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{req, spawn_dlmd, unl, wait_until, Client, Daemon, Dlmd, Proc, TIMEOUT};
use dlm_proto::replay::{Replay, ReplayLvb};
use dlm_proto::wire::{self, Kind};
use dlm_proto::{LockFlags, LockMode, ResourceName};
use rustix::process::Signal;

const EAGAIN: i64 = -11;
const EEXIST: i64 = -17;
const EINVAL: i64 = -22;
const ENOTCONN: i64 = -107;

fn replay_of(lkid: u32, mode: LockMode, name: &str) -> Replay {
    Replay {
        lkid,
        mode,
        flags: LockFlags::empty(),
        lvb: ReplayLvb::None,
        castparam: 0xc0,
        castaddr: 0xca,
        bastparam: 0xb0,
        bastaddr: 0xba,
        lksb: 0x5b,
        name: ResourceName::new(name).expect("name"),
    }
}

/// A lockspace connection that will replay.
fn replayer(socket: &Path, ls: &str) -> Client {
    let mut c = Client::connect(socket);
    let v = c.hello(wire::ROLE_LOCKSPACE, wire::HELLO_REPLAY, ls.as_bytes());
    assert!(v >= 0, "replaying hello: {v}");
    c
}

fn replay(c: &mut Client, r: &Replay) -> i64 {
    c.call(Kind::Replay, &r.encode())
}

/// Wait until the daemon on `socket` answers.
fn wait_answering(socket: &Path, d: &mut Dlmd) {
    let deadline = Instant::now() + TIMEOUT;
    while UnixStream::connect(socket).is_err() {
        if let Ok(Some(st)) = d.0.try_wait() {
            panic!("dlmd exited early ({st})");
        }
        assert!(Instant::now() < deadline, "dlmd did not start listening");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_replayed_lock_keeps_its_id_and_mode_and_blocks_others() {
    let d = Daemon::start();
    let (ctl, _ls, _) = d.lockspace("rp");
    let mut a = replayer(&d.socket, "rp");
    let mut r = replay_of(0x1234, LockMode::Ex, "res");
    assert_eq!(replay(&mut a, &r), 0);
    assert!(a.take_asts().is_empty(), "a replay sends no completion");
    // The same id again, or another id in a conflicting mode, is refused.
    assert_eq!(replay(&mut a, &r), EEXIST);
    r.lkid = 0x1235;
    r.mode = LockMode::Pr;
    assert_eq!(replay(&mut a, &r), EAGAIN);
    assert_eq!(a.call(Kind::ReplayDone, &[]), 0);
    assert_eq!(replay(&mut a, &r), EINVAL, "no replay after ReplayDone");
    assert_eq!(a.call(Kind::ReplayDone, &[]), EINVAL, "a second ReplayDone");

    // Another holder's request waits, and the replayed holder gets the
    // blocking callback; its unlock, by the replayed id, grants it.
    let mut b = d.open("rp");
    let lb = b.lock(&req(LockMode::Pr, b"res", LockFlags::empty()));
    assert!(lb > 0);
    let bast = a.wait_ast();
    assert_eq!((bast.lkid, bast.bast_mode), (0x1234, LockMode::Pr.as_raw()));
    assert!(b.take_asts().is_empty(), "B waits");
    assert_eq!(a.unlock(&unl(0x1234, LockFlags::empty())), 0);
    let done = a.wait_ast();
    assert_eq!((done.lkid, done.status), (0x1234, -0x10002), "A's unlock");
    let grant = b.wait_ast();
    assert_eq!((grant.lkid as i64, grant.status), (lb, 0), "B granted");
    let _ = ctl.stream.shutdown(std::net::Shutdown::Both);
}

#[test]
fn replays_are_refused_where_they_do_not_belong() {
    let d = Daemon::start();
    let (mut ctl, mut plain, _) = d.lockspace("rq");
    let r = replay_of(7, LockMode::Nl, "x");
    // Before Hello, on the control connection, on a connection that did
    // not ask to replay.
    let mut none = d.connect();
    assert_eq!(replay(&mut none, &r), ENOTCONN);
    assert_eq!(replay(&mut ctl, &r), EINVAL);
    assert_eq!(replay(&mut plain, &r), EINVAL);
    assert_eq!(plain.call(Kind::ReplayDone, &[]), EINVAL);
    // HELLO_REPLAY on a control connection; unknown Hello flags.
    let mut c = d.connect();
    assert_eq!(c.hello(wire::ROLE_CONTROL, wire::HELLO_REPLAY, b""), EINVAL);
    let mut c = d.connect();
    assert_eq!(c.hello(wire::ROLE_LOCKSPACE, 0x80, b"rq"), EINVAL);
    // Bodies that are no lock.
    let mut a = replayer(&d.socket, "rq");
    for body in [&[][..], &[1, 2, 3], &r.encode()[..20]] {
        assert_eq!(a.call(Kind::Replay, body), EINVAL, "{body:?}");
    }
    let convert = Replay {
        flags: LockFlags::CONVERT,
        ..r
    };
    assert_eq!(replay(&mut a, &convert), EINVAL);
    let huge = Replay {
        lkid: u32::MAX,
        ..r
    };
    assert_eq!(
        replay(&mut a, &huge),
        EINVAL,
        "lock id past the replay bound"
    );
    assert_eq!(
        a.call(Kind::ReplayDone, &[1]),
        EINVAL,
        "ReplayDone with a body"
    );
    // The connection still works.
    assert_eq!(replay(&mut a, &r), 0);
}

#[test]
fn value_blocks_come_back_from_a_holder_above_cr_and_flagged_from_one_at_cr() {
    let d = Daemon::start();
    let (_ctl, _ls, _) = d.lockspace("rv");
    let mut a = replayer(&d.socket, "rv");
    // A PR holder with a valid block vouches for it (as the kernel's
    // recover_lvb takes a lock above CR); a CR holder cannot.
    let pr = Replay {
        flags: LockFlags::VALBLK,
        lvb: ReplayLvb::Valid([7; 32]),
        ..replay_of(10, LockMode::Pr, "w")
    };
    assert_eq!(replay(&mut a, &pr), 0);
    let cr = Replay {
        flags: LockFlags::VALBLK,
        lvb: ReplayLvb::NotValid([9; 32]),
        ..replay_of(11, LockMode::Cr, "r")
    };
    assert_eq!(replay(&mut a, &cr), 0);
    assert_eq!(a.call(Kind::ReplayDone, &[]), 0);
    let mut b = d.open("rv");
    for (name, lvb, flagged) in [(&b"w"[..], [7u8; 32], false), (b"r", [9; 32], true)] {
        let id = b.lock(&req(LockMode::Pr, name, LockFlags::VALBLK));
        assert!(id > 0);
        let g = b.wait_ast();
        assert_eq!(g.status, 0);
        assert_eq!(g.lvb, Some(lvb), "{name:?}");
        let notvalid = g.sb_flags & dlm_proto::StatusFlags::VALNOTVALID.bits() != 0;
        assert_eq!(notvalid, flagged, "{name:?}: VALNOTVALID");
    }
}

/// Kill a daemon with `n` lockspace connections open, and start a new
/// one on the same socket with `args`.
fn crash_and_restart(d: &mut Daemon, args: &[&str]) -> Dlmd {
    d.proc.signal(Signal::KILL);
    assert!(d.proc.wait_timeout(TIMEOUT).is_some(), "killed");
    let holders = d.dir.path().join("dlmd.sock.holders");
    assert!(holders.exists(), "a killed daemon leaves its holders file");
    let mut args = args.to_vec();
    args.push("--user");
    let mut nd = spawn_dlmd(&d.socket, &d.log, &args);
    wait_answering(&d.socket, &mut nd);
    nd
}

/// Recreate lockspace `name` on a restarted daemon.
fn recreate(socket: &Path, name: &str) -> Client {
    let mut c = Client::connect(socket);
    assert_eq!(c.hello(wire::ROLE_CONTROL, 0, b""), 0);
    assert!(c.create(name, 0) >= 0);
    c
}

/// Whether `c` has an answer waiting within `within`.
fn answered_within(c: &mut Client, within: Duration) -> bool {
    c.stream.set_read_timeout(Some(within)).expect("timeout");
    let mut b = [0u8; 1];
    let r = rustix::net::recv(&c.stream, &mut b[..], rustix::net::RecvFlags::PEEK)
        .map(|(n, _)| n)
        .map_err(std::io::Error::from);
    c.stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    match r {
        Ok(n) => n > 0,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(e) => panic!("peek: {e}"),
    }
}

#[test]
fn after_a_crash_new_requests_wait_until_every_connection_has_replayed() {
    let mut d = Daemon::start();
    let (_ctl, mut a, _) = d.lockspace("g");
    let mut b = d.open("g");
    let la = a.lock(&req(LockMode::Ex, b"held", LockFlags::empty()));
    assert!(la > 0);
    assert_eq!(a.wait_ast().status, 0);
    assert!(b.lock(&req(LockMode::Pr, b"other", LockFlags::empty())) > 0);
    assert_eq!(b.wait_ast().status, 0);
    drop((a, b));

    let _nd = crash_and_restart(&mut d, &["--grace-period", "60"]);
    let _ctl = recreate(&d.socket, "g");
    // A newcomer asks for the lock A held: it is held back.
    let mut c = d.open("g");
    c.send(
        Kind::Write,
        dlm_proto::records::encode_lock(
            dlm_proto::records::Command::Lock,
            &req(LockMode::Ex, b"held", LockFlags::NOQUEUE),
            dlm_proto::records::VERSION,
        )
        .as_bytes(),
    );
    assert!(
        !answered_within(&mut c, Duration::from_millis(300)),
        "held in grace"
    );
    let mut a = replayer(&d.socket, "g");
    assert_eq!(
        replay(&mut a, &replay_of(la as u32, LockMode::Ex, "held")),
        0
    );
    assert_eq!(a.call(Kind::ReplayDone, &[]), 0);
    assert!(
        !answered_within(&mut c, Duration::from_millis(300)),
        "B has not replayed"
    );
    let mut b = replayer(&d.socket, "g");
    assert_eq!(b.call(Kind::ReplayDone, &[]), 0);
    // Now the newcomer's NOQUEUE request is answered, and fails: A holds.
    let (k, body) = c.reply();
    assert_eq!(k, Kind::Result);
    let id = wire::result_value(&body).expect("value");
    assert!(id > 0, "the write is taken: {id}");
    let r = c.wait_ast();
    assert_eq!(r.status, EAGAIN as i32, "A's replayed EX stands");
    let log = d.log_text();
    assert!(log.contains("grace period over"), "{log}");
    assert!(
        log.contains("2 of 2 connection(s) replayed 1 lock(s)"),
        "{log}"
    );
}

#[test]
fn the_grace_period_ends_at_its_bound_when_a_client_does_not_come_back() {
    let mut d = Daemon::start();
    let (_ctl, a, _) = d.lockspace("t");
    let b = d.open("t");
    drop((a, b));
    let t0 = Instant::now();
    let _nd = crash_and_restart(&mut d, &["--grace-period", "2"]);
    let _ctl = recreate(&d.socket, "t");
    let mut a = replayer(&d.socket, "t");
    assert_eq!(a.call(Kind::ReplayDone, &[]), 0);
    let mut c = d.open("t");
    c.send(
        Kind::Write,
        dlm_proto::records::encode_lock(
            dlm_proto::records::Command::Lock,
            &req(LockMode::Ex, b"x", LockFlags::empty()),
            dlm_proto::records::VERSION,
        )
        .as_bytes(),
    );
    // The grace period began after t0 and lasts 2 s: a request sent well
    // before that is held (on a slow machine the check is left out).
    if t0.elapsed() < Duration::from_millis(1500) {
        assert!(
            !answered_within(&mut c, Duration::from_millis(200)),
            "held in grace"
        );
    }
    let (k, body) = c.reply();
    assert_eq!(k, Kind::Result);
    assert!(wire::result_value(&body).expect("value") > 0);
    assert!(
        t0.elapsed() >= Duration::from_secs(2),
        "answered only once the period was up"
    );
    assert_eq!(c.wait_ast().status, 0);
    let log = d.log_text();
    assert!(log.contains("--grace-period is up"), "{log}");
    assert!(log.contains("1 of 2 connection(s)"), "{log}");
}

#[test]
fn a_clean_stop_leaves_no_holders_file_and_no_grace_period() {
    let mut d = Daemon::start();
    let (_ctl, _ls, _) = d.lockspace("c");
    let holders = d.dir.path().join("dlmd.sock.holders");
    wait_until("the holders file counts the connection", TIMEOUT, || {
        std::fs::read_to_string(&holders).is_ok_and(|s| s.trim() == "1")
    });
    d.proc.signal(Signal::TERM);
    assert!(d.proc.wait_timeout(TIMEOUT).is_some(), "stopped");
    assert!(!holders.exists(), "removed at a clean stop");
    let mut nd = spawn_dlmd(&d.socket, &d.log, &["--user"]);
    wait_answering(&d.socket, &mut nd);
    let _ctl = recreate(&d.socket, "c");
    let mut c = d.open("c");
    // Answered at once: no grace period.
    let id = c.lock(&req(LockMode::Ex, b"x", LockFlags::empty()));
    assert!(id > 0);
    let g = c.wait_ast();
    assert_eq!((g.status, g.lkid as i64), (0, id));
}

/// Kill `old` and start a new daemon on `socket` with `args`, logging to
/// `log`.
fn kill_and_restart(socket: &Path, log: &Path, old: &mut Proc, args: &[&str]) -> Dlmd {
    old.signal(Signal::KILL);
    assert!(old.wait_timeout(TIMEOUT).is_some(), "killed");
    let mut args = args.to_vec();
    args.push("--user");
    let mut nd = spawn_dlmd(socket, log, &args);
    wait_answering(socket, &mut nd);
    nd
}

/// The holders file's text once `ok` holds for it.
fn holders_once(d: &Daemon, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let path = d.dir.path().join("dlmd.sock.holders");
    wait_until(what, TIMEOUT, || {
        std::fs::read_to_string(&path).is_ok_and(|s| ok(s.trim()))
    });
    std::fs::read_to_string(&path).unwrap_or_default()
}

/// A client that never comes back after a crash (its process died, or it
/// closed its lockspace while no daemon was there) is awaited for one
/// grace period in all, not a new one on every daemon that dies within
/// its grace period: under repeated kills, new requests would otherwise
/// be held for ever (the 10-minute soak saw that).
#[test]
fn a_client_that_never_comes_back_is_awaited_for_one_grace_period_across_crashes() {
    let mut d = Daemon::start();
    let (_ctl, a, _) = d.lockspace("s");
    let b = d.open("s");
    holders_once(&d, "both connections counted", |s| s == "2");
    // The first crash: A comes back, B never does.
    let mut nd1 = kill_and_restart(&d.socket, &d.log, &mut d.proc, &["--grace-period", "3"]);
    drop((a, b));
    let _ctl1 = recreate(&d.socket, "s");
    let mut a1 = replayer(&d.socket, "s");
    assert_eq!(a1.call(Kind::ReplayDone, &[]), 0);
    // Open: A's connection; awaited since the crash: B.
    let text = holders_once(&d, "B passed on as awaited", |s| s.starts_with("2 1 "));
    // The second crash, within the first daemon's grace period.
    let mut nd2 = kill_and_restart(&d.socket, &d.log, &mut nd1.proc, &["--grace-period", "60"]);
    drop(a1);
    let _ctl2 = recreate(&d.socket, "s");
    let mut c = d.open("s");
    c.send(
        Kind::Write,
        dlm_proto::records::encode_lock(
            dlm_proto::records::Command::Lock,
            &req(LockMode::Ex, b"new", LockFlags::empty()),
            dlm_proto::records::VERSION,
        )
        .as_bytes(),
    );
    let mut a2 = replayer(&d.socket, "s");
    assert_eq!(a2.call(Kind::ReplayDone, &[]), 0);
    // Held until B's first grace period (3 s, not this daemon's 60) is up.
    let (k, body) = c.reply();
    assert_eq!(k, Kind::Result);
    assert!(wire::result_value(&body).expect("value") > 0);
    assert_eq!(c.wait_ast().status, 0);
    let log = d.log_text();
    assert!(
        log.contains("1 of them were awaited already by a dlmd that died in its grace period"),
        "holders file {text:?}; {log}"
    );
    assert!(
        log.contains("but those an earlier dlmd awaited, whose --grace-period is up"),
        "{log}"
    );
    // A's and the newcomer's connections are all that is left to count.
    holders_once(
        &d,
        "the grace period over, only open connections counted",
        |s| s == "2",
    );
    drop((a2, c));
    nd2.proc.signal(Signal::TERM);
    assert!(nd2.proc.wait_timeout(TIMEOUT).is_some(), "stopped");
}
