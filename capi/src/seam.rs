//! Everything that depends on how the client reads its lockspace: the one
//! pollable fd a handle gives C (`dlm_ls_get_fd`), dispatching it
//! (`dlm_dispatch`), and the AST thread. Kept in this one module.
//!
//! A handle's fd is the [`Lockspace`]'s own (its `AsRawFd`): on the
//! kernel the lockspace device, on the fallback an epoll fd over the
//! daemon connection and an eventfd readable while records read along
//! with a reply wait in the client's stash. Both are level-triggered: the
//! fd stays readable until [`Lockspace::dispatch`] has taken every record
//! (the kernel's queue, the socket's bytes, the stash), as libdlm's
//! `poll()` + `dlm_dispatch()` loop needs. No epoll of our own sits in
//! front of it.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use dlm::Lockspace;

use crate::ffi;

/// A handle's pollable fd and its AST thread.
#[derive(Debug)]
pub(crate) struct Seam {
    /// The lockspace's own fd, valid while the handle holds its lockspace.
    fd: RawFd,
    thread: Mutex<Option<AstThread>>,
    has_thread: AtomicBool,
}

#[derive(Debug)]
struct AstThread {
    stop: Arc<AtomicBool>,
    /// Written to stop the thread; its read end is polled with the fd,
    /// and kept open here too, so that the write never meets a closed
    /// pipe (SIGPIPE) when the thread has ended on its own.
    stop_w: OwnedFd,
    _stop_r: Arc<OwnedFd>,
    thread: ffi::RawThread,
}

/// Whatever owns a lockspace that the AST thread can reach.
pub(crate) trait Dispatchable: Send + Sync + 'static {
    /// The AST thread's wait for work on `fd` (or `stop`).
    fn ast_wait(&self, fd: RawFd, stop: RawFd) -> Result<(), c_int>;
    /// The AST thread's work, once its wait is over (never blocks);
    /// `None` once the lockspace is closed.
    fn ast_dispatch(&self) -> Option<Result<usize, c_int>>;
    /// The AST thread `tid` has started.
    fn ast_started(&self, tid: u64);
}

/// Wait until `fd` or `stop` is readable (at most a second).
pub(crate) fn poll_two(fd: RawFd, stop: RawFd) -> Result<(), c_int> {
    ffi::poll_in(&[fd, stop], 1000).map(|_| ())
}

impl Seam {
    pub(crate) fn new(ls: &Lockspace) -> Result<Seam, c_int> {
        Ok(Seam {
            fd: ls.as_raw_fd(),
            thread: Mutex::new(None),
            has_thread: AtomicBool::new(false),
        })
    }

    /// The fd C polls.
    pub(crate) fn fd(&self) -> RawFd {
        self.fd
    }

    /// Run the callbacks of every record there is now; never blocks.
    pub(crate) fn dispatch(&self, ls: &Lockspace) -> Result<usize, c_int> {
        ls.dispatch().map_err(|e| e.errno().raw())
    }

    /// Wait up to `ms` for the fd to become readable.
    pub(crate) fn wait(&self, ms: c_int) -> Result<(), c_int> {
        ffi::poll_in(&[self.fd], ms).map(|_| ())
    }

    /// Whether an AST thread runs.
    #[inline(always)]
    pub(crate) fn has_thread(&self) -> bool {
        self.has_thread.load(Ordering::SeqCst)
    }

    /// Whether the caller is the AST thread.
    pub(crate) fn on_thread(&self) -> bool {
        if !self.has_thread() {
            return false;
        }
        let t = self.thread.lock().unwrap_or_else(|p| p.into_inner());
        t.as_ref().is_some_and(|t| t.thread.is_current())
    }

    /// Start the AST thread of `owner`: from now on it dispatches the
    /// lockspace. `EEXIST` if it runs already.
    pub(crate) fn start_thread<D: Dispatchable>(&self, owner: Weak<D>) -> Result<(), c_int> {
        let mut t = self.thread.lock().unwrap_or_else(|p| p.into_inner());
        if t.is_some() {
            return Err(libc::EEXIST);
        }
        install_fork_hooks();
        let (stop_r, stop_w) = pipe()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let fd = self.fd;
        let stop_r = Arc::new(stop_r);
        let stop_r2 = stop_r.clone();
        let owner2 = owner.clone();
        let thread = ffi::spawn(move || ast_thread(owner2, fd, stop_r2, stop2))?;
        if let Some(o) = owner.upgrade() {
            o.ast_started(thread.id());
        }
        *t = Some(AstThread {
            stop,
            stop_w,
            _stop_r: stop_r,
            thread,
        });
        self.has_thread.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Stop the AST thread, if one runs, and wait for it (unless this is
    /// it: then it stops once the AST it runs returns).
    pub(crate) fn stop_thread(&self) {
        let t = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(t) = t else {
            return;
        };
        self.has_thread.store(false, Ordering::SeqCst);
        t.stop.store(true, Ordering::SeqCst);
        ffi::write_byte(&t.stop_w);
        if t.thread.is_current() {
            t.thread.detach();
            return;
        }
        t.thread.join();
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), c_int> {
    ffi::pipe()
}

/// The AST thread: poll the handle's fd and its stop pipe; dispatch.
fn ast_thread<D: Dispatchable>(
    owner: Weak<D>,
    fd: RawFd,
    stop_r: Arc<OwnedFd>,
    stop: Arc<AtomicBool>,
) {
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Some(h) = owner.upgrade() else {
            return;
        };
        if let Err(e) = h.ast_wait(fd, stop_r.as_raw_fd()) {
            log::error!("libdlm AST thread: poll failed (errno {e}); it stops");
            return;
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
        gate_enter();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.ast_dispatch()));
        gate_leave();
        match r {
            Ok(Some(Ok(_))) => {}
            Ok(None) => return,
            Ok(Some(Err(e))) => {
                log::error!("libdlm AST thread: dispatch failed (errno {e}); it stops");
                return;
            }
            Err(_) => {
                log::error!("libdlm AST thread: a panic in dispatch; it stops");
                return;
            }
        }
    }
}

/// AST threads in the middle of a dispatch, and whether a fork() waits
/// for them: a child gets only the forking thread, so memory an AST
/// thread holds during a dispatch (the records read, the callback being
/// run) would be lost in the child. A fork waits (at most a second) until
/// no AST thread dispatches, and none starts until it is done.
struct Gate {
    forking: bool,
    active: usize,
}

static GATE: Mutex<Gate> = Mutex::new(Gate {
    forking: false,
    active: 0,
});
static GATE_CV: std::sync::Condvar = std::sync::Condvar::new();

fn gate() -> std::sync::MutexGuard<'static, Gate> {
    GATE.lock().unwrap_or_else(|p| p.into_inner())
}

fn gate_enter() {
    let mut g = gate();
    while g.forking {
        g = GATE_CV
            .wait_timeout(g, Duration::from_millis(100))
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    g.active += 1;
}

fn gate_leave() {
    let mut g = gate();
    g.active = g.active.saturating_sub(1);
    GATE_CV.notify_all();
}

extern "C" fn fork_prepare() {
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    let mut g = gate();
    g.forking = true;
    while g.active > 0 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            // An AST that forks, or waits for the forking thread.
            break;
        }
        g = GATE_CV
            .wait_timeout(g, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

/// Have the fork hooks run around every fork() (once per process).
pub(crate) fn install_fork_hooks() {
    ffi::at_fork(fork_prepare, fork_done, fork_child);
}

/// In the child only the forking thread is left: what the others were
/// doing with a lockspace (reading its device, waiting) is forgotten.
extern "C" fn fork_child() {
    fork_done();
    crate::registry::after_fork_child();
}

extern "C" fn fork_done() {
    let mut g = gate();
    g.forking = false;
    GATE_CV.notify_all();
}
