//! A holder that gives its lock up when someone else asks for it.
//!
//! ```sh
//! cargo run -p dlm --example holder_releases
//! ```
//!
//! Two handles on one lockspace play two processes (each is an owner of
//! its own locks, as two processes are). The holder takes EX with a
//! blocking callback; the callback runs on the holder's event-loop thread
//! when the waiter's request queues behind the lock, and tells the main
//! thread, which unlocks. The waiter is then granted.

use std::sync::mpsc;
use std::time::Duration;

use dlm::{Dlm, LockMode, LockRequest, LockspaceFlags, LockspaceName, Outcome, ResourceName};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = LockspaceName::new("example")?;
    let res = ResourceName::new("config")?;

    let holder_dlm = Dlm::open()?;
    let holder = holder_dlm.create_lockspace(&name, LockspaceFlags::empty(), 0o600)?;
    // Blocking callbacks need something that reads the lockspace: its
    // event-loop thread here (or `dispatch()` from your own poll loop).
    holder.start_event_loop()?;

    let (asked, asked_rx) = mpsc::channel();
    let req = LockRequest::new(res, LockMode::Ex).on_blocking(move |id, mode| {
        println!(
            "holder: lock {} blocks a {mode:?} request; releasing",
            id.lkid()
        );
        let _ = asked.send(());
    });
    let Outcome::Granted(lock) = holder.lock(req)? else {
        return Err("the holder did not get the lock".into());
    };
    println!("holder: has EX");

    let waiter_dlm = Dlm::open()?;
    let waiter = waiter_dlm.create_lockspace(&name, LockspaceFlags::empty(), 0o600)?;
    let wait = std::thread::spawn(move || -> Result<(), dlm::Error> {
        println!("waiter: asking for PR");
        let req = LockRequest::new(res, LockMode::Pr).timeout(Duration::from_secs(10));
        match waiter.lock(req)? {
            Outcome::Granted(l) => {
                println!("waiter: granted PR");
                l.unlock()?;
            }
            Outcome::NotGranted(c) => println!("waiter: not granted: {}", c.status),
        }
        waiter_dlm.release_lockspace(waiter, false)
    });

    asked_rx.recv_timeout(Duration::from_secs(10))?;
    println!("holder: unlocking");
    lock.unlock()?;
    wait.join().map_err(|_| "the waiter thread panicked")??;
    holder_dlm.release_lockspace(holder, false)?;
    Ok(())
}
