//! Random mixed traffic through the client API, for stress tests on
//! either backend (the dlmd tests in `dlm-cli` and the kernel guest
//! client both run it).
//!
//! Threads on two handles of one lockspace (one with an event loop, one
//! without) lock (waiting, or as futures that are awaited or dropped
//! unresolved), convert, time out, try `NOQUEUE`, unlock and drop, at
//! random on a few resources. [`mixed`] checks that every call returns
//! (a watchdog bounds the run), that EX and PR exclusion hold at every
//! grant, and that no call fails; the caller checks that no lock is left.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use dlm::{LockFlags, LockMode, ResourceName, Status};
use dlm::{LockRequest, Lockspace, Outcome};

/// How much traffic [`mixed`] makes.
#[derive(Clone, Copy, Debug)]
pub struct Traffic {
    /// Worker threads; even ones use the plain handle, odd ones the
    /// handle with the event loop (and sometimes futures).
    pub threads: usize,
    /// Operations per thread.
    pub ops: usize,
    /// How long the whole run may take before it counts as a hang (not a
    /// speed target).
    pub deadline: Duration,
}

/// Run `f` to completion on this thread, polling it when its waker fires
/// (and at least every 200 µs). `None` if it has not resolved by
/// `deadline`.
pub fn block_on<F: Future>(f: F, deadline: Duration) -> Option<F::Output> {
    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let flag = Arc::new(Flag(AtomicBool::new(true)));
    let waker = Waker::from(flag.clone());
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    let end = Instant::now() + deadline;
    loop {
        if flag.0.swap(false, Ordering::SeqCst) {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return Some(v);
            }
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Holders of each resource as the traffic sees them: -1 for one EX
/// holder, otherwise the number of PR holders (NL counts as nothing).
struct Holders(Vec<AtomicI32>);

impl Holders {
    fn granted(&self, r: usize, mode: LockMode) -> Result<(), String> {
        let h = &self.0[r];
        let before = match mode {
            LockMode::Ex => h.swap(-1, Ordering::SeqCst),
            LockMode::Pr => h.fetch_add(1, Ordering::SeqCst).min(0),
            _ => 0,
        };
        if before != 0 {
            return Err(format!(
                "{mode:?} granted on resource {r} over holders ({before})"
            ));
        }
        Ok(())
    }

    fn releasing(&self, r: usize, mode: LockMode) -> Result<(), String> {
        let h = &self.0[r];
        let ok = match mode {
            LockMode::Ex => h.swap(0, Ordering::SeqCst) == -1,
            LockMode::Pr => h.fetch_sub(1, Ordering::SeqCst) > 0,
            _ => true,
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{mode:?} released on resource {r} that it did not hold"
            ))
        }
    }
}

/// A xorshift generator: `next(n)` is in `0..n`.
fn rng(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut s = seed | 1;
    move |n| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s % n
    }
}

/// Make the traffic on `names` through `plain` (no event loop) and
/// `looped` (its event loop started), two handles of one lockspace.
/// Returns the first failure: a call that errs, a grant that breaks
/// exclusion, a refused down-conversion, or a run that outlives
/// `traffic.deadline` (a hang).
pub fn mixed(
    plain: &Lockspace,
    looped: &Lockspace,
    names: &[ResourceName],
    traffic: Traffic,
) -> Result<(), String> {
    if names.is_empty() {
        return Err("no resources to make traffic on".into());
    }
    let holders = Arc::new(Holders(names.iter().map(|_| AtomicI32::new(0)).collect()));
    let names: Arc<[ResourceName]> = names.into();
    let workers: Vec<_> = (0..traffic.threads)
        .map(|t| {
            let ls = if t % 2 == 0 { plain } else { looped }.clone();
            let (holders, names) = (holders.clone(), names.clone());
            std::thread::spawn(move || -> Result<(), String> {
                let mut next = rng(0x9e37_79b9_7f4a_7c15 ^ (t as u64 + 1));
                let modes = [LockMode::Ex, LockMode::Pr, LockMode::Nl];
                for _ in 0..traffic.ops {
                    let r = next(names.len() as u64) as usize;
                    let mut req = LockRequest::new(names[r], modes[next(3) as usize]);
                    match next(4) {
                        0 => req = req.flags(LockFlags::NOQUEUE),
                        1 => req = req.timeout(Duration::from_millis(1 + next(5))),
                        _ => {}
                    }
                    // On the looped handle, sometimes as a future: awaited,
                    // or dropped unresolved (which cancels it).
                    let outcome = if t % 2 == 1 && next(3) == 0 {
                        let fut = ls.lock_async(req);
                        if next(2) == 0 {
                            drop(fut);
                            continue;
                        }
                        block_on(fut, traffic.deadline).ok_or("a lock future never resolved")?
                    } else {
                        ls.lock(req)
                    };
                    let mut l = match outcome.map_err(|e| format!("a lock call failed: {e}"))? {
                        Outcome::Granted(l) => l,
                        Outcome::NotGranted(c) => {
                            if !matches!(c.status, Status::WouldBlock | Status::TimedOut) {
                                return Err(format!("a lock was refused: {c:?}"));
                            }
                            continue;
                        }
                    };
                    holders.granted(r, l.mode())?;
                    if next(3) == 0 {
                        // Convert; a down-conversion is counted as released
                        // first, since it is granted at once.
                        let (old, to) = (l.mode(), modes[next(3) as usize]);
                        let down = to < old;
                        if down {
                            holders.releasing(r, old)?;
                        }
                        let c = l
                            .convert(to, LockFlags::NOQUEUE, None)
                            .map_err(|e| format!("a convert call failed: {e}"))?;
                        match (c.status, down) {
                            (Status::Granted, true) => holders.granted(r, to)?,
                            (Status::Granted, false) => {
                                holders.releasing(r, old)?;
                                holders.granted(r, to)?;
                            }
                            (_, true) => {
                                return Err(format!("a down-conversion was refused: {c:?}"))
                            }
                            (_, false) => {}
                        }
                    }
                    if next(4) == 0 {
                        std::thread::yield_now();
                    }
                    holders.releasing(r, l.mode())?;
                    if next(2) == 0 {
                        l.unlock()
                            .map_err(|e| format!("an unlock call failed: {e}"))?;
                    } else {
                        drop(l);
                    }
                }
                Ok(())
            })
        })
        .collect();
    let end = Instant::now() + traffic.deadline;
    while !workers.iter().all(|w| w.is_finished()) {
        if Instant::now() > end {
            // The stuck threads are left behind: the caller fails.
            return Err(format!(
                "a traffic thread hangs after {:?}",
                traffic.deadline
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for w in workers {
        w.join()
            .map_err(|_| "a traffic thread panicked".to_string())??;
    }
    Ok(())
}
