//! `ci/install.sh` installs the programs, man pages, completions and
//! systemd units under `DESTDIR` and `PREFIX`, and the installed `dlm`
//! finds the installed `dlmd` on its own. It installs the programs built
//! next to this test's `dlm-man` (`--from`): build the workspace first.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory with the built programs.
fn built() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_dlm-man"))
        .parent()
        .expect("a directory")
        .to_path_buf();
    for p in ["dlm", "dlmd", "dlm-controld"] {
        assert!(
            dir.join(p).is_file(),
            "{} is missing: build the workspace first (cargo build --workspace, or test it whole)",
            dir.join(p).display()
        );
    }
    dir
}

fn install(destdir: &Path, prefix: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/install.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--from")
        .arg(built())
        .env("DESTDIR", destdir)
        .env("PREFIX", prefix)
        .output()
        .expect("run ci/install.sh");
    assert!(
        out.status.success(),
        "install.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn install_lays_out_the_tree_under_destdir_and_prefix() {
    use std::os::unix::fs::PermissionsExt;
    let dest = tempfile::tempdir().expect("temp dir");
    let said = install(dest.path(), "/opt/dlm");
    assert!(
        said.contains("systemctl enable --now dlmd.socket"),
        "{said}"
    );
    let root = dest.path().join("opt/dlm");
    for (file, mode) in [
        ("bin/dlm", 0o755),
        ("bin/dlmd", 0o755),
        ("sbin/dlm-controld", 0o755),
        ("share/man/man1/dlm.1", 0o644),
        ("share/man/man1/dlm-lock.1", 0o644),
        ("share/man/man1/dlm-daemon-stop.1", 0o644),
        ("share/man/man8/dlmd.8", 0o644),
        ("share/man/man8/dlm-controld.8", 0o644),
        ("share/bash-completion/completions/dlm", 0o644),
        ("share/bash-completion/completions/dlmd", 0o644),
        ("share/zsh/site-functions/_dlm", 0o644),
        ("share/fish/vendor_completions.d/dlm.fish", 0o644),
        ("lib/systemd/system/dlmd.service", 0o644),
        ("lib/systemd/system/dlmd.socket", 0o644),
    ] {
        let meta = std::fs::metadata(root.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
    }
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/dlmd.service")).expect("unit");
    assert!(
        unit.contains("\nExecStart=/opt/dlm/bin/dlmd --system\n"),
        "{unit}"
    );
    let socket =
        std::fs::read_to_string(root.join("lib/systemd/system/dlmd.socket")).expect("unit");
    assert!(
        socket.contains("\nListenStream=/run/dlm/dlmd.sock\n"),
        "{socket}"
    );
    // Nothing outside DESTDIR's PREFIX.
    let top: Vec<String> = std::fs::read_dir(dest.path())
        .expect("destdir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(top, ["opt"]);
}

#[test]
fn the_installed_dlm_starts_the_installed_dlmd() {
    let dest = tempfile::tempdir().expect("temp dir");
    install(dest.path(), "/usr");
    let bin = dest.path().join("usr/bin");
    let run = tempfile::tempdir().expect("temp dir");
    let socket = run.path().join("dlm").join("dlmd.sock");
    let dlm = |args: &[&str]| {
        Command::new(bin.join("dlm"))
            .args(args)
            .env_clear()
            .env("PATH", run.path().join("no-such-dir"))
            .env("DLM_SOCKET", &socket)
            .env("DLM_BACKEND", "fallback")
            .output()
            .expect("run the installed dlm")
    };
    let st = dlm(&["status"]);
    let daemon_stopped = || {
        let stop = dlm(&["daemon", "stop"]);
        assert!(stop.status.success(), "{stop:?}");
    };
    if !st.status.success() {
        daemon_stopped();
        panic!("{st:?}");
    }
    let text = String::from_utf8_lossy(&st.stdout).into_owned();
    daemon_stopped();
    assert!(text.contains("backend: fallback"), "{text}");
    assert!(text.contains(&format!("at {}", socket.display())), "{text}");
}

#[test]
fn a_relative_prefix_is_refused() {
    let dest = tempfile::tempdir().expect("temp dir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/install.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--from")
        .arg(built())
        .env("DESTDIR", dest.path())
        .env("PREFIX", "usr/local")
        .output()
        .expect("run ci/install.sh");
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be an absolute path"));
}
