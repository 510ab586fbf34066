//! dlm-sys against the C compiler: every struct size, alignment, field
//! offset and `DLM_*` constant of the UAPI headers, and the kernel's 32-bit
//! compat layouts.
//!
//! The C side comes from `tests/abi/probe.c`, which the build script
//! (`build/probe.rs`) compiles against `wrapper.h`, runs, and saves as
//! `$OUT_DIR/c_abi.rs`.
//! Each check compares two tables by name in both directions: an entry the
//! probe reports but this file does not check fails, and so does one this
//! file checks but the probe did not report. Nothing is skipped silently.
//!
//! If the probe could not run (cross-compiling, no C compiler) every test
//! here fails with the reason, unless `DLM_SKIP_C_PROBE=1` is set.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Write as _;
use std::mem::{align_of, offset_of, size_of};
use std::sync::Once;

use dlm_sys::compat::{
    dlm_lksb32, dlm_lock_params32, dlm_lock_result32, dlm_write_request32, LKSB32_SIZE,
    LOCK_PARAMS32_SIZE, LOCK_RESULT32_SIZE, WRITE_REQUEST32_SIZE,
};
use dlm_sys::{
    dlm_device_version, dlm_lksb, dlm_lock_params, dlm_lock_result, dlm_lspace_params,
    dlm_purge_params, dlm_write_request, dlm_write_request__bindgen_ty_1,
};

include!(concat!(env!("OUT_DIR"), "/c_abi.rs"));

/// Whether the probe's tables are there to compare with. Panics if they are
/// not, unless `DLM_SKIP_C_PROBE=1` asks to skip.
fn probe_ran() -> bool {
    if C_PROBE_RAN {
        return true;
    }
    if std::env::var_os("DLM_SKIP_C_PROBE").is_some_and(|v| v == "1") {
        // Straight to the stderr handle, not `eprintln!`: the test harness
        // captures the macros' output of passing tests, and this must show.
        static SAY_ONCE: Once = Once::new();
        SAY_ONCE.call_once(|| {
            let _ = writeln!(
                std::io::stderr(),
                "\n*** tests/abi_layout.rs SKIPPED: the C ABI probe did not run and \
                 DLM_SKIP_C_PROBE=1 is set,\n*** so dlm-sys's layout is NOT checked against C.\n\
                 *** Reason: {C_PROBE_SKIP_REASON}\n"
            );
        });
        return false;
    }
    panic!(
        "the C ABI probe did not run, so dlm-sys's layout cannot be checked against C:\n\
         {C_PROBE_SKIP_REASON}\n\
         (set DLM_SKIP_C_PROBE=1 to skip this test where no probe can run, e.g. when cross-compiling)"
    );
}

/// Compares the C table with the Rust table, key by key, and panics with
/// every difference, each naming its key.
fn compare<V: PartialEq + Debug>(what: &str, c: Vec<(String, V)>, rust: Vec<(String, V)>) {
    let mut problems = Vec::new();
    let c = into_map(what, "the C probe", c, &mut problems);
    let rust = into_map(what, "this test", rust, &mut problems);
    if c.is_empty() {
        problems.push(format!("{what}: the C probe reported nothing"));
    }
    for (key, c_value) in &c {
        match rust.get(key) {
            Some(r) if r == c_value => {}
            Some(r) => problems.push(format!("{what} {key}: C has {c_value:?}, dlm-sys has {r:?}")),
            None => problems.push(format!(
                "{what} {key}: reported by the C probe but not checked by tests/abi_layout.rs (add it)"
            )),
        }
    }
    for key in rust.keys().filter(|k| !c.contains_key(*k)) {
        problems.push(format!(
            "{what} {key}: checked by this test but not reported by the C probe \
             (missing from the header or from tests/abi/probe.c)"
        ));
    }
    assert!(
        problems.is_empty(),
        "C and dlm-sys disagree ({} problem(s)):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

fn into_map<V: Debug>(
    what: &str,
    side: &str,
    entries: Vec<(String, V)>,
    problems: &mut Vec<String>,
) -> BTreeMap<String, V> {
    let mut map = BTreeMap::new();
    for (key, value) in entries {
        if map.contains_key(&key) {
            problems.push(format!("{what} {key}: listed twice by {side}"));
        }
        map.insert(key, value);
    }
    map
}

fn c_table<V: Copy>(table: &[(&str, V)]) -> Vec<(String, V)> {
    table
        .iter()
        .map(|&(name, v)| (name.to_owned(), v))
        .collect()
}

fn c_offsets(table: &[(&str, &str, usize)]) -> Vec<(String, usize)> {
    table
        .iter()
        .map(|&(ty, field, off)| (format!("{ty}.{field}"), off))
        .collect()
}

/// `(name, size_of)` or `(name, align_of)` for structs named like their C tag.
macro_rules! per_type {
    ($measure:ident: $($ty:ident),* $(,)?) => {
        vec![$((stringify!($ty).to_owned(), $measure::<$ty>())),*]
    };
}

/// `("type.field", offset_of!(type, field))` for every listed field.
///
/// The list must name every field of the Rust struct: a pattern without
/// `..` is built from it, so a field that bindgen adds (because the header
/// changed) stops this test from compiling until it is listed here, and
/// then the comparison demands it from the probe as well.
macro_rules! fields {
    ($ty:ident { $($field:ident),* $(,)? }) => {{
        #[allow(dead_code)]
        fn names_every_field(v: &$ty) {
            let $ty { $($field: _),* } = v;
        }
        vec![$((
            concat!(stringify!($ty), ".", stringify!($field)).to_owned(),
            offset_of!($ty, $field),
        )),*]
    }};
}

/// `(name, value as i64)` for every listed `dlm_sys` constant.
macro_rules! constants {
    ($($name:ident),* $(,)?) => {
        vec![$((stringify!($name).to_owned(), i64::from(dlm_sys::$name))),*]
    };
}

#[test]
fn struct_sizes_match_c() {
    if !probe_ran() {
        return;
    }
    let mut rust = per_type!(size_of:
        dlm_write_request,
        dlm_lock_params,
        dlm_lspace_params,
        dlm_purge_params,
        dlm_lock_result,
        dlm_lksb,
        dlm_device_version,
    );
    rust.push((
        "dlm_write_request.i".to_owned(),
        size_of::<dlm_write_request__bindgen_ty_1>(),
    ));
    compare("size of", c_table(C_SIZES), rust);
}

#[test]
fn struct_alignments_match_c() {
    if !probe_ran() {
        return;
    }
    let mut rust = per_type!(align_of:
        dlm_write_request,
        dlm_lock_params,
        dlm_lspace_params,
        dlm_purge_params,
        dlm_lock_result,
        dlm_lksb,
        dlm_device_version,
    );
    rust.push((
        "dlm_write_request.i".to_owned(),
        align_of::<dlm_write_request__bindgen_ty_1>(),
    ));
    compare("alignment of", c_table(C_ALIGNS), rust);
}

#[test]
fn field_offsets_match_c() {
    if !probe_ran() {
        return;
    }
    let mut rust = Vec::new();
    rust.extend(fields!(dlm_write_request {
        version,
        cmd,
        is64bit,
        unused,
        i
    }));
    // The union's members, and the names at the end of the two variable
    // length requests. A union cannot be destructured without `unsafe`, so
    // its three members are listed by hand; bindgen's own layout assertions
    // and the union's size cover a fourth member appearing.
    rust.extend([
        (
            "dlm_write_request.i.lock".to_owned(),
            offset_of!(dlm_write_request, i.lock),
        ),
        (
            "dlm_write_request.i.lspace".to_owned(),
            offset_of!(dlm_write_request, i.lspace),
        ),
        (
            "dlm_write_request.i.purge".to_owned(),
            offset_of!(dlm_write_request, i.purge),
        ),
        // The members are `ManuallyDrop`s, whose inner field is private,
        // so the path cannot continue inside them: add the two offsets.
        (
            "dlm_write_request.i.lock.name".to_owned(),
            offset_of!(dlm_write_request, i.lock) + offset_of!(dlm_lock_params, name),
        ),
        (
            "dlm_write_request.i.lspace.name".to_owned(),
            offset_of!(dlm_write_request, i.lspace) + offset_of!(dlm_lspace_params, name),
        ),
    ]);
    rust.extend(fields!(dlm_lock_params {
        mode,
        namelen,
        unused,
        flags,
        lkid,
        parent,
        xid,
        timeout,
        castparam,
        castaddr,
        bastparam,
        bastaddr,
        lksb,
        lvb,
        name,
    }));
    rust.extend(fields!(dlm_lspace_params { flags, minor, name }));
    rust.extend(fields!(dlm_purge_params { nodeid, pid }));
    rust.extend(fields!(dlm_lock_result {
        version,
        length,
        user_astaddr,
        user_astparam,
        user_lksb,
        lksb,
        bast_mode,
        unused,
        lvb_offset,
    }));
    rust.extend(fields!(dlm_lksb {
        sb_status,
        sb_lkid,
        sb_flags,
        sb_lvbptr
    }));
    rust.extend(fields!(dlm_device_version { version }));
    compare("offset of", c_offsets(C_OFFSETS), rust);
}

#[test]
fn constants_match_c() {
    if !probe_ran() {
        return;
    }
    let rust = constants![
        // linux/dlmconstants.h
        DLM_LOCKSPACE_LEN,
        DLM_RESNAME_MAXLEN,
        DLM_LOCK_IV,
        DLM_LOCK_NL,
        DLM_LOCK_CR,
        DLM_LOCK_CW,
        DLM_LOCK_PR,
        DLM_LOCK_PW,
        DLM_LOCK_EX,
        DLM_LKF_NOQUEUE,
        DLM_LKF_CANCEL,
        DLM_LKF_CONVERT,
        DLM_LKF_VALBLK,
        DLM_LKF_QUECVT,
        DLM_LKF_IVVALBLK,
        DLM_LKF_CONVDEADLK,
        DLM_LKF_PERSISTENT,
        DLM_LKF_NODLCKWT,
        DLM_LKF_NODLCKBLK,
        DLM_LKF_EXPEDITE,
        DLM_LKF_NOQUEUEBAST,
        DLM_LKF_HEADQUE,
        DLM_LKF_NOORDER,
        DLM_LKF_ORPHAN,
        DLM_LKF_ALTPR,
        DLM_LKF_ALTCW,
        DLM_LKF_FORCEUNLOCK,
        DLM_LKF_TIMEOUT,
        DLM_ECANCEL,
        DLM_EUNLOCK,
        // linux/dlm.h
        DLM_SBF_DEMOTED,
        DLM_SBF_VALNOTVALID,
        DLM_SBF_ALTMODE,
        DLM_LSFL_TIMEWARN,
        DLM_LSFL_NEWEXCL,
        // linux/dlm_device.h
        DLM_USER_LVB_LEN,
        DLM_DEVICE_VERSION_MAJOR,
        DLM_DEVICE_VERSION_MINOR,
        DLM_DEVICE_VERSION_PATCH,
        DLM_USER_LOCK,
        DLM_USER_UNLOCK,
        DLM_USER_QUERY,
        DLM_USER_CREATE_LOCKSPACE,
        DLM_USER_REMOVE_LOCKSPACE,
        DLM_USER_PURGE,
        DLM_USER_DEADLOCK,
        DLM_USER_LSFLG_AUTOFREE,
        DLM_USER_LSFLG_FORCEFREE,
    ];
    compare("constant", c_table(C_CONSTANTS), rust);
}

#[test]
fn compat_sizes_match_c() {
    if !probe_ran() {
        return;
    }
    let rust = per_type!(size_of:
        dlm_lock_params32,
        dlm_write_request32,
        dlm_lksb32,
        dlm_lock_result32,
    );
    compare("compat size of", c_table(C_COMPAT_SIZES), rust);
}

#[test]
fn compat_offsets_match_c() {
    if !probe_ran() {
        return;
    }
    let mut rust = Vec::new();
    rust.extend(fields!(dlm_lock_params32 {
        mode,
        namelen,
        unused,
        flags,
        lkid,
        parent,
        xid,
        timeout,
        castparam,
        castaddr,
        bastparam,
        bastaddr,
        lksb,
        lvb,
        name,
    }));
    rust.extend(fields!(dlm_write_request32 {
        version,
        cmd,
        is64bit,
        unused,
        i
    }));
    rust.extend([
        (
            "dlm_write_request32.i.lock".to_owned(),
            offset_of!(dlm_write_request32, i.lock),
        ),
        (
            "dlm_write_request32.i.lspace".to_owned(),
            offset_of!(dlm_write_request32, i.lspace),
        ),
        (
            "dlm_write_request32.i.purge".to_owned(),
            offset_of!(dlm_write_request32, i.purge),
        ),
        (
            "dlm_write_request32.i.lock.name".to_owned(),
            offset_of!(dlm_write_request32, i.lock.name),
        ),
    ]);
    rust.extend(fields!(dlm_lksb32 {
        sb_status,
        sb_lkid,
        sb_flags,
        sb_lvbptr
    }));
    rust.extend(fields!(dlm_lock_result32 {
        version,
        length,
        user_astaddr,
        user_astparam,
        user_lksb,
        lksb,
        bast_mode,
        unused,
        lvb_offset,
    }));
    compare("compat offset of", c_offsets(C_COMPAT_OFFSETS), rust);
}

/// The named sizes in dlm-sys are what C measures (they are checked
/// against the Rust types at compile time; this ties them to C).
#[test]
fn named_sizes_match_c() {
    if !probe_ran() {
        return;
    }
    let c = |table: &[(&str, usize)], name: &str| {
        table
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("the C probe reported no size for {name}"))
            .1
    };
    let mut named = vec![
        (
            "compat::WRITE_REQUEST32_SIZE",
            WRITE_REQUEST32_SIZE,
            c(C_COMPAT_SIZES, "dlm_write_request32"),
        ),
        (
            "compat::LOCK_RESULT32_SIZE",
            LOCK_RESULT32_SIZE,
            c(C_COMPAT_SIZES, "dlm_lock_result32"),
        ),
        (
            "compat::LKSB32_SIZE",
            LKSB32_SIZE,
            c(C_COMPAT_SIZES, "dlm_lksb32"),
        ),
        (
            "compat::LOCK_PARAMS32_SIZE",
            LOCK_PARAMS32_SIZE,
            c(C_COMPAT_SIZES, "dlm_lock_params32"),
        ),
    ];
    #[cfg(target_pointer_width = "64")]
    {
        let resname_max = C_CONSTANTS
            .iter()
            .find(|(n, _)| *n == "DLM_RESNAME_MAXLEN")
            .map(|&(_, v)| {
                usize::try_from(v).expect("DLM_RESNAME_MAXLEN is a small positive number")
            })
            .expect("the C probe reported DLM_RESNAME_MAXLEN");
        named.extend([
            (
                "WRITE_REQUEST_SIZE",
                dlm_sys::WRITE_REQUEST_SIZE,
                c(C_SIZES, "dlm_write_request"),
            ),
            (
                "LOCK_RESULT_SIZE",
                dlm_sys::LOCK_RESULT_SIZE,
                c(C_SIZES, "dlm_lock_result"),
            ),
            ("LKSB_SIZE", dlm_sys::LKSB_SIZE, c(C_SIZES, "dlm_lksb")),
            (
                "DEVICE_VERSION_SIZE",
                dlm_sys::DEVICE_VERSION_SIZE,
                c(C_SIZES, "dlm_device_version"),
            ),
            (
                "MAX_WRITE_SIZE",
                dlm_sys::MAX_WRITE_SIZE,
                c(C_SIZES, "dlm_write_request") + resname_max,
            ),
        ]);
    }
    let wrong: Vec<String> = named
        .iter()
        .filter(|(_, rust, c)| rust != c)
        .map(|(name, rust, c)| format!("dlm_sys::{name} is {rust}, C says {c}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "named sizes differ from C:\n  {}",
        wrong.join("\n  ")
    );
}
