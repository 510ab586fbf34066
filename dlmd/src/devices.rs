//! What the kernel's `fs/dlm/user.c` does with each request, over the
//! engine's [`Registry`]: lockspace creation and removal (control
//! device), opening a lockspace (its device), the lock commands of
//! `device_write`, and the daemon's access rules and the records its
//! queries list.
//!
//! This module does no I/O; the server feeds it requests and sends what
//! it answers. Connections are named by their [`ConnId`].
//!
//! Who sees what: on the system daemon a uid other than root is shown
//! only the lockspaces it may open (read-write permission by the mode, as
//! for `Hello`) when it lists them, and asking for the locks of one it may
//! not open is `EACCES`, as opening it is. Root sees every lockspace, and
//! so does the one user of a per-user daemon. A lockspace's existence is
//! not a secret: `Hello` or a locks query by name answers `EACCES` for one
//! that exists and `ENOENT` for one that does not, as opening the kernel's
//! device node would; what a listing shows besides the name (owner, mode,
//! lock and connection counts) is.

use std::collections::HashMap;
use std::rc::Rc;

use dlm_engine::{Engine, KernelModel, OwnerId, Queue, Registry, Released};
use dlm_proto::query::{LockInfo, LockspaceInfo};
use dlm_proto::records::Request;
use dlm_proto::{Errno, LockspaceFlags, LockspaceName, ResourceName};

use crate::startup::Scope;

/// A connection, as the server numbers them.
pub type ConnId = usize;

/// A lockspace instance. Unlike a minor, never reused.
pub type LsId = u64;

/// The mode a new lockspace gets.
pub const DEFAULT_MODE: u32 = 0o600;

/// A peer's credentials (`SO_PEERCRED` and `SO_PEERGROUPS`), as they
/// were when it connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cred {
    /// Process id.
    pub pid: u32,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids (empty if the kernel would not say).
    pub groups: Rc<[u32]>,
}

impl Cred {
    /// Whether the peer is in group `gid`, as a primary or supplementary
    /// group (the kernel's `in_group_p`).
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

#[derive(Debug)]
enum State {
    /// In the registry, under this minor.
    Attached(u32),
    /// Removed from the registry while connections remained; they keep
    /// this engine until the last one closes.
    Detached(Box<Engine>),
}

/// A lockspace as the daemon keeps it, besides the registry's [`Space`].
///
/// [`Space`]: dlm_engine::Space
#[derive(Debug)]
pub struct Lockspace {
    name: LockspaceName,
    state: State,
    mode: u32,
    uid: u32,
    gid: u32,
    conns: Vec<ConnId>,
    removers: Vec<ConnId>,
}

impl Lockspace {
    /// The lockspace connections open on it.
    pub fn conns(&self) -> &[ConnId] {
        &self.conns
    }

    /// Whether `cred` may open it: permission bits as for a file opened
    /// read-write, with the peer's uid and groups (primary and
    /// supplementary); root passes.
    fn may_open(&self, cred: &Cred) -> bool {
        if cred.uid == 0 {
            return true;
        }
        let bits = if cred.uid == self.uid {
            self.mode >> 6
        } else if cred.in_group(self.gid) {
            self.mode >> 3
        } else {
            self.mode
        };
        bits & 0o6 == 0o6
    }
}

/// What a remove did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Done; reply 0.
    Done,
    /// The lockspace is gone from the name table, but connections remain:
    /// the reply waits until they are closed.
    Deferred(LsId),
}

/// Every lockspace of the daemon.
#[derive(Debug)]
pub struct Devices {
    scope: Scope,
    /// At most this many lockspaces (attached or detached) at a time.
    max_lockspaces: usize,
    registry: Registry,
    spaces: HashMap<LsId, Lockspace>,
    by_minor: HashMap<u32, LsId>,
    next_id: LsId,
}

impl Devices {
    /// No lockspaces yet; at most `max_lockspaces` of them at a time;
    /// they follow Linux 6.1 (the tests' lockspaces).
    #[cfg(test)]
    pub fn new(scope: Scope, max_lockspaces: usize) -> Devices {
        Devices::with_model(scope, max_lockspaces, KernelModel::V6_1)
    }

    /// The same, with lockspaces that follow `model`.
    pub fn with_model(scope: Scope, max_lockspaces: usize, model: KernelModel) -> Devices {
        Devices {
            scope,
            max_lockspaces,
            registry: Registry::with_model(model),
            spaces: HashMap::new(),
            by_minor: HashMap::new(),
            next_id: 1,
        }
    }

    /// The lockspace `id`, if it still exists.
    pub fn lockspace(&self, id: LsId) -> Option<&Lockspace> {
        self.spaces.get(&id)
    }

    /// The engine of lockspace `id`.
    pub fn engine_mut(&mut self, id: LsId) -> Option<&mut Engine> {
        let ls = self.spaces.get_mut(&id)?;
        match &mut ls.state {
            State::Attached(minor) => self.registry.get_mut(*minor).map(|s| &mut s.engine),
            State::Detached(e) => Some(e),
        }
    }

    pub fn engine(&self, id: LsId) -> Option<&Engine> {
        let ls = self.spaces.get(&id)?;
        match &ls.state {
            State::Attached(minor) => self.registry.get(*minor).map(|s| &s.engine),
            State::Detached(e) => Some(e),
        }
    }

    /// Give back what the lockspaces' tables hold beyond their live
    /// entries (see [`Engine::compact`]): once a burst of clients is over.
    pub fn compact(&mut self) {
        self.registry.compact();
        for ls in self.spaces.values_mut() {
            if let State::Detached(e) = &mut ls.state {
                e.compact();
            }
            ls.conns.shrink_to_fit();
            ls.removers.shrink_to_fit();
        }
        self.spaces.shrink_to_fit();
        self.by_minor.shrink_to_fit();
    }

    /// The system daemon's stand-in for `capable(CAP_SYS_ADMIN)`.
    fn check_admin(&self, cred: &Cred) -> Result<(), Errno> {
        if self.scope == Scope::System && cred.uid != 0 {
            return Err(Errno::EPERM);
        }
        Ok(())
    }

    /// `DLM_USER_CREATE_LOCKSPACE`: the lockspace's minor.
    pub fn create(&mut self, cred: &Cred, flags: u32, name: &[u8]) -> Result<u32, Errno> {
        self.check_admin(cred)?;
        let name = LockspaceName::new(name)?;
        if self.registry.find(&name).is_none() && self.spaces.len() >= self.max_lockspaces {
            log::warn!(
                "refused lockspace {name} for pid {}: the daemon has its maximum of {} \
                 lockspaces (--max-lockspaces)",
                cred.pid,
                self.max_lockspaces
            );
            return Err(Errno::ENOSPC);
        }
        let minor = self
            .registry
            .create(&name, LockspaceFlags::from_bits_retain(flags))?;
        if let Some(id) = self.by_minor.get(&minor) {
            let count = self.registry.get(minor).map_or(0, |s| s.create_count);
            log::debug!(
                "lockspace {name} (#{id}) created again by pid {}: count {count}",
                cred.pid
            );
            return Ok(minor);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.spaces.insert(
            id,
            Lockspace {
                name,
                state: State::Attached(minor),
                mode: DEFAULT_MODE,
                uid: cred.uid,
                gid: cred.gid,
                conns: Vec::new(),
                removers: Vec::new(),
            },
        );
        self.by_minor.insert(minor, id);
        log::info!(
            "lockspace {name} created (minor {minor}) by pid {} uid {}",
            cred.pid,
            cred.uid
        );
        Ok(minor)
    }

    /// `DLM_USER_REMOVE_LOCKSPACE` from connection `conn`.
    pub fn remove(
        &mut self,
        cred: &Cred,
        conn: ConnId,
        flags: u32,
        minor: u32,
    ) -> Result<Removal, Errno> {
        self.check_admin(cred)?;
        let id = *self.by_minor.get(&minor).ok_or(Errno::ENOENT)?;
        let force = flags & dlm_sys::DLM_USER_LSFLG_FORCEFREE != 0;
        let space = self.registry.get_mut(minor).ok_or(Errno::ENOENT)?;
        if space.create_count > 1 {
            self.registry.release(minor, force)?;
            return Ok(Removal::Done);
        }
        if !force && space.engine.lock_count() > 0 {
            return Err(Errno::EBUSY);
        }
        // Keep the engine: connections that are still open go on using it.
        let engine = std::mem::take(&mut space.engine);
        match self.registry.release(minor, force) {
            Ok(Released::Removed) => {}
            other => {
                if let Some(space) = self.registry.get_mut(minor) {
                    space.engine = engine;
                }
                return other.map(|_| Removal::Done);
            }
        }
        self.by_minor.remove(&minor);
        let Some(ls) = self.spaces.get_mut(&id) else {
            return Ok(Removal::Done);
        };
        log::info!(
            "lockspace {} (minor {minor}) removed by pid {}{}",
            ls.name,
            cred.pid,
            if ls.conns.is_empty() {
                String::new()
            } else {
                format!("; waiting for {} open connection(s)", ls.conns.len())
            }
        );
        if ls.conns.is_empty() {
            self.spaces.remove(&id);
            return Ok(Removal::Done);
        }
        ls.state = State::Detached(Box::new(engine));
        ls.removers.push(conn);
        Ok(Removal::Deferred(id))
    }

    /// A remover waiting on lockspace `id` went away.
    pub fn forget_remover(&mut self, id: LsId, conn: ConnId) {
        if let Some(ls) = self.spaces.get_mut(&id) {
            ls.removers.retain(|&c| c != conn);
        }
    }

    /// Open lockspace `name` for connection `conn` (the device's `open`):
    /// its id, the new owner and the minor.
    pub fn open(
        &mut self,
        cred: &Cred,
        conn: ConnId,
        name: &[u8],
    ) -> Result<(LsId, OwnerId, u32), Errno> {
        let name = LockspaceName::new(name)?;
        let minor = self.registry.find(&name).ok_or(Errno::ENOENT)?;
        let id = *self.by_minor.get(&minor).ok_or(Errno::ENOENT)?;
        let ls = self.spaces.get(&id).ok_or(Errno::ENOENT)?;
        if !ls.may_open(cred) {
            return Err(Errno::EACCES);
        }
        let engine = self.engine_mut(id).ok_or(Errno::ENOENT)?;
        let owner = engine.open_owner(cred.pid);
        if let Some(ls) = self.spaces.get_mut(&id) {
            ls.conns.push(conn);
        }
        Ok((id, owner, minor))
    }

    /// Connection `conn` holding `owner` in lockspace `id` closed (the
    /// device's `release`): its locks are released or orphaned. Returns
    /// the removers whose deferred remove is now complete.
    pub fn close(&mut self, id: LsId, conn: ConnId, owner: OwnerId) -> Vec<ConnId> {
        if let Some(engine) = self.engine_mut(id) {
            if let Err(e) = engine.close_owner(owner) {
                log::error!("closing owner {} of lockspace #{id}: {e}", owner.index());
            }
        }
        let Some(ls) = self.spaces.get_mut(&id) else {
            return Vec::new();
        };
        ls.conns.retain(|&c| c != conn);
        if ls.conns.is_empty() && matches!(ls.state, State::Detached(_)) {
            if let Some(ls) = self.spaces.remove(&id) {
                log::info!("lockspace {} freed: its last connection closed", ls.name);
                return ls.removers;
            }
        }
        Vec::new()
    }

    /// Grant again, under its own id, a lock that `owner` held before the
    /// daemon restarted (see [`dlm_proto::replay`]); `pid` is the
    /// replaying peer's. The engine refuses a lock id in use (`EEXIST`)
    /// and a mode that conflicts with a lock granted now (`EAGAIN`).
    pub fn replay(
        &mut self,
        id: LsId,
        owner: OwnerId,
        pid: u32,
        r: &dlm_proto::replay::Replay,
    ) -> Result<(), Errno> {
        use dlm_proto::replay::ReplayLvb;
        let engine = self.engine_mut(id).ok_or(Errno::ENOENT)?;
        let args = dlm_engine::UserArgs {
            castparam: r.castparam,
            castaddr: r.castaddr,
            bastparam: r.bastparam,
            bastaddr: r.bastaddr,
            lksb: r.lksb,
            xid: 0,
        };
        let mut lock = dlm_engine::ReplayLock::new(r.lkid, r.mode, r.name.as_bytes(), args)
            .flags(r.flags)
            .pid(pid);
        match r.lvb {
            ReplayLvb::None => {}
            ReplayLvb::Valid(v) => lock = lock.lvb(v, true),
            ReplayLvb::NotValid(v) => lock = lock.lvb(v, false),
        }
        engine.replay_granted(owner, lock)
    }

    /// The replays are over: on every lockspace, grant what the replayed
    /// locks let through and send the blocking callbacks they call for
    /// (`dlm_recover_grant`). The lockspaces whose callbacks to deliver.
    pub fn recover_grant_all(&mut self) -> Vec<LsId> {
        let ids: Vec<LsId> = self.spaces.keys().copied().collect();
        let mut touched = Vec::new();
        for id in ids {
            if let Some(e) = self.engine_mut(id) {
                if e.recover_grant() > 0 {
                    touched.push(id);
                }
            }
        }
        touched
    }

    /// `fchmod` on the lockspace's device: its owner or root only.
    pub fn chmod(&mut self, cred: &Cred, id: LsId, mode: u32) -> Result<(), Errno> {
        let ls = self.spaces.get_mut(&id).ok_or(Errno::ENOENT)?;
        if cred.uid != 0 && cred.uid != ls.uid {
            return Err(Errno::EPERM);
        }
        ls.mode = mode & 0o7777;
        log::debug!(
            "lockspace {} mode {:o} (pid {})",
            ls.name,
            ls.mode,
            cred.pid
        );
        Ok(())
    }

    /// `DLM_USER_LOCK`, `UNLOCK`, `DEADLOCK` and `PURGE` on a lockspace
    /// connection, as `device_write` dispatches them; `pid` is the
    /// writer's. What `write()` returns.
    pub fn lock_command(
        &mut self,
        id: LsId,
        owner: OwnerId,
        pid: u32,
        request: &Request,
    ) -> Result<i64, Errno> {
        let engine = self.engine_mut(id).ok_or(Errno::ENOENT)?;
        engine.device_write(owner, pid, request)
    }

    /// The lockspaces in the name table whose minor is `first` or more
    /// and that `viewer` may see, by minor: records made as the iterator
    /// is advanced. On the system daemon a uid other than root sees only
    /// the lockspaces it may open.
    pub fn lockspace_records<'a>(
        &'a self,
        first: u32,
        viewer: &'a Cred,
    ) -> impl Iterator<Item = LockspaceInfo> + 'a {
        let sees_all = self.scope == Scope::User || viewer.uid == 0;
        self.registry
            .iter_from(first)
            .filter_map(move |(minor, space)| {
                let ls = self.spaces.get(self.by_minor.get(&minor)?)?;
                if !sees_all && !ls.may_open(viewer) {
                    return None;
                }
                Some(LockspaceInfo {
                    name: ls.name.to_string(),
                    minor,
                    create_count: space.create_count,
                    mode: ls.mode,
                    uid: ls.uid,
                    gid: ls.gid,
                    locks: space.engine.lock_count(),
                    connections: ls.conns.len(),
                })
            })
    }

    /// The lockspace named `name` if `cred` may open it.
    pub fn find_for_query(&self, cred: &Cred, name: &[u8]) -> Result<LsId, Errno> {
        let name = LockspaceName::new(name)?;
        let minor = self.registry.find(&name).ok_or(Errno::ENOENT)?;
        let id = *self.by_minor.get(&minor).ok_or(Errno::ENOENT)?;
        let ls = self.spaces.get(&id).ok_or(Errno::ENOENT)?;
        if !ls.may_open(cred) {
            return Err(Errno::EACCES);
        }
        Ok(id)
    }

    /// The locks of lockspace `id` whose lock id is `first` or more, by
    /// lock id: records made as the iterator is advanced. `None` if the
    /// lockspace is gone.
    pub fn lock_records(
        &self,
        id: LsId,
        first: u32,
    ) -> Option<impl Iterator<Item = LockInfo> + '_> {
        let engine = self.engine(id)?;
        Some(engine.locks_from(first).map(|l| {
            let lvb = engine
                .resource_lvb(&l.resource)
                .and_then(|(lvb, _)| lvb)
                .map(|b| hex(&b));
            LockInfo {
                lkid: l.lkid,
                resource: ResourceName::new(&l.resource)
                    .map(|n| n.to_string())
                    .unwrap_or_else(|_| hex(&l.resource)),
                resource_hex: hex(&l.resource),
                granted: l.granted.map(|m| m.name().to_string()),
                requested: l.requested.map(|m| m.name().to_string()),
                queue: l.queue.map(|q| {
                    match q {
                        Queue::Granted => "granted",
                        Queue::Converting => "converting",
                        Queue::Waiting => "waiting",
                    }
                    .to_string()
                }),
                pid: l.pid,
                orphan: l.owner.is_none(),
                flags: l.flags.bits(),
                lvb,
                // The engine masters every resource itself.
                master: Some(0),
                // It keeps no sequence numbers (dlm_engine::lvb).
                lvb_seq: None,
            }
        }))
    }

    /// How many locks of lockspace `id` have a lock id of `first` or
    /// more (0 if the lockspace is gone).
    pub fn count_locks_from(&self, id: LsId, first: u32) -> usize {
        self.engine(id).map_or(0, |e| e.count_locks_from(first))
    }

    /// Every lockspace in the name table that `viewer` may see, by minor.
    #[cfg(test)]
    pub fn query_lockspaces(&self, viewer: &Cred) -> Vec<LockspaceInfo> {
        self.lockspace_records(0, viewer).collect()
    }

    /// Every lock of lockspace `id`, by lock id.
    #[cfg(test)]
    pub fn query_locks(&self, id: LsId) -> Result<Vec<LockInfo>, Errno> {
        Ok(self.lock_records(id, 0).ok_or(Errno::ENOENT)?.collect())
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use dlm_proto::records::LockRequest;
    use dlm_proto::LockFlags;

    fn cred(pid: u32, uid: u32, gid: u32, groups: &[u32]) -> Cred {
        Cred {
            pid,
            uid,
            gid,
            groups: groups.into(),
        }
    }

    /// Root; Alice (uid 1000, group 1000); Bob (uid 1001, group 1000).
    fn creds() -> (Cred, Cred, Cred) {
        (
            cred(10, 0, 0, &[0]),
            cred(20, 1000, 1000, &[]),
            cred(30, 1001, 1000, &[]),
        )
    }

    fn lock(name: &[u8], mode: u8, flags: u32) -> Request {
        let mut r = LockRequest::default();
        r.mode = mode;
        r.flags = flags;
        r.castaddr = 1;
        r.lksb = 2;
        r.set_name(name).expect("short name");
        Request::Lock(r)
    }

    #[test]
    fn only_root_manages_lockspaces_on_the_system_daemon() {
        let (root, alice, _) = creds();
        let mut d = Devices::new(Scope::System, 16);
        assert_eq!(d.create(&alice, 0, b"ls"), Err(Errno::EPERM));
        let minor = d.create(&root, 0, b"ls").expect("root creates");
        assert_eq!(d.remove(&alice, 1, 0, minor), Err(Errno::EPERM));
        assert_eq!(d.remove(&root, 1, 0, minor), Ok(Removal::Done));
        assert_eq!(d.remove(&root, 1, 0, minor), Err(Errno::ENOENT));
        let mut u = Devices::new(Scope::User, 16);
        assert!(
            u.create(&alice, 0, b"ls").is_ok(),
            "a user daemon's user may"
        );
    }

    #[test]
    fn lockspace_names_are_checked() {
        let (_, alice, _) = creds();
        let mut d = Devices::new(Scope::User, 16);
        assert_eq!(d.create(&alice, 0, b""), Err(Errno::EINVAL));
        assert_eq!(d.create(&alice, 0, b"a/b"), Err(Errno::EINVAL));
        assert_eq!(d.open(&alice, 1, b"nope").err(), Some(Errno::ENOENT));
        assert_eq!(d.open(&alice, 1, &[b'x'; 65]).err(), Some(Errno::EINVAL));
    }

    #[test]
    fn modes_are_checked_like_file_permissions() {
        let (root, alice, bob) = creds();
        let mut d = Devices::new(Scope::User, 16);
        d.create(&alice, 0, b"ls").expect("create");
        assert_eq!(d.open(&bob, 1, b"ls").err(), Some(Errno::EACCES));
        let (id, _, _) = d.open(&alice, 2, b"ls").expect("owner opens");
        assert_eq!(d.chmod(&bob, id, 0o666), Err(Errno::EPERM));
        d.chmod(&alice, id, 0o640).expect("owner chmods");
        assert_eq!(d.open(&bob, 3, b"ls").err(), Some(Errno::EACCES), "r only");
        d.chmod(&alice, id, 0o660).expect("owner chmods");
        assert!(d.open(&bob, 3, b"ls").is_ok(), "group rw");
        d.chmod(&root, id, 0o000).expect("root chmods");
        assert_eq!(d.open(&alice, 4, b"ls").err(), Some(Errno::EACCES));
        assert!(d.open(&root, 4, b"ls").is_ok(), "root passes");
        assert_eq!(d.find_for_query(&bob, b"ls"), Err(Errno::EACCES));
    }

    #[test]
    fn supplementary_groups_count_like_the_primary_one() {
        let (_, alice, _) = creds();
        let carol = cred(40, 1002, 2000, &[3000, 1000]);
        let dave = cred(50, 1003, 2000, &[3000]);
        let mut d = Devices::new(Scope::User, 16);
        d.create(&alice, 0, b"ls").expect("create");
        let (id, _, _) = d.open(&alice, 1, b"ls").expect("owner opens");
        d.chmod(&alice, id, 0o660).expect("owner chmods");
        assert!(
            d.open(&carol, 2, b"ls").is_ok(),
            "in group 1000 as a supplementary group"
        );
        assert_eq!(d.find_for_query(&carol, b"ls"), Ok(id));
        assert_eq!(d.open(&dave, 3, b"ls").err(), Some(Errno::EACCES));
        // The owner's bits apply to the owner, whatever its groups.
        d.chmod(&alice, id, 0o060).expect("owner chmods");
        assert_eq!(d.open(&alice, 4, b"ls").err(), Some(Errno::EACCES));
        assert!(d.open(&carol, 5, b"ls").is_ok());
    }

    #[test]
    fn unprivileged_callers_list_what_they_may_open() {
        let (root, alice, bob) = creds();
        let carol = cred(40, 1002, 2000, &[]);
        let mut d = Devices::new(Scope::System, 16);
        for (name, mode) in [("open", 0o666), ("group", 0o660), ("private", 0o600)] {
            d.create(&root, 0, name.as_bytes()).expect("create");
            let (id, _, _) = d.open(&root, 1, name.as_bytes()).expect("open");
            d.chmod(&root, id, mode).expect("chmod");
        }
        let names = |c: &Cred| -> Vec<String> {
            d.query_lockspaces(c).into_iter().map(|l| l.name).collect()
        };
        assert_eq!(names(&root), ["open", "group", "private"]);
        // Root's group is 0; Alice and Bob are not in it.
        assert_eq!(names(&alice), ["open"]);
        assert_eq!(names(&bob), ["open"]);
        let wheel = cred(60, 1004, 2000, &[0]);
        assert_eq!(names(&wheel), ["open", "group"]);
        assert_eq!(names(&carol), ["open"]);
        assert_eq!(d.find_for_query(&carol, b"private"), Err(Errno::EACCES));
        assert_eq!(d.find_for_query(&carol, b"nothing"), Err(Errno::ENOENT));
        // A per-user daemon's user sees all of its lockspaces.
        let mut u = Devices::new(Scope::User, 16);
        u.create(&alice, 0, b"mine").expect("create");
        let (id, _, _) = u.open(&alice, 1, b"mine").expect("open");
        u.chmod(&alice, id, 0).expect("chmod");
        assert_eq!(u.query_lockspaces(&alice).len(), 1);
    }

    #[test]
    fn remove_waits_for_open_connections() {
        let (_, alice, _) = creds();
        let mut d = Devices::new(Scope::User, 16);
        let minor = d.create(&alice, 0, b"ls").expect("create");
        let (id, owner, m) = d.open(&alice, 5, b"ls").expect("open");
        assert_eq!(m, minor);
        let lkid = d
            .lock_command(id, owner, alice.pid, &lock(b"r", 5, 0))
            .expect("lock");
        assert!(lkid > 0);
        assert_eq!(d.remove(&alice, 1, 0, minor), Err(Errno::EBUSY));
        assert_eq!(d.remove(&alice, 1, 2, minor), Ok(Removal::Deferred(id)));
        assert!(
            d.query_lockspaces(&alice).is_empty(),
            "gone from the name table"
        );
        assert_eq!(d.open(&alice, 6, b"ls").err(), Some(Errno::ENOENT));
        // The old connection still works.
        assert!(d
            .lock_command(id, owner, alice.pid, &lock(b"s", 3, 0))
            .is_ok());
        assert_eq!(d.query_locks(id).map(|l| l.len()), Ok(2));
        // A new lockspace of the same name is a fresh one.
        let again = d.create(&alice, 0, b"ls").expect("create again");
        let list = d.query_lockspaces(&alice);
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].minor, list[0].locks), (again, 0));
        assert_eq!(d.close(id, 5, owner), vec![1]);
        assert!(d.lockspace(id).is_none());
    }

    #[test]
    fn create_counts_and_newexcl() {
        let (_, alice, _) = creds();
        let mut d = Devices::new(Scope::User, 16);
        let m = d.create(&alice, 0, b"ls").expect("create");
        let newexcl = LockspaceFlags::NEWEXCL.bits();
        assert_eq!(d.create(&alice, newexcl, b"ls"), Err(Errno::EEXIST));
        assert_eq!(d.create(&alice, 0, b"ls"), Ok(m));
        assert_eq!(d.query_lockspaces(&alice)[0].create_count, 2);
        assert_eq!(d.remove(&alice, 1, 0, m), Ok(Removal::Done));
        assert_eq!(d.query_lockspaces(&alice)[0].create_count, 1);
        assert_eq!(d.remove(&alice, 1, 0, m), Ok(Removal::Done));
        assert!(d.query_lockspaces(&alice).is_empty());
    }

    #[test]
    fn long_names_are_refused_not_panicked_on() {
        let (_, alice, _) = creds();
        let mut d = Devices::new(Scope::User, 16);
        d.create(&alice, 0, b"ls").expect("create");
        let (id, owner, _) = d.open(&alice, 1, b"ls").expect("open");
        let mut req = dlm_proto::records::encode_lock(
            dlm_proto::records::Command::Lock,
            &match lock(b"r", 3, 0) {
                Request::Lock(r) => r,
                _ => unreachable!(),
            },
            dlm_proto::records::VERSION,
        )
        .as_bytes()
        .to_vec();
        req[17] = 200; // namelen
        let decoded = dlm_proto::records::decode_write(&req).expect("decodes");
        assert_eq!(
            d.lock_command(id, owner, 1, &decoded.request),
            Err(Errno::EINVAL)
        );
        let adopt = match decoded.request {
            Request::Lock(mut r) => {
                r.flags |= LockFlags::ORPHAN.bits();
                Request::Lock(r)
            }
            _ => unreachable!(),
        };
        assert_eq!(d.lock_command(id, owner, 1, &adopt), Err(Errno::ENOENT));
    }

    #[test]
    fn queries_report_locks() {
        let (_, alice, _) = creds();
        let mut d = Devices::new(Scope::User, 16);
        d.create(&alice, 0, b"ls").expect("create");
        let (id, owner, _) = d.open(&alice, 1, b"ls").expect("open");
        let lkid = d
            .lock_command(id, owner, 77, &lock(b"a\0b", 5, 0))
            .expect("lock");
        let locks = d.query_locks(id).expect("query");
        assert_eq!(locks.len(), 1);
        let l = &locks[0];
        assert_eq!(i64::from(l.lkid), lkid);
        assert_eq!(l.resource, "a\\x00b");
        assert_eq!(l.resource_hex, "610062");
        assert_eq!(l.granted.as_deref(), Some("EX"));
        assert_eq!(l.queue.as_deref(), Some("granted"));
        assert_eq!((l.pid, l.orphan), (77, false));
        let ls = d.query_lockspaces(&alice);
        assert_eq!((ls[0].locks, ls[0].connections, ls[0].mode), (1, 1, 0o600));
    }
}
