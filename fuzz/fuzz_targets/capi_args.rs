//! The C ABI's argument handling: libdlm's exported functions called with
//! fuzzer-chosen arguments, on a real `dlmd` (a private one, started once
//! per fuzz process), so that valid calls really lock.
//!
//! The threaded library's 26 functions are the `extern "C"` symbols
//! `dlm_capi::export_libdlm!(threaded)` defines in this binary, as in
//! `libdlm.so.3`; the lite library's calls go through the same
//! implementation with the lite flavour (`dlm_capi::abi`, what
//! `libdlm_lt.so.3`'s symbols call); `dlm_new_lockspace_ops` is
//! `dlm_capi::recovery::new_lockspace_ops_c`. Each input picks the
//! library, then runs a sequence of calls: handles that are open, NULL,
//! closed or made up; names NULL, empty, over-long or not NUL-terminated
//! (within a buffer of ours: a `(name, namelen)` pair never reaches past
//! it, and a C string always ends in a NUL inside it); modes in and out of
//! range; any flags; value blocks with and without a buffer; NULL status
//! blocks and AST routines; lock ids that were never issued; purges of any
//! node and pid; `dlm_ls_lockx` with NULL or real xid and timeout
//! pointers; fds that are not a lockspace's.
//!
//! The oracle:
//! - no crash, panic (the fuzz build aborts on one, so the library's
//!   own `catch_unwind` cannot hide it) or hang;
//! - every call whose arguments the library refuses before asking the DLM
//!   fails with the errno libdlm.h and `dlm_capi::abi` document (in the
//!   library's order of checks), and every failure sets errno;
//! - no lock leaks: after each input every lock it took is unlocked by the
//!   lock id its status block reported, its handles are closed, and
//!   another connection then finds no lock in any lockspace the inputs
//!   use and no lockspace beyond those there were before. A lock the
//!   library took but reported under a wrong id, or never reported, stays
//!   behind and fails the input.
//!
//! Waiting calls always carry `LKF_NOQUEUE`: a waiting call whose request
//! must queue behind another lock of the same input would wait for ever,
//! by design, and hang the fuzzer.
#![no_main]
#![allow(unsafe_code)]

use std::os::raw::{c_char, c_int, c_uint, c_void};
use std::path::PathBuf;
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use dlm_capi::recovery::{new_lockspace_ops_c, DlmLockspaceOps, DlmSlot};
use dlm_capi::{abi, AstFn, DlmLksb, Flavor, EINPROG, LKF_WAIT};
use libfuzzer_sys::fuzz_target;

/// libdlm.so.3's symbols, as the library defines them.
mod exported {
    dlm_capi::export_libdlm!(threaded);
}
use exported::*;

const NOQUEUE: u32 = 0x1;
const CANCEL: u32 = 0x2;
const CONVERT: u32 = 0x4;
const VALBLK: u32 = 0x8;
const PERSISTENT: u32 = 0x80;
const FORCEUNLOCK: u32 = 0x20000;
const TIMEOUT: u32 = 0x40000;

/// Status blocks and value blocks: process-wide and never freed, since
/// the library keeps a lock's status block until the lock's last AST; a
/// leaked lock must not leave it pointing at freed memory.
///
/// Each request of an input gets a status block of its own (a C program
/// that gave one block to two outstanding locks would see either lock's
/// completion in it, as with the kernel); conversions and unlocks of a
/// lock use the lock's. Calls on lock ids never issued use `scratch`.
const NLKSB: usize = 24;
struct Pool {
    lksb: [DlmLksb; NLKSB],
    lvb: [[u8; 32]; NLKSB],
    /// The status block of the unlocks after each input.
    cleanup: DlmLksb,
    /// The status block of calls on lock ids that were never issued.
    scratch: DlmLksb,
    scratch_lvb: [u8; 32],
}

static ASTS: [AtomicUsize; NLKSB + 1] = [const { AtomicUsize::new(0) }; NLKSB + 1];
static BASTS: AtomicUsize = AtomicUsize::new(0);
static RECOVERY: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn ast(arg: *mut c_void) {
    let i = (arg as usize).min(NLKSB);
    ASTS[i].fetch_add(1, Ordering::SeqCst);
}

unsafe extern "C" fn bast(_arg: *mut c_void) {
    BASTS.fetch_add(1, Ordering::SeqCst);
}

unsafe extern "C" fn on_prep(_: *mut c_void) {
    RECOVERY.fetch_add(1, Ordering::SeqCst);
}

unsafe extern "C" fn on_done(_: *mut c_void, _: *mut DlmSlot, _: c_int, _: c_int, _: u32) {
    RECOVERY.fetch_add(1, Ordering::SeqCst);
}

/// LeakSanitizer's suppressions (the hook it calls at start): glibc's
/// record of a thread's TLS destructors (`__cxa_thread_atexit_impl`),
/// which it frees when the thread exits. The library's AST and timer
/// threads may still be exiting when libFuzzer checks for leaks after an
/// input, and the long run saw that record reported once in 118,537
/// executions, with no frame of ours above it.
#[no_mangle]
pub extern "C" fn __lsan_default_suppressions() -> *const c_char {
    c"leak:__cxa_thread_atexit_impl\n".as_ptr()
}

/// What lives for the whole fuzz process.
struct Global {
    pool: usize,
    /// The lockspace every input may lock in, open all along.
    base: usize,
    base_fd: c_int,
    /// Lockspaces there are before any input (the base one, "default").
    lockspaces: Vec<String>,
    dlm: dlm::Dlm,
}

static DAEMON_PID: AtomicUsize = AtomicUsize::new(0);
static DAEMON_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn stop_daemon() {
    let pid = DAEMON_PID.load(Ordering::SeqCst);
    if pid != 0 {
        // SAFETY: a signal to the daemon this process started.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    if let Some(d) = DAEMON_DIR.get() {
        if tracing() {
            eprintln!("the private dlmd's log is in {}", d.display());
        } else {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Start a private dlmd (`$DLM_DLMD`, else the workspace's release build),
/// killed when this process dies (PR_SET_PDEATHSIG) and stopped at exit.
fn start_daemon() {
    use std::os::unix::process::CommandExt;
    let dlmd = std::env::var_os("DLM_DLMD")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/dlmd")
        });
    // libFuzzer may end the process without running atexit handlers: the
    // directories of fuzz processes that are gone are removed here.
    if let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) {
        for e in rd.flatten() {
            let n = e.file_name();
            let Some(pid) = n.to_str().and_then(|n| n.strip_prefix("dlm-fuzz-capi-")) else {
                continue;
            };
            if !std::path::Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = std::env::temp_dir().join(format!("dlm-fuzz-capi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory for the private dlmd");
    let sock = dir.join("dlmd.sock");
    let mut cmd = std::process::Command::new(&dlmd);
    cmd.arg("--socket")
        .arg(&sock)
        .arg("--log-level")
        .arg(if tracing() { "debug" } else { "warn" })
        .arg("--log-file")
        .arg(dir.join("dlmd.log"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: prctl only, async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot run {} (cargo build --release -p dlmd): {e}",
            dlmd.display()
        )
    });
    DAEMON_PID.store(child.id() as usize, Ordering::SeqCst);
    let _ = DAEMON_DIR.set(dir);
    // SAFETY: registering a plain extern "C" function.
    unsafe { libc::atexit(stop_daemon) };
    for _ in 0..1000 {
        if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::env::set_var("DLM_SOCKET", &sock);
    std::env::set_var("DLM_BACKEND", "fallback");
    std::env::set_var("DLM_NO_AUTOSTART", "1");
    std::mem::forget(child);
}

fn global() -> &'static Global {
    static G: OnceLock<Global> = OnceLock::new();
    G.get_or_init(|| {
        start_daemon();
        let pool: &'static mut Pool = Box::leak(Box::new(Pool {
            lksb: std::array::from_fn(|_| DlmLksb {
                sb_status: 0,
                sb_lkid: 0,
                sb_flags: 0,
                sb_lvbptr: null_mut(),
            }),
            lvb: [[0; 32]; NLKSB],
            cleanup: DlmLksb {
                sb_status: 0,
                sb_lkid: 0,
                sb_flags: 0,
                sb_lvbptr: null_mut(),
            },
            scratch: DlmLksb {
                sb_status: 0,
                sb_lkid: 0,
                sb_flags: 0,
                sb_lvbptr: null_mut(),
            },
            scratch_lvb: [0; 32],
        }));
        // SAFETY: a NUL-terminated name.
        let base = unsafe { dlm_create_lockspace(c"fz".as_ptr(), 0o600) };
        assert!(!base.is_null(), "the base lockspace");
        let base_fd = dlm_ls_get_fd(base);
        // The default lockspace, so that it is in the baseline.
        assert!(dlm_get_fd() >= 0, "the default lockspace");
        let dlm = dlm::Dlm::open().expect("a second connection to the private dlmd");
        let mut lockspaces: Vec<String> = dlm
            .lockspaces()
            .expect("lockspaces")
            .into_iter()
            .map(|l| l.name)
            .collect();
        lockspaces.sort();
        Global {
            pool: pool as *mut Pool as usize,
            base: base as usize,
            base_fd,
            lockspaces,
            dlm,
        }
    })
}

/// `CAPI_ARGS_TRACE=1`: every call and its result on stderr (to read a
/// failing input).
fn tracing() -> bool {
    static T: OnceLock<bool> = OnceLock::new();
    *T.get_or_init(|| std::env::var_os("CAPI_ARGS_TRACE").is_some())
}

macro_rules! trace {
    ($($a:tt)*) => {
        if tracing() {
            eprintln!($($a)*);
        }
    };
}

fn errno() -> c_int {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn set_errno(e: c_int) {
    // SAFETY: the calling thread's errno.
    unsafe { *libc::__errno_location() = e }
}

/// The input, read a byte at a time; zeros once it runs out.
struct Input<'a> {
    d: &'a [u8],
    i: usize,
}

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        let b = self.d.get(self.i).copied().unwrap_or(0);
        self.i += 1;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }
    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | (u32::from(self.u16()) << 16)
    }
    fn done(&self) -> bool {
        self.i >= self.d.len()
    }
}

/// A handle as the input names it.
#[derive(Clone, Copy, Debug)]
enum H {
    /// Open: the base one, or one this input opened.
    Open(usize),
    Null,
    /// A value that is no handle (made up, or closed by this input).
    Bad(usize),
}

impl H {
    fn ptr(self) -> *mut c_void {
        match self {
            H::Open(k) | H::Bad(k) => k as *mut c_void,
            H::Null => null_mut(),
        }
    }
}

/// A lock this input took: to be unlocked afterwards by the lock id its
/// status block said; on a handle, or (`None`) the default lockspace.
struct Taken {
    handle: Option<usize>,
    lkid: u32,
}

struct Run {
    g: &'static Global,
    pool: *mut Pool,
    lite: bool,
    /// Handles this input opened (key, name), still open.
    mine: Vec<(usize, Vec<u8>)>,
    /// Handles closed (not to be used as open ones again).
    closed: Vec<usize>,
    taken: Vec<Taken>,
    /// Every lock id any call reported (for "never issued").
    issued: Vec<u32>,
    /// The status block of each lock taken: (handle, lock id, slot).
    slot_of: Vec<(Option<usize>, u32, usize)>,
    /// The slots given to a request in this input.
    used: [bool; NLKSB],
    default_used: bool,
    /// Lockspaces closed, not released: released at the end.
    late_release: Vec<Vec<u8>>,
    /// Lockspaces released by the input, which may stay (see `cleanup`).
    released: Vec<Vec<u8>>,
    /// The longest LKF_TIMEOUT timeout given, in centiseconds: the
    /// library's timer thread for it sleeps that long.
    timer_cs: u64,
    /// The name buffer: (name, namelen) stays inside it; C strings end in
    /// its last byte, a NUL.
    name: [u8; 100],
}

fn expect(what: &str, rv: c_int, want: Option<c_int>) {
    let e = errno();
    trace!("{what} = {rv} errno {e} (want {want:?})");
    match want {
        Some(w) => assert!(
            rv == -1 && e == w,
            "{what}: got {rv} errno {e}, want -1 errno {w}"
        ),
        None => assert!(rv == 0 || e != 0, "{what}: {rv} with errno 0"),
    }
}

fn expect_ptr(what: &str, p: *mut c_void, want: Option<c_int>) {
    let e = errno();
    trace!("{what} = {p:?} errno {e} (want {want:?})");
    match want {
        Some(w) => assert!(
            p.is_null() && e == w,
            "{what}: got {p:?} errno {e}, want NULL errno {w}"
        ),
        None => assert!(!p.is_null() || e != 0, "{what}: NULL with errno 0"),
    }
}

impl Run {
    fn lksb(&self, i: usize) -> *mut DlmLksb {
        // SAFETY: the pool lives for ever; i < NLKSB.
        unsafe { &raw mut (*self.pool).lksb[i] }
    }
    fn lvb(&self, i: usize) -> *mut c_char {
        // SAFETY: as above.
        unsafe { (&raw mut (*self.pool).lvb[i]).cast() }
    }

    /// A slot no request of this input has had, from `sel` on.
    fn fresh_slot(&mut self, sel: u8) -> Option<usize> {
        let k = (0..NLKSB)
            .map(|i| (usize::from(sel) + i) % NLKSB)
            .find(|&k| !self.used[k])?;
        self.used[k] = true;
        Some(k)
    }

    /// The slot of lock `lkid` on handle `h`, if this input took it.
    fn slot_for(&self, h: Option<usize>, lkid: u32) -> Option<usize> {
        self.slot_of
            .iter()
            .find(|(hh, l, _)| *hh == h && *l == lkid)
            .map(|(_, _, k)| *k)
    }

    /// The scratch status block (with its value block).
    fn scratch(&self) -> *mut DlmLksb {
        // SAFETY: the pool lives for ever.
        unsafe {
            let p = &raw mut (*self.pool).scratch;
            (*p).sb_lvbptr = (&raw mut (*self.pool).scratch_lvb).cast();
            p
        }
    }

    /// Whether `h` is a handle this input opened on a lockspace other
    /// than the base one and the default one.
    fn own_lockspace(&self, h: H) -> bool {
        let H::Open(k) = h else {
            return false;
        };
        self.mine
            .iter()
            .any(|(m, name)| *m == k && name != b"fz" && name != b"default")
    }

    fn handle(&mut self, inp: &mut Input) -> H {
        let b = inp.u8();
        match b % 8 {
            0..=3 => H::Open(self.g.base),
            4 => match self.mine.get(usize::from(b >> 3) % self.mine.len().max(1)) {
                Some((k, _)) => H::Open(*k),
                None => H::Open(self.g.base),
            },
            5 => H::Null,
            6 => {
                // A closed handle, if its address was not taken again.
                let k = self
                    .closed
                    .get(usize::from(b >> 3) % self.closed.len().max(1))
                    .copied()
                    .unwrap_or(0xdead_0000);
                if self.is_open(k) {
                    H::Open(k)
                } else {
                    H::Bad(k)
                }
            }
            _ => {
                let k = (inp.u32() as usize) | 1;
                if self.is_open(k) {
                    H::Open(k)
                } else {
                    H::Bad(k)
                }
            }
        }
    }

    fn is_open(&self, k: usize) -> bool {
        k == self.g.base || self.mine.iter().any(|(m, _)| *m == k)
    }

    /// A lock id: one issued (its lksb's), or one never issued.
    fn lkid(&self, inp: &mut Input) -> u32 {
        let b = inp.u8();
        match b % 4 {
            0 => 0,
            1 => 0x7f00_0000 | u32::from(b),
            _ => self
                .issued
                .get(usize::from(b >> 2) % self.issued.len().max(1))
                .copied()
                .unwrap_or(0x7f00_0001),
        }
    }

    fn never_issued(&self, lkid: u32) -> bool {
        !self.issued.contains(&lkid)
    }

    /// (name pointer, namelen, C-string pointer): the buffer filled with
    /// `len` input bytes (the rest zeros), a NUL at its end.
    fn fill_name(&mut self, inp: &mut Input) -> (usize, bool) {
        let b = inp.u8();
        let len = match b % 8 {
            0 => 0,
            1 => 64,
            2 => 65,
            3 => 99,
            _ => usize::from(b >> 3) % 8 + 1,
        };
        self.name = [0; 100];
        for i in 0..len {
            // Names from a small alphabet mostly, so that inputs meet on
            // the same resources; now and then any byte.
            let c = inp.u8();
            self.name[i] = if c & 0x80 != 0 {
                c & 0x7f
            } else {
                b'a' + (c % 3)
            };
        }
        (len, b & 0x40 != 0)
    }

    fn mode(inp: &mut Input) -> u32 {
        let b = inp.u8();
        if b < 240 {
            u32::from(b % 6)
        } else {
            inp.u32()
        }
    }

    fn flags(inp: &mut Input) -> u32 {
        let f = inp.u32();
        // Mostly the DLM's flag bits; now and then any bits.
        if f & 0x8000_0000 != 0 {
            f
        } else {
            f & 0x7_ffff
        }
    }

    #[allow(clippy::too_many_arguments)]
    unsafe fn lock_call(
        &self,
        ls: *mut c_void,
        mode: u32,
        lksb: *mut DlmLksb,
        flags: u32,
        name: *const c_void,
        namelen: c_uint,
        ast: AstFn,
        astarg: *mut c_void,
        bast: AstFn,
        range: *mut c_void,
        x: Option<(*mut u64, *mut u64)>,
        wait: bool,
    ) -> c_int {
        if self.lite {
            // dlm_ls_lockx has no range argument.
            let range = if x.is_some() { null_mut() } else { range };
            let (xid, timeout) = x.unwrap_or((null_mut(), null_mut()));
            // SAFETY: the pointers are ours, or NULL.
            unsafe {
                abi::ls_lock(
                    Flavor::Lite,
                    ls,
                    mode,
                    lksb,
                    flags,
                    name,
                    namelen,
                    ast,
                    astarg,
                    bast,
                    range,
                    xid,
                    timeout,
                    wait,
                )
            }
        } else {
            // SAFETY: as above.
            unsafe {
                match (x, wait) {
                    (Some((xid, t)), _) => dlm_ls_lockx(
                        ls, mode, lksb, flags, name, namelen, 0, ast, astarg, bast, xid, t,
                    ),
                    (None, true) => dlm_ls_lock_wait(
                        ls, mode, lksb, flags, name, namelen, 0, astarg, bast, range,
                    ),
                    (None, false) => dlm_ls_lock(
                        ls, mode, lksb, flags, name, namelen, 0, ast, astarg, bast, range,
                    ),
                }
            }
        }
    }

    unsafe fn unlock_call(
        &self,
        ls: *mut c_void,
        lkid: u32,
        flags: u32,
        lksb: *mut DlmLksb,
        astarg: *mut c_void,
        wait: bool,
    ) -> c_int {
        if self.lite {
            // SAFETY: ours or NULL.
            unsafe { abi::ls_unlock(Flavor::Lite, ls, lkid, flags, lksb, astarg, wait) }
        } else if wait {
            // SAFETY: as above.
            unsafe { dlm_ls_unlock_wait(ls, lkid, flags, lksb) }
        } else {
            // SAFETY: as above.
            unsafe { dlm_ls_unlock(ls, lkid, flags, lksb, astarg) }
        }
    }

    /// A lock request or conversion.
    fn op_lock(&mut self, inp: &mut Input) {
        let h = self.handle(inp);
        let mode = Self::mode(inp);
        let mut flags = Self::flags(inp);
        let sel = inp.u8();
        let convert_req = flags & CONVERT != 0;
        let key = match h {
            H::Open(k) => Some(k),
            _ => None,
        };
        // (slot, lksb): NULL; a conversion's: its lock's (or the scratch
        // block for a lock id never taken); a request's: a fresh one.
        let (k, lksb) = if sel >= 248 {
            (0, null_mut())
        } else if convert_req {
            let lk = self.lkid(inp);
            match key.and_then(|h| self.slot_for(Some(h), lk)) {
                Some(k) => (k, self.lksb(k)),
                None => {
                    let p = self.scratch();
                    // SAFETY: ours.
                    unsafe { (*p).sb_lkid = lk };
                    (NLKSB, p)
                }
            }
        } else {
            match self.fresh_slot(sel) {
                Some(k) => (k, self.lksb(k)),
                None => return,
            }
        };
        let opts = inp.u8();
        let wait = opts & 1 != 0;
        let with_ast = opts & 2 != 0 || wait;
        let with_bast = opts & 4 != 0;
        let range = if opts & 8 != 0 && inp.u8() < 16 {
            std::ptr::dangling_mut::<c_void>()
        } else {
            null_mut()
        };
        let lockx = opts & 16 != 0 && !wait;
        let mut xid = u64::from(inp.u8());
        let mut tmo = u64::from(inp.u8() % 4);
        let x = lockx.then_some((
            if opts & 32 != 0 {
                null_mut()
            } else {
                &raw mut xid
            },
            if opts & 64 != 0 {
                null_mut()
            } else {
                &raw mut tmo
            },
        ));
        let (len, null_name) = self.fill_name(inp);
        let name: *const c_void = if null_name {
            null()
        } else {
            self.name.as_ptr().cast()
        };
        if !lksb.is_null() && k < NLKSB {
            // SAFETY: ours.
            unsafe {
                (*lksb).sb_lvbptr = if opts & 128 != 0 {
                    null_mut()
                } else {
                    self.lvb(k)
                };
            }
        }
        if wait {
            flags |= NOQUEUE;
        }
        let convert = flags & CONVERT != 0;
        if x.is_some_and(|(_, t)| !t.is_null()) && flags & TIMEOUT != 0 {
            self.timer_cs = self.timer_cs.max(tmo);
        }
        // SAFETY: ours.
        let conv_lkid = if lksb.is_null() {
            0
        } else {
            unsafe { (*lksb).sb_lkid }
        };
        // SAFETY: ours.
        let has_lvb = !lksb.is_null() && unsafe { !(*lksb).sb_lvbptr.is_null() };
        let real_flags = flags & !LKF_WAIT;
        let want = match h {
            _ if matches!(h, H::Null | H::Bad(_)) => Some(libc::EINVAL),
            _ if !range.is_null() && x.is_none() => Some(libc::ENOSYS),
            _ if lksb.is_null() => Some(libc::EINVAL),
            _ if real_flags & VALBLK != 0 && !has_lvb => Some(libc::EINVAL),
            _ if !convert && (len > 64 || (name.is_null() && len > 0)) => Some(libc::EINVAL),
            _ if !wait && !with_ast => Some(libc::EINVAL),
            _ if mode > 5 => Some(libc::EINVAL),
            _ if convert && self.never_issued(conv_lkid) => Some(libc::ENOENT),
            _ => None,
        };
        set_errno(0);
        // SAFETY: every pointer is ours (the pool, the name buffer, the
        // xid and timeout on this stack, which a lockx reads at once) or
        // NULL; the range pointer is never read (ENOSYS).
        let rv = unsafe {
            self.lock_call(
                h.ptr(),
                mode,
                lksb,
                flags,
                name,
                len as c_uint,
                if with_ast { Some(ast) } else { None },
                k as *mut c_void,
                if with_bast { Some(bast) } else { None },
                range,
                x,
                wait,
            )
        };
        let what = format!(
            "{} lock({h:?}, mode {mode}, flags {flags:#x}, lksb {}, namelen {len}{}, ast {with_ast}, range {})",
            if wait { "waiting" } else { "async" },
            if lksb.is_null() { "NULL" } else { "ours" },
            if name.is_null() { " NULL" } else { "" },
            !range.is_null()
        );
        // A lite waiting call fails with the lock's status; threaded ones
        // return 0 and leave it in the lksb.
        if want.is_some() || !(self.lite && wait) {
            expect(&what, rv, want);
        } else {
            trace!("{what} = {rv} errno {}", errno());
        }
        if let (H::Open(key), false) = (h, lksb.is_null()) {
            // SAFETY: ours.
            let (lkid, st) = unsafe { ((*lksb).sb_lkid, (*lksb).sb_status) };
            let sent = rv == 0 || (self.lite && wait && st != EINPROG);
            trace!("  lksb {k}: lkid {lkid:#x} status {st} sent {sent}");
            if sent && lkid != 0 && !convert && k < NLKSB {
                self.issued.push(lkid);
                self.slot_of.push((Some(key), lkid, k));
                self.taken.push(Taken {
                    handle: Some(key),
                    lkid,
                });
            }
        }
    }

    /// One unlock after the input, waiting, on handle `h` (`None`: the
    /// default lockspace); its result.
    fn unlock_now(&self, h: Option<usize>, lkid: u32, flags: u32, wait: bool) -> c_int {
        // SAFETY: the pool lives for ever.
        let sb = unsafe { &raw mut (*self.pool).cleanup };
        // SAFETY: the status block is the pool's.
        let rv = unsafe {
            match h {
                Some(k) => self.unlock_call(k as *mut c_void, lkid, flags, sb, null_mut(), wait),
                None if self.lite => {
                    abi::unlock_default(Flavor::Lite, lkid, flags, sb, null_mut(), wait)
                }
                None if wait => dlm_unlock_wait(lkid, flags, sb),
                None => dlm_unlock(lkid, flags, sb, null_mut()),
            }
        };
        // SAFETY: as above.
        let st = unsafe { (*sb).sb_status };
        trace!(
            "cleanup: unlock {lkid:#x} flags {flags:#x} wait {wait} = {rv} errno {} status {st}",
            errno()
        );
        if rv == 0 && self.lite && wait && st != 0 && st != dlm_capi::EUNLOCK {
            return -1;
        }
        rv
    }

    /// End a lock the input took, by its lock id: FORCEUNLOCK (granted,
    /// waiting or converting alike). A lock requested with FORCEUNLOCK
    /// among its own flags cannot be force-unlocked (the kernel takes that
    /// flag on the lock for a force-unlock in progress: EINVAL); then a
    /// plain unlock, and, while a request or conversion is in progress
    /// (EBUSY), a cancel first, whose completion is dispatched. A lock the
    /// DLM ended already (refused, unlocked, purged) is ENOENT: nothing
    /// to do.
    fn end_lock(&self, h: Option<usize>, lkid: u32) {
        if self.unlock_now(h, lkid, FORCEUNLOCK, true) == 0 || errno() == libc::ENOENT {
            return;
        }
        for _ in 0..50 {
            if self.unlock_now(h, lkid, 0, true) == 0 || errno() != libc::EBUSY {
                return;
            }
            let _ = self.unlock_now(h, lkid, CANCEL, false);
            let fd = match h {
                Some(k) => dlm_ls_get_fd(k as *mut c_void),
                None => dlm_get_fd(),
            };
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd of ours.
            if unsafe { libc::poll(&mut p, 1, 20) } > 0 {
                let _ = dlm_dispatch(fd);
            }
        }
    }

    fn op_unlock(&mut self, inp: &mut Input) {
        let h = self.handle(inp);
        let lkid = self.lkid(inp);
        let mut flags = Self::flags(inp) & (CANCEL | VALBLK | FORCEUNLOCK | 0x8000_0000);
        let sel = inp.u8();
        let key = match h {
            H::Open(k) => Some(k),
            _ => None,
        };
        // The lock's own status block, or the scratch one.
        let (k, lksb) = if sel >= 248 {
            (0, null_mut())
        } else {
            match key.and_then(|h| self.slot_for(Some(h), lkid)) {
                Some(k) => (k, self.lksb(k)),
                None => (NLKSB, self.scratch()),
            }
        };
        let wait = inp.u8() & 1 != 0;
        if wait && flags & CANCEL != 0 {
            // A waiting cancel of a lock that is granted waits for a
            // completion that never comes (as libdlm's does).
            flags &= !CANCEL;
        }
        let want = match h {
            H::Null => Some(libc::ENOTCONN),
            H::Bad(_) => Some(libc::EINVAL),
            _ if lkid == 0 || lksb.is_null() => Some(libc::EINVAL),
            _ if self.never_issued(lkid) => Some(libc::ENOENT),
            _ => None,
        };
        set_errno(0);
        // SAFETY: ours or NULL.
        let rv = unsafe { self.unlock_call(h.ptr(), lkid, flags, lksb, k as *mut c_void, wait) };
        if want.is_some() || !(self.lite && wait) {
            expect(
                &format!("unlock({h:?}, {lkid:#x}, flags {flags:#x}, wait {wait})"),
                rv,
                want,
            );
        }
    }

    fn op_lockspace(&mut self, inp: &mut Input) {
        let b = inp.u8();
        let (len, null_name) = self.fill_name(inp);
        // Mostly names of a few lockspaces, so that they are released
        // again; now and then the fuzzed bytes.
        if b & 0x80 == 0 && len > 0 && len <= 64 {
            self.name = [0; 100];
            self.name[..2].copy_from_slice(b"fz");
            self.name[2] = b'0' + (b % 3);
        }
        let cstr: *const c_char = if null_name {
            null()
        } else {
            // The C string ends at its first NUL; the buffer's last byte
            // is one.
            self.name.as_ptr().cast()
        };
        let slen = if null_name {
            0
        } else {
            self.name.iter().position(|&c| c == 0).unwrap_or(99)
        };
        let bytes = self.name[..slen].to_vec();
        // Never the lockspaces every input shares (a release through a
        // handle opened here would count their creations down).
        if self.mine.len() >= 4 || bytes == b"fz" || bytes == b"default" {
            return;
        }
        let mode = u32::from(inp.u16());
        let flags = Self::flags(inp);
        set_errno(0);
        let kind = (b >> 3) % 4;
        let (p, want, what) = match kind {
            0 | 1 => {
                let want = if cstr.is_null() || slen > 64 {
                    Some(libc::EINVAL)
                } else {
                    None
                };
                // SAFETY: NULL or NUL-terminated in our buffer.
                let p = unsafe {
                    match (kind, self.lite) {
                        (0, true) => abi::new_lockspace(Flavor::Lite, cstr, mode, flags, true),
                        (0, false) => dlm_new_lockspace(cstr, mode, flags),
                        (_, true) => abi::new_lockspace(Flavor::Lite, cstr, mode, 0, false),
                        (_, false) => dlm_create_lockspace(cstr, mode),
                    }
                };
                (p, want, "create")
            }
            2 => {
                let want = if cstr.is_null() || slen > 64 {
                    Some(libc::ENOENT)
                } else {
                    None
                };
                // SAFETY: as above.
                let p = unsafe {
                    if self.lite {
                        abi::open_lockspace(Flavor::Lite, cstr)
                    } else {
                        dlm_open_lockspace(cstr)
                    }
                };
                (p, want, "open")
            }
            _ => {
                let ops = DlmLockspaceOps {
                    recover_prep: Some(on_prep),
                    recover_slot: None,
                    recover_done: if flags & 1 != 0 { None } else { Some(on_done) },
                };
                let mut result: c_int = 0;
                let o = inp.u8();
                let lvblen = [0, 32, 16, -1][usize::from(o % 4)];
                let bad = cstr.is_null()
                    || o & 4 != 0
                    || o & 8 != 0
                    || (lvblen != 0 && lvblen != 32)
                    || slen > 64;
                let want = bad.then_some(libc::EINVAL);
                let before = RECOVERY.load(Ordering::SeqCst);
                // SAFETY: ours or NULL.
                let p = unsafe {
                    new_lockspace_ops_c(
                        cstr,
                        null(),
                        flags & !CANCEL,
                        lvblen,
                        mode,
                        if o & 4 != 0 { null() } else { &ops },
                        null_mut(),
                        if o & 8 != 0 { null_mut() } else { &mut result },
                    )
                };
                if !p.is_null() {
                    assert_eq!(result, 0, "ops_result on the fallback");
                    if ops.recover_done.is_some() {
                        assert_eq!(
                            RECOVERY.load(Ordering::SeqCst),
                            before + 1,
                            "recover_done at join"
                        );
                    }
                } else {
                    assert_eq!(
                        RECOVERY.load(Ordering::SeqCst),
                        before,
                        "no callback on failure"
                    );
                }
                (p, want, "new_lockspace_ops")
            }
        };
        expect_ptr(
            &format!(
                "{what}({:?}, {slen} bytes)",
                String::from_utf8_lossy(&bytes)
            ),
            p,
            want,
        );
        if !p.is_null() {
            self.mine.push((p as usize, bytes));
            self.closed.retain(|&c| c != p as usize);
            if !self.lite && inp.u8() & 3 == 0 {
                let rv = dlm_ls_pthread_init(p);
                expect("dlm_ls_pthread_init(new)", rv, None);
            }
        }
    }

    fn op_close(&mut self, inp: &mut Input) {
        let b = inp.u8();
        let h = if self.mine.is_empty() || b & 1 == 0 {
            self.handle(inp)
        } else {
            H::Open(self.mine[usize::from(b >> 1) % self.mine.len()].0)
        };
        if let H::Open(k) = h {
            if k == self.g.base {
                return;
            }
        }
        // A release waits until every other open of the lockspace is
        // closed, as the kernel's does (remove_lockspace() waits for the
        // references each open device holds): with another handle of this
        // process open on it, for ever. So only the last one releases.
        let shared = match h {
            H::Open(k) => self
                .mine
                .iter()
                .any(|(m, n)| *m != k && self.mine.iter().any(|(m2, n2)| *m2 == k && n2 == n)),
            _ => false,
        };
        let release = b & 2 != 0 && !shared;
        let force = c_int::from(b & 4 != 0);
        set_errno(0);
        let rv = if release {
            // SAFETY: the name is unused; the handle is looked up.
            unsafe {
                if self.lite {
                    abi::release_lockspace(null(), h.ptr(), force)
                } else {
                    dlm_release_lockspace(null(), h.ptr(), force)
                }
            }
        } else if self.lite {
            abi::close_lockspace(h.ptr())
        } else {
            dlm_close_lockspace(h.ptr())
        };
        let want = match h {
            H::Open(_) => None,
            _ => Some(libc::EINVAL),
        };
        expect(&format!("close/release({h:?})"), rv, want);
        if let H::Open(k) = h {
            if let Some(i) = self.mine.iter().position(|(m, _)| *m == k) {
                let (_, name) = self.mine.swap_remove(i);
                self.closed.push(k);
                if release {
                    self.released.push(name);
                } else {
                    // Closed, not released: release it at the end (the
                    // lockspace stays until its creations are released).
                    self.late_release.push(name);
                }
            }
        }
    }

    fn op_misc(&mut self, inp: &mut Input) {
        let b = inp.u8();
        set_errno(0);
        match b % 12 {
            0 => {
                let h = self.handle(inp);
                let lkid = self.lkid(inp);
                let rv = if self.lite {
                    abi::ls_deadlock_cancel(h.ptr(), lkid, 0)
                } else {
                    dlm_ls_deadlock_cancel(h.ptr(), lkid, 0)
                };
                let want = match h {
                    H::Null => Some(libc::ENOTCONN),
                    H::Bad(_) => Some(libc::EINVAL),
                    _ if lkid == 0 => Some(libc::EINVAL),
                    _ if self.never_issued(lkid) => Some(libc::ENOENT),
                    _ => None,
                };
                expect(&format!("deadlock_cancel({h:?}, {lkid:#x})"), rv, want);
            }
            1 => {
                let h = self.handle(inp);
                let nodeid = match inp.u8() % 4 {
                    0 => 0,
                    1 => 1,
                    _ => inp.u32() as c_int,
                };
                let pid = match inp.u8() % 4 {
                    0 => 0,
                    // Our own pid purges the handle's own locks. One
                    // requested with FORCEUNLOCK among its flags survives
                    // that purge, dead and granted, until its lockspace is
                    // released (as in the kernel): only on a lockspace of
                    // the input's own, which the clean-up releases.
                    1 if self.own_lockspace(h) => std::process::id() as c_int,
                    1 => 1,
                    _ => inp.u32() as c_int,
                };
                let rv = if self.lite {
                    abi::ls_purge(h.ptr(), nodeid, pid)
                } else {
                    dlm_ls_purge(h.ptr(), nodeid, pid)
                };
                let want = match h {
                    H::Null => Some(libc::ENOTCONN),
                    H::Bad(_) => Some(libc::EINVAL),
                    _ => None,
                };
                expect(&format!("purge({h:?}, {nodeid}, {pid})"), rv, want);
            }
            2 => {
                let h = self.handle(inp);
                let rv = dlm_ls_get_fd(h.ptr());
                let want = match h {
                    H::Open(_) => None,
                    _ => Some(libc::EINVAL),
                };
                if want.is_some() {
                    expect(&format!("get_fd({h:?})"), rv, want);
                } else {
                    assert!(rv >= 0, "get_fd of an open handle: {rv}");
                }
            }
            3 => {
                // dlm_dispatch on any fd.
                let fd = match inp.u8() % 4 {
                    0 => self.g.base_fd,
                    1 => -1 - c_int::from(inp.u8()),
                    _ => c_int::from(inp.u16()),
                };
                let ours = fd == self.g.base_fd
                    || self.mine.iter().any(|(k, _)| dlm_ls_get_fd(*k as *mut c_void) == fd)
                    // The default lockspace's (opened at start, and by
                    // the calls that use it).
                    || fd == dlm_get_fd();
                let rv = if ours && fd != self.g.base_fd {
                    // Only dispatch fds with something to read: a
                    // blocking read of an idle one would not return.
                    0
                } else {
                    dlm_dispatch(fd)
                };
                expect(
                    &format!("dispatch({fd})"),
                    rv,
                    if ours { None } else { Some(libc::EBADF) },
                );
            }
            4 => {
                let mut v = [0u32; 3];
                let m = inp.u8();
                let p = |i: usize, v: &mut [u32; 3]| {
                    if m & (1 << i) != 0 {
                        null_mut()
                    } else {
                        &raw mut v[i]
                    }
                };
                let (a, bb, c) = (p(0, &mut v), p(1, &mut v), p(2, &mut v));
                // SAFETY: ours or NULL.
                let rv = unsafe { dlm_kernel_version(a, bb, c) };
                expect(
                    "kernel_version",
                    rv,
                    if m & 7 != 0 { Some(libc::EINVAL) } else { None },
                );
                // SAFETY: as above.
                unsafe { dlm_library_version(a, bb, c) };
            }
            5 if !self.lite => {
                // libdlm's simple API: a waiting lock on the default
                // lockspace (and its AST thread).
                let (len, null_name) = self.fill_name(inp);
                let _ = len;
                let mode = c_int::from(inp.u8() % 8);
                let flags = (Self::flags(inp) | NOQUEUE) as c_int;
                let mut lockid: c_int = 0;
                let null_id = inp.u8() & 1 != 0;
                let res: *const c_char = if null_name {
                    null()
                } else {
                    self.name.as_ptr().cast()
                };
                // SAFETY: ours or NULL.
                let rv = unsafe {
                    lock_resource(
                        res,
                        mode,
                        flags,
                        if null_id { null_mut() } else { &mut lockid },
                    )
                };
                self.default_used = true;
                trace!("lock_resource(mode {mode}, flags {flags:#x}) = {rv} errno {} lockid {lockid:#x}", errno());
                if null_id || res.is_null() {
                    expect("lock_resource(NULL)", rv, Some(libc::EINVAL));
                } else if rv == 0 && lockid != 0 {
                    self.issued.push(lockid as u32);
                    self.taken.push(Taken {
                        handle: None,
                        lkid: lockid as u32,
                    });
                }
            }
            6 if !self.lite => {
                let lkid = self.lkid(inp);
                let rv = unlock_resource(lkid as c_int);
                // Not `expect`: as libdlm's, unlock_resource() fails with
                // errno = the status its own status block got, and when
                // the lock's request has a completion not yet delivered
                // (an async dlm_lock), that completion comes into the
                // unlock's status block first, as the kernel delivers it
                // (it writes a lock's next callback to the lksb of its
                // latest operation): -1 with errno 0.
                trace!("unlock_resource({lkid:#x}) = {rv} errno {}", errno());
            }
            7 => {
                // dlm_lock / dlm_unlock on the default lockspace.
                let Some(k) = self.fresh_slot(inp.u8()) else {
                    return;
                };
                let lksb = self.lksb(k);
                let (len, _) = self.fill_name(inp);
                let len = len.min(64);
                let mode = Self::mode(inp) % 6;
                let flags = Self::flags(inp) & !(CONVERT | VALBLK | TIMEOUT | PERSISTENT);
                let wait = inp.u8() & 1 != 0;
                set_errno(0);
                // SAFETY: ours.
                let rv = unsafe {
                    if self.lite {
                        abi::lock_default(
                            Flavor::Lite,
                            mode,
                            lksb,
                            flags | if wait { NOQUEUE } else { 0 },
                            self.name.as_ptr().cast(),
                            len as c_uint,
                            Some(ast),
                            k as *mut c_void,
                            None,
                            null_mut(),
                            wait,
                        )
                    } else if wait {
                        dlm_lock_wait(
                            mode,
                            lksb,
                            flags | NOQUEUE,
                            self.name.as_ptr().cast(),
                            len as c_uint,
                            0,
                            k as *mut c_void,
                            None,
                            null_mut(),
                        )
                    } else {
                        dlm_lock(
                            mode,
                            lksb,
                            flags,
                            self.name.as_ptr().cast(),
                            len as c_uint,
                            0,
                            Some(ast),
                            k as *mut c_void,
                            None,
                            null_mut(),
                        )
                    }
                };
                self.default_used = true;
                // SAFETY: ours.
                let (lkid, st) = unsafe { ((*lksb).sb_lkid, (*lksb).sb_status) };
                trace!("dlm_lock(default, mode {mode}, flags {flags:#x}, wait {wait}) = {rv} errno {} lkid {lkid:#x} status {st}", errno());
                let sent = rv == 0 || (self.lite && wait && st != EINPROG);
                if sent && lkid != 0 {
                    self.issued.push(lkid);
                    self.slot_of.push((None, lkid, k));
                    self.taken.push(Taken { handle: None, lkid });
                }
            }
            8 if !self.lite => {
                let h = self.handle(inp);
                match h {
                    // The base handle runs no AST thread: each step
                    // dispatches its fd.
                    H::Open(k) if k == self.g.base => {}
                    H::Open(_) => {
                        let rv = dlm_ls_pthread_init(h.ptr());
                        assert!(
                            rv == 0 || (rv == -1 && errno() == libc::EEXIST),
                            "ls_pthread_init: {rv}"
                        );
                    }
                    _ => {
                        let rv = dlm_ls_pthread_init(h.ptr());
                        expect(&format!("ls_pthread_init({h:?})"), rv, Some(libc::EINVAL));
                    }
                }
            }
            _ => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let g = global();
    let mut inp = Input { d: data, i: 0 };
    let mut run = Run {
        g,
        pool: g.pool as *mut Pool,
        lite: inp.u8() & 1 == 0,
        mine: Vec::new(),
        closed: Vec::new(),
        taken: Vec::new(),
        issued: Vec::new(),
        slot_of: Vec::new(),
        used: [false; NLKSB],
        default_used: false,
        name: [0; 100],
        late_release: Vec::new(),
        released: Vec::new(),
        timer_cs: 0,
    };
    for i in 0..NLKSB {
        // SAFETY: ours; no lock of an earlier input refers to them (each
        // was unlocked, and checked to be, before that input ended).
        unsafe {
            let l = run.lksb(i);
            (*l).sb_status = 0;
            (*l).sb_lkid = 0;
            (*l).sb_flags = 0;
            (*l).sb_lvbptr = run.lvb(i);
        }
    }
    let mut steps = 0;
    while !inp.done() && steps < 64 {
        steps += 1;
        match inp.u8() % 8 {
            0..=2 => run.op_lock(&mut inp),
            3 | 4 => run.op_unlock(&mut inp),
            5 => run.op_lockspace(&mut inp),
            6 => run.op_close(&mut inp),
            _ => run.op_misc(&mut inp),
        }
        // Deliver what came (lite: as a program's poll loop would).
        let _ = dlm_dispatch(g.base_fd);
    }
    cleanup(&mut run);
});

/// Unlock every lock the input took (by the lock id its status block
/// reported), close its handles, and check with another connection that
/// nothing is left.
fn cleanup(run: &mut Run) {
    let g = run.g;
    for t in std::mem::take(&mut run.taken) {
        match t.handle {
            Some(k) if !run.is_open(k) => {}
            _ => run.end_lock(t.handle, t.lkid),
        }
    }
    let _ = dlm_dispatch(g.base_fd);
    // PERSISTENT locks of closed handles are orphans: purge every orphan.
    let _ = abi::ls_purge(g.base as *mut c_void, 0, 0);
    // Close every handle, then release each lockspace by name (a release
    // with another handle open would wait for it: see op_close).
    for (k, name) in std::mem::take(&mut run.mine) {
        let rv = abi::close_lockspace(k as *mut c_void);
        assert_eq!(rv, 0, "close of the input's handle");
        run.late_release.push(name);
    }
    if run.default_used && !run.lite {
        let _ = dlm_pthread_cleanup();
    }
    // A lock requested with LKF_FORCEUNLOCK among its flags outlives the
    // handle that took it: closing the handle force-unlocks its locks, and
    // the DLM refuses that one, as the kernel's clear_proc_locks() is
    // refused (EBUSY). Its lockspace's release without force then fails
    // (EBUSY, which dlm_release_lockspace() does not report, as libdlm's
    // does not). Such locks, and only such, may be left in a lockspace
    // the input released: release it again, with force. (Whether the
    // query calls one an orphan depends on timing: the engine, as the
    // kernel, leaves it pointing at its closed owner's slot, which the
    // next open may reuse.)
    for name in std::mem::take(&mut run.released) {
        let Ok(n) = dlm::LockspaceName::new(&name[..]) else {
            continue;
        };
        let Ok(locks) = g.dlm.locks(&n) else {
            continue;
        };
        let stray: Vec<_> = locks
            .iter()
            .filter(|l| l.flags & FORCEUNLOCK == 0)
            .collect();
        assert!(
            stray.is_empty(),
            "locks left in the released lockspace {n} after the input: {stray:?}"
        );
        run.late_release.push(name);
    }
    // Closed (not released) lockspaces: join each again, and release.
    for name in std::mem::take(&mut run.late_release) {
        if let Ok(n) = dlm::LockspaceName::new(&name[..]) {
            // Each release counts one creation down (a few at most).
            for _ in 0..16 {
                let Ok(ls) = g.dlm.open_lockspace(&n) else {
                    break;
                };
                if g.dlm.release_lockspace(ls, true).is_err() {
                    break;
                }
            }
        }
    }
    let mut names: Vec<String> = g
        .dlm
        .lockspaces()
        .expect("lockspaces")
        .into_iter()
        .map(|l| l.name)
        .collect();
    names.sort();
    for n in &names {
        let ln = dlm::LockspaceName::new(n.as_bytes()).expect("a lockspace's name");
        let locks = g.dlm.locks(&ln).expect("locks");
        assert!(
            locks.is_empty(),
            "locks left in lockspace {n} after the input: {locks:?}"
        );
    }
    assert_eq!(names, g.lockspaces, "lockspaces left after the input");
    // An LKF_TIMEOUT lock has a timer thread (see `abi::arm_timer`) that
    // sleeps its timeout out and ends: wait for it, so that the leak
    // check libFuzzer makes after an input does not take the thread's
    // allocations, still in use, for leaks.
    if run.timer_cs > 0 {
        std::thread::sleep(std::time::Duration::from_millis(run.timer_cs * 10 + 20));
    }
}
