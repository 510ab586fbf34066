//! Reading a connection's frames within its budget and handling each
//! request: `Hello`, device writes and reads, `chmod`, queries.

use super::*;

impl Server {
    /// Read and handle what connection `idx` sent, within its budget.
    pub(super) fn service(&mut self, idx: usize) {
        match self.conn_mut(idx) {
            Some(c) => c.in_ready = false,
            None => return,
        }
        if matches!(self.conn(idx), Some(c) if c.answer.is_some()) {
            // Its answer ran out of budget last turn.
            self.flush_conn(idx);
        }
        let mut budget = READ_BUDGET;
        let mut buf = std::mem::take(&mut self.read_buf);
        loop {
            if !self.process_frames(idx) {
                break;
            }
            let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
                break;
            };
            if conn.eof {
                let pending = conn.dec.pending();
                let paused = conn.paused();
                if pending > 0 && !paused {
                    self.misuse(
                        idx,
                        format!("closed in the middle of a frame ({pending} bytes)"),
                    );
                }
                self.doom(idx, Level::Debug, "closed by the peer".into());
                break;
            }
            if conn.paused() && conn.dec.pending() >= PAUSED_INPUT_LIMIT {
                // Resumed (marked ready) when the pause ends.
                break;
            }
            if budget == 0 {
                self.mark_ready(idx);
                break;
            }
            match conn.stream.read(&mut buf) {
                Ok(0) => conn.eof = true,
                Ok(n) => {
                    conn.dec.feed(&buf[..n]);
                    budget = budget.saturating_sub(n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.doom(idx, Level::Debug, format!("read failed: {e}"));
                    break;
                }
            }
        }
        self.read_buf = buf;
    }

    /// Handle the complete frames of connection `idx`; `false` once it is
    /// doomed or gone.
    pub(super) fn process_frames(&mut self, idx: usize) -> bool {
        loop {
            let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
                return false;
            };
            if conn.dead {
                return false;
            }
            if conn.paused() {
                return true;
            }
            let kind = match conn.dec.next_frame() {
                Ok(Some(f)) => {
                    self.scratch.clear();
                    self.scratch.extend_from_slice(f.body);
                    f.kind
                }
                Ok(None) => return true,
                Err(e) => {
                    let msg = format!(
                        "broken framing ({e}): protocol error from pid {}, disconnecting",
                        conn.cred.pid
                    );
                    self.doom(idx, Level::Warn, msg);
                    return false;
                }
            };
            let body = std::mem::take(&mut self.scratch);
            self.handle_frame(idx, kind, &body);
            self.scratch = body;
        }
    }

    /// Log a protocol error of connection `idx` (rate-limited, with
    /// everything else clients cause).
    pub(super) fn misuse(&mut self, idx: usize, what: String) {
        let Some(c) = self.conn(idx) else {
            return;
        };
        let (pid, uid) = (c.cred.pid, c.cred.uid);
        self.peer_log(
            Level::Warn,
            format_args!("connection {idx} (pid {pid} uid {uid}): {what}"),
        );
    }

    pub(super) fn handle_frame(&mut self, idx: usize, kind: Kind, body: &[u8]) {
        match kind {
            Kind::Hello => {
                let r = self.hello(idx, body);
                self.send_result(idx, result_of(r));
            }
            Kind::Write if self.in_grace() && self.is_lockspace_conn(idx) => {
                self.hold_write(idx, body);
            }
            Kind::Write => {
                let (reply, deliver) = self.write(idx, body);
                if let Some(v) = reply {
                    self.send_result(idx, v);
                }
                if let Some(ls) = deliver {
                    self.deliver(ls);
                }
            }
            Kind::Read => self.read(idx, body),
            Kind::Version => {
                if body.is_empty() {
                    self.send(idx, Kind::Version, &records::encode_version());
                } else {
                    self.misuse(
                        idx,
                        format!("Version frame with a {}-byte body", body.len()),
                    );
                    self.send_errno(idx, Errno::EINVAL);
                }
            }
            Kind::Chmod => {
                let r = self.chmod(idx, body);
                self.send_result(idx, result_of(r));
            }
            Kind::Query => self.query(idx, body),
            Kind::Bye => {
                // The answer leaves before or with the close, and the close
                // (reaped before the next poll) precedes anything the peer
                // can send after reading the answer.
                self.send_result(idx, 0);
                self.doom(idx, Level::Debug, "said goodbye".into());
            }
            Kind::Replay => {
                let r = self.replay(idx, body);
                self.send_result(idx, result_of(r));
            }
            Kind::ReplayDone => {
                let r = self.replay_done(idx, body);
                self.send_result(idx, result_of(r));
            }
            Kind::Result | Kind::Ast | Kind::QueryReply | Kind::QueryPart => {
                self.misuse(idx, format!("sent a daemon-only frame ({kind:?})"));
                self.send_errno(idx, Errno::EPROTO);
            }
        }
    }

    pub(super) fn hello(&mut self, idx: usize, body: &[u8]) -> Result<i64, Errno> {
        let Some(conn) = self.conn(idx) else {
            return Err(Errno::EBADF);
        };
        let cred = conn.cred.clone();
        if !matches!(conn.role, Role::None) {
            self.misuse(idx, "a second Hello".into());
            return Err(Errno::from_raw(libc_errno::EISCONN));
        }
        let [role, flags, name @ ..] = body else {
            self.misuse(idx, format!("Hello with a {}-byte body", body.len()));
            return Err(Errno::EINVAL);
        };
        if flags & !(wire::HELLO_PULL | wire::HELLO_REPLAY) != 0
            || (flags & wire::HELLO_REPLAY != 0 && *role != wire::ROLE_LOCKSPACE)
        {
            self.misuse(idx, format!("Hello with unknown flags {flags:#x}"));
            return Err(Errno::EINVAL);
        }
        let pull = flags & wire::HELLO_PULL != 0;
        let replay = if flags & wire::HELLO_REPLAY != 0 {
            ReplayState::Replaying
        } else {
            ReplayState::No
        };
        let (role, value) = match *role {
            wire::ROLE_CONTROL => {
                if !name.is_empty() {
                    self.misuse(idx, "control Hello with a name".into());
                    return Err(Errno::EINVAL);
                }
                (Role::Control, 0)
            }
            wire::ROLE_LOCKSPACE => match self.devices.open(&cred, idx, name) {
                Ok((ls, owner, minor)) => {
                    log::debug!(
                        "connection {idx} (pid {}) opened lockspace {} as owner {}",
                        cred.pid,
                        String::from_utf8_lossy(name),
                        owner.index()
                    );
                    (Role::Lockspace { ls, owner }, i64::from(minor))
                }
                Err(e) => {
                    if e == Errno::EACCES {
                        self.peer_log(
                            Level::Info,
                            format_args!(
                                "pid {} uid {} may not open lockspace {}",
                                cred.pid,
                                cred.uid,
                                String::from_utf8_lossy(name)
                            ),
                        );
                    } else if e == Errno::EINVAL {
                        self.misuse(idx, "Hello with an invalid lockspace name".into());
                    }
                    return Err(e);
                }
            },
            other => {
                self.misuse(idx, format!("Hello with unknown role {other}"));
                return Err(Errno::EINVAL);
            }
        };
        if let Some(conn) = self.conn_mut(idx) {
            conn.role = role;
            conn.pull = pull;
            conn.replay = replay;
        }
        if matches!(role, Role::Lockspace { .. }) {
            self.record_holders(true, replay == ReplayState::Replaying);
        }
        Ok(value)
    }

    /// Whether connection `idx` plays a lockspace device.
    pub(super) fn is_lockspace_conn(&self, idx: usize) -> bool {
        self.conn(idx)
            .is_some_and(|c| matches!(c.role, Role::Lockspace { .. }))
    }

    /// A `Write`: the reply (none while a remove is deferred) and the
    /// lockspace whose callbacks to deliver.
    pub(super) fn write(&mut self, idx: usize, body: &[u8]) -> (Option<i64>, Option<LsId>) {
        let Some(conn) = self.conn(idx) else {
            return (None, None);
        };
        let (cred, role) = (conn.cred.clone(), conn.role);
        if matches!(role, Role::None) {
            self.misuse(idx, "Write before Hello".into());
            return (Some(result_of(Err(Errno::ENOTCONN))), None);
        }
        let decoded = match records::decode_write(body) {
            Ok(d) => d,
            Err(e) => {
                self.misuse(idx, format!("bad {}-byte write: {e}", body.len()));
                return (Some(result_of(Err(e))), None);
            }
        };
        match role {
            Role::None => (None, None),
            Role::Lockspace { ls, owner } => {
                if decoded.compat {
                    if let Some(c) = self.conn_mut(idx) {
                        c.compat = true;
                    }
                }
                if let Request::CreateLockspace { .. } | Request::RemoveLockspace { .. } =
                    decoded.request
                {
                    self.misuse(idx, "create/remove on a lockspace connection".into());
                    return (Some(result_of(Err(Errno::EINVAL))), None);
                }
                let r = self
                    .devices
                    .lock_command(ls, owner, cred.pid, &decoded.request);
                if let Err(e) = r {
                    log::debug!(
                        "connection {idx} (pid {}): {:?}: {e}",
                        cred.pid,
                        decoded.request
                    );
                }
                (Some(result_of(r)), Some(ls))
            }
            Role::Control => match decoded.request {
                Request::CreateLockspace { flags, name } => {
                    let r = self.devices.create(&cred, flags, &name);
                    if let Err(e) = r {
                        self.peer_log(
                            Level::Info,
                            format_args!(
                                "pid {} uid {}: create lockspace {}: {e}",
                                cred.pid,
                                cred.uid,
                                String::from_utf8_lossy(&name)
                            ),
                        );
                    }
                    (Some(result_of(r.map(i64::from))), None)
                }
                Request::RemoveLockspace { flags, minor } => {
                    match self.devices.remove(&cred, idx, flags, minor) {
                        Ok(Removal::Done) => (Some(0), None),
                        Ok(Removal::Deferred(ls)) => {
                            if let Some(c) = self.conn_mut(idx) {
                                c.waiting_remove = Some(ls);
                            }
                            (None, None)
                        }
                        Err(e) => {
                            self.peer_log(
                                Level::Info,
                                format_args!(
                                    "pid {} uid {}: remove lockspace minor {minor}: {e}",
                                    cred.pid, cred.uid
                                ),
                            );
                            (Some(result_of(Err(e))), None)
                        }
                    }
                }
                _ => {
                    self.misuse(idx, "lock command on the control connection".into());
                    (Some(result_of(Err(Errno::EINVAL))), None)
                }
            },
        }
    }

    /// A `Read`: `device_read`.
    pub(super) fn read(&mut self, idx: usize, body: &[u8]) {
        let Ok(count) = <[u8; 4]>::try_from(body).map(u32::from_le_bytes) else {
            self.misuse(idx, format!("Read with a {}-byte body", body.len()));
            return self.send_errno(idx, Errno::EINVAL);
        };
        let Some(conn) = self.conn(idx) else {
            return;
        };
        let (role, compat) = (conn.role, conn.compat);
        let count = count as usize;
        let (ls, owner) = match role {
            Role::None => {
                self.misuse(idx, "Read before Hello".into());
                return self.send_errno(idx, Errno::ENOTCONN);
            }
            _ if count == records::VERSION_SIZE => {
                return self.send(idx, Kind::Version, &records::encode_version());
            }
            Role::Control => return self.send_errno(idx, Errno::EINVAL),
            Role::Lockspace { ls, owner } => (ls, owner),
        };
        let min = if compat {
            records::RESULT32_SIZE
        } else {
            records::RESULT_SIZE
        };
        if count < min {
            return self.send_errno(idx, Errno::EINVAL);
        }
        let rec = self.devices.engine_mut(ls).and_then(|e| e.read(owner));
        match rec {
            Some(rec) => self.send_ast(idx, &LockResult::from(&rec), compat, count),
            None => self.send_errno(idx, Errno::EAGAIN),
        }
    }

    pub(super) fn chmod(&mut self, idx: usize, body: &[u8]) -> Result<i64, Errno> {
        let Ok(mode) = <[u8; 4]>::try_from(body).map(u32::from_le_bytes) else {
            self.misuse(idx, format!("Chmod with a {}-byte body", body.len()));
            return Err(Errno::EINVAL);
        };
        let Some(conn) = self.conn(idx) else {
            return Err(Errno::EBADF);
        };
        let cred = conn.cred.clone();
        match conn.role {
            Role::None => {
                self.misuse(idx, "Chmod before Hello".into());
                Err(Errno::ENOTCONN)
            }
            Role::Control => {
                self.misuse(idx, "Chmod on the control connection".into());
                Err(Errno::EINVAL)
            }
            Role::Lockspace { ls, .. } => {
                let r = self.devices.chmod(&cred, ls, mode);
                if let Err(e) = r {
                    self.peer_log(
                        Level::Info,
                        format_args!("pid {} uid {}: chmod {mode:o}: {e}", cred.pid, cred.uid),
                    );
                }
                r.map(|()| 0)
            }
        }
    }

    /// A `Query`: checked now, answered a part at a time from here on.
    pub(super) fn query(&mut self, idx: usize, body: &[u8]) {
        let Some(conn) = self.conn(idx) else {
            return;
        };
        let (cred, role) = (conn.cred.clone(), conn.role);
        let Some((&what, rest)) = body.split_first() else {
            self.misuse(idx, "empty Query".into());
            return self.send_errno(idx, Errno::EINVAL);
        };
        let answer = match what {
            wire::QUERY_LOCKSPACES => Answer::new(Subject::Lockspaces(cred)),
            wire::QUERY_DAEMON => Answer::new(Subject::Daemon(self.config.kernel_model)),
            wire::QUERY_LOCKS | wire::QUERY_LOCK_PAGE => {
                let (page, name) = if what == wire::QUERY_LOCK_PAGE {
                    match wire::parse_page_query(rest) {
                        Ok((limit, after, name)) => (Some((limit, after)), name),
                        Err(e) => {
                            self.misuse(idx, format!("page Query with a {}-byte body", body.len()));
                            return self.send_errno(idx, e);
                        }
                    }
                } else {
                    (None, rest)
                };
                let id = match (name.is_empty(), role) {
                    (true, Role::Lockspace { ls, .. }) => Ok(ls),
                    (true, _) => Err(Errno::EINVAL),
                    (false, _) => self.devices.find_for_query(&cred, name),
                };
                let ls = match id {
                    Ok(ls) => ls,
                    Err(e) => return self.send_errno(idx, e),
                };
                match page {
                    None => Answer::new(Subject::Locks(ls)),
                    Some((limit, after)) => Answer::after(Subject::Page { ls, limit }, after),
                }
            }
            other => {
                self.misuse(idx, format!("Query of unknown subject {other}"));
                return self.send_errno(idx, Errno::EINVAL);
            }
        };
        if let Some(c) = self.conn_mut(idx) {
            c.answer = Some(answer);
        }
        if self.pump_answer(idx) > 0 {
            if let Some(c) = self.conn_mut(idx) {
                if !c.dirty {
                    c.dirty = true;
                    self.dirty.push(idx);
                }
            }
        }
    }
}
