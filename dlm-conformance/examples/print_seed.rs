//! Print the random script of a seed: `cargo run -p dlm-conformance
//! --example print_seed -- SEED [LEN]`, to save a failing seed as a
//! scenario file.
#![forbid(unsafe_code)]
fn main() {
    let mut args = std::env::args().skip(1);
    let seed: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let len: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(40);
    print!("{}", dlm_conformance::random::script(seed, len));
}
