//! The daemon a user manages: `dlm daemon status` and `stop` act on the
//! daemon of this user's socket only, the auto-started daemon logs next
//! to its socket, a missing dlmd and a relative `DLM_SOCKET` get clear
//! errors, and `dlm bench` cleans up after itself. Real processes.
#![forbid(unsafe_code)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{dlmd_bin, wait_for, Daemon, TempDir, DLM};

const BOUND: Duration = Duration::from_secs(20);

/// `dlm` with a clean environment for the fallback daemon on `socket`,
/// auto-start allowed.
fn dlm_on(socket: &Path) -> Command {
    let mut c = Command::new(DLM);
    c.env_remove("DLM_NO_AUTOSTART")
        .env("DLM_SOCKET", socket)
        .env("DLM_BACKEND", "fallback")
        .env("DLM_DLMD", dlmd_bin())
        .stdin(Stdio::null());
    c
}

fn out(c: impl std::borrow::BorrowMut<Command>) -> Output {
    let mut c = c;
    c.borrow_mut().output().expect("run dlm")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Whether `pid` is a dlmd serving `socket` (by its command line).
fn serves(pid: u32, socket: &Path) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        let words: Vec<&[u8]> = c.split(|&b| b == 0).collect();
        words.contains(&socket.as_os_str().as_encoded_bytes())
            && words.first().is_some_and(|w| w.ends_with(b"dlmd"))
    })
}

/// Stops (SIGKILL, by pid) a daemon the test started through auto-start,
/// if it is still there when the test ends.
struct Stray(u32, PathBuf);

impl Drop for Stray {
    fn drop(&mut self) {
        if serves(self.0, &self.1) {
            if let Some(pid) = rustix::process::Pid::from_raw(self.0 as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

#[test]
fn daemon_stop_stops_the_daemon_of_this_socket_and_no_other() {
    let mut other = Daemon::start();
    let dir = TempDir::new("mine");
    let socket = dir.0.join("run").join("dlmd.sock");
    // Auto-started by the first command, with its log next to the socket.
    let st = out(dlm_on(&socket).arg("status"));
    assert!(st.status.success(), "{st:?}");
    let status = text(&st.stdout);
    let log = socket.with_file_name("dlmd.log");
    assert!(
        status.contains(&format!("daemon log: {}", log.display())),
        "{status}"
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out(dlm_on(&socket).args(["daemon", "status", "--json"])).stdout)
            .expect("JSON");
    let pid = v["pid"].as_u64().expect("a pid") as u32;
    let _stray = Stray(pid, socket.clone());
    assert!(serves(pid, &socket), "{v}");
    assert_eq!(v["log_file"], log.display().to_string(), "{v}");
    assert_eq!(v["running"], true, "{v}");
    let logged = std::fs::read_to_string(&log).expect("the daemon's log");
    assert!(logged.contains("serving on"), "{logged}");
    let mut lock_file = socket.as_os_str().to_owned();
    lock_file.push(".lock");
    assert!(Path::new(&lock_file).exists());

    let stop = out(dlm_on(&socket).args(["daemon", "stop"]));
    assert!(stop.status.success(), "{stop:?}");
    assert_eq!(
        text(&stop.stdout),
        format!("stopped dlmd pid {pid} (socket {})\n", socket.display())
    );
    wait_for("the stopped daemon to be gone", BOUND, || {
        !serves(pid, &socket)
    });
    assert!(!socket.exists(), "its socket is removed");
    assert!(!Path::new(&lock_file).exists(), "and its lock file");
    let st = out(dlm_on(&socket)
        .env("DLM_NO_AUTOSTART", "1")
        .args(["daemon", "status"]));
    assert_eq!(st.status.code(), Some(69), "{st:?}");
    assert!(text(&st.stdout).contains("dlmd: not running"), "{st:?}");
    let again = out(dlm_on(&socket)
        .env("DLM_NO_AUTOSTART", "1")
        .args(["daemon", "stop"]));
    assert!(again.status.success(), "{again:?}");
    assert!(text(&again.stdout).contains("nothing to stop"), "{again:?}");

    // The other daemon of the same uid runs on.
    assert!(other.proc.0.try_wait().expect("try_wait").is_none());
    let mut c = Command::new(DLM);
    c.env("DLM_SOCKET", &other.socket)
        .env("DLM_BACKEND", "fallback")
        .env("DLM_NO_AUTOSTART", "1")
        .arg("status");
    assert!(out(c).status.success());
}

#[test]
fn a_missing_dlmd_says_where_it_was_looked_for_and_how_to_install_it() {
    let dir = TempDir::new("nodlmd");
    let bin = dir.0.join("bin");
    std::fs::create_dir(&bin).expect("bin dir");
    let lone = bin.join("dlm");
    std::fs::copy(DLM, &lone).expect("a dlm without dlmd beside it");
    let socket = dir.0.join("run").join("dlmd.sock");
    // The copy may still be open for writing in a child another test
    // thread forked just then (until that child's exec): ETXTBSY, briefly.
    let mut tries = 0;
    let st = loop {
        match Command::new(&lone)
            .env_clear()
            .env("PATH", dir.0.join("empty"))
            .env("DLM_SOCKET", &socket)
            .env("DLM_BACKEND", "fallback")
            .arg("ls")
            .output()
        {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 500 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            other => break other.expect("run dlm"),
        }
    };
    let err = text(&st.stderr);
    assert_eq!(st.status.code(), Some(69), "{err}");
    assert!(err.contains("no dlmd program found"), "{err}");
    assert!(
        err.contains(&bin.display().to_string()),
        "names where: {err}"
    );
    assert!(err.contains("DLM_DLMD") && err.contains("PATH"), "{err}");
    assert!(err.contains("cargo install --path dlmd"), "says how: {err}");
}

#[test]
fn a_relative_socket_path_is_refused() {
    let dir = TempDir::new("rel");
    let st = Command::new(DLM)
        .current_dir(&dir.0)
        .env("DLM_SOCKET", "dlmd.sock")
        .env("DLM_BACKEND", "fallback")
        .arg("ls")
        .output()
        .expect("run dlm");
    assert_eq!(st.status.code(), Some(64), "{st:?}");
    assert!(text(&st.stderr).contains("relative path"), "{st:?}");
    let st = Command::new(dlmd_bin())
        .current_dir(&dir.0)
        .env("DLM_SOCKET", "dlmd.sock")
        .stderr(Stdio::piped())
        .output()
        .expect("run dlmd");
    assert_eq!(st.status.code(), Some(1), "{st:?}");
    assert!(text(&st.stderr).contains("relative path"), "{st:?}");
    assert!(!dir.0.join("dlmd.sock").exists());
}

/// Run `c` (a `dlm bench`) for at most two minutes: a hang fails the
/// test instead of stalling it, and the process is killed by its pid.
fn bench(mut c: Command) -> Output {
    let out_dir = TempDir::new("bench-out");
    let path = out_dir.0.join("stdout");
    c.stdout(std::fs::File::create(&path).expect("stdout file"))
        .stderr(Stdio::piped());
    let mut child = common::spawn(c);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = child.0.try_wait().expect("try_wait") {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dlm bench did not finish in 120 s; its output so far: {}",
            std::fs::read_to_string(&path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = Vec::new();
    if let Some(mut e) = child.0.stderr.take() {
        let _ = std::io::Read::read_to_end(&mut e, &mut stderr);
    }
    Output {
        status,
        stdout: std::fs::read(&path).unwrap_or_default(),
        stderr,
    }
}

/// The scratch directories `dlm bench` made in `tmp`.
fn bench_leftovers(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn bench_runs_on_a_private_daemon_and_leaves_nothing_behind() {
    let tmp = TempDir::new("bench-tmp");
    let st = bench({
        let mut c = Command::new(DLM);
        c.env_remove("DLM_SOCKET")
            .env_remove("DLM_BACKEND")
            .env("DLM_DLMD", dlmd_bin())
            .env("TMPDIR", &tmp.0)
            .args(["bench", "--secs", "0.1", "--hold", "10"]);
        c
    });
    let said = text(&st.stdout);
    assert!(st.status.success(), "{st:?}");
    let pid: u32 = said
        .split("dlmd pid ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the private daemon's pid: {said}"));
    assert!(said.contains("daemon memory for those locks"), "{said}");
    assert!(!said.contains("unknown (daemon pid not visible)"), "{said}");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || !std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "dlmd"),
        "the private dlmd {pid} was stopped"
    );
    assert_eq!(bench_leftovers(&tmp.0), Vec::<PathBuf>::new());

    // On a daemon of the user's: its lockspace goes afterwards.
    let d = Daemon::start();
    let mut c = d.dlm();
    c.env("TMPDIR", &tmp.0)
        .args(["bench", "--secs", "0.1", "--hold", "10", "--socket"])
        .arg(&d.socket);
    let st = bench(c);
    assert!(st.status.success(), "{st:?}");
    assert!(
        text(&st.stdout).contains(&format!("dlmd pid {}", d.proc.0.id())),
        "{st:?}"
    );
    let spaces = d.client().lockspaces().expect("lockspaces");
    assert!(!spaces.iter().any(|s| s.name == "dlm-bench"), "{spaces:?}");
    assert_eq!(bench_leftovers(&tmp.0), Vec::<PathBuf>::new());

    let st = out({
        let mut c = d.dlm();
        c.args(["bench", "--secs", "0"]);
        c
    });
    assert_eq!(st.status.code(), Some(64), "{st:?}");
}
