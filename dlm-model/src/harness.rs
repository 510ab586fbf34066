//! The engine and the model side by side: one [`World`] holds an engine
//! and a model with the same owner slots, runs every operation of a case
//! on both, and compares everything observable after each step: the
//! `write()` result, the record of every read, the `locks()` snapshot,
//! the callbacks-pending flag of every owner, the resource value blocks
//! and the lock and resource counts.
//!
//! This is the driving side, the only part of the comparison that calls
//! the engine; the model never sees what the engine did. Each world runs
//! one kernel model on both sides ([`World::with_model`]);
//! [`check_case`] runs a case under each in turn.

use std::fmt::Write as _;

use dlm_engine::{Engine, KernelModel, LockParams, OwnerId, UnlockParams};
use dlm_proto::records::AstRecord;
use dlm_proto::{Errno, LockMode};

use crate::gen::{first_pid, lock_pid, lvb_bytes, purge_pid, reopen_pid, user_args};
use crate::gen::{Case, LockSel, Op, NAMES};
use crate::model::{self, Kernel, Model, Req};
use crate::report::{Failure, Stage};

/// One owner slot: its engine owner and model proc.
#[derive(Clone, Copy, Debug)]
struct Slot {
    open: bool,
    eng: OwnerId,
    model: usize,
    pid: u32,
}

/// An engine and a model with the same owner slots.
pub struct World {
    e: Engine,
    m: Model,
    slots: Vec<Slot>,
    /// Every pid ever used by a slot, for purges of orphans.
    pids: Vec<u32>,
}

/// What one step returned, on either side.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// A request, conversion or adoption: the lock id, or the errno.
    Lock(Result<u32, Errno>),
    /// An unlock, cancel, deadlock cancel, purge or close.
    Unit(Result<(), Errno>),
    /// The records read.
    Reads(Vec<AstRecord>),
    /// Nothing was run (an open of an open slot, or a closed slot whose
    /// engine owner id an open slot has since been given).
    Skipped,
}

impl World {
    /// A fresh engine and model following Linux 6.1, with `slots` owners
    /// open on each (pids [`first_pid`]).
    pub fn new(slots: u8) -> World {
        World::with_model(slots, KernelModel::V6_1)
    }

    /// The same, both following `kernel`.
    pub fn with_model(slots: u8, kernel: KernelModel) -> World {
        let mut w = World {
            e: Engine::with_model(kernel),
            m: Model::new(match kernel {
                KernelModel::V6_1 => Kernel::V6_1,
                KernelModel::V6_12 => Kernel::V6_12,
            }),
            slots: Vec::new(),
            pids: Vec::new(),
        };
        for s in 0..slots {
            let pid = first_pid(s);
            let eng = w.e.open_owner(pid);
            let model = w.m.open();
            w.slots.push(Slot {
                open: true,
                eng,
                model,
                pid,
            });
            w.pids.push(pid);
        }
        w
    }

    /// The slot's owners, unless the slot is closed and its engine id
    /// has been reused by an open slot (then the step is skipped).
    fn owners(&self, slot: u8) -> Option<Slot> {
        let s = self.slots[usize::from(slot)];
        if !s.open && self.slots.iter().any(|o| o.open && o.eng == s.eng) {
            return None;
        }
        Some(s)
    }

    fn resolve(&self, sel: LockSel) -> u32 {
        sel.resolve(self.m.lock_ids())
    }

    fn req_pid(&self, s: &Slot, sel: u8) -> u32 {
        lock_pid(sel, s.pid, &self.pids)
    }

    /// Runs one operation on both sides; what the engine returned, then
    /// what the model did.
    ///
    /// # Panics
    ///
    /// If `op` names a slot the world was not made with
    /// ([`check_case`] refuses such a case instead).
    pub fn step(&mut self, op: &Op) -> (Outcome, Outcome) {
        match *op {
            Op::Open { slot, new_pid } => {
                let s = &mut self.slots[usize::from(slot)];
                if s.open {
                    return (Outcome::Skipped, Outcome::Skipped);
                }
                let pid = reopen_pid(s.pid, new_pid);
                s.pid = pid;
                s.eng = self.e.open_owner(pid);
                s.model = self.m.open();
                s.open = true;
                self.pids.push(pid);
                (Outcome::Skipped, Outcome::Skipped)
            }
            Op::Close { slot } => {
                let Some(s) = self.owners(slot) else {
                    return (Outcome::Skipped, Outcome::Skipped);
                };
                let a = self.e.close_owner(s.eng);
                let b = self.m.close(s.model);
                self.slots[usize::from(slot)].open = false;
                (Outcome::Unit(a), Outcome::Unit(b))
            }
            Op::Request {
                slot,
                mode,
                name,
                flags,
                args,
                pid,
            } => {
                let Some(s) = self.owners(slot) else {
                    return (Outcome::Skipped, Outcome::Skipped);
                };
                let q = Req {
                    mode,
                    flags,
                    lkid: 0,
                    name: NAMES[usize::from(name)].to_vec(),
                    lvb: lvb_bytes(0xEE),
                    args: user_args(args),
                    pid: self.req_pid(&s, pid),
                };
                self.lock_both(&s, &q)
            }
            Op::Convert {
                slot,
                lock,
                mode,
                flags,
                lvb,
                args,
                pid,
            } => {
                let Some(s) = self.owners(slot) else {
                    return (Outcome::Skipped, Outcome::Skipped);
                };
                let q = Req {
                    mode,
                    flags,
                    lkid: self.resolve(lock),
                    name: Vec::new(),
                    lvb: lvb_bytes(lvb),
                    args: user_args(args),
                    pid: self.req_pid(&s, pid),
                };
                self.lock_both(&s, &q)
            }
            Op::Adopt {
                slot,
                name,
                mode,
                match_orphan,
                flags,
                args,
            } => {
                let Some(s) = self.owners(slot) else {
                    return (Outcome::Skipped, Outcome::Skipped);
                };
                let name_bytes = NAMES[usize::from(name)];
                let orphan_mode = self.m.orphan_mode(name_bytes);
                let q = Req {
                    mode: match (match_orphan, orphan_mode) {
                        (true, Some(m)) => m,
                        _ => mode,
                    },
                    flags,
                    lkid: 0,
                    name: NAMES[usize::from(name)].to_vec(),
                    lvb: lvb_bytes(0xAD),
                    args: user_args(args),
                    pid: s.pid,
                };
                self.lock_both(&s, &q)
            }
            Op::Unlock {
                slot,
                lock,
                flags,
                lvb,
                args,
            } => self.unlock_both(slot, lock, flags, lvb, args),
            Op::Cancel {
                slot,
                lock,
                flags,
                args,
            } => self.unlock_both(slot, lock, flags, 0x11, args),
            Op::Deadlock { slot, lock, flags } => {
                let Some(s) = self.owners(slot) else {
                    return (Outcome::Skipped, Outcome::Skipped);
                };
                let lkid = self.resolve(lock);
                let a = self.e.deadlock_cancel(s.eng, lkid, flags);
                let b = self.m.deadlock(s.model, lkid, flags);
                (Outcome::Unit(a), Outcome::Unit(b))
            }
            Op::Purge { slot, node, pid } => {
                let Some(s) = self.owners(slot) else {
                    return (Outcome::Skipped, Outcome::Skipped);
                };
                let target = purge_pid(pid, s.pid, &self.pids);
                let node = u32::from(node);
                let a = self.e.purge(s.eng, node, target, s.pid);
                let b = self.m.purge(s.model, node, target, s.pid);
                (Outcome::Unit(a), Outcome::Unit(b))
            }
            Op::Read { slot, .. } | Op::Drain { slot } => {
                let Some(s) = self.owners(slot) else {
                    return (Outcome::Skipped, Outcome::Skipped);
                };
                let max = match *op {
                    Op::Read { n, .. } => n,
                    _ => 64,
                };
                let (mut a, mut b) = (Vec::new(), Vec::new());
                for _ in 0..max {
                    let x = self.e.read(s.eng);
                    let y = self.m.read(s.model);
                    let done = x.is_none() && y.is_none();
                    a.extend(x);
                    b.extend(y);
                    if done || a.len() != b.len() {
                        break;
                    }
                }
                (Outcome::Reads(a), Outcome::Reads(b))
            }
        }
    }

    fn unlock_both(
        &mut self,
        slot: u8,
        lock: LockSel,
        flags: u32,
        lvb: u8,
        args: u8,
    ) -> (Outcome, Outcome) {
        let Some(s) = self.owners(slot) else {
            return (Outcome::Skipped, Outcome::Skipped);
        };
        let lkid = self.resolve(lock);
        let up = UnlockParams {
            lkid,
            flags,
            lvb: lvb_bytes(lvb),
            args: user_args(args),
        };
        let a = self.e.unlock(s.eng, &up);
        let b = self.m.unlock(s.model, lkid, flags, up.lvb, up.args);
        (Outcome::Unit(a), Outcome::Unit(b))
    }

    fn lock_both(&mut self, s: &Slot, q: &Req) -> (Outcome, Outcome) {
        let p = LockParams {
            mode: q.mode,
            flags: q.flags,
            lkid: q.lkid,
            name: &q.name,
            lvb: q.lvb,
            args: q.args,
            pid: q.pid,
        };
        let a = self.e.lock(s.eng, &p);
        let b = self.m.lock(s.model, q);
        (Outcome::Lock(a), Outcome::Lock(b))
    }

    fn slot_of_engine(&self, o: OwnerId) -> Result<usize, String> {
        self.slots
            .iter()
            .position(|s| s.open && s.eng == o)
            .ok_or_else(|| format!("owner {o:?} is not an open slot"))
    }

    fn slot_of_model(&self, p: usize) -> Result<usize, String> {
        self.slots
            .iter()
            .position(|s| s.open && s.model == p)
            .ok_or_else(|| format!("model proc {p} is not an open slot"))
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.e
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.m
    }

    /// Compares everything observable; `Err` describes the first
    /// difference.
    pub fn compare(&self) -> Result<(), String> {
        let eng = self.e.locks();
        let model = self.m.snapshot();
        let norm_e: Vec<Norm<'_>> = eng
            .iter()
            .map(|l| Norm {
                lkid: l.lkid,
                resource: &l.resource,
                granted: l.granted,
                requested: l.requested,
                queue: l.queue.map(queue),
                owner: l.owner.map(|o| self.slot_of_engine(o)),
                pid: l.pid,
                flags: l.flags.bits(),
            })
            .collect();
        let norm_m: Vec<Norm<'_>> = model
            .iter()
            .map(|l| Norm {
                lkid: l.lkid,
                resource: &l.resource,
                granted: l.granted,
                requested: l.requested,
                queue: l.queue,
                owner: l.owner.map(|p| self.slot_of_model(p)),
                pid: l.pid,
                flags: l.flags,
            })
            .collect();
        if norm_e != norm_m {
            let lines = |v: &[Norm<'_>]| v.iter().map(Norm::line).collect::<Vec<String>>();
            return Err(format!(
                "locks() differ\n  engine: {:#?}\n  model:  {:#?}",
                lines(&norm_e),
                lines(&norm_m)
            ));
        }
        if self.e.lock_count() != self.m.lock_count() {
            return Err(format!(
                "lock_count {} vs model {}",
                self.e.lock_count(),
                self.m.lock_count()
            ));
        }
        if self.e.resource_count() != self.m.resource_count() {
            return Err(format!(
                "resource_count {} vs model {}",
                self.e.resource_count(),
                self.m.resource_count()
            ));
        }
        for name in NAMES {
            let a = self.e.resource_lvb(name);
            let b = self.m.resource_lvb(name);
            if a != b {
                return Err(format!(
                    "resource_lvb({:?}): engine {a:?}, model {b:?}",
                    String::from_utf8_lossy(name)
                ));
            }
        }
        for (i, s) in self.slots.iter().enumerate() {
            if !s.open {
                continue;
            }
            let a = self.e.has_callbacks(s.eng);
            let b = self.m.has_callbacks(s.model);
            if a != b {
                return Err(format!("has_callbacks(slot {i}): engine {a}, model {b}"));
            }
        }
        Ok(())
    }
}

/// One lock of either side's `locks()` snapshot, with its owner as a
/// slot: what [`World::compare`] compares. It is formatted only when the
/// two sides differ, since formatting every lock after every step cost
/// more than running the step.
#[derive(PartialEq)]
struct Norm<'a> {
    lkid: u32,
    resource: &'a [u8],
    granted: Option<LockMode>,
    requested: Option<LockMode>,
    queue: Option<model::Queue>,
    owner: Option<Result<usize, String>>,
    pid: u32,
    flags: u32,
}

impl Norm<'_> {
    fn line(&self) -> String {
        format!(
            "{} {:?} gr={:?} rq={:?} q={:?} owner={:?} pid={} flags={:#x}",
            self.lkid,
            String::from_utf8_lossy(self.resource),
            self.granted,
            self.requested,
            self.queue,
            self.owner,
            self.pid,
            self.flags
        )
    }
}

/// The engine's queue as the model names it.
fn queue(q: dlm_engine::Queue) -> model::Queue {
    match q {
        dlm_engine::Queue::Granted => model::Queue::Granted,
        dlm_engine::Queue::Converting => model::Queue::Converting,
        dlm_engine::Queue::Waiting => model::Queue::Waiting,
    }
}

/// Runs `case` on a fresh engine and model side by side, comparing what
/// every step returns and everything observable after it, then drains
/// every slot and compares again; once under each kernel model, 6.1
/// first. `Err` says where they first differ (its detail names the
/// model).
pub fn check_case(case: &Case) -> Result<(), Failure> {
    for kernel in KernelModel::ALL {
        check_case_on(case, kernel).map_err(|mut f| {
            f.detail = format!("[Linux {kernel} model] {}", f.detail);
            f
        })?;
    }
    Ok(())
}

/// [`check_case`] under one kernel model.
pub fn check_case_on(case: &Case, kernel: KernelModel) -> Result<(), Failure> {
    run_case(case, kernel, false)
}

/// [`check_case`] with the engine compacted ([`Engine::compact`], what
/// `dlmd` does once a burst is over) after every step: compaction must
/// change nothing the model can see, lock ids included.
pub fn check_case_compacting(case: &Case) -> Result<(), Failure> {
    for kernel in KernelModel::ALL {
        run_case(case, kernel, true).map_err(|mut f| {
            f.detail = format!("[Linux {kernel} model, compacting] {}", f.detail);
            f
        })?;
    }
    Ok(())
}

fn run_case(case: &Case, kernel: KernelModel, compact: bool) -> Result<(), Failure> {
    case.validate()?;
    run_steps(case, kernel, compact).map_err(|(stage, detail)| {
        let ran = match &stage {
            Stage::Step { index, .. } | Stage::AfterStep { index, .. } => index + 1,
            _ => case.ops.len(),
        };
        Failure {
            trace: trace(case, kernel, compact, ran),
            stage,
            detail,
        }
    })
}

/// The steps of [`run_case`], with no trace: where and how the two sides
/// first differ.
fn run_steps(case: &Case, kernel: KernelModel, compact: bool) -> Result<(), (Stage, String)> {
    let mut w = World::with_model(case.slots, kernel);
    for (index, op) in case.ops.iter().enumerate() {
        let (a, b) = w.step(op);
        if a != b {
            let detail = format!("engine {a:?}, model {b:?}");
            return Err((
                Stage::Step {
                    index,
                    op: op.clone(),
                },
                detail,
            ));
        }
        if let Err(detail) = w.compare() {
            return Err((
                Stage::AfterStep {
                    index,
                    op: op.clone(),
                },
                detail,
            ));
        }
        if compact {
            w.e.compact();
        }
    }
    // Drain everyone: the last callbacks must agree too.
    for slot in 0..case.slots {
        let (a, b) = w.step(&Op::Drain { slot });
        if a != b {
            let detail = format!("engine {a:?}, model {b:?}");
            return Err((Stage::FinalDrain { slot }, detail));
        }
    }
    w.compare().map_err(|detail| (Stage::End, detail))
}

/// The trace of a failed case: its first `ran` steps run again on a fresh
/// world (both sides are deterministic, so they return what they returned
/// the first time), one line each with what the engine returned.
fn trace(case: &Case, kernel: KernelModel, compact: bool, ran: usize) -> String {
    let mut w = World::with_model(case.slots, kernel);
    let mut trace = String::new();
    for (index, op) in case.ops.iter().take(ran).enumerate() {
        let (a, _) = w.step(op);
        let _ = writeln!(trace, "  #{index}: {op:?} -> {a:?}");
        if compact {
            w.e.compact();
        }
    }
    trace
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failure's trace is rebuilt by running the case again: one line
    /// per step run, with what the engine returned the first time.
    #[test]
    fn a_trace_runs_the_case_again_up_to_the_failing_step() {
        let data: Vec<u8> = (0..600u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let case = Case::from_bytes(&data);
        assert!(case.ops.len() > 10, "only {} operations", case.ops.len());
        for compact in [false, true] {
            let mut w = World::with_model(case.slots, KernelModel::V6_1);
            let mut want = String::new();
            for (index, op) in case.ops.iter().take(7).enumerate() {
                let (a, _) = w.step(op);
                let _ = writeln!(want, "  #{index}: {op:?} -> {a:?}");
                if compact {
                    w.e.compact();
                }
            }
            assert_eq!(trace(&case, KernelModel::V6_1, compact, 7), want);
        }
        let all = trace(&case, KernelModel::V6_12, false, usize::MAX);
        assert_eq!(all.lines().count(), case.ops.len());
    }
}
