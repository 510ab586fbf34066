//! `dlm-locksh`: the cluster tests' lock shell (`ci/cluster/c/cl_locksh.c`)
//! written on the `dlm` crate's client API instead of libdlm, so that the
//! same tests (`ci/cluster/tests/*.sh`, `DLM_CLUSTER_LIB=rust`) run
//! through the Rust API on a cluster lockspace (kernel backend, a
//! lockspace `dlm_tool join` made on every node).
//!
//! ```text
//! dlm-locksh LOCKSPACE [--recovery]
//! ```
//!
//! It reads commands on standard input, one a line, and prints events on
//! standard output, one a line, flushed at once. The words and the lines
//! are cl_locksh's, so `cl-sh` drives either (H a handle 0..63, RES a
//! resource, MODE NL CR CW PR PW EX, OPTS any of `noqueue`, `valblk`,
//! `lvb=TEXT`):
//!
//! ```text
//! lock H RES MODE [OPTS]     callback path: Lockspace::request, its
//!                            completions and blocking callbacks on the
//!                            lockspace's event-loop thread
//! convert H MODE [OPTS]      a conversion of H's lock (either path)
//! unlock H [OPTS]            release H's lock (either path)
//! wlock H RES MODE [OPTS]    blocking path: Lockspace::lock on a thread
//!                            of its own, the Lock kept under H
//! alock H RES MODE [OPTS]    async path: Lockspace::lock_async, the
//!                            future driven to its end by a small
//!                            executor on a thread of its own
//! show H                     H's state
//! quit                       release every lock, print BYE, exit 0
//! ```
//!
//! Events (t= is CLOCK_REALTIME in seconds):
//!
//! ```text
//! READY ls=NAME created=0|1 api=rust
//! OK <command> | ERR <command> errno=N (text)
//! AST H status=S(N) sbflags=0xF [VALNOTVALID] [DEMOTED] mode=M lvb=... t=T
//! BAST H held=M mode=B t=T        B: the mode another node asked for
//! STATE H res=RES lkid=0xID mode=M pending=0|1 path=cb|wait|async lvb=...
//! ```
//!
//! With `--recovery` the lockspace is opened with recovery callbacks
//! ([`dlm::Recovery`]), and each one is an event (the first
//! `RECOVER done` is the join's, before `READY`):
//!
//! ```text
//! RECOVER prep t=T
//! RECOVER slot nodeid=N slot=S t=T
//! RECOVER done members=N:S,N:S our_slot=S generation=G t=T
//! RECOVERY status=ok|errno=N    after READY: Lockspace::recovery_status
//! ```
//!
//! Unlike libdlm's, the Rust API's blocking callback carries the blocked
//! mode (`mode=`). A blocking or async grant is a [`dlm::Lock`], which
//! keeps the granted mode and value block but not the status flags: its
//! AST line says `sbflags=?` (VALNOTVALID is seen on the callback path,
//! and on a conversion's [`dlm::Completion`]).
#![forbid(unsafe_code)]

use std::future::Future;
use std::io::{BufRead, Write};
use std::pin::pin;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dlm::{Backend, Completion, Dlm, Errno, Error, Lock, LockFlags, LockId, LockMode};
use dlm::{LockRequest, Lockspace, LockspaceName, Outcome, ResourceName};
use dlm::{Status, StatusFlags, ValueBlock};

const MAX_LOCKS: usize = 64;

/// How a handle's lock was taken.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    Cb,
    Wait,
    Async,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Cb => "cb",
            Path::Wait => "wait",
            Path::Async => "async",
        }
    }
}

#[derive(Default)]
struct Entry {
    used: bool,
    pending: bool,
    unlocking: bool,
    granted: Option<LockMode>,
    requested: Option<LockMode>,
    res: String,
    id: Option<LockId>,
    path: Option<Path>,
    /// The lock of a blocking or async grant (taken out while an
    /// operation on it runs on its thread).
    lock: Option<Lock>,
    lvb: ValueBlock,
}

type Table = Arc<Mutex<Vec<Entry>>>;

fn table(t: &Table) -> MutexGuard<'_, Vec<Entry>> {
    // A panicking callback must not take the shell down with it.
    t.lock().unwrap_or_else(|p| p.into_inner())
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One event line, written and flushed under stdout's lock.
fn emit(line: &str) {
    let out = std::io::stdout();
    let mut o = out.lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

fn status_word(s: Status) -> (&'static str, i32) {
    match s {
        Status::Granted => ("0", 0),
        Status::WouldBlock => ("EAGAIN", 11),
        Status::ConversionDeadlock | Status::DeadlockCancelled => ("EDEADLK", 35),
        Status::Unlocked => ("EUNLOCK", 0x10002),
        Status::Cancelled => ("ECANCEL", 0x10001),
        Status::TimedOut => ("ETIMEDOUT", 110),
        _ => ("other", -1),
    }
}

fn mode_name(m: Option<LockMode>) -> &'static str {
    m.map_or("none", |m| m.name())
}

/// cl_locksh's value block text: `<zero>`, or the bytes up to the first
/// NUL, quoted, others as `\xNN`.
fn lvb_text(v: &ValueBlock) -> String {
    if v.is_zero() {
        return "lvb=<zero>".into();
    }
    let mut s = String::from("lvb=\"");
    for &c in v.as_bytes().iter().take_while(|&&c| c != 0) {
        if (0x20..0x7f).contains(&c) && c != b'"' && c != b'\\' {
            s.push(c as char);
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    s.push('"');
    s
}

/// The AST line of handle `h` after an outcome; `sb` is `None` when the
/// path does not show the status flags.
fn ast_line(h: usize, status: Status, sb: Option<StatusFlags>, e: &Entry) -> String {
    let (name, num) = status_word(status);
    let flags = match sb {
        Some(f) => format!(
            "0x{:x}{}{}",
            f.bits(),
            if f.contains(StatusFlags::VALNOTVALID) {
                " VALNOTVALID"
            } else {
                ""
            },
            if f.contains(StatusFlags::DEMOTED) {
                " DEMOTED"
            } else {
                ""
            }
        ),
        None => "?".into(),
    };
    format!(
        "AST {h} status={name}({num}) sbflags={flags} mode={} {} t={:.6}",
        mode_name(e.granted),
        lvb_text(&e.lvb),
        now()
    )
}

/// A completion of handle `h`'s lock: the entry's state, and its line.
fn complete(t: &Table, h: usize, c: &Completion) {
    let mut tab = table(t);
    let e = &mut tab[h];
    e.pending = false;
    if e.unlocking {
        e.unlocking = false;
        if c.status == Status::Unlocked {
            e.granted = None;
            e.used = false;
            e.id = None;
        }
    } else if c.status == Status::Granted {
        e.granted = e.requested;
    } else if e.granted.is_none() {
        e.used = false;
        e.id = None;
    }
    if let Some(v) = c.value_block {
        if c.status != Status::Unlocked {
            e.lvb = v;
        }
    }
    let line = ast_line(h, c.status, Some(c.flags), e);
    drop(tab);
    emit(&line);
}

fn bast(t: &Table, h: usize, blocked: LockMode) {
    let held = mode_name(table(t)[h].granted);
    emit(&format!(
        "BAST {h} held={held} mode={} t={:.6}",
        blocked.name(),
        now()
    ));
}

struct Opts {
    flags: LockFlags,
    lvb: Option<ValueBlock>,
}

fn parse_opts(words: &[&str]) -> Option<Opts> {
    let mut o = Opts {
        flags: LockFlags::empty(),
        lvb: None,
    };
    for w in words {
        match *w {
            "noqueue" => o.flags |= LockFlags::NOQUEUE,
            "valblk" => o.flags |= LockFlags::VALBLK,
            _ => {
                let text = w.strip_prefix("lvb=")?;
                if text.len() >= dlm::USER_LVB_LEN {
                    return None;
                }
                o.lvb = Some(ValueBlock::from_prefix(text.as_bytes()));
            }
        }
    }
    Some(o)
}

struct Shell {
    ls: Lockspace,
    t: Table,
}

enum Reply {
    Ok,
    Err(i32, String),
}

fn errno_of(e: &Error) -> i32 {
    match e {
        Error::Os(n) => n.raw(),
        Error::Lockspace { errno, .. } => errno.raw(),
        _ => Errno::EINVAL.raw(),
    }
}

impl Shell {
    fn command(&self, line: &str) -> Option<Reply> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let verb = *words.first()?;
        if verb == "quit" {
            return None;
        }
        let bad = |what: &str| Some(Reply::Err(Errno::EINVAL.raw(), what.into()));
        let Some(h) = words
            .get(1)
            .and_then(|w| w.parse::<usize>().ok())
            .filter(|&h| h < MAX_LOCKS)
        else {
            return bad("bad command or handle");
        };
        match verb {
            "show" => {
                let tab = table(&self.t);
                let e = &tab[h];
                emit(&format!(
                    "STATE {h} res={} lkid=0x{:x} mode={} pending={} path={} {}",
                    if e.used { e.res.as_str() } else { "-" },
                    e.id.map_or(0, |i| i.lkid()),
                    mode_name(e.granted),
                    u8::from(e.pending),
                    e.path.map_or("-", Path::name),
                    lvb_text(&e.lvb)
                ));
                Some(Reply::Ok)
            }
            "lock" | "wlock" | "alock" => {
                let path = match verb {
                    "lock" => Path::Cb,
                    "wlock" => Path::Wait,
                    _ => Path::Async,
                };
                let (Some(res), Some(mode), Some(opts)) = (
                    words.get(2),
                    words.get(3).and_then(|m| m.parse::<LockMode>().ok()),
                    parse_opts(words.get(4..).unwrap_or(&[])),
                ) else {
                    return bad("usage: lock|wlock|alock H RES MODE [noqueue] [valblk] [lvb=TEXT]");
                };
                let Ok(name) = ResourceName::new(res) else {
                    return bad("bad resource name");
                };
                Some(self.lock(h, path, res, name, mode, opts))
            }
            "convert" => {
                let (Some(mode), Some(opts)) = (
                    words.get(2).and_then(|m| m.parse::<LockMode>().ok()),
                    parse_opts(words.get(3..).unwrap_or(&[])),
                ) else {
                    return bad("usage: convert H MODE [noqueue] [valblk] [lvb=TEXT]");
                };
                Some(self.convert(h, mode, opts))
            }
            "unlock" => {
                let Some(opts) = parse_opts(words.get(2..).unwrap_or(&[])) else {
                    return bad("usage: unlock H [valblk] [lvb=TEXT]");
                };
                Some(self.unlock(h, opts))
            }
            _ => bad("unknown command"),
        }
    }

    fn lock(
        &self,
        h: usize,
        path: Path,
        res: &str,
        name: ResourceName,
        mode: LockMode,
        opts: Opts,
    ) -> Reply {
        {
            let mut tab = table(&self.t);
            let e = &mut tab[h];
            if e.used {
                return Reply::Err(Errno::EBUSY.raw(), "handle in use".into());
            }
            *e = Entry {
                used: true,
                pending: true,
                requested: Some(mode),
                res: res.to_string(),
                path: Some(path),
                lvb: opts.lvb.unwrap_or_default(),
                ..Entry::default()
            };
        }
        let tb = self.t.clone();
        let req = LockRequest::new(name, mode)
            .flags(opts.flags)
            .on_blocking(move |_, blocked| bast(&tb, h, blocked));
        let failed = |e: &Error| {
            let mut tab = table(&self.t);
            tab[h] = Entry::default();
            Reply::Err(errno_of(e), e.to_string())
        };
        match path {
            Path::Cb => {
                let tc = self.t.clone();
                let r = self.ls.request(req, move |id, c| {
                    table(&tc)[h].id = Some(id);
                    complete(&tc, h, c);
                });
                match r {
                    Ok(id) => table(&self.t)[h].id = Some(id),
                    Err(e) => return failed(&e),
                }
            }
            Path::Wait => {
                let (ls, t) = (self.ls.clone(), self.t.clone());
                thread::spawn(move || {
                    let r = ls.lock(req);
                    outcome(&t, h, r);
                });
            }
            Path::Async => {
                let fut = self.ls.lock_async(req);
                let t = self.t.clone();
                thread::spawn(move || {
                    let r = block_on(fut);
                    outcome(&t, h, r);
                });
            }
        }
        Reply::Ok
    }

    fn convert(&self, h: usize, mode: LockMode, opts: Opts) -> Reply {
        let mut tab = table(&self.t);
        let e = &mut tab[h];
        if !e.used || e.pending {
            return busy(e.used);
        }
        if let Some(v) = opts.lvb {
            e.lvb = v;
        }
        let lvb = opts.flags.contains(LockFlags::VALBLK).then_some(e.lvb);
        e.requested = Some(mode);
        e.pending = true;
        match e.path {
            Some(Path::Cb) => {
                let Some(id) = e.id else {
                    e.pending = false;
                    return Reply::Err(Errno::EBUSY.raw(), "no lock id yet".into());
                };
                drop(tab);
                if let Err(err) = self.ls.convert(id, mode, opts.flags, lvb.as_ref()) {
                    table(&self.t)[h].pending = false;
                    return Reply::Err(errno_of(&err), err.to_string());
                }
            }
            _ => {
                let Some(mut lock) = e.lock.take() else {
                    e.pending = false;
                    return Reply::Err(Errno::EBUSY.raw(), "no lock".into());
                };
                drop(tab);
                let t = self.t.clone();
                thread::spawn(move || {
                    let r = lock.convert(mode, opts.flags, lvb.as_ref());
                    table(&t)[h].lock = Some(lock);
                    match r {
                        Ok(c) => complete(&t, h, &c),
                        Err(err) => {
                            table(&t)[h].pending = false;
                            emit(&format!("AST {h} error=\"{err}\" t={:.6}", now()));
                        }
                    }
                });
            }
        }
        Reply::Ok
    }

    fn unlock(&self, h: usize, opts: Opts) -> Reply {
        let mut tab = table(&self.t);
        let e = &mut tab[h];
        if !e.used || e.pending {
            return busy(e.used);
        }
        if let Some(v) = opts.lvb {
            e.lvb = v;
        }
        let lvb = opts.flags.contains(LockFlags::VALBLK).then_some(e.lvb);
        e.pending = true;
        e.unlocking = true;
        match e.path {
            Some(Path::Cb) => {
                let Some(id) = e.id else {
                    e.pending = false;
                    e.unlocking = false;
                    return Reply::Err(Errno::EBUSY.raw(), "no lock id yet".into());
                };
                drop(tab);
                if let Err(err) = self.ls.unlock(id, opts.flags, lvb.as_ref()) {
                    let mut tab = table(&self.t);
                    tab[h].pending = false;
                    tab[h].unlocking = false;
                    return Reply::Err(errno_of(&err), err.to_string());
                }
            }
            _ => {
                let Some(lock) = e.lock.take() else {
                    e.pending = false;
                    e.unlocking = false;
                    return Reply::Err(Errno::EBUSY.raw(), "no lock".into());
                };
                drop(tab);
                let t = self.t.clone();
                thread::spawn(move || {
                    let r = lock.unlock_with(opts.flags, lvb.as_ref());
                    let c = Completion {
                        status: if r.is_ok() {
                            Status::Unlocked
                        } else {
                            Status::Lost
                        },
                        flags: StatusFlags::empty(),
                        value_block: None,
                    };
                    complete(&t, h, &c);
                });
            }
        }
        Reply::Ok
    }

    /// Release every lock not in flight and wait (20 s at most) for the
    /// answers.
    fn release_all(&self) {
        for h in 0..MAX_LOCKS {
            let idle = {
                let tab = table(&self.t);
                tab[h].used && !tab[h].pending
            };
            if idle {
                let _ = self.unlock(
                    h,
                    Opts {
                        flags: LockFlags::empty(),
                        lvb: None,
                    },
                );
            }
        }
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let left = table(&self.t).iter().filter(|e| e.pending).count();
            if left == 0 {
                return;
            }
            if Instant::now() > end {
                emit(&format!("QUIT with {left} requests unanswered"));
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

fn busy(used: bool) -> Reply {
    Reply::Err(
        Errno::EBUSY.raw(),
        if used {
            "a request is pending"
        } else {
            "no lock on this handle"
        }
        .into(),
    )
}

/// The outcome of a blocking or async request of handle `h`.
fn outcome(t: &Table, h: usize, r: dlm::Result<Outcome<Lock>>) {
    let mut tab = table(t);
    let e = &mut tab[h];
    e.pending = false;
    let line = match r {
        Ok(Outcome::Granted(lock)) => {
            e.granted = Some(lock.mode());
            e.id = Some(lock.id());
            if let Some(v) = lock.value_block() {
                e.lvb = *v;
            }
            e.lock = Some(lock);
            ast_line(h, Status::Granted, None, e)
        }
        Ok(Outcome::NotGranted(c)) => {
            e.used = false;
            ast_line(h, c.status, Some(c.flags), e)
        }
        Err(err) => {
            e.used = false;
            format!("AST {h} error=\"{err}\" t={:.6}", now())
        }
    };
    drop(tab);
    emit(&line);
}

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Drive a future to its end on this thread (parked between wakes).
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        thread::park();
    }
}

/// `--recovery`: each recovery callback printed as an event.
struct Events;

impl dlm::Recovery for Events {
    fn recover_prep(&self) {
        emit(&format!("RECOVER prep t={:.6}", now()));
    }
    fn recover_slot(&self, failed: dlm::Member) {
        emit(&format!(
            "RECOVER slot nodeid={} slot={} t={:.6}",
            failed.nodeid,
            failed.slot,
            now()
        ));
    }
    fn recover_done(&self, members: &[dlm::Member], our_slot: u32, generation: u32) {
        let m: Vec<String> = members
            .iter()
            .map(|m| format!("{}:{}", m.nodeid, m.slot))
            .collect();
        emit(&format!(
            "RECOVER done members={} our_slot={our_slot} generation={generation} t={:.6}",
            m.join(","),
            now()
        ));
    }
}

fn run(name: &str, recovery: bool) -> Result<(), String> {
    let lsname = LockspaceName::new(name).map_err(|e| format!("lockspace name {name}: {e}"))?;
    let dlm = Dlm::builder()
        .backend(Backend::Kernel)
        .open()
        .map_err(|e| format!("the kernel backend: {e}"))?;
    let mut opts = dlm::LockspaceOptions::new();
    if recovery {
        opts = opts.recovery(Arc::new(Events));
    }
    let (ls, created) = match dlm.open_lockspace_with(&lsname, opts.clone()) {
        Ok(ls) => (ls, false),
        Err(Error::Lockspace { errno, .. }) if errno == Errno::ENOENT => (
            dlm.create_lockspace_with(&lsname, opts.mode(0o600))
                .map_err(|e| format!("create lockspace {name}: {e}"))?,
            true,
        ),
        Err(e) => return Err(format!("open lockspace {name}: {e}")),
    };
    ls.start_event_loop()
        .map_err(|e| format!("the event loop: {e}"))?;
    let shell = Shell {
        ls,
        t: Arc::new(Mutex::new(
            (0..MAX_LOCKS).map(|_| Entry::default()).collect(),
        )),
    };
    emit(&format!(
        "READY ls={name} created={} api=rust",
        u8::from(created)
    ));
    if recovery {
        emit(&match shell.ls.recovery_status() {
            Ok(()) => "RECOVERY status=ok".to_string(),
            Err(e) => format!("RECOVERY errno={}", e.raw()),
        });
    }
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let line = line.trim_end();
        if line.trim().is_empty() {
            continue;
        }
        match shell.command(line) {
            None => break,
            Some(Reply::Ok) => emit(&format!("OK {line}")),
            Some(Reply::Err(n, what)) => emit(&format!("ERR {line} errno={n} ({what})")),
        }
    }
    shell.release_all();
    emit("BYE");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (name, recovery) = match args.as_slice() {
        [_, name] => (name, false),
        [_, name, flag] if flag == "--recovery" => (name, true),
        _ => {
            eprintln!("usage: dlm-locksh LOCKSPACE [--recovery]");
            return ExitCode::from(2);
        }
    };
    match run(name, recovery) {
        Ok(()) => {
            // The lockspace's handles and threads end with the process.
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("dlm-locksh: {e}");
            ExitCode::FAILURE
        }
    }
}
