//! Another local user must not be able to stand in for a user's daemon.
//!
//! Each test creates fresh users with `useradd` (removed again when it
//! ends, pass or fail) and runs real processes as them: an attacker that
//! takes the victim's `/tmp/dlm-<uid>` and answers there with a fake
//! daemon (this test binary, run again as a helper), and the victim's
//! `dlm` and library calls, which must refuse it before they send
//! anything. Needs root; skipped, saying so, otherwise.
#![forbid(unsafe_code)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{dlmd_bin, TempDir, DLM};
use dlm_proto::records::{self, LockResult, Request};
use dlm_proto::wire::{self, Decoder, Kind};

/// The longest any one wait here may take before the test fails.
const TIMEOUT: Duration = Duration::from_secs(20);

/// Why the tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    if !rustix::process::getuid().is_root() {
        return Some("not root: cannot create users and run processes as them".into());
    }
    let exe = std::env::current_exe().ok()?;
    for dir in exe.ancestors().skip(1) {
        let Ok(m) = std::fs::metadata(dir) else {
            continue;
        };
        if m.permissions().mode() & 0o001 == 0 {
            return Some(format!("{} is not searchable by others", dir.display()));
        }
    }
    if Command::new("useradd").arg("--help").output().is_err() {
        return Some("no useradd".into());
    }
    None
}

macro_rules! skip_unless_possible {
    () => {
        if let Some(why) = skip_reason() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

// ---------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------

/// A user made for one test; `userdel` when dropped, and its default
/// socket directory removed.
struct User {
    name: String,
    uid: u32,
    gid: u32,
}

impl User {
    fn create(tag: &str) -> User {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name = format!("dlmt{}-{n}{tag}", std::process::id());
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let out = Command::new("useradd")
                .args(["-M", "-U", "-s", "/usr/sbin/nologin", &name])
                .output()
                .expect("run useradd");
            if out.status.success() {
                break;
            }
            // Another useradd may hold the password or group file's lock
            // (exit status 1 or 10); anything else is final.
            assert!(
                matches!(out.status.code(), Some(1 | 10)) && Instant::now() < deadline,
                "useradd {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
        let (uid, gid) = passwd
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.first() == Some(&name.as_str()) && f.len() > 3)
                    .then(|| (f[2].parse().ok(), f[3].parse().ok()))
            })
            .and_then(|(u, g)| Some((u?, g?)))
            .expect("the new user in /etc/passwd");
        let u = User { name, uid, gid };
        // A fresh uid; anything at its default path is left from a user
        // that had it before.
        let _ = std::fs::remove_dir_all(u.default_dir());
        u
    }

    fn default_dir(&self) -> PathBuf {
        PathBuf::from(format!("/tmp/dlm-{}", self.uid))
    }

    fn default_socket(&self) -> PathBuf {
        self.default_dir().join("dlmd.sock")
    }

    /// A command run as this user, with the environment of a login that
    /// has no `XDG_RUNTIME_DIR`.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.uid(self.uid)
            .gid(self.gid)
            .env("HOME", "/")
            .env("USER", &self.name)
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("DLM_SOCKET")
            .env_remove("DLM_NO_AUTOSTART")
            .env("DLM_BACKEND", "fallback")
            .env("DLM_DLMD", dlmd_bin())
            .stdin(Stdio::null());
        c
    }

    /// `dlm ARGS` as this user.
    fn dlm(&self, args: &[&str]) -> Command {
        let mut c = self.command(DLM);
        c.args(args);
        c
    }
}

impl Drop for User {
    fn drop(&mut self) {
        stop_daemons(&self.default_socket());
        let _ = std::fs::remove_dir_all(self.default_dir());
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match Command::new("userdel").arg(&self.name).output() {
                Ok(o) if o.status.success() => return,
                Ok(o) if Instant::now() < deadline => {
                    let _ = o;
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => {
                    eprintln!("userdel {}: {other:?}", self.name);
                    return;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------

/// What a finished command did.
#[derive(Debug)]
struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Run `c` in its own process group, killing the group if it takes
/// longer than `TIMEOUT` (then the test fails).
fn run(mut c: Command) -> Ran {
    c.process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    let out = drain(child.stdout.take().expect("stdout"));
    let err = drain(child.stderr.take().expect("stderr"));
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() >= deadline {
            kill_group(&child);
            let _ = child.wait();
            panic!("{c:?} did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ran {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

fn kill_group(child: &Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// A child leading its own process group, killed with its group when
/// dropped.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        kill_group(&self.0);
        let _ = self.0.wait();
    }
}

/// The pids of `dlmd` processes serving `socket`.
fn daemons_for(socket: &Path) -> Vec<i32> {
    let needle = socket.to_string_lossy().into_owned();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<String> = c
                    .split(|b| *b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                args.first().is_some_and(|a| a.ends_with("dlmd")) && args.contains(&needle)
            })
        })
        .collect()
}

/// Stop (by pid) every `dlmd` serving `socket`.
fn stop_daemons(socket: &Path) {
    for pid in daemons_for(socket) {
        if let Some(p) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
    }
}

/// This test binary, run again as the helper `mode` (see
/// [`helper_process`]) by `user`, its `HELPER:` lines collected.
struct Helper {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// The thread reading its stdout; it ends when the helper does.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Helper {
    fn start(user: &User, mode: &str, args: &[&str]) -> Helper {
        let exe = std::env::current_exe().expect("test binary");
        let mut c = user.command(exe);
        c.args([
            "helper_process",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("DLM_TRUST_HELPER", mode)
        .env("DLM_TRUST_HELPER_ARGS", args.join("\u{1f}"))
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        let mut child = c.spawn().expect("start helper");
        let out = child.stdout.take().expect("helper stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                // The harness may have begun the line ("test ... ").
                if let Some((_, rest)) = line.split_once("HELPER: ") {
                    sink.lock().expect("lines").push(rest.to_string());
                }
            }
        });
        Helper {
            child,
            lines,
            reader: Some(reader),
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    /// Wait until the helper has said `line` (failing after `TIMEOUT`).
    fn wait_for(&mut self, line: &str) {
        self.wait_count(line, 1);
    }

    /// Wait until the helper has said `line` `n` times.
    fn wait_count(&mut self, line: &str, n: usize) {
        let deadline = Instant::now() + TIMEOUT;
        while self.lines().iter().filter(|l| *l == line).count() < n {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("helper exited ({st}) before {line:?}: {:?}", self.lines());
            }
            assert!(
                Instant::now() < deadline,
                "helper did not say {line:?}: {:?}",
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait for the helper to exit, and for all it said to be read.
    fn finish(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                // Its stdout is closed now (it started nothing that
                // could keep it open), so the reader ends.
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                return st;
            }
            assert!(Instant::now() < deadline, "helper did not finish");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        kill_group(&self.child);
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- helper said ---\n{:#?}", self.lines());
        }
    }
}

fn say(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "HELPER: {s}");
    let _ = out.flush();
}

/// The helper processes' entry point. Not a test by itself: the tests
/// run it in a child process as another user (see [`Helper`]).
#[test]
#[ignore = "a helper process that other tests start"]
fn helper_process() {
    let Ok(mode) = std::env::var("DLM_TRUST_HELPER") else {
        return;
    };
    let args = std::env::var("DLM_TRUST_HELPER_ARGS").unwrap_or_default();
    let args: Vec<&str> = args.split('\u{1f}').collect();
    match mode.as_str() {
        "fake" => fake_daemon(Path::new(args[0])),
        "open" => open_as_library(args[0]),
        other => panic!("unknown helper mode {other}"),
    }
}

/// A fake `dlmd` at `socket`: it makes the directory (mode 0755) if it is
/// missing, opens the socket to everyone, and then grants whatever is
/// asked, saying on stdout every frame it receives.
fn fake_daemon(socket: &Path) {
    use std::os::unix::fs::DirBuilderExt;
    let dir = socket.parent().expect("a directory");
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(dir)
            .expect("mkdir");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let listener = UnixListener::bind(socket).expect("bind the fake socket");
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    say("listening");
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        std::thread::spawn(move || fake_connection(stream));
    }
}

fn fake_connection(mut stream: UnixStream) {
    say("connected");
    let mut dec = Decoder::new();
    let mut next_lkid = 1u32;
    let mut buf = [0u8; 4096];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        dec.feed(&buf[..n]);
        let mut out = Vec::new();
        while let Ok(Some(f)) = dec.next_frame() {
            say(&format!(
                "frame {:?} {}",
                f.kind,
                String::from_utf8_lossy(f.body).escape_debug()
            ));
            match f.kind {
                Kind::Version => {
                    let _ = wire::put_frame(&mut out, Kind::Version, &records::encode_version());
                }
                Kind::Query => {
                    let _ = wire::put_frame(&mut out, Kind::QueryReply, b"[]");
                }
                Kind::Write => match records::decode_write(f.body).map(|d| d.request) {
                    Ok(Request::Lock(r)) | Ok(Request::Unlock(r)) => {
                        let unlock = r.lkid != 0 && r.flags & dlm::LockFlags::CONVERT.bits() == 0;
                        let lkid = if r.lkid != 0 { r.lkid } else { next_lkid };
                        next_lkid += 1;
                        wire::put_result(&mut out, if unlock { 0 } else { i64::from(lkid) });
                        let res = LockResult {
                            astaddr: r.castaddr,
                            astparam: r.castparam,
                            user_lksb: r.lksb,
                            status: if unlock {
                                -dlm_proto::status::EUNLOCK
                            } else {
                                0
                            },
                            lkid,
                            sb_flags: 0,
                            bast_mode: 0,
                            lvb: None,
                        };
                        if let Ok((b, len)) = records::encode_result(&res, records::RESULT_SIZE) {
                            let _ = wire::put_frame(&mut out, Kind::Ast, &b[..len]);
                        }
                    }
                    _ => wire::put_result(&mut out, 1),
                },
                _ => wire::put_result(&mut out, 0),
            }
        }
        if stream.write_all(&out).is_err() {
            break;
        }
    }
    say("closed");
}

/// Open the DLM through the library as a program would (environment
/// defaults), then lockspace `ls`; say what happened.
fn open_as_library(ls: &str) {
    use dlm::{Backend, Dlm};
    match Dlm::builder().backend(Backend::Fallback).open() {
        Err(e) => say(&format!("open failed: errno {} {e}", e.errno().raw())),
        Ok(d) => {
            say("open ok");
            let name = dlm::LockspaceName::new(ls).expect("name");
            match d.open_lockspace(&name) {
                Ok(_) => say("lockspace ok"),
                Err(e) => say(&format!("lockspace failed: errno {} {e}", e.errno().raw())),
            }
        }
    }
}

/// The message for `dir` belonging to `owner`, as `user` sees it.
fn foreign_owner_message(dir: &Path, owner: &User, user: &User) -> String {
    format!(
        "untrusted dlm socket directory {d}: it belongs to uid {} ({}), not to you (uid {}) or \
         root (mode 0755); remove {d} (only its owner or root can), or set XDG_RUNTIME_DIR or \
         DLM_SOCKET to a directory of your own",
        owner.uid,
        owner.name,
        user.uid,
        d = dir.display()
    )
}

// ---------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------

/// The issue's attack: mallory makes `/tmp/dlm-<victim>` mode 0755 and
/// answers there. The victim's `dlm lock`, `dlm status` and library calls
/// refuse at once, with the typed error, and the fake never hears a
/// lockspace or resource name.
#[test]
fn a_fake_daemon_in_a_taken_directory_is_refused_and_learns_nothing() {
    skip_unless_possible!();
    let victim = User::create("v");
    let mallory = User::create("m");
    let socket = victim.default_socket();
    let socket_s = socket.to_str().expect("utf-8");
    let mut fake = Helper::start(&mallory, "fake", &[socket_s]);
    fake.wait_for("listening");

    let want = foreign_owner_message(&victim.default_dir(), &mallory, &victim);
    let ran = run(victim.dlm(&[
        "lock",
        "--lockspace",
        "secretls",
        "secret-res",
        "--",
        "true",
    ]));
    assert_eq!(ran.status.code(), Some(77), "{ran:?}");
    assert_eq!(ran.stderr, format!("dlm: {want}\n"), "{ran:?}");

    let ran = run(victim.dlm(&["status"]));
    assert_eq!(ran.status.code(), Some(77), "{ran:?}");
    assert!(ran.stderr.contains(&want), "{ran:?}");

    let mut lib = Helper::start(&victim, "open", &["secretls"]);
    assert!(lib.finish().success());
    assert_eq!(
        lib.lines(),
        [format!("open failed: errno {} {want}", libc::EACCES)],
        "the library refuses with EACCES"
    );

    let heard = fake.lines();
    assert_eq!(heard, ["listening"], "the fake heard nothing");
    assert!(daemons_for(&socket).is_empty(), "no dlmd was started");
}

/// The directory taken and nobody answering: auto-start does not try
/// (and wait) in vain; it fails at once naming the directory to remove,
/// and dlmd itself refuses it the same way. Each fix it names works:
/// `XDG_RUNTIME_DIR`, or removing the directory.
#[test]
fn a_taken_directory_fails_at_once_naming_it_and_each_named_fix_works() {
    skip_unless_possible!();
    let victim = User::create("v");
    let mallory = User::create("m");
    let dir = victim.default_dir();
    let ran = run({
        let mut c = mallory.command("mkdir");
        c.args(["-m", "755"]).arg(&dir);
        c
    });
    assert!(ran.status.success(), "{ran:?}");
    let want = foreign_owner_message(&dir, &mallory, &victim);

    let started = Instant::now();
    let ran = run(victim.dlm(&["lock", "r", "--", "true"]));
    assert_eq!(ran.status.code(), Some(77), "{ran:?}");
    assert_eq!(ran.stderr, format!("dlm: {want}\n"), "{ran:?}");
    assert!(daemons_for(&victim.default_socket()).is_empty());
    eprintln!("refused in {:?}", started.elapsed());

    // dlmd refuses the same directory with the same words.
    let ran = run({
        let mut c = victim.command(dlmd_bin());
        c.args(["--user", "--log-level", "info"]);
        c
    });
    assert_eq!(ran.status.code(), Some(1), "{ran:?}");
    assert!(ran.stderr.contains(&want), "{ran:?}");
    assert!(
        std::fs::read_dir(&dir).expect("dir").next().is_none(),
        "nothing was made in mallory's directory"
    );

    // Fix 1: a runtime directory of the victim's own.
    let runtime = TempDir::new("xdg");
    std::os::unix::fs::chown(&runtime.0, Some(victim.uid), Some(victim.gid)).expect("chown");
    std::fs::set_permissions(&runtime.0, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let xdg_socket = runtime.0.join("dlm").join("dlmd.sock");
    let mut c = victim.dlm(&["lock", "r", "--", "true"]);
    c.env("XDG_RUNTIME_DIR", &runtime.0);
    let ran = run(c);
    let served_by = daemons_for(&xdg_socket);
    stop_daemons(&xdg_socket);
    assert!(ran.status.success(), "{ran:?}");
    assert_eq!(
        served_by.len(),
        1,
        "auto-started at {}",
        xdg_socket.display()
    );

    // Fix 2: the directory removed, auto-start makes it the victim's.
    std::fs::remove_dir(&dir).expect("root removes it");
    let ran = run(victim.dlm(&["status"]));
    let served_by = daemons_for(&victim.default_socket());
    stop_daemons(&victim.default_socket());
    assert!(ran.status.success(), "{ran:?}");
    assert!(
        ran.stdout
            .contains(&format!("at {}", victim.default_socket().display())),
        "{ran:?}"
    );
    assert_eq!(served_by.len(), 1);
    let m = std::fs::symlink_metadata(&dir).expect("made again");
    use std::os::unix::fs::MetadataExt;
    assert_eq!((m.uid(), m.mode() & 0o777), (victim.uid, 0o700));
}

/// A socket directory others can write to (or one below a directory
/// others can write to, without the sticky bit) is refused by the client
/// even with a real daemon in it, and by dlmd.
#[test]
fn a_directory_writable_by_others_is_refused_by_client_and_daemon() {
    skip_unless_possible!();
    let victim = User::create("v");
    let base = TempDir::new("open");
    std::fs::set_permissions(&base.0, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let dir = base.0.join("run");
    std::fs::create_dir(&dir).expect("dir");
    std::os::unix::fs::chown(&dir, Some(victim.uid), Some(victim.gid)).expect("chown");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let socket = dir.join("dlmd.sock");

    // A real daemon of the victim's, then the directory opened up.
    let mut c = victim.command(dlmd_bin());
    c.arg("--socket")
        .arg(&socket)
        .args(["--log-level", "debug"]);
    c.process_group(0).stderr(Stdio::piped());
    let mut daemon = Group(c.spawn().expect("dlmd"));
    let daemon_log = drain(daemon.0.stderr.take().expect("stderr"));
    let deadline = Instant::now() + TIMEOUT;
    while UnixStream::connect(&socket).is_err() {
        if Instant::now() >= deadline || matches!(daemon.0.try_wait(), Ok(Some(_))) {
            drop(daemon);
            panic!(
                "dlmd did not listen: {}",
                daemon_log.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let mut c = victim.dlm(&["lock", "r", "--", "true"]);
    c.env("DLM_SOCKET", &socket).env("DLM_NO_AUTOSTART", "1");
    let client = run(c);

    // dlmd: another socket in the open directory, then one below a
    // parent that is open to all without the sticky bit.
    let mut c = victim.command(dlmd_bin());
    c.arg("--socket").arg(dir.join("other.sock"));
    let in_open = run(c);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::fs::set_permissions(&base.0, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let mut c = victim.command(dlmd_bin());
    c.arg("--socket").arg(dir.join("below.sock"));
    let below_open = run(c);
    std::fs::set_permissions(&base.0, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    drop(daemon);
    let log = daemon_log.join().unwrap_or_default();
    stop_daemons(&dir.join("other.sock"));
    stop_daemons(&dir.join("below.sock"));

    let open_words = format!(
        "untrusted dlm socket directory {d}: other users can write to it (mode 0777, owner uid {} \
         ({})); run `chmod go-w {d}`",
        victim.uid,
        victim.name,
        d = dir.display()
    );
    assert_eq!(
        client.status.code(),
        Some(77),
        "{client:?}\ndlmd log:\n{log}"
    );
    assert!(client.stderr.contains(&open_words), "{client:?}");
    assert!(
        !log.contains(&format!("uid {} gid", victim.uid)),
        "the client did not even connect:\n{log}"
    );
    assert_eq!(in_open.status.code(), Some(1), "{in_open:?}");
    assert!(in_open.stderr.contains(&open_words), "{in_open:?}");
    assert_eq!(below_open.status.code(), Some(1), "{below_open:?}");
    let parent_words = format!(
        "other users can write to {} on its way (mode 0777, no sticky bit, owner uid 0 (root))",
        base.0.display()
    );
    assert!(below_open.stderr.contains(&parent_words), "{below_open:?}");
}

/// A directory that passes, with another user's process answering in it
/// (as after a swap the directory checks could not see): the client
/// checks the peer's uid and hangs up before its Hello, so the lockspace
/// name never leaves it. Root's own client refuses a non-root peer too.
#[test]
fn a_peer_of_another_uid_is_refused_before_anything_is_sent() {
    skip_unless_possible!();
    let victim = User::create("v");
    let mallory = User::create("m");
    let base = TempDir::new("peer");
    let dir = base.0.join("run");
    std::fs::create_dir(&dir).expect("dir");
    std::os::unix::fs::chown(&dir, Some(mallory.uid), Some(mallory.gid)).expect("chown");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let socket = dir.join("dlmd.sock");
    let socket_s = socket.to_str().expect("utf-8");
    let mut fake = Helper::start(&mallory, "fake", &[socket_s]);
    fake.wait_for("listening");
    // Now the directory is the victim's; the socket in it still leads to
    // mallory's process.
    std::os::unix::fs::chown(&dir, Some(victim.uid), Some(victim.gid)).expect("chown");

    let mut c = victim.dlm(&[
        "lock",
        "--lockspace",
        "secretls",
        "secret-res",
        "--",
        "true",
    ]);
    c.env("DLM_SOCKET", &socket).env("DLM_NO_AUTOSTART", "1");
    let ran = run(c);
    fake.wait_for("closed");
    let fake_pid = fake.child.id();
    let want = format!(
        "untrusted dlm daemon at {s}: the process answering there (pid {fake_pid}) runs as uid {} \
         ({}), not as you (uid {}) or root, and nothing was sent to it; stop it and remove {s}, \
         or set XDG_RUNTIME_DIR or DLM_SOCKET to a directory of your own",
        mallory.uid,
        mallory.name,
        victim.uid,
        s = socket.display()
    );
    assert_eq!(ran.status.code(), Some(77), "{ran:?}");
    assert_eq!(ran.stderr, format!("dlm: {want}\n"), "{ran:?}");

    // Root, through the library, with the socket given explicitly, once
    // the directory is root's.
    std::os::unix::fs::chown(&dir, Some(0), Some(0)).expect("chown");
    let e = dlm::Dlm::builder()
        .backend(dlm::Backend::Fallback)
        .socket(&socket)
        .autostart(false)
        .open()
        .expect_err("root refuses mallory's daemon");
    assert!(
        matches!(&e, dlm::Error::UntrustedSocket(u)
            if u.owner == mallory.uid && u.why == dlm_proto::trust::Distrust::ForeignPeer { pid: fake_pid as i32 }),
        "{e:?}"
    );
    assert_eq!(e.errno(), dlm::Errno::EACCES);
    let e = dlm::raw::RawDevice::connect(&socket, None, false).expect_err("raw too");
    assert_eq!(e.errno(), dlm::Errno::EACCES, "{e}");
    fake.wait_count("closed", 3);

    let heard = fake.lines();
    assert!(
        !heard.iter().any(|l| l.starts_with("frame")),
        "the fake received no frame: {heard:?}"
    );
    assert_eq!(
        heard.iter().filter(|l| *l == "connected").count(),
        3,
        "three connections, each closed at once: {heard:?}"
    );
}
