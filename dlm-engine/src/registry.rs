//! Lockspace lifetime: create counts, `NEWEXCL`, and release.
//!
//! This mirrors `fs/dlm/lockspace.c` as reached through the control
//! device: creating an existing lockspace adds to its create count (or
//! fails with `EEXIST` under `NEWEXCL`); releasing subtracts, and only the
//! last release removes it, which without force fails with `EBUSY` while
//! any lock exists in it (orphans and unread ended locks included).

use std::collections::{BTreeMap, HashMap};

use super::{Engine, KernelModel};
use dlm_proto::error::Errno;
use dlm_proto::flags::LockspaceFlags;
use dlm_proto::name::LockspaceName;

/// `DLM_LSFL_SOFTIRQ` (Linux 6.12 `include/linux/dlm.h`; in the uapi
/// header `__DLM_LSFL_RESERVED0`).
const LSFL_SOFTIRQ: u32 = 0x10;

/// A lockspace as the registry keeps it.
#[derive(Debug)]
pub struct Space {
    /// Its name.
    pub name: LockspaceName,
    /// Its lock state.
    pub engine: Engine,
    /// How many creates have not been released yet.
    pub create_count: u32,
    /// Flags given when it was first created.
    pub flags: LockspaceFlags,
}

/// What a release did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// Other creates remain; this many.
    StillCreated(u32),
    /// The lockspace is gone.
    Removed,
}

/// Every lockspace of a node, by name and by device minor.
#[derive(Debug, Default)]
pub struct Registry {
    spaces: BTreeMap<u32, Space>,
    by_name: HashMap<LockspaceName, u32>,
    next_minor: u32,
    model: KernelModel,
}

impl Registry {
    /// An empty registry whose lockspaces follow Linux 6.1.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// An empty registry whose lockspaces follow `model`.
    pub fn with_model(model: KernelModel) -> Registry {
        Registry {
            model,
            ..Registry::default()
        }
    }

    /// The kernel the lockspaces follow.
    pub fn model(&self) -> KernelModel {
        self.model
    }

    /// `DLM_USER_CREATE_LOCKSPACE`: returns the lockspace's minor, a
    /// small number that stays the same for as long as it exists.
    ///
    /// Under Linux 6.12, `DLM_LSFL_SOFTIRQ` (0x10, a flag for kernel users)
    /// is `EINVAL`; 6.1 has no such flag and keeps the bit.
    pub fn create(&mut self, name: &LockspaceName, flags: LockspaceFlags) -> Result<u32, Errno> {
        // 6.12's dlm_new_user_lockspace refuses DLM_LSFL_SOFTIRQ before
        // anything else; 6.1's dlm_new_user_lockspace checks no flags.
        if self.model == KernelModel::V6_12 && flags.bits() & LSFL_SOFTIRQ != 0 {
            return Err(Errno::EINVAL);
        }
        if let Some(&minor) = self.by_name.get(name) {
            if flags.contains(LockspaceFlags::NEWEXCL) {
                return Err(Errno::EEXIST);
            }
            if let Some(space) = self.spaces.get_mut(&minor) {
                space.create_count += 1;
            }
            return Ok(minor);
        }
        let minor = self.free_minor()?;
        self.spaces.insert(
            minor,
            Space {
                name: *name,
                engine: Engine::with_model(self.model),
                create_count: 1,
                flags: flags - LockspaceFlags::NEWEXCL,
            },
        );
        self.by_name.insert(*name, minor);
        Ok(minor)
    }

    fn free_minor(&mut self) -> Result<u32, Errno> {
        for _ in 0..=self.spaces.len() {
            let m = self.next_minor;
            self.next_minor = self.next_minor.wrapping_add(1);
            if !self.spaces.contains_key(&m) {
                return Ok(m);
            }
        }
        Err(Errno::ENOSPC)
    }

    /// `DLM_USER_REMOVE_LOCKSPACE` with or without `FORCEFREE`.
    pub fn release(&mut self, minor: u32, force: bool) -> Result<Released, Errno> {
        let space = self.spaces.get_mut(&minor).ok_or(Errno::ENOENT)?;
        if space.create_count > 1 {
            space.create_count -= 1;
            return Ok(Released::StillCreated(space.create_count));
        }
        if !force && space.engine.lock_count() > 0 {
            return Err(Errno::EBUSY);
        }
        let name = space.name;
        self.spaces.remove(&minor);
        self.by_name.remove(&name);
        Ok(Released::Removed)
    }

    /// The lockspace with this minor.
    pub fn get(&self, minor: u32) -> Option<&Space> {
        self.spaces.get(&minor)
    }

    /// The lockspace with this minor, mutably.
    pub fn get_mut(&mut self, minor: u32) -> Option<&mut Space> {
        self.spaces.get_mut(&minor)
    }

    /// The minor of the lockspace with this name.
    pub fn find(&self, name: &LockspaceName) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// Every lockspace, by minor.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Space)> {
        self.spaces.iter().map(|(m, s)| (*m, s))
    }

    /// [`Engine::compact`] every lockspace, and give back the name
    /// table's spare capacity.
    pub fn compact(&mut self) {
        for s in self.spaces.values_mut() {
            s.engine.compact();
        }
        self.by_name.shrink_to_fit();
    }

    /// The lockspaces whose minor is `first` or more, by minor.
    pub fn iter_from(&self, first: u32) -> impl Iterator<Item = (u32, &Space)> {
        self.spaces.range(first..).map(|(m, s)| (*m, s))
    }
}
