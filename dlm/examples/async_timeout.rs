//! Async locking with tokio, and a timeout that gives up a wait.
//!
//! ```sh
//! cargo run -p dlm --example async_timeout
//! ```
//!
//! `lock_async` sends the request at once and returns a future. Dropping
//! the future before it resolves (here: `tokio::time::timeout` running
//! out) cancels the request, so nothing is left queued. `Lock::unlock_async`
//! and `Lock::convert_async` are the async forms of the other calls.

use std::time::Duration;

use dlm::{
    Dlm, LockFlags, LockMode, LockRequest, LockspaceFlags, LockspaceName, Outcome, ResourceName,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = LockspaceName::new("example")?;
    let res = ResourceName::new("queue")?;
    let dlm = Dlm::open()?;
    let a = dlm.create_lockspace(&name, LockspaceFlags::empty(), 0o600)?;
    // A second handle is a second owner, like another process.
    let other = Dlm::open()?;
    let b = other.create_lockspace(&name, LockspaceFlags::empty(), 0o600)?;

    let Outcome::Granted(held) = a.lock_async(LockRequest::new(res, LockMode::Ex)).await? else {
        return Err("no EX lock".into());
    };
    println!("a: holds EX");

    // b waits at most 200 ms; the drop of the timed-out future cancels
    // its request.
    let wait = b.lock_async(LockRequest::new(res, LockMode::Ex));
    match tokio::time::timeout(Duration::from_millis(200), wait).await {
        Ok(_) => return Err("b was granted while a held EX".into()),
        Err(_) => println!("b: gave up after 200 ms (request cancelled)"),
    }

    // Down-convert to PR without blocking the runtime, then b can share.
    let mut held = held;
    let c = held
        .convert_async(LockMode::Pr, LockFlags::empty(), None)
        .await?;
    println!("a: converted to {:?} ({})", held.mode(), c.status);
    match b.lock_async(LockRequest::new(res, LockMode::Pr)).await? {
        Outcome::Granted(shared) => {
            println!("b: granted PR beside a");
            shared.unlock_async().await?;
        }
        Outcome::NotGranted(c) => return Err(format!("b: {}", c.status).into()),
    }
    held.unlock_async().await?;
    println!("both unlocked");

    other.release_lockspace(b, false)?;
    dlm.release_lockspace(a, false)?;
    Ok(())
}
