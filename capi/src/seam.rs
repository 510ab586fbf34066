//! Everything that depends on how the client reads its lockspace: the one
//! pollable fd a handle gives C (`dlm_ls_get_fd`), dispatching it
//! (`dlm_dispatch`), and the AST thread. Kept in this one module so that
//! it can be re-pointed when the client offers one pollable fd of its own.
//!
//! Today a [`Lockspace`] may need two fds polled (the device, and a pipe
//! that says records were read along with a reply), and implements
//! `mio::event::Source` for both. So a handle's fd is an epoll instance
//! (a `mio::Poll`) the lockspace is registered with: readable whenever the
//! lockspace has records. Dispatching drains its events, then
//! [`Lockspace::dispatch`]es.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

use dlm::Lockspace;

use crate::ffi;

/// A handle's pollable fd and its AST thread.
#[derive(Debug)]
pub(crate) struct Seam {
    poll: Mutex<mio::Poll>,
    fd: RawFd,
    thread: Mutex<Option<AstThread>>,
    has_thread: AtomicBool,
}

#[derive(Debug)]
struct AstThread {
    stop: Arc<AtomicBool>,
    /// Written to stop the thread; its read end is polled with the fd.
    stop_w: OwnedFd,
    id: ThreadId,
    join: Option<JoinHandle<()>>,
}

/// Whatever owns a lockspace that the AST thread can reach.
pub(crate) trait Dispatchable: Send + Sync + 'static {
    /// The lockspace, while it is open.
    fn lockspace(&self) -> Option<Lockspace>;
    /// The seam.
    fn seam(&self) -> &Seam;
}

fn errno_of(e: std::io::Error) -> c_int {
    e.raw_os_error().unwrap_or(libc::EIO)
}

impl Seam {
    pub(crate) fn new(ls: &Lockspace) -> Result<Seam, c_int> {
        let poll = mio::Poll::new().map_err(errno_of)?;
        let mut src = ls.clone();
        poll.registry()
            .register(&mut src, mio::Token(0), mio::Interest::READABLE)
            .map_err(errno_of)?;
        let fd = poll.as_raw_fd();
        Ok(Seam {
            poll: Mutex::new(poll),
            fd,
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
        {
            let mut poll = self.poll.lock().unwrap_or_else(|p| p.into_inner());
            let mut events = mio::Events::with_capacity(4);
            // Only to take the events off the epoll instance: dispatch
            // below reads whatever is there.
            let _ = poll.poll(&mut events, Some(Duration::ZERO));
        }
        ls.dispatch().map_err(|e| e.errno().raw())
    }

    /// Wait up to `ms` for the fd to become readable.
    pub(crate) fn wait(&self, ms: c_int) -> Result<(), c_int> {
        match ffi::poll_in(&[self.fd], ms) {
            Ok(_) | Err(libc::EINTR) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether an AST thread runs.
    pub(crate) fn has_thread(&self) -> bool {
        self.has_thread.load(Ordering::SeqCst)
    }

    /// Whether the caller is the AST thread.
    pub(crate) fn on_thread(&self) -> bool {
        if !self.has_thread() {
            return false;
        }
        let t = self.thread.lock().unwrap_or_else(|p| p.into_inner());
        t.as_ref()
            .is_some_and(|t| t.id == std::thread::current().id())
    }

    /// Start the AST thread of `owner`: from now on it dispatches the
    /// lockspace. `EEXIST` if it runs already.
    pub(crate) fn start_thread<D: Dispatchable>(&self, owner: Weak<D>) -> Result<(), c_int> {
        let mut t = self.thread.lock().unwrap_or_else(|p| p.into_inner());
        if t.is_some() {
            return Err(libc::EEXIST);
        }
        let (stop_r, stop_w) = pipe()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let fd = self.fd;
        let join = std::thread::Builder::new()
            .name("dlm-ast".into())
            .spawn(move || ast_thread(owner, fd, stop_r, stop2))
            .map_err(errno_of)?;
        *t = Some(AstThread {
            stop,
            stop_w,
            id: join.thread().id(),
            join: Some(join),
        });
        self.has_thread.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Stop the AST thread, if one runs, and wait for it (unless this is
    /// it: then it stops once the AST it runs returns).
    pub(crate) fn stop_thread(&self) {
        let t = self
            .thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(mut t) = t else {
            return;
        };
        self.has_thread.store(false, Ordering::SeqCst);
        t.stop.store(true, Ordering::SeqCst);
        ffi::write_byte(&t.stop_w);
        if t.id == std::thread::current().id() {
            return;
        }
        if let Some(j) = t.join.take() {
            let _ = j.join();
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), c_int> {
    ffi::pipe()
}

/// The AST thread: poll the handle's fd and its stop pipe; dispatch.
fn ast_thread<D: Dispatchable>(owner: Weak<D>, fd: RawFd, stop_r: OwnedFd, stop: Arc<AtomicBool>) {
    let fds = [fd, stop_r.as_raw_fd()];
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match ffi::poll_in(&fds, 1000) {
            Ok(_) | Err(libc::EINTR) => {}
            Err(e) => {
                log::error!("libdlm AST thread: poll failed (errno {e}); it stops");
                return;
            }
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Some(h) = owner.upgrade() else {
            return;
        };
        let Some(ls) = h.lockspace() else {
            return;
        };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.seam().dispatch(&ls)));
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                log::error!(
                    "libdlm AST thread: lockspace {}: dispatch failed (errno {e}); it stops",
                    ls.name()
                );
                return;
            }
            Err(_) => {
                log::error!("libdlm AST thread: a panic in dispatch; it stops");
                return;
            }
        }
    }
}
