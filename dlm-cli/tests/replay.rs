//! No lock lost when the daemon dies: a client whose daemon connection
//! fails replays its locks onto the daemon that takes its place. Real
//! daemons, real kills (SIGKILL), real processes.
#![forbid(unsafe_code)]

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::Daemon;
use dlm::{LockFlags, LockMode, LockspaceFlags, LockspaceName, ResourceName, Status, StatusFlags};
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

#[test]
fn a_lock_dropped_while_its_replay_waits_for_a_daemon_is_unlocked_not_brought_back() {
    log_to_stderr();
    let args = ["--user", "--grace-period", "30"];
    let mut d = Daemon::start_with(&args);
    let (_dlm, ls) = space(&d, "rd");
    ls.start_event_loop().unwrap();
    let lock = ls
        .lock(LockRequest::new(res("r"), LockMode::Ex))
        .unwrap()
        .granted()
        .unwrap();
    d.kill();
    // The event loop meets the failure at once, plans the replay (the lock
    // is held) and waits for a daemon to replay onto; meanwhile the
    // lock's owner drops it (the soak's stray lock: such a drop used to
    // skip the unlock, and the replay brought the lock back, held by
    // nobody).
    std::thread::sleep(Duration::from_millis(300));
    let dropper = std::thread::spawn(move || drop(lock));
    std::thread::sleep(Duration::from_millis(200));
    d.restart(&args);
    dropper.join().unwrap();
    common::wait_for("the replay", Duration::from_secs(10), || {
        ls.generation() == 2
    });
    assert!(ls.held().is_empty(), "not brought back: {:?}", ls.held());
    let (_dlm2, other) = space(&d, "rd");
    common::wait_for(
        "EX free for another handle",
        Duration::from_secs(10),
        || grantable(&other, "r", LockMode::Ex),
    );
}

// ---------------------------------------------------------------------
// Real processes: a shared counter under EX while the daemon is killed.

/// This binary run again as a counter worker (see [`counter_worker`]).
fn spawn_worker(d: &Daemon, dir: &std::path::Path, n: u32) -> common::Reaped {
    let n = n.to_string();
    common::spawn(common::worker_command(
        "counter_worker",
        &[
            ("DLM_REPLAY_WORKER", n.as_ref()),
            ("DLM_REPLAY_SOCKET", d.socket.as_os_str()),
            ("DLM_REPLAY_DIR", dir.as_os_str()),
        ],
    ))
}

/// A worker: until the file `stop` appears, take EX on "counter", check
/// with `flock -n` on a file that no one else is inside, add one to the
/// counter file, unlock; then write how many times it did to `count.N`.
/// Exits 3 if it ever finds someone inside, 2 on an error. Run only by [`eight_processes_count_exactly_while_the_daemon_is_killed_ten_times`].
#[test]
#[ignore = "a worker process that another test starts"]
fn counter_worker() {
    use std::io::{Read, Seek, Write};
    let Ok(me) = std::env::var("DLM_REPLAY_WORKER") else {
        return;
    };
    let _ = env_logger::Builder::new()
        .filter_level(log::LevelFilter::Warn)
        .try_init();
    let socket = std::env::var("DLM_REPLAY_SOCKET").unwrap();
    let dir = std::path::PathBuf::from(std::env::var("DLM_REPLAY_DIR").unwrap());
    let dlm = dlm::Dlm::builder()
        .backend(dlm::Backend::Fallback)
        .socket(&socket)
        .autostart(false)
        .open()
        .unwrap();
    let name = LockspaceName::new("count").unwrap();
    let ls = dlm
        .create_lockspace(&name, LockspaceFlags::empty(), 0o600)
        .unwrap();
    let tracker = std::fs::File::open(dir.join("tracker")).unwrap();
    let mut counter = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("counter"))
        .unwrap();
    let mut i = 0u64;
    while !dir.join("stop").exists() {
        let lock = match ls.lock(LockRequest::new(res("counter"), LockMode::Ex)) {
            Ok(Outcome::Granted(l)) => l,
            other => {
                eprintln!(
                    "worker {me} (pid {}): lock {i}: {other:?}; it holds {:?}",
                    std::process::id(),
                    ls.held()
                );
                std::process::exit(2);
            }
        };
        if rustix::fs::flock(
            &tracker,
            rustix::fs::FlockOperation::NonBlockingLockExclusive,
        )
        .is_err()
        {
            eprintln!("worker {me}: iteration {i}: another holder is inside");
            std::process::exit(3);
        }
        let mut s = String::new();
        counter.rewind().unwrap();
        counter.read_to_string(&mut s).unwrap();
        let v: u64 = s.trim().parse().unwrap();
        counter.rewind().unwrap();
        counter.set_len(0).unwrap();
        write!(counter, "{}", v + 1).unwrap();
        rustix::fs::flock(&tracker, rustix::fs::FlockOperation::Unlock).unwrap();
        if let Err(e) = lock.unlock() {
            eprintln!("worker {me}: unlock {i}: {e}");
            std::process::exit(2);
        }
        i += 1;
    }
    std::fs::write(dir.join(format!("count.{me}")), i.to_string()).unwrap();
}

#[test]
fn eight_processes_count_exactly_while_the_daemon_is_killed_ten_times() {
    const WORKERS: u32 = 8;
    let mut d = Daemon::start_with(&["--user", "--grace-period", "10"]);
    let dir = common::TempDir::new("counter");
    std::fs::write(dir.0.join("counter"), "0").unwrap();
    std::fs::write(dir.0.join("tracker"), "").unwrap();
    let mut workers: Vec<_> = (0..WORKERS).map(|n| spawn_worker(&d, &dir.0, n)).collect();
    let t = std::time::Instant::now();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(300));
        for (n, w) in workers.iter_mut().enumerate() {
            if let Ok(Some(st)) = w.0.try_wait() {
                panic!("worker {n} ended early: {st}");
            }
        }
        d.crash_and_restart(&["--user", "--grace-period", "10"]);
    }
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(dir.0.join("stop"), "").unwrap();
    let mut done = 0u64;
    for (n, w) in workers.iter_mut().enumerate() {
        let st = w.0.wait().unwrap();
        assert!(st.success(), "worker {n} ended {st}");
        let c = std::fs::read_to_string(dir.0.join(format!("count.{n}"))).unwrap();
        done += c.trim().parse::<u64>().unwrap();
    }
    let total: u64 = std::fs::read_to_string(dir.0.join("counter"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eprintln!(
        "{WORKERS} workers, 10 kills, {:.1} s: {done} increments",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(total, done, "every increment counted once");
    assert!(done > 0);
    let log = d.log_text();
    let graces: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("grace period over"))
        .collect();
    assert_eq!(graces.len(), 10, "{log}");
    for g in graces {
        eprintln!("{g}");
    }
}

#[test]
fn dlm_lock_keeps_its_lock_across_a_daemon_kill_and_its_command_is_not_told_lost() {
    let mut d = Daemon::start_with(&["--user", "--grace-period", "10"]);
    let dir = common::TempDir::new("dlmlock");
    let (inside, go) = (dir.0.join("inside"), dir.0.join("go"));
    let mut c = d.dlm();
    c.args([
        "lock",
        "r",
        "--",
        "sh",
        "-c",
        r#"trap 'echo signalled >> "$I"; exit 9' TERM HUP INT; touch "$I"; while [ ! -e "$G" ]; do sleep 0.05; done"#,
    ])
    .env("I", &inside)
    .env("G", &go)
    .stdin(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped());
    let mut holder = common::spawn(c);
    common::wait_for(
        "the command runs under the lock",
        Duration::from_secs(20),
        || inside.exists(),
    );
    d.crash_and_restart(&["--user", "--grace-period", "10"]);
    // A newcomer waits out the grace period (the holder replays first),
    // then finds the lock taken.
    let mut probe = d.dlm();
    probe.args(["lock", "--nowait", "r", "--", "true"]);
    let out = common::run(probe);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the replayed lock stands: {out:?}"
    );
    std::fs::write(&go, "").unwrap();
    let st = holder.0.wait().unwrap();
    let mut err = String::new();
    if let Some(mut e) = holder.0.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    assert!(st.success(), "dlm lock ended {st}: {err}");
    let said = std::fs::read_to_string(&inside).unwrap();
    assert!(
        !said.contains("signalled"),
        "the command was signalled: {said}"
    );
    // It says what happened (the replay), and nothing of a loss.
    assert!(err.contains("replayed 1 lock(s)"), "{err}");
    assert!(
        !err.lines()
            .any(|l| l.contains("lost") && !l.contains("0 refused and lost")),
        "{err}"
    );
    let log = d.log_text();
    assert!(
        log.contains("1 of 1 connection(s) replayed 1 lock(s)"),
        "{log}"
    );
}

/// One round: locks of every mode (two with value blocks), a conversion
/// waiting behind another holder, a request waiting behind a holder; the
/// daemon killed and restarted; then everything checked. Returns the
/// replay's time and its lock count.
fn every_mode_round(d: &mut Daemon, round: u32) -> (Duration, usize) {
    use LockMode::*;
    let name = format!("every{round}");
    let (_h, a) = space(d, &name);
    let (_h2, b) = space(d, &name);
    let (_h3, c) = space(d, &name);
    let modes = [Nl, Cr, Cw, Pr, Pw, Ex];
    let held: Vec<_> = modes
        .iter()
        .map(|&m| {
            a.lock(LockRequest::new(res(&format!("m{m:?}")), m))
                .unwrap()
                .granted()
                .unwrap()
        })
        .collect();
    // Value blocks: a PW holder's (it wrote it) and a CR holder's.
    let vb = ValueBlock::new([round as u8; 32]);
    let mut writer = a
        .lock(LockRequest::new(res("lvb-w"), LockMode::Ex).flags(LockFlags::VALBLK))
        .unwrap()
        .granted()
        .unwrap();
    writer
        .convert(LockMode::Pw, LockFlags::VALBLK, Some(&vb))
        .unwrap();
    let reader = a
        .lock(LockRequest::new(res("lvb-r"), LockMode::Cr).flags(LockFlags::VALBLK))
        .unwrap()
        .granted()
        .unwrap();
    // B holds PR on "conv", and A's PR there waits to convert to EX; C
    // waits for EX on "wait", which B holds.
    let b_conv = b
        .lock(LockRequest::new(res("conv"), Pr))
        .unwrap()
        .granted()
        .unwrap();
    let b_wait = b
        .lock(LockRequest::new(res("wait"), Ex))
        .unwrap()
        .granted()
        .unwrap();
    let mut a_conv = a
        .lock(LockRequest::new(res("conv"), Pr))
        .unwrap()
        .granted()
        .unwrap();
    let conv = std::thread::spawn(move || {
        let c = a_conv.convert(Ex, LockFlags::empty(), None).unwrap();
        (a_conv, c.status)
    });
    let c2 = c.clone();
    let waiter = std::thread::spawn(move || {
        c2.lock(LockRequest::new(res("wait"), Ex))
            .unwrap()
            .granted()
    });
    // Both wait at the daemon before it dies (a fixed sleep was not
    // always enough on a loaded machine).
    let ls_name = LockspaceName::new(&name).unwrap();
    common::wait_for(
        "A's conversion and C's request queued",
        Duration::from_secs(20),
        || {
            let locks = _h.locks(&ls_name).unwrap_or_default();
            let queued = |r: &str, q: &str| {
                locks
                    .iter()
                    .any(|l| l.resource == r && l.queue.as_deref() == Some(q))
            };
            queued("conv", "converting") && queued("wait", "waiting")
        },
    );

    d.crash_and_restart(&["--user", "--grace-period", "30"]);
    // Each handle replays when something of it meets the failure: here
    // a dispatch, or a thread waiting on it (A's conversion, C's request).
    a.dispatch().unwrap();
    b.dispatch().unwrap();
    common::wait_for("every handle replays", Duration::from_secs(20), || {
        [&a, &b, &c].iter().all(|l| l.last_replay().is_some())
    });
    assert_eq!((a.generation(), b.generation(), c.generation()), (2, 2, 2));
    let reports = [a.last_replay(), b.last_replay(), c.last_replay()].map(Option::unwrap);
    assert_eq!(
        reports.map(|r| (r.replayed, r.refused)),
        [(9, 0), (2, 0), (0, 0)]
    );
    assert_eq!(
        reports.map(|r| r.resent),
        [1, 0, 1],
        "A's conversion, C's request"
    );
    let took: Duration = reports.iter().map(|r| r.took).sum();

    // What A holds: every mode, under the same ids.
    let (_h4, probe) = space(d, &name);
    for (l, &m) in held.iter().zip(&modes) {
        let info = l.info().expect("still held");
        assert_eq!(info.granted, Some(m));
        // A probe in EX is refused by every mode but NL.
        assert_eq!(grantable(&probe, &format!("m{m:?}"), Ex), m == Nl, "{m:?}");
    }
    // C's request and A's conversion still wait behind B.
    assert!(!waiter.is_finished() && !conv.is_finished());
    b_wait.unlock().unwrap();
    let got = waiter.join().unwrap().expect("C granted after B let go");
    b_conv.unlock().unwrap();
    let (a_conv, st) = conv.join().unwrap();
    assert_eq!(
        (st, a_conv.mode()),
        (Status::Granted, Ex),
        "the conversion completed"
    );
    // The writer's block came back valid; the CR holder's is not vouched.
    writer.convert(Nl, LockFlags::empty(), None).unwrap();
    let r = probe
        .lock(LockRequest::new(res("lvb-w"), Pr).flags(LockFlags::VALBLK))
        .unwrap()
        .granted()
        .unwrap();
    assert_eq!(r.value_block(), Some(&vb));
    assert!(
        !r.status_flags().contains(StatusFlags::VALNOTVALID),
        "the PW writer's block is valid"
    );
    drop(r);
    let r2 = probe
        .lock(LockRequest::new(res("lvb-r"), Pr).flags(LockFlags::VALBLK))
        .unwrap();
    let Outcome::Granted(r2) = r2 else {
        panic!("PR next to CR")
    };
    assert!(
        r2.status_flags().contains(StatusFlags::VALNOTVALID),
        "a block replayed from below PW is flagged"
    );
    drop(r2);
    drop((got, a_conv, writer, reader, held));
    (took, 11)
}

#[test]
fn every_mode_waiting_and_converting_survives_a_hundred_kills() {
    log_to_stderr();
    let mut d = Daemon::start_with(&["--user", "--grace-period", "30"]);
    let t = std::time::Instant::now();
    let mut per_lock = Vec::new();
    for round in 0..100 {
        let (took, locks) = every_mode_round(&mut d, round);
        per_lock.push(took.as_secs_f64() * 1e6 / locks as f64);
        assert!(
            t.elapsed() < Duration::from_secs(240),
            "bounded: round {round}"
        );
    }
    let log = d.log_text();
    let mut graces: Vec<f64> = log
        .lines()
        .filter_map(|l| l.split("grace period over after ").nth(1))
        .filter_map(|r| r.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(graces.len(), 100, "one grace period a restart");
    per_lock.sort_by(f64::total_cmp);
    graces.sort_by(f64::total_cmp);
    eprintln!(
        "100 kills in {:.1} s; replay time per lock (3 handles, 11 locks, 2 operations \
         sent again): median {:.0} us, max {:.0} us; grace period used: median {:.1} ms, \
         max {:.1} ms",
        t.elapsed().as_secs_f64(),
        per_lock[50],
        per_lock[99],
        graces[50] * 1e3,
        graces[99] * 1e3
    );
}

#[test]
fn orphans_do_not_survive_a_daemon_death() {
    let mut d = Daemon::start_with(&["--user", "--grace-period", "10"]);
    let (_dlm, keeper) = space(&d, "orph");
    let (_dlm2, other) = space(&d, "orph");
    // A PERSISTENT lock stays, orphaned, when its handle goes.
    let l = keeper
        .lock(LockRequest::new(res("o"), LockMode::Ex).flags(LockFlags::PERSISTENT))
        .unwrap()
        .granted()
        .unwrap();
    let _ = l.into_id();
    drop(keeper);
    drop(_dlm);
    assert!(
        !grantable(&other, "o", LockMode::Ex),
        "orphaned, still held"
    );
    d.crash_and_restart(&["--user", "--grace-period", "10"]);
    other.dispatch().unwrap();
    // No client holds it, so nobody replays it: it is gone.
    assert!(
        grantable(&other, "o", LockMode::Ex),
        "the orphan did not survive"
    );
}

/// Recovery callbacks, as they come.
#[derive(Default)]
struct Heard(std::sync::Mutex<Vec<String>>);

impl dlm::Recovery for Heard {
    fn recover_prep(&self) {
        self.0.lock().unwrap().push("prep".into());
    }
    fn recover_slot(&self, m: dlm::Member) {
        self.0.lock().unwrap().push(format!("slot {m:?}"));
    }
    fn recover_done(&self, members: &[dlm::Member], ours: u32, generation: u32) {
        let m: Vec<(u32, u32)> = members.iter().map(|m| (m.nodeid, m.slot)).collect();
        self.0
            .lock()
            .unwrap()
            .push(format!("done {m:?} ours {ours} gen {generation}"));
    }
}

#[test]
fn recovery_callbacks_fire_at_join_and_in_order_around_each_replay() {
    let mut d = Daemon::start_with(&["--user", "--grace-period", "10"]);
    let heard = std::sync::Arc::new(Heard::default());
    let dlm = d.client_replaying(dlm::DEFAULT_REPLAY_WAIT);
    let name = LockspaceName::new("rc").unwrap();
    let ls = dlm
        .create_lockspace_with(&name, dlm::LockspaceOptions::new().recovery(heard.clone()))
        .unwrap();
    assert_eq!(ls.recovery_status(), Ok(()));
    let held = ls
        .lock(LockRequest::new(res("r"), LockMode::Ex))
        .unwrap()
        .granted()
        .unwrap();
    // Another handle opens it with callbacks too: told at join as well.
    let other_heard = std::sync::Arc::new(Heard::default());
    let other = dlm
        .open_lockspace_with(
            &name,
            dlm::LockspaceOptions::new().recovery(other_heard.clone()),
        )
        .unwrap();
    for round in 0..3u32 {
        d.crash_and_restart(&["--user", "--grace-period", "10"]);
        ls.dispatch().unwrap();
        other.dispatch().unwrap();
        assert!(
            !grantable(&other, "r", LockMode::Pr),
            "round {round}: still held"
        );
    }
    let want = [
        "done [(1, 1)] ours 1 gen 1",
        "prep",
        "done [(1, 1)] ours 1 gen 2",
        "prep",
        "done [(1, 1)] ours 1 gen 3",
        "prep",
        "done [(1, 1)] ours 1 gen 4",
    ];
    assert_eq!(*heard.0.lock().unwrap(), want);
    assert_eq!(*other_heard.0.lock().unwrap(), want);
    held.unlock().unwrap();
}

#[test]
fn a_value_block_write_the_kill_took_is_written_on_the_restarted_daemon() {
    log_to_stderr();
    let args = ["--user", "--grace-period", "30"];
    let mut d = Daemon::start_with(&args);
    let (_dlm, ls) = space(&d, "rpv");
    let mut ex = ls
        .lock(LockRequest::new(res("v"), LockMode::Ex).flags(LockFlags::VALBLK))
        .unwrap()
        .granted()
        .unwrap();
    d.crash_and_restart(&args);
    // The down-conversion that writes the block is what meets the kill:
    // its write fails, the replay takes the EX back and sends the
    // conversion again, with the block it writes (not the one last
    // read, all zero).
    let block = ValueBlock::new([0xa5; 32]);
    let c = ex
        .convert(LockMode::Pw, LockFlags::VALBLK, Some(&block))
        .unwrap();
    assert_eq!(c.status, Status::Granted, "{c:?}");
    assert_eq!(ls.generation(), 2, "one replay");
    assert_eq!(
        ls.last_replay().map(|r| (r.replayed, r.resent)),
        Some((1, 1))
    );
    ex.convert(LockMode::Nl, LockFlags::empty(), None).unwrap();
    let (_dlm2, other) = space(&d, "rpv");
    let reader = other
        .lock(LockRequest::new(res("v"), LockMode::Pr).flags(LockFlags::VALBLK))
        .unwrap()
        .granted()
        .unwrap();
    assert_eq!(reader.value_block(), Some(&block), "{}", d.log_text());
    drop(reader);
    ex.unlock().unwrap();
}
