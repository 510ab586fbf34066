//! Operation sequences on the lock engine: the input bytes are a case of
//! the random generator (`dlm_model::Case::from_bytes`: owners opening and
//! closing, locks, conversions, unlocks, cancels, purges, reads of the
//! callback queue, with every flag), run on the engine and on the
//! reference model side by side.
//!
//! The oracle is `dlm_model::check_case`: after every step the engine's
//! results and callback records equal the model's, and the engine's own
//! invariants hold (grant compatibility, queue order, value blocks,
//! callback bookkeeping). A failure panics with the shrunk script.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let case = dlm_model::Case::from_bytes(data);
    if let Err(f) = dlm_model::check_case(&case) {
        panic!("{f}");
    }
});
