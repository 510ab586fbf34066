//! `dlm lock` never lets its command run on without the lock: kill -9 of
//! `dlm`, signals to it, the daemon's death, another opener's unlock and
//! a blocking request, each with real processes and a real `dlmd`.
//!
//! The commands are shell scripts that write markers to a log file and
//! wait for a "go" file; the order of the markers shows who held the lock
//! when. Every process started here is stopped by PID when the test ends.
#![forbid(unsafe_code)]

mod common;

use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{spawn, Daemon, Reaped, TempDir};
use dlm::raw::RawDevice;
use dlm::LockspaceName;
use dlm_proto::records::{Command as Op, LockWrite, VERSION};
use rustix::process::{kill_process, Pid, Signal};

/// Bounded waits: they catch hangs, and are no speed targets.
const BOUND: Duration = Duration::from_secs(20);

/// Wait (in the script) until the file `$G` exists, 30 s at most.
const WAIT_GO: &str =
    "t=0; while [ ! -e \"$G\" ] && [ $t -lt 3000 ]; do t=$((t+1)); sleep 0.01; done";
/// Idle (in the script) for 30 s at most, in short sleeps so that traps run.
const IDLE: &str = "t=0; while [ $t -lt 3000 ]; do t=$((t+1)); sleep 0.01; done; exit 99";

/// A daemon, a scratch directory with the marker log and the go file.
struct Scene {
    d: Daemon,
    dir: TempDir,
}

impl Scene {
    fn new(tag: &str) -> Scene {
        Scene {
            d: Daemon::start_debug_log(),
            dir: TempDir::new(tag),
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.0.join("log")
    }

    /// The markers written so far.
    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn go(&self) {
        std::fs::write(self.dir.0.join("go"), "").unwrap();
    }

    /// `dlm lock ARGS r -- sh -c SCRIPT`, with `$L` the log and `$G` the
    /// go file; its stderr is kept.
    fn dlm_lock(&self, args: &[&str], script: &str) -> Command {
        let mut c = self.d.dlm();
        c.arg("lock")
            .args(args)
            .args(["r", "--", "sh", "-c", script])
            .env("L", self.log_path())
            .env("G", self.dir.0.join("go"))
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        c
    }

    /// What went wrong, with the daemon's log.
    fn context(&self) -> String {
        format!(
            "markers: {:?}\n--- dlmd log ---\n{}",
            self.log(),
            self.d.log_text()
        )
    }

    /// Wait until `f` holds; fail (with the context) after [`BOUND`].
    fn wait_until(&self, what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + BOUND;
        while !f() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n{}",
                self.context()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn wait_marker(&self, marker: &str) {
        self.wait_until(&format!("marker {marker:?}"), || {
            self.log().iter().any(|l| l == marker)
        });
    }

    /// How many locks (granted or waiting) the lockspace has on "r".
    fn locks_on_r(&self) -> usize {
        self.d
            .client()
            .locks(&LockspaceName::new("default").unwrap())
            .map(|l| l.iter().filter(|l| l.resource == "r").count())
            .unwrap_or(0)
    }

    /// Wait until `n` locks (granted and queued) exist on "r".
    fn wait_locks(&self, n: usize) {
        self.wait_until(&format!("{n} locks on r"), || self.locks_on_r() == n);
    }

    /// Wait for `p` to exit; its status and stderr.
    fn exit_of(&self, p: &mut Reaped) -> (ExitStatus, String) {
        let deadline = Instant::now() + BOUND;
        let st = loop {
            if let Some(st) = p.0.try_wait().unwrap() {
                break st;
            }
            assert!(
                Instant::now() < deadline,
                "the process did not exit\n{}",
                self.context()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut err = String::new();
        if let Some(mut e) = p.0.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        (st, err)
    }
}

fn pid_of(p: &Reaped) -> Pid {
    Pid::from_raw(p.0.id() as i32).unwrap()
}

/// A second `dlm lock r` whose command writes "start2".
fn second(s: &Scene) -> Reaped {
    spawn(s.dlm_lock(&[], "echo start2 >> \"$L\""))
}

#[test]
fn after_kill_9_of_dlm_the_lock_stays_held_until_its_command_ends() {
    let s = Scene::new("kill9");
    let mut first = spawn(s.dlm_lock(
        &[],
        &format!("echo start1 >> \"$L\"; {WAIT_GO}; echo end1 >> \"$L\""),
    ));
    s.wait_marker("start1");
    kill_process(pid_of(&first), Signal::KILL).unwrap();
    let _ = first.0.wait();
    let mut waiter = second(&s);
    // The waiter is queued, and stays so while the first command runs.
    s.wait_locks(2);
    assert!(waiter.0.try_wait().unwrap().is_none(), "{}", s.context());
    assert_eq!(s.log(), ["start1"], "{}", s.context());
    s.go();
    let (st, err) = s.exit_of(&mut waiter);
    assert!(st.success(), "{st}: {err}\n{}", s.context());
    assert_eq!(s.log(), ["start1", "end1", "start2"], "{}", s.context());
}

/// `sig` sent to `dlm` reaches the command; `dlm` holds the lock until
/// the command has exited, and exits as it did.
fn signal_is_passed_on(sig: Signal, name: &str) {
    let s = Scene::new(name);
    let mut first = spawn(s.dlm_lock(
        &[],
        &format!(
            "trap 'echo got >> \"$L\"; {WAIT_GO}; echo end1 >> \"$L\"; exit 7' {name}; \
             echo start1 >> \"$L\"; {IDLE}"
        ),
    ));
    s.wait_marker("start1");
    kill_process(pid_of(&first), sig).unwrap();
    s.wait_marker("got");
    // The command is in its trap and dlm still holds the lock.
    let mut waiter = second(&s);
    s.wait_locks(2);
    assert!(first.0.try_wait().unwrap().is_none(), "{}", s.context());
    s.go();
    let (st, err) = s.exit_of(&mut first);
    assert_eq!(
        st.code(),
        Some(7),
        "dlm exits as its command: {err}\n{}",
        s.context()
    );
    let (st, err) = s.exit_of(&mut waiter);
    assert!(st.success(), "{st}: {err}");
    assert_eq!(
        s.log(),
        ["start1", "got", "end1", "start2"],
        "{}",
        s.context()
    );
}

#[test]
fn sigterm_to_dlm_is_passed_on_and_the_lock_kept_until_the_command_exits() {
    signal_is_passed_on(Signal::TERM, "TERM");
}

#[test]
fn sigint_to_dlm_is_passed_on_and_the_lock_kept_until_the_command_exits() {
    signal_is_passed_on(Signal::INT, "INT");
}

#[test]
fn sighup_to_dlm_is_passed_on_and_the_lock_kept_until_the_command_exits() {
    signal_is_passed_on(Signal::HUP, "HUP");
}

#[test]
fn a_command_killed_by_the_passed_on_signal_makes_dlm_exit_128_plus_n() {
    let s = Scene::new("term-dies");
    let mut first = spawn(s.dlm_lock(&[], "echo start1 >> \"$L\"; exec sleep 600"));
    s.wait_marker("start1");
    kill_process(pid_of(&first), Signal::TERM).unwrap();
    let (st, err) = s.exit_of(&mut first);
    assert_eq!(st.code(), Some(128 + 15), "{err}\n{}", s.context());
    assert_eq!(s.locks_on_r(), 0, "unlocked: {}", s.context());
}

/// The command of `dlm lock ARGS` is stopped with SIGTERM when `lose`
/// makes the lock lost; dlm says why (`says`) and exits 75. The scene
/// (and its daemon) is returned for more checks.
fn stopped_when_lost(tag: &str, args: &[&str], says: &str, lose: impl FnOnce(&mut Scene)) -> Scene {
    let mut s = Scene::new(tag);
    let mut first = spawn(s.dlm_lock(
        args,
        &format!("trap 'echo term >> \"$L\"; exit 0' TERM; echo start1 >> \"$L\"; {IDLE}"),
    ));
    s.wait_marker("start1");
    lose(&mut s);
    let (st, err) = s.exit_of(&mut first);
    assert_eq!(st.code(), Some(75), "{err}\n{}", s.context());
    assert!(s.log().contains(&"term".to_string()), "{}", s.context());
    assert!(err.contains("lost the EX lock on r"), "{err}");
    assert!(err.contains(says), "{err}");
    assert!(err.contains("sending SIGTERM to sh"), "{err}");
    s
}

#[test]
fn the_command_is_stopped_at_once_when_the_daemon_dies() {
    stopped_when_lost("dies", &[], "connection to the DLM closed", |s| {
        s.d.proc.0.kill().unwrap();
        s.d.proc.0.wait().unwrap();
    });
}

#[test]
fn the_command_is_stopped_at_once_when_another_opener_unlocks_the_lock() {
    stopped_when_lost("foreign", &[], "another opener", |s| {
        let name = LockspaceName::new("default").unwrap();
        let lkid =
            s.d.client()
                .locks(&name)
                .unwrap()
                .iter()
                .find(|l| l.resource == "r")
                .expect("dlm's lock")
                .lkid;
        let mut dev = RawDevice::connect(&s.d.socket, Some(&name), false).unwrap();
        let mut w = LockWrite::new(Op::Unlock, VERSION);
        w.set_lkid(lkid);
        // The callback parameter of dlm's only lock, to make sure it is
        // not taken for a completion of dlm's own.
        let token = (1u64 << 32) | 1;
        w.set_user_args(token, 1, token, 0, 1);
        dev.write(w.as_bytes()).unwrap();
    });
}

#[test]
fn with_lost_on_blocking_the_command_is_stopped_when_another_process_asks() {
    let mut waiter = None;
    let s = stopped_when_lost(
        "blocking",
        &["--lost-on-blocking"],
        "another process asks for it in EX",
        |s| waiter = Some(second(s)),
    );
    let mut waiter = waiter.unwrap();
    let (st, err) = s.exit_of(&mut waiter);
    assert!(st.success(), "the asker gets the lock after: {st}: {err}");
    assert_eq!(s.log(), ["start1", "term", "start2"], "{}", s.context());
}

#[test]
fn on_lost_none_lets_the_command_end_and_lost_exit_code_is_used() {
    let s = Scene::new("none");
    let mut first = spawn(s.dlm_lock(
        &[
            "--lost-on-blocking",
            "--on-lost",
            "none",
            "--lost-exit-code",
            "9",
        ],
        &format!(
            "trap 'echo term >> \"$L\"; exit 0' TERM; echo start1 >> \"$L\"; {WAIT_GO}; \
             echo end1 >> \"$L\""
        ),
    ));
    s.wait_marker("start1");
    let mut waiter = second(&s);
    s.wait_locks(2);
    s.go();
    let (st, err) = s.exit_of(&mut first);
    assert_eq!(st.code(), Some(9), "{err}\n{}", s.context());
    assert!(err.contains("runs on (--on-lost none)"), "{err}");
    let (st, _) = s.exit_of(&mut waiter);
    assert!(st.success());
    assert_eq!(s.log(), ["start1", "end1", "start2"], "{}", s.context());
}

/// The socket inodes among `pid`'s descriptors, by descriptor number.
fn sockets_of(pid: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if let Ok(target) = std::fs::read_link(e.path()) {
            let t = target.to_string_lossy().into_owned();
            if t.starts_with("socket:") {
                out.push((e.file_name().to_string_lossy().into_owned(), t));
            }
        }
    }
    out
}

/// Start a holder whose command records its pid and `$DLM_LOCK_FD`, and
/// return it with them.
fn holder_with_fd(s: &Scene, args: &[&str]) -> (Reaped, u32, String) {
    let p = spawn(s.dlm_lock(
        args,
        &format!(
            "echo \"$DLM_LOCK_FD\" > \"$L.fd\"; echo $$ > \"$L.pid\"; echo start1 >> \"$L\"; \
             {WAIT_GO}; echo end1 >> \"$L\""
        ),
    ));
    s.wait_marker("start1");
    let read = |ext: &str| {
        std::fs::read_to_string(s.dir.0.join(format!("log.{ext}")))
            .unwrap()
            .trim()
            .to_string()
    };
    (p, read("pid").parse().unwrap(), read("fd"))
}

#[test]
fn the_command_inherits_the_connection_named_in_dlm_lock_fd() {
    let s = Scene::new("fd");
    let (dlm, child, fd) = holder_with_fd(&s, &[]);
    let theirs = sockets_of(child);
    assert_eq!(theirs.len(), 1, "one socket: {theirs:?}");
    assert_eq!(theirs[0].0, fd, "DLM_LOCK_FD names it");
    assert!(
        sockets_of(dlm.0.id())
            .iter()
            .any(|(_, t)| *t == theirs[0].1),
        "it is dlm's own connection"
    );
    s.go();
}

#[test]
fn with_close_the_command_has_no_descriptor_and_kill_9_releases_at_once() {
    let s = Scene::new("close");
    let (mut dlm, child, fd) = holder_with_fd(&s, &["--close"]);
    assert_eq!(fd, "", "no DLM_LOCK_FD");
    assert_eq!(sockets_of(child), [], "no socket in the command");
    kill_process(pid_of(&dlm), Signal::KILL).unwrap();
    let _ = dlm.0.wait();
    // The command still runs, but the lock went with dlm.
    let mut waiter = second(&s);
    let (st, err) = s.exit_of(&mut waiter);
    assert!(st.success(), "{st}: {err}");
    assert_eq!(s.log(), ["start1", "start2"], "{}", s.context());
    s.go();
    s.wait_marker("end1");
}

#[test]
fn ctrl_c_on_the_terminal_reaches_the_command_once_and_dlm_exits_as_it() {
    if Command::new("setsid")
        .arg("--help")
        .stdout(Stdio::null())
        .status()
        .map_or(true, |st| !st.success())
    {
        eprintln!("SKIPPED ctrl_c_on_the_terminal...: needs util-linux setsid");
        return;
    }
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let s = Scene::new("ctrl-c");
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let slave_path = ptsname(&master, Vec::new()).unwrap();
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(slave_path.to_str().unwrap())
        .unwrap();
    // `setsid -c`: dlm leads a new session whose controlling terminal is
    // the pty, so the terminal's SIGINT goes to dlm's process group, which
    // holds its command too. Not in a group of its own first: setsid then
    // runs dlm in place, with the pid that Reaped stops.
    let mut c = Command::new("setsid");
    c.args(["-c"])
        .arg(common::DLM)
        .args(["lock", "r", "--", "sh", "-c"])
        .arg(format!(
            "trap 'echo int >> \"$L\"' INT; echo start1 >> \"$L\"; {WAIT_GO}; exit 5"
        ))
        .env("DLM_SOCKET", &s.d.socket)
        .env("DLM_BACKEND", "fallback")
        .env("DLM_NO_AUTOSTART", "1")
        .env("RUST_LOG", "dlm_cli::lock=debug")
        .env("L", s.log_path())
        .env("G", s.dir.0.join("go"))
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(Stdio::piped());
    let mut dlm = Reaped(c.spawn().unwrap());
    drop(slave);
    s.wait_marker("start1");
    rustix::io::write(&master, b"\x03").unwrap();
    s.wait_marker("int");
    let mut waiter = second(&s);
    s.wait_locks(2);
    assert!(dlm.0.try_wait().unwrap().is_none(), "{}", s.context());
    s.go();
    let (st, err) = s.exit_of(&mut dlm);
    assert_eq!(st.code(), Some(5), "{err}\n{}", s.context());
    // Two copies of a signal may merge into one: dlm's own account says
    // whether it sent a second.
    assert!(
        err.contains("came from the terminal to the whole group: not passed on"),
        "{err}"
    );
    let (st, _) = s.exit_of(&mut waiter);
    assert!(st.success());
    assert_eq!(
        s.log(),
        ["start1", "int", "start2"],
        "one SIGINT, from the terminal\n{}",
        s.context()
    );
}

#[test]
fn numeric_arguments_out_of_range_are_clear_errors_and_nothing_panics() {
    let d = Daemon::start();
    for args in [
        &["lock", "--timeout", "1e300", "r", "--", "true"][..],
        &["lock", "--timeout", "nan", "r", "--", "true"],
        &["lock", "--timeout", "inf", "r", "--", "true"],
        &["lock", "--timeout", "lots", "r", "--", "true"],
        &["lock", "--lost-exit-code", "256", "r", "--", "true"],
        &["lock", "--conflict-exit-code=-1", "r", "--", "true"],
        &["lock", "--on-lost", "maybe", "r", "--", "true"],
        &["join", "x", "--mode", "1000"],
        &["join", "x", "--mode", "99999999999"],
        &["bench", "--secs", "1e300"],
        &["bench", "--secs", "0"],
        &["bench", "--hold", "0"],
        &["bench", "--hold", "4294967296"],
        &["bench-worker", "lockloop", "x", "--secs", "1e300"],
    ] {
        let mut c = d.dlm();
        c.args(args);
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(err.contains("invalid value"), "{args:?} says why: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn a_timeout_too_long_for_the_clock_waits_for_the_lock_without_panicking() {
    let s = Scene::new("1e19");
    let mut first = spawn(s.dlm_lock(
        &[],
        &format!("echo start1 >> \"$L\"; {WAIT_GO}; echo end1 >> \"$L\""),
    ));
    s.wait_marker("start1");
    let mut waiter = spawn(s.dlm_lock(&["--timeout", "1e19"], "echo start2 >> \"$L\""));
    s.wait_locks(2);
    s.go();
    let (st, err) = s.exit_of(&mut waiter);
    assert!(st.success(), "{st}: {err}");
    let (st, _) = s.exit_of(&mut first);
    assert!(st.success());
    assert_eq!(s.log(), ["start1", "end1", "start2"], "{}", s.context());
}

#[test]
fn locks_of_a_missing_lockspace_are_said_in_words() {
    let d = Daemon::start();
    let mut c = d.dlm();
    c.args(["locks", "no-such-lockspace"]);
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(71), "the DLM refused: EX_OSERR");
    assert!(err.contains("no such lockspace"), "{err}");
    assert!(!err.contains("No such file"), "{err}");
}
