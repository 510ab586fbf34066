//! The safe client API on the real kernel DLM, run inside the QEMU guest
//! by `ci/kernel.sh` after `dlm-guest-smoke` (the guest's /init has
//! started `dlm-controld --single-node`). Only the client API of `dlm` is used, on
//! `Backend::Kernel`; it checks, step by step:
//!
//! 1. the backend and the device version;
//! 2. opening a lockspace that does not exist is
//!    `Error::Lockspace { errno: ENOENT }`;
//! 3. create a lockspace; two `Lockspace` handles (two fds, two owners);
//! 4. EX lock and unlock;
//! 5. a NOQUEUE conflict is `Outcome::NotGranted` with `WouldBlock`;
//! 6. a blocking callback on owner A's event-loop thread while owner B
//!    waits, and B's grant after A unlocks;
//!    A waiting call made by a callback on A's event-loop thread returns
//!    (the call reads the device itself);
//! 7. a value block written by A's unlock from EX is read by B's grant;
//! 8. `LockRequest::timeout` against a held EX lock is `TimedOut`, and
//!    the resource is usable afterwards;
//! 9. four threads share a third handle (no event loop) and take turns on
//!    one EX lock, blocking (one reads the device for all): every request
//!    is granted, and the lock is never held twice;
//!    Then threads on that handle and on A (event loop) make random
//!    traffic (`dlm_conformance::traffic`, as the dlmd tests do):
//!    timeouts, NOQUEUE, futures awaited or dropped unresolved,
//!    conversions, unlocks and drops; EX and PR exclusion hold at every
//!    grant and every call returns;
//!    Then one pollable fd per handle (`AsFd`): a grant comes through
//!    `poll(2)` + `dispatch()`, the fd is not readable once dispatched,
//!    and a grant pushed later wakes a caller's own `mio::Poll`;
//! 10. `release_lockspace` (EBUSY-free once the handles are gone), and the
//!     lockspace is gone.
//! 11. Recovery callbacks from `dlm-controld --single-node`: a lockspace
//!     opened with callbacks gets `recover_done` at join (generation 1)
//!     and `recovery_status` Ok; with an EX lock held, `dlm-controld
//!     recover` stops and restarts it: `recover_prep`, then
//!     `recover_done` with generation 2, in that order, on the recovery
//!     thread; the lock is still held (a NOQUEUE request of another
//!     handle is refused) and new requests are granted. The command's
//!     errors: an unknown lockspace, a bad name, a caller that is not
//!     root (refused by the CLI, and by the controller from its
//!     `SO_PEERCRED`). A handle without callbacks says `EOPNOTSUPP`.
//!
//! `dlm-guest-client recovery` runs step 11 alone. Exits 0 when every
//! check passes, 1 with a message otherwise.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dlm::ValueBlock;
use dlm::{Backend, Dlm, LockRequest, Lockspace, Outcome};
use dlm::{Errno, Error, LockFlags, LockMode, LockspaceFlags, LockspaceName, ResourceName, Status};
use dlm_conformance::traffic;

type R<T> = Result<T, String>;

fn check(cond: bool, what: impl FnOnce() -> String) -> R<()> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

fn ctx<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn res(name: &str) -> R<ResourceName> {
    ResourceName::new(name).map_err(|e| format!("resource name {name}: {e}"))
}

/// Lock and insist on a grant.
fn granted(ls: &Lockspace, req: LockRequest, what: &str) -> R<dlm::Lock> {
    match ls.lock(req).map_err(ctx(what))? {
        Outcome::Granted(l) => Ok(l),
        Outcome::NotGranted(c) => Err(format!("{what}: not granted: {c:?}")),
    }
}

fn run() -> R<()> {
    let dlm = Dlm::builder()
        .backend(Backend::Kernel)
        .open()
        .map_err(ctx("open the kernel backend"))?;
    check(dlm.backend() == Backend::Kernel, || {
        format!("backend is {}", dlm.backend())
    })?;
    let v = dlm.version().map_err(ctx("version"))?;
    check(v.0 == 6 && v.1 == 0, || format!("device version {v:?}"))?;
    println!(
        "client: kernel backend, device version {}.{}.{}",
        v.0, v.1, v.2
    );

    // 2. Typed errors: a missing lockspace.
    let missing = LockspaceName::new("no-such-ls").map_err(ctx("name"))?;
    match dlm.open_lockspace(&missing) {
        Err(Error::Lockspace { op, errno, .. }) if errno == Errno::ENOENT => {
            println!("client: opening a missing lockspace: Error::Lockspace {{ op: {op:?}, errno: ENOENT }}");
        }
        Err(e) => {
            return Err(format!(
                "opening a missing lockspace: expected Error::Lockspace ENOENT, got {e:?}"
            ))
        }
        Ok(_) => return Err("opening a missing lockspace succeeded".into()),
    }

    // 3. Create; two owners.
    let name = LockspaceName::new("client").map_err(ctx("name"))?;
    let a = dlm
        .create_lockspace(&name, LockspaceFlags::empty(), 0o600)
        .map_err(ctx("create lockspace"))?;
    let b = dlm
        .open_lockspace(&name)
        .map_err(ctx("open a second handle"))?;
    check(
        a.backend() == Backend::Kernel && a.minor() == b.minor(),
        || format!("handles: a minor {} b minor {}", a.minor(), b.minor()),
    )?;
    println!(
        "client: created lockspace client (minor {}), two handles",
        a.minor()
    );

    // 4. EX lock, unlock.
    let l = granted(&a, LockRequest::new(res("r-ex")?, LockMode::Ex), "lock EX")?;
    check(l.mode() == LockMode::Ex && l.id().lkid() != 0, || {
        format!("EX lock: mode {:?}, lkid {}", l.mode(), l.id().lkid())
    })?;
    let lkid = l.id().lkid();
    l.unlock().map_err(ctx("unlock EX"))?;
    println!("client: EX granted (lkid {lkid:#x}) and unlocked");

    // 5. NOQUEUE conflict.
    let hold = granted(
        &a,
        LockRequest::new(res("r-noq")?, LockMode::Ex),
        "lock EX (noqueue)",
    )?;
    match b
        .lock(LockRequest::new(res("r-noq")?, LockMode::Pr).flags(LockFlags::NOQUEUE))
        .map_err(ctx("NOQUEUE PR"))?
    {
        Outcome::NotGranted(c) if c.status == Status::WouldBlock => {}
        Outcome::NotGranted(c) => return Err(format!("NOQUEUE PR against EX: {c:?}")),
        Outcome::Granted(_) => return Err("NOQUEUE PR against EX was granted".into()),
    }
    hold.unlock().map_err(ctx("unlock (noqueue)"))?;
    let l = granted(
        &b,
        LockRequest::new(res("r-noq")?, LockMode::Pr).flags(LockFlags::NOQUEUE),
        "NOQUEUE PR once free",
    )?;
    l.unlock().map_err(ctx("unlock NOQUEUE PR"))?;
    println!("client: NOQUEUE conflict -> NotGranted(WouldBlock); granted once free");

    // 6. Blocking callback on A's event-loop thread.
    a.start_event_loop().map_err(ctx("start_event_loop"))?;
    let (tx, rx) = mpsc::channel();
    let main_thread = std::thread::current().id();
    let held = granted(
        &a,
        LockRequest::new(res("r-bast")?, LockMode::Ex).on_blocking(move |id, mode| {
            let _ = tx.send((id, mode, std::thread::current().id()));
        }),
        "lock EX with on_blocking",
    )?;
    let held_id = held.id();
    let b2 = b.clone();
    let waiter = std::thread::spawn(move || -> R<(LockMode, Duration)> {
        let t = Instant::now();
        let l = granted(
            &b2,
            LockRequest::new(res("r-bast")?, LockMode::Pr),
            "B waits for PR",
        )?;
        let mode = l.mode();
        l.unlock().map_err(ctx("B unlock PR"))?;
        Ok((mode, t.elapsed()))
    });
    let (id, mode, cb_thread) = rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|e| format!("no blocking callback within 10 s: {e}"))?;
    check(id == held_id && mode == LockMode::Pr, || {
        format!("blocking callback for {id:?} mode {mode:?}, expected {held_id:?} PR")
    })?;
    check(cb_thread != main_thread, || {
        "the blocking callback ran on the main thread, not the event loop".into()
    })?;
    check(!waiter.is_finished(), || {
        "B finished before A unlocked".into()
    })?;
    held.unlock()
        .map_err(ctx("A unlock after the blocking callback"))?;
    let (bmode, waited) = waiter
        .join()
        .map_err(|_| "B's thread panicked".to_string())??;
    check(bmode == LockMode::Pr, || format!("B granted {bmode:?}"))?;
    println!("client: blocking callback (PR wanted) on the event-loop thread; B granted PR after {waited:?}");

    // 6b. A waiting call made by a callback on A's event-loop thread
    // reads the device itself (the loop is busy running the callback).
    let (tx, rx) = mpsc::channel();
    let a2 = a.clone();
    let nested = res("r-nested")?;
    a.request(
        LockRequest::new(res("r-outer")?, LockMode::Pr),
        move |id, c| match c.status {
            Status::Granted => {
                let got = a2
                    .lock(LockRequest::new(nested, LockMode::Ex))
                    .map(|o| o.granted().map(|l| l.unlock().is_ok()));
                let _ = tx.send((id, Some(got.ok().flatten())));
            }
            _ => {
                let _ = tx.send((id, None));
            }
        },
    )
    .map_err(ctx("request with a nested waiting call"))?;
    let (outer, got) = rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|e| format!("the nested waiting call did not return within 10 s: {e}"))?;
    check(got == Some(Some(true)), || {
        format!("nested waiting call: {got:?}")
    })?;
    a.unlock(outer, LockFlags::empty(), None)
        .map_err(ctx("unlock the outer lock"))?;
    let (_, after) = rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|e| format!("no unlock completion for the outer lock: {e}"))?;
    check(after.is_none(), || format!("outer unlock: {after:?}"))?;
    println!("client: a waiting call inside an event-loop callback was granted and unlocked");

    // 7. Value block round trip: A writes it unlocking from EX, B reads
    // it. The kernel frees a resource's value block with the resource
    // when its last lock goes, so B keeps an NL lock on it throughout and
    // reads the block by converting NL -> PR.
    let mut keep = granted(
        &b,
        LockRequest::new(res("r-lvb")?, LockMode::Nl).value_block(),
        "lock NL VALBLK",
    )?;
    let lvb = ValueBlock::from_prefix(b"dlm-rs value block round trip!!");
    let l = granted(
        &a,
        LockRequest::new(res("r-lvb")?, LockMode::Ex).value_block(),
        "lock EX VALBLK",
    )?;
    check(l.value_block().is_some_and(|v| v.is_zero()), || {
        format!("a new resource's value block: {:?}", l.value_block())
    })?;
    l.unlock_with(LockFlags::VALBLK, Some(&lvb))
        .map_err(ctx("unlock EX with VALBLK"))?;
    let c = keep
        .convert(LockMode::Pr, LockFlags::VALBLK, None)
        .map_err(ctx("convert NL -> PR VALBLK"))?;
    check(
        c.status == Status::Granted && keep.mode() == LockMode::Pr,
        || format!("convert NL -> PR: {c:?}"),
    )?;
    check(
        c.value_block == Some(lvb) && keep.value_block() == Some(&lvb),
        || format!("value block read back: {:?}, wrote {lvb:?}", c.value_block),
    )?;
    // And a new PR lock on the resource reads it too.
    let l = granted(
        &a,
        LockRequest::new(res("r-lvb")?, LockMode::Pr).value_block(),
        "lock PR VALBLK",
    )?;
    check(l.value_block() == Some(&lvb), || {
        format!("second reader's value block: {:?}", l.value_block())
    })?;
    l.unlock().map_err(ctx("unlock PR VALBLK"))?;
    keep.unlock().map_err(ctx("unlock the NL/PR keeper"))?;
    println!(
        "client: value block written by an EX unlock, read by NL->PR convert and a new PR grant"
    );

    // 8. Timeout.
    let held = granted(
        &a,
        LockRequest::new(res("r-tmo")?, LockMode::Ex),
        "lock EX (timeout)",
    )?;
    let t = Instant::now();
    let out = b
        .lock(LockRequest::new(res("r-tmo")?, LockMode::Ex).timeout(Duration::from_millis(300)))
        .map_err(ctx("lock with timeout"))?;
    let took = t.elapsed();
    match out {
        Outcome::NotGranted(c) if c.status == Status::TimedOut => {}
        Outcome::NotGranted(c) => return Err(format!("timed lock: {c:?}, expected TimedOut")),
        Outcome::Granted(_) => return Err("timed lock granted while EX is held".into()),
    }
    check(
        took >= Duration::from_millis(300) && took < Duration::from_secs(10),
        || format!("timeout of 300 ms took {took:?}"),
    )?;
    held.unlock().map_err(ctx("unlock (timeout)"))?;
    let l = granted(
        &b,
        LockRequest::new(res("r-tmo")?, LockMode::Ex),
        "lock EX after timeout",
    )?;
    l.unlock().map_err(ctx("unlock EX after timeout"))?;
    println!("client: timeout of 300 ms -> NotGranted(TimedOut) after {took:?}; resource free afterwards");

    // 9. Threads sharing one handle: a fresh one (A runs an event loop).
    let c = dlm
        .open_lockspace(&name)
        .map_err(ctx("open a third handle"))?;
    threads_take_turns(&c)?;

    // 9b. Random traffic from threads on C and on A (which runs an event
    // loop): waiting locks with timeouts and NOQUEUE, futures awaited or
    // dropped, conversions, unlocks and drops. Exclusion holds at every
    // grant and every call returns.
    mixed_traffic(&c, &a)?;
    drop(c);

    // 9c. One pollable fd per handle: poll(2) + dispatch(), and a
    // caller's own mio::Poll.
    one_fd(&dlm, &name)?;

    // 9d. The lock query reads debugfs (format 3): the value block and
    // its sequence number, the master node.
    lock_query(&dlm, &a, &name)?;

    // 10. Release.
    drop(b);
    dlm.release_lockspace(a, false)
        .map_err(ctx("release_lockspace"))?;
    check(
        !std::path::Path::new("/sys/kernel/dlm/client").exists(),
        || "/sys/kernel/dlm/client still exists after the release".into(),
    )?;
    match dlm.open_lockspace(&name) {
        Err(Error::Lockspace { errno, .. }) if errno == Errno::ENOENT => {}
        other => {
            return Err(format!(
                "open after release: expected ENOENT, got {other:?}"
            ))
        }
    }
    println!("client: lockspace released; opening it again is ENOENT");

    // 11. Recovery callbacks.
    recovery_callbacks(&dlm)
}

/// What the recovery callbacks saw, in order, with the thread each ran on.
#[derive(Default)]
struct Journal {
    events: std::sync::Mutex<Vec<(String, Option<String>)>>,
    cond: std::sync::Condvar,
}

impl dlm::Recovery for Journal {
    fn recover_prep(&self) {
        self.push("prep".into());
    }
    fn recover_done(&self, members: &[dlm::Member], our_slot: u32, generation: u32) {
        let m: Vec<String> = members
            .iter()
            .map(|m| format!("{}:{}", m.nodeid, m.slot))
            .collect();
        self.push(format!(
            "done [{}] slot {our_slot} gen {generation}",
            m.join(",")
        ));
    }
}

impl Journal {
    fn push(&self, what: String) {
        let thread = std::thread::current().name().map(str::to_string);
        if let Ok(mut e) = self.events.lock() {
            e.push((what, thread));
        }
        self.cond.notify_all();
    }

    /// The events once there are `n` (or what there is after 20 s).
    fn wait_for(&self, n: usize) -> Vec<(String, Option<String>)> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut e = match self.events.lock() {
            Ok(e) => e,
            Err(p) => p.into_inner(),
        };
        while e.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            e = match self.cond.wait_timeout(e, left) {
                Ok((e, _)) => e,
                Err(p) => p.into_inner().0,
            };
        }
        e.clone()
    }
}

/// `dlm-controld recover ARGS` as `uid` (None: ourselves): (status, stdout
/// + stderr).
fn controld_recover(args: &[&str], uid: Option<u32>) -> R<(i32, String)> {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new("dlm-controld");
    cmd.arg("recover").args(args);
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    let out = cmd.output().map_err(ctx("run dlm-controld recover"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.code().unwrap_or(-1), text.trim().to_string()))
}

fn recovery_callbacks(dlm: &Dlm) -> R<()> {
    use std::sync::Arc;
    let name = LockspaceName::new("recov").map_err(ctx("name"))?;
    let journal = Arc::new(Journal::default());
    let ls = dlm
        .create_lockspace_with(
            &name,
            dlm::LockspaceOptions::new()
                .mode(0o600)
                .recovery(journal.clone()),
        )
        .map_err(ctx("create lockspace recov with callbacks"))?;
    let me = std::thread::current().name().map(str::to_string);
    let first = journal.wait_for(1);
    check(
        first == [("done [1:1] slot 1 gen 1".to_string(), me.clone())],
        || format!("at join: {first:?}"),
    )?;
    check(ls.recovery_status().is_ok(), || {
        format!(
            "recovery_status with dlm-controld's events: {:?}",
            ls.recovery_status()
        )
    })?;
    let plain = dlm
        .open_lockspace(&name)
        .map_err(ctx("open recov without callbacks"))?;
    check(
        plain.recovery_status() == Err(Errno::from_raw(EOPNOTSUPP)),
        || {
            format!(
                "recovery_status without callbacks: {:?}",
                plain.recovery_status()
            )
        },
    )?;
    println!(
        "client: recovery: recover_done at join (members 1:1, slot 1, generation 1), status Ok"
    );

    let held = granted(
        &ls,
        LockRequest::new(res("r-recov")?, LockMode::Ex),
        "lock EX before the restart",
    )?;

    // The command's errors first: none of them stops anything.
    let (st, text) = controld_recover(&["no-such-ls"], None)?;
    check(st == 1 && text.contains("no lockspace"), || {
        format!("recover of an unknown lockspace: status {st}: {text}")
    })?;
    let (st, text) = controld_recover(&["a/b"], None)?;
    check(st == 2, || {
        format!("recover of a bad name: status {st}: {text}")
    })?;
    let (st, text) = controld_recover(&["recov"], Some(65534))?;
    check(st == 1 && text.contains("root"), || {
        format!("recover as uid 65534: status {st}: {text}")
    })?;
    // The controller's own check, past the command's.
    let exe = std::env::current_exe().map_err(ctx("current_exe"))?;
    let out = {
        use std::os::unix::process::CommandExt;
        std::process::Command::new(exe)
            .args(["as-nobody-recover", "recov"])
            .uid(65534)
            .gid(65534)
            .output()
            .map_err(ctx("run as-nobody-recover"))?
    };
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    check(
        text.contains("only root") && text.contains("os error 1"),
        || format!("the controller's answer to uid 65534: {text}"),
    )?;
    check(journal.wait_for(1).len() == 1, || {
        format!("refused restarts ran callbacks: {:?}", journal.wait_for(1))
    })?;
    println!("client: recovery: dlm-controld recover refuses an unknown lockspace, a bad name, and uid 65534 (the CLI and the controller)");

    let t = Instant::now();
    let (st, text) = controld_recover(&["recov"], None)?;
    check(st == 0 && text.contains("generation 2"), || {
        format!("dlm-controld recover recov: status {st}: {text}")
    })?;
    let all = journal.wait_for(3);
    let thread = Some("dlm-recovery".to_string());
    let want = [
        ("done [1:1] slot 1 gen 1".to_string(), me),
        ("prep".to_string(), thread.clone()),
        ("done [1:1] slot 1 gen 2".to_string(), thread),
    ];
    check(all == want, || {
        format!("callbacks: {all:?}, expected {want:?}")
    })?;
    check(ls.generation() == 2, || {
        format!("generation after the restart: {}", ls.generation())
    })?;
    println!(
        "client: recovery: dlm-controld recover: recover_prep, then recover_done generation 2, on thread dlm-recovery ({:?})",
        t.elapsed()
    );

    // The lock survived, and the lockspace takes requests.
    let h = ls.held();
    check(
        h.iter()
            .any(|l| l.id == held.id() && l.granted == Some(LockMode::Ex)),
        || format!("held after the restart: {h:?}"),
    )?;
    match plain
        .lock(LockRequest::new(res("r-recov")?, LockMode::Pr).flags(LockFlags::NOQUEUE))
        .map_err(ctx("NOQUEUE PR after the restart"))?
    {
        Outcome::NotGranted(c) if c.status == Status::WouldBlock => {}
        other => {
            return Err(format!(
                "NOQUEUE PR against the EX held across the restart: {other:?}"
            ))
        }
    }
    let fresh = granted(
        &ls,
        LockRequest::new(res("r-after")?, LockMode::Ex),
        "a new EX after the restart",
    )?;
    fresh.unlock().map_err(ctx("unlock the new lock"))?;
    held.unlock().map_err(ctx("unlock the lock held across"))?;
    let pr = granted(
        &plain,
        LockRequest::new(res("r-recov")?, LockMode::Pr),
        "PR once the EX is unlocked",
    )?;
    pr.unlock().map_err(ctx("unlock PR"))?;
    println!(
        "client: recovery: the EX lock was held across the restart; new requests granted after"
    );

    drop(plain);
    dlm.release_lockspace(ls, false)
        .map_err(ctx("release recov"))?;
    check(journal.wait_for(3).len() == 3, || {
        format!("callbacks after the release: {:?}", journal.wait_for(3))
    })?;
    println!("client: recovery: lockspace released");
    Ok(())
}

/// Linux's `EOPNOTSUPP`, what the kernel's `ops_result` says.
const EOPNOTSUPP: i32 = 95;

/// Child mode: ask the controller for a restart directly (past the
/// CLI's own root check), print its answer.
fn as_nobody_recover(name: &str) -> ExitCode {
    let r = dlm_controld::events::recover(
        std::path::Path::new(dlm_controld::layout::RUN_DIR),
        std::ffi::OsStr::new(name),
        Duration::from_secs(10),
    );
    match r {
        Ok(g) => println!("restarted: generation {g}"),
        Err(e) => println!("{e}"),
    }
    ExitCode::SUCCESS
}

fn threads_take_turns(ls: &Lockspace) -> R<()> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    const THREADS: usize = 4;
    const ROUNDS: usize = 200;
    let held = Arc::new(AtomicBool::new(false));
    let turns = Arc::new(AtomicUsize::new(0));
    let shared = res("r-threads")?;
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (ls, held, turns) = (ls.clone(), held.clone(), turns.clone());
            std::thread::spawn(move || -> R<()> {
                for i in 0..ROUNDS {
                    let l = granted(&ls, LockRequest::new(shared, LockMode::Ex), "threaded EX")?;
                    check(!held.swap(true, Ordering::SeqCst), || {
                        format!("EX held twice (round {i})")
                    })?;
                    turns.fetch_add(1, Ordering::SeqCst);
                    held.store(false, Ordering::SeqCst);
                    l.unlock().map_err(ctx("threaded unlock"))?;
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join()
            .map_err(|_| "a worker thread panicked".to_string())??;
    }
    let n = turns.load(Ordering::SeqCst);
    check(n == THREADS * ROUNDS, || {
        format!("{n} turns, expected {}", THREADS * ROUNDS)
    })?;
    println!("client: {THREADS} threads on one handle took {n} EX turns, never two at once");
    Ok(())
}

/// Random traffic from threads on `plain` and on `looped` (which runs an
/// event loop), through `dlm_conformance::traffic`, the same load the
/// dlmd tests make.
fn mixed_traffic(plain: &Lockspace, looped: &Lockspace) -> R<()> {
    let names = [res("m0")?, res("m1")?, res("m2")?];
    let load = traffic::Traffic {
        threads: 4,
        ops: 300,
        deadline: Duration::from_secs(60),
    };
    traffic::mixed(plain, looped, &names, load)?;
    println!(
        "client: {} threads on two handles made {} random operations each; every call returned",
        load.threads, load.ops
    );
    Ok(())
}

/// The handle's one fd with `poll(2)` and `dispatch()`, then in a
/// caller's own `mio::Poll`.
fn one_fd(dlm: &Dlm, name: &LockspaceName) -> R<()> {
    use std::os::fd::{AsFd, AsRawFd};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let p = dlm.open_lockspace(name).map_err(ctx("open handle p"))?;
    let q = dlm.open_lockspace(name).map_err(ctx("open handle q"))?;
    let readable = |ls: &Lockspace, ms: i64| -> R<bool> {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let mut fds = [PollFd::new(ls, PollFlags::IN)];
        let ts = Timespec {
            tv_sec: ms / 1000,
            tv_nsec: (ms % 1000) * 1_000_000,
        };
        Ok(poll(&mut fds, Some(&ts)).map_err(ctx("poll"))? > 0)
    };
    check(p.as_fd().as_raw_fd() == p.as_raw_fd(), || {
        "AsFd and AsRawFd differ".into()
    })?;
    check(!readable(&p, 0)?, || "a new handle's fd is readable".into())?;
    let grants = Arc::new(AtomicUsize::new(0));
    let g = grants.clone();
    let r = res("fd0")?;
    let id = p
        .request(LockRequest::new(r, LockMode::Ex), move |_, c| {
            if c.status == Status::Granted {
                g.fetch_add(1, Ordering::SeqCst);
            }
        })
        .map_err(ctx("request on p"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while grants.load(Ordering::SeqCst) == 0 {
        check(Instant::now() < deadline, || {
            "no grant through poll(2)".into()
        })?;
        if readable(&p, 100)? {
            p.dispatch().map_err(ctx("dispatch p"))?;
        }
    }
    check(!readable(&p, 0)?, || {
        "p's fd readable after dispatch".into()
    })?;
    let mut mio_poll = mio::Poll::new().map_err(ctx("mio::Poll"))?;
    let mut src = q.clone();
    mio_poll
        .registry()
        .register(&mut src, mio::Token(9), mio::Interest::READABLE)
        .map_err(ctx("register q"))?;
    let g = grants.clone();
    q.request(LockRequest::new(r, LockMode::Ex), move |_, c| {
        if c.status == Status::Granted {
            g.fetch_add(1, Ordering::SeqCst);
        }
    })
    .map_err(ctx("request on q"))?;
    check(!readable(&q, 100)?, || "q readable while queued".into())?;
    p.unlock(id, LockFlags::empty(), None)
        .map_err(ctx("unlock on p"))?;
    let mut events = mio::Events::with_capacity(4);
    while grants.load(Ordering::SeqCst) < 2 {
        check(Instant::now() < deadline, || "no grant through mio".into())?;
        mio_poll
            .poll(&mut events, Some(Duration::from_millis(100)))
            .map_err(ctx("mio poll"))?;
        for ev in events.iter() {
            check(ev.token() == mio::Token(9), || "wrong mio token".into())?;
            q.dispatch().map_err(ctx("dispatch q"))?;
        }
    }
    println!(
        "client: one fd per handle: a grant through poll(2) + dispatch(), another through mio"
    );
    Ok(())
}

fn lock_query(dlm: &Dlm, ls: &Lockspace, name: &LockspaceName) -> R<()> {
    if !std::path::Path::new("/sys/kernel/debug/dlm").exists() {
        let st = std::process::Command::new("mount")
            .args(["-t", "debugfs", "none", "/sys/kernel/debug"])
            .status()
            .map_err(ctx("run mount"))?;
        check(st.success(), || format!("mount debugfs: {st}"))?;
    }
    let req = LockRequest::new(res("queried")?, LockMode::Ex).value_block();
    let mut lock = granted(ls, req, "EX with a value block")?;
    let c = lock
        .convert(
            LockMode::Pw,
            LockFlags::VALBLK,
            Some(&ValueBlock::from_prefix(b"seen")),
        )
        .map_err(ctx("convert EX -> PW writing the value block"))?;
    check(c.status == Status::Granted, || format!("EX -> PW: {c:?}"))?;
    let locks = dlm.locks(name).map_err(ctx("Dlm::locks"))?;
    let l = locks
        .iter()
        .find(|l| l.lkid == lock.id().lkid())
        .ok_or_else(|| format!("lock {:#x} not in {locks:?}", lock.id().lkid()))?;
    check(
        l.resource == "queried" && l.granted.as_deref() == Some("PW"),
        || format!("queried lock: {l:?}"),
    )?;
    check(
        l.lvb.as_deref().is_some_and(|h| h.starts_with("7365656e")),
        || format!("value block: {l:?}"),
    )?;
    check(l.lvb_seq.is_some_and(|n| n >= 1), || {
        format!("value block sequence: {l:?}")
    })?;
    check(l.master == Some(0), || format!("master: {l:?}"))?;
    println!(
        "client: Dlm::locks from debugfs: PW, value block \"seen\", lvb_seq {}, master this node",
        l.lvb_seq.unwrap_or(0)
    );
    lock.unlock().map_err(ctx("unlock the queried lock"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [mode, name] = args.as_slice() {
        if mode == "as-nobody-recover" {
            return as_nobody_recover(name);
        }
    }
    let t = Instant::now();
    let only_recovery = args.first().map(String::as_str) == Some("recovery");
    let r = if only_recovery {
        Dlm::builder()
            .backend(Backend::Kernel)
            .open()
            .map_err(ctx("open the kernel backend"))
            .and_then(|d| recovery_callbacks(&d))
    } else {
        run()
    };
    match r {
        Ok(()) => {
            println!("client: PASS ({:?})", t.elapsed());
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("client: FAIL: {e}");
            ExitCode::FAILURE
        }
    }
}
