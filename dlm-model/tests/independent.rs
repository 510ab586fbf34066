//! The oracles stay independent of what they judge: no source file of
//! the model (`src/model/`) or of the generator (`src/gen/`) names the
//! engine crate outside a comment, so no rule can come from the engine.
//! Only the driving side (`src/harness.rs`, `src/invariants/`) may.
#![forbid(unsafe_code)]

use std::fs;
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, recursively.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).expect("source directory") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Lines of `text` that name the engine crate in code (not in a `//`
/// comment).
fn engine_uses(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .filter(|code| code.contains("dlm_engine"))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_model_and_the_generator_do_not_use_the_engine() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    for dir in ["model", "gen"] {
        for file in sources(&root.join(dir)) {
            let text = fs::read_to_string(&file).expect("readable source");
            let uses = engine_uses(&text);
            assert!(
                uses.is_empty(),
                "{} uses the engine: {uses:?}",
                file.display()
            );
            checked += 1;
        }
    }
    // The check looked at the files it means to: at least the model's
    // and the generator's module roots and their topics.
    assert!(checked >= 10, "only {checked} files checked");
}

#[test]
fn the_check_sees_a_use_of_the_engine() {
    assert_eq!(
        engine_uses("use dlm_engine::Queue; // the engine's queue"),
        ["use dlm_engine::Queue; "]
    );
    assert!(engine_uses("// dlm_engine is not used here").is_empty());
    assert!(!engine_uses(
        &fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/harness.rs"))
            .expect("readable source")
    )
    .is_empty());
}
