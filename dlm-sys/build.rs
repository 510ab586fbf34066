use std::path::PathBuf;

fn main() {
    let wrapper = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../wrapper.h");
    println!("cargo:rerun-if-changed={}", wrapper.display());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    bindgen::Builder::default()
        .header(wrapper.to_string_lossy())
        .allowlist_type("dlm_.*")
        .allowlist_var("DLM_.*")
        .derive_default(true)
        .generate()
        .expect("bindgen")
        .write_to_file(out.join("bindings.rs"))
        .expect("write");
}
