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
/// (`/sys/kernel/debug/dlm/<ls>_locks`, Linux's "format 2"). Resource
/// names there are C strings, so a binary name is cut at its first NUL.
pub(crate) fn locks(name: &str) -> Result<Vec<dlm_proto::query::LockInfo>> {
    let path = format!("/sys/kernel/debug/dlm/{name}_locks");
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
    Ok(text.lines().filter_map(parse_lock_line).collect())
}

fn mode_name(raw: i32) -> Option<String> {
    crate::LockMode::from_raw_iv(raw)
        .ok()
        .flatten()
        .map(|m| m.to_string())
}

/// One line of `<ls>_locks`: `id nodeid remid pid xid exflags flags sts
/// grmode rqmode time_us r_nodeid r_len "r_name"`.
fn parse_lock_line(line: &str) -> Option<dlm_proto::query::LockInfo> {
    let (head, name) = line.split_once(" \"")?;
    let name = name.strip_suffix('"').unwrap_or(name);
    let f: Vec<&str> = head.split_whitespace().collect();
    if f.len() < 13 {
        return None;
    }
    let lkid = u32::from_str_radix(f[0], 16).ok()?;
    let pid = f[3].parse().ok()?;
    let status: i32 = f[7].parse().ok()?;
    let grmode: i32 = f[8].parse().ok()?;
    let rqmode: i32 = f[9].parse().ok()?;
    let queue = match status {
        1 => Some("waiting"),
        2 => Some("granted"),
        3 => Some("converting"),
        _ => None,
    };
    let exflags = u32::from_str_radix(f[5], 16).ok()?;
    let flags = u32::from_str_radix(f[6], 16).ok()?;
    let master = f[11].parse().ok();
    Some(dlm_proto::query::LockInfo {
        lkid,
        resource: name.to_string(),
        resource_hex: name.bytes().map(|b| format!("{b:02x}")).collect(),
        granted: mode_name(grmode),
        requested: if status == 1 || status == 3 {
            mode_name(rqmode)
        } else {
            None
        },
        queue: queue.map(str::to_string),
        pid,
        // DLM_IFL_ORPHAN is 0x2 in lkb_flags (fs/dlm/dlm_internal.h, 6.1).
        orphan: flags & 0x2 != 0,
        flags: exflags,
        lvb: None,
        master,
    })
}

#[cfg(test)]
mod query_tests {
    use super::*;

    #[test]
    fn debugfs_lock_lines_parse() {
        let l = parse_lock_line("2 0 0 347 0 0 3 2 5 -1 1234 0 4 \"disk\"").unwrap();
        assert_eq!((l.lkid, l.pid, l.resource.as_str()), (2, 347, "disk"));
        assert_eq!(l.granted.as_deref(), Some("EX"));
        assert_eq!(l.requested, None);
        assert_eq!(l.queue.as_deref(), Some("granted"));
        assert!(l.orphan);
        assert_eq!((l.flags, l.master), (0, Some(0)));
        let w = parse_lock_line("1f 0 0 9 0 1 0 1 -1 3 5 0 1 \"r\"").unwrap();
        assert_eq!(
            (w.lkid, w.granted, w.requested.as_deref()),
            (0x1f, None, Some("PR"))
        );
        assert!(parse_lock_line("garbage").is_none());
    }
}
