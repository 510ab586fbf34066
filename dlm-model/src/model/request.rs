//! Request and convert paths (`fs/dlm/lock.c` `do_request`,
//! `do_convert` and their effects; `fs/dlm/user.c` `dlm_user_request`,
//! `dlm_user_convert`, `dlm_user_adopt_orphan`): the device's lock
//! command.

use dlm_proto::records::LVB_LEN;
use dlm_proto::Errno;

use super::coverage::hit;
use super::tables::SBF_DEMOTED;
use super::tables::{ix, set_lock_args_ok, E_AGAIN, E_DEADLK, E_INPROGRESS, IV, QUECVT_OK};
use super::{MLock, Model, Req, St};
use crate::gen::flags::VALBLK;
use crate::gen::flags::{CONVERT, EXPEDITE, NODLCKWT, NOQUEUE, NOQUEUEBAST, ORPHAN, QUECVT};

impl Model {
    // ----- do_* and their effects -----

    pub(super) fn do_request(&mut self, r: usize, id: u32) -> i32 {
        if self.can_be_granted(r, id, true).0 {
            hit("request granted now");
            if self.lk(id).exflags & EXPEDITE != 0 {
                hit("EXPEDITE grant");
            }
            self.grant_lock(r, id);
            self.queue_cast(id, 0);
            return 0;
        }
        if self.lk(id).exflags & NOQUEUE == 0 {
            hit("request queued");
            self.add_lkb(r, id, St::Waiting);
            return E_INPROGRESS;
        }
        hit("request EAGAIN");
        self.queue_cast(id, E_AGAIN);
        E_AGAIN
    }

    pub(super) fn do_request_effects(&mut self, r: usize, id: u32, err: i32) {
        if err == E_AGAIN {
            if self.lk(id).exflags & NOQUEUEBAST != 0 {
                hit("NOQUEUEBAST blocking ASTs");
                self.send_blocking_asts_all(r, id);
            }
        } else if err == E_INPROGRESS {
            self.send_blocking_asts(r, id);
        }
    }

    pub(super) fn do_convert(&mut self, r: usize, id: u32) -> i32 {
        let (ok, deadlk) = self.can_be_granted(r, id, true);
        if ok {
            hit("conversion granted now");
            self.grant_lock(r, id);
            self.queue_cast(id, 0);
            return 0;
        }
        if deadlk && self.lk(id).exflags & NODLCKWT == 0 {
            hit("conversion EDEADLK");
            self.revert_lock(r, id);
            self.queue_cast(id, E_DEADLK);
            return E_DEADLK;
        }
        if self.lk(id).sbflags & SBF_DEMOTED != 0 {
            self.grant_pending_convert(r, IV, None);
            if self.can_be_granted_raw(r, id, true) {
                hit("demoted conversion granted after grant_pending_convert");
                self.grant_lock(r, id);
                self.queue_cast(id, 0);
                return 0;
            }
        }
        if self.lk(id).exflags & NOQUEUE == 0 {
            hit("conversion queued");
            self.del_lkb(r, id);
            self.add_lkb(r, id, St::Convert);
            return E_INPROGRESS;
        }
        self.queue_cast(id, E_AGAIN);
        E_AGAIN
    }

    pub(super) fn do_convert_effects(&mut self, r: usize, id: u32, err: i32) {
        if err == 0 {
            self.grant_pending_locks(r);
        } else if err == E_AGAIN {
            if self.lk(id).exflags & NOQUEUEBAST != 0 {
                self.send_blocking_asts_all(r, id);
            }
        } else if err == E_INPROGRESS {
            self.send_blocking_asts(r, id);
        }
    }

    // ----- the device's commands -----

    /// The device's lock command (`DLM_USER_LOCK`) from proc `p`: a
    /// request, a conversion (CONVERT) or an adoption (ORPHAN). The lock
    /// id, or the errno `write()` fails with.
    pub fn lock(&mut self, p: usize, q: &Req) -> Result<u32, Errno> {
        if !self.is_open(p) {
            return Err(Errno::EBADF);
        }
        if q.args.castaddr == 0 || q.args.lksb == 0 {
            return Err(Errno::EINVAL);
        }
        let rv = if q.flags & CONVERT != 0 {
            self.user_convert(q).map(|()| 0)
        } else if q.flags & ORPHAN != 0 {
            self.user_adopt(p, q)
        } else {
            self.user_request(p, q)
        };
        self.collect();
        rv
    }

    pub(super) fn user_request(&mut self, p: usize, q: &Req) -> Result<u32, Errno> {
        let id = (1u32..)
            .find(|i| !self.locks.contains_key(i))
            .expect("a free id");
        if !set_lock_args_ok(q.mode, q.flags, q.name.len()) {
            return Err(Errno::EINVAL);
        }
        let r = self.find_or_create_res(&q.name);
        self.locks.insert(
            id,
            MLock {
                res: r,
                owner: p,
                orphan: false,
                dead: false,
                endoflife: false,
                deadlock_cancel: false,
                status: St::None,
                grmode: IV,
                rqmode: q.mode as i8,
                highbast: 0,
                exflags: q.flags,
                sbflags: 0,
                pid: q.pid,
                ua: q.args.into(),
                lvb: (q.flags & VALBLK != 0).then_some([0; LVB_LEN]),
                lvb_attached: q.flags & VALBLK != 0,
                sb_status: 0,
                sb_flags: 0,
                last_cast: None,
                cbs: Vec::new(),
                last_cast_queued: IV,
                last_cb: None,
            },
        );
        let err = self.do_request(r, id);
        self.do_request_effects(r, id, err);
        if err != E_AGAIN {
            self.proc_mut(p).locks.push(id);
        }
        Ok(id)
    }

    pub(super) fn user_convert(&mut self, q: &Req) -> Result<(), Errno> {
        let id = q.lkid;
        let Some(l) = self.locks.get_mut(&id) else {
            return Err(Errno::ENOENT);
        };
        // The user's arguments and value block are taken before any check.
        if q.flags & VALBLK != 0 && l.lvb.is_none() {
            l.lvb = Some([0; LVB_LEN]);
        }
        if let Some(b) = l.lvb.as_mut() {
            *b = q.lvb;
        }
        l.ua = q.args.into();
        if !set_lock_args_ok(q.mode, q.flags, 0) {
            return Err(Errno::EINVAL);
        }
        if l.status != St::Granted {
            return Err(Errno::EBUSY);
        }
        if q.flags & QUECVT != 0 && QUECVT_OK[ix(l.grmode)][ix(q.mode as i8)] == 0 {
            return Err(Errno::EINVAL);
        }
        l.exflags = q.flags;
        l.sbflags = 0;
        l.rqmode = q.mode as i8;
        l.pid = q.pid;
        l.lvb_attached |= l.lvb.is_some();
        let r = l.res;
        let err = self.do_convert(r, id);
        self.do_convert_effects(r, id, err);
        Ok(())
    }

    pub(super) fn user_adopt(&mut self, p: usize, q: &Req) -> Result<u32, Errno> {
        let mut other_mode = false;
        for id in self.orphans.clone() {
            let l = self.lk(id);
            if self.res[l.res].name != q.name {
                continue;
            }
            if i32::from(l.grmode) != i32::from(q.mode) {
                other_mode = true;
                continue;
            }
            hit("orphan adopted");
            self.orphans.retain(|&x| x != id);
            let l = self.lkm(id);
            l.orphan = false;
            l.exflags = q.flags;
            l.pid = q.pid;
            l.owner = p;
            l.ua = q.args.into();
            self.proc_mut(p).locks.push(id);
            return Ok(id);
        }
        if other_mode {
            hit("adoption EAGAIN");
        }
        Err(if other_mode {
            Errno::EAGAIN
        } else {
            Errno::ENOENT
        })
    }
}
