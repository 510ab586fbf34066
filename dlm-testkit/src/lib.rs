//! A private `dlmd` for the `dlm` crate's doc examples (dev only).
//!
//! A doc example that needs a daemon starts one in a hidden first line:
//!
//! ```text
//! # let _daemon = dlm_testkit::PrivateDaemon::start();
//! let dlm = dlm::Dlm::open()?;
//! ```
//!
//! [`PrivateDaemon::start`] runs `dlmd` on a socket in a fresh 0700
//! directory of its own and points this process at it through the
//! variables the client reads (`DLM_SOCKET`, `DLM_BACKEND=fallback`,
//! `DLM_NO_AUTOSTART=1`), so the example's own code is what a user would
//! write. Dropping it stops that daemon by its pid and removes the
//! directory. It sets process-wide variables, so start it before any
//! thread, as the first line of a doc example; each doc example runs in a
//! process of its own.
//!
//! The `dlmd` run is `$DLM_DLMD`, else the newer of the workspace's
//! `target/release/dlmd` and `target/debug/dlmd` (`cargo test
//! --workspace` builds it; `cargo build -p dlmd` does too).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `dlmd` on a private socket, stopped on drop.
#[derive(Debug)]
pub struct PrivateDaemon {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

/// The daemon to run: see the crate docs.
fn dlmd_path() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("DLM_DLMD") {
        return Ok(PathBuf::from(p));
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    ["release", "debug"]
        .iter()
        .map(|profile| target.join(profile).join("dlmd"))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p)
        .ok_or_else(|| {
            format!(
                "the doc examples need dlmd, and there is none in {}: run `cargo build -p dlmd` \
                 (or `cargo test --workspace`), or set DLM_DLMD",
                target.display()
            )
        })
}

impl PrivateDaemon {
    /// Start the daemon and point this process's clients at it. Panics
    /// with what to do if `dlmd` cannot be found or does not come up
    /// within 10 s: it is meant for examples and tests.
    pub fn start() -> PrivateDaemon {
        match PrivateDaemon::try_start() {
            Ok(d) => d,
            Err(e) => panic!("no private dlmd: {e}"),
        }
    }

    /// [`start`](Self::start), with the failure as a value.
    pub fn try_start() -> Result<PrivateDaemon, String> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static SERIAL: AtomicU32 = AtomicU32::new(0);
        let dlmd = dlmd_path()?;
        let dir = std::env::temp_dir().join(format!(
            "dlm-testkit-{}-{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        let socket = dir.join("dlmd.sock");
        let child = spawn_dlmd(&dlmd, &dir, &socket)?;
        let mut d = PrivateDaemon { child, dir, socket };
        d.wait_listening(&dlmd)?;
        std::env::set_var("DLM_SOCKET", &d.socket);
        std::env::set_var("DLM_BACKEND", "fallback");
        std::env::set_var("DLM_NO_AUTOSTART", "1");
        Ok(d)
    }

    /// Kill the daemon (SIGKILL: no clean stop, as in a crash) and start
    /// a new one on the same socket: the clients replay their locks onto
    /// it. Panics if the new one does not come up.
    pub fn crash_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let restarted = dlmd_path().and_then(|dlmd| {
            self.child = spawn_dlmd(&dlmd, &self.dir, &self.socket)?;
            self.wait_listening(&dlmd)
        });
        if let Err(e) = restarted {
            panic!("no private dlmd after the restart: {e}");
        }
    }

    fn wait_listening(&mut self, dlmd: &Path) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited at once ({st}): {}",
                    dlmd.display(),
                    self.log()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not listen within 10 s: {}",
                    dlmd.display(),
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// The daemon's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the daemon has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dlmd.log")).unwrap_or_default()
    }
}

/// Start `dlmd` on `socket`, logging to `dir/dlmd.log`.
fn spawn_dlmd(dlmd: &Path, dir: &Path, socket: &Path) -> Result<std::process::Child, String> {
    Command::new(dlmd)
        .arg("--socket")
        .arg(socket)
        .arg("--log-file")
        .arg(dir.join("dlmd.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", dlmd.display()))
}

impl Drop for PrivateDaemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- the private dlmd's log ---\n{}--- end ---", self.log());
        }
        // SIGTERM, so that it removes its socket; SIGKILL if it lingers.
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
