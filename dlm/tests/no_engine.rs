//! The client does not build the daemon's lock engine: `dlm-engine` is not
//! in `dlm`'s normal dependency tree (only `dlmd` and the tests that run
//! the engine use it).
//!
//! The test asks cargo itself (`cargo tree -p dlm -e normal`), so an
//! indirect dependency (through `dlm-proto`, say) fails it as well as a
//! direct one.
#![forbid(unsafe_code)]

use std::path::Path;
use std::process::Command;

/// The package names in `cargo tree -p <package> -e normal` of this
/// workspace, one per line of cargo's output.
fn normal_tree(package: &str) -> Vec<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let out = Command::new(&cargo)
        .args([
            "tree",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "-p",
            package,
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .output()
        .expect("run cargo tree");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree failed ({}):\n{}\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_client_does_not_depend_on_the_engine() {
    let tree = normal_tree("dlm");
    // The output is the real tree: it names the client and what it is
    // built on.
    for expected in ["dlm", "dlm-proto", "dlm-sys"] {
        assert!(
            tree.iter().any(|p| p == expected),
            "{expected} missing from {tree:?}"
        );
    }
    assert!(
        !tree.iter().any(|p| p == "dlm-engine"),
        "dlm depends on dlm-engine: {tree:?}"
    );
}

#[test]
fn the_daemon_does_not_depend_on_the_client() {
    let tree = normal_tree("dlmd");
    for expected in ["dlmd", "dlm-engine", "dlm-proto"] {
        assert!(
            tree.iter().any(|p| p == expected),
            "{expected} missing from {tree:?}"
        );
    }
    assert!(
        !tree.iter().any(|p| p == "dlm"),
        "dlmd depends on dlm: {tree:?}"
    );
}
