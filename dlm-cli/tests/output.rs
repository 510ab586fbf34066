//! `dlm ls`, `locks`, `status`, `join` and `leave` say what is so, with
//! one set of names in the table and in JSON. Real `dlm` processes on a
//! private `dlmd`.
#![forbid(unsafe_code)]

mod common;

use std::io::Read;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::{spawn, wait_for, Daemon, TempDir};
use dlm::{LockFlags, LockMode, LockRequest, LockspaceName, ResourceName, ValueBlock};

const BOUND: Duration = Duration::from_secs(20);

fn dlm(d: &Daemon, args: &[&str]) -> Output {
    let mut c = d.dlm();
    c.args(args).stdin(Stdio::null());
    c.output().expect("run dlm")
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(o)).expect("JSON")
}

#[test]
fn ls_has_one_set_of_names_and_the_mode_in_octal() {
    let d = Daemon::start();
    stdout(&dlm(&d, &["join", "vg1", "--perm", "640"]));
    // The old name of the option still works.
    stdout(&dlm(&d, &["join", "vg2", "--mode", "600"]));
    let v = json(&dlm(&d, &["ls", "--json"]));
    let vg1 = v
        .as_array()
        .expect("a list")
        .iter()
        .find(|s| s["name"] == "vg1")
        .expect("vg1 listed");
    assert_eq!(vg1["mode"], "0640", "{vg1}");
    assert_eq!(vg1["create_count"], 1, "{vg1}");
    let mut keys: Vec<String> = vg1
        .as_object()
        .expect("an object")
        .keys()
        .map(|k| k.to_uppercase())
        .collect();
    let table = stdout(&dlm(&d, &["ls"]));
    let mut header: Vec<String> = table
        .lines()
        .next()
        .expect("a header")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    keys.sort();
    header.sort();
    assert_eq!(header, keys, "the table's columns are the JSON fields");
    let row = table
        .lines()
        .find(|l| l.starts_with("vg1 "))
        .expect("vg1 in the table");
    assert!(row.split_whitespace().any(|c| c == "0640"), "{row}");
}

#[test]
fn leave_says_whether_the_lockspace_stays() {
    let d = Daemon::start();
    for _ in 0..3 {
        stdout(&dlm(&d, &["join", "twice"]));
    }
    let said = stdout(&dlm(&d, &["leave", "twice"]));
    assert!(
        said.contains("dropped one reference to lockspace twice; it stays: 2 reference(s) remain"),
        "{said}"
    );
    let v = json(&dlm(&d, &["ls", "--json"]));
    let left = v
        .as_array()
        .expect("list")
        .iter()
        .find(|s| s["name"] == "twice");
    assert_eq!(left.map(|s| s["create_count"].clone()), Some(2.into()));
    let said = stdout(&dlm(&d, &["leave", "--force", "twice"]));
    assert!(
        said.contains("released lockspace twice: dropped all 2 references"),
        "{said}"
    );
    let v = json(&dlm(&d, &["ls", "--json"]));
    assert!(!v
        .as_array()
        .expect("list")
        .iter()
        .any(|s| s["name"] == "twice"));
    stdout(&dlm(&d, &["join", "once"]));
    let said = stdout(&dlm(&d, &["leave", "once"]));
    assert!(
        said.contains("released lockspace once: that was its last reference"),
        "{said}"
    );
    let gone = dlm(&d, &["leave", "once"]);
    assert_eq!(gone.status.code(), Some(71), "{gone:?}");
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no such lockspace"));
}

#[test]
fn status_in_json_names_the_daemon_and_its_socket() {
    let d = Daemon::start();
    let v = json(&dlm(&d, &["status", "--json"]));
    assert_eq!(v["backend"], "fallback", "{v}");
    assert_eq!(v["daemon_pid"], d.proc.0.id(), "{v}");
    assert_eq!(v["socket"], d.socket.display().to_string(), "{v}");
    assert_eq!(v["backend_version"], "6.0.2", "{v}");
    // The test's daemon logs to dlmd.log next to its socket, as an
    // auto-started one does.
    assert_eq!(
        v["log_file"],
        d.socket.with_file_name("dlmd.log").display().to_string(),
        "{v}"
    );
}

#[test]
fn status_shows_the_daemons_kernel_model_and_where_it_came_from() {
    let d = Daemon::start_with(&["--kernel-model", "6.12"]);
    let v = json(&dlm(&d, &["status", "--json"]));
    assert_eq!(
        (&v["kernel_model"], &v["kernel_model_source"]),
        (&"6.12".into(), &"option".into()),
        "{v}"
    );
    let v = json(&dlm(&d, &["daemon", "status", "--json"]));
    assert_eq!(v["kernel_model"], "6.12", "{v}");
    let text = String::from_utf8_lossy(&dlm(&d, &["status"]).stdout).into_owned();
    assert!(
        text.contains("kernel model: Linux 6.12 (chosen with dlmd --kernel-model)"),
        "{text}"
    );
    let text = String::from_utf8_lossy(&dlm(&d, &["daemon", "status"]).stdout).into_owned();
    assert!(text.contains("kernel model: Linux 6.12 ("), "{text}");

    // By default: the running kernel's series if it is 6.1 or 6.12, else
    // the newest.
    let d = Daemon::start();
    let v = json(&dlm(&d, &["status", "--json"]));
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("uname -r");
    let series: Vec<&str> = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .take(2)
        .collect();
    let want = match series.as_slice() {
        ["6", "1"] => ("6.1", "running kernel"),
        ["6", "12"] => ("6.12", "running kernel"),
        _ => ("6.12", "newest"),
    };
    assert_eq!(
        (&v["kernel_model"], &v["kernel_model_source"]),
        (&want.0.into(), &want.1.into()),
        "{v} on {release}"
    );
}

#[test]
fn locks_show_flags_value_block_and_the_command_that_holds_the_lock() {
    let d = Daemon::start();
    let client = d.client();
    let name = LockspaceName::new("lv").expect("name");
    let ls = client
        .create_lockspace(&name, dlm::LockspaceFlags::empty(), 0o600)
        .expect("create");
    // Hold a lock that keeps the resource (and its value block), then
    // write a value block.
    let res = ResourceName::new("vb").expect("name");
    let held = ls
        .lock(LockRequest::new(res, LockMode::Nl).value_block())
        .expect("lock")
        .granted()
        .expect("granted");
    let w = ls
        .lock(LockRequest::new(res, LockMode::Ex).value_block())
        .expect("lock")
        .granted()
        .expect("granted");
    let lvb = ValueBlock::from_prefix(b"hello");
    w.unlock_with(LockFlags::VALBLK, Some(&lvb))
        .expect("unlock with lvb");

    // A `dlm lock` whose command holds the lock on "cmd".
    let dir = TempDir::new("locks");
    let go = dir.0.join("go");
    let mut c = d.dlm();
    c.args(["lock", "-l", "lv", "cmd", "sh", "-c"])
        .arg("echo started; t=0; while [ ! -e \"$G\" ] && [ $t -lt 3000 ]; do t=$((t+1)); sleep 0.01; done")
        .env("G", &go)
        .stdout(Stdio::piped());
    let mut holder = spawn(c);
    let mut first = [0u8; 8];
    holder
        .0
        .stdout
        .take()
        .expect("stdout")
        .read_exact(&mut first)
        .expect("the command runs");
    let dlm_pid = holder.0.id();
    let mut v = serde_json::Value::Null;
    wait_for("dlm lock's command to appear as its child", BOUND, || {
        v = json(&dlm(&d, &["locks", "lv", "--json"]));
        v["locks"].as_array().is_some_and(|l| {
            l.iter().any(|l| {
                l["process"]
                    .as_str()
                    .is_some_and(|p| p.contains("inherited by"))
            })
        })
    });
    let locks = v["locks"].as_array().expect("locks");
    let vb = locks
        .iter()
        .find(|l| l["resource"] == "vb")
        .expect("vb listed");
    assert_eq!(vb["lvb"], "hello", "{vb}");
    assert!(
        vb["lvb_hex"]
            .as_str()
            .is_some_and(|h| h.starts_with("68656c6c6f00")),
        "{vb}"
    );
    assert_eq!(vb["flags"], "VALBLK", "{vb}");
    assert_eq!(vb["pid"], std::process::id(), "{vb}");
    assert_eq!(vb["master"], 0, "{vb}");
    let cmd = locks
        .iter()
        .find(|l| l["resource"] == "cmd")
        .expect("cmd listed");
    assert_eq!(cmd["pid"], dlm_pid, "the DLM records dlm's pid: {cmd}");
    let process = cmd["process"].as_str().expect("process");
    assert!(process.starts_with("dlm; inherited by "), "{process}");
    assert!(process.ends_with("(sh)"), "{process}");
    // The table has the same columns and the printable value block.
    let table = stdout(&dlm(&d, &["locks", "lv"]));
    let header: Vec<&str> = table
        .lines()
        .next()
        .expect("header")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "LKID",
            "RESOURCE",
            "GRANTED",
            "REQUESTED",
            "QUEUE",
            "FLAGS",
            "PID",
            "PROCESS",
            "ORPHAN",
            "LVB"
        ]
    );
    let row = table.lines().find(|l| l.contains(" vb ")).expect("vb row");
    assert!(row.ends_with(" hello") && row.contains("VALBLK"), "{row}");
    let verbose = stdout(&dlm(&d, &["locks", "lv", "--verbose"]));
    assert!(verbose.contains("  master this node"), "{verbose}");
    assert!(verbose.contains("  lvb \"hello\""), "{verbose}");
    assert!(verbose.contains("  lvb_seq (dlmd keeps no"), "{verbose}");
    std::fs::write(&go, "").expect("go");
    let st = holder.0.wait().expect("dlm lock");
    assert!(st.success(), "{st}");
    held.unlock().expect("unlock");
}

#[test]
fn dlmd_help_says_how_a_lockspace_gets_its_mode() {
    let out = std::process::Command::new(common::dlmd_bin())
        .arg("--help")
        .output()
        .expect("dlmd --help");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(!help.contains("chmod"), "{help}");
    assert!(help.contains("--perm 660"), "{help}");
}

#[test]
fn a_reader_that_went_away_ends_the_command_without_a_panic() {
    let d = Daemon::start();
    stdout(&dlm(&d, &["join", "gone"]));
    for args in [
        &["ls"][..],
        &["ls", "--json"],
        &["locks", "gone"],
        &["status", "--json"],
        &["daemon", "status"],
    ] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let mut c = d.dlm();
        c.args(args).stdin(Stdio::null()).stdout(writer);
        let out = c.output().expect("run dlm");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(141), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: said nothing: {err}");
    }
}

/// `dlm bench` whose reader has gone (`dlm bench | head -1`, or a closed
/// pipe as here) ends with 128+SIGPIPE and no panic, as the other
/// commands do.
#[test]
fn bench_into_a_closed_pipe_does_not_panic() {
    let d = Daemon::start();
    let (r, w) = rustix::pipe::pipe().expect("pipe");
    drop(r);
    let mut c = d.dlm();
    c.args(["bench", "--secs", "0.1", "--hold", "100", "--socket"])
        .arg(&d.socket)
        .stdin(Stdio::null())
        .stdout(std::process::Stdio::from(w))
        .stderr(Stdio::piped());
    let out = c.output().expect("run dlm bench");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(128 + 13), "{err}");
}

/// `dlm lock` logs no warning of its own on a plain run (its lock's
/// callbacks are delivered once it holds the lock).
#[test]
fn dlm_lock_runs_without_warnings() {
    let d = Daemon::start();
    let out = dlm(&d, &["lock", "quiet", "true"]);
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("WARN"), "{err}");
}
