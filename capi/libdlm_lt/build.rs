//! The SONAME and the export list of libdlm_lt.so.3.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=libdlm_lt.map");
    println!("cargo:rerun-if-changed=../dlm_rs.map");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libdlm_lt.so.3");
    println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={dir}/libdlm_lt.map");
    // dlm_rs.h's symbols, under their own version node (DLM_RS_1).
    println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={dir}/../dlm_rs.map");
}
