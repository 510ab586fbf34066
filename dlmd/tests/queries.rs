//! Lock queries over the socket: pages with a limit and a `truncated`
//! marker, their errors, and a client that stops reading an answer.
#![forbid(unsafe_code)]

mod common;

use common::*;
use dlm_proto::query::LockPage;
use dlm_proto::wire::{self, Kind};
use dlm_proto::{Errno, LockFlags as F, LockMode as M};

fn page(c: &mut Client, name: &str, limit: u32, after: u32) -> Result<LockPage, i64> {
    let body = wire::page_query(limit, after, name.as_bytes());
    c.query(body[0], &body[1..])
}

#[test]
fn pages_list_every_lock_once_and_say_when_they_are_cut_short() {
    let d = Daemon::start();
    let (mut ctl, mut ls, _) = d.lockspace("paged");
    let ids: Vec<u32> = (0..25)
        .map(|i| {
            let id = ls.lock(&req(M::Pr, format!("r{i}").as_bytes(), F::empty()));
            u32::try_from(id).expect("a lock id")
        })
        .collect();
    ls.sync();
    let mut seen = Vec::new();
    let mut after = 0;
    let mut pages = 0;
    loop {
        let p = page(&mut ctl, "paged", 10, after).expect("a page");
        pages += 1;
        assert!(p.locks.len() <= 10);
        assert_eq!(p.more, ids.len() - seen.len() - p.locks.len());
        assert_eq!(p.truncated, p.more > 0);
        seen.extend(p.locks.iter().map(|l| l.lkid));
        match p.locks.last() {
            Some(l) if p.truncated => after = l.lkid,
            _ => break,
        }
    }
    assert_eq!((seen, pages), (ids.clone(), 3));
    // No limit to speak of: the whole list, not cut short.
    let all = page(&mut ctl, "paged", u32::MAX, 0).expect("a page");
    assert_eq!((all.locks.len(), all.truncated), (ids.len(), false));
    assert_eq!(all.locks, ctl.locks("paged"), "the same records");
    // Limit 0 only counts; an empty name is the connection's lockspace.
    let count = page(&mut ls, "", 0, 0).expect("a page");
    assert_eq!(
        (count.locks.len(), count.truncated, count.more),
        (0, true, 25)
    );
}

#[test]
fn bad_page_queries_get_errnos() {
    let d = Daemon::start();
    let (mut ctl, _ls, _) = d.lockspace("ls");
    let short = wire::page_query(1, 0, b"")[..8].to_vec();
    assert_eq!(
        ctl.query::<LockPage>(short[0], &short[1..]),
        Err(neg(Errno::EINVAL)),
        "a body under 9 bytes"
    );
    assert_eq!(
        page(&mut ctl, "", 1, 0),
        Err(neg(Errno::EINVAL)),
        "no lockspace"
    );
    assert_eq!(page(&mut ctl, "nope", 1, 0), Err(neg(Errno::ENOENT)));
    assert_eq!(page(&mut ctl, "a/b", 1, 0), Err(neg(Errno::EINVAL)));
    // The connection still works.
    assert!(page(&mut ctl, "ls", 1, 0).expect("a page").locks.is_empty());
}

/// A client that stops reading in the middle of an answer keeps its
/// connection while only the answer waits, and is disconnected, its
/// locks released, once callbacks pile up on top of it.
#[test]
fn a_client_that_stops_reading_an_answer_is_disconnected_when_callbacks_pile_up() {
    let d = Daemon::start_with(&["--user", "--max-output", "64K"]);
    let (_ctl, mut big, _) = d.lockspace("big");
    for i in 0..20_000 {
        let name = format!("resource-with-a-long-name-{i:06}");
        assert!(big.lock(&req(M::Pr, name.as_bytes(), F::empty())) > 0);
        if i % 1000 == 999 {
            big.asts.clear();
        }
    }
    big.sync();
    big.asts.clear();
    // V holds locks on "hot" and asks about "big" (megabytes of JSON),
    // then reads nothing more.
    let (_ctl2, mut v, _) = d.lockspace("hot");
    const N: usize = 5_000;
    let name = |i: usize| format!("hot{i}").into_bytes();
    for i in 0..N {
        assert!(v.lock(&req(M::Ex, &name(i), F::empty())) > 0);
        if i % 1000 == 999 {
            v.asts.clear();
        }
    }
    v.sync();
    v.asts.clear();
    let mut body = vec![wire::QUERY_LOCKS];
    body.extend_from_slice(b"big");
    v.send(Kind::Query, &body);
    for _ in 0..3 {
        big.sync();
    }
    let mut w = d.open("hot");
    assert!(
        !w.locks("hot").is_empty(),
        "V is still connected while only its answer waits"
    );
    // Each of W's requests sends V a blocking callback, until V is
    // disconnected and its locks are released.
    let flags = F::NOQUEUE | F::NOQUEUEBAST;
    let mut granted = None;
    for i in 0..N {
        assert!(w.lock(&req(M::Ex, &name(i), flags)) > 0);
        let st = w.wait_ast();
        if st.status == 0 {
            granted = Some(i);
            break;
        }
        assert_eq!(st.status, neg(Errno::EAGAIN) as i32);
    }
    let first = granted.expect("V was disconnected and its locks released");
    assert!(first > 0, "V kept its connection until callbacks piled up");
    assert!(v.closed_within(TIMEOUT), "V's connection is closed");
    wait_until("V's locks to go", TIMEOUT, || w.locks("hot").len() == 1);
    let log = d.log_text();
    assert!(log.contains("not reading"), "logged:\n{log}");
}
