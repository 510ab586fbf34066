//! The Rust rows of the guest benchmark table (`ci/kernel/bench.sh`):
//! lock+unlock pairs of EX on one resource, timed.
//!
//! ```text
//! dlm-guest-bench api      ITERATIONS [LABEL]      Lockspace::lock + Lock::unlock, Backend::Kernel
//! dlm-guest-bench raw      ITERATIONS              write()+read() on the device, std::fs::File + dlm_proto::records
//! dlm-guest-bench fallback ITERATIONS SOCKET       Lockspace::lock + Lock::unlock, Backend::Fallback
//! ```
//!
//! Each run creates its own lockspace, warms up with 1% of the
//! iterations, times the rest of the loop, releases the lockspace and
//! prints `BENCH <label> <iterations> <seconds>`, the line bench.sh
//! parses (LABEL overrides the `api` row's label, so two builds of this
//! program can be told apart). Any failure exits 1 with a message.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Instant;

use dlm::{Backend, Dlm, LockRequest, Lockspace, Outcome};
use dlm::{LockMode, LockspaceFlags, LockspaceName, ResourceName};
use dlm_proto::records::{self, Command};

type R<T> = Result<T, String>;

const RESOURCE: &str = "hot";

fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn create(dlm: &Dlm, name: &str) -> R<(LockspaceName, Lockspace)> {
    let name = LockspaceName::new(name).map_err(err("lockspace name"))?;
    let ls = dlm
        .create_lockspace(&name, LockspaceFlags::empty(), 0o600)
        .map_err(err("create lockspace"))?;
    Ok((name, ls))
}

/// The API's blocking pair, on either backend.
fn api_loop(ls: &Lockspace, iters: u64) -> R<()> {
    let res = ResourceName::new(RESOURCE).map_err(err("resource name"))?;
    for i in 0..iters {
        match ls.lock(LockRequest::new(res, LockMode::Ex)) {
            Ok(Outcome::Granted(l)) => l.unlock().map_err(|e| format!("unlock {i}: {e}"))?,
            Ok(Outcome::NotGranted(c)) => return Err(format!("lock {i}: not granted: {c:?}")),
            Err(e) => return Err(format!("lock {i}: {e}")),
        }
    }
    Ok(())
}

fn api(dlm: &Dlm, lsname: &str, iters: u64) -> R<f64> {
    let (_, ls) = create(dlm, lsname)?;
    api_loop(&ls, iters / 100 + 1)?;
    let t = Instant::now();
    api_loop(&ls, iters)?;
    let secs = t.elapsed().as_secs_f64();
    dlm.release_lockspace(ls, true)
        .map_err(err("release lockspace"))?;
    Ok(secs)
}

/// The floor: what any library must do at least, one write() and one
/// read() per operation, on one thread.
struct Raw {
    dev: File,
    lock: records::WriteBuf,
    buf: [u8; records::RESULT_WITH_LVB_SIZE],
}

impl Raw {
    fn read_status(&mut self, what: &str, i: u64) -> R<records::LockResult> {
        let n = self
            .dev
            .read(&mut self.buf)
            .map_err(|e| format!("{what} {i}: read: {e}"))?;
        records::decode_result(&self.buf[..n]).map_err(|e| format!("{what} {i}: bad record: {e:?}"))
    }

    fn pairs(&mut self, iters: u64) -> R<()> {
        let eunlock = -(dlm_sys::DLM_EUNLOCK as i32);
        for i in 0..iters {
            // The kernel's write() returns the new lock id.
            self.dev
                .write(self.lock.as_bytes())
                .map_err(|e| format!("lock {i}: write: {e}"))?;
            let r = self.read_status("lock", i)?;
            if r.status != 0 {
                return Err(format!("lock {i}: completion {r:?}"));
            }
            let mut u = records::LockRequest::default();
            u.lkid = r.lkid;
            u.castparam = 2;
            u.castaddr = 1;
            u.lksb = 3;
            let unlock = records::encode_lock(Command::Unlock, &u, records::VERSION);
            self.dev
                .write(unlock.as_bytes())
                .map_err(|e| format!("unlock {i}: write: {e}"))?;
            let r = self.read_status("unlock", i)?;
            if r.status != eunlock {
                return Err(format!("unlock {i}: completion {r:?}"));
            }
        }
        Ok(())
    }
}

fn raw(dlm: &Dlm, lsname: &str, iters: u64) -> R<f64> {
    let (name, ls) = create(dlm, lsname)?;
    let path = ["/dev/misc/", "/dev/"]
        .iter()
        .map(|d| format!("{d}dlm_{lsname}"))
        .find(|p| std::path::Path::new(p).exists())
        .ok_or_else(|| format!("no device node for lockspace {name}"))?;
    let dev = File::options()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(err("open the lockspace device"))?;
    let mut req = records::LockRequest::default();
    req.mode = LockMode::Ex.as_raw();
    req.castparam = 1;
    req.castaddr = 1;
    req.lksb = 3;
    req.set_name(RESOURCE.as_bytes())
        .map_err(|e| format!("resource name: {e:?}"))?;
    let lock = records::encode_lock(Command::Lock, &req, records::VERSION);
    let mut r = Raw {
        dev,
        lock,
        buf: [0; records::RESULT_WITH_LVB_SIZE],
    };
    r.pairs(iters / 100 + 1)?;
    let t = Instant::now();
    r.pairs(iters)?;
    let secs = t.elapsed().as_secs_f64();
    drop(r);
    dlm.release_lockspace(ls, true)
        .map_err(err("release lockspace"))?;
    Ok(secs)
}

fn run(args: &[String]) -> R<(String, u64, f64)> {
    let usage =
        "usage: dlm-guest-bench api ITERATIONS [LABEL] | raw ITERATIONS | fallback ITERATIONS SOCKET";
    let mode = args.first().ok_or(usage)?.as_str();
    let iters: u64 = args
        .get(1)
        .ok_or(usage)?
        .parse()
        .map_err(err("ITERATIONS"))?;
    let (label, secs) = match mode {
        "api" | "raw" => {
            let dlm = Dlm::builder()
                .backend(Backend::Kernel)
                .open()
                .map_err(err("open the kernel backend"))?;
            if mode == "api" {
                let label = args.get(2).map_or("rust-api", String::as_str);
                (label, api(&dlm, "bench-api", iters)?)
            } else {
                ("raw", raw(&dlm, "bench-raw", iters)?)
            }
        }
        "fallback" => {
            let socket = args.get(2).ok_or(usage)?;
            let dlm = Dlm::builder()
                .backend(Backend::Fallback)
                .socket(socket)
                .autostart(false)
                .open()
                .map_err(err("connect to dlmd"))?;
            ("rust-api-fallback", api(&dlm, "bench-fb", iters)?)
        }
        _ => return Err(usage.into()),
    };
    Ok((label.to_string(), iters, secs))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok((label, iters, secs)) => {
            println!("BENCH {label} {iters} {secs:.6}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dlm-guest-bench: FAIL: {e}");
            println!("dlm-guest-bench: FAIL: {e}");
            ExitCode::FAILURE
        }
    }
}
