//! What `dlm ls`, `dlm locks`, `dlm status` and `dlm leave` print.
//!
//! Each listing has one set of names: a table's column headers are its
//! JSON fields in capitals, and a value is written the same way in both
//! (a lockspace's mode as an octal string, lock flags by name). What the
//! backend cannot tell (the kernel keeps no create count that userspace
//! can read) is `-` in a table and `null` in JSON, never a made-up 0.

use dlm::query::{LockInfo, QueryOptions};
use dlm::{Backend, Dlm, LockFlags, LockspaceName};
use serde_json::{json, Value};

use crate::exit::{self, Failure};
use crate::{procs, Res};

/// The text after `dlm locks --help`.
pub const LOCKS_AFTER_HELP: &str = "\
Columns (the JSON fields of --json):
  LKID       lock id, hex
  RESOURCE   resource name (non-printable bytes as \\xNN; resource_hex has
             all of it)
  GRANTED    granted mode, REQUESTED the mode a request or conversion waits
             for, QUEUE granted, converting or waiting
  FLAGS      the DLM_LKF_* flags of the lock's last request
  PID        the process that made the lock's last request, as the DLM
             recorded it
  PROCESS    what /proc says of that pid now: its name, and for `dlm lock`
             the command that inherited the lock's descriptor (`inherited
             by PID (NAME)`); `exited` once it is gone (the lock then lives
             on in whoever still holds the descriptor, or as an orphan)
  ORPHAN     whether the lock is an orphan (PERSISTENT, owner gone)
  LVB        the resource's value block, printable bytes (--verbose: in hex
             too); none until a lock has written one

--verbose adds what dlm_tool lockdebug shows: the master node and the value
block's sequence number (it counts writes). On the fallback daemon every
resource is mastered locally and no sequence is kept; on the kernel both,
and the value block, come from debugfs (/sys/kernel/debug/dlm/<ls>_all),
which must be mounted. Kernels from 6.4 on do not show there whether a lock
is an orphan (ORPHAN says no).";

/// `dlm ls`.
pub fn ls(json: bool) -> Res<u8> {
    let dlm = Dlm::open()?;
    let kernel = dlm.backend() == Backend::Kernel;
    let spaces = dlm.lockspaces()?;
    // The kernel keeps no create or handle count userspace can read.
    let known = |n: usize| (!kernel).then_some(n);
    let rows: Vec<Value> = spaces
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "minor": s.minor,
                "create_count": known(s.create_count as usize),
                "mode": format!("{:04o}", s.mode),
                "uid": s.uid,
                "gid": s.gid,
                "locks": s.locks,
                "connections": known(s.connections),
            })
        })
        .collect();
    if json {
        out!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(exit::OK);
    }
    out!(
        "{:<24} {:>6} {:>12} {:>5} {:>6} {:>6} {:>7} {:>11}",
        "NAME",
        "MINOR",
        "CREATE_COUNT",
        "MODE",
        "UID",
        "GID",
        "LOCKS",
        "CONNECTIONS"
    );
    for r in &rows {
        out!(
            "{:<24} {:>6} {:>12} {:>5} {:>6} {:>6} {:>7} {:>11}",
            cell(&r["name"]),
            cell(&r["minor"]),
            cell(&r["create_count"]),
            cell(&r["mode"]),
            cell(&r["uid"]),
            cell(&r["gid"]),
            cell(&r["locks"]),
            cell(&r["connections"]),
        );
    }
    Ok(exit::OK)
}

/// A JSON value as a table cell: strings bare, `null` as `-`.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) if s.is_empty() => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Bool(true) => "yes".to_string(),
        Value::Bool(false) => "no".to_string(),
        other => other.to_string(),
    }
}

/// What `dlm locks` was asked.
pub struct LocksArgs {
    /// The lockspace.
    pub lockspace: LockspaceName,
    /// Print JSON.
    pub json: bool,
    /// One paragraph per lock, with the master node and the value block.
    pub verbose: bool,
    /// At most this many locks.
    pub limit: Option<u32>,
    /// Only lock ids above this.
    pub after: u32,
}

/// `DLM_LKF_*` names of `bits`, joined with `|`.
fn flag_names(bits: u32) -> String {
    let flags = LockFlags::from_bits_retain(bits);
    let mut names: Vec<String> = flags.iter_names().map(|(n, _)| n.to_string()).collect();
    let unknown = bits & !LockFlags::all().bits();
    if unknown != 0 {
        names.push(format!("{unknown:#x}"));
    }
    names.join("|")
}

/// Bytes from hex; `None` if it is not hex.
fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A value block's printable form: printable ASCII as is, other bytes
/// as `.`, trailing NULs left out.
fn printable(bytes: &[u8]) -> String {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    bytes[..end]
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect()
}

/// One lock as the listing shows it (and as `--json` prints it).
fn lock_row(l: &LockInfo, seen: &mut procs::Table) -> Value {
    let lvb = l.lvb.as_deref().and_then(unhex);
    json!({
        "lkid": format!("{:x}", l.lkid),
        "resource": l.resource,
        "resource_hex": l.resource_hex,
        "granted": l.granted,
        "requested": l.requested,
        "queue": l.queue,
        "flags": flag_names(l.flags),
        "pid": l.pid,
        "process": seen.describe(l.pid),
        "orphan": l.orphan,
        "lvb": lvb.as_deref().map(printable),
        "lvb_hex": l.lvb,
        "master": l.master,
        "lvb_seq": l.lvb_seq,
    })
}

/// `dlm locks`.
pub fn locks(a: &LocksArgs) -> Res<u8> {
    let dlm = Dlm::open()?;
    let options = QueryOptions {
        limit: a.limit,
        after: a.after,
    };
    let page = dlm.locks_with(&a.lockspace, &options)?;
    let mut seen = procs::Table::read();
    let rows: Vec<Value> = page.locks.iter().map(|l| lock_row(l, &mut seen)).collect();
    if a.json {
        let out = json!({
            "locks": rows,
            "truncated": page.truncated,
            "more": page.more,
        });
        out!("{}", serde_json::to_string_pretty(&out)?);
    } else if a.verbose {
        for r in &rows {
            print_verbose(r, dlm.backend())?;
        }
    } else {
        out!(
            "{:>8} {:<20} {:>7} {:>9} {:<10} {:<18} {:>8} {:<28} {:>6} LVB",
            "LKID",
            "RESOURCE",
            "GRANTED",
            "REQUESTED",
            "QUEUE",
            "FLAGS",
            "PID",
            "PROCESS",
            "ORPHAN"
        );
        for r in &rows {
            out!(
                "{:>8} {:<20} {:>7} {:>9} {:<10} {:<18} {:>8} {:<28} {:>6} {}",
                cell(&r["lkid"]),
                cell(&r["resource"]),
                cell(&r["granted"]),
                cell(&r["requested"]),
                if r["queue"].is_null() {
                    "ended".to_string()
                } else {
                    cell(&r["queue"])
                },
                cell(&r["flags"]),
                cell(&r["pid"]),
                cell(&r["process"]),
                cell(&r["orphan"]),
                cell(&r["lvb"]),
            );
        }
    }
    if page.truncated {
        let next = page
            .locks
            .last()
            .map(|l| format!(" or --after {:x} for the next ones", l.lkid))
            .unwrap_or_default();
        eprintln!(
            "dlm: {} more lock(s) not shown; use --limit N or --all{next}",
            page.more
        );
    }
    Ok(exit::OK)
}

/// One lock, one paragraph: `dlm locks --verbose`.
fn print_verbose(r: &Value, backend: Backend) -> Res<()> {
    out!(
        "lock {}  resource {}",
        cell(&r["lkid"]),
        cell(&r["resource"])
    );
    out!("  resource_hex {}", cell(&r["resource_hex"]));
    out!(
        "  granted {}  requested {}  queue {}",
        cell(&r["granted"]),
        cell(&r["requested"]),
        cell(&r["queue"])
    );
    out!("  flags {}", cell(&r["flags"]));
    out!(
        "  pid {} ({})  orphan {}",
        cell(&r["pid"]),
        cell(&r["process"]),
        cell(&r["orphan"])
    );
    let master = match (&r["master"], backend) {
        (Value::Number(n), _) if n.as_u64() == Some(0) => "this node".to_string(),
        (Value::Number(n), _) => format!("node {n}"),
        (_, Backend::Fallback) => "this node (dlmd masters every resource)".to_string(),
        (_, Backend::Kernel) => "unknown".to_string(),
    };
    out!("  master {master}");
    match (&r["lvb_hex"], backend) {
        (Value::String(hex), _) => {
            out!("  lvb_hex {hex}");
            out!("  lvb {:?}", cell(&r["lvb"]));
        }
        _ => out!("  lvb none"),
    }
    match (&r["lvb_seq"], backend) {
        (Value::Number(n), _) => out!("  lvb_seq {n}"),
        (_, Backend::Fallback) => out!("  lvb_seq (dlmd keeps no value-block sequence numbers)"),
        _ => {}
    }
    out!("");
    Ok(())
}

/// `dlm status`.
pub fn status(json: bool) -> Res<u8> {
    let control = dlm::kernel_control_device();
    let dlm = Dlm::open()?;
    let (a, b, c) = dlm.version()?;
    let socket = dlm.socket_path().map(|p| p.to_path_buf());
    let log = socket.as_deref().map(dlm_proto::paths::log_file);
    let log_exists = log.as_deref().is_some_and(|p| p.exists());
    let lockspaces = match dlm.lockspaces() {
        Ok(s) => Some(s.len()),
        Err(e) => {
            log::debug!("cannot list lockspaces: {e}");
            None
        }
    };
    let info = match dlm.daemon_info() {
        Ok(i) => i,
        Err(e) => {
            log::debug!("cannot ask the daemon about itself: {e}");
            None
        }
    };
    let v = json!({
        "library": format!("dlm-rs {}", env!("CARGO_PKG_VERSION")),
        "device_interface": format!(
            "{}.{}.{}",
            dlm::DEVICE_VERSION.0,
            dlm::DEVICE_VERSION.1,
            dlm::DEVICE_VERSION.2
        ),
        "kernel_control_device": control.as_deref().map(|p| p.display().to_string()),
        "backend": dlm.backend().to_string(),
        "backend_version": format!("{a}.{b}.{c}"),
        "daemon_pid": dlm.daemon_pid(),
        "socket": socket.as_deref().map(|p| p.display().to_string()),
        "log_file": log.as_deref().filter(|_| log_exists).map(|p| p.display().to_string()),
        "lockspaces": lockspaces,
        "kernel_model": info.as_ref().map(|i| i.kernel_model.clone()),
        "kernel_model_source": info.as_ref().map(|i| i.kernel_model_source.clone()),
    });
    if json {
        out!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(exit::OK);
    }
    out!(
        "library: {} (device interface {})",
        cell(&v["library"]),
        cell(&v["device_interface"])
    );
    match &control {
        Some(p) => out!("kernel DLM: control device {}", p.display()),
        None => out!("kernel DLM: not available (no dlm-control device)"),
    }
    out!("backend: {}", cell(&v["backend"]));
    out!("backend device version: {}", cell(&v["backend_version"]));
    if let Some(sock) = &socket {
        match dlm.daemon_pid() {
            Some(pid) => out!("daemon: dlmd pid {pid} at {}", sock.display()),
            None => out!("daemon: at {}", sock.display()),
        }
        match &log {
            Some(p) if log_exists => out!("daemon log: {}", p.display()),
            Some(p) => out!(
                "daemon log: none at {} (a daemon not started by dlm logs where its starter said)",
                p.display()
            ),
            None => {}
        }
    }
    if let Some(i) = &info {
        out!(
            "kernel model: Linux {} ({})",
            i.kernel_model,
            model_source(&i.kernel_model_source)
        );
    }
    if let Some(n) = lockspaces {
        out!("lockspaces: {n}");
    }
    Ok(exit::OK)
}

/// Where the daemon's kernel model came from, in words.
pub(crate) fn model_source(source: &str) -> &str {
    match source {
        "option" => "chosen with dlmd --kernel-model",
        "running kernel" => "the running kernel's series, dlmd's default",
        "newest" => "the newest model, dlmd's default on a kernel that is neither 6.1 nor 6.12",
        other => other,
    }
}

/// The create count of a lockspace: `Ok(None)` when it is gone,
/// `Ok(Some(None))` when the backend cannot tell.
fn create_count(dlm: &Dlm, name: &LockspaceName) -> Res<Option<Option<u32>>> {
    let text = name.to_string();
    let found = dlm.lockspaces()?.into_iter().find(|s| s.name == text);
    Ok(found.map(|s| (dlm.backend() == Backend::Fallback).then_some(s.create_count)))
}

/// The most references `dlm leave --force` drops when the backend cannot
/// count them.
const MAX_FORCED_RELEASES: u32 = 1024;

/// `dlm leave`: drop one reference (or, with `force`, all of them) and
/// say what is left.
pub fn leave(name: &LockspaceName, force: bool) -> Res<u8> {
    let dlm = Dlm::open()?;
    let before = match create_count(&dlm, name)? {
        Some(c) => c,
        None => {
            return Err(Failure::new(
                exit::OSERR,
                format!("cannot leave lockspace {name}: no such lockspace"),
            )
            .into())
        }
    };
    let bound = before.map_or(MAX_FORCED_RELEASES, |n| n.max(1));
    let mut dropped = 0u32;
    loop {
        let ls = match dlm.open_lockspace(name) {
            Ok(ls) => ls,
            // Someone else released the last reference meanwhile.
            Err(e) if dropped > 0 && e.errno() == dlm::Errno::ENOENT => break,
            Err(e) => return Err(e.into()),
        };
        dlm.release_lockspace(ls, true)?;
        dropped += 1;
        match create_count(&dlm, name)? {
            None => break,
            Some(left) if !force || dropped >= bound => {
                let left = left.map_or_else(
                    || "other joins hold it (the kernel does not say how many)".to_string(),
                    |n| format!("{n} reference(s) remain"),
                );
                if force {
                    return Err(Failure::new(
                        exit::OSERR,
                        format!("dropped {dropped} reference(s) to lockspace {name}, and it is still there: {left}"),
                    )
                    .into());
                }
                out!(
                    "dropped one reference to lockspace {name}; it stays: {left} \
                     (`dlm leave --force {name}` releases it whatever the count)"
                );
                return Ok(exit::OK);
            }
            Some(_) => {}
        }
    }
    if dropped == 1 {
        out!("released lockspace {name}: that was its last reference");
    } else {
        out!("released lockspace {name}: dropped all {dropped} references (--force)");
    }
    Ok(exit::OK)
}
