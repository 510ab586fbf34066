//! Storage: the arenas that hold locks, resources and owners, the lock id
//! allocator, the resource table with its toss list, and the intrusive
//! lists that tie locks to resource queues and owners.
//!
//! The kernel keeps locks in an idr keyed by lock id (`ls_lkbidr`,
//! `create_lkb` and `__put_lkb` in `fs/dlm/lock.c`), resources in a hash
//! table with a toss list for the unused ones (`find_rsb`, `toss_rsb`,
//! `shrink_bucket`), and links them with `list_head`s. Here a lock id is
//! an index into `Engine::locks`, a free id comes back lowest first, and
//! the links are indexes stored in the locks.

use std::cmp::Reverse;

use dlm_proto::error::Errno;
use dlm_proto::name::RESNAME_MAXLEN;

use crate::internal::{
    CbArray, Links, List, Lkb, Lkid, Name, Proc, Rsb, StoredArgs, IFL_ON_OWNQ, NIL, STS_NONE,
};
use crate::tables::IV;
use crate::{Engine, KernelModel, TOSS_KEEP};

/// Which of its two sets of links a list runs through: the resource
/// queue (`lkb_statequeue`) or the owner list (`lkb_ownqueue`).
#[derive(Clone, Copy)]
pub(crate) enum Chain {
    Queue,
    Own,
}

/// One list: a resource's grant, convert or wait queue, an owner's lock
/// or unlocking list, or the orphan list.
#[derive(Clone, Copy)]
pub(crate) enum Which {
    Grant(u32),
    Convert(u32),
    Wait(u32),
    Locks(u32),
    Unlocking(u32),
    Orphans,
}

impl Engine {
    // Lock ids and lock lifetime (`create_lkb`, `find_lkb`, `__put_lkb`).

    /// `create_lkb`: a new lock for owner `owner` with one reference, under
    /// the lowest free lock id (the kernel's `idr_alloc` from 1).
    pub(crate) fn create_lkb(&mut self, owner: u32) -> Lkid {
        let id = loop {
            match self.free_ids.pop() {
                // An id that a replay took while it was free is still in
                // the heap: skip it (see `create_lkb_at`).
                Some(Reverse(id)) if self.locks[id as usize].is_some() => continue,
                Some(Reverse(id)) => break id,
                None => {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.locks.push(None);
                    break id;
                }
            }
        };
        self.init_lkb(id, owner);
        id
    }

    /// A new lock for owner `owner` under the given id, which must be free
    /// and at most [`REPLAY_LKID_MAX`](crate::REPLAY_LKID_MAX) (the caller
    /// checks). The id allocator never hands the id out while the lock
    /// lives: an id above every id handed out so far moves the allocator
    /// past it, and the ids skipped on the way become free ones; an id in
    /// the free heap stays there, and `create_lkb` skips it while it is in
    /// use (a heap has no cheap removal, and this keeps `create_lkb` as it
    /// was but for one test of a slot it is about to fill anyway).
    pub(crate) fn create_lkb_at(&mut self, id: Lkid, owner: u32) {
        debug_assert!(id != NIL && id <= crate::REPLAY_LKID_MAX);
        if id >= self.next_id {
            self.free_ids.extend((self.next_id..id).map(Reverse));
            self.locks.resize_with(id as usize + 1, || None);
            self.next_id = id + 1;
        }
        debug_assert!(self.locks[id as usize].is_none(), "lock id {id} is free");
        self.init_lkb(id, owner);
    }

    /// Whether lock id `id` names a lock.
    pub(crate) fn lkid_in_use(&self, id: u32) -> bool {
        matches!(self.locks.get(id as usize), Some(Some(_)))
    }

    fn init_lkb(&mut self, id: Lkid, owner: u32) {
        self.locks[id as usize] = Some(Lkb {
            rsb: u32::MAX,
            owner,
            grmode: IV,
            rqmode: IV,
            highbast: 0,
            status: STS_NONE,
            sbflags: 0,
            iflags: 0,
            refs: 1,
            // 6.1's lkb_last_cast is a zeroed struct (mode NL); 6.12's
            // _create_lkb sets lkb_last_cast_cb_mode and lkb_last_cb_mode
            // to DLM_LOCK_IV.
            last_cast_mode: match self.model {
                KernelModel::V6_1 => 0,
                KernelModel::V6_12 => IV,
            },
            last_cb_mode: IV,
            lksb_flags: 0,
            exflags: 0,
            lksb_status: 0,
            pid: 0,
            cb_slot: NIL,
            q: Links::default(),
            own: Links::default(),
            ua: StoredArgs::default(),
            lvb: None,
        });
        self.live_locks += 1;
    }

    /// The reference `find_lkb` takes for the length of an unlock or
    /// cancel, dropped with `put_lkb` (`dlm_put_lkb`) at the end: the lock
    /// may have lost every other reference by then (a dead lock's
    /// callbacks are never queued), and that last put frees it.
    pub(crate) fn hold_lkb(&mut self, id: Lkid) {
        self.lk_mut(id).refs += 1;
    }

    pub(crate) fn find_lkb(&self, lkid: u32) -> Result<Lkid, Errno> {
        match self.locks.get(lkid as usize) {
            Some(Some(_)) => Ok(lkid),
            _ => Err(Errno::ENOENT),
        }
    }

    /// Drop one reference; the last one frees the lock id and detaches the
    /// lock from its resource.
    pub(crate) fn put_lkb(&mut self, id: Lkid) {
        let lkb = self.lk_mut(id);
        debug_assert!(lkb.refs > 0, "lock {id} over-released");
        lkb.refs = lkb.refs.saturating_sub(1);
        if lkb.refs > 0 {
            return;
        }
        let r = lkb.rsb;
        if let Some(slot) = Some(lkb.cb_slot).filter(|&s| s != NIL) {
            self.cbs[slot as usize] = CbArray::default();
            self.free_cbs.push(slot);
        }
        self.locks[id as usize] = None;
        self.live_locks -= 1;
        self.free_ids.push(Reverse(id));
        if r != u32::MAX {
            self.put_rsb(r);
        }
    }

    /// Give back what the arenas hold beyond their live entries: the
    /// lock and resource slots past the last one in use, and the spare
    /// capacity of every table. For a daemon once a burst is over; it
    /// changes nothing that can be seen: a lock id still comes back
    /// lowest free first (the ids dropped were free and above every id
    /// in use, so the next one handed out is the same), and resource and
    /// owner slots are internal.
    pub fn compact(&mut self) {
        while self.locks.len() > 1 && self.locks.last().is_some_and(Option::is_none) {
            self.locks.pop();
        }
        self.next_id = self.locks.len() as u32;
        let (locks, next) = (&self.locks, self.next_id);
        // Duplicates (ids a replay took while free) and ids past the end
        // go; each free id below the end is there once.
        let mut seen = std::collections::HashSet::new();
        self.free_ids
            .retain(|&Reverse(id)| id < next && locks[id as usize].is_none() && seen.insert(id));
        self.locks.shrink_to_fit();
        self.free_ids.shrink_to_fit();

        while self.rsbs.last().is_some_and(Option::is_none) {
            self.rsbs.pop();
        }
        let n = self.rsbs.len() as u32;
        self.free_rsbs.retain(|&r| r < n);
        self.rsbs.shrink_to_fit();
        self.free_rsbs.shrink_to_fit();
        let (rsbs, hasher) = (&self.rsbs, &self.hasher);
        self.index.shrink_to_fit(|&i| {
            use std::hash::BuildHasher;
            rsbs[i as usize]
                .as_ref()
                .map_or(0, |x| hasher.hash_one(x.name.as_bytes()))
        });
        self.toss.shrink_to_fit();

        if self.free_cbs.len() == self.cbs.len() {
            self.cbs = Vec::new();
            self.free_cbs = Vec::new();
        }
        for p in self.procs.iter_mut().flatten() {
            p.asts.shrink_to_fit();
            p.records.shrink_to_fit();
        }
        self.procs.shrink_to_fit();
        self.free_procs.shrink_to_fit();
    }

    // Resources (`find_rsb`, `put_rsb`, the toss list).

    pub(crate) fn hash_name(&self, name: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(name)
    }

    pub(crate) fn find_rsb(&self, name: &[u8]) -> Option<u32> {
        let h = self.hash_name(name);
        let rsbs = &self.rsbs;
        self.index
            .find(h, |&i| {
                rsbs[i as usize]
                    .as_ref()
                    .is_some_and(|r| r.name.as_bytes() == name)
            })
            .copied()
    }

    /// `find_rsb(R_REQUEST)`: the resource, created or revived from the
    /// toss list as needed. A request and a replay both call this; the
    /// creation is a call of its own, so that the lookup stays inlined in
    /// the request path as it was when the request was the only caller
    /// (measured with cachegrind: without the split, a lock+unlock took
    /// some 30 more instructions).
    #[inline]
    pub(crate) fn get_rsb(&mut self, name: &[u8]) -> u32 {
        debug_assert!(name.len() <= RESNAME_MAXLEN);
        if let Some(r) = self.find_rsb(name) {
            if self.rsb(r).refs == 0 {
                self.tossed -= 1;
            }
            return r;
        }
        self.new_rsb(name)
    }

    /// A new resource named `name`, with no locks, in the table.
    #[inline(never)]
    fn new_rsb(&mut self, name: &[u8]) -> u32 {
        let hash = self.hash_name(name);
        let rsb = Rsb {
            name: Name::new(name),
            grant: List::default(),
            convert: List::default(),
            wait: List::default(),
            lvb: None,
            refs: 0,
            valnotvalid: false,
            in_toss_queue: false,
            recover_grant: false,
        };
        let r = match self.free_rsbs.pop() {
            Some(r) => {
                self.rsbs[r as usize] = Some(rsb);
                r
            }
            None => {
                self.rsbs.push(Some(rsb));
                (self.rsbs.len() - 1) as u32
            }
        };
        let (rsbs, hasher) = (&self.rsbs, &self.hasher);
        self.index.insert_unique(hash, r, |&i| {
            use std::hash::BuildHasher;
            rsbs[i as usize]
                .as_ref()
                .map_or(0, |x| hasher.hash_one(x.name.as_bytes()))
        });
        r
    }

    /// Drop a lock's hold on a resource; the last one tosses it, which
    /// frees its value block.
    pub(crate) fn put_rsb(&mut self, r: u32) {
        let rsb = self.rsb_mut(r);
        rsb.refs -= 1;
        if rsb.refs > 0 {
            return;
        }
        rsb.lvb = None;
        if !rsb.in_toss_queue {
            rsb.in_toss_queue = true;
            self.toss.push_back(r);
        }
        self.tossed += 1;
        // Forget the oldest tossed resources beyond the limit. Every tossed
        // resource has exactly one queue entry; an entry whose resource
        // was revived since is dropped when it comes up (so a resource
        // tossed, revived and tossed again may go a little early).
        while self.tossed > TOSS_KEEP {
            let Some(old) = self.toss.pop_front() else {
                break;
            };
            let rsb = self.rsb_mut(old);
            rsb.in_toss_queue = false;
            if rsb.refs == 0 {
                self.free_rsb(old);
            }
        }
    }

    pub(crate) fn free_rsb(&mut self, r: u32) {
        let Some(rsb) = self.rsbs[r as usize].take() else {
            return;
        };
        let hash = self.hash_name(rsb.name.as_bytes());
        if let Ok(entry) = self.index.find_entry(hash, |&i| i == r) {
            entry.remove();
        }
        self.tossed -= 1;
        self.free_rsbs.push(r);
    }

    // Intrusive lists: every list runs through links in the locks
    // themselves, as the kernel's `list_head`s do.

    pub(crate) fn list(&mut self, which: Which) -> &mut List {
        match which {
            Which::Grant(r) => &mut self.rsb_mut(r).grant,
            Which::Convert(r) => &mut self.rsb_mut(r).convert,
            Which::Wait(r) => &mut self.rsb_mut(r).wait,
            Which::Locks(o) => &mut self.proc_mut(o).locks,
            Which::Unlocking(o) => &mut self.proc_mut(o).unlocking,
            Which::Orphans => &mut self.orphans,
        }
    }

    pub(crate) fn links(&mut self, id: Lkid, chain: Chain) -> &mut Links {
        let lkb = self.lk_mut(id);
        match chain {
            Chain::Queue => &mut lkb.q,
            Chain::Own => &mut lkb.own,
        }
    }

    pub(crate) fn list_push_back(&mut self, which: Which, chain: Chain, id: Lkid) {
        let tail = self.list(which).tail;
        *self.links(id, chain) = Links {
            prev: tail,
            next: NIL,
        };
        if tail == NIL {
            self.list(which).head = id;
        } else {
            self.links(tail, chain).next = id;
        }
        self.list(which).tail = id;
        if let Chain::Own = chain {
            self.lk_mut(id).iflags |= IFL_ON_OWNQ;
        }
    }

    pub(crate) fn list_push_front(&mut self, which: Which, chain: Chain, id: Lkid) {
        let head = self.list(which).head;
        if head == NIL {
            self.list_push_back(which, chain, id);
            return;
        }
        self.list_insert_before(which, chain, head, id);
    }

    pub(crate) fn list_insert_before(&mut self, which: Which, chain: Chain, at: Lkid, id: Lkid) {
        let prev = self.links(at, chain).prev;
        *self.links(id, chain) = Links { prev, next: at };
        self.links(at, chain).prev = id;
        if prev == NIL {
            self.list(which).head = id;
        } else {
            self.links(prev, chain).next = id;
        }
        if let Chain::Own = chain {
            self.lk_mut(id).iflags |= IFL_ON_OWNQ;
        }
    }

    pub(crate) fn list_remove(&mut self, which: Which, chain: Chain, id: Lkid) {
        let Links { prev, next } = *self.links(id, chain);
        if prev == NIL {
            self.list(which).head = next;
        } else {
            self.links(prev, chain).next = next;
        }
        if next == NIL {
            self.list(which).tail = prev;
        } else {
            self.links(next, chain).prev = prev;
        }
        *self.links(id, chain) = Links::default();
        if let Chain::Own = chain {
            self.lk_mut(id).iflags &= !IFL_ON_OWNQ;
        }
    }

    // Accessors. Ids handed to these always name live entries: they come
    // from the engine's own lists, never straight from a caller.

    pub(crate) fn lk(&self, id: Lkid) -> &Lkb {
        match self.locks.get(id as usize) {
            Some(Some(l)) => l,
            _ => unreachable!("engine invariant: lock {id} is live"),
        }
    }

    pub(crate) fn lk_mut(&mut self, id: Lkid) -> &mut Lkb {
        match self.locks.get_mut(id as usize) {
            Some(Some(l)) => l,
            _ => unreachable!("engine invariant: lock {id} is live"),
        }
    }

    pub(crate) fn rsb(&self, r: u32) -> &Rsb {
        match self.rsbs.get(r as usize) {
            Some(Some(x)) => x,
            _ => unreachable!("engine invariant: resource {r} is live"),
        }
    }

    pub(crate) fn rsb_mut(&mut self, r: u32) -> &mut Rsb {
        match self.rsbs.get_mut(r as usize) {
            Some(Some(x)) => x,
            _ => unreachable!("engine invariant: resource {r} is live"),
        }
    }

    pub(crate) fn proc(&self, o: u32) -> &Proc {
        match self.procs.get(o as usize) {
            Some(Some(p)) => p,
            _ => unreachable!("engine invariant: owner {o} is open"),
        }
    }

    pub(crate) fn proc_mut(&mut self, o: u32) -> &mut Proc {
        match self.procs.get_mut(o as usize) {
            Some(Some(p)) => p,
            _ => unreachable!("engine invariant: owner {o} is open"),
        }
    }
}
