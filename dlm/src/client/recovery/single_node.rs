//! Recovery events from `dlm-controld --single-node`: its event socket
//! `/run/dlm-controld/events.sock` (the protocol is in the controller's
//! `dlm_controld::events` module docs; this is a client of version 1).
//!
//! The socket is trusted only if every check holds, so that another local
//! user cannot feed a lockspace's users false recovery events:
//! - `/run/dlm-controld` passes the checks of every socket dlm-rs trusts
//!   (`dlm_proto::trust::check_socket_dir`, as for dlmd's): a real
//!   directory owned by root or by this process's uid, writable by nobody
//!   else, and each directory above it root's or ours, writable by others
//!   only with the sticky bit;
//! - the socket is a socket owned by the directory's owner;
//! - the connected peer's credentials (`SO_PEERCRED`) are root's or ours
//!   (`dlm_proto::trust::check_peer`);
//! - the greeting is `dlm-controld 1`, and the subscription is answered
//!   `ok GEN`.
//!
//! A socket that is missing means no such controller runs: no
//! subscription, silently. One that is there but fails a check, or does
//! not answer within [`ANSWER_TIMEOUT`], is logged as a warning and not
//! used.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use dlm_proto::name::LockspaceName;
use dlm_proto::trust::{check_peer, check_socket_dir};

use super::{Closer, Event, EventStream, Member, Provider};

/// The controller's run directory.
pub(crate) const RUN_DIR: &str = "/run/dlm-controld";
/// The socket's name in it.
const SOCKET_NAME: &str = "events.sock";
/// The greeting of the protocol version spoken here.
const GREETING: &str = "dlm-controld 1";
/// How long the controller may take to greet and to answer a
/// subscription (it answers at once unless it is restarting a
/// lockspace).
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest line read.
const MAX_LINE: u64 = 4096;

/// The single-node controller's event socket in `dir`.
pub(crate) struct SingleNode {
    pub(crate) dir: PathBuf,
}

impl SingleNode {
    /// The real system's.
    pub(crate) fn system() -> SingleNode {
        SingleNode {
            dir: PathBuf::from(RUN_DIR),
        }
    }
}

fn hex(name: &[u8]) -> String {
    name.iter().map(|b| format!("{b:02x}")).collect()
}

/// Read one line, without its `\n`; `None` at the end or on an error.
fn read_line(r: &mut BufReader<UnixStream>) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let n = r.by_ref().take(MAX_LINE).read_until(b'\n', &mut line)?;
    if n == 0 || line.last() != Some(&b'\n') {
        return Ok(None);
    }
    line.pop();
    Ok(String::from_utf8(line).ok())
}

struct Stream {
    reader: BufReader<UnixStream>,
    name_hex: String,
    generation: u32,
}

impl Provider for SingleNode {
    fn name(&self) -> &'static str {
        "dlm-controld --single-node"
    }

    fn subscribe(&self, name: &LockspaceName) -> Result<Option<Box<dyn EventStream>>, String> {
        let path = self.dir.join(SOCKET_NAME);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        // The rules of every socket dlm-rs trusts (`dlm_proto::trust`):
        // the directory and each one above it.
        let me = rustix::process::geteuid().as_raw();
        check_socket_dir(&self.dir, me).map_err(|e| e.to_string())?;
        let owner = std::fs::symlink_metadata(&self.dir)
            .map_err(|e| format!("{}: {e}", self.dir.display()))?
            .uid();
        if !meta.file_type().is_socket() || meta.uid() != owner {
            return Err(format!(
                "{} is not a socket owned by uid {owner}",
                path.display()
            ));
        }
        let sock = match UnixStream::connect(&path) {
            Ok(s) => s,
            // A socket left by a controller that is gone.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Ok(None),
            Err(e) => return Err(format!("connect {}: {e}", path.display())),
        };
        check_peer(&sock, &path, me).map_err(|e| e.to_string())?;
        let err = |e: io::Error| e.to_string();
        sock.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(err)?;
        sock.set_write_timeout(Some(ANSWER_TIMEOUT)).map_err(err)?;
        let name_hex = hex(name.as_bytes());
        (&sock)
            .write_all(format!("subscribe {name_hex}\n").as_bytes())
            .map_err(err)?;
        let mut reader = BufReader::new(sock.try_clone().map_err(err)?);
        let greeting = read_line(&mut reader).map_err(err)?;
        if greeting.as_deref() != Some(GREETING) {
            return Err(format!("unexpected greeting {greeting:?}"));
        }
        let answer = read_line(&mut reader).map_err(err)?.unwrap_or_default();
        let generation = match answer.strip_prefix("ok ").map(str::parse::<u32>) {
            Some(Ok(g)) => g,
            _ => return Err(format!("subscription refused: {answer:?}")),
        };
        // From now on the reader waits for events for as long as they
        // take; the closer ends that wait.
        sock.set_read_timeout(None).map_err(err)?;
        Ok(Some(Box::new(Stream {
            reader,
            name_hex,
            generation,
        })))
    }
}

/// An event line for lockspace `ours` (hex): `None` for a line that is
/// not one (logged and skipped by the caller).
fn parse_event(line: &str, ours: &str) -> Option<Event> {
    let w: Vec<&str> = line.split(' ').collect();
    match w.as_slice() {
        ["stop", n, g] if n == &ours => Some(Event::Stop {
            generation: g.parse().ok()?,
        }),
        ["start", n, g, slot, members] if n == &ours => {
            let members = members
                .split(',')
                .map(|m| {
                    let (nodeid, slot) = m.split_once(':')?;
                    Some(Member {
                        nodeid: nodeid.parse().ok()?,
                        slot: slot.parse().ok()?,
                    })
                })
                .collect::<Option<Vec<Member>>>()?;
            Some(Event::Start {
                generation: g.parse().ok()?,
                our_slot: slot.parse().ok()?,
                members,
            })
        }
        ["gone", n] if n == &ours => Some(Event::Gone),
        _ => None,
    }
}

impl EventStream for Stream {
    fn generation(&self) -> u32 {
        self.generation
    }

    fn next_event(&mut self) -> Option<Event> {
        loop {
            let line = match read_line(&mut self.reader) {
                Ok(Some(l)) => l,
                Ok(None) => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!("recovery events: {e}");
                    return None;
                }
            };
            match parse_event(&line, &self.name_hex) {
                Some(ev) => return Some(ev),
                None => log::debug!("recovery events: ignoring {line:?}"),
            }
        }
    }

    fn closer(&self) -> io::Result<Closer> {
        let s = self.reader.get_ref().try_clone()?;
        Ok(Box::new(move || {
            let _ = s.shutdown(Shutdown::Both);
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixListener;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dlm-single-node-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("run")).unwrap();
        for p in [d.clone(), d.join("run")] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        d
    }

    #[test]
    fn events_are_parsed_for_our_lockspace_only() {
        assert_eq!(
            parse_event("stop 6c73 1", "6c73"),
            Some(Event::Stop { generation: 1 })
        );
        assert_eq!(
            parse_event("start 6c73 2 1 1:1,3:2", "6c73"),
            Some(Event::Start {
                generation: 2,
                our_slot: 1,
                members: vec![Member { nodeid: 1, slot: 1 }, Member { nodeid: 3, slot: 2 }],
            })
        );
        assert_eq!(parse_event("gone 6c73", "6c73"), Some(Event::Gone));
        assert_eq!(parse_event("stop 6c74 1", "6c73"), None);
        assert_eq!(parse_event("start 6c73 2 1 1:x", "6c73"), None);
        assert_eq!(parse_event("what", "6c73"), None);
    }

    #[test]
    fn a_missing_socket_is_no_provider_and_an_open_directory_is_untrusted() {
        let d = tempdir("trust");
        let name = LockspaceName::new("ls").unwrap();
        let p = SingleNode { dir: d.join("run") };
        assert!(matches!(p.subscribe(&name), Ok(None)));
        let _l = UnixListener::bind(d.join("run").join(SOCKET_NAME)).unwrap();
        std::fs::set_permissions(d.join("run"), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = p.subscribe(&name).err().unwrap();
        assert!(e.contains("other users can write"), "{e}");
        std::fs::set_permissions(d.join("run"), std::fs::Permissions::from_mode(0o755)).unwrap();
        // A peer that speaks something else.
        let srv = std::thread::spawn({
            let l = _l.try_clone().unwrap();
            move || {
                let (mut s, _) = l.accept().unwrap();
                s.write_all(b"hello 9\n").unwrap();
            }
        });
        let e = p.subscribe(&name).err().unwrap();
        assert!(e.contains("greeting"), "{e}");
        srv.join().unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_subscription_reads_events_until_closed() {
        let d = tempdir("sub");
        let l = UnixListener::bind(d.join("run").join(SOCKET_NAME)).unwrap();
        let srv = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.write_all(b"dlm-controld 1\n").unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            assert_eq!(read_line(&mut r).unwrap().unwrap(), "subscribe 6c73");
            s.write_all(b"ok 4\nnoise\nstop 6c73 4\nstart 6c73 5 1 1:1\n")
                .unwrap();
            // Stays open: the client's closer ends its wait.
            let mut b = [0u8; 1];
            let _ = s.read(&mut b);
        });
        let name = LockspaceName::new("ls").unwrap();
        let p = SingleNode { dir: d.join("run") };
        let mut st = p.subscribe(&name).unwrap().unwrap();
        assert_eq!(st.generation(), 4);
        assert_eq!(st.next_event(), Some(Event::Stop { generation: 4 }));
        assert!(matches!(
            st.next_event(),
            Some(Event::Start { generation: 5, .. })
        ));
        let close = st.closer().unwrap();
        close();
        assert_eq!(st.next_event(), None);
        srv.join().unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }
}
