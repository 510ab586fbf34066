//! Recovery events of a kernel lockspace under the cluster's own
//! `dlm_controld` (corosync membership), read from what the kernel
//! exports: no daemon of ours and no protocol of dlm_controld's.
//!
//! # What is polled, and how often
//!
//! Every [`POLL`] (50 ms), for each lockspace opened with callbacks:
//! - `/sys/kernel/dlm/<ls>/recover_status`: the kernel's own recovery
//!   state. `dlm_ls_stop` sets it to 0, and the end of the kernel's
//!   `ls_recover` on this node sets `DLM_RS_DONE` (0x40) in it (only the
//!   member with the lowest node id sets `DLM_RS_DONE_ALL`, 0x80, in its
//!   own: the others ask it). Losing 0x40 is the stop (`recover_prep`);
//!   getting it back is the end of recovery (`recover_done`). So the
//!   callbacks follow the kernel's recovery itself, not the controller's
//!   view of it, within one poll.
//! - configfs `spaces/<ls>/nodes/`: the members, which `dlm_controld`
//!   writes before it starts the lockspace again (the kernel reads them
//!   there). Slots are their positions in node-id order, as at join (see
//!   [`Recovery`](super::Recovery)). A membership change seen with
//!   `recover_status` done at both polls is a stop and a start that fell
//!   between two polls: both are reported then.
//! - configfs `comms/<nodeid>`, for a member that is no longer one: the
//!   kernel calls `recover_slot` for a removed member only when it has
//!   no connection to it any more (`dlm_lsop_recover_slot` compares the
//!   comms entry with the one the member joined with), which is what
//!   `dlm_controld` does to a node corosync lost: it removes the node's
//!   comms entry before the lockspace starts again. A member that left
//!   the lockspace cleanly still has its entry: no `recover_slot`. The
//!   same rule is read here from the entry being gone (a node that
//!   failed and came back within one poll is seen as having left).
//!
//! Why not dlm_controld's query socket (`dlmc_lockspace_info` and
//! `dlmc_lockspace_nodes`, which `dlm_tool ls` uses): its state is the
//! controller's, which leads the kernel's stop and lags the end of its
//! recovery; its per-node `fail_reason` is never reset, so a node that
//! failed once and later left cleanly still reads as failed; and it is an
//! abstract socket, which any local user may bind while dlm_controld is
//! not running. The kernel's files say all the callbacks need, and only
//! root can change them.
//!
//! A lockspace with no `spaces/<ls>` entry in configfs has no controller
//! that runs recovery: no subscription. The stream ends (`Gone`) when
//! the lockspace's sysfs directory goes.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use dlm_proto::name::LockspaceName;

use super::{members_in, Closer, Event, EventStream, Member, Provider, CONFIGFS};

/// How often the kernel's files are read.
pub(crate) const POLL: Duration = Duration::from_millis(50);

/// `DLM_RS_DONE` in `recover_status`: this node's part of the recovery
/// is over.
const DONE: u32 = 0x40;

/// The kernel's files of every lockspace.
pub(crate) struct Cluster {
    /// `/sys/kernel/dlm`.
    pub(crate) sysfs: PathBuf,
    /// `/sys/kernel/config/dlm/cluster`.
    pub(crate) configfs: PathBuf,
    pub(crate) poll: Duration,
}

impl Cluster {
    /// The real system's.
    pub(crate) fn system() -> Cluster {
        Cluster {
            sysfs: PathBuf::from("/sys/kernel/dlm"),
            configfs: PathBuf::from(CONFIGFS),
            poll: POLL,
        }
    }
}

impl Provider for Cluster {
    fn name(&self) -> &'static str {
        "the kernel's recover_status and configfs (dlm_controld)"
    }

    fn subscribe(&self, name: &LockspaceName) -> Result<Option<Box<dyn EventStream>>, String> {
        let ls = name.to_string();
        if !self.configfs.join("spaces").join(&ls).is_dir() {
            return Ok(None);
        }
        let status = self.sysfs.join(&ls).join("recover_status");
        let Some(s) = read_hex(&status) else {
            return Ok(None);
        };
        let (members, _) = members_in(&self.configfs, name);
        Ok(Some(Box::new(Stream {
            status,
            configfs: self.configfs.clone(),
            name: *name,
            poll: self.poll,
            running: s & DONE != 0,
            members,
            generation: 1,
            pending: VecDeque::new(),
            closed: Arc::new((Mutex::new(false), Condvar::new())),
        })))
    }
}

fn read_hex(p: &Path) -> Option<u32> {
    let s = std::fs::read_to_string(p).ok()?;
    u32::from_str_radix(s.trim(), 16).ok()
}

struct Stream {
    status: PathBuf,
    configfs: PathBuf,
    name: LockspaceName,
    poll: Duration,
    /// Recovery was done at the last poll.
    running: bool,
    /// The members at the last start.
    members: Vec<Member>,
    generation: u32,
    pending: VecDeque<Event>,
    closed: Arc<(Mutex<bool>, Condvar)>,
}

impl Stream {
    /// One poll: the events it shows, queued; `false` once the lockspace
    /// is gone.
    fn look(&mut self) -> bool {
        let Some(status) = read_hex(&self.status) else {
            self.pending.push_back(Event::Gone);
            return false;
        };
        let done = status & DONE != 0;
        match (self.running, done) {
            (true, false) => {
                self.running = false;
                self.pending.push_back(Event::Stop {
                    generation: self.generation,
                });
            }
            (false, true) => self.started(),
            (true, true) => {
                // A stop and a start between two polls shows only in the
                // members.
                let (now, _) = members_in(&self.configfs, &self.name);
                if ids(&now) != ids(&self.members) {
                    self.pending.push_back(Event::Stop {
                        generation: self.generation,
                    });
                    self.started();
                }
            }
            (false, false) => {}
        }
        true
    }

    /// Recovery is over: the members that failed, then the start.
    fn started(&mut self) {
        self.running = true;
        let (members, our_slot) = members_in(&self.configfs, &self.name);
        let now = ids(&members);
        for m in &self.members {
            if !now.contains(&m.nodeid) && self.failed(m.nodeid) {
                self.pending.push_back(Event::Failed(*m));
            }
        }
        self.generation = self.generation.wrapping_add(1).max(1);
        self.pending.push_back(Event::Start {
            generation: self.generation,
            our_slot,
            members: members.clone(),
        });
        self.members = members;
    }

    /// Whether removed member `nodeid` failed (rather than left): the
    /// kernel has no connection to it any more.
    fn failed(&self, nodeid: u32) -> bool {
        !self
            .configfs
            .join("comms")
            .join(nodeid.to_string())
            .exists()
    }
}

fn ids(m: &[Member]) -> Vec<u32> {
    m.iter().map(|m| m.nodeid).collect()
}

impl EventStream for Stream {
    fn generation(&self) -> u32 {
        self.generation
    }

    fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(ev);
            }
            {
                let (lock, cv) = &*self.closed;
                let closed = lock.lock().unwrap_or_else(|p| p.into_inner());
                let (closed, _) = cv
                    .wait_timeout_while(closed, self.poll, |c| !*c)
                    .unwrap_or_else(|p| p.into_inner());
                if *closed {
                    return None;
                }
            }
            if !self.look() && self.pending.is_empty() {
                return None;
            }
        }
    }

    fn closer(&self) -> io::Result<Closer> {
        let c = self.closed.clone();
        Ok(Box::new(move || {
            let (lock, cv) = &*c;
            *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
            cv.notify_all();
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake /sys/kernel/dlm and configfs in a temporary directory.
    struct Fake {
        root: PathBuf,
    }

    impl Fake {
        fn new(tag: &str) -> Fake {
            let root =
                std::env::temp_dir().join(format!("dlm-rs-cluster-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(root.join("sys/ls1")).unwrap();
            std::fs::create_dir_all(root.join("cfg/spaces/ls1/nodes")).unwrap();
            Fake { root }
        }
        fn cluster(&self) -> Cluster {
            Cluster {
                sysfs: self.root.join("sys"),
                configfs: self.root.join("cfg"),
                poll: Duration::from_millis(1),
            }
        }
        fn status(&self, s: &str) {
            std::fs::write(self.root.join("sys/ls1/recover_status"), s).unwrap();
        }
        fn member(&self, id: u32, on: bool) {
            let d = self.root.join(format!("cfg/spaces/ls1/nodes/{id}"));
            if on {
                std::fs::create_dir_all(&d).unwrap();
                std::fs::write(d.join("nodeid"), format!("{id}\n")).unwrap();
            } else {
                std::fs::remove_dir_all(&d).unwrap();
            }
        }
        fn comms(&self, id: u32, on: bool, local: bool) {
            let d = self.root.join(format!("cfg/comms/{id}"));
            if on {
                std::fs::create_dir_all(&d).unwrap();
                std::fs::write(d.join("nodeid"), format!("{id}\n")).unwrap();
                std::fs::write(d.join("local"), if local { "1\n" } else { "0\n" }).unwrap();
            } else {
                std::fs::remove_dir_all(&d).unwrap();
            }
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    fn m(nodeid: u32, slot: u32) -> Member {
        Member { nodeid, slot }
    }

    /// The start once node 3 is gone, seen from node 1.
    fn two_left() -> Event {
        Event::Start {
            generation: 2,
            our_slot: 1,
            members: vec![m(1, 1), m(2, 2)],
        }
    }

    fn three(tag: &str) -> (Fake, Box<dyn EventStream>) {
        let f = Fake::new(tag);
        // Recovered, as a member other than the lowest sees it: NODES,
        // DIR, LOCKS and DONE, no DONE_ALL.
        f.status("55\n");
        for id in 1..=3 {
            f.member(id, true);
            f.comms(id, true, id == 1);
        }
        let name = LockspaceName::new("ls1").unwrap();
        let s = f.cluster().subscribe(&name).unwrap().unwrap();
        assert_eq!(s.generation(), 1);
        (f, s)
    }

    #[test]
    fn no_configfs_space_is_no_provider() {
        let f = Fake::new("none");
        f.status("55\n");
        let name = LockspaceName::new("other").unwrap();
        assert!(f.cluster().subscribe(&name).unwrap().is_none());
        std::fs::remove_dir_all(f.root.join("sys/ls1")).unwrap();
        let name = LockspaceName::new("ls1").unwrap();
        assert!(f.cluster().subscribe(&name).unwrap().is_none());
    }

    #[test]
    fn a_failed_member_is_a_slot_between_stop_and_start() {
        let (f, mut s) = three("fail");
        f.status("0\n");
        assert_eq!(s.next_event(), Some(Event::Stop { generation: 1 }));
        // dlm_controld drops the dead node's comms, then its membership,
        // then the kernel recovers.
        f.comms(3, false, false);
        f.member(3, false);
        f.status("55\n");
        assert_eq!(s.next_event(), Some(Event::Failed(m(3, 3))));
        assert_eq!(s.next_event(), Some(two_left()));
    }

    #[test]
    fn a_clean_leave_has_no_slot_and_a_missed_cycle_is_still_seen() {
        let (f, mut s) = three("leave");
        // Stop and start between two polls: only the members changed.
        f.member(3, false);
        assert_eq!(s.next_event(), Some(Event::Stop { generation: 1 }));
        assert_eq!(s.next_event(), Some(two_left()));
        // The lockspace goes: the stream ends.
        std::fs::remove_dir_all(f.root.join("sys/ls1")).unwrap();
        assert_eq!(s.next_event(), Some(Event::Gone));
    }

    #[test]
    fn the_closer_ends_a_waiting_stream() {
        let (_f, mut s) = three("close");
        let close = s.closer().unwrap();
        let t = std::thread::spawn(move || s.next_event());
        std::thread::sleep(Duration::from_millis(20));
        close();
        assert_eq!(t.join().unwrap(), None);
    }
}
