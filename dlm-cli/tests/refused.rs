//! A daemon that turns `dlm` away says so: `dlm ls` and `dlm lock` report
//! that dlmd refused the connection, never that no daemon answers.
#![forbid(unsafe_code)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use dlm::{Backend, Dlm};

#[test]
fn a_full_daemon_is_reported_as_refusing_not_missing() {
    let dir = TempDir::new("refused");
    let socket = dir.0.join("dlmd.sock");
    let mut cmd = Command::new(dlmd_bin());
    cmd.arg("--socket")
        .arg(&socket)
        .args(["--user", "--max-connections", "1", "--log-level", "warn"])
        .stdin(Stdio::null());
    let _daemon = spawn(cmd);
    // The one connection the daemon takes.
    let mut held = None;
    wait_for("dlmd to serve", Duration::from_secs(10), || {
        held = Dlm::builder()
            .backend(Backend::Fallback)
            .socket(&socket)
            .autostart(false)
            .open()
            .ok();
        held.is_some()
    });
    let dlm = |args: &[&str]| {
        let mut c = Command::new(DLM);
        c.env("DLM_SOCKET", &socket)
            .env("DLM_BACKEND", "fallback")
            .env("DLM_NO_AUTOSTART", "1")
            .args(args);
        run(c)
    };
    let want = format!(
        "dlm: dlmd at {} refused the connection: it has its maximum of connections open",
        socket.display()
    );
    for args in [&["ls"][..], &["lock", "r", "--", "true"][..]] {
        let out = dlm(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(69), "dlm {args:?}: {err}");
        assert!(err.starts_with(&want), "dlm {args:?}: {err}");
        assert!(
            !err.contains("no dlm daemon answers"),
            "dlm {args:?}: {err}"
        );
    }
    drop(held);
    wait_for("room again", Duration::from_secs(10), || {
        dlm(&["ls"]).status.success()
    });
}
