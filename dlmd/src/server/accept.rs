//! Connections coming and going: accepting (with the quota and the
//! spare descriptor), closing at once or queued (`doom`, `reap`), and
//! releasing what a closed connection owned.

use super::*;

impl Server {
    pub(super) fn accept_all(&mut self) {
        if self.spare_fd.is_none() {
            self.spare_fd = open_spare_fd();
        }
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    self.accept_warned = false;
                    self.add_conn(stream);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionAborted => {}
                Err(e) if out_of_fds(&e) && self.spare_fd.is_some() => {
                    // Out of descriptors below the cap (the limit was
                    // lowered under us, or the system ran out): use the
                    // spare one to turn a waiting client away rather than
                    // leave it hanging in the backlog. (Linux says EMFILE
                    // before it looks at the backlog, so the backlog may
                    // also be empty.) Without a spare, fall through to
                    // retrying.
                    self.spare_fd = None;
                    let got = self.listener.accept();
                    if let Ok((stream, _)) = got {
                        refuse(stream, Errno::from_raw(libc_errno::EMFILE));
                        self.peer_log(
                            Level::Warn,
                            format_args!(
                                "refused a connection: the daemon is out of file descriptors \
                                 ({e}) with {} connections open",
                                self.quotas.open()
                            ),
                        );
                        self.spare_fd = open_spare_fd();
                        continue;
                    }
                    self.spare_fd = open_spare_fd();
                    match got {
                        Err(e2) if e2.kind() == ErrorKind::WouldBlock => return,
                        _ => {
                            self.accept_blocked = true;
                            return;
                        }
                    }
                }
                Err(e) => {
                    if !self.accept_warned {
                        log::warn!("cannot accept a connection: {e}; retrying every 100 ms");
                        self.accept_warned = true;
                    }
                    self.accept_blocked = true;
                    return;
                }
            }
        }
    }

    pub(super) fn add_conn(&mut self, mut stream: UnixStream) {
        let cred = match rustix::net::sockopt::socket_peercred(&stream) {
            Ok(c) => Cred {
                pid: c.pid.as_raw_nonzero().get().unsigned_abs(),
                uid: c.uid.as_raw(),
                gid: c.gid.as_raw(),
                groups: peer_groups(&stream),
            },
            Err(e) => {
                self.peer_log(
                    Level::Warn,
                    format_args!("a connection without peer credentials ({e}): closed"),
                );
                return;
            }
        };
        if self.config.scope == Scope::User && cred.uid != self.config.uid {
            let uid = self.config.uid;
            self.peer_log(
                Level::Warn,
                format_args!(
                    "refused a connection from pid {} uid {}: this per-user daemon serves uid \
                     {uid} only",
                    cred.pid, cred.uid
                ),
            );
            return;
        }
        if let Err(why) = self.quotas.admit(cred.uid) {
            refuse(stream, why.errno());
            let full = matches!(why, Refusal::Full { .. });
            if !full || !self.cap_warned {
                let more = if full {
                    "; further refusals at the cap are not logged until one is accepted"
                } else {
                    ""
                };
                self.peer_log(
                    Level::Warn,
                    format_args!(
                        "refused a connection from pid {} uid {}: {why}{more}",
                        cred.pid, cred.uid
                    ),
                );
                self.cap_warned |= full;
            }
            return;
        }
        self.cap_warned = false;
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(idx + FIRST_CONN),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("cannot watch a connection from pid {}: {e}", cred.pid);
            self.free.push(idx);
            self.quotas.release(cred.uid);
            return;
        }
        log::debug!(
            "connection {idx} from pid {} uid {} gid {} groups {:?}",
            cred.pid,
            cred.uid,
            cred.gid,
            cred.groups
        );
        self.serial += 1;
        self.hello_deadlines.push_back(Deadline {
            at: Instant::now() + self.config.hello_timeout,
            idx,
            serial: self.serial,
        });
        self.conns[idx] = Some(Conn {
            stream,
            serial: self.serial,
            cred,
            role: Role::None,
            pull: false,
            compat: false,
            dec: Decoder::new(),
            out: Vec::new(),
            out_pos: 0,
            answer: None,
            waiting_remove: None,
            replay: ReplayState::No,
            held_write: None,
            in_ready: false,
            dirty: false,
            dead: false,
            eof: false,
            close_reason: None,
        });
        self.mark_ready(idx);
    }

    /// Queue connection `idx` for closing (once).
    pub(super) fn doom(&mut self, idx: usize, level: Level, reason: String) {
        if let Some(c) = self.conn_mut(idx) {
            if !c.dead {
                c.dead = true;
                c.close_reason = Some((level, reason));
                self.doomed.push(idx);
            }
        }
    }

    /// Close every doomed connection.
    pub(super) fn reap(&mut self) {
        while let Some(idx) = self.doomed.pop() {
            self.close(idx);
        }
    }

    pub(super) fn close(&mut self, idx: usize) {
        let Some(mut conn) = self.conns.get_mut(idx).and_then(Option::take) else {
            return;
        };
        self.free.push(idx);
        self.quotas.release(conn.cred.uid);
        // What the connection held is freed here: once closes stop for a
        // while, the heap gives it back.
        self.trim_due = Some(Instant::now() + super::TRIM_AFTER);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let (level, reason) = conn
            .close_reason
            .take()
            .unwrap_or((Level::Debug, "closed".into()));
        let line = format_args!(
            "connection {idx} (pid {} uid {}) closed: {reason}",
            conn.cred.pid, conn.cred.uid
        );
        if level <= Level::Info {
            self.peer_log(level, line);
        } else {
            log::log!(level, "{line}");
        }
        // Last words, if the peer still reads (e.g. after shutdown(WR)).
        let _ = conn.flush();
        match conn.role {
            Role::Lockspace { ls, owner } => {
                self.record_holders(false, false);
                let removers = self.devices.close(ls, idx, owner);
                self.deliver(ls);
                for r in removers {
                    if let Some(rc) = self.conn_mut(r) {
                        rc.waiting_remove = None;
                    }
                    self.send_result(r, 0);
                    self.mark_ready(r);
                }
            }
            Role::Control => {
                if let Some(ls) = conn.waiting_remove {
                    self.devices.forget_remover(ls, idx);
                }
            }
            Role::None => {}
        }
    }
}
