//! A lock value block passed from one process to another.
//!
//! ```sh
//! cargo run -p dlm --example value_block
//! ```
//!
//! The parent writes a value under EX and converts down to NL, which
//! writes the block to the resource and keeps the resource (and so its
//! value) alive. It then runs itself again as a child process, which takes
//! PR with `value_block()` and prints what it reads. The DLM keeps a
//! resource's value block only while some lock on the resource exists.

use std::process::Command;

use dlm::{
    Dlm, LockFlags, LockMode, LockRequest, LockspaceFlags, LockspaceName, Outcome, ResourceName,
    Status, ValueBlock,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = LockspaceName::new("example")?;
    let res = ResourceName::new("counter")?;
    let dlm = Dlm::open()?;
    let ls = dlm.create_lockspace(&name, LockspaceFlags::empty(), 0o600)?;

    if std::env::args().nth(1).as_deref() == Some("reader") {
        let req = LockRequest::new(res, LockMode::Pr).value_block();
        let Outcome::Granted(lock) = ls.lock(req)? else {
            return Err("reader: no PR lock".into());
        };
        let text = lock.value_block().map(|v| {
            let b = v.as_bytes();
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            String::from_utf8_lossy(&b[..end]).into_owned()
        });
        println!(
            "child {}: read {:?}",
            std::process::id(),
            text.unwrap_or_default()
        );
        lock.unlock()?;
        dlm.release_lockspace(ls, false)?;
        return Ok(());
    }

    let req = LockRequest::new(res, LockMode::Ex).value_block();
    let Outcome::Granted(mut lock) = ls.lock(req)? else {
        return Err("writer: no EX lock".into());
    };
    let value = format!("written by pid {}", std::process::id());
    // A down-conversion from EX with VALBLK writes the block.
    let vb = ValueBlock::from_prefix(value.as_bytes());
    let c = lock.convert(LockMode::Nl, LockFlags::VALBLK, Some(&vb))?;
    if c.status != Status::Granted {
        return Err(format!("writer: conversion to NL: {}", c.status).into());
    }
    println!("parent {}: wrote {value:?}, holds NL", std::process::id());

    let status = Command::new(std::env::current_exe()?)
        .arg("reader")
        .status()?;
    if !status.success() {
        return Err(format!("the reader failed: {status}").into());
    }
    lock.unlock()?;
    dlm.release_lockspace(ls, false)?;
    Ok(())
}
