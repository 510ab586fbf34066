//! Finding the kernel's DLM devices without udev.
//!
//! Nodes are looked for as `/dev/misc/<name>` (udev's links, which libdlm
//! 4.2 uses), then `/dev/<name>` (what devtmpfs creates). If neither
//! exists but the kernel has the device (its minor is in `/proc/misc` or
//! `/sys/class/misc/<name>/dev`), root creates `/dev/misc/<name>` itself;
//! anyone else gets an error that says what is missing. Nothing here
//! sleeps waiting for udev (libdlm waits up to 10 s).

use std::path::PathBuf;

use crate::error::{Errno, Error, Result};

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
    let ours = crate::proto::VERSION;
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
