//! Seeds for the `engine_ops` fuzz target: cases of the proptest
//! strategy with the property tests' general mix ([`Mix::GENERAL`]),
//! written as the bytes `Case::from_bytes` decodes back to them.
//!
//! Random bytes decode mostly to requests whose flags the engine refuses
//! (each candidate flag is a coin toss), so a fuzzer that starts from
//! nothing spends its first hours with one or two locks at a time; these
//! cases hold several locks on a resource, queued and converting.
//!
//! ```text
//! cargo run --release -p dlm-model --example fuzz_seeds -- fuzz/corpus/engine_ops 200
//! ```
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use dlm_model::gen::{case_strategy, Mix};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(dir), count) = (args.next().map(PathBuf::from), args.next()) else {
        eprintln!("usage: fuzz_seeds DIR [COUNT]");
        return ExitCode::from(64);
    };
    let Ok(count) = count.as_deref().unwrap_or("200").parse::<u32>() else {
        eprintln!("fuzz_seeds: COUNT must be a number");
        return ExitCode::from(64);
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("fuzz_seeds: {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    // The same seeds every run: a fixed generator.
    let rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let strategy = case_strategy(Mix::GENERAL, 1..=4);
    for i in 0..count {
        let case = match strategy.new_tree(&mut runner) {
            Ok(tree) => tree.current(),
            Err(e) => {
                eprintln!("fuzz_seeds: {e}");
                return ExitCode::FAILURE;
            }
        };
        let path = dir.join(format!("seed-{i:04}"));
        if let Err(e) = std::fs::write(&path, case.to_bytes()) {
            eprintln!("fuzz_seeds: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    println!("fuzz_seeds: {count} cases in {}", dir.display());
    ExitCode::SUCCESS
}
