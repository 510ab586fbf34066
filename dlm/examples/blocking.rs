//! A blocking lock and unlock: the smallest complete program.
//!
//! ```sh
//! cargo run -p dlm --example blocking
//! ```
//!
//! It uses the kernel DLM when its control device exists and the fallback
//! daemon `dlmd` otherwise (started for you on first use); set
//! `DLM_BACKEND=fallback` to use `dlmd` anyway.

use dlm::{Dlm, LockMode, LockRequest, LockspaceFlags, LockspaceName, Outcome, ResourceName};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dlm = Dlm::open()?;
    println!("backend: {}", dlm.backend());

    // Creating a lockspace that exists already opens it (and counts one
    // more reference to it).
    let name = LockspaceName::new("example")?;
    let ls = dlm.create_lockspace(&name, LockspaceFlags::empty(), 0o600)?;

    // Wait for an exclusive lock on resource "disk0".
    let req = LockRequest::new(ResourceName::new("disk0")?, LockMode::Ex);
    match ls.lock(req)? {
        Outcome::Granted(lock) => {
            println!("granted {:?} lock {}", lock.mode(), lock.id().lkid());
            // ... the resource is ours here ...
            lock.unlock()?;
            println!("unlocked");
        }
        Outcome::NotGranted(c) => println!("not granted: {}", c.status),
    }

    // Drop our reference to the lockspace; the last one removes it.
    dlm.release_lockspace(ls, false)?;
    Ok(())
}
