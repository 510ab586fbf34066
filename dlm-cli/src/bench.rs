//! `dlm bench`: the fallback daemon's figures, each as a ratio to a
//! Unix-socket echo round trip measured in the same run (the floor for a
//! design where every request is a message to another process).
//!
//! Workers are separate processes (`dlm bench-worker ...`), started and
//! stopped by PID; they report one line of numbers on stdout.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dlm::{Dlm, LockRequest, Outcome};
use dlm::{LockMode, LockspaceName, ResourceName};

use crate::Res;

const LOCKSPACE: &str = "dlm-bench";
const ECHO_SIZE: usize = 128;
/// Threads of the one-process, many-threads row.
const THREADS: usize = 4;

/// Options of `dlm bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds per measurement (0.1 to 3600).
    #[arg(long, default_value_t = 2.0, value_parser = parse_secs)]
    secs: f64,
    /// How many locks the "hold" figure takes (1 to 1000000).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=MAX_HOLD))]
    hold: u32,
    /// Measure the daemon on this socket instead of a private one that
    /// dlm bench starts and stops (DLM_BACKEND=kernel measures the
    /// kernel DLM).
    #[arg(long, value_name = "PATH")]
    socket: Option<std::path::PathBuf>,
}

/// The most locks `--hold` takes.
const MAX_HOLD: i64 = 1_000_000;
/// The longest measurement, in seconds.
const MAX_SECS: f64 = 3600.0;

/// Seconds of a measurement: 0.1 to [`MAX_SECS`].
fn parse_secs(s: &str) -> Result<f64, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(0.1..=MAX_SECS).contains(&secs) {
        return Err(format!("`{s}`: from 0.1 to {MAX_SECS} seconds"));
    }
    Ok(secs)
}

/// Options of the hidden worker.
#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// `echo-server`, `lockloop`, `lockthreads`, `handoff` or `persistent`.
    role: String,
    /// Socket path (echo server) or resource name (lock workers).
    target: String,
    /// Seconds to run (0.1 to 3600).
    #[arg(long, default_value_t = 1.0, value_parser = parse_secs)]
    secs: f64,
}

struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    fn spawn(role: &str, target: &str, secs: f64) -> Res<Worker> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(["bench-worker", role, target, "--secs", &secs.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().ok_or("worker has no stdout")?);
        let mut w = Worker {
            child,
            stdin,
            stdout,
        };
        let line = w.line()?;
        if line.trim() != "ready" {
            return Err(format!("worker {role} failed to start: {line:?}").into());
        }
        Ok(w)
    }

    fn line(&mut self) -> Res<String> {
        let mut s = String::new();
        self.stdout.read_line(&mut s)?;
        Ok(s)
    }

    fn go(&mut self) -> Res<()> {
        if let Some(i) = self.stdin.as_mut() {
            i.write_all(b"go\n")?;
            i.flush()?;
        }
        Ok(())
    }

    /// Read the worker's result line: numbers separated by spaces.
    fn result(&mut self) -> Res<Vec<f64>> {
        let line = self.line()?;
        line.split_whitespace()
            .map(|x| {
                x.parse::<f64>()
                    .map_err(|e| format!("bad worker output {line:?}: {e}").into())
            })
            .collect()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Stop by PID, and reap.
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_go() -> Res<()> {
    out!("ready");
    std::io::stdout().flush()?;
    let mut s = String::new();
    std::io::stdin().read_line(&mut s)?;
    Ok(())
}

/// Run a worker role (a separate process).
pub fn worker(a: WorkerArgs) -> Res<u8> {
    // In range: see `parse_secs`.
    let secs = Duration::try_from_secs_f64(a.secs).map_err(|e| format!("--secs: {e}"))?;
    match a.role.as_str() {
        "echo-server" => {
            let _ = std::fs::remove_file(&a.target);
            let l = UnixListener::bind(&a.target)?;
            out!("ready");
            std::io::stdout().flush()?;
            let (mut s, _) = l.accept()?;
            let mut buf = [0u8; ECHO_SIZE];
            while s.read_exact(&mut buf).is_ok() {
                s.write_all(&buf)?;
            }
            let _ = std::fs::remove_file(&a.target);
            Ok(0)
        }
        "lockloop" => {
            let dlm = Dlm::open()?;
            let ls = crate::open_or_create(&dlm, &LockspaceName::new(LOCKSPACE)?)?;
            let res = ResourceName::new(a.target.as_bytes())?;
            wait_for_go()?;
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < secs {
                match ls.lock(LockRequest::new(res, LockMode::Ex))? {
                    Outcome::Granted(l) => l.unlock()?,
                    Outcome::NotGranted(c) => {
                        return Err(format!("not granted: {}", c.status).into())
                    }
                }
                n += 1;
            }
            out!("{} {}", n, start.elapsed().as_secs_f64());
            Ok(0)
        }
        "lockthreads" => {
            // THREADS threads of this process, one resource each, on one
            // shared lockspace handle: do they queue behind each other's
            // round trips?
            let dlm = Dlm::open()?;
            let ls = crate::open_or_create(&dlm, &LockspaceName::new(LOCKSPACE)?)?;
            let names = (0..THREADS)
                .map(|i| ResourceName::new(format!("{}-{i}", a.target)))
                .collect::<Result<Vec<_>, _>>()?;
            wait_for_go()?;
            let start = Instant::now();
            let counts = std::thread::scope(|s| {
                let hs: Vec<_> = names
                    .iter()
                    .map(|res| {
                        let ls = &ls;
                        s.spawn(move || -> Result<u64, dlm::Error> {
                            let mut n = 0u64;
                            while start.elapsed() < secs {
                                if let Outcome::Granted(l) =
                                    ls.lock(LockRequest::new(*res, LockMode::Ex))?
                                {
                                    l.unlock()?;
                                }
                                n += 1;
                            }
                            Ok(n)
                        })
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or(Err(dlm::Error::InvalidArgument("a bench thread panicked")))
                    })
                    .collect::<Result<Vec<u64>, _>>()
            })?;
            let n: u64 = counts.iter().sum();
            println!("{} {}", n, start.elapsed().as_secs_f64());
            Ok(0)
        }
        "handoff" => {
            let dlm = Dlm::open()?;
            let ls = crate::open_or_create(&dlm, &LockspaceName::new(LOCKSPACE)?)?;
            ls.start_event_loop()?;
            let res = ResourceName::new(a.target.as_bytes())?;
            wait_for_go()?;
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < secs {
                let wanted = Arc::new(AtomicBool::new(false));
                let w = wanted.clone();
                let req = LockRequest::new(res, LockMode::Ex)
                    .timeout(Duration::from_millis(200))
                    .on_blocking(move |_, _| w.store(true, Ordering::SeqCst));
                let lock = match ls.lock(req)? {
                    Outcome::Granted(l) => l,
                    Outcome::NotGranted(_) => continue,
                };
                n += 1;
                // Hold it until the other side asks (or time is up).
                while !wanted.load(Ordering::SeqCst) && start.elapsed() < secs {
                    std::thread::yield_now();
                }
                lock.unlock()?;
            }
            out!("{} {}", n, start.elapsed().as_secs_f64());
            Ok(0)
        }
        "persistent" => {
            // Take a PERSISTENT EX lock and hold it until killed (tests
            // kill this process to make an orphan).
            let dlm = Dlm::open()?;
            let ls = crate::open_or_create(&dlm, &LockspaceName::new(LOCKSPACE)?)?;
            let res = ResourceName::new(a.target.as_bytes())?;
            let req = LockRequest::new(res, LockMode::Ex).flags(dlm::LockFlags::PERSISTENT);
            match ls.lock(req)? {
                Outcome::Granted(l) => {
                    let _id = l.into_id();
                    out!("ready");
                    std::io::stdout().flush()?;
                    loop {
                        std::thread::sleep(Duration::from_secs(3600));
                    }
                }
                Outcome::NotGranted(c) => Err(format!("not granted: {}", c.status).into()),
            }
        }
        other => Err(format!("unknown worker role {other}").into()),
    }
}

fn echo_rtt(dir: &Path, secs: f64) -> Res<f64> {
    let path = dir.join("echo.sock");
    let path_s = path.to_string_lossy().into_owned();
    let server = Worker::spawn("echo-server", &path_s, secs)?;
    let rtt = echo_loop(&path, secs);
    drop(server);
    let _ = std::fs::remove_file(&path);
    rtt
}

fn echo_loop(path: &Path, secs: f64) -> Res<f64> {
    let mut s = UnixStream::connect(path)?;
    let buf = [7u8; ECHO_SIZE];
    let mut back = [0u8; ECHO_SIZE];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        s.write_all(&buf)?;
        s.read_exact(&mut back)?;
        n += 1;
    }
    Ok(start.elapsed().as_secs_f64() / n as f64)
}

/// A private directory for the run (the private daemon's socket and log,
/// the echo socket), removed when the run ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Res<Scratch> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        for n in 0..100u32 {
            let dir = base.join(format!("dlm-bench-{}-{n}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(Scratch(dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("cannot create {}: {e}", dir.display()).into()),
            }
        }
        Err(format!(
            "cannot create a directory for dlm bench in {}",
            base.display()
        )
        .into())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            log::warn!("cannot remove {}: {e}", self.0.display());
        }
    }
}

/// Make this process and the workers it starts use the daemon on `sock`.
fn use_socket(sock: &Path) {
    // Before any other thread exists: the workers inherit it.
    std::env::set_var("DLM_SOCKET", sock);
    std::env::set_var("DLM_BACKEND", "fallback");
    std::env::set_var("DLM_NO_AUTOSTART", "1");
}

/// How long the private daemon has to start, and to stop on SIGTERM.
const DAEMON_BOUND: Duration = Duration::from_secs(10);

/// A `dlmd` of the run's own, stopped (SIGTERM, then SIGKILL) by its pid
/// when the run ends.
struct PrivateDaemon(Child);

impl PrivateDaemon {
    fn start(dir: &Path) -> Res<PrivateDaemon> {
        let sock = dir.join("dlmd.sock");
        let prog = dlm_proto::paths::dlmd_program();
        let child = Command::new(&prog)
            .arg("--user")
            .arg("--socket")
            .arg(&sock)
            .arg("--log-file")
            .arg(dir.join("dlmd.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| -> Box<dyn std::error::Error> {
                if e.kind() == std::io::ErrorKind::NotFound {
                    dlm::Error::DaemonMissing(dlm_proto::paths::dlmd_missing()).into()
                } else {
                    format!("cannot start {}: {e}", prog.display()).into()
                }
            })?;
        let mut d = PrivateDaemon(child);
        let deadline = Instant::now() + DAEMON_BOUND;
        while UnixStream::connect(&sock).is_err() {
            if let Some(st) = d.0.try_wait()? {
                return Err(format!("the private dlmd exited at once ({st})").into());
            }
            if Instant::now() >= deadline {
                return Err("the private dlmd did not start listening".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        use_socket(&sock);
        Ok(d)
    }
}

impl Drop for PrivateDaemon {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.0.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + DAEMON_BOUND;
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Release the bench's lockspace when the run ends.
struct RemoveLockspace<'a>(&'a Dlm);

impl Drop for RemoveLockspace<'_> {
    fn drop(&mut self) {
        let Ok(name) = LockspaceName::new(LOCKSPACE) else {
            return;
        };
        match self.0.open_lockspace(&name) {
            Ok(ls) => {
                if let Err(e) = self.0.release_lockspace(ls, true) {
                    log::warn!("cannot remove lockspace {LOCKSPACE}: {e}");
                }
            }
            Err(e) => log::debug!("lockspace {LOCKSPACE} is gone already: {e}"),
        }
    }
}

fn rss_kib(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

struct Row {
    what: String,
    value: String,
    per_op_us: Option<f64>,
    ratio: Option<f64>,
    note: String,
}

/// `dlm bench`.
pub fn run(a: Args) -> Res<u8> {
    let secs = a.secs.max(0.1);
    let scratch = Scratch::new()?;
    let kernel = std::env::var("DLM_BACKEND").is_ok_and(|b| b == "kernel");
    let _private = match (&a.socket, kernel) {
        (Some(sock), _) => {
            use_socket(sock);
            None
        }
        (None, true) => None,
        (None, false) => Some(PrivateDaemon::start(&scratch.0)?),
    };
    let dlm = Dlm::open()?;
    if dlm.backend() != dlm::Backend::Fallback {
        eprintln!("dlm bench: measuring the {} backend", dlm.backend());
    }
    let daemon = dlm.daemon_pid();
    // Make sure the lockspace exists before workers open it, and remove
    // it when done (after `_ls` is closed: a release waits for every
    // handle to close).
    let _remove = RemoveLockspace(&dlm);
    let _ls = crate::open_or_create(&dlm, &LockspaceName::new(LOCKSPACE)?)?;
    let mut rows = Vec::new();

    let echo = echo_rtt(&scratch.0, secs)?;
    rows.push(Row {
        what: "Unix-socket echo round trip (floor)".into(),
        value: format!("{:.0}/s", 1.0 / echo),
        per_op_us: Some(echo * 1e6),
        ratio: Some(1.0),
        note: String::new(),
    });

    for procs in [1usize, 2, 4] {
        let mut ws = (0..procs)
            .map(|i| Worker::spawn("lockloop", &format!("bench-{i}"), secs))
            .collect::<Res<Vec<_>>>()?;
        for w in &mut ws {
            w.go()?;
        }
        let mut total = 0.0;
        let mut per_pair = 0.0;
        for w in &mut ws {
            let r = w.result()?;
            let (n, t) = (
                r.first().copied().unwrap_or(0.0),
                r.get(1).copied().unwrap_or(1.0),
            );
            total += n / t;
            per_pair += t / n.max(1.0);
        }
        per_pair /= procs as f64;
        let ratio = per_pair / (2.0 * echo);
        rows.push(Row {
            what: format!(
                "lock+unlock, {procs} process{}",
                if procs == 1 { "" } else { "es" }
            ),
            value: format!("{total:.0} pairs/s"),
            per_op_us: Some(per_pair * 1e6),
            ratio: Some(per_pair / echo),
            note: if procs == 1 {
                format!(
                    "{ratio:.2}x two echoes; target <= 1.25x: {}",
                    if ratio <= 1.25 { "met" } else { "MISSED" }
                )
            } else {
                format!("{ratio:.2}x two echoes per process")
            },
        });
    }

    {
        // Beside the one-thread row: threads of one process on one
        // lockspace handle, each on its own resource. Threads that queued
        // behind each other's round trips would make no more pairs than
        // one thread.
        let mut w = Worker::spawn("lockthreads", "bench-t", secs)?;
        w.go()?;
        let r = w.result()?;
        let (n, t) = (
            r.first().copied().unwrap_or(0.0),
            r.get(1).copied().unwrap_or(1.0),
        );
        let per_pair = t * THREADS as f64 / n.max(1.0);
        let one = rows
            .iter()
            .find(|r| r.what == "lock+unlock, 1 process")
            .and_then(|r| r.per_op_us)
            .map_or(0.0, |us| us / 1e6);
        rows.push(Row {
            what: format!(
                "lock+unlock, {THREADS} threads of one process, different resources, one lockspace"
            ),
            value: format!("{:.0} pairs/s", n / t),
            per_op_us: Some(per_pair * 1e6),
            ratio: Some(per_pair / echo),
            note: format!(
                "{:.2}x the 1-thread rate; {:.2}x two echoes per thread",
                (n / t) * one,
                per_pair / (2.0 * echo)
            ),
        });
        // The row goes right after the one-process row.
        let row = rows.pop().ok_or("no row")?;
        rows.insert(2, row);
    }

    {
        let mut ws = (0..2)
            .map(|_| Worker::spawn("handoff", "handoff", secs))
            .collect::<Res<Vec<_>>>()?;
        for w in &mut ws {
            w.go()?;
        }
        let mut n = 0.0;
        let mut t: f64 = 0.0;
        for w in &mut ws {
            let r = w.result()?;
            n += r.first().copied().unwrap_or(0.0);
            t = t.max(r.get(1).copied().unwrap_or(1.0));
        }
        let per = t / n.max(1.0);
        rows.push(Row {
            what: "EX handoff between 2 processes (BAST)".into(),
            value: format!("{:.0} acquisitions/s", n / t),
            per_op_us: Some(per * 1e6),
            ratio: Some(per / echo),
            note: String::new(),
        });
    }

    {
        let ls = crate::open_or_create(&dlm, &LockspaceName::new(LOCKSPACE)?)?;
        let before = daemon.and_then(rss_kib);
        let start = Instant::now();
        let mut ids = Vec::with_capacity(a.hold as usize);
        for i in 0..a.hold {
            let res = ResourceName::new(format!("hold-{i}"))?;
            match ls.lock(LockRequest::new(res, LockMode::Ex))? {
                Outcome::Granted(l) => ids.push(l.into_id()),
                Outcome::NotGranted(c) => {
                    return Err(format!("hold: not granted: {}", c.status).into())
                }
            }
        }
        let took = start.elapsed().as_secs_f64();
        let after = daemon.and_then(rss_kib);
        let per = took / f64::from(a.hold.max(1));
        rows.push(Row {
            what: format!("take and hold {} locks, one process", a.hold),
            value: format!("{took:.2} s"),
            per_op_us: Some(per * 1e6),
            ratio: Some(per / echo),
            note: String::new(),
        });
        let mem = match (before, after) {
            (Some(b), Some(af)) => format!(
                "{:.1} MiB ({:.0} B per lock)",
                af.saturating_sub(b) as f64 / 1024.0,
                af.saturating_sub(b) as f64 * 1024.0 / f64::from(a.hold.max(1))
            ),
            _ => "unknown (daemon pid not visible)".into(),
        };
        rows.push(Row {
            what: "daemon memory for those locks (RSS)".into(),
            value: mem,
            per_op_us: None,
            ratio: None,
            note: String::new(),
        });
        // Closing the handle releases all of them in the daemon.
        drop(ids);
        drop(ls);
    }

    out!("");
    out!(
        "dlm bench ({} backend{}; ratios are to one echo round trip = {:.1} us, same run)",
        dlm.backend(),
        daemon
            .map(|p| format!(", dlmd pid {p}"))
            .unwrap_or_default(),
        echo * 1e6
    );
    out!(
        "{:<80} {:>18} {:>10} {:>8}  note",
        "figure",
        "value",
        "us/op",
        "ratio"
    );
    out!("{}", "-".repeat(140));
    for r in rows {
        out!(
            "{:<80} {:>18} {:>10} {:>8}  {}",
            r.what,
            r.value,
            r.per_op_us.map(|x| format!("{x:.2}")).unwrap_or_default(),
            r.ratio.map(|x| format!("{x:.2}x")).unwrap_or_default(),
            r.note
        );
    }
    Ok(0)
}
