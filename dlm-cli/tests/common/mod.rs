//! Shared support for the tests: temp dirs, children stopped by PID, and a
//! private `dlmd` per test.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use dlm::{Backend, Dlm};

pub const DLM: &str = env!("CARGO_BIN_EXE_dlm");

/// The `dlmd` built alongside `dlm`. Cargo builds it only when the whole
/// workspace is built, so a binary older than its sources (dlmd's or the
/// `dlm` crate's) fails here, with what to run, rather than later as a
/// puzzling test failure.
pub fn dlmd_bin() -> PathBuf {
    let p = Path::new(DLM).with_file_name("dlmd");
    let built = std::fs::metadata(&p)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is missing: build the whole workspace (cargo test --workspace)",
                p.display()
            )
        });
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for dir in [root.join("dlmd/src"), root.join("src")] {
        if let Some(newer) = newer_than(&dir, built) {
            panic!(
                "{} is older than {}: rebuild it (cargo build -p dlmd, with this test's profile) \
                 or test the whole workspace (cargo test --workspace)",
                p.display(),
                newer.display()
            );
        }
    }
    p
}

/// One of the `dlm` crate's examples (`dlm/examples/NAME.rs`), built by
/// `cargo test --workspace` next to `dlm`; a missing or stale one fails
/// here with what to run.
pub fn example_bin(name: &str) -> PathBuf {
    let p = Path::new(DLM).with_file_name("examples").join(name);
    let built = std::fs::metadata(&p)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is missing: build the examples (cargo test --workspace, or cargo build -p dlm --examples with this test's profile)",
                p.display()
            )
        });
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let source = root.join("dlm/examples").join(format!("{name}.rs"));
    let source_newer = std::fs::metadata(&source)
        .and_then(|m| m.modified())
        .is_ok_and(|m| m > built)
        .then_some(source);
    if let Some(newer) = source_newer.or_else(|| newer_than(&root.join("dlm/src"), built)) {
        {
            panic!(
                "{} is older than {}: rebuild it (cargo build -p dlm --examples, with this test's profile)",
                p.display(),
                newer.display()
            );
        }
    }
    p
}

/// A file below `dir` modified after `t`, if any.
fn newer_than(dir: &Path, t: std::time::SystemTime) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let path = e.path();
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_dir() {
            if let Some(p) = newer_than(&path, t) {
                return Some(p);
            }
        } else if meta.modified().is_ok_and(|m| m > t) {
            return Some(path);
        }
    }
    None
}

/// A scratch directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "dlm-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child that is killed (by PID, with its whole process group) and
/// reaped when dropped. Start children with [`spawn`] so that they lead
/// their own group and nothing they start outlives the test.
///
/// The group is signalled only while its leader has not been reaped: a
/// running or zombie leader holds its pid, so the group id is still ours.
/// Once a test has reaped the leader (`try_wait`, `wait`), the pid may
/// already belong to an unrelated process (pids wrap quickly on a busy
/// machine), and signalling it could kill, say, another test's daemon.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        use rustix::process::{WaitId, WaitIdOptions};
        if let Some(pid) = rustix::process::Pid::from_raw(self.0.id() as i32) {
            let unreaped = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
            if rustix::process::waitid(WaitId::Pid(pid), unreaped).is_ok() {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `c` as the leader of a new process group.
pub fn spawn(mut c: Command) -> Reaped {
    use std::os::unix::process::CommandExt;
    c.process_group(0);
    Reaped(c.spawn().expect("spawn a test child"))
}

/// A `dlmd` on a private socket, logging at debug level into
/// `<dir>/dlmd.log`. When a test fails, dropping it prints the daemon's
/// exit status (if it died) and its log.
pub struct Daemon {
    pub proc: Reaped,
    pub socket: PathBuf,
    /// `--log-level` of this daemon and of those started in its place.
    log_level: &'static str,
    _dir: TempDir,
}

impl Daemon {
    pub fn start() -> Daemon {
        Daemon::start_with(&[])
    }

    /// A daemon started with `args` besides the test's own.
    pub fn start_with(args: &[&str]) -> Daemon {
        Daemon::start_logging("debug", args)
    }

    /// [`start_with`](Self::start_with), logging at `level` (for long
    /// runs, whose debug log would be large); restarts keep the level.
    pub fn start_logging(level: &'static str, args: &[&str]) -> Daemon {
        let dir = TempDir::new("d");
        let socket = dir.0.join("dlmd.sock");
        let log = std::fs::File::create(dir.0.join("dlmd.log")).expect("daemon log file");
        let mut cmd = Command::new(dlmd_bin());
        cmd.arg("--socket")
            .arg(&socket)
            .args(["--log-level", level])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let mut d = Daemon {
            proc: spawn(cmd),
            socket,
            log_level: level,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&d.socket).is_err() {
            if let Ok(Some(st)) = d.proc.0.try_wait() {
                panic!("dlmd exited early ({st})");
            }
            assert!(Instant::now() < deadline, "dlmd did not start listening");
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    }

    /// Kill the daemon (SIGKILL: no clean stop) and start a new one on
    /// the same socket with `args`, logging to the same file.
    pub fn crash_and_restart(&mut self, args: &[&str]) {
        self.kill();
        self.restart(args);
    }

    /// Kill the daemon (SIGKILL) and reap it; [`restart`](Self::restart)
    /// starts the next one.
    pub fn kill(&mut self) {
        let _ = self.proc.0.kill();
        let _ = self.proc.0.wait();
    }

    /// Start a daemon with `args` on the socket of the one
    /// [`kill`](Self::kill) ended, logging to the same file.
    pub fn restart(&mut self, args: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self._dir.0.join("dlmd.log"))
            .expect("daemon log file");
        let mut cmd = Command::new(dlmd_bin());
        cmd.arg("--socket")
            .arg(&self.socket)
            .args(["--log-level", self.log_level])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        self.proc = spawn(cmd);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            if let Ok(Some(st)) = self.proc.0.try_wait() {
                panic!("dlmd exited early ({st})");
            }
            assert!(Instant::now() < deadline, "dlmd did not start listening");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The same as [`start`](Self::start): every daemon logs at debug
    /// level.
    pub fn start_debug_log() -> Daemon {
        Daemon::start()
    }

    /// What the daemon logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self._dir.0.join("dlmd.log")).unwrap_or_default()
    }

    /// The last `n` lines of the daemon's log, with a line saying how
    /// many came before.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        let skip = lines.len().saturating_sub(n);
        let mut out = String::new();
        if skip > 0 {
            out.push_str(&format!("[{skip} earlier lines left out]\n"));
        }
        for l in &lines[skip..] {
            out.push_str(l);
            out.push('\n');
        }
        out
    }

    /// The running daemon's resident set (`VmRSS` in
    /// `/proc/<pid>/status`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.proc.0.id()).expect("the daemon's VmRSS")
    }

    /// Of that, the anonymous part (`RssAnon`: heap and stacks), in KiB.
    pub fn rss_anon_kib(&self) -> u64 {
        status_kib(self.proc.0.id(), "RssAnon").expect("the daemon's RssAnon")
    }

    pub fn dlm(&self) -> Command {
        let mut c = Command::new(DLM);
        c.env("DLM_SOCKET", &self.socket)
            .env("DLM_BACKEND", "fallback")
            .env("DLM_NO_AUTOSTART", "1");
        c
    }

    /// A handle on this daemon. Its lockspaces wait 2 s for a daemon to
    /// come back after one dies (see [`client_replaying`](Self::client_replaying)).
    pub fn client(&self) -> Dlm {
        self.client_replaying(Duration::from_secs(2))
    }

    /// A handle whose lockspaces wait up to `wait` for a daemon to answer
    /// again after this one dies, to replay their locks onto it.
    pub fn client_replaying(&self, wait: Duration) -> Dlm {
        Dlm::builder()
            .backend(Backend::Fallback)
            .socket(&self.socket)
            .autostart(false)
            .replay_wait(wait)
            .open()
            .expect("connect to dlmd")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let pid = self.proc.0.id();
        let state = match self.proc.0.try_wait() {
            Ok(Some(st)) => format!("exited ({st})"),
            Ok(None) => "still running".to_string(),
            Err(e) => format!("in an unknown state ({e})"),
        };
        eprintln!(
            "--- dlmd pid {pid} {state}; its log: ---\n{}--- end of dlmd log ---",
            self.log_tail(400)
        );
    }
}

/// `VmRSS` of process `pid`, in KiB; `None` if it has gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS")
}

/// A `/proc/<pid>/status` field in kB (`VmRSS`, `RssAnon`, …).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// This test binary run again to execute only the (ignored) test `name`,
/// as a worker process of another test; `envs` tell it what to do (a
/// worker test returns at once when they are not set).
pub fn worker_command(name: &str, envs: &[(&str, &std::ffi::OsStr)]) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("test binary"));
    c.args([
        name,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .stdin(Stdio::null());
    for (k, v) in envs {
        c.env(k, v);
    }
    c
}

pub fn run(mut c: Command) -> Output {
    c.output().expect("run dlm")
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
