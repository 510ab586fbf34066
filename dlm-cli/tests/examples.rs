//! The `dlm` crate's examples (`dlm/examples/`), each run as a real
//! process against a private `dlmd`, with their output checked.

mod common;

use std::process::Command;

use common::{example_bin, Daemon};

/// Run example `name` against `d`; its stdout, after checking it
/// succeeded.
fn run_example(d: &Daemon, name: &str) -> String {
    let mut c = Command::new(example_bin(name));
    c.env("DLM_SOCKET", &d.socket)
        .env("DLM_BACKEND", "fallback")
        .env("DLM_NO_AUTOSTART", "1");
    let out = c.output().expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "example {name} failed ({}):\n--- stdout ---\n{stdout}--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// No lockspace is left behind by an example: each releases what it made.
fn assert_no_lockspaces(d: &Daemon) {
    let left = d.client().lockspaces().expect("list lockspaces");
    assert!(left.is_empty(), "lockspaces left behind: {left:?}");
}

#[test]
fn blocking() {
    let d = Daemon::start();
    let out = run_example(&d, "blocking");
    assert!(out.contains("backend: fallback"), "{out}");
    assert!(out.contains("granted Ex lock 1"), "{out}");
    assert!(out.contains("unlocked"), "{out}");
    assert_no_lockspaces(&d);
}

#[test]
fn holder_releases() {
    let d = Daemon::start();
    let out = run_example(&d, "holder_releases");
    let at = |s: &str| out.find(s).unwrap_or_else(|| panic!("no {s:?} in:\n{out}"));
    // The waiter is granted only after the holder's callback released.
    assert!(at("blocks a Pr request") < at("holder: unlocking"), "{out}");
    assert!(at("holder: unlocking") < at("waiter: granted PR"), "{out}");
    assert_no_lockspaces(&d);
}

#[test]
fn value_block() {
    let d = Daemon::start();
    let out = run_example(&d, "value_block");
    let parent = out
        .lines()
        .find_map(|l| l.strip_prefix("parent "))
        .and_then(|l| l.split(':').next())
        .unwrap_or_else(|| panic!("no parent line in:\n{out}"));
    // The child, another process, read what the parent wrote.
    let expect = format!("read \"written by pid {parent}\"");
    let child = out
        .lines()
        .find(|l| l.starts_with("child "))
        .unwrap_or_else(|| panic!("no child line in:\n{out}"));
    assert!(child.contains(&expect), "{out}");
    assert!(!child.starts_with(&format!("child {parent}:")), "{out}");
    assert_no_lockspaces(&d);
}

#[test]
fn async_timeout() {
    let d = Daemon::start();
    let out = run_example(&d, "async_timeout");
    for line in [
        "a: holds EX",
        "b: gave up after 200 ms (request cancelled)",
        "a: converted to Pr (granted)",
        "b: granted PR beside a",
        "both unlocked",
    ] {
        assert!(out.contains(line), "no {line:?} in:\n{out}");
    }
    assert_no_lockspaces(&d);
}
