//! Finding the kernel's DLM devices without udev.
//!
//! Nodes are looked for as `/dev/misc/<name>` (udev's links, which libdlm
//! 4.2 uses), then `/dev/<name>` (what devtmpfs creates). If neither
//! exists but the kernel has the device (its minor is in `/proc/misc` or
//! `/sys/class/misc/<name>/dev`), root creates `/dev/misc/<name>` itself;
//! anyone else gets an error that says what is missing. Nothing here
//! sleeps waiting for udev (libdlm waits up to 10 s).

use std::path::PathBuf;

use dlm_proto::error::{Errno, Error, Result};

/// The misc minor of `name`, from `/proc/misc` or sysfs.
pub(crate) fn misc_minor(name: &str) -> Option<u32> {
    if let Ok(text) = std::fs::read_to_string("/proc/misc") {
        for line in text.lines() {
            let mut it = line.split_whitespace();
            if let (Some(minor), Some(n)) = (it.next(), it.next()) {
                if n == name {
                    return minor.parse().ok();
                }
            }
        }
    }
    let dev = std::fs::read_to_string(format!("/sys/class/misc/{name}/dev")).ok()?;
    dev.trim().split_once(':')?.1.parse().ok()
}

/// The device node for misc device `name`, created if the kernel has the
/// device but no node exists and we are root.
pub(crate) fn device_node(name: &str) -> Result<PathBuf> {
    for p in [format!("/dev/misc/{name}"), format!("/dev/{name}")] {
        let p = PathBuf::from(p);
        if p.exists() {
            return Ok(p);
        }
    }
    let Some(minor) = misc_minor(name) else {
        return Err(Error::Os(Errno::ENOENT));
    };
    if !rustix::process::geteuid().is_root() {
        return Err(Error::KernelUnavailable(format!(
            "the kernel has {name} (misc minor {minor}) but /dev has no node for it; \
             start the cluster controller (it creates /dev/misc links), or create it as root"
        )));
    }
    let dir = PathBuf::from("/dev/misc");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(name);
    use rustix::fs::{makedev, mknodat, FileType, Mode, CWD};
    match mknodat(
        CWD,
        &path,
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o600),
        makedev(10, minor),
    ) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {
            log::info!("created {} (10:{minor})", path.display());
            Ok(path)
        }
        Err(e) => Err(Error::Os(Errno::from_raw(e.raw_os_error()))),
    }
}

/// The control device's node; a kernel without the DLM is
/// [`Error::ModuleNotLoaded`].
pub(crate) fn control_node() -> Result<PathBuf> {
    if misc_minor("dlm-control").is_none() && super::kernel_control_device().is_none() {
        return Err(Error::ModuleNotLoaded);
    }
    device_node("dlm-control")
}

/// Check a device version read: 6.0.x is accepted.
pub(crate) fn check_version(v: [u32; 3]) -> Result<()> {
    let ours = dlm_proto::records::VERSION;
    if v[0] == ours[0] && v[1] == ours[1] {
        Ok(())
    } else {
        Err(Error::VersionMismatch { ours, theirs: v })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_6_0_any_patch_is_accepted() {
        assert!(check_version([6, 0, 2]).is_ok());
        assert!(check_version([6, 0, 9]).is_ok());
        let e = check_version([6, 1, 0]).unwrap_err();
        assert_eq!(e.errno(), Errno::EBADE);
        assert!(e.to_string().contains("6.0.2") && e.to_string().contains("6.1.0"));
        assert!(check_version([5, 0, 0]).is_err());
    }

    #[test]
    fn unknown_devices_have_no_minor() {
        assert_eq!(misc_minor("no-such-misc-device-dlm-rs"), None);
        assert!(
            matches!(device_node("no-such-misc-device-dlm-rs"), Err(Error::Os(e)) if e == Errno::ENOENT)
        );
    }
}

/// Best-effort query of the kernel's lockspaces: names from
/// `/sys/kernel/dlm`, minors from `/proc/misc`, mode and owner from the
/// device node, lock counts from debugfs when it is mounted. The kernel
/// keeps no create count or handle count that userspace can read; those
/// are reported as 0.
pub(crate) fn lockspaces() -> Result<Vec<dlm_proto::query::LockspaceInfo>> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let rd = match std::fs::read_dir("/sys/kernel/dlm") {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let dev = format!("dlm_{name}");
        let meta = device_node(&dev)
            .ok()
            .and_then(|p| std::fs::metadata(p).ok());
        out.push(dlm_proto::query::LockspaceInfo {
            minor: misc_minor(&dev).unwrap_or(0),
            create_count: 0,
            mode: meta.as_ref().map_or(0, |m| m.mode() & 0o7777),
            uid: meta.as_ref().map_or(0, |m| m.uid()),
            gid: meta.as_ref().map_or(0, |m| m.gid()),
            locks: locks(&name).map(|l| l.len()).unwrap_or(0),
            connections: 0,
            name,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Best-effort query of a lockspace's locks from debugfs
/// (`/sys/kernel/debug/dlm/<ls>_all`, Linux's "format 3", which
/// `dlm_tool lockdebug` reads too): every resource with its master node
/// and value block (contents and sequence number), then its locks.
pub(crate) fn locks(name: &str) -> Result<Vec<dlm_proto::query::LockInfo>> {
    let path = format!("/sys/kernel/debug/dlm/{name}_all");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::KernelUnavailable(format!(
                "{path} is missing: the lockspace does not exist, or debugfs is not mounted \
                 (mount -t debugfs none /sys/kernel/debug)"
            ))
        } else {
            Error::from(e)
        }
    })?;
    Ok(parse_format3(&text, orphan_flag(&kernel_release())))
}

/// The running kernel's release (`uname -r`), empty if unknown.
fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Which bit of a lock's flags in debugfs says "orphan" on this kernel,
/// if any. Up to 6.3 the flags shown are `lkb_flags`, where
/// `DLM_IFL_ORPHAN` is 0x2 (`fs/dlm/dlm_internal.h`). From 6.4 the
/// orphan bit moved to `lkb_dflags` (`DLM_DFL_ORPHAN_BIT`), which debugfs
/// does not print (6.12 shows `dlm_iflags_val()` only): orphans cannot be
/// told there, and are reported as not orphaned.
fn orphan_flag(release: &str) -> Option<u32> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = it.next()?.parse().ok()?;
    let minor: u32 = it.next()?.parse().ok()?;
    ((major, minor) < (6, 4)).then_some(0x2)
}

fn mode_name(raw: i32) -> Option<String> {
    crate::LockMode::from_raw_iv(raw)
        .ok()
        .flatten()
        .map(|m| m.to_string())
}

/// The resource a format-3 `rsb` line opens: its name (`str NAME`, or
/// `hex` and the bytes) and its master node (`res_nodeid`: 0 for this
/// node, -1 while unknown).
struct Rsb {
    name: Vec<u8>,
    master: Option<u32>,
    lvb: Option<String>,
    lvb_seq: Option<u32>,
}

/// `rsb %p nodeid first_lkid flags root recover recover_count length`,
/// then `str NAME` or `hex xx xx ...` (`print_format3` in
/// `fs/dlm/debug_fs.c`, the same in 6.1 and 6.12).
fn parse_rsb_line(line: &str) -> Option<Rsb> {
    let mut f = line.strip_prefix("rsb ")?.splitn(8, ' ');
    let _ptr = f.next()?;
    let nodeid: i32 = f.next()?.parse().ok()?;
    // first_lkid, flags, root and recover lists, recover count.
    for _ in 0..5 {
        f.next()?;
    }
    let rest = f.next()?;
    let (len, rest) = rest.split_once(' ')?;
    let len: usize = len.parse().ok()?;
    let name = if let Some(s) = rest.strip_prefix("str ") {
        s.as_bytes().to_vec()
    } else {
        let hex = rest.strip_prefix("hex")?;
        hex.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).ok())
            .collect::<Option<Vec<u8>>>()?
    };
    if name.len() != len {
        return None;
    }
    Some(Rsb {
        name,
        master: u32::try_from(nodeid).ok(),
        lvb: None,
        lvb_seq: None,
    })
}

/// `lvb SEQ LEN xx xx ...`: the resource's value block and its sequence
/// number (`res_lvbseq`, counting writes).
fn parse_lvb_line(line: &str, r: &mut Rsb) -> Option<()> {
    let mut f = line.strip_prefix("lvb ")?.split_whitespace();
    let seq: u32 = f.next()?.parse().ok()?;
    let _len = f.next()?;
    let hex: String = f.collect();
    r.lvb_seq = Some(seq);
    r.lvb = Some(hex);
    Some(())
}

/// `lkb id nodeid remid ownpid xid exflags flags status grmode rqmode
/// last_bast_mode rsb_lookup wait_type lvbseq timestamp last_bast_time`.
fn parse_lkb_line(
    line: &str,
    r: &Rsb,
    orphan_bit: Option<u32>,
) -> Option<dlm_proto::query::LockInfo> {
    let f: Vec<&str> = line.strip_prefix("lkb ")?.split_whitespace().collect();
    if f.len() < 14 {
        return None;
    }
    let lkid = u32::from_str_radix(f[0], 16).ok()?;
    let pid = f[3].parse().ok()?;
    let exflags = u32::from_str_radix(f[5], 16).ok()?;
    let flags = u32::from_str_radix(f[6], 16).ok()?;
    let status: i32 = f[7].parse().ok()?;
    let grmode: i32 = f[8].parse().ok()?;
    let rqmode: i32 = f[9].parse().ok()?;
    let rsb_lookup: i32 = f[11].parse().ok()?;
    let queue = match (status, rsb_lookup) {
        (_, 1) | (1, _) => Some("waiting"),
        (2, _) => Some("granted"),
        (3, _) => Some("converting"),
        _ => None,
    };
    let resource_hex = r.name.iter().map(|b| format!("{b:02x}")).collect();
    Some(dlm_proto::query::LockInfo {
        lkid,
        resource: crate::ResourceName::new(&r.name)
            .map(|n| n.to_string())
            .unwrap_or_else(|_| String::from_utf8_lossy(&r.name).into_owned()),
        resource_hex,
        granted: mode_name(grmode),
        requested: if matches!(queue, Some("waiting" | "converting")) {
            mode_name(rqmode)
        } else {
            None
        },
        queue: queue.map(str::to_string),
        pid,
        orphan: orphan_bit.is_some_and(|bit| flags & bit != 0),
        flags: exflags,
        lvb: r.lvb.clone(),
        master: r.master,
        lvb_seq: r.lvb_seq,
    })
}

/// Every lock of a format-3 dump, in the order the kernel lists them
/// (resource by resource: granted, converting, waiting, then those
/// waiting for a lookup of the master).
fn parse_format3(text: &str, orphan_bit: Option<u32>) -> Vec<dlm_proto::query::LockInfo> {
    let mut out = Vec::new();
    let mut rsb: Option<Rsb> = None;
    for line in text.lines() {
        if line.starts_with("rsb ") {
            rsb = parse_rsb_line(line);
        } else if let Some(r) = rsb.as_mut() {
            if line.starts_with("lvb ") {
                let _ = parse_lvb_line(line, r);
            } else if let Some(l) = parse_lkb_line(line, r, orphan_bit) {
                out.push(l);
            }
        }
    }
    out
}

#[cfg(test)]
mod query_tests {
    use super::*;

    /// Lines as `print_format3` writes them (6.1), for a text name and a
    /// binary one, with a value block, an orphan flag and a waiter.
    const SAMPLE: &str = "version 4 rsb 2
rsb 00000000c0ffee00 0 1 0 0 0 0 4 str disk
lvb 3 32 68 69 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
lkb 1 0 0 347 0 8 10000 2 5 -1 0 0 0 3 1000 0
lkb 2 0 0 348 0 0 10000 1 -1 3 0 0 0 0 2000 0
rsb 00000000c0ffee01 -1 3 0 0 0 0 2 hex 00 ff
lkb 3 0 0 9 0 0 2 2 0 -1 0 0 0 0 3000 0
";

    #[test]
    fn format3_parses_resources_value_blocks_and_locks() {
        let l = parse_format3(SAMPLE, Some(0x2));
        assert_eq!(l.len(), 3);
        assert_eq!(
            (l[0].lkid, l[0].pid, l[0].resource.as_str()),
            (1, 347, "disk")
        );
        assert_eq!(l[0].granted.as_deref(), Some("EX"));
        assert_eq!(
            (l[0].queue.as_deref(), l[0].requested.as_deref()),
            (Some("granted"), None)
        );
        assert_eq!(l[0].flags, 8);
        assert_eq!(l[0].lvb_seq, Some(3));
        assert!(l[0]
            .lvb
            .as_deref()
            .is_some_and(|h| h.starts_with("6869") && h.len() == 64));
        assert_eq!(l[0].master, Some(0));
        assert!(!l[0].orphan);
        assert_eq!(
            (l[1].queue.as_deref(), l[1].requested.as_deref()),
            (Some("waiting"), Some("PR"))
        );
        assert_eq!(l[1].granted, None);
        // The binary name, an unknown master, no value block, an orphan.
        assert_eq!(l[2].resource_hex, "00ff");
        assert_eq!(
            (l[2].master, l[2].lvb_seq, l[2].lvb.as_deref()),
            (None, None, None)
        );
        assert!(l[2].orphan);
        assert_eq!(l[2].granted.as_deref(), Some("NL"));
        // 6.4 and later do not show the orphan bit.
        assert!(!parse_format3(SAMPLE, orphan_flag("6.12.117+deb12-amd64"))[2].orphan);
        assert_eq!(orphan_flag("6.1.0-57-amd64"), Some(0x2));
        assert_eq!(orphan_flag("garbage"), None);
        assert!(parse_format3("garbage\nlkb 1 2\n", None).is_empty());
    }
}
