//! Everything a connection is sent: callbacks pushed to it, results,
//! errors, query answers a part at a time, and flushing the buffer.

use super::*;

impl Server {
    /// Send every pending callback of every push-mode connection on
    /// lockspace `ls`.
    pub(super) fn deliver(&mut self, ls: LsId) {
        let mut targets = std::mem::take(&mut self.targets);
        targets.clear();
        if let Some(l) = self.devices.lockspace(ls) {
            targets.extend_from_slice(l.conns());
        }
        for &idx in &targets {
            let (owner, compat) = match self.conn(idx) {
                Some(Conn {
                    role: Role::Lockspace { owner, .. },
                    dead: false,
                    pull: false,
                    compat,
                    ..
                }) => (*owner, *compat),
                Some(Conn {
                    role: Role::Lockspace { owner, .. },
                    dead: false,
                    pull: true,
                    ..
                }) => {
                    self.bound_unread(idx, ls, *owner);
                    continue;
                }
                _ => continue,
            };
            let count = if compat {
                records::RESULT32_WITH_LVB_SIZE
            } else {
                records::RESULT_WITH_LVB_SIZE
            };
            while let Some(rec) = self.devices.engine_mut(ls).and_then(|e| e.read(owner)) {
                self.send_ast(idx, &LockResult::from(&rec), compat, count);
                if !matches!(self.conn(idx), Some(c) if !c.dead) {
                    // Disconnected: what is left goes with its owner.
                    break;
                }
            }
        }
        self.targets = targets;
    }

    /// A pull-mode client's callbacks wait in the engine until it reads
    /// them. Under the 6.12 model they have no cap, so a client that
    /// never reads is held to the same bound as unsent output: past
    /// `--max-output` bytes of unread records it is disconnected, as a
    /// push-mode client that stops reading is.
    fn bound_unread(&mut self, idx: usize, ls: LsId, owner: OwnerId) {
        let unread = self
            .devices
            .engine(ls)
            .map_or(0, |e| e.pending_callbacks(owner));
        if unread.saturating_mul(records::RESULT_WITH_LVB_SIZE) > self.config.max_output {
            self.doom(
                idx,
                Level::Warn,
                format!(
                    "it left {unread} callbacks unread, more than --max-output ({} bytes) holds",
                    self.config.max_output
                ),
            );
        }
    }

    pub(super) fn send_ast(&mut self, idx: usize, r: &LockResult, compat: bool, count: usize) {
        let encoded = if compat {
            records::encode_result32(r, count).map(|(b, n)| {
                let mut v = [0u8; records::RESULT_WITH_LVB_SIZE];
                v[..n].copy_from_slice(&b[..n]);
                (v, n)
            })
        } else {
            records::encode_result(r, count)
        };
        match encoded {
            Ok((b, n)) => self.send(idx, Kind::Ast, &b[..n]),
            Err(e) => self.send_errno(idx, e),
        }
    }

    pub(super) fn send_result(&mut self, idx: usize, value: i64) {
        self.send(idx, Kind::Result, &value.to_le_bytes());
    }

    pub(super) fn send_errno(&mut self, idx: usize, e: Errno) {
        self.send_result(idx, result_of(Err(e)));
    }

    /// Queue a frame for connection `idx`, disconnecting it if that puts
    /// it over its output bound.
    pub(super) fn send(&mut self, idx: usize, kind: Kind, body: &[u8]) {
        let max = self.config.max_output;
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        if conn.dead {
            return;
        }
        if let Err(e) = wire::put_frame(&mut conn.out, kind, body) {
            log::error!("cannot frame a {}-byte {kind:?}: {e}", body.len());
            return;
        }
        if conn.unsent() > max {
            if let Err(e) = conn.flush() {
                return self.doom(idx, Level::Debug, format!("write failed: {e}"));
            }
            if conn.unsent() > max {
                let msg = format!(
                    "not reading: more than {max} bytes of output waiting for pid {}; disconnected",
                    conn.cred.pid
                );
                return self.doom(idx, Level::Warn, msg);
            }
        }
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(idx);
        }
    }

    /// Make parts of connection `idx`'s query answer while less than the
    /// low-water mark waits for it; the bytes added (the caller sees that
    /// they are written). The last part ends the pause: the requests
    /// behind the query are handled next.
    pub(super) fn pump_answer(&mut self, idx: usize) -> usize {
        let max = self.config.max_output;
        let (low, piece) = (answer_low_water(max), answer_piece(max));
        let Some(c) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return 0;
        };
        let Some(mut answer) = c.answer.take() else {
            return 0;
        };
        let before = c.out.len();
        let mut failed = None;
        while !c.dead && c.unsent() <= low && !answer.finished() {
            if let Err(e) = answer.next_frame(&self.devices, piece, &mut c.out) {
                failed = Some(e);
                break;
            }
        }
        let added = c.out.len() - before;
        let finished = answer.finished();
        if !finished && failed.is_none() {
            c.answer = Some(answer);
        }
        if let Some(e) = failed {
            self.doom(idx, Level::Error, format!("query answer failed: {e}"));
        } else if finished {
            self.mark_ready(idx);
        }
        added
    }

    /// Write what connection `idx` has waiting, making more of its query
    /// answer as the socket takes it: at most [`ANSWER_BUDGET`] bytes of
    /// it, after which the connection goes on next turn.
    pub(super) fn flush_conn(&mut self, idx: usize) {
        let low = answer_low_water(self.config.max_output);
        let mut budget = ANSWER_BUDGET;
        loop {
            let Some(c) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
                return;
            };
            if c.dead {
                return;
            }
            if let Err(e) = c.flush() {
                return self.doom(idx, Level::Debug, format!("write failed: {e}"));
            }
            if c.answer.is_none() || c.unsent() > low {
                return;
            }
            if budget == 0 {
                return self.mark_ready(idx);
            }
            match self.pump_answer(idx) {
                0 => return,
                n => budget = budget.saturating_sub(n),
            }
        }
    }
}
