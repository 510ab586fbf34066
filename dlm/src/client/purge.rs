//! `dlm_ls_purge()`, and what a purge of this handle's own locks makes of
//! their slots.
//!
//! A purge names a node and a pid. Where the node is this one and the pid
//! is the caller's (the kernel compares it with `current->pid`, the
//! calling thread's id; `dlmd` with the connection's pid), the DLM does
//! not purge orphans but the handle's own locks (`purge_proc_locks`):
//! each is marked dead and force-unlocked, and every callback of theirs,
//! queued or still to come, is dropped. Nothing will ever arrive for
//! them, so a thread waiting for one of their completions would wait for
//! ever. A lock requested with `FORCEUNLOCK` among its own flags is even
//! left granted by the purge (its force-unlock is refused), and a later
//! waiting unlock of it is accepted and completes nothing.
//!
//! So once such a purge has been written, every lock of the handle that
//! the DLM knew of is ended here too: its slot goes, waiting calls on it
//! return `ENOENT`, later operations on its id are `ENOENT` without a
//! write, and its callbacks are not called (as the DLM calls none). A
//! request not yet written when the purge was is not touched.

use dlm_proto::error::{Errno, Error, Result};
use dlm_proto::records;

use super::lockspace::{is_conn_failure, Lockspace, Redo};
use super::Backend;

impl Lockspace {
    /// `dlm_ls_purge()`: release the orphans of `pid` (0: every orphan)
    /// on `nodeid` (0: this node). Where `pid` is the caller's own (the
    /// calling thread's id on the kernel, the process's on the fallback)
    /// and the node is this one, the DLM purges this handle's own locks
    /// instead, silently: they end here too, and waiting calls on them
    /// return `ENOENT` (see the module's source docs).
    pub fn purge(&self, nodeid: u32, pid: u32) -> Result<()> {
        let bytes = records::encode_purge(nodeid, pid, records::VERSION);
        if !self.purges_own_locks(nodeid, pid) {
            // Sent again after a replay, if the daemon's death took it.
            let (written, gate) = self.gated_write(bytes.as_bytes(), Redo::Again);
            drop(gate);
            self.after_io();
            return written.map(drop).map_err(Error::Os);
        }
        // Bounded: each turn is a replay that succeeded, onto a daemon
        // that died again before the purge reached it.
        for _ in 0..20 {
            // No other write of this handle is on its way meanwhile: on
            // the daemon, every write holds the gate shared until what it
            // did is recorded; on the kernel, every write is made under the
            // state lock. Slots with a lock id are then exactly the locks
            // the purge reached.
            let gate = self
                .inner
                .write_gate
                .write()
                .unwrap_or_else(|p| p.into_inner());
            let mut st = self.state();
            let written = self.inner.transport.write(bytes.as_bytes());
            if let Err(e) = written {
                drop(st);
                drop(gate);
                if is_conn_failure(e) && self.inner.reconnect.is_some() && self.recover() {
                    // The locks are on the new daemon now: purge them there.
                    continue;
                }
                self.after_io();
                return Err(Error::Os(e));
            }
            let ended = st.end_written();
            drop(st);
            drop(gate);
            if ended > 0 {
                log::debug!(
                    "lockspace {}: a purge of our own locks ended {ended} of them",
                    self.inner.name
                );
                self.inner.cond.notify_all();
            }
            self.after_io();
            return Ok(());
        }
        Err(Error::Os(Errno::EPIPE))
    }

    /// Whether a purge of `nodeid` and `pid` purges this handle's own
    /// locks, as the backend decides it.
    fn purges_own_locks(&self, nodeid: u32, pid: u32) -> bool {
        let (caller, ours) = match self.inner.backend {
            Backend::Kernel => (
                rustix::thread::gettid().as_raw_nonzero().get() as u32,
                super::recovery::kernel_nodeid(),
            ),
            Backend::Fallback => (
                std::process::id(),
                Some(super::recovery::FALLBACK_MEMBER.nodeid),
            ),
        };
        pid == caller && (nodeid == 0 || Some(nodeid) == ours)
    }
}
