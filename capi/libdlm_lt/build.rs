//! The SONAME and the export list of libdlm_lt.so.3.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=libdlm_lt.map");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libdlm_lt.so.3");
    println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={dir}/libdlm_lt.map");
}
