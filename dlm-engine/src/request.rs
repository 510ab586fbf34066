//! The request and conversion paths, after `fs/dlm/lock.c`:
//! `dlm_user_request` and `dlm_user_convert` with their argument checks
//! (`set_lock_args`, `validate_lock_args`), then `do_request` and
//! `do_convert` (grant now, queue, or refuse) and their effects
//! (`do_request_effects`, `do_convert_effects`: blocking ASTs, and the
//! pending grants a conversion down can allow).

use dlm_proto::error::Errno;
use dlm_proto::flags::{LockFlags, StatusFlags};
use dlm_proto::mode::LockMode;
use dlm_proto::name::RESNAME_MAXLEN;

use crate::internal::{Lkid, IFL_ON_OWNQ, STS_CONVERT, STS_GRANTED, STS_WAITING};
use crate::store::{Chain, Which};
use crate::tables::{quecvt_ok, IV};
use crate::{Engine, LockParams, LVB_LEN};

impl Engine {
    /// `dlm_user_request`: a new lock on `p.name`, queued or granted by
    /// `do_request`. A request refused with `EAGAIN` is on no owner list:
    /// only its completion holds it.
    pub(crate) fn user_request(&mut self, o: u32, p: &LockParams<'_>) -> Result<u32, Errno> {
        let id = self.create_lkb(o);
        if p.flags & LockFlags::VALBLK.bits() != 0 {
            self.lk_mut(id).lvb = Some(Box::new([0; LVB_LEN]));
        }
        if let Err(e) = set_lock_args(p.mode, p.flags, p.name.len()) {
            self.put_lkb(id);
            return Err(e);
        }
        {
            let lkb = self.lk_mut(id);
            lkb.ua = p.args.into();
            // validate_lock_args for a new request.
            lkb.exflags = p.flags;
            lkb.sbflags = 0;
            lkb.rqmode = p.mode as i8;
            lkb.pid = p.pid;
            lkb.attach_lvb();
        }
        let r = self.get_rsb(p.name);
        self.lk_mut(id).rsb = r;
        self.rsb_mut(r).refs += 1;
        let error = self.do_request(r, id);
        self.do_request_effects(r, id, error);
        if error == -libc::EAGAIN {
            // Not added to the owner's list; the callback holds it.
            self.put_lkb(id);
        } else {
            self.lk_mut(id).refs += 1;
            self.list_push_back(Which::Locks(o), Chain::Own, id);
            self.lk_mut(id).iflags |= IFL_ON_OWNQ;
        }
        Ok(id)
    }

    /// `dlm_user_convert`: convert lock `p.lkid` with `do_convert`.
    pub(crate) fn user_convert(&mut self, p: &LockParams<'_>) -> Result<(), Errno> {
        let id = self.find_lkb(p.lkid)?;
        // The kernel updates the lock's user arguments and value block
        // before it checks the request, so a refused conversion still
        // changes them.
        {
            let lkb = self.lk_mut(id);
            if p.flags & LockFlags::VALBLK.bits() != 0 && lkb.lvb.is_none() {
                lkb.lvb = Some(Box::new([0; LVB_LEN]));
            }
            if let Some(buf) = lkb.lvb.as_deref_mut() {
                *buf = p.lvb;
            }
            lkb.ua = p.args.into();
        }
        set_lock_args(p.mode, p.flags, 0)?;
        // validate_lock_args for a conversion.
        {
            let lkb = self.lk(id);
            if lkb.status != STS_GRANTED {
                return Err(Errno::EBUSY);
            }
            if p.flags & LockFlags::QUECVT.bits() != 0 && !quecvt_ok(lkb.grmode, p.mode as i8) {
                return Err(Errno::EINVAL);
            }
        }
        {
            let lkb = self.lk_mut(id);
            lkb.exflags = p.flags;
            lkb.sbflags = 0;
            lkb.rqmode = p.mode as i8;
            lkb.pid = p.pid;
            lkb.attach_lvb();
        }
        let r = self.lk(id).rsb;
        let error = self.do_convert(r, id);
        self.do_convert_effects(r, id, error);
        Ok(())
    }

    fn do_request(&mut self, r: u32, id: Lkid) -> i32 {
        if self.can_be_granted(r, id, true, None) {
            self.grant_lock(r, id);
            self.queue_cast(id, 0);
            return 0;
        }
        if self.can_be_queued(id) {
            self.add_lkb(r, id, STS_WAITING);
            return -libc::EINPROGRESS;
        }
        self.queue_cast(id, -libc::EAGAIN);
        -libc::EAGAIN
    }

    fn do_request_effects(&mut self, r: u32, id: Lkid, error: i32) {
        if error == -libc::EAGAIN {
            if self.force_blocking_asts(id) {
                self.send_blocking_asts_all(r, id);
            }
        } else if error == -libc::EINPROGRESS {
            self.send_blocking_asts(r, id);
        }
    }

    fn do_convert(&mut self, r: u32, id: Lkid) -> i32 {
        let mut deadlk = false;
        if self.can_be_granted(r, id, true, Some(&mut deadlk)) {
            self.grant_lock(r, id);
            self.queue_cast(id, 0);
            return 0;
        }
        if deadlk && self.lk(id).exflags & LockFlags::NODLCKWT.bits() == 0 {
            // Left on the grant queue in its old mode.
            self.revert_lock(r, id);
            self.queue_cast(id, -libc::EDEADLK);
            return -libc::EDEADLK;
        }
        if self.lk(id).sbflags & StatusFlags::DEMOTED.bits() != 0 {
            self.grant_pending_convert(r, IV, None);
            if self._can_be_granted(r, id, true) {
                self.grant_lock(r, id);
                self.queue_cast(id, 0);
                return 0;
            }
        }
        if self.can_be_queued(id) {
            self.del_lkb(r, id);
            self.add_lkb(r, id, STS_CONVERT);
            return -libc::EINPROGRESS;
        }
        self.queue_cast(id, -libc::EAGAIN);
        -libc::EAGAIN
    }

    fn do_convert_effects(&mut self, r: u32, id: Lkid, error: i32) {
        if error == 0 {
            self.grant_pending_locks(r);
        } else if error == -libc::EAGAIN {
            if self.force_blocking_asts(id) {
                self.send_blocking_asts_all(r, id);
            }
        } else if error == -libc::EINPROGRESS {
            self.send_blocking_asts(r, id);
        }
    }

    pub(crate) fn can_be_queued(&self, id: Lkid) -> bool {
        self.lk(id).exflags & LockFlags::NOQUEUE.bits() == 0
    }

    fn force_blocking_asts(&self, id: Lkid) -> bool {
        self.lk(id).exflags & LockFlags::NOQUEUEBAST.bits() != 0
    }
}

/// `set_lock_args` as reached from userspace, where the AST function and
/// status block always exist (the device checked the user's pointers).
fn set_lock_args(mode: u8, flags: u32, namelen: usize) -> Result<(), Errno> {
    let has = |f: LockFlags| flags & f.bits() != 0;
    let bad = mode > LockMode::Ex as u8
        || (!has(LockFlags::CONVERT) && namelen > RESNAME_MAXLEN)
        || has(LockFlags::CANCEL)
        || (has(LockFlags::QUECVT) && !has(LockFlags::CONVERT))
        || (has(LockFlags::CONVDEADLK) && !has(LockFlags::CONVERT))
        || (has(LockFlags::CONVDEADLK) && has(LockFlags::NOQUEUE))
        || (has(LockFlags::EXPEDITE) && has(LockFlags::CONVERT))
        || (has(LockFlags::EXPEDITE) && has(LockFlags::QUECVT))
        || (has(LockFlags::EXPEDITE) && has(LockFlags::NOQUEUE))
        || (has(LockFlags::EXPEDITE) && mode != LockMode::Nl as u8);
    if bad {
        Err(Errno::EINVAL)
    } else {
        Ok(())
    }
}
