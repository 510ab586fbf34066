//! Multi-process behaviour through the fallback daemon, with real
//! processes: the `dlm` command, real `dlmd` daemons, real kills.
//!
//! Every daemon and child started here is stopped by PID when the test
//! ends, pass or fail.
#![forbid(unsafe_code)]

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{dlmd_bin, run, spawn, wait_for, Daemon, Reaped, TempDir, DLM};
use dlm::{LockFlags, LockMode, LockspaceName, ResourceName};
use dlm::{LockRequest, Outcome};

#[test]
fn counter_is_exact_when_every_increment_holds_ex() {
    let d = Daemon::start();
    let dir = TempDir::new("counter");
    let file = dir.0.join("counter");
    std::fs::write(&file, "0\n").unwrap();
    const PROCS: usize = 4;
    const ITERS: usize = 25;
    // Each worker is a shell loop of `dlm lock` runs, so the processes
    // contend for real.
    let script = format!(
        "i=0; while [ $i -lt {ITERS} ]; do \
           \"$DLM\" lock counter -- sh -c 'n=$(cat \"$F\"); sleep 0.001; echo $((n+1)) > \"$F\"' || exit 1; \
           i=$((i+1)); done"
    );
    let workers: Vec<Reaped> = (0..PROCS)
        .map(|_| {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(&script)
                .env("DLM", DLM)
                .env("F", &file)
                .env("DLM_SOCKET", &d.socket)
                .env("DLM_NO_AUTOSTART", "1")
                .env("DLM_BACKEND", "fallback");
            spawn(c)
        })
        .collect();
    for mut w in workers {
        let st = w.0.wait().unwrap();
        assert!(st.success(), "worker failed: {st}");
    }
    let n: usize = std::fs::read_to_string(&file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(n, PROCS * ITERS);
}

#[test]
fn pr_holders_hold_together_and_ex_excludes_them() {
    let d = Daemon::start();
    let dir = TempDir::new("pr");
    const N: usize = 3;
    // Each PR holder marks itself present, then waits until all N are
    // present at once: only possible if the PR locks are held together.
    let holders: Vec<Reaped> = (0..N)
        .map(|i| {
            let mut c = d.dlm();
            c.args(["lock", "--mode", "PR", "shared", "--", "sh", "-c"])
                .arg(format!(
                    "touch {dir}/in.{i}; t=0; while [ $(ls {dir} | grep -c '^in\\.') -lt {N} ]; do \
                       t=$((t+1)); [ $t -gt 1000 ] && exit 7; sleep 0.01; done; touch {dir}/all.{i}; \
                       t=0; while [ ! -e {dir}/release ] && [ $t -lt 3000 ]; do t=$((t+1)); sleep 0.01; done",
                    dir = dir.0.display()
                ));
            spawn(c)
        })
        .collect();
    wait_for("all PR holders together", Duration::from_secs(15), || {
        (0..N).all(|i| dir.0.join(format!("all.{i}")).exists())
    });
    // While they hold PR, EX is refused under --nowait...
    let mut ex = d.dlm();
    ex.args(["lock", "--nowait", "shared", "--", "true"]);
    let out = run(ex);
    assert_eq!(
        out.status.code(),
        Some(1),
        "EX must conflict with PR holders"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("is locked"));
    // ...and granted once they let go.
    std::fs::write(dir.0.join("release"), "").unwrap();
    for mut h in holders {
        assert!(h.0.wait().unwrap().success());
    }
    let mut ex = d.dlm();
    ex.args(["lock", "--nowait", "shared", "--", "true"]);
    assert_eq!(run(ex).status.code(), Some(0));
}

#[test]
fn lock_exits_with_the_commands_status_and_times_out_clearly() {
    let d = Daemon::start();
    let mut c = d.dlm();
    c.args(["lock", "r", "--", "sh", "-c", "exit 42"]);
    assert_eq!(run(c).status.code(), Some(42));

    let dir = TempDir::new("timeout");
    let mut holder = d.dlm();
    holder.args(["lock", "r", "--", "sh", "-c"]).arg(format!(
        "touch {0}/held; t=0; while [ ! -e {0}/go ] && [ $t -lt 3000 ]; do t=$((t+1)); sleep 0.01; done",
        dir.0.display()
    ));
    let holder = spawn(holder);
    wait_for("holder", Duration::from_secs(10), || {
        dir.0.join("held").exists()
    });
    let mut waiter = d.dlm();
    waiter.args(["lock", "--timeout", "0.3", "r", "--", "true"]);
    let started = Instant::now();
    let out = run(waiter);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("timed out"),
        "{:?}",
        out
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    let mut waiter = d.dlm();
    waiter.args(["lock", "-n", "-E", "9", "r", "--", "true"]);
    assert_eq!(run(waiter).status.code(), Some(9), "--conflict-exit-code");
    std::fs::write(dir.0.join("go"), "").unwrap();
    drop(holder);
}

#[test]
fn bad_arguments_are_clear_errors() {
    let d = Daemon::start();
    for (args, code) in [
        (vec!["lock", "--mode", "XX", "r", "--", "true"], 64),
        (vec!["lock", "--lockspace", "a/b", "r", "--", "true"], 64),
        (vec!["lock", &"r".repeat(65), "--", "true"], 64),
        (vec!["lock", "--timeout", "-1", "r", "--", "true"], 64),
        (vec!["locks", "no-such-lockspace"], 71),
    ] {
        let mut c = d.dlm();
        c.args(&args);
        let out = run(c);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{args:?} says why");
    }
    let mut c = d.dlm();
    c.args(["lock", "r", "--", "/nonexistent/program"]);
    assert_eq!(run(c).status.code(), Some(127));
}

#[test]
fn killing_a_holder_releases_its_lock_to_the_waiter() {
    let d = Daemon::start();
    let dir = TempDir::new("kill");
    let mut holder = d.dlm();
    holder
        .args(["lock", "victim", "--", "sh", "-c"])
        .arg(format!("touch {}/held; exec sleep 600", dir.0.display()));
    let holder = spawn(holder);
    wait_for("holder", Duration::from_secs(10), || {
        dir.0.join("held").exists()
    });
    let mut waiter = d.dlm();
    waiter.args(["lock", "victim", "--", "true"]);
    let mut waiter = spawn(waiter);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        waiter.0.try_wait().unwrap().is_none(),
        "the waiter must be blocked"
    );
    // kill -9 the whole holder group (dlm and its sleep).
    let pgid = rustix::process::Pid::from_raw(holder.0.id() as i32).unwrap();
    rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        if let Some(st) = waiter.0.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "waiter never got the lock");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(st.success());
}

#[test]
fn persistent_lock_survives_a_kill_as_an_orphan_and_is_adopted() {
    let d = Daemon::start();
    let mut w = d.dlm();
    w.args(["bench-worker", "persistent", "orphaned"])
        .stdout(Stdio::piped());
    let mut worker = spawn(w);
    let mut line = String::new();
    {
        use std::io::BufRead;
        let out = worker.0.stdout.take().unwrap();
        std::io::BufReader::new(out).read_line(&mut line).unwrap();
    }
    assert_eq!(line.trim(), "ready");
    worker.0.kill().unwrap();
    worker.0.wait().unwrap();

    let dlm = d.client();
    let ls = dlm
        .open_lockspace(&LockspaceName::new("dlm-bench").unwrap())
        .unwrap();
    let res = ResourceName::new("orphaned").unwrap();
    // The orphan still protects the resource.
    let probe = ls
        .lock(LockRequest::new(res, LockMode::Pr).flags(LockFlags::NOQUEUE))
        .unwrap();
    assert!(
        matches!(probe, Outcome::NotGranted(_)),
        "orphan must block PR"
    );
    // Adopting in another mode: EAGAIN; in its mode: granted.
    let adopt = |m| LockRequest::new(res, m).flags(LockFlags::ORPHAN | LockFlags::PERSISTENT);
    let e = ls.lock(adopt(LockMode::Pr)).unwrap_err();
    assert_eq!(e.errno(), dlm::Errno::EAGAIN);
    let lock = ls
        .lock(adopt(LockMode::Ex))
        .unwrap()
        .granted()
        .expect("adopted");
    assert_eq!(lock.mode(), LockMode::Ex);
    lock.unlock().unwrap();
    let e = ls.lock(adopt(LockMode::Ex)).unwrap_err();
    assert_eq!(e.errno(), dlm::Errno::ENOENT);
}

#[test]
fn ls_locks_and_status_report_what_exists() {
    let d = Daemon::start();
    let mut j = d.dlm();
    j.args(["join", "vg7"]);
    assert!(run(j).status.success());
    let mut ls = d.dlm();
    ls.args(["ls", "--json"]);
    let out = run(ls);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.as_array().unwrap().iter().any(|s| s["name"] == "vg7"));

    let dlm = d.client();
    let space = dlm
        .open_lockspace(&LockspaceName::new("vg7").unwrap())
        .unwrap();
    let held = space
        .lock(LockRequest::new(
            ResourceName::new("disk\x01").unwrap(),
            LockMode::Pw,
        ))
        .unwrap()
        .granted()
        .unwrap();
    let mut locks = d.dlm();
    locks.args(["locks", "vg7"]);
    let out = run(locks);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("disk\\x01") && text.contains("PW"), "{text}");
    assert!(
        text.contains(&std::process::id().to_string()),
        "owner pid shown: {text}"
    );
    held.unlock().unwrap();
    drop(space);

    let mut st = d.dlm();
    st.arg("status");
    let out = run(st);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("backend: fallback"), "{text}");
    assert!(
        text.contains(&format!("dlmd pid {}", d.proc.0.id())),
        "{text}"
    );

    let mut leave = d.dlm();
    leave.args(["leave", "vg7"]);
    assert!(run(leave).status.success());
    let mut ls = d.dlm();
    ls.args(["ls", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&run(ls).stdout).unwrap();
    assert!(!v.as_array().unwrap().iter().any(|s| s["name"] == "vg7"));
}

#[test]
fn locks_lists_up_to_a_limit_and_says_how_many_more() {
    let d = Daemon::start();
    let dlm = d.client();
    let space = dlm
        .create_lockspace(
            &LockspaceName::new("many").unwrap(),
            dlm::LockspaceFlags::empty(),
            0o600,
        )
        .unwrap();
    let held: Vec<_> = (0..5)
        .map(|i| {
            let r = ResourceName::new(format!("res{i}")).unwrap();
            space
                .lock(LockRequest::new(r, LockMode::Pr))
                .unwrap()
                .granted()
                .unwrap()
        })
        .collect();
    let locks = |args: &[&str]| {
        let mut c = d.dlm();
        c.arg("locks").arg("many").args(args);
        run(c)
    };
    let rows = |out: &std::process::Output| -> Vec<String> {
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().skip(1).map(str::to_string).collect()
    };
    let out = locks(&["--limit", "2"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(rows(&out).len(), 2, "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 more lock(s) not shown"), "{err}");
    // The next page starts after the last lock id shown.
    let last = rows(&out)[1].split_whitespace().next().unwrap().to_string();
    let next = locks(&["--limit", "2", "--after", &last]);
    assert_eq!(rows(&next).len(), 2, "{next:?}");
    assert!(rows(&next)[0].contains("res2"), "{next:?}");
    let out = locks(&["--all"]);
    assert_eq!(rows(&out).len(), 5, "{out:?}");
    assert!(out.stderr.is_empty(), "nothing left out: {out:?}");
    let out = locks(&[]);
    assert_eq!(rows(&out).len(), 5, "under the default limit: {out:?}");
    let out = locks(&["--json", "--limit", "1"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["locks"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(
        (v["truncated"].as_bool(), v["more"].as_u64()),
        (Some(true), Some(4))
    );
    let out = locks(&["--all", "--limit", "2"]);
    assert_eq!(out.status.code(), Some(64), "--all and --limit conflict");
    drop(held);
}

#[test]
fn a_second_uid_is_refused_a_0600_lockspace() {
    if !rustix::process::getuid().is_root() {
        eprintln!("SKIPPED a_second_uid_is_refused_a_0600_lockspace: needs root to run a client as another uid");
        return;
    }
    let d = Daemon::start();
    // The socket's directory must let the other user reach the socket.
    let dir = d.socket.parent().unwrap();
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut j = d.dlm();
    j.args(["join", "private", "--perm", "600"]);
    assert!(run(j).status.success());
    let mut c = d.dlm();
    c.args(["lock", "--lockspace", "private", "r", "--", "true"])
        .uid(65534)
        .gid(65534);
    let out = run(c);
    assert_eq!(out.status.code(), Some(77), "EX_NOPERM: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("denied") || err.contains("not permitted"),
        "{err}"
    );
    // Root still gets in.
    let mut c = d.dlm();
    c.args(["lock", "--lockspace", "private", "r", "--", "true"]);
    assert!(run(c).status.success());
}

#[test]
fn twenty_processes_at_once_start_exactly_one_daemon() {
    let dir = TempDir::new("herd");
    let socket = dir.0.join("run").join("dlmd.sock");
    let children: Vec<Reaped> = (0..20)
        .map(|_| {
            let mut c = Command::new(DLM);
            c.args(["lock", "herd", "--", "true"])
                .env("DLM_SOCKET", &socket)
                .env("DLM_BACKEND", "fallback")
                .env("DLM_DLMD", dlmd_bin())
                .env_remove("DLM_NO_AUTOSTART")
                .stderr(Stdio::piped());
            spawn(c)
        })
        .collect();
    for mut c in children {
        let st = c.0.wait().unwrap();
        let mut err = String::new();
        if let Some(mut e) = c.0.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        assert!(st.success(), "{st}: {err}");
    }
    // Exactly one dlmd serves that socket, and it outlived its starters.
    let needle = socket.to_string_lossy().into_owned();
    let serving: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c).replace('\0', " ");
                    c.contains("dlmd") && c.contains(&needle)
                })
                .unwrap_or(false)
        })
        .collect();
    // Stop them all by PID before asserting, so nothing is left running.
    for pid in &serving {
        if let Some(p) = rustix::process::Pid::from_raw(*pid) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
        }
    }
    assert_eq!(serving.len(), 1, "dlmd processes for {needle}: {serving:?}");
}
