//! A tour of the lock engine: two owners contend for a resource, a
//! blocking AST asks the holder to give way, and a value block carries
//! data from one holder to the next.
//!
//! Run it with `cargo run -p dlm-engine --example engine_demo`.
#![forbid(unsafe_code)]

use dlm_engine::{AstRecord, Engine, LockParams, OwnerId, UnlockParams, UserArgs};
use dlm_proto::{LockFlags, LockMode, Status};

fn describe(who: &str, r: &AstRecord) -> String {
    if r.is_bast() {
        let mode = LockMode::try_from(r.bast_mode).map(|m| m.to_string());
        format!(
            "{who}: blocking AST on lock {}: someone wants {}",
            r.lkid,
            mode.unwrap_or_else(|_| "?".into())
        )
    } else {
        let status = Status::from_kernel(r.status, false)
            .map(|s| s.to_string())
            .unwrap_or_else(|e| format!("unknown status ({e})"));
        let lvb = r
            .lvb
            .map(|v| {
                format!(
                    ", value block {:?}",
                    String::from_utf8_lossy(&v).trim_end_matches('\0')
                )
            })
            .unwrap_or_default();
        format!("{who}: completion on lock {}: {status}{lvb}", r.lkid)
    }
}

fn drain(e: &mut Engine, o: OwnerId, who: &str) {
    while let Some(r) = e.read(o) {
        println!("  {}", describe(who, &r));
    }
}

fn main() -> Result<(), dlm_proto::Errno> {
    let mut ls = Engine::new();
    let writer = ls.open_owner(1001);
    let reader = ls.open_owner(1002);
    let args = UserArgs {
        castaddr: 1,
        bastaddr: 2,
        lksb: 3,
        ..Default::default()
    };

    println!("writer takes EX on \"config\" with a value block");
    let w = ls.lock(
        writer,
        &LockParams::new(LockMode::Ex, b"config", args).flags(LockFlags::VALBLK),
    )?;
    drain(&mut ls, writer, "writer");

    println!("reader asks for PR: it must wait");
    let r = ls.lock(
        reader,
        &LockParams::new(LockMode::Pr, b"config", args).flags(LockFlags::VALBLK),
    )?;
    drain(&mut ls, reader, "reader");
    drain(&mut ls, writer, "writer");

    println!("writer stores \"version 2\" and converts down to NL");
    let mut lvb = [0u8; 32];
    lvb[..9].copy_from_slice(b"version 2");
    let down = LockParams::convert(w, LockMode::Nl, args)
        .flags(LockFlags::VALBLK)
        .lvb(lvb);
    ls.lock(writer, &down)?;
    drain(&mut ls, writer, "writer");
    drain(&mut ls, reader, "reader");

    println!("a NOQUEUE request for EX fails at once while the reader holds PR");
    ls.lock(
        writer,
        &LockParams::convert(w, LockMode::Ex, args).flags(LockFlags::NOQUEUE),
    )?;
    drain(&mut ls, writer, "writer");

    println!("the reader exits without unlocking: its lock is released");
    ls.close_owner(reader)?;
    let _ = r;
    ls.lock(
        writer,
        &LockParams::convert(w, LockMode::Ex, args).flags(LockFlags::VALBLK),
    )?;
    drain(&mut ls, writer, "writer");

    ls.unlock(writer, &UnlockParams::new(w, LockFlags::empty(), args))?;
    drain(&mut ls, writer, "writer");
    println!("locks left: {}", ls.lock_count());
    Ok(())
}
