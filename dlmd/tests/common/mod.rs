//! Test support: a real `dlmd` per test (stopped by pid when the test
//! ends, pass or fail), a raw protocol client over `UnixStream`, and
//! helper processes (this very test binary, run again with
//! `DLMD_HELPER` set).
#![allow(dead_code)]

pub mod users;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dlm_proto::records::{self, Command as Cmd, LockRequest, LockResult};
use dlm_proto::wire::{self, Decoder, Kind};

pub const DLMD: &str = env!("CARGO_BIN_EXE_dlmd");

/// How long any one wait in a test may take before it fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Poll `f` until it holds, failing the test after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A private directory, open to everyone for traversal (so that a
/// helper running as another uid can reach the socket).
pub fn temp_dir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("dlmd-test-")
        .tempdir()
        .expect("temp dir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

/// A child process that is killed (by pid) and reaped when dropped.
pub struct Proc(pub Child);

impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Wait for the process to exit, for at most `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.0.try_wait() {
                Ok(Some(st)) => return Some(st),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => return None,
            }
        }
    }

    /// Send a signal. Refused (the test fails) once the process has been
    /// reaped: its pid may belong to another process by then.
    pub fn signal(&mut self, sig: rustix::process::Signal) {
        if let Ok(Some(st)) = self.0.try_wait() {
            panic!("pid {} already ended ({st}); not signalling it", self.pid());
        }
        let pid = rustix::process::Pid::from_raw(self.0.id() as i32).expect("pid");
        rustix::process::kill_process(pid, sig).expect("kill");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `dlmd` on a private socket.
pub struct Daemon {
    pub proc: Proc,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Daemon {
    /// A per-user daemon (whoever runs the tests).
    pub fn start() -> Daemon {
        Daemon::start_with(&["--user"])
    }

    /// A daemon with these arguments (besides `--socket`).
    pub fn start_with(args: &[&str]) -> Daemon {
        let dir = temp_dir();
        let socket = dir.path().join("dlmd.sock");
        let log = dir.path().join("dlmd.log");
        let proc = spawn_dlmd_proc(&socket, &log, args);
        let mut d = Daemon {
            proc,
            socket,
            log,
            dir,
        };
        d.wait_listening();
        d
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + TIMEOUT;
        while UnixStream::connect(&self.socket).is_err() {
            if let Ok(Some(st)) = self.proc.0.try_wait() {
                // Dropping `self` prints the log.
                panic!("dlmd exited early ({st})");
            }
            assert!(Instant::now() < deadline, "dlmd did not start listening");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A raw connection.
    pub fn connect(&self) -> Client {
        Client::connect(&self.socket)
    }

    /// A control connection (after `Hello`).
    pub fn control(&self) -> Client {
        let mut c = self.connect();
        assert_eq!(c.hello(wire::ROLE_CONTROL, 0, b""), 0, "control hello");
        c
    }

    /// Create lockspace `name` and open it: (control, lockspace, minor).
    pub fn lockspace(&self, name: &str) -> (Client, Client, i64) {
        let mut ctl = self.control();
        let minor = ctl.create(name, 0);
        assert!(minor >= 0, "create {name}: {minor}");
        let mut ls = self.connect();
        assert_eq!(ls.hello(wire::ROLE_LOCKSPACE, 0, name.as_bytes()), minor);
        (ctl, ls, minor)
    }

    /// Another connection to lockspace `name`.
    pub fn open(&self, name: &str) -> Client {
        let mut c = self.connect();
        let v = c.hello(wire::ROLE_LOCKSPACE, 0, name.as_bytes());
        assert!(v >= 0, "open {name}: {v}");
        c
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            report_dlmd(&mut self.proc, &self.log);
        }
    }
}

/// Print what a failed test needs to know about a `dlmd`: whether it is
/// still running (or how it ended) and everything it logged.
pub fn report_dlmd(proc: &mut Proc, log: &Path) {
    let pid = proc.pid();
    let state = match proc.0.try_wait() {
        Ok(Some(st)) => format!("exited ({st})"),
        Ok(None) => "still running".to_string(),
        Err(e) => format!("in an unknown state ({e})"),
    };
    let text = std::fs::read_to_string(log).unwrap_or_else(|e| format!("(unreadable: {e})\n"));
    eprintln!(
        "--- dlmd pid {pid} {state}; its log {}: ---\n{text}--- end of dlmd log ---",
        log.display()
    );
}

/// A `dlmd` started by [`spawn_dlmd`]: a [`Proc`] (stopped by pid when
/// dropped) that, when the test fails, also prints the daemon's exit
/// status and log.
pub struct Dlmd {
    pub proc: Proc,
    pub log: PathBuf,
}

impl std::ops::Deref for Dlmd {
    type Target = Proc;
    fn deref(&self) -> &Proc {
        &self.proc
    }
}

impl std::ops::DerefMut for Dlmd {
    fn deref_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

impl Drop for Dlmd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            report_dlmd(&mut self.proc, &self.log);
        }
    }
}

/// Start `dlmd` on `socket` with `args`, logging at debug level to `log`
/// (appended to, so that several daemons may share one file).
pub fn spawn_dlmd(socket: &Path, log: &Path, args: &[&str]) -> Dlmd {
    Dlmd {
        proc: spawn_dlmd_proc(socket, log, args),
        log: log.to_path_buf(),
    }
}

fn spawn_dlmd_proc(socket: &Path, log: &Path, args: &[&str]) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let child = Command::new(DLMD)
        .arg("--socket")
        .arg(socket)
        .arg("--log-level")
        .arg("debug")
        .args(args)
        .env_remove("DLM_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start dlmd");
    Proc(child)
}

/// A lock request with the usual tokens: castaddr 0xca, lksb 0x5b, and
/// bastaddr 0xba unless `no_bast`.
pub fn req(mode: dlm_proto::LockMode, name: &[u8], flags: dlm_proto::LockFlags) -> LockRequest {
    let mut r = LockRequest::default();
    r.mode = mode.as_raw();
    r.flags = flags.bits();
    r.castaddr = 0xca;
    r.castparam = 0xc0;
    r.bastaddr = 0xba;
    r.bastparam = 0xb0;
    r.lksb = 0x5b;
    r.set_name(name).expect("name");
    r
}

/// A conversion of `lkid`.
pub fn conv(lkid: u32, mode: dlm_proto::LockMode, flags: dlm_proto::LockFlags) -> LockRequest {
    let mut r = req(mode, b"", flags | dlm_proto::LockFlags::CONVERT);
    r.lkid = lkid;
    r
}

/// An unlock (or, with CANCEL, a cancel) of `lkid`.
pub fn unl(lkid: u32, flags: dlm_proto::LockFlags) -> LockRequest {
    let mut r = req(dlm_proto::LockMode::Nl, b"", flags);
    r.lkid = lkid;
    r
}

/// A raw protocol client.
pub struct Client {
    pub stream: UnixStream,
    dec: Decoder,
    /// Callbacks received and not yet taken.
    pub asts: VecDeque<LockResult>,
}

impl Client {
    pub fn connect(path: &Path) -> Client {
        let stream = UnixStream::connect(path).expect("connect to dlmd");
        stream
            .set_read_timeout(Some(TIMEOUT))
            .expect("read timeout");
        Client {
            stream,
            dec: Decoder::new(),
            asts: VecDeque::new(),
        }
    }

    pub fn send(&mut self, kind: Kind, body: &[u8]) {
        let mut f = Vec::new();
        wire::put_frame(&mut f, kind, body).expect("frame");
        self.stream.write_all(&f).expect("send");
    }

    /// [`send`](Self::send) to a daemon that may have hung up already:
    /// whether the frame went.
    pub fn try_send(&mut self, kind: Kind, body: &[u8]) -> bool {
        let mut f = Vec::new();
        wire::put_frame(&mut f, kind, body).expect("frame");
        self.stream.write_all(&f).is_ok()
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// The next frame, or `None` at end of stream. Fails the test on a
    /// timeout.
    pub fn next_frame(&mut self) -> Option<(Kind, Vec<u8>)> {
        loop {
            if let Some(f) = self.dec.next_frame().expect("daemon framing") {
                return Some((f.kind, f.body.to_vec()));
            }
            let mut buf = [0u8; 4096];
            match self.stream.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.dec.feed(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("reading from dlmd: {e}"),
            }
        }
    }

    /// The next reply frame; callbacks on the way are kept in `asts`.
    pub fn reply(&mut self) -> (Kind, Vec<u8>) {
        loop {
            match self.next_frame() {
                Some((Kind::Ast, body)) => self
                    .asts
                    .push_back(records::decode_result(&body).expect("valid callback")),
                Some(f) => return f,
                None => panic!("dlmd closed the connection"),
            }
        }
    }

    /// Send a frame and return the value of its `Result` reply.
    pub fn call(&mut self, kind: Kind, body: &[u8]) -> i64 {
        self.send(kind, body);
        match self.reply() {
            (Kind::Result, b) => wire::result_value(&b).expect("result body"),
            (k, _) => panic!("expected a Result, got {k:?}"),
        }
    }

    pub fn hello(&mut self, role: u8, flags: u8, name: &[u8]) -> i64 {
        let mut body = vec![role, flags];
        body.extend_from_slice(name);
        self.call(Kind::Hello, &body)
    }

    pub fn write(&mut self, bytes: &[u8]) -> i64 {
        self.call(Kind::Write, bytes)
    }

    pub fn create(&mut self, name: &str, flags: u32) -> i64 {
        let w = records::encode_create(name.as_bytes(), flags, records::VERSION).expect("name");
        self.write(w.as_bytes())
    }

    pub fn remove(&mut self, minor: i64, flags: u32) -> i64 {
        let w = records::encode_remove(minor as u32, flags, records::VERSION);
        self.write(w.as_bytes())
    }

    pub fn cmd(&mut self, cmd: Cmd, r: &LockRequest) -> i64 {
        self.write(records::encode_lock(cmd, r, records::VERSION).as_bytes())
    }

    pub fn lock(&mut self, r: &LockRequest) -> i64 {
        self.cmd(Cmd::Lock, r)
    }

    pub fn unlock(&mut self, r: &LockRequest) -> i64 {
        self.cmd(Cmd::Unlock, r)
    }

    /// A round trip: every callback the daemon queued for us before it
    /// saw this is in `asts` afterwards.
    pub fn sync(&mut self) {
        self.send(Kind::Version, &[]);
        match self.reply() {
            (Kind::Version, b) => assert_eq!(records::decode_version(&b), Ok(records::VERSION)),
            (k, _) => panic!("expected Version, got {k:?}"),
        }
    }

    /// Every callback so far.
    pub fn take_asts(&mut self) -> Vec<LockResult> {
        self.sync();
        self.asts.drain(..).collect()
    }

    /// The next callback, waiting for it.
    pub fn wait_ast(&mut self) -> LockResult {
        if let Some(a) = self.asts.pop_front() {
            return a;
        }
        match self.next_frame() {
            Some((Kind::Ast, body)) => records::decode_result(&body).expect("valid callback"),
            Some((k, _)) => panic!("unexpected {k:?} while waiting for a callback"),
            None => panic!("dlmd closed the connection"),
        }
    }

    /// A JSON query; `Err(errno)` for a `Result` answer.
    pub fn query<T: serde::de::DeserializeOwned>(
        &mut self,
        what: u8,
        name: &[u8],
    ) -> Result<T, i64> {
        let mut body = vec![what];
        body.extend_from_slice(name);
        self.send(Kind::Query, &body);
        let mut json = Vec::new();
        loop {
            match self.reply() {
                (Kind::QueryPart, b) => json.extend_from_slice(&b),
                (Kind::QueryReply, b) => {
                    json.extend_from_slice(&b);
                    return Ok(serde_json::from_slice(&json).expect("valid JSON"));
                }
                (Kind::Result, b) => return Err(wire::result_value(&b).expect("result")),
                (k, _) => panic!("unexpected {k:?} answering a query"),
            }
        }
    }

    pub fn locks(&mut self, ls: &str) -> Vec<dlm_proto::query::LockInfo> {
        self.query(wire::QUERY_LOCKS, ls.as_bytes())
            .expect("locks query")
    }

    pub fn lockspaces(&mut self) -> Vec<dlm_proto::query::LockspaceInfo> {
        self.query(wire::QUERY_LOCKSPACES, b"")
            .expect("lockspaces query")
    }

    /// Read until the daemon closes the connection (discarding frames);
    /// `false` if it is still open after `timeout`.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("read timeout");
        let mut buf = [0u8; 65536];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }

    /// Whether a frame has arrived, without waiting.
    pub fn has_input(&mut self) -> bool {
        if self.dec.pending() > 0 {
            return true;
        }
        use rustix::net::RecvFlags;
        let mut buf = [0u8; 1];
        let r = rustix::net::recv(
            &self.stream,
            &mut buf,
            RecvFlags::PEEK | RecvFlags::DONTWAIT,
        );
        matches!(r, Ok((_, n)) if n > 0)
    }
}

/// Status of a completion, as a kernel status (negative errno).
pub const EUNLOCK: i32 = -dlm_proto::status::EUNLOCK;
pub const ECANCEL: i32 = -dlm_proto::status::ECANCEL;

pub fn neg(e: dlm_proto::Errno) -> i64 {
    -i64::from(e.raw())
}

// ---------------------------------------------------------------------
// Helper processes
// ---------------------------------------------------------------------

/// This test binary, run again as a helper: `mode` and `args` are handed
/// to [`helper_process`] through the environment.
pub fn spawn_helper(mode: &str, args: &[&str], uid: Option<u32>) -> (Proc, HelperOut) {
    match uid {
        Some(uid) => spawn_helper_ids(mode, args, uid, uid),
        None => run_helper(
            Command::new(std::env::current_exe().expect("test binary")),
            mode,
            args,
        ),
    }
}

/// [`spawn_helper`] with this uid and primary gid, and no supplementary
/// groups.
pub fn spawn_helper_ids(mode: &str, args: &[&str], uid: u32, gid: u32) -> (Proc, HelperOut) {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(std::env::current_exe().expect("test binary"));
    c.uid(uid).gid(gid);
    run_helper(c, mode, args)
}

/// [`spawn_helper`] as a test user, with its supplementary groups (which
/// `Command::uid` would drop): through `setpriv --init-groups`.
pub fn spawn_helper_as(mode: &str, args: &[&str], user: &users::TestUser) -> (Proc, HelperOut) {
    let exe = std::env::current_exe().expect("test binary");
    let mut c = Command::new("setpriv");
    c.arg("--reuid")
        .arg(user.uid.to_string())
        .arg("--regid")
        .arg(user.gid.to_string())
        .arg("--init-groups")
        .arg("--")
        .arg(exe);
    run_helper(c, mode, args)
}

fn run_helper(mut c: Command, mode: &str, args: &[&str]) -> (Proc, HelperOut) {
    c.args([
        "common::helper_process",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("DLMD_HELPER", mode)
    .env("DLMD_HELPER_ARGS", args.join("\u{1f}"))
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .env("HOME", "/");
    let mut child = c.spawn().expect("start helper");
    let stdout = child.stdout.take().expect("helper stdout");
    (Proc(child), HelperOut::new(stdout))
}

/// The helper's `HELPER:` lines, read on a thread.
pub struct HelperOut {
    rx: mpsc::Receiver<String>,
}

impl HelperOut {
    fn new(out: ChildStdout) -> HelperOut {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else {
                    break;
                };
                // The harness may have begun the line ("test ... ").
                if let Some((_, rest)) = line.split_once("HELPER: ") {
                    if tx.send(rest.to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        HelperOut { rx }
    }

    /// The next line, or `None` if the helper ended without one or took
    /// longer than `TIMEOUT`.
    pub fn line(&self) -> Option<String> {
        self.rx.recv_timeout(TIMEOUT).ok()
    }
}

fn say(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "HELPER: {s}");
    let _ = out.flush();
}

/// The helper processes' entry point. Not a test by itself: other tests
/// run it in a child process (see [`spawn_helper`]).
#[test]
#[ignore = "a helper process that other tests start"]
fn helper_process() {
    let Ok(mode) = std::env::var("DLMD_HELPER") else {
        return;
    };
    let args = std::env::var("DLMD_HELPER_ARGS").unwrap_or_default();
    let args: Vec<&str> = args.split('\u{1f}').collect();
    let socket = Path::new(args[0]);
    match mode.as_str() {
        // Open lockspace args[1], take EX on args[2], say so, then wait
        // until killed (or stdin closes).
        "hold" => {
            let mut c = Client::connect(socket);
            let v = c.hello(wire::ROLE_LOCKSPACE, 0, args[1].as_bytes());
            assert!(v >= 0, "helper open: {v}");
            let lkid = c.lock(&req(
                dlm_proto::LockMode::Ex,
                args[2].as_bytes(),
                dlm_proto::LockFlags::empty(),
            ));
            assert!(lkid > 0, "helper lock: {lkid}");
            let ast = c.wait_ast();
            assert_eq!(ast.status, 0, "helper grant");
            say(&format!("granted {lkid}"));
            let mut buf = [0u8; 1];
            let _ = std::io::stdin().read(&mut buf);
        }
        // Report what a control Hello, a create, and opening lockspace
        // args[1] answer.
        "probe" => {
            let mut c = Client::connect(socket);
            c.stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
            let mut hello = Vec::new();
            wire::put_frame(&mut hello, Kind::Hello, &[wire::ROLE_CONTROL, 0]).expect("frame");
            // A daemon that refuses us may hang up before we even write.
            if c.stream.write_all(&hello).is_err() {
                say("hello closed");
                return;
            }
            match c.next_frame() {
                Some((Kind::Result, b)) => say(&format!(
                    "hello {}",
                    wire::result_value(&b).expect("result")
                )),
                Some((k, _)) => say(&format!("hello unexpected {k:?}")),
                None => {
                    say("hello closed");
                    return;
                }
            }
            say(&format!("create {}", c.create("probe-ls", 0)));
            let mut l = Client::connect(socket);
            say(&format!(
                "open {}",
                l.hello(wire::ROLE_LOCKSPACE, 0, args[1].as_bytes())
            ));
            let q: Result<Vec<dlm_proto::query::LockInfo>, i64> =
                c.query(wire::QUERY_LOCKS, args[1].as_bytes());
            say(&format!(
                "query {}",
                q.map(|v| v.len() as i64).unwrap_or_else(|e| e)
            ));
        }
        // Connect args[1] times; on each connection send args[2]
        // Writes before any Hello (each one a protocol error), then
        // close. Say how many were sent.
        "flood" => {
            let conns: usize = args[1].parse().expect("connection count");
            let frames: usize = args[2].parse().expect("frames per connection");
            let mut burst = Vec::new();
            for _ in 0..frames {
                wire::put_frame(&mut burst, Kind::Write, b"junk").expect("frame");
            }
            for _ in 0..conns {
                let mut c = Client::connect(socket);
                c.send_raw(&burst);
                c.stream
                    .shutdown(std::net::Shutdown::Write)
                    .expect("shutdown");
                assert!(c.closed_within(TIMEOUT), "the daemon hangs up");
            }
            say(&format!("sent {}", conns * frames));
        }
        // Say the names of the lockspaces the daemon lists, sorted.
        "list" => {
            let mut c = Client::connect(socket);
            assert_eq!(c.hello(wire::ROLE_CONTROL, 0, b""), 0, "control hello");
            let mut names: Vec<String> = c.lockspaces().into_iter().map(|l| l.name).collect();
            names.sort();
            say(&format!("lockspaces {}", names.join(",")));
        }
        // Create lockspace args[1], set its mode to args[2] (octal), say
        // "created MINOR", then wait until stdin closes.
        "create" => {
            let mut ctl = Client::connect(socket);
            assert_eq!(ctl.hello(wire::ROLE_CONTROL, 0, b""), 0, "control hello");
            let minor = ctl.create(args[1], 0);
            assert!(minor >= 0, "create {}: {minor}", args[1]);
            let mut ls = Client::connect(socket);
            assert_eq!(ls.hello(wire::ROLE_LOCKSPACE, 0, args[1].as_bytes()), minor);
            let mode = u32::from_str_radix(args[2], 8).expect("an octal mode");
            assert_eq!(ls.call(Kind::Chmod, &mode.to_le_bytes()), 0, "chmod");
            say(&format!("created {minor}"));
            let mut buf = [0u8; 1];
            let _ = std::io::stdin().read(&mut buf);
        }
        // Open control connections (saying Hello) until the daemon turns
        // one away or args[1] are open; say how many, the refusal's
        // answer, and what the client library says when it is refused
        // too. Then hold them until stdin closes.
        "hog" => {
            let most: usize = args[1].parse().expect("a count");
            let mut held = Vec::new();
            let mut answer = None;
            while held.len() < most {
                let mut c = Client::connect(socket);
                let mut hello = Vec::new();
                wire::put_frame(&mut hello, Kind::Hello, &[wire::ROLE_CONTROL, 0]).expect("frame");
                // A daemon that refuses us may hang up before we write;
                // its answer is still there to read.
                let _ = c.stream.write_all(&hello);
                let v = match c.next_frame() {
                    Some((Kind::Result, b)) => wire::result_value(&b).expect("result"),
                    other => panic!("a Hello answered {other:?}"),
                };
                if v != 0 {
                    assert!(c.closed_within(TIMEOUT), "a refused connection is closed");
                    answer = Some(v);
                    break;
                }
                held.push(c);
            }
            say(&format!("held {}", held.len()));
            if let Some(v) = answer {
                say(&format!("refused {v}"));
                let err = dlm::Dlm::builder()
                    .backend(dlm::Backend::Fallback)
                    .socket(socket)
                    .autostart(false)
                    .open()
                    .expect_err("the library is refused too");
                say(&format!("library {} {err}", err.errno().raw()));
            }
            let mut buf = [0u8; 1];
            let _ = std::io::stdin().read(&mut buf);
        }
        other => panic!("unknown helper mode {other}"),
    }
}
