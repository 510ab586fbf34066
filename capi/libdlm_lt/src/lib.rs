//! `libdlm_lt.so.3`: libdlm 4.2's lite (no threads) library, 21 symbols, from dlm-rs.
//!
//! Every function is defined by [`dlm_capi::export_libdlm!`], whose
//! items carry the only `allow(unsafe_code)` of this crate; the SONAME and
//! the export list are set in `build.rs` (`libdlm_lt.map`).
#![deny(unsafe_code)]

dlm_capi::export_libdlm!(lite);
dlm_capi::export_dlm_rs!();
