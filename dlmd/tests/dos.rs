//! Denial of service on the daemon: what one client can do to the
//! others. The log's rate limit is shared by all connections.

mod common;

use std::time::Instant;

use common::*;

/// The limits in `dlmd/src/ratelimit.rs`.
const RATE: u64 = 5;
const BURST: u64 = 50;
const SUMMARY_EVERY_SECS: u64 = 5;

/// The counts in the daemon's "suppressed K ..." lines.
fn suppressed_counts(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| l.split_once("] suppressed ").map(|(_, rest)| rest))
        .map(|rest| {
            let n = rest.split_whitespace().next().expect("a count");
            n.parse().expect("a number")
        })
        .collect()
}

/// A client that reconnects again and again, sending nonsense on each
/// connection, gets a bounded number of lines into the log however many
/// connections it uses; the rest are counted, and the count is logged.
#[test]
fn reconnecting_does_not_flood_the_log() {
    const CONNS: u64 = 2000;
    const FRAMES: u64 = 10;
    let start = Instant::now();
    let d = Daemon::start();
    let sock = d.socket.to_str().expect("utf-8 path").to_string();
    let (mut p, out) = spawn_helper(
        "flood",
        &[&sock, &CONNS.to_string(), &FRAMES.to_string()],
        None,
    );
    assert_eq!(
        out.line().as_deref(),
        Some(&*format!("sent {}", CONNS * FRAMES))
    );
    assert!(p.wait_timeout(TIMEOUT).is_some_and(|s| s.success()));
    // Every protocol error is either logged at warn level or counted in a
    // summary; the last summary comes at most SUMMARY_EVERY after the
    // last line held back.
    let warned = |log: &str| {
        log.lines()
            .filter(|l| l.contains(" WARN ") && l.contains("Write before Hello"))
            .count() as u64
    };
    let mut log = String::new();
    wait_until(
        "every protocol error to be logged or counted",
        TIMEOUT * 2,
        || {
            log = d.log_text();
            warned(&log) + suppressed_counts(&log).iter().sum::<u64>() >= CONNS * FRAMES
        },
    );
    let elapsed = start.elapsed().as_secs() + 1;
    let counts = suppressed_counts(&log);
    let total = warned(&log) + counts.iter().sum::<u64>();
    assert_eq!(total, CONNS * FRAMES, "each one exactly once:\n{log}");
    let warn_lines = log.lines().filter(|l| l.contains(" WARN ")).count() as u64;
    // The burst, the rate over the whole test, the "limit reached" notes
    // and the summaries.
    let bound = BURST + RATE * elapsed + (elapsed / SUMMARY_EVERY_SECS + 2) * 2;
    assert!(
        warn_lines <= bound,
        "{warn_lines} warn lines in {elapsed} s (bound {bound}) from {} inputs",
        CONNS * FRAMES
    );
    assert!(
        log.contains("log rate limit reached"),
        "the limit says when it takes effect"
    );
    assert!(
        !counts.is_empty() && counts.iter().all(|&n| n > 0),
        "{counts:?}"
    );
    // The daemon still serves.
    let mut c = d.control();
    assert!(c.lockspaces().is_empty());
}
