//! The process's libdlm state: the connection to the DLM, the open
//! handles, and the default lockspace.
//!
//! A `dlm_lshandle_t` is a key here: the address of its [`Handle`],
//! which is believed only once it equals an open handle's key (a handle
//! made up, closed or freed is `EINVAL`). The waiting calls find theirs
//! through [`fast`].

use std::os::fd::RawFd;
use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use dlm::{Backend, Dlm, Lockspace};

use crate::direct::Direct;
use crate::seam::{Dispatchable, Seam};
use crate::sink::Shared;

mod fast;
pub(crate) use fast::{call, fast_call};
use fast::{fast_add, SLOTS};

/// An open lockspace handle.
#[derive(Debug)]
pub(crate) struct Handle {
    /// The process that opened it (a child after fork() must not close
    /// its parent's connection).
    pid: u32,
    ls: Mutex<Option<Lockspace>>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) seam: Seam,
    /// The kernel path (kernel lockspaces only; see [`crate::direct`]).
    direct: Option<Direct>,
}

impl Handle {
    /// The lockspace, while it is open.
    pub(crate) fn lockspace(&self) -> Option<Lockspace> {
        self.ls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Read and run everything due on `ls` now (never blocks).
    pub(crate) fn dispatch(&self, ls: &Lockspace) -> Result<usize, c_int> {
        if let Some(d) = &self.direct {
            return d.dispatch(self.seam.has_thread());
        }
        let r = self.seam.dispatch(ls);
        self.shared.run_due();
        r
    }
}

impl Dispatchable for Handle {
    fn ast_wait(&self, fd: RawFd, stop: RawFd) -> Result<(), c_int> {
        match &self.direct {
            Some(d) => d.ast_wait(stop),
            None => crate::seam::poll_two(fd, stop),
        }
    }
    fn ast_dispatch(&self) -> Option<Result<usize, c_int>> {
        match &self.direct {
            Some(d) => Some(d.ast_run()),
            None => Some(self.dispatch(&self.lockspace()?)),
        }
    }
    fn ast_started(&self, tid: u64) {
        if let Some(d) = &self.direct {
            d.set_ast_thread(tid);
        }
    }
}

impl Handle {
    /// The kernel path, on a kernel lockspace.
    #[inline]
    pub(crate) fn direct(&self) -> Option<&Direct> {
        self.direct.as_ref()
    }

    /// Close: stop the AST thread and give the lockspace back (the last
    /// clone, for a release); `None` if closed already.
    fn close(&self) -> Option<Lockspace> {
        self.seam.stop_thread();
        if let Some(d) = &self.direct {
            d.set_ast_thread(0);
        }
        let ls = self.ls.lock().unwrap_or_else(|p| p.into_inner()).take()?;
        if self.pid != std::process::id() {
            // The parent's handle, inherited by fork(): as with a kernel
            // device's inherited fd, closing it here must leave the
            // parent's locks alone. Kept, never used.
            INHERITED_LS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(ls);
            return None;
        }
        Some(ls)
    }
}

struct Conn {
    pid: u32,
    dlm: Arc<Dlm>,
}

static CONN: Mutex<Option<Conn>> = Mutex::new(None);
/// Connections of the parent process (see [`dlm`]).
static INHERITED: Mutex<Vec<Arc<Dlm>>> = Mutex::new(Vec::new());
/// Lockspaces of the parent process closed in a child (see [`Handle::close`]).
static INHERITED_LS: Mutex<Vec<Lockspace>> = Mutex::new(Vec::new());
static OPENED: AtomicBool = AtomicBool::new(false);
/// An open handle in the table: its key, the handle, and its fast slot
/// if it has one.
type Entry = (usize, Arc<Handle>, Option<usize>);
static HANDLES: RwLock<Vec<Entry>> = RwLock::new(Vec::new());
static DEFAULT: Mutex<Option<usize>> = Mutex::new(None);

/// The connection to the DLM (the kernel's control device or `dlmd`),
/// opened once per process (again in a child after `fork()`).
pub(crate) fn dlm() -> Result<Arc<Dlm>, c_int> {
    let mut c = CONN.lock().unwrap_or_else(|p| p.into_inner());
    let pid = std::process::id();
    if let Some(conn) = c.as_ref().filter(|c| c.pid == pid) {
        return Ok(conn.dlm.clone());
    }
    let dlm = Arc::new(Dlm::open().map_err(|e| e.errno().raw())?);
    OPENED.store(true, Ordering::SeqCst);
    let old = c.replace(Conn {
        pid,
        dlm: dlm.clone(),
    });
    if let Some(old) = old {
        // The parent's connection, inherited by fork(): closing it here
        // could shut it down under the parent. Kept, never used.
        INHERITED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(old.dlm);
    }
    Ok(dlm)
}

/// Whether this process has opened the DLM yet (libdlm knows the kernel's
/// version only then, and refuses version-6 calls before).
pub(crate) fn opened() -> bool {
    OPENED.load(Ordering::SeqCst)
}

/// A new handle for `ls`; its key.
pub(crate) fn add(ls: Lockspace) -> Result<usize, c_int> {
    let seam = Seam::new(&ls)?;
    let direct = match ls.backend() {
        Backend::Kernel => {
            crate::seam::install_fork_hooks();
            Some(Direct::new(seam.fd())?)
        }
        Backend::Fallback => None,
    };
    let h = Arc::new(Handle {
        pid: std::process::id(),
        ls: Mutex::new(Some(ls)),
        shared: Arc::new(Shared::default()),
        seam,
        direct,
    });
    let key = Arc::as_ptr(&h) as usize;
    let mut t = HANDLES.write().unwrap_or_else(|p| p.into_inner());
    let fast = fast_add(&h);
    t.push((key, h, fast));
    Ok(key)
}

/// The handle `key` names, if it is open.
#[inline]
pub(crate) fn get(key: *mut c_void) -> Option<Arc<Handle>> {
    let key = key as usize;
    if key == 0 {
        return None;
    }
    HANDLES
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(k, ..)| *k == key)
        .map(|(_, h, _)| h.clone())
}

/// In a child after fork(): the kernel handles' readers and waiters were
/// threads of the parent. (If another thread held the table's lock at
/// the fork, it stays as it was.)
pub(crate) fn after_fork_child() {
    let Ok(t) = HANDLES.try_read() else {
        return;
    };
    for (_, h, _) in t.iter() {
        if let Some(d) = h.direct() {
            d.after_fork_child();
        }
    }
}

/// The handle whose fd is `fd`.
pub(crate) fn by_fd(fd: c_int) -> Option<Arc<Handle>> {
    HANDLES
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(_, h, _)| h.seam.fd() == fd)
        .map(|(_, h, _)| h.clone())
}

/// Close handle `key`: it is forgotten, its AST thread stopped; `None`
/// for no such handle, else the lockspace if this process may close it.
pub(crate) fn remove(key: *mut c_void) -> Option<Option<Lockspace>> {
    let k = key as usize;
    let h = {
        let mut t = HANDLES.write().unwrap_or_else(|p| p.into_inner());
        let i = t.iter().position(|(x, ..)| *x == k)?;
        let (_, h, fast) = t.swap_remove(i);
        if let Some(i) = fast {
            SLOTS[i].close();
        }
        h
    };
    {
        let mut d = DEFAULT.lock().unwrap_or_else(|p| p.into_inner());
        if *d == Some(k) {
            *d = None;
        }
    }
    Some(h.close())
}

/// The default lockspace's handle, if open.
pub(crate) fn default_handle() -> Option<(usize, Arc<Handle>)> {
    let d = *DEFAULT.lock().unwrap_or_else(|p| p.into_inner());
    let k = d?;
    get(k as *mut c_void).map(|h| (k, h))
}

/// The default lockspace, opened or created ("default", 0600) if need be.
pub(crate) fn open_default() -> Result<(usize, Arc<Handle>), c_int> {
    let mut d = DEFAULT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(k) = *d {
        if let Some(h) = get(k as *mut c_void) {
            return Ok((k, h));
        }
    }
    let dlm = dlm()?;
    let name = dlm::LockspaceName::new("default").map_err(|e| e.raw())?;
    let ls = match dlm.open_lockspace(&name) {
        Ok(ls) => ls,
        Err(_) => dlm
            .create_lockspace(&name, dlm::LockspaceFlags::empty(), 0o600)
            .map_err(|e| e.errno().raw())?,
    };
    let k = add(ls)?;
    *d = Some(k);
    let h = get(k as *mut c_void).ok_or(libc::ENOTCONN)?;
    Ok((k, h))
}
