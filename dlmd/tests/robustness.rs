//! Bad input on one connection costs that connection at most; everyone
//! else's locks and service are untouched.
#![forbid(unsafe_code)]

mod common;

use std::io::Write;

use common::*;
use dlm_proto::records::{self, Command as Cmd};
use dlm_proto::wire::{self, Kind};
use dlm_proto::{Errno, LockFlags as F, LockMode as M};

/// A connection that holds a lock, to check after the abuse.
struct Witness {
    c: Client,
    lkid: i64,
}

impl Witness {
    fn new(d: &Daemon, ls: &str) -> (Client, Witness) {
        let (ctl, mut c, _) = d.lockspace(ls);
        let lkid = c.lock(&req(M::Ex, b"keep", F::empty()));
        assert_eq!(c.wait_ast().status, 0);
        (ctl, Witness { c, lkid })
    }

    /// Its lock is still there and it can still lock.
    fn check(&mut self, ls: &str) {
        let locks = self.c.locks(ls);
        assert!(
            locks
                .iter()
                .any(|l| i64::from(l.lkid) == self.lkid && l.granted.as_deref() == Some("EX")),
            "the witness's lock survived: {locks:?}"
        );
        let n = self.c.lock(&req(M::Pr, b"fresh", F::empty()));
        assert!(n > 0);
        let g = self.c.wait_ast();
        assert_eq!((i64::from(g.lkid), g.status), (n, 0));
        assert_eq!(self.c.unlock(&unl(n as u32, F::empty())), 0);
        assert_eq!(self.c.wait_ast().status, EUNLOCK);
    }
}

#[test]
fn broken_framing_closes_only_that_connection() {
    let d = Daemon::start();
    let (_ctl, mut w) = Witness::new(&d, "robust");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("zero length", vec![0, 0, 0, 0, 1]),
        (
            "oversized length",
            ((wire::MAX_FRAME as u32) + 1).to_le_bytes().to_vec(),
        ),
        ("huge length", vec![0xff, 0xff, 0xff, 0xff, 2]),
        ("unknown kind", vec![1, 0, 0, 0, 0x7f]),
    ];
    for (what, bytes) in cases {
        let mut c = d.connect();
        c.send_raw(&bytes);
        assert!(c.closed_within(TIMEOUT), "{what}: connection closed");
        // The same after a Hello, on a lockspace connection that holds a lock.
        let mut c = d.open("robust");
        let l = c.lock(&req(M::Pr, b"victim", F::empty()));
        assert!(l > 0);
        c.send_raw(&bytes);
        assert!(
            c.closed_within(TIMEOUT),
            "{what}: lockspace connection closed"
        );
        w.check("robust");
    }
    // Its locks were released on close.
    wait_until("the closed connections' locks to go", TIMEOUT, || {
        w.c.locks("robust").len() == 1
    });
    let log = d.log_text();
    assert!(log.contains("broken framing"), "logged:\n{log}");
    assert!(log.contains("pid"), "with the peer pid");
}

#[test]
fn well_formed_nonsense_gets_errors_and_the_connection_lives() {
    let d = Daemon::start();
    let (_ctl, mut w) = Witness::new(&d, "errs");
    let lock = records::encode_lock(Cmd::Lock, &req(M::Ex, b"x", F::empty()), records::VERSION);
    let lock = lock.as_bytes().to_vec();

    // Before Hello.
    let mut c = d.connect();
    assert_eq!(c.write(&lock), neg(Errno::ENOTCONN));
    assert_eq!(
        c.call(Kind::Read, &72u32.to_le_bytes()),
        neg(Errno::ENOTCONN)
    );
    assert_eq!(
        c.call(Kind::Chmod, &0o644u32.to_le_bytes()),
        neg(Errno::ENOTCONN)
    );
    assert_eq!(
        c.call(Kind::Hello, &[wire::ROLE_CONTROL]),
        neg(Errno::EINVAL)
    );
    assert_eq!(c.call(Kind::Hello, &[9, 0]), neg(Errno::EINVAL));
    assert_eq!(
        c.call(Kind::Hello, &[wire::ROLE_CONTROL, 0x80]),
        neg(Errno::EINVAL)
    );
    assert_eq!(
        c.call(Kind::Hello, &[wire::ROLE_CONTROL, 0, b'x']),
        neg(Errno::EINVAL)
    );
    assert_eq!(
        c.hello(wire::ROLE_LOCKSPACE, 0, b"no/such"),
        neg(Errno::EINVAL)
    );
    assert_eq!(
        c.hello(wire::ROLE_LOCKSPACE, 0, b"nosuch"),
        neg(Errno::ENOENT)
    );
    assert_eq!(
        c.call(Kind::Result, &0i64.to_le_bytes()),
        neg(Errno::EPROTO)
    );
    assert_eq!(c.call(Kind::Ast, &[0; 72]), neg(Errno::EPROTO));
    assert_eq!(c.call(Kind::Version, b"x"), neg(Errno::EINVAL));
    c.sync();

    // On the control connection.
    assert_eq!(c.hello(wire::ROLE_CONTROL, 0, b""), 0);
    assert_eq!(
        c.hello(wire::ROLE_CONTROL, 0, b""),
        neg(Errno::from_raw(106)),
        "EISCONN"
    );
    assert_eq!(c.write(&lock), neg(Errno::EINVAL), "no locking on control");
    assert_eq!(c.write(&lock[..50]), neg(Errno::EINVAL), "short write");
    assert_eq!(c.write(&[0u8; 185]), neg(Errno::EINVAL), "long write");
    let mut bad_version = lock.clone();
    bad_version[0] = 5;
    assert_eq!(c.write(&bad_version), neg(Errno::EBADE));
    let mut bad_cmd = lock.clone();
    bad_cmd[12] = 3;
    assert_eq!(c.write(&bad_cmd), neg(Errno::EINVAL), "DLM_USER_QUERY");
    assert_eq!(c.call(Kind::Read, &72u32.to_le_bytes()), neg(Errno::EINVAL));
    assert_eq!(c.call(Kind::Read, &[1, 2]), neg(Errno::EINVAL));
    c.send(Kind::Read, &12u32.to_le_bytes());
    assert_eq!(c.reply().0, Kind::Version, "a 12-byte read is the version");
    assert_eq!(
        c.call(Kind::Chmod, &0o644u32.to_le_bytes()),
        neg(Errno::EINVAL)
    );
    assert_eq!(c.call(Kind::Query, &[]), neg(Errno::EINVAL));
    assert_eq!(c.call(Kind::Query, &[9]), neg(Errno::EINVAL));
    assert_eq!(
        c.query::<Vec<dlm_proto::query::LockInfo>>(wire::QUERY_LOCKS, b""),
        Err(neg(Errno::EINVAL))
    );
    assert_eq!(
        c.query::<Vec<dlm_proto::query::LockInfo>>(wire::QUERY_LOCKS, b"nosuch"),
        Err(neg(Errno::ENOENT))
    );
    assert!(c.create("errs2", 0) >= 0, "still serving");

    // On a lockspace connection.
    let mut l = d.open("errs");
    let create = records::encode_create(b"zz", 0, records::VERSION).expect("name");
    assert_eq!(
        l.write(create.as_bytes()),
        neg(Errno::EINVAL),
        "create on a lockspace"
    );
    let mut long_name = lock.clone();
    long_name[17] = 200;
    assert_eq!(l.write(&long_name), neg(Errno::EINVAL), "namelen 200");
    let mut no_cast = req(M::Ex, b"x", F::empty());
    no_cast.castaddr = 0;
    assert_eq!(l.lock(&no_cast), neg(Errno::EINVAL));
    assert_eq!(l.lock(&req(M::Ex, b"x", F::CANCEL)), neg(Errno::EINVAL));
    let mut bad_mode = req(M::Ex, b"x", F::empty());
    bad_mode.mode = 9;
    assert_eq!(l.lock(&bad_mode), neg(Errno::EINVAL));
    assert_eq!(l.unlock(&unl(999, F::empty())), neg(Errno::ENOENT));
    assert_eq!(l.lock(&conv(999, M::Pr, F::empty())), neg(Errno::ENOENT));
    assert_eq!(l.call(Kind::Read, &50u32.to_le_bytes()), neg(Errno::EINVAL));
    assert_eq!(l.call(Kind::Read, &72u32.to_le_bytes()), neg(Errno::EAGAIN));
    l.sync();
    w.check("errs");
    let log = d.log_text();
    assert!(log.contains("Write before Hello"), "logged:\n{log}");
}

#[test]
fn truncated_frames_and_random_garbage() {
    let d = Daemon::start();
    let (_ctl, mut w) = Witness::new(&d, "garbage");
    // A frame cut short, then the client goes away.
    let mut c = d.open("garbage");
    let lock = records::encode_lock(Cmd::Lock, &req(M::Ex, b"x", F::empty()), records::VERSION);
    let mut f = Vec::new();
    wire::put_frame(&mut f, Kind::Write, lock.as_bytes()).expect("frame");
    c.send_raw(&f[..f.len() / 2]);
    drop(c);
    // Random bytes, on fresh and on opened connections.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..40 {
        let mut c = if i % 2 == 0 {
            d.connect()
        } else {
            d.open("garbage")
        };
        let len = (next() % 300) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let _ = c.stream.write_all(&bytes);
        let _ = c.stream.shutdown(std::net::Shutdown::Write);
        assert!(
            c.closed_within(TIMEOUT),
            "garbage case {i}: the daemon hangs up"
        );
    }
    // Random but well-framed writes on one lockspace connection.
    let mut c = d.open("garbage");
    for _ in 0..500 {
        let len = 100 + (next() % 90) as usize;
        let mut body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        body[..12].copy_from_slice(&records::encode_version());
        body[12] = 1 + (next() % 7) as u8;
        body[13] = (next() % 2) as u8;
        c.send(Kind::Write, &body);
        match c.reply() {
            (Kind::Result, _) => {}
            (k, _) => panic!("unexpected {k:?}"),
        }
    }
    c.sync();
    drop(c);
    w.check("garbage");
    let d2 = d.connect();
    drop(d2);
    let mut ctl = d.control();
    assert!(ctl.create("after", 0) >= 0);
}

#[test]
fn a_client_that_stops_reading_is_disconnected() {
    let d = Daemon::start_with(&["--user", "--max-output", "4K"]);
    let (_ctl, mut v, _) = d.lockspace("slow");
    // V holds many locks, each of which will get a blocking AST. (A lock
    // gets one blocking AST per mode until it is granted again.)
    const N: usize = 20_000;
    let name = |i: usize| format!("hot{i}").into_bytes();
    for i in 0..N {
        assert!(v.lock(&req(M::Ex, &name(i), F::empty())) > 0);
        if i % 1000 == 999 {
            v.asts.clear();
        }
    }
    v.sync();
    v.asts.clear();
    // From now on V reads nothing; each of W's requests sends V a
    // blocking AST, until V is disconnected and its locks are released.
    let mut w = d.open("slow");
    let flags = F::NOQUEUE | F::NOQUEUEBAST;
    let mut granted = None;
    for i in 0..N {
        let lw = w.lock(&req(M::Ex, &name(i), flags));
        assert!(lw > 0);
        let st = w.wait_ast();
        if st.status == 0 {
            granted = Some(i);
            break;
        }
        assert_eq!(st.status, neg(Errno::EAGAIN) as i32);
    }
    let first = granted.expect("V was disconnected and its locks released");
    assert!(first > 0, "V was served while it read");
    assert!(v.closed_within(TIMEOUT), "V's connection is closed");
    wait_until("V's locks to go", TIMEOUT, || w.locks("slow").len() == 1);
    let log = d.log_text();
    assert!(log.contains("not reading"), "logged:\n{log}");
}

#[test]
fn pull_mode_reads_like_the_device() {
    let d = Daemon::start();
    let (_ctl, _ls, minor) = d.lockspace("pull");
    let mut p = d.connect();
    assert_eq!(
        p.hello(wire::ROLE_LOCKSPACE, wire::HELLO_PULL, b"pull"),
        minor
    );
    let r = req(M::Ex, b"r", F::VALBLK);
    let lkid = p.lock(&r);
    assert!(lkid > 0);
    p.sync();
    assert!(p.asts.is_empty(), "nothing pushed in pull mode");
    assert_eq!(p.call(Kind::Read, &71u32.to_le_bytes()), neg(Errno::EINVAL));
    p.send(Kind::Read, &12u32.to_le_bytes());
    assert_eq!(p.reply().0, Kind::Version);
    p.send(Kind::Read, &72u32.to_le_bytes());
    let (k, body) = p.next_frame().expect("an answer");
    assert_eq!(
        (k, body.len()),
        (Kind::Ast, 72),
        "no room for the value block"
    );
    let rec = records::decode_result(&body).expect("record");
    assert_eq!((i64::from(rec.lkid), rec.status, rec.lvb), (lkid, 0, None));
    assert_eq!(
        p.call(Kind::Read, &104u32.to_le_bytes()),
        neg(Errno::EAGAIN)
    );
    assert_eq!(p.unlock(&unl(lkid as u32, F::empty())), 0);
    p.send(Kind::Read, &4096u32.to_le_bytes());
    let (k, body) = p.next_frame().expect("an answer");
    assert_eq!(k, Kind::Ast);
    assert_eq!(
        records::decode_result(&body).expect("record").status,
        EUNLOCK
    );
}

#[test]
fn compat_writers_get_compat_records() {
    let d = Daemon::start();
    let (_ctl, mut c, _) = d.lockspace("compat");
    // struct dlm_write_request32 with the lock params of a 32-bit process.
    let mut b = vec![0u8; records::WRITE_REQUEST32_SIZE + 3];
    b[..12].copy_from_slice(&records::encode_version());
    b[12] = Cmd::Lock as u8;
    b[13] = 0; // is64bit
    b[16] = M::Pr as u8;
    b[17] = 3; // namelen
    b[52..56].copy_from_slice(&0xcau32.to_ne_bytes()); // castaddr
    b[64..68].copy_from_slice(&0x5bu32.to_ne_bytes()); // lksb
    b[100..103].copy_from_slice(b"c32");
    let lkid = c.write(&b);
    assert!(lkid > 0);
    let (k, body) = c.next_frame().expect("a callback");
    assert_eq!(k, Kind::Ast);
    assert_eq!(
        body.len(),
        records::RESULT32_SIZE,
        "the 52-byte compat record"
    );
    let u32_at = |o: usize| u32::from_ne_bytes([body[o], body[o + 1], body[o + 2], body[o + 3]]);
    assert_eq!(u32_at(12), 52, "length");
    assert_eq!(u32_at(16), 0xca, "astaddr");
    assert_eq!(u32_at(24), 0x5b, "user_lksb");
    assert_eq!(u32_at(28), 0, "status");
    assert_eq!(i64::from(u32_at(32)), lkid, "lkid");
    let locks = c.locks("compat");
    assert_eq!(locks[0].resource, "c32");
}

/// A long answer comes in parts of at most a quarter of `--max-output`,
/// and a client that leaves it unread for a while is not disconnected
/// for it: the daemon makes the next part only as the last ones leave.
#[test]
fn long_query_answers_come_in_parts_within_the_output_bound() {
    let d = Daemon::start_with(&["--user", "--max-output", "4K"]);
    let (_ctl, mut ls, _) = d.lockspace("many");
    const N: usize = 3000;
    for i in 0..N {
        let name = format!("resource-with-a-long-name-{i:06}");
        assert!(ls.lock(&req(M::Pr, name.as_bytes(), F::empty())) > 0);
        if i % 500 == 499 {
            ls.asts.clear();
        }
    }
    ls.sync();
    ls.asts.clear();
    let mut q = d.connect();
    let mut body = vec![wire::QUERY_LOCKS];
    body.extend_from_slice(b"many");
    // The query and a request behind it, in one go; then nothing is read
    // for a few of the daemon's turns, while the socket fills.
    q.send(Kind::Query, &body);
    q.send(Kind::Version, &[]);
    for _ in 0..3 {
        ls.sync();
    }
    let mut json = Vec::new();
    let mut parts = Vec::new();
    loop {
        match q.next_frame().expect("the answer, not a disconnection") {
            (Kind::QueryPart, b) => {
                parts.push(b.len());
                json.extend_from_slice(&b);
            }
            (Kind::QueryReply, b) => {
                json.extend_from_slice(&b);
                break;
            }
            (k, _) => panic!("unexpected {k:?} inside the answer"),
        }
    }
    assert!(
        parts.len() >= 100,
        "{} parts for {} bytes",
        parts.len(),
        json.len()
    );
    assert!(
        parts.iter().all(|&n| n == 1024),
        "a quarter of 4K each: {parts:?}"
    );
    let locks: Vec<dlm_proto::query::LockInfo> = serde_json::from_slice(&json).expect("JSON");
    assert_eq!(locks.len(), N);
    assert!(locks.iter().all(|l| l.granted.as_deref() == Some("PR")));
    assert_eq!(q.next_frame().expect("then the version").0, Kind::Version);
    // The same through the helper, and the lockspace list.
    assert_eq!(q.locks("many").len(), N);
    assert_eq!(q.lockspaces()[0].locks, N);
    assert!(!d.log_text().contains("not reading"), "{}", d.log_text());
}

/// Past `--max-connections` a connection is answered `EMFILE` and closed;
/// the client library reports that errno. Once one closes, a new one is
/// served again.
#[test]
fn connections_past_the_cap_are_refused_with_emfile() {
    let d = Daemon::start_with(&["--max-connections", "3"]);
    let mut open: Vec<Client> = (0..3).map(|_| d.control()).collect();
    let mut extra = d.connect();
    match extra.reply() {
        (Kind::Result, body) => {
            assert_eq!(wire::result_value(&body), Ok(-i64::from(libc_emfile())))
        }
        (k, _) => panic!("a refused connection got {k:?}"),
    }
    assert!(
        extra.closed_within(TIMEOUT),
        "refused connections are closed"
    );
    let err = dlm::Dlm::builder()
        .backend(dlm::Backend::Fallback)
        .socket(&d.socket)
        .autostart(false)
        .open()
        .expect_err("the client library is refused too");
    assert_eq!(err.errno(), Errno::from_raw(libc_emfile()), "{err}");
    // The open ones still work; closing one makes room.
    assert!(open[0].lockspaces().is_empty());
    drop(open.pop());
    wait_until("a free connection", TIMEOUT, || {
        let mut c = d.connect();
        c.hello(wire::ROLE_CONTROL, 0, b"") == 0
    });
    assert!(
        d.log_text().contains("--max-connections"),
        "{}",
        d.log_text()
    );
}

/// Past `--max-lockspaces` a create of a new name is `ENOSPC`; creating
/// an existing one again still works, and a release makes room.
#[test]
fn lockspaces_past_the_cap_are_refused_with_enospc() {
    let d = Daemon::start_with(&["--max-lockspaces", "2"]);
    let mut ctl = d.control();
    let a = ctl.create("a", 0);
    assert!(a >= 0 && ctl.create("b", 0) >= 0);
    assert_eq!(ctl.create("c", 0), neg(Errno::from_raw(libc_enospc())));
    assert_eq!(
        ctl.create("a", 0),
        a,
        "an existing name is no new lockspace"
    );
    assert_eq!(ctl.remove(a, 0), 0);
    assert_eq!(ctl.remove(a, 0), 0);
    assert!(ctl.create("c", 0) >= 0, "room again after a release");
    assert!(
        d.log_text().contains("--max-lockspaces"),
        "{}",
        d.log_text()
    );
}

/// Bad cap values are refused at startup with a message.
#[test]
fn zero_caps_are_refused_at_startup() {
    for flag in ["--max-connections", "--max-lockspaces"] {
        let out = std::process::Command::new(DLMD)
            .args([flag, "0", "--socket", "/nonexistent/dlmd.sock"])
            .output()
            .expect("run dlmd");
        assert_eq!(out.status.code(), Some(2), "{flag} 0");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag) || err.contains("0 is not in"), "{err}");
    }
}

fn libc_emfile() -> i32 {
    rustix::io::Errno::MFILE.raw_os_error()
}

fn libc_enospc() -> i32 {
    rustix::io::Errno::NOSPC.raw_os_error()
}

/// Under the 6.12 model a pull-mode client's unread callbacks have no cap
/// (each conversion queues one more record, as in the kernel), so one that
/// never reads is held to --max-output like a push-mode client that stops
/// reading: disconnected, with its locks released. Under 6.1 each lock
/// holds at most six, and the same client is left alone.
#[test]
fn unread_callbacks_of_a_pull_client_are_bounded() {
    for (model, bounded) in [("6.12", true), ("6.1", false)] {
        let d = Daemon::start_with(&["--kernel-model", model, "--max-output", "4K"]);
        let (_ctl, _ls, minor) = d.lockspace("unread");
        let mut p = d.connect();
        assert_eq!(
            p.hello(wire::ROLE_LOCKSPACE, wire::HELLO_PULL, b"unread"),
            minor
        );
        let lkid = p.lock(&req(M::Ex, b"r", F::empty()));
        assert!(lkid > 0);
        // 100 records of 104 bytes: well past 4 KiB.
        let mut sent = 0;
        for _ in 0..100 {
            let c = conv(lkid as u32, M::Ex, F::empty());
            let w = records::encode_lock(Cmd::Lock, &c, records::VERSION);
            if !p.try_send(Kind::Write, w.as_bytes()) {
                break;
            }
            sent += 1;
        }
        assert!(
            bounded || sent == 100,
            "model {model}: hung up after {sent} writes"
        );
        if bounded {
            assert!(p.closed_within(TIMEOUT), "model {model}: still connected");
            let log = d.log_text();
            assert!(
                log.contains("callbacks unread"),
                "model {model}, logged:\n{log}"
            );
            let mut w = d.control();
            wait_until("the lock to go", TIMEOUT, || w.locks("unread").is_empty());
        } else {
            for _ in 0..100 {
                assert_eq!(p.reply().0, Kind::Result, "model {model}");
            }
            p.sync();
            let log = d.log_text();
            assert!(
                !log.contains("callbacks unread"),
                "model {model}, logged:\n{log}"
            );
            assert_eq!(p.unlock(&unl(lkid as u32, F::empty())), 0);
        }
    }
}
