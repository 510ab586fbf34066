//! Denial of service on the daemon: what one client can do to the
//! others. The log's rate limit is shared by all connections.
#![forbid(unsafe_code)]

mod common;

use std::time::Instant;

use common::*;
use dlm_proto::wire::{self, Kind};
use dlm_proto::{LockFlags as F, LockMode as M};

/// The limits in `dlmd/src/ratelimit.rs`.
const RATE: u64 = 5;
const BURST: u64 = 50;
const SUMMARY_EVERY_SECS: u64 = 5;

/// The counts in the daemon's "suppressed K ..." lines.
fn suppressed_counts(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| l.split_once("] suppressed ").map(|(_, rest)| rest))
        .map(|rest| {
            let n = rest.split_whitespace().next().expect("a count");
            n.parse().expect("a number")
        })
        .collect()
}

/// A client that reconnects again and again, sending nonsense on each
/// connection, gets a bounded number of lines into the log however many
/// connections it uses; the rest are counted, and the count is logged.
#[test]
fn reconnecting_does_not_flood_the_log() {
    const CONNS: u64 = 2000;
    const FRAMES: u64 = 10;
    let start = Instant::now();
    let d = Daemon::start();
    let sock = d.socket.to_str().expect("utf-8 path").to_string();
    let (mut p, out) = spawn_helper(
        "flood",
        &[&sock, &CONNS.to_string(), &FRAMES.to_string()],
        None,
    );
    assert_eq!(
        out.line().as_deref(),
        Some(&*format!("sent {}", CONNS * FRAMES))
    );
    assert!(p.wait_timeout(TIMEOUT).is_some_and(|s| s.success()));
    // Every protocol error is either logged at warn level or counted in a
    // summary; the last summary comes at most SUMMARY_EVERY after the
    // last line held back.
    let warned = |log: &str| {
        log.lines()
            .filter(|l| l.contains(" WARN ") && l.contains("Write before Hello"))
            .count() as u64
    };
    let mut log = String::new();
    wait_until(
        "every protocol error to be logged or counted",
        TIMEOUT * 2,
        || {
            log = d.log_text();
            warned(&log) + suppressed_counts(&log).iter().sum::<u64>() >= CONNS * FRAMES
        },
    );
    let elapsed = start.elapsed().as_secs() + 1;
    let counts = suppressed_counts(&log);
    let total = warned(&log) + counts.iter().sum::<u64>();
    assert_eq!(total, CONNS * FRAMES, "each one exactly once:\n{log}");
    let warn_lines = log.lines().filter(|l| l.contains(" WARN ")).count() as u64;
    // The burst, the rate over the whole test, the "limit reached" notes
    // and the summaries.
    let bound = BURST + RATE * elapsed + (elapsed / SUMMARY_EVERY_SECS + 2) * 2;
    assert!(
        warn_lines <= bound,
        "{warn_lines} warn lines in {elapsed} s (bound {bound}) from {} inputs",
        CONNS * FRAMES
    );
    assert!(
        log.contains("log rate limit reached"),
        "the limit says when it takes effect"
    );
    assert!(
        !counts.is_empty() && counts.iter().all(|&n| n > 0),
        "{counts:?}"
    );
    // The daemon still serves.
    let mut c = d.control();
    assert!(c.lockspaces().is_empty());
}

macro_rules! skip_unless_users {
    () => {
        if let Some(why) = users::cannot_switch_users() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

fn eusers() -> i64 {
    -i64::from(rustix::io::Errno::USERS.raw_os_error())
}

fn emfile() -> i64 {
    -i64::from(rustix::io::Errno::MFILE.raw_os_error())
}

/// The probe connection `Daemon::start` made is closed: from here on,
/// only the test's connections are open.
fn settled(d: &Daemon) {
    wait_until("the start-up probe to be closed", TIMEOUT, || {
        d.log_text().contains("closed by the peer")
    });
}

/// A second uid holds its whole quota open and is refused one more, with
/// `EUSERS` and a message that says so; root (past that quota) and a
/// third uid still lock.
#[test]
fn a_uid_at_its_quota_leaves_room_for_root_and_others() {
    skip_unless_users!();
    let b = users::TestUser::create("b", &[]);
    let c = users::TestUser::create("c", &[]);
    let d = Daemon::start_with(&[
        "--system",
        "--max-connections",
        "40",
        "--max-connections-per-user",
        "10",
    ]);
    let sock = d.socket.to_str().expect("utf-8 path").to_string();
    let (mut ctl, mut ls, _) = d.lockspace("shared");
    assert_eq!(ls.call(Kind::Chmod, &0o666u32.to_le_bytes()), 0);

    let (hog, out) = spawn_helper_as("hog", &[&sock, "1000"], &b);
    assert_eq!(
        out.line().as_deref(),
        Some("held 10"),
        "uid {} gets its quota",
        b.uid
    );
    assert_eq!(out.line(), Some(format!("refused {}", eusers())));
    let said = out.line().expect("the library's error");
    let prefix = format!(
        "library {} dlmd at {} refused the connection: uid {} ",
        -eusers(),
        d.socket.display(),
        b.uid
    );
    assert!(said.starts_with(&prefix), "{said}");
    assert!(said.contains("quota"), "{said}");
    assert!(!said.contains("no dlm daemon answers"), "{said}");

    // Root is not held to the quota.
    let mut mine: Vec<Client> = (0..12).map(|_| d.control()).collect();
    assert!(mine[11].lockspaces().len() == 1);
    let n = ls.lock(&req(M::Ex, b"root-res", F::empty()));
    assert!(n > 0);
    assert_eq!(ls.wait_ast().status, 0, "root locks");
    // A third uid locks too.
    let (_held, cout) = spawn_helper_as("hold", &[&sock, "shared", "c-res"], &c);
    let granted = cout.line().expect("uid c's helper answers");
    assert!(granted.starts_with("granted "), "{granted}");
    let locks = ctl.locks("shared");
    assert_eq!(locks.len(), 2, "{locks:?}");

    // When the hog goes, its connections and quota go with it.
    drop(hog);
    mine.clear();
    let (_again, out) = spawn_helper_as("hog", &[&sock, "3"], &b);
    assert_eq!(out.line().as_deref(), Some("held 3"));
    let log = d.log_text();
    assert!(
        log.contains(&format!(
            "uid {} has 10 connections open, its quota (--max-connections-per-user)",
            b.uid
        )),
        "{log}"
    );
}

/// The last slots of the cap are root's: a uid that takes everything it
/// may is refused with `EMFILE`, and root still gets in.
#[test]
fn the_last_slots_are_kept_for_root() {
    skip_unless_users!();
    let b = users::TestUser::create("r", &[]);
    // 8 connections, 1 of them root's (a 32nd, at least 1).
    let d = Daemon::start_with(&[
        "--system",
        "--max-connections",
        "8",
        "--max-connections-per-user",
        "100",
    ]);
    settled(&d);
    let sock = d.socket.to_str().expect("utf-8 path").to_string();
    let (_hog, out) = spawn_helper_as("hog", &[&sock, "1000"], &b);
    assert_eq!(out.line().as_deref(), Some("held 7"));
    assert_eq!(out.line(), Some(format!("refused {}", emfile())));
    let said = out.line().expect("the library's error");
    assert!(
        said.contains("refused the connection: it has its maximum of connections open"),
        "{said}"
    );
    let mut root = d.control();
    assert!(root.lockspaces().is_empty(), "root takes the last slot");
    // And past it, root is refused like anyone.
    let mut extra = d.connect();
    match extra.reply() {
        (Kind::Result, body) => assert_eq!(wire::result_value(&body), Ok(emfile())),
        (k, _) => panic!("a connection past the cap got {k:?}"),
    }
    let log = d.log_text();
    assert!(log.contains("the last 1 are kept for root"), "{log}");
}

/// A connection that never says `Hello` is closed once `--hello-timeout`
/// is up, and what it held (a slot under the cap) is free again; one that
/// said `Hello` before it stays.
#[test]
fn connections_that_never_say_hello_are_closed() {
    let d = Daemon::start_with(&["--user", "--max-connections", "4", "--hello-timeout", "0.5"]);
    settled(&d);
    let mut talker = d.control();
    // With these the cap is reached.
    let mut silent: Vec<Client> = (0..3).map(|_| d.connect()).collect();
    for c in &mut silent {
        assert!(c.closed_within(TIMEOUT), "a silent connection is closed");
    }
    // The talker was accepted first, so its deadline passed first.
    assert!(
        talker.lockspaces().is_empty(),
        "a connection that said Hello stays"
    );
    let mut fresh: Vec<Client> = (0..3).map(|_| d.control()).collect();
    assert!(fresh[2].lockspaces().is_empty(), "the slots are free again");
    let log = d.log_text();
    assert_eq!(
        log.matches("no Hello within 0.5 s (--hello-timeout)")
            .count(),
        3,
        "{log}"
    );
}

/// Bad `--hello-timeout` values are refused at startup.
#[test]
fn hello_timeouts_are_checked() {
    for bad in ["0", "-2", "forever", "7200"] {
        let out = std::process::Command::new(DLMD)
            .arg(format!("--hello-timeout={bad}"))
            .args(["--socket", "/nonexistent/dlmd.sock"])
            .output()
            .expect("run dlmd");
        assert_eq!(out.status.code(), Some(2), "--hello-timeout {bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--hello-timeout"), "{err}");
    }
}

/// Out of file descriptors below the connection cap (here: the open-file
/// limit lowered under a running daemon), the daemon still turns new
/// clients away with `EMFILE` at once, instead of leaving them waiting
/// in the listen backlog, and serves again once a descriptor is free.
#[test]
fn out_of_descriptors_clients_are_refused_not_left_waiting() {
    use rustix::process::{prlimit, Pid, Resource, Rlimit};
    let d = Daemon::start_with(&["--user", "--max-connections", "1000"]);
    settled(&d);
    let pid = Pid::from_raw(d.proc.pid() as i32).expect("pid");
    let fds: Vec<u64> = std::fs::read_dir(format!("/proc/{}/fd", d.proc.pid()))
        .expect("the daemon's fds")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // Room for a few more descriptors (more if the daemon inherited one
    // with a high number).
    let top = fds.iter().max().copied().unwrap_or(0);
    let limit = (top + 1).max(fds.len() as u64 + 3);
    let old = prlimit(
        Some(pid),
        Resource::Nofile,
        Rlimit {
            current: Some(limit),
            // The daemon's hard limit is the one it inherited from us.
            maximum: rustix::process::getrlimit(Resource::Nofile).maximum,
        },
    )
    .expect("lower the daemon's open-file limit");
    assert!(old.current.is_some_and(|n| n > limit));
    let mut open = Vec::new();
    let refusal = loop {
        assert!(open.len() < 1000, "the open-file limit did not bite");
        let mut c = d.connect();
        let mut hello = Vec::new();
        wire::put_frame(&mut hello, Kind::Hello, &[wire::ROLE_CONTROL, 0]).expect("frame");
        let _ = std::io::Write::write_all(&mut c.stream, &hello);
        match c.next_frame() {
            Some((Kind::Result, b)) => match wire::result_value(&b).expect("result") {
                0 => open.push(c),
                v => {
                    assert!(c.closed_within(TIMEOUT), "a refused client is let go");
                    break v;
                }
            },
            other => panic!("a Hello answered {other:?}"),
        }
    };
    assert_eq!(refusal, emfile());
    assert!(!open.is_empty());
    // A free descriptor is used again.
    drop(open.pop());
    wait_until("a connection to be served again", TIMEOUT, || {
        let mut c = d.connect();
        let mut hello = Vec::new();
        wire::put_frame(&mut hello, Kind::Hello, &[wire::ROLE_CONTROL, 0]).expect("frame");
        let _ = std::io::Write::write_all(&mut c.stream, &hello);
        matches!(c.next_frame(), Some((Kind::Result, b)) if wire::result_value(&b) == Ok(0))
    });
    assert!(
        d.log_text().contains("out of file descriptors"),
        "{}",
        d.log_text()
    );
}
