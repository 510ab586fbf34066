//! The client's transport seam against real `dlmd` processes: one pollable
//! fd per lockspace (with `poll(2)` + `dispatch()`, and in a caller's own
//! `mio::Poll`), a stopped daemon (SIGSTOP) that holds up only the calls
//! waiting for it, and what a lock's slot says it holds.
#![forbid(unsafe_code)]

mod common;

use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Daemon;
use dlm::{
    LockFlags, LockMode, LockRequest, Lockspace, LockspaceFlags, LockspaceName, Outcome,
    ResourceName, Status, ValueBlock,
};

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

/// Whether `ls`'s one fd is readable within `ms` milliseconds (`poll(2)`).
fn readable(ls: &Lockspace, ms: i32) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(ls, PollFlags::IN)];
    let ts = Timespec {
        tv_sec: i64::from(ms / 1000),
        tv_nsec: i64::from(ms % 1000) * 1_000_000,
    };
    poll(&mut fds, Some(&ts)).unwrap() > 0
}

/// Poll `ls`'s fd and dispatch until `done`, or panic after 10 s.
fn poll_until(ls: &Lockspace, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: nothing came through poll(2)"
        );
        if readable(ls, 100) {
            ls.dispatch().unwrap();
        }
    }
}

#[test]
fn a_lockspace_has_one_pollable_fd_that_works_with_poll_and_dispatch() {
    let d = Daemon::start();
    let (dlm, ls) = space(&d, "onefd");
    // One fd, the same through AsFd and AsRawFd.
    assert_eq!(ls.as_fd().as_raw_fd(), ls.as_raw_fd());
    assert!(!readable(&ls, 0), "nothing to dispatch yet");

    // A completion that comes back with the daemon's answer to the write
    // (read along with it, kept in user space) makes the fd readable.
    let got = Arc::new(AtomicUsize::new(0));
    let g = got.clone();
    let id = ls
        .request(LockRequest::new(res("a"), LockMode::Ex), move |_, c| {
            if c.status == Status::Granted {
                g.fetch_add(1, Ordering::SeqCst);
            } else {
                assert_eq!(c.status, Status::Unlocked);
            }
        })
        .unwrap();
    poll_until(&ls, "a grant sent with the answer", || {
        got.load(Ordering::SeqCst) == 1
    });
    assert!(!readable(&ls, 0), "dispatch() took everything");

    // A completion pushed later (another handle lets go) arrives on the
    // socket: readable again.
    let other = dlm.open_lockspace(ls.name()).unwrap();
    let g = got.clone();
    other
        .request(LockRequest::new(res("a"), LockMode::Ex), move |_, c| {
            assert_eq!(c.status, Status::Granted);
            g.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    assert!(
        !readable(&other, 200),
        "queued behind our lock: nothing yet"
    );
    ls.unlock(id, LockFlags::empty(), None).unwrap();
    poll_until(&ls, "our unlock's completion", || {
        ls.held().is_empty() && !readable(&ls, 0)
    });
    poll_until(&other, "a grant pushed later", || {
        got.load(Ordering::SeqCst) == 2
    });
    assert!(!readable(&other, 0));
}

#[test]
fn the_one_fd_wakes_a_callers_mio_poll_for_records_another_thread_read() {
    let d = Daemon::start();
    let (dlm, ls) = space(&d, "miostash");
    let holder = dlm.open_lockspace(ls.name()).unwrap();
    let Outcome::Granted(held) = holder
        .lock(LockRequest::new(res("contended"), LockMode::Ex))
        .unwrap()
    else {
        panic!("not granted")
    };
    let mut poll = mio::Poll::new().unwrap();
    let mut src = ls.clone();
    poll.registry()
        .register(&mut src, mio::Token(3), mio::Interest::READABLE)
        .unwrap();
    let got = Arc::new(AtomicUsize::new(0));
    let g = got.clone();
    ls.request(
        LockRequest::new(res("contended"), LockMode::Pr),
        move |_, c| {
            assert_eq!(c.status, Status::Granted);
            g.fetch_add(1, Ordering::SeqCst);
        },
    )
    .unwrap();
    // Another thread makes round trips on the same connection all along:
    // the grant, pushed when `holder` lets go, is often read by one of
    // them along with its answer.
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let (ls, stop) = (ls.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let r = LockRequest::new(res("busy"), LockMode::Ex);
                if let Outcome::Granted(l) = ls.lock(r).unwrap() {
                    l.unlock().unwrap();
                }
                n += 1;
            }
            n
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    held.unlock().unwrap();
    let mut events = mio::Events::with_capacity(4);
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the grant never woke mio");
        poll.poll(&mut events, Some(Duration::from_millis(500)))
            .unwrap();
        for ev in events.iter() {
            assert_eq!(ev.token(), mio::Token(3));
            ls.dispatch().unwrap();
        }
    }
    stop.store(true, Ordering::SeqCst);
    let rounds = busy.join().unwrap();
    assert!(rounds > 0);
}

/// Operations done on `ls` by a thread that counts them, until `stop`.
fn worker(
    ls: &Lockspace,
    name: &str,
    stop: &Arc<AtomicBool>,
) -> (Arc<AtomicUsize>, std::thread::JoinHandle<()>) {
    let count = Arc::new(AtomicUsize::new(0));
    let (ls, name, stop, c) = (ls.clone(), name.to_string(), stop.clone(), count.clone());
    let h = std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let r = LockRequest::new(res(&name), LockMode::Ex);
            match ls.lock(r).unwrap() {
                Outcome::Granted(l) => l.unlock().unwrap(),
                Outcome::NotGranted(c) => panic!("{name}: {c:?}"),
            }
            c.fetch_add(1, Ordering::SeqCst);
        }
    });
    (count, h)
}

fn signal(d: &Daemon, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(d.proc.0.id() as i32).unwrap();
    rustix::process::kill_process(pid, sig).unwrap();
}

/// SIGCONT on drop: a failing test must not leave a stopped daemon behind
/// its kill.
struct Continue<'a>(&'a Daemon);

impl Drop for Continue<'_> {
    fn drop(&mut self) {
        signal(self.0, rustix::process::Signal::CONT);
    }
}

#[test]
fn a_stopped_daemon_holds_up_only_the_calls_that_wait_for_it() {
    let stopped = Daemon::start();
    let running = Daemon::start();
    let (_d1, ls1) = space(&stopped, "stopped");
    let (_d2, ls2) = space(&running, "running");
    let stop = Arc::new(AtomicBool::new(false));
    // Three threads on the lockspace of the daemon to be stopped, each on
    // a resource of its own, and one on another daemon's lockspace.
    let on_stopped: Vec<_> = (0..3)
        .map(|i| worker(&ls1, &format!("r{i}"), &stop))
        .collect();
    let (on_running, h_running) = worker(&ls2, "other", &stop);
    let deadline = Instant::now() + Duration::from_secs(10);
    while on_stopped.iter().any(|(c, _)| c.load(Ordering::SeqCst) < 5) {
        assert!(Instant::now() < deadline, "the workers never got going");
        std::thread::sleep(Duration::from_millis(5));
    }

    signal(&stopped, rustix::process::Signal::STOP);
    let cont = Continue(&stopped);
    // Whatever was in flight finishes; then nothing moves on ls1.
    std::thread::sleep(Duration::from_millis(300));
    let frozen: Vec<usize> = on_stopped
        .iter()
        .map(|(c, _)| c.load(Ordering::SeqCst))
        .collect();
    let before = on_running.load(Ordering::SeqCst);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(700));
    // The thread on the other daemon's lockspace was never blocked.
    let moved = on_running.load(Ordering::SeqCst) - before;
    assert!(
        moved >= 3,
        "the other daemon's lockspace made {moved} lock+unlock pairs in 0.7 s"
    );
    // Calls that do not wait for the daemon return at once, on the same
    // lockspace, while three of its threads wait for answers.
    let t = Instant::now();
    let held = ls1.held();
    assert!(held.len() <= 3, "{held:?}");
    assert_eq!(ls1.dispatch().unwrap(), 0);
    assert!(!readable(&ls1, 0));
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "held()/dispatch() waited {:?}",
        t.elapsed()
    );
    // A fourth thread on the stopped daemon's lockspace waits too (and
    // its timeout, which counts from the daemon's answer, does not end
    // the wait).
    let fourth = {
        let ls1 = ls1.clone();
        std::thread::spawn(move || {
            let r =
                LockRequest::new(res("fourth"), LockMode::Ex).timeout(Duration::from_millis(50));
            let t = Instant::now();
            let out = ls1.lock(r).unwrap();
            (t.elapsed(), out.granted().is_some())
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !fourth.is_finished(),
        "a call on a stopped daemon's lockspace returned"
    );
    let now: Vec<usize> = on_stopped
        .iter()
        .map(|(c, _)| c.load(Ordering::SeqCst))
        .collect();
    assert_eq!(
        frozen,
        now,
        "ls1's threads went on with the daemon stopped ({:?})",
        t0.elapsed()
    );

    drop(cont); // SIGCONT
    let (_waited, granted) = fourth.join().unwrap();
    assert!(granted, "granted once the daemon runs again");
    // Every waiting thread completes, and goes on.
    let deadline = Instant::now() + Duration::from_secs(10);
    while on_stopped
        .iter()
        .zip(&frozen)
        .any(|((c, _), f)| c.load(Ordering::SeqCst) < f + 5)
    {
        assert!(Instant::now() < deadline, "ls1's threads did not resume");
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::SeqCst);
    for (_, h) in on_stopped {
        h.join().unwrap();
    }
    h_running.join().unwrap();
    assert!(ls1.held().is_empty());
}

#[test]
fn slots_say_what_they_hold_after_lock_convert_and_value_block_write() {
    let d = Daemon::start();
    let (dlm, ls) = space(&d, "held");
    let name = *ls.name();
    assert!(ls.held().is_empty());
    let Outcome::Granted(mut lock) = ls
        .lock(LockRequest::new(res("disk0"), LockMode::Ex).value_block())
        .unwrap()
    else {
        panic!("not granted")
    };
    let info = lock.info().unwrap();
    assert_eq!(info.id, lock.id());
    assert_eq!(info.lockspace, name);
    assert_eq!(info.resource, res("disk0"));
    assert_eq!(info.granted, Some(LockMode::Ex));
    assert_eq!(info.requested, None);
    assert!(info.flags.contains(LockFlags::VALBLK));
    assert_eq!(info.value_block, Some(ValueBlock::zeroed()));

    // Write the value block on the way down to PR.
    let mut bytes = [0u8; dlm::USER_LVB_LEN];
    bytes[..5].copy_from_slice(b"hello");
    let written = ValueBlock::new(bytes);
    let c = lock
        .convert(LockMode::Pr, LockFlags::VALBLK, Some(&written))
        .unwrap();
    assert_eq!(c.status, Status::Granted);
    let info = lock.info().unwrap();
    assert_eq!(info.granted, Some(LockMode::Pr));
    assert_eq!(info.requested, None);
    assert_eq!(info.value_block, Some(written));

    // A conversion that waits: granted PR, requested EX, seen while queued.
    let other = dlm.open_lockspace(&name).unwrap();
    let Outcome::Granted(blocker) = other
        .lock(LockRequest::new(res("disk0"), LockMode::Pr).value_block())
        .unwrap()
    else {
        panic!("not granted")
    };
    assert_eq!(blocker.value_block(), Some(&written), "the value travelled");
    let done = Arc::new(AtomicUsize::new(0));
    let d2 = done.clone();
    let queued = ls
        .request(LockRequest::new(res("disk1"), LockMode::Nl), move |_, _| {
            d2.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    ls.convert(lock.id(), LockMode::Ex, LockFlags::empty(), None)
        .unwrap();
    let info = ls.held_lock(lock.id()).unwrap();
    assert_eq!(
        (info.granted, info.requested),
        (Some(LockMode::Pr), Some(LockMode::Ex))
    );
    let all = ls.held();
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all
        .iter()
        .any(|h| h.id == queued && h.resource == res("disk1")));
    blocker.unlock().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ls.held_lock(lock.id()).unwrap().requested.is_some() {
        assert!(Instant::now() < deadline, "the conversion never completed");
        ls.dispatch().unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(ls.held_lock(lock.id()).unwrap().granted, Some(LockMode::Ex));
    ls.unlock(queued, LockFlags::empty(), None).unwrap();
    let id = lock.id();
    let _ = lock.into_id();
    ls.unlock(id, LockFlags::empty(), None).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ls.held().is_empty() {
        assert!(Instant::now() < deadline, "{:?}", ls.held());
        ls.dispatch().unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(ls.held_lock(id).is_none());
}

/// Counts what a lock's sink receives.
#[derive(Default)]
struct CountingSink {
    granted: AtomicUsize,
    unlocked: AtomicUsize,
    blocking: AtomicUsize,
}

impl dlm::Sink for CountingSink {
    fn completion(&self, _: dlm::LockId, c: &dlm::Completion) {
        match c.status {
            Status::Granted => self.granted.fetch_add(1, Ordering::SeqCst),
            Status::Unlocked => self.unlocked.fetch_add(1, Ordering::SeqCst),
            other => panic!("unexpected completion {other:?}"),
        };
    }
    fn blocking(&self, _: dlm::LockId, mode: LockMode) {
        assert_eq!(mode, LockMode::Ex);
        self.blocking.fetch_add(1, Ordering::SeqCst);
    }
    fn lost(&self, _: dlm::LockId, reason: dlm::LostReason) {
        panic!("lost: {reason}");
    }
    fn wants_blocking(&self) -> bool {
        true
    }
}

#[test]
fn a_sink_receives_a_locks_completions_and_blocking_callbacks() {
    let d = Daemon::start();
    let (dlm, ls) = space(&d, "sink");
    let sink = Arc::new(CountingSink::default());
    let id = ls
        .request_with_sink(LockRequest::new(res("s"), LockMode::Ex), sink.clone())
        .unwrap();
    poll_until(&ls, "the grant to the sink", || {
        sink.granted.load(Ordering::SeqCst) == 1
    });
    let other = dlm.open_lockspace(ls.name()).unwrap();
    other
        .request(LockRequest::new(res("s"), LockMode::Ex), |_, _| {})
        .unwrap();
    poll_until(&ls, "the blocking callback to the sink", || {
        sink.blocking.load(Ordering::SeqCst) == 1
    });
    ls.unlock(id, LockFlags::empty(), None).unwrap();
    poll_until(&ls, "the unlock to the sink", || {
        sink.unlocked.load(Ordering::SeqCst) == 1
    });
    assert!(ls.held().is_empty());
}

/// An unlock whose end another thread takes in (and runs the callbacks
/// of) before the unlock's own write has returned is still a success: the
/// operation was sent. libdlm's threaded `dlm_ls_unlock_wait`, with its AST
/// thread polling the one fd, met `ENOENT` here.
#[test]
fn an_unlock_whose_end_another_thread_dispatches_first_succeeds() {
    let d = Daemon::start();
    let (_dlm, ls) = space(&d, "unlockrace");
    let stop = Arc::new(AtomicBool::new(false));
    let ends = Arc::new(AtomicUsize::new(0));
    let dispatcher = {
        let (ls, stop) = (ls.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if readable(&ls, 20) {
                    ls.dispatch().unwrap();
                }
            }
        })
    };
    let rounds = 300;
    let mut refused = Vec::new();
    for i in 0..rounds {
        let granted = Arc::new(AtomicBool::new(false));
        let (g, e) = (granted.clone(), ends.clone());
        let id = ls
            .request(
                LockRequest::new(res(&format!("r{i}")), LockMode::Ex),
                move |_, c| match c.status {
                    Status::Granted => g.store(true, Ordering::SeqCst),
                    _ => {
                        e.fetch_add(1, Ordering::SeqCst);
                    }
                },
            )
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !granted.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "round {i}: no grant");
            std::thread::sleep(Duration::from_micros(50));
        }
        if let Err(e) = ls.unlock(id, LockFlags::empty(), None) {
            refused.push((i, e.to_string()));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while ends.load(Ordering::SeqCst) < rounds - refused.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::SeqCst);
    dispatcher.join().unwrap();
    assert!(refused.is_empty(), "unlocks refused: {refused:?}");
    assert_eq!(
        ends.load(Ordering::SeqCst),
        rounds,
        "every unlock completed"
    );
    assert!(ls.held().is_empty());
}

/// A cancel of a granted lock with nothing in progress has nothing to
/// cancel, and no completion comes for it (as on the kernel). A later
/// conversion that waits must still be cancellable: the first cancel must
/// not leave the lock marked as having a cancel on its way.
#[test]
fn a_cancel_of_a_granted_lock_leaves_a_later_conversion_cancellable() {
    let d = Daemon::start();
    let (dlm, ls) = space(&d, "cancel2");
    let other = dlm.open_lockspace(ls.name()).unwrap();
    let holder = other
        .request(LockRequest::new(res("c"), LockMode::Ex), |_, _| {})
        .unwrap();
    poll_until(&other, "the holder's grant", || other.held().len() == 1);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let id = ls
        .request(LockRequest::new(res("c"), LockMode::Nl), move |_, c| {
            s.lock().unwrap().push(c.status);
        })
        .unwrap();
    poll_until(&ls, "the NL grant", || seen.lock().unwrap().len() == 1);
    // Nothing in progress: nothing to cancel, and nothing comes back.
    ls.cancel(id).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    ls.dispatch().unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![Status::Granted]);
    // NL -> EX waits behind the holder; its cancel must reach the daemon.
    ls.convert(id, LockMode::Ex, LockFlags::empty(), None)
        .unwrap();
    ls.cancel(id).unwrap();
    poll_until(&ls, "the conversion's cancel", || {
        seen.lock().unwrap().len() == 2
    });
    assert_eq!(
        *seen.lock().unwrap(),
        vec![Status::Granted, Status::Cancelled]
    );
    other.unlock(holder, LockFlags::empty(), None).unwrap();
}

/// libdlm's loop is `poll()` then `dlm_dispatch()`: the one fd must stay
/// readable, poll after poll, until dispatch has taken the records,
/// whether they wait in the stash (read along with an answer) or in the
/// socket (pushed later), and not be readable after.
#[test]
fn the_one_fd_stays_readable_until_dispatched() {
    let d = Daemon::start();
    let (dlm, ls) = space(&d, "level");
    let got = Arc::new(AtomicUsize::new(0));
    let g = got.clone();
    let id = ls
        .request(LockRequest::new(res("l"), LockMode::Ex), move |_, _| {
            g.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    assert!(readable(&ls, 5000), "the grant makes the fd readable");
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(20));
        assert!(readable(&ls, 0), "still readable before dispatch");
    }
    assert_eq!(got.load(Ordering::SeqCst), 0);
    ls.dispatch().unwrap();
    assert_eq!(got.load(Ordering::SeqCst), 1);
    assert!(!readable(&ls, 50), "nothing left after dispatch");
    // A blocking callback pushed later, on the socket.
    let other = dlm.open_lockspace(ls.name()).unwrap();
    let blocked = Arc::new(AtomicUsize::new(0));
    let b = blocked.clone();
    let g = got.clone();
    let id2 = ls
        .request(
            LockRequest::new(res("m"), LockMode::Ex).on_blocking(move |_, _| {
                b.fetch_add(1, Ordering::SeqCst);
            }),
            move |_, _| {
                g.fetch_add(1, Ordering::SeqCst);
            },
        )
        .unwrap();
    poll_until(&ls, "the second grant", || got.load(Ordering::SeqCst) == 2);
    other
        .request(LockRequest::new(res("m"), LockMode::Ex), |_, _| {})
        .unwrap();
    assert!(
        readable(&ls, 5000),
        "the blocking callback makes it readable"
    );
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(20));
        assert!(readable(&ls, 0), "still readable before dispatch");
    }
    assert_eq!(blocked.load(Ordering::SeqCst), 0);
    ls.dispatch().unwrap();
    assert_eq!(blocked.load(Ordering::SeqCst), 1);
    assert!(!readable(&ls, 50), "nothing left after dispatch");
    ls.unlock(id, LockFlags::empty(), None).unwrap();
    ls.unlock(id2, LockFlags::empty(), None).unwrap();
}
