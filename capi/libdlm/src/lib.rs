//! `libdlm.so.3`: libdlm 4.2's threaded library, 26 symbols, from dlm-rs.
//!
//! Every function is defined by [`dlm_capi::export_libdlm!`], whose
//! items carry the only `allow(unsafe_code)` of this crate; the SONAME and
//! the export list are set in `build.rs` (`libdlm.map`).
#![deny(unsafe_code)]

dlm_capi::export_libdlm!(threaded);
dlm_capi::export_dlm_rs!();
