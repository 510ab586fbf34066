//! The first kernel DLM test, run inside the QEMU guest by
//! `ci/kernel/smoke.sh` (after the guest's /init has started
//! `dlm-controld --single-node`). It speaks the raw device protocol with
//! `dlm_proto::records` and checks, step by step:
//!
//! 1. the `/dev/misc` links the controller made for libdlm;
//! 2. a 12-byte read of `dlm-control` gives version 6.0.2;
//! 3. `CREATE_LOCKSPACE` returns a minor; the controller joined the
//!    lockspace (global id, configfs member, `/dev/misc/dlm_<ls>`);
//! 4. a lock EX returns a lock id and completes with status 0, an unlock
//!    completes with -DLM_EUNLOCK;
//! 5. two owners: NOQUEUE conflict (-EAGAIN), a blocking AST with the
//!    blocked mode, and the grant after the unlock;
//! 6. a timed run of lock+unlock pairs (`DLM_SMOKE_ITERATIONS`, default
//!    10,000; informative only);
//! 7. `REMOVE_LOCKSPACE` after closing; the controller left it (configfs
//!    and the link are gone); creating and removing it again works;
//! 8. the controller's life cycle: a second instance refuses to start;
//!    SIGTERM while a lockspace exists does not stop it, removing the
//!    lockspace then does (and clears configfs); without a controller a
//!    create fails at once instead of hanging; a new controller starts.
//!
//! Exits 0 when every check passes. It is a plain program, not a
//! `#[test]`: it needs root and the kernel DLM, which the host has not.
#![forbid(unsafe_code)]

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use dlm_controld::crc::lockspace_global_id;
use dlm_proto::records::{self, Command, LockRequest, VERSION};

const LS: &str = "smoke";
const CASTADDR: u64 = 0xCA57;
const BASTADDR: u64 = 0xBA57;
const LKSB: u64 = 0x15B;

type R<T> = Result<T, String>;

fn check(cond: bool, what: impl FnOnce() -> String) -> R<()> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

fn open_rw(path: &str) -> R<File> {
    File::options()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("open {path}: {e}"))
}

/// One `write()`; its return value (a minor, a lock id, or 0).
fn write_req(fd: impl AsFd, bytes: &[u8], what: &str) -> R<usize> {
    rustix::io::write(fd, bytes).map_err(|e| format!("{what}: write: {e}"))
}

/// One blocking `read()` of a result.
fn read_result(fd: impl AsFd, what: &str) -> R<records::LockResult> {
    let mut buf = [0u8; records::RESULT_WITH_LVB_SIZE];
    let n = rustix::io::read(fd, &mut buf).map_err(|e| format!("{what}: read: {e}"))?;
    records::decode_result(&buf[..n]).map_err(|e| format!("{what}: bad result record: {e:?}"))
}

fn lock_req(mode: u32, flags: u32, name: &[u8], castparam: u64, bast: bool) -> LockRequest {
    let mut r = LockRequest::default();
    r.mode = mode as u8;
    r.flags = flags;
    r.castparam = castparam;
    r.castaddr = CASTADDR;
    r.lksb = LKSB;
    if bast {
        r.bastparam = castparam + 1000;
        r.bastaddr = BASTADDR;
    }
    r.set_name(name).expect("short name");
    r
}

fn unlock_req(lkid: u32, castparam: u64) -> LockRequest {
    let mut r = LockRequest::default();
    r.lkid = lkid;
    r.castparam = castparam;
    r.castaddr = CASTADDR;
    r.lksb = LKSB;
    r
}

/// Lock and expect a grant (status 0).
fn lock_granted(fd: &File, mode: u32, name: &[u8], token: u64, bast: bool) -> R<u32> {
    let req = lock_req(mode, 0, name, token, bast);
    let lkid = write_req(
        fd,
        records::encode_lock(Command::Lock, &req, VERSION).as_bytes(),
        "lock",
    )? as u32;
    check(lkid > 0, || "lock: write returned lock id 0".into())?;
    let r = read_result(fd, "lock completion")?;
    check(
        r.status == 0
            && r.lkid == lkid
            && r.bast_mode == 0
            && r.astparam == token
            && r.astaddr == CASTADDR,
        || format!("lock {lkid}: unexpected completion {r:?}"),
    )?;
    Ok(lkid)
}

/// Unlock and expect -DLM_EUNLOCK.
fn unlock_done(fd: &File, lkid: u32, token: u64) -> R<()> {
    let req = unlock_req(lkid, token);
    let n = write_req(
        fd,
        records::encode_lock(Command::Unlock, &req, VERSION).as_bytes(),
        "unlock",
    )?;
    check(n == 0, || format!("unlock: write returned {n}"))?;
    let r = read_result(fd, "unlock completion")?;
    let eunlock = -(dlm_sys::DLM_EUNLOCK as i32);
    check(r.status == eunlock && r.lkid == lkid, || {
        format!("unlock {lkid}: expected status {eunlock}, got {r:?}")
    })
}

fn is_link_to(link: &str, target: &str) -> bool {
    std::fs::read_link(link).is_ok_and(|t| t == Path::new(target))
}

fn create(ctl: &File, name: &str) -> R<u32> {
    let req = records::encode_create(name.as_bytes(), 0, VERSION).map_err(|e| format!("{e:?}"))?;
    let t = Instant::now();
    let minor = write_req(ctl, req.as_bytes(), "create lockspace")? as u32;
    println!(
        "smoke: created lockspace {name}: minor {minor} in {:?}",
        t.elapsed()
    );
    Ok(minor)
}

fn remove(ctl: &File, name: &str, minor: u32) -> R<()> {
    let req = records::encode_remove(minor, dlm_sys::DLM_USER_LSFLG_FORCEFREE, VERSION);
    let t = Instant::now();
    let n = write_req(ctl, req.as_bytes(), "remove lockspace")?;
    check(n == 0, || format!("remove: write returned {n}"))?;
    println!("smoke: removed lockspace {name} in {:?}", t.elapsed());
    let space = format!("/sys/kernel/config/dlm/cluster/spaces/{name}");
    check(
        !Path::new(&format!("/sys/kernel/dlm/{name}")).exists(),
        || format!("/sys/kernel/dlm/{name} still exists"),
    )?;
    check(!Path::new(&space).exists(), || {
        format!("{space} still exists: the controller did not leave")
    })?;
    check(
        std::fs::symlink_metadata(format!("/dev/misc/dlm_{name}")).is_err(),
        || format!("/dev/misc/dlm_{name} still exists"),
    )
}

fn smoke() -> R<()> {
    // 1. The links libdlm needs.
    for dev in ["dlm-control", "dlm-monitor", "dlm_plock"] {
        let link = format!("/dev/misc/{dev}");
        check(is_link_to(&link, &format!("../{dev}")), || {
            format!("{link} is not a link to ../{dev}")
        })?;
        check(Path::new(&link).exists(), || format!("{link} dangles"))?;
    }
    println!("smoke: /dev/misc links present");
    let addr_list = std::fs::read_to_string("/sys/kernel/config/dlm/cluster/comms/1/addr_list")
        .unwrap_or_default();
    println!("smoke: comms/1/addr_list = {:?}", addr_list.trim_end());
    check(addr_list.contains("127.0.0.1"), || {
        "comms/1/addr_list lacks 127.0.0.1".into()
    })?;

    // 2. Version.
    let ctl = open_rw("/dev/misc/dlm-control")?;
    let mut v = [0u8; records::VERSION_SIZE];
    let n = rustix::io::read(&ctl, &mut v).map_err(|e| format!("version read: {e}"))?;
    let version = records::decode_version(&v[..n]).map_err(|e| format!("version: {e:?}"))?;
    check(version == [6, 0, 2], || {
        format!("version {version:?}, expected 6.0.2")
    })?;
    println!(
        "smoke: kernel DLM device version {}.{}.{}",
        version[0], version[1], version[2]
    );

    // 3. Create; the controller's join.
    let minor = create(&ctl, LS)?;
    let id = std::fs::read_to_string(format!("/sys/kernel/dlm/{LS}/id"))
        .map_err(|e| format!("read id: {e}"))?;
    let want = lockspace_global_id(LS.as_bytes());
    check(id.trim() == want.to_string(), || {
        format!("lockspace id {id:?}, expected {want}")
    })?;
    let node = format!("/sys/kernel/config/dlm/cluster/spaces/{LS}/nodes/1");
    check(Path::new(&node).is_dir(), || format!("{node} missing"))?;
    let link = format!("/dev/misc/dlm_{LS}");
    check(
        is_link_to(&link, &format!("../dlm_{LS}")) && Path::new(&link).exists(),
        || format!("{link} is not a working link"),
    )?;
    let sys_dev =
        std::fs::read_to_string(format!("/sys/class/misc/dlm_{LS}/dev")).unwrap_or_default();
    check(sys_dev.trim() == format!("10:{minor}"), || {
        format!("/sys/class/misc/dlm_{LS}/dev is {sys_dev:?}, the create returned minor {minor}")
    })?;
    println!("smoke: joined: id {want:#010x}, configfs member, {link} -> ../dlm_{LS}");

    // 4. Lock EX, unlock.
    let a = open_rw(&link)?;
    let lkid = lock_granted(&a, dlm_sys::DLM_LOCK_EX, b"res0", 7, false)?;
    println!("smoke: EX granted, lock id {lkid}");
    unlock_done(&a, lkid, 8)?;
    println!("smoke: unlocked (status -{})", dlm_sys::DLM_EUNLOCK);

    // 5. Two owners.
    let b = open_rw(&format!("/dev/dlm_{LS}"))?;
    let la = lock_granted(&a, dlm_sys::DLM_LOCK_EX, b"res1", 10, true)?;
    let try_b = lock_req(
        dlm_sys::DLM_LOCK_PR,
        dlm_sys::DLM_LKF_NOQUEUE,
        b"res1",
        20,
        false,
    );
    write_req(
        &b,
        records::encode_lock(Command::Lock, &try_b, VERSION).as_bytes(),
        "lock NOQUEUE",
    )?;
    let r = read_result(&b, "NOQUEUE completion")?;
    check(r.status == -11, || {
        format!("NOQUEUE PR against EX: expected -EAGAIN, got {r:?}")
    })?;
    let wait_b = lock_req(dlm_sys::DLM_LOCK_PR, 0, b"res1", 30, false);
    let lb = write_req(
        &b,
        records::encode_lock(Command::Lock, &wait_b, VERSION).as_bytes(),
        "lock PR",
    )? as u32;
    let bast = read_result(&a, "blocking AST")?;
    check(
        bast.bast_mode == dlm_sys::DLM_LOCK_PR as u8
            && bast.astaddr == BASTADDR
            && bast.astparam == 1010,
        || format!("expected a blocking AST for PR on lock {la}, got {bast:?}"),
    )?;
    unlock_done(&a, la, 11)?;
    let r = read_result(&b, "PR grant")?;
    check(r.status == 0 && r.lkid == lb && r.astparam == 30, || {
        format!("PR grant: {r:?}")
    })?;
    unlock_done(&b, lb, 31)?;
    println!("smoke: NOQUEUE conflict, blocking AST (mode PR) and grant after unlock");

    // 6. A timed loop (informative).
    let iters: u32 = std::env::var("DLM_SMOKE_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    if iters > 0 {
        let t = Instant::now();
        for i in 0..iters {
            let l = lock_granted(&a, dlm_sys::DLM_LOCK_EX, b"hot", u64::from(i), false)?;
            unlock_done(&a, l, u64::from(i))?;
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "smoke: {iters} lock+unlock pairs in {s:.3} s: {:.0} pairs/s (TCG: compare within one boot only)",
            f64::from(iters) / s
        );
    }

    // 7. Remove (fds closed first), then again from scratch.
    drop(a);
    drop(b);
    remove(&ctl, LS, minor)?;
    let minor = create(&ctl, LS)?;
    let c = open_rw(&link)?;
    let l = lock_granted(&c, dlm_sys::DLM_LOCK_PR, b"again", 1, false)?;
    unlock_done(&c, l, 2)?;
    drop(c);
    remove(&ctl, LS, minor)?;
    println!("smoke: created, used and removed a second time");
    Ok(())
}

/// The pid of the running `dlm-controld`, if any (zombies do not count:
/// the daemon is /init's child once its parent has exited).
fn controller_pid() -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let status = std::fs::read_to_string(e.path().join("status")).ok()?;
        let name = status
            .lines()
            .find_map(|l| l.strip_prefix("Name:"))?
            .trim()
            .to_string();
        let state = status
            .lines()
            .find_map(|l| l.strip_prefix("State:"))?
            .trim()
            .to_string();
        (name == "dlm-controld" && !state.starts_with('Z')).then_some(pid)
    })
}

fn wait_for(what: &str, secs: f64, mut cond: impl FnMut() -> bool) -> R<()> {
    let t = Instant::now();
    while !cond() {
        if t.elapsed().as_secs_f64() > secs {
            return Err(format!("{what}: not after {secs} s"));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}

fn lifecycle() -> R<()> {
    let pid = controller_pid().ok_or("no dlm-controld running")?;

    // A second controller refuses.
    let st = std::process::Command::new("dlm-controld")
        .args(["--single-node", "--foreground"])
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("run dlm-controld: {e}"))?;
    check(!st.success(), || "a second dlm-controld started".into())?;
    println!("smoke: a second dlm-controld refuses to start ({st})");

    // SIGTERM while a lockspace exists: refused; stops after the removal.
    let ctl = open_rw("/dev/misc/dlm-control")?;
    let minor = create(&ctl, "hold")?;
    let term = || {
        let p = rustix::process::Pid::from_raw(pid).ok_or("bad pid")?;
        rustix::process::kill_process(p, rustix::process::Signal::TERM)
            .map_err(|e| format!("kill: {e}"))
    };
    term()?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    check(controller_pid() == Some(pid), || {
        "dlm-controld stopped while a lockspace existed".into()
    })?;
    remove(&ctl, "hold", minor)?;
    wait_for(
        "dlm-controld exit after the last lockspace went",
        3.0,
        || controller_pid().is_none(),
    )?;
    check(
        !Path::new("/sys/kernel/config/dlm/cluster").exists(),
        || "configfs cluster left behind".into(),
    )?;
    println!("smoke: SIGTERM deferred while lockspace hold existed; stopped after its removal");

    // No controller: creation fails at once.
    let req = records::encode_create(b"orphan", 0, VERSION).map_err(|e| format!("{e:?}"))?;
    let t = Instant::now();
    match rustix::io::write(&ctl, req.as_bytes()) {
        Ok(m) => return Err(format!("create without a controller succeeded (minor {m})")),
        Err(e) => println!(
            "smoke: without a controller, create fails at once ({:?}): {e}",
            t.elapsed()
        ),
    }

    // A new controller starts and serves.
    let st = std::process::Command::new("dlm-controld")
        .arg("--single-node")
        .status()
        .map_err(|e| format!("run dlm-controld: {e}"))?;
    check(st.success(), || format!("restarting dlm-controld: {st}"))?;
    let minor = create(&ctl, "again")?;
    remove(&ctl, "again", minor)?;
    println!("smoke: controller restarted and serving");
    Ok(())
}

fn main() -> ExitCode {
    let t = Instant::now();
    match smoke().and_then(|()| lifecycle()) {
        Ok(()) => {
            println!("smoke: PASS ({:?})", t.elapsed());
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("smoke: FAIL: {e}");
            ExitCode::FAILURE
        }
    }
}
