//! Generates `$OUT_DIR/bindings.rs` by running bindgen over `wrapper.h`,
//! the workspace's one list of DLM UAPI headers, and (in `build/probe.rs`)
//! measures the same headers with the C compiler for `tests/abi_layout.rs`.
//!
//! Two things commonly go wrong on a fresh machine, and both end the build
//! with a message that names the package to install instead of a bare
//! bindgen panic:
//!
//! * the kernel UAPI headers (`linux/dlm*.h`, Debian package
//!   `linux-libc-dev`) are missing, and clang reports "file not found";
//! * libclang itself cannot be loaded (package `libclang-dev`, or
//!   `LIBCLANG_PATH` points somewhere without it).

use std::env;
use std::panic;
use std::path::PathBuf;
use std::process;

use bindgen::callbacks::{IntKind, ParseCallbacks};

#[path = "build/probe.rs"]
mod probe;

/// Picks the Rust type of every `#define DLM_*` integer constant.
///
/// Negative values (only `DLM_LOCK_IV`, which is `-1`) become `i32`;
/// everything else that fits becomes `u32`, the type of the `flags`,
/// `lkid` and `version` fields those constants are stored in. Values that
/// fit neither would become 64-bit, but the headers have none today.
#[derive(Debug)]
struct ConstantTypes;

impl ParseCallbacks for ConstantTypes {
    fn int_macro(&self, _name: &str, value: i64) -> Option<IntKind> {
        Some(if value < 0 {
            if value >= i64::from(i32::MIN) {
                IntKind::I32
            } else {
                IntKind::I64
            }
        } else if value <= i64::from(u32::MAX) {
            IntKind::U32
        } else {
            IntKind::U64
        })
    }
}

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let wrapper = manifest_dir.join("wrapper.h");
    let wrapper = wrapper.canonicalize().unwrap_or(wrapper);
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));

    println!("cargo:rerun-if-changed={}", wrapper.display());
    println!("cargo:rerun-if-changed=build.rs");
    // Which libclang is loaded (bindgen reports the variables it reads
    // itself, through `CargoCallbacks` below).
    println!("cargo:rerun-if-env-changed=LIBCLANG_PATH");

    if !wrapper.is_file() {
        fail(&format!(
            "{} is missing; it belongs to the dlm-rs workspace and lists the UAPI headers to bind",
            wrapper.display()
        ));
    }

    let builder = bindgen::Builder::default()
        .header(wrapper.to_string_lossy())
        .allowlist_type("dlm_.*")
        .allowlist_var("DLM_.*")
        .use_core()
        .derive_debug(true)
        .derive_default(true)
        .derive_copy(true)
        // The anonymous union in `struct dlm_write_request` holds structs
        // with flexible array members, which are not `Copy`; give it a real
        // `union` with `ManuallyDrop` fields rather than bindgen's wrapper.
        .default_non_copy_union_style(bindgen::NonCopyUnionStyle::ManuallyDrop)
        .layout_tests(true)
        .parse_callbacks(Box::new(ConstantTypes))
        // Rerun when any header wrapper.h pulls in changes (for example a
        // linux-libc-dev upgrade), and when bindgen's own env vars change.
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));

    let bindings = generate(builder);
    let target = out_dir.join("bindings.rs");
    if let Err(err) = bindings.write_to_file(&target) {
        fail(&format!("cannot write {}: {err}", target.display()));
    }

    probe::main();
}

/// Runs bindgen, turning its two common failures into instructions.
///
/// bindgen reports a missing libclang by panicking, so the panic is caught
/// (with the default hook silenced, so its bare message is not printed
/// first) and replaced by one that says what to install.
fn generate(builder: bindgen::Builder) -> bindgen::Bindings {
    let default_hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    // The builder is moved in and consumed, so no state it owns can be seen
    // half-updated after a panic.
    let result = panic::catch_unwind(panic::AssertUnwindSafe(move || builder.generate()));
    panic::set_hook(default_hook);

    match result {
        Ok(Ok(bindings)) => bindings,
        // bindgen has already printed clang's diagnostics to stderr.
        Ok(Err(bindgen::BindgenError::ClangDiagnostic(diag))) => match missing_header(&diag) {
            Some(header) => fail(&format!(
                "cannot find {header} — install the kernel UAPI headers: \
                 `apt-get install linux-libc-dev`"
            )),
            None => fail("clang could not parse wrapper.h (diagnostics above)"),
        },
        Ok(Err(err)) => fail(&format!("bindgen failed: {err}")),
        Err(payload) => {
            let msg = panic_message(payload.as_ref());
            if msg.contains("libclang") {
                let hint = match env::var_os("LIBCLANG_PATH") {
                    Some(path) => format!(
                        "LIBCLANG_PATH is set to {}, which holds no usable libclang; \
                         unset it or point it at the directory holding libclang.so",
                        PathBuf::from(path).display()
                    ),
                    None => "or set LIBCLANG_PATH to the directory holding libclang.so".to_owned(),
                };
                fail(&format!(
                    "cannot load libclang, which bindgen needs — install libclang: \
                     `apt-get install libclang-dev` ({hint})\n\nbindgen said: {msg}"
                ))
            } else {
                fail(&format!("bindgen panicked: {msg}"))
            }
        }
    }
}

/// Finds the `'linux/….h'` that clang reported as "file not found".
fn missing_header(diag: &str) -> Option<String> {
    diag.lines()
        .find(|line| line.contains("file not found"))
        .map(|line| line.split('\'').nth(1).unwrap_or(line.trim()).to_owned())
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

/// Prints `msg` as the build script's error and stops the build.
fn fail(msg: &str) -> ! {
    eprintln!("\nerror: dlm-sys: {msg}\n");
    process::exit(1);
}
