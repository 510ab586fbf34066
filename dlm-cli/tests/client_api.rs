//! The Rust client API against a real `dlmd`: callbacks and where they run,
//! blocking calls, mio integration, userspace timeouts, async futures.
#![forbid(unsafe_code)]

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;

use common::{run, wait_for, Daemon};
use dlm::{Backend, LockRequest, Lockspace, Outcome};
use dlm::{LockFlags, LockMode, LockspaceFlags, LockspaceName, ResourceName, Status, ValueBlock};
use dlm_conformance::traffic;

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

fn lock_count(dlm: &dlm::Dlm, name: &str) -> usize {
    dlm.locks(&LockspaceName::new(name).unwrap()).unwrap().len()
}

#[test]
fn backend_is_reported_and_chosen_by_environment() {
    let d = Daemon::start();
    assert_eq!(d.client().backend(), Backend::Fallback);
    // Forcing the kernel backend on a machine without it is a clear error.
    if dlm::kernel_control_device().is_none() {
        let mut c = d.dlm();
        c.env("DLM_BACKEND", "kernel").arg("status");
        let out = run(c);
        assert_eq!(out.status.code(), Some(69), "unavailable");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("modprobe dlm"), "{err}");
    }
    let mut c = d.dlm();
    c.env("DLM_BACKEND", "bogus").arg("status");
    let out = run(c);
    assert_eq!(out.status.code(), Some(64), "a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("DLM_BACKEND"));
}

#[test]
fn callbacks_run_on_the_event_loop_thread() {
    let d = Daemon::start();
    let (dlm, ls) = space(&d, "evloop");
    let other = dlm.open_lockspace(ls.name()).unwrap();
    ls.start_event_loop().unwrap();
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    let req = LockRequest::new(res("r"), LockMode::Ex).on_blocking(move |_, mode| {
        let _ = tx2.send(format!(
            "bast {mode} on {:?}",
            std::thread::current().name()
        ));
    });
    ls.request(req, move |_, c| {
        let _ = tx.send(format!(
            "{} on {:?}",
            c.status,
            std::thread::current().name()
        ));
    })
    .unwrap();
    let first = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(first, "granted on Some(\"dlm-ls-evloop\")");
    // Another handle (another owner) asks for PR: our BAST says PR.
    other
        .request(LockRequest::new(res("r"), LockMode::Pr), |_, _| {})
        .unwrap();
    let second = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(second, "bast PR on Some(\"dlm-ls-evloop\")");
}

/// A callback on the event-loop thread may make a waiting call: the loop
/// cannot deliver that call's completion while it runs the callback, so
/// the call reads the device itself.
#[test]
fn a_waiting_call_inside_an_event_loop_callback_does_not_hang() {
    let d = Daemon::start();
    let (_dlm, ls) = space(&d, "nested");
    ls.start_event_loop().unwrap();
    let (tx, rx) = mpsc::channel();
    let inner = ls.clone();
    ls.request(LockRequest::new(res("outer"), LockMode::Pr), move |_, c| {
        if c.status != Status::Granted {
            return;
        }
        let got = inner
            .lock(LockRequest::new(res("nested"), LockMode::Ex))
            .map(|o| o.granted().map(|l| l.unlock().is_ok()));
        let _ = tx.send((got.ok().flatten(), std::thread::current().id()));
    })
    .unwrap();
    // A hang shows here as a timeout (the bound is not a speed target).
    let (got, tid) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the nested waiting call returned");
    assert_eq!(got, Some(true), "granted and unlocked");
    assert_ne!(
        tid,
        std::thread::current().id(),
        "it ran on the loop thread"
    );
}

#[test]
fn a_blocked_caller_runs_callbacks_inline_without_a_loop_thread() {
    let d = Daemon::start();
    let (_dlm, ls) = space(&d, "inline");
    let (tx, rx) = mpsc::channel();
    ls.request(LockRequest::new(res("a"), LockMode::Pr), move |_, c| {
        let _ = tx.send((c.status, std::thread::current().id()));
    })
    .unwrap();
    // The waiting call reads the device itself and runs A's callback too.
    let b = ls
        .lock(LockRequest::new(res("b"), LockMode::Ex))
        .unwrap()
        .granted()
        .unwrap();
    let (st, tid) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(st, Status::Granted);
    assert_eq!(tid, std::thread::current().id());
    b.unlock().unwrap();
}

/// Many threads share one lockspace handle and block on the same EX lock:
/// one of them reads the device for all (the reader role passes between
/// them), completions meant for others reach their waiters, and the lock
/// is never held twice at once.
#[test]
fn threads_sharing_a_handle_take_turns_reading_and_exclusion_holds() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 150;
    let d = Daemon::start();
    let (dlm, ls) = space(&d, "threads");
    let held = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let turns = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (ls, held, turns) = (ls.clone(), held.clone(), turns.clone());
            std::thread::spawn(move || {
                for i in 0..ROUNDS {
                    // Every other round also takes a private lock, so
                    // records for uncontended locks are in the mix.
                    let own = (i % 2 == 0).then(|| {
                        let name = format!("own-{t}");
                        ls.lock(LockRequest::new(res(&name), LockMode::Ex))
                            .unwrap()
                            .granted()
                            .unwrap()
                    });
                    let l = ls
                        .lock(LockRequest::new(res("shared"), LockMode::Ex))
                        .unwrap()
                        .granted()
                        .expect("a waiting EX request is granted in turn");
                    assert!(!held.swap(true, Ordering::SeqCst), "EX held twice");
                    turns.fetch_add(1, Ordering::SeqCst);
                    held.store(false, Ordering::SeqCst);
                    l.unlock().unwrap();
                    if let Some(o) = own {
                        o.unlock().unwrap();
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a worker panicked");
    }
    assert_eq!(turns.load(Ordering::SeqCst), THREADS * ROUNDS);
    assert_eq!(lock_count(&dlm, "threads"), 0, "every lock was released");
}

#[test]
fn a_lockspace_works_in_the_callers_own_mio_poll() {
    let d = Daemon::start();
    let (_dlm, ls) = space(&d, "miopoll");
    let mut poll = mio::Poll::new().unwrap();
    let mut src = ls.clone();
    poll.registry()
        .register(&mut src, mio::Token(7), mio::Interest::READABLE)
        .unwrap();
    let got = Arc::new(AtomicUsize::new(0));
    let g = got.clone();
    ls.request(LockRequest::new(res("m"), LockMode::Cr), move |_, c| {
        assert_eq!(c.status, Status::Granted);
        g.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    let mut events = mio::Events::with_capacity(4);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while got.load(Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no completion through mio"
        );
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .unwrap();
        for ev in events.iter() {
            assert_eq!(ev.token(), mio::Token(7));
            ls.dispatch().unwrap();
        }
    }
    assert_eq!(got.load(Ordering::SeqCst), 1);
}

#[test]
fn a_timeout_cancels_the_request_and_leaves_no_lock() {
    let d = Daemon::start();
    let (dlm, ls) = space(&d, "timeouts");
    let other = dlm.open_lockspace(ls.name()).unwrap();
    let held = ls
        .lock(LockRequest::new(res("t"), LockMode::Ex))
        .unwrap()
        .granted()
        .unwrap();
    let out = other
        .lock(LockRequest::new(res("t"), LockMode::Ex).timeout(Duration::from_millis(200)))
        .unwrap();
    match out {
        Outcome::NotGranted(c) => assert_eq!(c.status, Status::TimedOut),
        Outcome::Granted(_) => panic!("granted while held"),
    }
    assert_eq!(
        lock_count(&dlm, "timeouts"),
        1,
        "only the holder's lock remains"
    );
    held.unlock().unwrap();
    assert_eq!(lock_count(&dlm, "timeouts"), 0);
}

#[test]
fn when_the_grant_beats_the_cancel_the_lock_is_returned() {
    // A zero timeout on a free resource: the grant is already on its way
    // when the timer fires, the cancel finds a granted lock (no AST), and
    // the grant is what the call returns.
    let d = Daemon::start();
    let (dlm, ls) = space(&d, "race");
    for i in 0..20 {
        let out = ls
            .lock(LockRequest::new(res(&format!("r{i}")), LockMode::Ex).timeout(Duration::ZERO))
            .unwrap();
        let lock = out.granted().expect("grant wins on a free resource");
        assert_eq!(lock.mode(), LockMode::Ex);
        lock.unlock().unwrap();
    }
    assert_eq!(lock_count(&dlm, "race"), 0);
}

#[test]
fn dropping_a_lock_unlocks_it() {
    let d = Daemon::start();
    let (dlm, ls) = space(&d, "drops");
    let other = dlm.open_lockspace(ls.name()).unwrap();
    {
        let _l = ls
            .lock(LockRequest::new(res("x"), LockMode::Ex))
            .unwrap()
            .granted()
            .unwrap();
    }
    let l = other
        .lock(LockRequest::new(res("x"), LockMode::Ex).timeout(Duration::from_secs(10)))
        .unwrap()
        .granted()
        .expect("the dropped lock was released");
    l.unlock().unwrap();
}

/// Closing a lockspace handle on the daemon is synchronous, as `close()`
/// of the kernel device is: the drop says `Bye` and waits for the answer,
/// which the daemon sends once the handle's locks are released.
#[test]
fn dropping_a_lockspace_handle_closes_synchronously() {
    let d = Daemon::start_debug_log();
    let (dlm, ls) = space(&d, "bye");
    let held = ls.lock(LockRequest::new(res("r"), LockMode::Ex)).unwrap();
    let held = held.granted().expect("granted").into_id();
    assert_eq!(lock_count(&dlm, "bye"), 1);
    drop(ls);
    assert_eq!(
        lock_count(&dlm, "bye"),
        0,
        "lock {held:?} released by the close"
    );
    wait_for(
        "the goodbye in the daemon log",
        Duration::from_secs(5),
        || d.log_text().contains("said goodbye"),
    );
}

#[test]
fn value_blocks_travel_from_writer_to_reader() {
    let d = Daemon::start();
    let (dlm, ls) = space(&d, "lvb");
    let reader = dlm.open_lockspace(ls.name()).unwrap();
    let mut w = ls
        .lock(LockRequest::new(res("cfg"), LockMode::Ex).value_block())
        .unwrap()
        .granted()
        .unwrap();
    assert_eq!(w.value_block(), Some(&ValueBlock::zeroed()));
    let v = ValueBlock::from_prefix(b"generation 7");
    let c = w
        .convert(LockMode::Nl, LockFlags::VALBLK, Some(&v))
        .unwrap();
    assert_eq!(c.status, Status::Granted);
    let r = reader
        .lock(LockRequest::new(res("cfg"), LockMode::Pr).value_block())
        .unwrap()
        .granted()
        .unwrap();
    assert_eq!(r.value_block(), Some(&v));
}

#[test]
fn noqueue_and_deadlock_cancel_are_outcomes_not_errors() {
    let d = Daemon::start();
    let (dlm, ls) = space(&d, "outcomes");
    let other = dlm.open_lockspace(ls.name()).unwrap();
    let _held = ls
        .lock(LockRequest::new(res("o"), LockMode::Ex))
        .unwrap()
        .granted()
        .unwrap();
    match other
        .lock(LockRequest::new(res("o"), LockMode::Pr).flags(LockFlags::NOQUEUE))
        .unwrap()
    {
        Outcome::NotGranted(c) => assert_eq!(c.status, Status::WouldBlock),
        Outcome::Granted(_) => panic!("NOQUEUE granted while held"),
    }
    let (tx, rx) = mpsc::channel();
    let id = other
        .request(LockRequest::new(res("o"), LockMode::Pr), move |_, c| {
            let _ = tx.send(c.status);
        })
        .unwrap();
    other.deadlock_cancel(id).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let st = loop {
        other.dispatch().unwrap();
        if let Ok(st) = rx.try_recv() {
            break st;
        }
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(st, Status::DeadlockCancelled);
}

/// Poll a future to completion on this thread (a minimal executor); a
/// future that never resolves fails the test.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    traffic::block_on(f, Duration::from_secs(10)).expect("future never resolved")
}

#[test]
fn async_lock_resolves_when_granted() {
    let d = Daemon::start();
    let (dlm, ls) = space(&d, "async");
    let other = dlm.open_lockspace(ls.name()).unwrap();
    let held = ls
        .lock(LockRequest::new(res("a"), LockMode::Ex))
        .unwrap()
        .granted()
        .unwrap();
    let fut = other.lock_async(LockRequest::new(res("a"), LockMode::Pr));
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        held.unlock().unwrap();
    });
    let lock = block_on(fut)
        .unwrap()
        .granted()
        .expect("granted after the unlock");
    assert_eq!(lock.mode(), LockMode::Pr);
    t.join().unwrap();
    lock.unlock().unwrap();
}

#[test]
fn dropping_a_pending_future_cancels_the_request() {
    let d = Daemon::start();
    let (dlm, ls) = space(&d, "asyncdrop");
    let other = dlm.open_lockspace(ls.name()).unwrap();
    let held = ls
        .lock(LockRequest::new(res("a"), LockMode::Ex))
        .unwrap()
        .granted()
        .unwrap();
    {
        let mut fut = Box::pin(other.lock_async(LockRequest::new(res("a"), LockMode::Ex)));
        assert!(fut
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_pending());
    }
    common::wait_for(
        "the cancelled request to go",
        Duration::from_secs(10),
        || lock_count(&dlm, "asyncdrop") == 1,
    );
    held.unlock().unwrap();
    // And a future dropped right after it was sent, on a free resource,
    // leaves nothing either (grant-then-unlock or cancel, whichever wins).
    for i in 0..10 {
        drop(other.lock_async(LockRequest::new(res(&format!("f{i}")), LockMode::Ex)));
    }
    common::wait_for("no locks left", Duration::from_secs(10), || {
        lock_count(&dlm, "asyncdrop") == 0
    });
}

/// An unlock by id whose completion the event loop takes in before the
/// unlock's own write has returned is a success, not ENOENT (it was, about
/// one run in two, before the fix).
#[test]
fn unlock_by_id_racing_its_completion_succeeds() {
    let d = Daemon::start();
    let (_dlm, ls) = space(&d, "unlockrace");
    ls.start_event_loop().unwrap();
    for i in 0..200 {
        let (tx, rx) = mpsc::channel();
        let id = ls
            .request(LockRequest::new(res("r"), LockMode::Ex), move |_, c| {
                let _ = tx.send(c.status);
            })
            .unwrap();
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)).unwrap(),
            Status::Granted
        );
        ls.unlock(id, LockFlags::empty(), None)
            .unwrap_or_else(|e| panic!("unlock {i}: {e}"));
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)).unwrap(),
            Status::Unlocked
        );
    }
}

#[test]
fn async_convert_and_unlock() {
    let d = Daemon::start();
    let (dlm, ls) = space(&d, "asyncconv");
    let other = dlm.open_lockspace(ls.name()).unwrap();
    let mut lock = block_on(ls.lock_async(LockRequest::new(res("a"), LockMode::Ex).value_block()))
        .unwrap()
        .granted()
        .unwrap();
    // A down-conversion writes the value block, and resolves at once.
    let vb = ValueBlock::from_prefix(b"async");
    let c = block_on(lock.convert_async(LockMode::Pr, LockFlags::VALBLK, Some(&vb))).unwrap();
    assert_eq!((c.status, lock.mode()), (Status::Granted, LockMode::Pr));
    // An up-conversion that must wait for another holder.
    let shared = other
        .lock(LockRequest::new(res("a"), LockMode::Pr).value_block())
        .unwrap()
        .granted()
        .unwrap();
    assert_eq!(
        shared.value_block().map(|v| &v.as_bytes()[..5]),
        Some(&b"async"[..])
    );
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        shared.unlock().unwrap();
    });
    let c = block_on(lock.convert_async(LockMode::Ex, LockFlags::empty(), None)).unwrap();
    assert_eq!((c.status, lock.mode()), (Status::Granted, LockMode::Ex));
    t.join().unwrap();
    block_on(lock.unlock_async()).unwrap();
    assert_eq!(lock_count(&dlm, "asyncconv"), 0);
}

#[test]
fn dropping_a_pending_conversion_cancels_it_and_keeps_the_lock() {
    let d = Daemon::start();
    let (dlm, ls) = space(&d, "asyncconvdrop");
    let other = dlm.open_lockspace(ls.name()).unwrap();
    let mut lock = ls
        .lock(LockRequest::new(res("a"), LockMode::Pr))
        .unwrap()
        .granted()
        .unwrap();
    let shared = other
        .lock(LockRequest::new(res("a"), LockMode::Pr))
        .unwrap()
        .granted()
        .unwrap();
    {
        let mut fut = Box::pin(lock.convert_async(LockMode::Ex, LockFlags::empty(), None));
        assert!(fut
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_pending());
    }
    // Cancelled: the lock is back on the granted queue in PR, and another
    // PR holder is still compatible.
    common::wait_for(
        "the conversion to be cancelled",
        Duration::from_secs(10),
        || {
            dlm.locks(ls.name()).unwrap().iter().all(|l| {
                l.queue.as_deref() == Some("granted") && l.granted.as_deref() == Some("PR")
            })
        },
    );
    assert_eq!(lock.mode(), LockMode::Pr);
    shared.unlock().unwrap();
    // The lock still works, and an async unlock dropped unpolled finishes
    // by itself.
    let c = lock
        .convert(LockMode::Ex, LockFlags::empty(), None)
        .unwrap();
    assert_eq!(c.status, Status::Granted);
    drop(lock.unlock_async());
    common::wait_for("the unlock to finish", Duration::from_secs(10), || {
        lock_count(&dlm, "asyncconvdrop") == 0
    });
}

/// Threads on two handles (one with an event loop, one without) lock
/// (waiting, or as futures that are awaited or dropped), convert, time
/// out, try NOQUEUE, unlock and drop at random on a few resources (see
/// `dlm_conformance::traffic`). Every call returns (a watchdog fails the
/// test if one hangs), EX and PR exclusion holds at every grant, and no
/// lock is left.
#[test]
fn mixed_threads_on_two_handles_keep_exclusion_and_leave_no_lock() {
    let _ = env_logger::builder().is_test(true).try_init();
    let d = Daemon::start();
    let (dlm, plain) = space(&d, "mixed");
    let looped = dlm.open_lockspace(plain.name()).unwrap();
    looped.start_event_loop().unwrap();
    let names = ["m0", "m1", "m2", "m3"].map(res);
    let load = traffic::Traffic {
        threads: 6,
        ops: 400,
        deadline: Duration::from_secs(30),
    };
    if let Err(e) = traffic::mixed(&plain, &looped, &names, load) {
        let locks = dlm.locks(&LockspaceName::new("mixed").unwrap());
        panic!("{e}; the daemon's locks: {locks:#?}");
    }
    drop((plain, looped));
    assert_eq!(lock_count(&dlm, "mixed"), 0, "every lock was released");
}

/// Hold EX on "r" from a second handle, start `wait` (a call waiting for
/// "r" on the first handle, prepared on this thread) on another thread,
/// kill the daemon, and return the error the call ends with. A hang shows
/// as a timeout (the bound is not a speed target).
fn error_when_the_daemon_dies<W>(name: &str, prepare: impl FnOnce(&Lockspace) -> W) -> dlm::Error
where
    W: FnOnce() -> dlm::Result<()> + Send + 'static,
{
    let mut d = Daemon::start();
    let (dlm, ls) = space(&d, name);
    let other = dlm.open_lockspace(ls.name()).unwrap();
    let _held = other
        .lock(LockRequest::new(res("r"), LockMode::Ex))
        .unwrap()
        .granted()
        .unwrap();
    let wait = prepare(&ls);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(wait());
    });
    std::thread::sleep(Duration::from_millis(100));
    d.proc.0.kill().unwrap();
    d.proc.0.wait().unwrap();
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the waiting call returned")
        .expect_err("no grant from a dead daemon")
}

/// When the daemon dies, a call waiting on a handle whose event loop
/// delivers its callbacks returns an error instead of waiting forever for
/// a loop that has stopped.
#[test]
fn a_waiting_call_returns_an_error_when_the_daemon_dies_under_an_event_loop() {
    let err = error_when_the_daemon_dies("dies", |ls| {
        ls.start_event_loop().unwrap();
        let ls = ls.clone();
        move || ls.lock(LockRequest::new(res("r"), LockMode::Ex)).map(drop)
    });
    assert_eq!(err.errno(), dlm::Errno::EPIPE, "{err}");
}

/// The same for a future: when the daemon dies, an unresolved lock future
/// resolves to the error instead of staying pending forever.
#[test]
fn a_lock_future_resolves_to_an_error_when_the_daemon_dies() {
    let err = error_when_the_daemon_dies("dies-async", |ls| {
        let fut = ls.lock_async(LockRequest::new(res("r"), LockMode::Ex));
        move || block_on(fut).map(drop)
    });
    assert_eq!(err.errno(), dlm::Errno::EPIPE, "{err}");
}

#[test]
fn lock_queries_take_a_limit_and_page_by_lock_id() {
    use dlm::query::QueryOptions;
    let d = Daemon::start();
    let (dlm, ls) = space(&d, "paging");
    let held: Vec<_> = (0..7)
        .map(|i| {
            ls.lock(LockRequest::new(res(&format!("p{i}")), LockMode::Pr))
                .unwrap()
                .granted()
                .expect("granted")
        })
        .collect();
    let name = LockspaceName::new("paging").unwrap();
    let all: Vec<u32> = dlm.locks(&name).unwrap().iter().map(|l| l.lkid).collect();
    assert_eq!(all.len(), held.len());
    let (mut seen, mut after) = (Vec::new(), 0);
    loop {
        let p = dlm
            .locks_with(&name, &QueryOptions::limit(3).after(after))
            .unwrap();
        assert!(p.locks.len() <= 3);
        assert_eq!(p.more, all.len() - seen.len() - p.locks.len());
        seen.extend(p.locks.iter().map(|l| l.lkid));
        match p.locks.last() {
            Some(l) if p.truncated => after = l.lkid,
            _ => break,
        }
    }
    assert_eq!(seen, all, "every lock once, by lock id");
    let whole = dlm.locks_with(&name, &QueryOptions::default()).unwrap();
    assert_eq!((whole.locks.len(), whole.truncated), (all.len(), false));
    let e = dlm
        .locks_with(
            &LockspaceName::new("none").unwrap(),
            &QueryOptions::limit(1),
        )
        .unwrap_err();
    assert_eq!(e.errno(), dlm::Errno::ENOENT);
    drop(held);
}

/// A lock's completion closure is still running when another thread
/// dispatching the same lockspace takes in the lock's next completion (here
/// the unlock the closure itself asked for): that completion is delivered
/// to the closure after it returns, in order, not dropped.
#[test]
fn a_completion_taken_in_while_its_closure_runs_is_delivered_after_it() {
    let d = Daemon::start();
    let (_dlm, ls) = space(&d, "deferred");
    let (tx, rx) = mpsc::channel();
    let me = ls.clone();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    ls.request(LockRequest::new(res("a"), LockMode::Ex), move |id, c| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        let _ = tx.send(c.status);
        if n == 0 {
            me.unlock(id, LockFlags::empty(), None).unwrap();
            // Long enough for the other thread to read the unlock's
            // completion while this closure has not returned.
            std::thread::sleep(Duration::from_millis(300));
        }
    })
    .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let ls = ls.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    ls.dispatch().unwrap();
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        })
        .collect();
    let first = rx.recv_timeout(Duration::from_secs(10));
    let second = rx.recv_timeout(Duration::from_secs(10));
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(first, Ok(Status::Granted), "dlmd's log:\n{}", d.log_text());
    assert_eq!(
        second,
        Ok(Status::Unlocked),
        "dlmd's log:\n{}",
        d.log_text()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(lock_count(&_dlm, "deferred"), 0);
}
