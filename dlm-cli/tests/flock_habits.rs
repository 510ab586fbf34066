//! What a flock(1) user types works with `dlm lock`, or fails with a hint:
//! `-s`/`-x`/`-e`, `-c`, a command without `--`, `-F`, `-w -1`, and exit
//! statuses that keep dlm's own errors (64 and up) apart from the
//! command's. Real `dlm` processes on a private `dlmd`.
#![forbid(unsafe_code)]

mod common;

use std::process::{Output, Stdio};
use std::time::Duration;

use common::{spawn, wait_for, Daemon, TempDir};

/// Bounded waits: they catch hangs, and are no speed targets.
const BOUND: Duration = Duration::from_secs(20);

/// Wait (in a script) until the file `$G` exists, 30 s at most.
const WAIT_GO: &str =
    "t=0; while [ ! -e \"$G\" ] && [ $t -lt 3000 ]; do t=$((t+1)); sleep 0.01; done";

fn dlm(d: &Daemon, args: &[&str]) -> Output {
    let mut c = d.dlm();
    c.args(args).env("SHELL", "/bin/sh").stdin(Stdio::null());
    c.output().expect("run dlm")
}

/// Read what `r` writes to its piped stdout and stderr until it exits.
fn output_of(r: &mut common::Reaped) -> Output {
    use std::io::Read;
    let mut stderr = r.0.stderr.take();
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_end(&mut b);
        }
        b
    });
    let mut stdout = Vec::new();
    if let Some(o) = r.0.stdout.as_mut() {
        let _ = o.read_to_end(&mut stdout);
    }
    let status = r.0.wait().expect("wait");
    Output {
        status,
        stdout,
        stderr: err.join().expect("stderr reader"),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_command_runs_with_or_without_the_double_dash() {
    let d = Daemon::start();
    let out = dlm(&d, &["lock", "r", "echo", "-n", "hi", "--", "there"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        text(&out.stdout),
        "hi -- there",
        "options after the command are its own"
    );
    let out = dlm(&d, &["lock", "r", "--", "echo", "hi"]);
    assert_eq!(text(&out.stdout), "hi\n", "{out:?}");
    let out = dlm(&d, &["lock", "-n", "r", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "the command's status: {out:?}");
}

#[test]
fn dash_c_runs_a_command_line_through_the_shell() {
    let d = Daemon::start();
    let out = dlm(&d, &["lock", "r", "-c", "echo $((40 + 2)); exit 5"]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert_eq!(text(&out.stdout), "42\n");
    let out = dlm(&d, &["lock", "r", "-c", "true", "echo", "both"]);
    assert_eq!(out.status.code(), Some(64), "-c and a COMMAND: {out:?}");
}

#[test]
fn shared_and_exclusive_are_pr_and_ex() {
    let d = Daemon::start();
    let dir = TempDir::new("sx");
    let go = dir.0.join("go");
    let mut holder = d.dlm();
    holder
        .args(["lock", "-s", "r", "sh", "-c"])
        .arg(format!("echo held; {WAIT_GO}"))
        .env("G", &go)
        .stdout(Stdio::piped());
    let mut holder = spawn(holder);
    let mut out = holder.0.stdout.take().expect("stdout");
    let mut first = [0u8; 5];
    std::io::Read::read_exact(&mut out, &mut first).expect("the holder says it holds");
    assert_eq!(&first, b"held\n");
    let st = dlm(&d, &["lock", "-s", "--nowait", "r", "true"]);
    assert!(st.status.success(), "PR is compatible with PR: {st:?}");
    for flag in ["-x", "-e", "--exclusive"] {
        let st = dlm(&d, &["lock", flag, "--nowait", "r", "true"]);
        assert_eq!(st.status.code(), Some(1), "{flag}: EX waits for PR: {st:?}");
        assert!(
            text(&st.stderr).contains("r is locked (--nowait)"),
            "{st:?}"
        );
    }
    let st = dlm(&d, &["lock", "-s", "-x", "r", "true"]);
    assert_eq!(st.status.code(), Some(64), "-s and -x conflict: {st:?}");
    let st = dlm(&d, &["lock", "-s", "--mode", "EX", "r", "true"]);
    assert_eq!(st.status.code(), Some(64), "-s and --mode conflict: {st:?}");
    std::fs::write(&go, "").expect("go");
    let st = holder.0.wait().expect("holder");
    assert!(st.success(), "{st}");
}

#[test]
fn no_fork_execs_the_command_which_then_owns_the_lock() {
    let d = Daemon::start();
    let dlm_bin = common::DLM;
    // The command, run in dlm's place, tries the lock itself: busy.
    let script = format!("echo $$; {dlm_bin} lock --nowait r true; echo inner=$?");
    let mut c = d.dlm();
    c.args(["lock", "-F", "r", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn(c);
    let pid = child.0.id();
    let out = output_of(&mut child);
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&pid.to_string().as_str()),
        "exec'd in place: {out:?}"
    );
    assert_eq!(
        lines.get(1),
        Some(&"inner=1"),
        "the lock is held while it runs: {out:?}"
    );
    assert!(out.status.success(), "the command's own status: {out:?}");
    // Gone with the command.
    let st = dlm(&d, &["lock", "--nowait", "r", "true"]);
    assert!(
        st.status.success(),
        "released when the command exited: {st:?}"
    );
}

#[test]
fn what_flock_takes_and_dlm_does_not_gets_a_hint() {
    let d = Daemon::start();
    let cases: [(&[&str], &str); 7] = [
        (
            &["lock", "-w", "-1", "r", "true"],
            "the seconds must be finite, zero or more",
        ),
        (
            &["lock", "--mode", "XX", "r", "true"],
            "NL (null), CR (concurrent read)",
        ),
        (&["lock", "-u", "r", "true"], "has no -u/--unlock"),
        (&["lock", "r"], "needs a COMMAND"),
        (&["lock", "-F", "-o", "r", "true"], "cannot be used with"),
        (&["lokc", "r", "true"], "similar subcommands"),
        (
            &["lock", "--bogus", "r", "true"],
            "unexpected argument '--bogus'",
        ),
    ];
    for (args, words) in cases {
        let out = dlm(&d, args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(err.contains(words), "{args:?}: {err}");
        assert!(
            !err.contains("'-- "),
            "{args:?}: no advice to use `--`: {err}"
        );
    }
}

#[test]
fn verbose_says_when_it_waits_and_when_it_got_the_lock() {
    let d = Daemon::start();
    let dir = TempDir::new("verbose");
    let go = dir.0.join("go");
    let log = dir.0.join("stderr");
    let mut holder = d.dlm();
    holder
        .args(["lock", "-v", "r", "sh", "-c", WAIT_GO])
        .env("G", &go)
        .stderr(Stdio::piped());
    let mut holder = spawn(holder);
    let mut waiter = d.dlm();
    waiter
        .args(["lock", "--verbose", "-w", "30", "r", "true"])
        .stderr(std::fs::File::create(&log).expect("stderr file"));
    wait_for("the holder to hold the lock", BOUND, || {
        let page = d
            .client()
            .locks(&dlm::LockspaceName::new("default").expect("name"))
            .unwrap_or_default();
        page.iter().any(|l| l.granted.is_some())
    });
    let mut waiter = spawn(waiter);
    wait_for("the waiter to say it waits", BOUND, || {
        std::fs::read_to_string(&log).is_ok_and(|s| s.contains("waiting"))
    });
    std::fs::write(&go, "").expect("go");
    let st = waiter.0.wait().expect("waiter");
    assert!(st.success(), "{st}");
    let said = std::fs::read_to_string(&log).expect("stderr");
    assert!(
        said.contains(
            "dlm: the EX lock on r (lockspace default) is held by others: \
             waiting for at most 30 s (--timeout)"
        ),
        "{said}"
    );
    assert!(
        said.contains("dlm: got the EX lock on r (lockspace default) after "),
        "{said}"
    );
    let out = output_of(&mut holder);
    assert!(
        text(&out.stderr).contains("dlm: got the EX lock on r (lockspace default) at once"),
        "{out:?}"
    );
}

#[test]
fn help_documents_the_exit_statuses() {
    for args in [&["--help"][..], &["lock", "--help"][..]] {
        let out = std::process::Command::new(common::DLM)
            .args(args)
            .output()
            .expect("dlm --help");
        assert!(out.status.success());
        let help = text(&out.stdout);
        for line in [
            "64       usage",
            "69       no DLM",
            "75       dlm lock: the lock was lost",
            "77       permission denied",
        ] {
            assert!(help.contains(line), "{args:?} lacks {line:?}:\n{help}");
        }
    }
}
