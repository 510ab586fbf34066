//! Recovery callbacks: what the kernel's `struct dlm_lockspace_ops` gives
//! its in-kernel users (gfs2, ocfs2, md-cluster), brought to userspace.
//!
//! See [`Recovery`] for the callbacks and when each runs, and
//! [`LockspaceOptions::recovery`](super::LockspaceOptions::recovery) for
//! setting them.
//!
//! # Where a kernel lockspace's events come from
//!
//! The kernel calls its own users' callbacks from `dlm_ls_stop` and the
//! end of recovery; userspace hears of those points only from the
//! controller that writes `control`. A [`Provider`] is such a source: it
//! subscribes to one lockspace and yields an [`EventStream`] of
//! [`Event`]s (stop; start with the generation, our slot and the members;
//! gone; and between a stop and its start, each member that failed).
//! Two providers exist, tried in this order ([`providers`]):
//! `single_node`, the event socket of `dlm-controld --single-node`; and
//! `cluster`, for a lockspace under the cluster's `dlm_controld`, which
//! polls the kernel's own files (`recover_status` in sysfs, the members
//! and comms in configfs: see that module for what and how often). The
//! fallback's events need no provider: the library
//! itself meets the daemon's failure and replays (`replay.rs`).
//!
//! A [`Subscription`] turns a stream into callbacks on a thread of its
//! own, and ends with the lockspace handle. It is made only when a
//! lockspace is opened with callbacks on the kernel backend, and costs
//! nothing per lock: the lock and unlock paths never look at it.

mod cluster;
mod single_node;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use dlm_proto::error::Errno;
use dlm_proto::name::LockspaceName;

/// One member of a lockspace and its slot: the kernel's `struct
/// dlm_slot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Member {
    /// The member's node id (1 and up).
    pub nodeid: u32,
    /// Its slot (1 and up): a small number unique among the members, which
    /// gfs2 uses to pick a journal.
    pub slot: u32,
}

/// Recovery callbacks for a lockspace, as `struct dlm_lockspace_ops` has
/// them. Every method has an empty default.
///
/// - [`recover_prep`](Self::recover_prep): the lock manager is about to
///   recover the lockspace's locks; what the locks protect may not be
///   trusted until [`recover_done`](Self::recover_done).
/// - [`recover_slot`](Self::recover_slot): a member failed (not a member
///   that left cleanly), with the slot it had, after `recover_prep` and
///   before `recover_done`. The fallback daemon has one member, this
///   host, and never calls it; nor does the single-node controller.
/// - [`recover_done`](Self::recover_done): recovery is over, with every
///   member, this process's own slot and the lockspace's generation.
///
/// When they run, on each backend:
/// - **At join**, on every backend: `recover_done` once, on the thread
///   that creates or opens the lockspace, before that call returns. On
///   the fallback the members are this host alone, `{nodeid 1, slot 1}`,
///   our slot is 1 and the generation is 1. On the kernel the members are
///   the node ids in configfs `spaces/<lockspace>/nodes`, and the slots
///   their positions in node-id order, which is the kernel's own order
///   only while no member has left: the kernel assigns slots itself
///   (`member.c`) and does not export them. The generation is 1.
/// - **On the fallback, when the daemon dies** (see the crate docs on lock
///   replay): `recover_prep` once the failure is met, before the replay,
///   and `recover_done` with the generation one higher once the replay
///   is over, both on the thread that met the failure, with no lock of
///   the client's held (a callback may use the lockspace). A replay that
///   fails (no daemon came back) ends with no `recover_done`: the locks
///   are lost, and each is reported so.
/// - **On the kernel with `dlm-controld --single-node`** (its event
///   socket `/run/dlm-controld/events.sock` present and trusted; see the
///   controller's docs): when the controller stops the lockspace (e.g.
///   `dlm-controld recover LOCKSPACE`), `recover_prep`, once per stop;
///   when it has started it again and the kernel's recovery is over,
///   `recover_done` with the members, our slot and the generation one
///   higher. Both run on the handle's recovery thread (`dlm-recovery`,
///   one per handle opened with callbacks), never on the event loop's,
///   with no lock of the client's held: a callback may use the
///   lockspace, and a request it makes between stop and start waits in
///   the kernel until the start. The generation at join is then the
///   controller's (1 unless the lockspace was restarted before this
///   handle opened it). The thread ends when the handle's last clone is
///   dropped, or when the controller goes (then
///   [`Lockspace::recovery_status`](super::Lockspace::recovery_status)
///   turns to `EOPNOTSUPP`).
/// - **On the kernel under the cluster's `dlm_controld`** (corosync; the
///   lockspace in configfs `spaces/`, no single-node controller's
///   socket): the kernel's own recovery, polled every 50 ms in
///   `/sys/kernel/dlm/<ls>/recover_status`. When the kernel stops the
///   lockspace (a member failed, left or joined), `recover_prep`; once
///   its recovery is over, `recover_slot` for each member that failed
///   (not for one that left cleanly: the kernel's own rule, read from
///   configfs `comms/`), then `recover_done` with the members now, our
///   slot and the generation one higher. Same thread and rules as the
///   single-node controller's. The generation is counted by this handle
///   from 1 at join (the kernel does not export its own).
/// - **On the kernel otherwise** (no controller, the single-node
///   controller's socket fails a trust check, or the lockspace was
///   opened without callbacks), only the one at join: `recovery_status`
///   says `EOPNOTSUPP`, as the kernel's `ops_result` does when it cannot
///   supply the callbacks.
pub trait Recovery: Send + Sync + 'static {
    /// Recovery of the lockspace's locks begins (`recover_prep`).
    fn recover_prep(&self) {}
    /// A member failed (`recover_slot`).
    fn recover_slot(&self, _failed: Member) {}
    /// Recovery is over (`recover_done`): the members with their slots,
    /// this process's slot, and the lockspace's generation.
    fn recover_done(&self, _members: &[Member], _our_slot: u32, _generation: u32) {}
}

/// A lockspace's recovery callbacks, shared with its handle.
pub(crate) type SharedRecovery = Arc<dyn Recovery>;

/// The members of a kernel lockspace and our slot, from configfs (best
/// effort: what cannot be read gives no member).
pub(crate) fn kernel_members(name: &LockspaceName) -> (Vec<Member>, u32) {
    members_in(Path::new(CONFIGFS), name)
}

/// The DLM's configfs directory.
pub(crate) const CONFIGFS: &str = "/sys/kernel/config/dlm/cluster";

/// [`kernel_members`] from the configfs directory `base`.
pub(crate) fn members_in(base: &Path, name: &LockspaceName) -> (Vec<Member>, u32) {
    let mut ids: Vec<u32> = Vec::new();
    let nodes = base.join("spaces").join(name.to_string()).join("nodes");
    if let Ok(dir) = std::fs::read_dir(&nodes) {
        for e in dir.flatten() {
            if let Some(id) = read_u32(&e.path().join("nodeid")) {
                ids.push(id);
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    let ours = local_nodeid(base);
    let members: Vec<Member> = ids
        .iter()
        .enumerate()
        .map(|(i, &nodeid)| Member {
            nodeid,
            slot: i as u32 + 1,
        })
        .collect();
    let our_slot = members
        .iter()
        .find(|m| Some(m.nodeid) == ours)
        .map_or(0, |m| m.slot);
    (members, our_slot)
}

/// This node's id in the kernel's DLM, from configfs (`None` where it
/// cannot be read).
pub(crate) fn kernel_nodeid() -> Option<u32> {
    local_nodeid(Path::new(CONFIGFS))
}

/// This node's id: the comms entry whose `local` is 1.
fn local_nodeid(base: &Path) -> Option<u32> {
    let dir = std::fs::read_dir(base.join("comms")).ok()?;
    dir.flatten()
        .find(|e| read_u32(&e.path().join("local")) == Some(1))
        .and_then(|e| read_u32(&e.path().join("nodeid")))
}

fn read_u32(p: &Path) -> Option<u32> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// The fallback's one member.
pub(crate) const FALLBACK_MEMBER: Member = Member { nodeid: 1, slot: 1 };

/// What the kernel's `ops_result` would say: `Ok` where the backend
/// delivers every callback (the fallback; the kernel with a live
/// subscription), `EOPNOTSUPP` where only the one at join.
pub(crate) fn status_for(kernel: bool, subscribed: bool) -> Result<(), Errno> {
    if kernel && !subscribed {
        Err(Errno::from_raw(libc::EOPNOTSUPP))
    } else {
        Ok(())
    }
}

/// A point in a lockspace's recovery, as a provider reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// The lockspace was stopped; `generation` ends.
    Stop { generation: u32 },
    /// It was started again and recovered: the new generation, our slot
    /// and every member.
    Start {
        generation: u32,
        our_slot: u32,
        members: Vec<Member>,
    },
    /// A member failed (between a stop and its start).
    Failed(Member),
    /// It was removed: no more events.
    Gone,
}

/// Ends a blocked [`EventStream::next_event`] from another thread.
pub(crate) type Closer = Box<dyn Fn() + Send + Sync>;

/// One lockspace's events from a provider.
pub(crate) trait EventStream: Send {
    /// The lockspace's generation when the subscription was made.
    fn generation(&self) -> u32;
    /// The next event, waiting for it; `None` once the stream ended
    /// (the provider went, or the closer was called).
    fn next_event(&mut self) -> Option<Event>;
    /// What ends the stream.
    fn closer(&self) -> io::Result<Closer>;
}

/// A source of recovery events for kernel lockspaces.
pub(crate) trait Provider {
    /// For logs.
    fn name(&self) -> &'static str;
    /// Subscribe to lockspace `name`: `Ok(None)` when this provider is not
    /// there (no such controller runs), `Err` when it is there but cannot
    /// be used (a trust check failed, it refused).
    fn subscribe(&self, name: &LockspaceName) -> Result<Option<Box<dyn EventStream>>, String>;
}

/// The providers, tried in order: the first one there is used.
fn providers() -> Vec<Box<dyn Provider>> {
    vec![
        Box::new(single_node::SingleNode::system()),
        Box::new(cluster::Cluster::system()),
    ]
}

/// A subscription made, its thread not yet started (so that the join's
/// `recover_done` comes first).
pub(crate) struct Pending {
    stream: Box<dyn EventStream>,
    provider: &'static str,
}

impl Pending {
    /// The generation at subscription.
    pub(crate) fn generation(&self) -> u32 {
        self.stream.generation()
    }
}

/// Subscribe lockspace `name` with the first provider there; `None` if
/// none is (failures are logged).
pub(crate) fn subscribe(name: &LockspaceName) -> Option<Pending> {
    for p in providers() {
        match p.subscribe(name) {
            Ok(Some(stream)) => {
                log::debug!(
                    "lockspace {name}: recovery events from {} (generation {})",
                    p.name(),
                    stream.generation()
                );
                return Some(Pending {
                    stream,
                    provider: p.name(),
                });
            }
            Ok(None) => {}
            Err(e) => log::warn!(
                "lockspace {name}: no recovery events from {}: {e}",
                p.name()
            ),
        }
    }
    None
}

/// A live subscription: its thread calls the callbacks.
pub(crate) struct Subscription {
    live: Arc<AtomicBool>,
    close: Closer,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Subscription {
    /// Start the thread that turns `pending`'s events into `ops`' calls,
    /// keeping `generation` (the handle's) up to date.
    pub(crate) fn start(
        pending: Pending,
        name: LockspaceName,
        ops: SharedRecovery,
        generation: Arc<AtomicU32>,
    ) -> Option<Subscription> {
        let Pending {
            mut stream,
            provider,
        } = pending;
        let close = match stream.closer() {
            Ok(c) => c,
            Err(e) => {
                log::warn!("lockspace {name}: no recovery events from {provider}: {e}");
                return None;
            }
        };
        let live = Arc::new(AtomicBool::new(true));
        let thread = std::thread::Builder::new()
            .name("dlm-recovery".into())
            .spawn({
                let live = live.clone();
                move || {
                    // recover_prep once per stop, as the kernel's
                    // dlm_ls_stop calls it only on running -> stopped.
                    let mut stopped = false;
                    while let Some(ev) = stream.next_event() {
                        match ev {
                            Event::Stop { generation: g } => {
                                log::debug!("lockspace {name}: stopped (generation {g} ends)");
                                if !stopped {
                                    stopped = true;
                                    ops.recover_prep();
                                }
                            }
                            Event::Start {
                                generation: g,
                                our_slot,
                                members,
                            } => {
                                log::debug!("lockspace {name}: started (generation {g})");
                                stopped = false;
                                generation.store(g, Ordering::SeqCst);
                                ops.recover_done(&members, our_slot, g);
                            }
                            Event::Failed(m) => {
                                log::debug!("lockspace {name}: member {} failed", m.nodeid);
                                ops.recover_slot(m);
                            }
                            Event::Gone => break,
                        }
                    }
                    if live.swap(false, Ordering::SeqCst) {
                        log::debug!("lockspace {name}: recovery events from {provider} ended");
                    }
                }
            });
        match thread {
            Ok(t) => Some(Subscription {
                live,
                close,
                thread: Some(t),
            }),
            Err(e) => {
                log::warn!("recovery thread: {e}");
                None
            }
        }
    }

    /// Whether events still come.
    pub(crate) fn live(&self) -> bool {
        self.live.load(Ordering::SeqCst)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.live.store(false, Ordering::SeqCst);
        (self.close)();
        if let Some(t) = self.thread.take() {
            // Dropped by a callback (the handle's last clone went there):
            // the thread ends by itself once the callback returns.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::sync::Mutex;

    /// Events from a channel; the closer drops the sender's side.
    struct Fake {
        rx: Arc<Mutex<mpsc::Receiver<Event>>>,
        closed: Arc<AtomicBool>,
    }

    impl EventStream for Fake {
        fn generation(&self) -> u32 {
            7
        }
        fn next_event(&mut self) -> Option<Event> {
            loop {
                if self.closed.load(Ordering::SeqCst) {
                    return None;
                }
                let r = self.rx.lock().unwrap();
                match r.recv_timeout(std::time::Duration::from_millis(10)) {
                    Ok(ev) => return Some(ev),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return None,
                }
            }
        }
        fn closer(&self) -> io::Result<Closer> {
            let c = self.closed.clone();
            Ok(Box::new(move || c.store(true, Ordering::SeqCst)))
        }
    }

    #[derive(Default)]
    struct Journal(Mutex<Vec<String>>);
    impl Recovery for Journal {
        fn recover_prep(&self) {
            self.0.lock().unwrap().push("prep".into());
        }
        fn recover_done(&self, members: &[Member], our_slot: u32, generation: u32) {
            self.0
                .lock()
                .unwrap()
                .push(format!("done {} {our_slot} {generation}", members.len()));
        }
    }

    #[test]
    fn events_become_callbacks_in_order_and_prep_once_per_stop() {
        let (tx, rx) = mpsc::channel();
        let pending = Pending {
            stream: Box::new(Fake {
                rx: Arc::new(Mutex::new(rx)),
                closed: Arc::new(AtomicBool::new(false)),
            }),
            provider: "fake",
        };
        assert_eq!(pending.generation(), 7);
        let j = Arc::new(Journal::default());
        let generation = Arc::new(AtomicU32::new(7));
        let name = LockspaceName::new("t").unwrap();
        let sub = Subscription::start(pending, name, j.clone(), generation.clone()).unwrap();
        assert!(sub.live());
        for ev in [
            Event::Stop { generation: 7 },
            Event::Stop { generation: 7 },
            Event::Start {
                generation: 8,
                our_slot: 1,
                members: vec![FALLBACK_MEMBER],
            },
        ] {
            tx.send(ev).unwrap();
        }
        while j.0.lock().unwrap().len() < 2 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(*j.0.lock().unwrap(), ["prep", "done 1 1 8"]);
        assert_eq!(generation.load(Ordering::SeqCst), 8);
        tx.send(Event::Gone).unwrap();
        while sub.live() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        drop(sub); // joins the ended thread
        assert_eq!(
            status_for(true, false),
            Err(Errno::from_raw(libc::EOPNOTSUPP))
        );
        assert_eq!(status_for(true, true), Ok(()));
        assert_eq!(status_for(false, false), Ok(()));
    }
}
