//! Recovery callbacks: what the kernel's `struct dlm_lockspace_ops` gives
//! its in-kernel users (gfs2, ocfs2, md-cluster), brought to userspace.
//!
//! See [`Recovery`] for the callbacks and when each runs, and
//! [`LockspaceOptions::recovery`](super::LockspaceOptions::recovery) for
//! setting them.

use std::path::Path;
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
///   that left cleanly). The fallback daemon has one member, this host,
///   and never calls it.
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
/// - **On the kernel**, this version delivers only the one at join:
///   [`Lockspace::recovery_status`](super::Lockspace::recovery_status)
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
    let base = Path::new("/sys/kernel/config/dlm/cluster");
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
/// delivers every callback, `EOPNOTSUPP` where only the one at join.
pub(crate) fn status_for(kernel: bool) -> Result<(), Errno> {
    if kernel {
        Err(Errno::from_raw(libc::EOPNOTSUPP))
    } else {
        Ok(())
    }
}
