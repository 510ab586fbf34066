//! Socket activation: `dlmd` serves a listening socket passed the way
//! systemd passes it (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`), here
//! by `systemd-socket-activate` from Debian's systemd package (which
//! starts its program once the first client knocks), and leaves
//! the socket to its owner when it stops. A socket of the wrong kind is
//! refused with a message.
#![forbid(unsafe_code)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{report_dlmd, wait_until, Proc, DLMD, TIMEOUT};
use dlm::{Backend, Dlm, LockMode, LockRequest, LockspaceFlags, LockspaceName, ResourceName};

/// `systemd-socket-activate`, if it is installed.
fn activator() -> Option<PathBuf> {
    [
        "/usr/bin/systemd-socket-activate",
        "/bin/systemd-socket-activate",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// `systemd-socket-activate ARGS -l SOCKET dlmd --user --socket SOCKET`,
/// logging to `log`.
fn activate(tool: &Path, args: &[&str], socket: &Path, log: &Path) -> Proc {
    let log = std::fs::File::create(log).expect("log file");
    let child = Command::new(tool)
        .args(args)
        .arg("-l")
        .arg(socket)
        .arg("--fdname=dlmd")
        .arg(DLMD)
        .args(["--user", "--log-level", "debug", "--socket"])
        .arg(socket)
        .env_remove("DLM_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start systemd-socket-activate");
    Proc(child)
}

/// The process's name.
fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn a_passed_socket_is_served_and_left_to_its_owner() {
    let Some(tool) = activator() else {
        eprintln!("SKIPPED a_passed_socket_is_served...: needs systemd-socket-activate (apt-get install systemd)");
        return;
    };
    let dir = common::temp_dir();
    let socket = dir.path().join("dlmd.sock");
    let log = dir.path().join("dlmd.log");
    let mut p = activate(&tool, &[], &socket, &log);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Bound before it listens: wait for a connection to be taken (which
        // makes the activator start dlmd).
        wait_until("the socket to listen", TIMEOUT, || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
        let dlm = Dlm::builder()
            .backend(Backend::Fallback)
            .socket(&socket)
            .autostart(false)
            .open()
            .expect("connect through the passed socket");
        assert_eq!(
            dlm.daemon_pid(),
            Some(p.pid() as i32),
            "dlmd runs in the activator's place"
        );
        assert_eq!(comm(p.pid()), "dlmd");
        let ls = dlm
            .create_lockspace(
                &LockspaceName::new("act").expect("name"),
                LockspaceFlags::empty(),
                0o600,
            )
            .expect("create");
        let lock = ls
            .lock(LockRequest::new(
                ResourceName::new("r").expect("name"),
                LockMode::Ex,
            ))
            .expect("lock")
            .granted()
            .expect("granted");
        lock.unlock().expect("unlock");
        drop(ls);
        drop(dlm);
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            text.contains("serving the socket passed by the service manager"),
            "{text}"
        );
        let mut lock_file = socket.as_os_str().to_owned();
        lock_file.push(".lock");
        assert!(
            !Path::new(&lock_file).exists(),
            "no lock file for a passed socket"
        );
        p.signal(rustix::process::Signal::TERM);
        let st = p.wait_timeout(TIMEOUT).expect("dlmd stops on SIGTERM");
        assert!(st.success(), "{st}");
        assert!(socket.exists(), "the socket stays its owner's");
    }));
    if let Err(e) = result {
        report_dlmd(&mut p, &log);
        std::panic::resume_unwind(e);
    }
}

#[test]
fn a_passed_datagram_socket_is_refused_with_a_message() {
    let Some(tool) = activator() else {
        eprintln!("SKIPPED a_passed_datagram_socket...: needs systemd-socket-activate (apt-get install systemd)");
        return;
    };
    let dir = common::temp_dir();
    let socket = dir.path().join("dlmd.sock");
    let log = dir.path().join("dlmd.log");
    let mut p = activate(&tool, &["--datagram"], &socket, &log);
    // The activator starts its program on the first datagram.
    wait_until("the socket to exist", TIMEOUT, || socket.exists());
    std::os::unix::net::UnixDatagram::unbound()
        .and_then(|d| d.send_to(b"wake", &socket))
        .expect("a datagram to the passed socket");
    let st = p.wait_timeout(Duration::from_secs(20));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let st = st.unwrap_or_else(|| panic!("dlmd did not exit: {text}"));
    assert_eq!(st.code(), Some(1), "{text}");
    assert!(
        text.contains("socket activation: the passed descriptor 3 is not a stream socket"),
        "{text}"
    );
}
