//! Under each kernel model, the engine's and the daemon's traces must
//! equal those of that kernel, committed in `golden/6.1/` and
//! `golden/6.12/` (regenerate them with `ci/kernel/conformance.sh
//! --kernel SERIES --regenerate`, which boots the real kernel), on every
//! scenario. Every kernel's set covers every scenario.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dlm_conformance::{
    diff, golden_dir_for, golden_dir_for_model, run, scenarios, DeviceTarget, EngineTarget,
    KernelModel, Target,
};

/// Every scenario on `make`'s targets against `model`'s golden set; the
/// failures, one line each.
fn check(
    target_name: &str,
    model: KernelModel,
    mut make: impl FnMut(&str) -> Box<dyn Target>,
) -> Vec<String> {
    let all = scenarios().expect("scenarios parse");
    assert!(all.len() >= 60, "the scenario list is there");
    let mut failures = Vec::new();
    for sc in &all {
        let path = golden_dir_for_model(model).join(format!("{}.trace", sc.name));
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run ci/kernel/conformance.sh --kernel {model} --regenerate)",
                path.display()
            )
        });
        let mut t = make(&sc.name);
        let got = run(sc, t.as_mut()).expect("scenario runs");
        if let Some(d) = diff(&want, &got) {
            failures.push(format!("{target_name} (model {model}): {}: {d}", sc.name));
        }
    }
    failures
}

#[test]
fn engine_traces_equal_the_kernels() {
    let mut failures = Vec::new();
    for model in KernelModel::ALL {
        failures.extend(check("engine", model, |_| {
            Box::new(EngineTarget::with_model(model))
        }));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
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

impl Daemon {
    /// A dlmd following `model`, its log in its directory.
    fn start(dlmd: &std::path::Path, model: KernelModel) -> Daemon {
        let dir = std::env::temp_dir().join(format!("dlm-conf-{}-{model}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("dlmd.sock");
        let log = std::fs::File::create(dir.join("dlmd.log")).expect("log file");
        let child = Command::new(dlmd)
            .arg("--socket")
            .arg(&sock)
            .args(["--log-level", "warn", "--kernel-model", model.series()])
            .stdin(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dlmd");
        let mut d = Daemon(child, sock.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            if Instant::now() >= deadline || matches!(d.0.try_wait(), Ok(Some(_))) {
                panic!("dlmd did not listen; its log:\n{}", d.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    }

    fn log(&self) -> String {
        let path = self.1.with_file_name("dlmd.log");
        std::fs::read_to_string(&path).unwrap_or_else(|e| format!("({}: {e})", path.display()))
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
    let mut failures = Vec::new();
    for model in KernelModel::ALL {
        let d = Daemon::start(&dlmd, model);
        let f = check("daemon", model, |name| {
            Box::new(DeviceTarget::daemon(&d.1, name).expect("lockspace on dlmd"))
        });
        if !f.is_empty() {
            failures.extend(f);
            failures.push(format!("dlmd --kernel-model {model} log:\n{}", d.log()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
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
