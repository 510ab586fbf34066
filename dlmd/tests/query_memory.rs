//! Query answers are made as the client reads them: six queries of a
//! lockspace with a million locks that are never read leave the daemon's
//! memory where it was.
#![forbid(unsafe_code)]

mod common;

use std::io::Write;
use std::time::Instant;

use common::*;
use dlm_proto::records::{self, Command as Cmd};
use dlm_proto::wire::{self, Kind};
use dlm_proto::{LockFlags as F, LockMode as M};

/// Locks held while the queries run.
const LOCKS: usize = 1_000_000;
/// Queries that are sent and never read.
const QUERIES: usize = 6;
/// How much the daemon may grow for all of them together, in KiB.
const SLACK_KIB: u64 = 50 * 1024;
/// Lock requests written before their answers are read.
const BATCH: usize = 4096;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("dlmd's status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("a VmRSS line");
    line.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in kB")
}

/// Take `n` EX locks on resources `r0`, `r1`, ... through `c`, writing
/// [`BATCH`] requests at a time before reading their answers.
fn take_locks(c: &mut Client, n: usize) {
    let mut frames = Vec::new();
    let (mut results, mut grants) = (0, 0);
    let mut sent = 0;
    while sent < n {
        frames.clear();
        let batch = BATCH.min(n - sent);
        for i in sent..sent + batch {
            let r = req(M::Ex, format!("r{i}").as_bytes(), F::empty());
            let w = records::encode_lock(Cmd::Lock, &r, records::VERSION);
            wire::put_frame(&mut frames, Kind::Write, w.as_bytes()).expect("frame");
        }
        c.stream.write_all(&frames).expect("send lock requests");
        sent += batch;
        while results < sent {
            match c.next_frame().expect("dlmd answers") {
                (Kind::Result, b) => {
                    let v = wire::result_value(&b).expect("result");
                    assert!(v > 0, "lock {results}: {v}");
                    results += 1;
                }
                (Kind::Ast, b) => {
                    let a = records::decode_result(&b).expect("callback");
                    assert_eq!(a.status, 0, "lock {} granted", a.lkid);
                    grants += 1;
                }
                (k, _) => panic!("unexpected {k:?} while locking"),
            }
        }
    }
    c.sync();
    grants += c.asts.drain(..).filter(|a| a.status == 0).count();
    assert_eq!(grants, n, "every lock granted");
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "a million locks: run with cargo test --release"
)]
fn unread_queries_of_a_million_locks_leave_memory_as_it_was() {
    let d = Daemon::start();
    let (_ctl, mut ls, _) = d.lockspace("big");
    take_locks(&mut ls, LOCKS);
    let pid = d.proc.pid();
    let before = rss_kib(pid);
    let mut body = vec![wire::QUERY_LOCKS];
    body.extend_from_slice(b"big");
    let begun = Instant::now();
    let mut queries: Vec<(Client, Vec<u8>)> = (0..QUERIES)
        .map(|_| {
            let mut q = d.control();
            q.send(Kind::Query, &body);
            // The answer has begun; from now on nothing more is read.
            match q.next_frame() {
                Some((Kind::QueryPart, first)) => (q, first),
                other => panic!("expected the first part of the answer, got {other:?}"),
            }
        })
        .collect();
    let begun = begun.elapsed().as_secs_f64();
    // A round trip on another connection: the daemon has had its turns.
    ls.sync();
    let after = rss_kib(pid);
    eprintln!("the first part of all {QUERIES} answers arrived in {begun:.2} s");
    eprintln!(
        "dlmd RSS with {LOCKS} locks: {before} KiB before {QUERIES} unread queries, \
         {after} KiB after ({:+} KiB)",
        after as i64 - before as i64
    );
    assert!(
        after <= before + SLACK_KIB,
        "dlmd grew from {before} KiB to {after} KiB for {QUERIES} unread queries"
    );
    // The unread ones are still connected, and one that reads on gets
    // the whole answer: every lock once, by lock id.
    let (q, json) = &mut queries[0];
    let start = Instant::now();
    loop {
        match q.next_frame() {
            Some((Kind::QueryPart, b)) => json.extend_from_slice(&b),
            Some((Kind::QueryReply, b)) => {
                json.extend_from_slice(&b);
                break;
            }
            other => panic!("unexpected {other:?} inside the answer"),
        }
    }
    eprintln!(
        "read the rest of one answer ({} bytes of JSON) in {:.2} s",
        json.len(),
        start.elapsed().as_secs_f64()
    );
    let locks: Vec<dlm_proto::query::LockInfo> = serde_json::from_slice(json).expect("JSON");
    assert_eq!(locks.len(), LOCKS, "every lock listed");
    assert!(
        locks.windows(2).all(|w| w[0].lkid < w[1].lkid),
        "each lock once, by lock id"
    );
    drop(locks);
    drop(queries);
    ls.sync();
    let log = d.log_text();
    assert!(
        !log.contains("not reading"),
        "no one was disconnected:\n{log}"
    );
    eprintln!("dlmd RSS after the queries closed: {} KiB", rss_kib(pid));
}
