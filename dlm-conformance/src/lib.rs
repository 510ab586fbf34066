//! Lock-semantics conformance: one list of scenarios, three targets.
//!
//! A scenario is a small script of device operations by several owners
//! (each owner is one open lockspace fd). Running it records a **trace**:
//! every `write()` result and every record `read()` returns, with its
//! status, `sb_flags`, value block, blocking mode and order. The same
//! script runs against
//! - the in-process [`Engine`](dlm_engine::Engine) ([`EngineTarget`]),
//! - the fallback daemon `dlmd` ([`DeviceTarget::daemon`]), and
//! - the kernel DLM's devices ([`DeviceTarget::kernel`], inside the QEMU
//!   guest),
//!
//! and the kernel's traces, committed as golden files, one set for each
//! kernel series (`golden/6.1/`, `golden/6.12/`), are the oracle. The
//! engine models both kernels ([`KernelModel`]): under each model its
//! traces, and the daemon's, must equal that kernel's set
//! ([`golden_dir_for_model`]).
//!
//! # Script language
//!
//! One operation per line; `#` starts a comment; `Lx` labels name lock ids.
//!
//! ```text
//! open A                                  # a new owner (open the device)
//! close A                                 # close it
//! lock A EX res1 [FLAG...] [lvb=TEXT] [nobast] -> L1
//! convert A L1 PR [FLAG...] [lvb=TEXT] [nobast]
//! unlock A L1 [FLAG...] [lvb=TEXT]
//! cancel A L1
//! deadlock A L1
//! purge A NODEID PID|self
//! read A                                  # read until EAGAIN
//! ```
//!
//! Flags are `DLM_LKF_*` names without the prefix (`NOQUEUE`, `VALBLK`,
//! …). A lock's callback parameter is its label's number, so traces show
//! which request a callback answers.
#![forbid(unsafe_code)]

pub mod random;
pub mod target;
pub mod traffic;

use std::collections::HashMap;
use std::fmt::Write as _;

use dlm::{Errno, LockFlags, LockMode};
use dlm_proto::records::{self, Command, LockRequest, LockResult};

pub use target::{DeviceTarget, EngineTarget, Target};

/// `castaddr` in every request (any non-zero value works).
pub const CASTADDR: u64 = 0xC0;
/// `bastaddr` in requests that want blocking ASTs.
pub const BASTADDR: u64 = 0xB0;

/// One operation of a scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Open owner `n`.
    Open(usize),
    /// Close owner `n`.
    Close(usize),
    /// A `DLM_USER_LOCK` write; `label` receives the lock id.
    Lock {
        /// Owner.
        owner: usize,
        /// The request (label fields filled in when run).
        req: LockRequest,
        /// Label of the lock: for conversions the lock converted, for new
        /// requests the label the result is bound to.
        label: Option<usize>,
    },
    /// A `DLM_USER_UNLOCK` write (cancel with `CANCEL`).
    Unlock {
        /// Owner.
        owner: usize,
        /// The request.
        req: LockRequest,
        /// The lock.
        label: usize,
    },
    /// A `DLM_USER_DEADLOCK` write.
    Deadlock {
        /// Owner.
        owner: usize,
        /// The lock.
        label: usize,
    },
    /// A `DLM_USER_PURGE` write; `pid` `None` means the writer's own.
    Purge {
        /// Owner.
        owner: usize,
        /// Node id.
        nodeid: u32,
        /// Pid, or `None` for the caller's.
        pid: Option<u32>,
    },
    /// Read owner `n` until `EAGAIN`.
    Read(usize),
}

/// A named script.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its name (the file stem).
    pub name: String,
    /// Its operations.
    pub ops: Vec<Op>,
    /// Its source lines, for traces.
    pub lines: Vec<String>,
}

fn owner_index(s: &str) -> Result<usize, String> {
    let c = s.as_bytes();
    if c.len() == 1 && c[0].is_ascii_uppercase() {
        Ok(usize::from(c[0] - b'A'))
    } else {
        Err(format!("owner must be one capital letter, not {s:?}"))
    }
}

fn label_index(s: &str) -> Result<usize, String> {
    s.strip_prefix('L')
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n > 0 && n < 1000)
        .ok_or_else(|| format!("lock label must be L1..L999, not {s:?}"))
}

fn flag(name: &str) -> Option<LockFlags> {
    LockFlags::from_name(name)
}

/// The request fields common to every lock operation of label `label`.
fn base_request(label: usize, bast: bool) -> LockRequest {
    let mut r = LockRequest::default();
    r.castparam = label as u64;
    r.castaddr = CASTADDR;
    r.bastparam = label as u64;
    r.bastaddr = if bast { BASTADDR } else { 0 };
    r.lksb = 0x1000 + label as u64;
    r
}

/// Parse flags, `lvb=`, `nobast` and `mode=`-less words after the fixed
/// arguments; returns the flag bits, the lvb bytes and whether BASTs are
/// wanted.
fn options(words: &[&str]) -> Result<(u32, [u8; 32], bool), String> {
    let mut flags = 0u32;
    let mut lvb = [0u8; 32];
    let mut bast = true;
    for w in words {
        if let Some(text) = w.strip_prefix("lvb=") {
            let b = text.as_bytes();
            if b.len() > 32 {
                return Err(format!("lvb text over 32 bytes: {text:?}"));
            }
            lvb[..b.len()].copy_from_slice(b);
        } else if *w == "nobast" {
            bast = false;
        } else if let Some(raw) = w.strip_prefix("0x") {
            flags |= u32::from_str_radix(raw, 16).map_err(|e| format!("bad flag bits {w}: {e}"))?;
        } else {
            flags |= flag(w).ok_or_else(|| format!("unknown flag {w:?}"))?.bits();
        }
    }
    Ok((flags, lvb, bast))
}

fn mode_byte(s: &str) -> Result<u8, String> {
    if let Ok(m) = s.parse::<LockMode>() {
        return Ok(m.as_raw());
    }
    s.parse::<u8>().map_err(|_| format!("bad mode {s:?}"))
}

impl Scenario {
    /// Parse a script.
    pub fn parse(name: &str, text: &str) -> Result<Scenario, String> {
        let mut ops = Vec::new();
        let mut lines = Vec::new();
        for (no, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let err = |e: String| format!("{name}:{}: {e}", no + 1);
            let (body, bind) = match line.split_once("->") {
                Some((b, l)) => (b.trim(), Some(label_index(l.trim()).map_err(err)?)),
                None => (line, None),
            };
            let w: Vec<&str> = body.split_whitespace().collect();
            let need = |n: usize| {
                if w.len() < n {
                    Err(err(format!("{} needs {} arguments", w[0], n - 1)))
                } else {
                    Ok(())
                }
            };
            let op = match w[0] {
                "open" | "close" | "read" => {
                    need(2)?;
                    let o = owner_index(w[1]).map_err(err)?;
                    match w[0] {
                        "open" => Op::Open(o),
                        "close" => Op::Close(o),
                        _ => Op::Read(o),
                    }
                }
                "lock" => {
                    need(4)?;
                    let owner = owner_index(w[1]).map_err(err)?;
                    let label = bind.ok_or_else(|| err("lock needs -> Lx".into()))?;
                    let (flags, lvb, bast) = options(&w[4..]).map_err(err)?;
                    let mut req = base_request(label, bast);
                    req.mode = mode_byte(w[2]).map_err(err)?;
                    req.flags = flags;
                    req.lvb = lvb;
                    req.set_name(w[3].as_bytes())
                        .map_err(|e| err(e.to_string()))?;
                    Op::Lock {
                        owner,
                        req,
                        label: Some(label),
                    }
                }
                "convert" => {
                    need(4)?;
                    let owner = owner_index(w[1]).map_err(err)?;
                    let label = label_index(w[2]).map_err(err)?;
                    let (flags, lvb, bast) = options(&w[4..]).map_err(err)?;
                    let mut req = base_request(label, bast);
                    req.mode = mode_byte(w[3]).map_err(err)?;
                    req.flags = flags | LockFlags::CONVERT.bits();
                    req.lvb = lvb;
                    Op::Lock {
                        owner,
                        req,
                        label: Some(label),
                    }
                }
                "unlock" | "cancel" => {
                    need(3)?;
                    let owner = owner_index(w[1]).map_err(err)?;
                    let label = label_index(w[2]).map_err(err)?;
                    let (mut flags, lvb, _) = options(&w[3..]).map_err(err)?;
                    if w[0] == "cancel" {
                        flags |= LockFlags::CANCEL.bits();
                    }
                    let mut req = base_request(label, true);
                    req.flags = flags;
                    req.lvb = lvb;
                    Op::Unlock { owner, req, label }
                }
                "deadlock" => {
                    need(3)?;
                    Op::Deadlock {
                        owner: owner_index(w[1]).map_err(err)?,
                        label: label_index(w[2]).map_err(err)?,
                    }
                }
                "purge" => {
                    need(4)?;
                    Op::Purge {
                        owner: owner_index(w[1]).map_err(err)?,
                        nodeid: w[2].parse().map_err(|e| err(format!("nodeid: {e}")))?,
                        pid: if w[3] == "self" {
                            None
                        } else {
                            Some(w[3].parse().map_err(|e| err(format!("pid: {e}")))?)
                        },
                    }
                }
                other => return Err(err(format!("unknown operation {other:?}"))),
            };
            ops.push(op);
            lines.push(line.to_string());
        }
        Ok(Scenario {
            name: name.to_string(),
            ops,
            lines,
        })
    }
}

/// Format an errno the way traces show it: `-EINVAL`.
pub fn errno_name(e: Errno) -> String {
    let n = match e.raw() {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EINVAL => "EINVAL",
        libc::EDEADLK => "EDEADLK",
        libc::ENOBUFS => "ENOBUFS",
        libc::EBADE => "EBADE",
        libc::ENOSPC => "ENOSPC",
        other => return format!("-{other}"),
    };
    format!("-{n}")
}

fn status_name(st: i32) -> String {
    match -st {
        0 => "0".into(),
        libc::EAGAIN => "EAGAIN".into(),
        libc::EDEADLK => "EDEADLK".into(),
        libc::ETIMEDOUT => "ETIMEDOUT".into(),
        s if s == dlm_proto::status::EUNLOCK => "EUNLOCK".into(),
        s if s == dlm_proto::status::ECANCEL => "ECANCEL".into(),
        _ => st.to_string(),
    }
}

/// One record as a trace line.
pub fn record_line(owner: usize, r: &LockResult) -> String {
    let who = char::from(b'A' + owner as u8);
    let lvb = match r.lvb {
        Some(v) => {
            let end = v.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            format!(" lvb={:?}", String::from_utf8_lossy(&v[..end]))
        }
        None => String::new(),
    };
    if r.bast_mode != 0 {
        let mode = LockMode::try_from(r.bast_mode)
            .map_or_else(|_| r.bast_mode.to_string(), |m| m.to_string());
        // A blocking AST's lksb part: on 6.1 the status and flags of the
        // lock's last completion read, on 6.12 always 0 and 0. Shown only
        // when not zero, so that most traces read as before.
        let lksb = if r.status != 0 || r.sb_flags != 0 {
            format!(" status={} flags={}", status_name(r.status), r.sb_flags)
        } else {
            String::new()
        };
        format!(
            "  {who} bast L{} lkid={} mode={mode}{lksb} addr={:#x} lksb={:#x}",
            r.astparam, r.lkid, r.astaddr, r.user_lksb
        )
    } else {
        format!(
            "  {who} cast L{} lkid={} status={} flags={}{lvb} addr={:#x} lksb={:#x}",
            r.astparam,
            r.lkid,
            status_name(r.status),
            r.sb_flags,
            r.astaddr,
            r.user_lksb
        )
    }
}

/// Run a scenario against a target and return its trace.
pub fn run(sc: &Scenario, t: &mut dyn Target) -> Result<String, String> {
    let mut out = String::new();
    let mut labels: HashMap<usize, u32> = HashMap::new();
    let mut owners: HashMap<usize, usize> = HashMap::new();
    let handle = |owners: &HashMap<usize, usize>, o: usize| {
        owners
            .get(&o)
            .copied()
            .ok_or_else(|| format!("owner {} used before open", char::from(b'A' + o as u8)))
    };
    for (op, line) in sc.ops.iter().zip(&sc.lines) {
        let _ = writeln!(out, "{line}");
        let result: Option<Result<i64, Errno>> = match op {
            Op::Open(o) => {
                let h = t.open().map_err(|e| format!("{line}: open failed: {e}"))?;
                owners.insert(*o, h);
                None
            }
            Op::Close(o) => {
                let h = handle(&owners, *o)?;
                t.close(h)
                    .map_err(|e| format!("{line}: close failed: {e}"))?;
                owners.remove(o);
                None
            }
            Op::Read(o) => {
                let h = handle(&owners, *o)?;
                loop {
                    match t.read(h) {
                        Ok(Some(r)) => {
                            let _ = writeln!(out, "{}", record_line(*o, &r));
                        }
                        Ok(None) => break,
                        Err(e) => {
                            let _ = writeln!(out, "  read error {}", errno_name(e));
                            break;
                        }
                    }
                }
                None
            }
            Op::Lock { owner, req, label } => {
                let h = handle(&owners, *owner)?;
                let mut req = *req;
                let convert = req.flags & LockFlags::CONVERT.bits() != 0;
                if convert {
                    req.lkid = label.and_then(|l| labels.get(&l).copied()).unwrap_or(0);
                }
                let bytes = records::encode_lock(Command::Lock, &req, records::VERSION);
                let r = t.write(h, bytes.as_bytes());
                if let (Ok(v), false, Some(l)) = (&r, convert, label) {
                    labels.insert(*l, *v as u32);
                }
                Some(r)
            }
            Op::Unlock { owner, req, label } => {
                let h = handle(&owners, *owner)?;
                let mut req = *req;
                req.lkid = labels.get(label).copied().unwrap_or(0);
                let bytes = records::encode_lock(Command::Unlock, &req, records::VERSION);
                Some(t.write(h, bytes.as_bytes()))
            }
            Op::Deadlock { owner, label } => {
                let h = handle(&owners, *owner)?;
                let mut req = base_request(*label, true);
                req.lkid = labels.get(label).copied().unwrap_or(0);
                let bytes = records::encode_lock(Command::Deadlock, &req, records::VERSION);
                Some(t.write(h, bytes.as_bytes()))
            }
            Op::Purge { owner, nodeid, pid } => {
                let h = handle(&owners, *owner)?;
                let pid = pid.unwrap_or_else(|| t.pid(h));
                let bytes = records::encode_purge(*nodeid, pid, records::VERSION);
                Some(t.write(h, bytes.as_bytes()))
            }
        };
        match result {
            Some(Ok(v)) => {
                let _ = writeln!(out, "  = {v}");
            }
            Some(Err(e)) => {
                let _ = writeln!(out, "  = {}", errno_name(e));
            }
            None => {}
        }
    }
    // Close whatever is still open, so the target ends clean.
    for (_, h) in owners {
        let _ = t.close(h);
    }
    Ok(out)
}

/// A readable line diff: the first difference with a little context.
pub fn diff(expected: &str, got: &str) -> Option<String> {
    if expected == got {
        return None;
    }
    let e: Vec<&str> = expected.lines().collect();
    let g: Vec<&str> = got.lines().collect();
    let first = e
        .iter()
        .zip(&g)
        .position(|(a, b)| a != b)
        .unwrap_or(e.len().min(g.len()));
    let mut s = format!("traces differ at line {}:\n", first + 1);
    let from = first.saturating_sub(3);
    for (i, l) in e.iter().enumerate().take(first).skip(from) {
        let _ = writeln!(s, "  {:>4}   {l}", i + 1);
    }
    for l in e.iter().skip(first).take(4) {
        let _ = writeln!(s, "  -expected {l}");
    }
    for l in g.iter().skip(first).take(4) {
        let _ = writeln!(s, "  +got      {l}");
    }
    Some(s)
}

include!(concat!(env!("OUT_DIR"), "/scenarios.rs"));

/// Every embedded scenario, parsed.
pub fn scenarios() -> Result<Vec<Scenario>, String> {
    SCENARIOS
        .iter()
        .map(|(n, t)| Scenario::parse(n, t))
        .collect()
}

pub use dlm_engine::KernelModel;

/// The directory of the committed traces of kernel series `kernel`
/// (`golden/6.1/`, `golden/6.12/`), written by
/// `ci/kernel/conformance.sh --kernel SERIES --regenerate`.
pub fn golden_dir_for(kernel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden")
        .join(kernel)
}

/// The directory of the committed traces of the kernel `model` follows:
/// the traces the engine and the daemon must equal under that model.
pub fn golden_dir_for_model(model: KernelModel) -> std::path::PathBuf {
    golden_dir_for(model.series())
}

/// The model of the kernel this process runs on
/// (`/proc/sys/kernel/osrelease`) when it is one of the two, else the
/// newest: the default of `dlm-conformance --model`, as of `dlmd`'s.
pub fn running_kernel_model() -> KernelModel {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok();
    KernelModel::for_release(release.as_deref())
}
