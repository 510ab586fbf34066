//! The engine's and the daemon's traces must equal those of the kernel
//! the engine models (Linux 6.1), committed in `golden/6.1/` (regenerate
//! them with `ci/kernel/conformance.sh --kernel 6.1 --regenerate`, which
//! boots the real kernel). Every kernel's set covers every scenario.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dlm_conformance::{
    diff, golden_dir, golden_dir_for, run, scenarios, DeviceTarget, EngineTarget, Target,
    ENGINE_KERNEL,
};

fn check(target_name: &str, mut make: impl FnMut(&str) -> Box<dyn Target>) {
    let all = scenarios().expect("scenarios parse");
    assert!(all.len() >= 60, "the scenario list is there");
    let mut failures = Vec::new();
    for sc in &all {
        let path = golden_dir().join(format!("{}.trace", sc.name));
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run ci/kernel/conformance.sh --kernel {ENGINE_KERNEL} --regenerate)",
                path.display()
            )
        });
        let mut t = make(&sc.name);
        let got = run(sc, t.as_mut()).expect("scenario runs");
        if let Some(d) = diff(&want, &got) {
            failures.push(format!("{target_name}: {}: {d}", sc.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn engine_traces_equal_the_kernels() {
    check("engine", |_| Box::new(EngineTarget::new()));
}

/// A private dlmd, stopped by PID when dropped.
struct Daemon(Child, PathBuf);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(self.1.parent().unwrap_or(&self.1));
    }
}

#[test]
fn daemon_traces_equal_the_kernels() {
    let dlmd = dlm_proto::paths::dlmd_program();
    assert!(
        dlmd.is_file(),
        "{} is missing: build the workspace (cargo test --workspace)",
        dlmd.display()
    );
    let dir = std::env::temp_dir().join(format!("dlm-conf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("dlmd.sock");
    let child = Command::new(&dlmd)
        .arg("--socket")
        .arg(&sock)
        .args(["--log-level", "warn"])
        .stdin(Stdio::null())
        .spawn()
        .expect("start dlmd");
    let d = Daemon(child, sock.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "dlmd did not listen");
        std::thread::sleep(Duration::from_millis(10));
    }
    check("daemon", |name| {
        Box::new(DeviceTarget::daemon(&d.1, name).expect("lockspace on dlmd"))
    });
}

/// Each kernel series' golden set has a trace for every scenario and
/// nothing else, so that no kernel's check can pass by missing a file.
#[test]
fn every_kernel_has_a_trace_per_scenario() {
    let names: std::collections::BTreeSet<String> = scenarios()
        .expect("scenarios parse")
        .into_iter()
        .map(|s| format!("{}.trace", s.name))
        .collect();
    for kernel in ["6.1", "6.12"] {
        let dir = golden_dir_for(kernel);
        let files: std::collections::BTreeSet<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| {
                e.expect("directory entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(
            files,
            names,
            "the golden traces of Linux {kernel} in {}",
            dir.display()
        );
    }
}
