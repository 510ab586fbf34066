//! Where the kernel DLM's control files are.
//!
//! Every path the controller touches is built here from five roots, so the
//! controller runs unchanged against the real system ([`Layout::system`])
//! or a fake tree under a test directory ([`Layout::under`]).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// The controller's run directory on the real system.
pub const RUN_DIR: &str = "/run/dlm-controld";

/// The roots of the kernel interfaces the controller uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// configfs mount point: `/sys/kernel/config`.
    pub configfs: PathBuf,
    /// The DLM's sysfs kset: `/sys/kernel/dlm`.
    pub sysfs_dlm: PathBuf,
    /// Device nodes: `/dev`.
    pub dev: PathBuf,
    /// procfs: `/proc`.
    pub proc: PathBuf,
    /// Misc device classes: `/sys/class/misc`.
    pub sys_class_misc: PathBuf,
    /// The controller's run directory, `/run/dlm-controld`: its event
    /// socket (see [`events`](crate::events)).
    pub run: PathBuf,
}

impl Default for Layout {
    fn default() -> Self {
        Layout::system()
    }
}

impl Layout {
    /// The real system's paths.
    pub fn system() -> Layout {
        Layout::under(Path::new("/"))
    }

    /// The same tree under another root (tests).
    pub fn under(root: &Path) -> Layout {
        Layout {
            configfs: root.join("sys/kernel/config"),
            sysfs_dlm: root.join("sys/kernel/dlm"),
            dev: root.join("dev"),
            proc: root.join("proc"),
            sys_class_misc: root.join("sys/class/misc"),
            run: root.join(RUN_DIR.trim_start_matches('/')),
        }
    }

    /// `/sys/kernel/config/dlm`: present once dlm.ko is loaded and configfs
    /// is mounted.
    pub fn dlm_config(&self) -> PathBuf {
        self.configfs.join("dlm")
    }

    /// `/sys/kernel/config/dlm/cluster`.
    pub fn cluster(&self) -> PathBuf {
        self.dlm_config().join("cluster")
    }

    /// `cluster/<attr>` (`cluster_name`, `protocol`, ...).
    pub fn cluster_attr(&self, attr: &str) -> PathBuf {
        self.cluster().join(attr)
    }

    /// `cluster/comms`.
    pub fn comms(&self) -> PathBuf {
        self.cluster().join("comms")
    }

    /// `cluster/comms/<nodeid>`.
    pub fn comm(&self, nodeid: u32) -> PathBuf {
        self.comms().join(nodeid.to_string())
    }

    /// `cluster/spaces`.
    pub fn spaces(&self) -> PathBuf {
        self.cluster().join("spaces")
    }

    /// `cluster/spaces/<ls>`.
    pub fn space(&self, ls: &OsStr) -> PathBuf {
        self.spaces().join(ls)
    }

    /// `cluster/spaces/<ls>/nodes/<nodeid>`.
    pub fn space_node(&self, ls: &OsStr, nodeid: u32) -> PathBuf {
        self.space(ls).join("nodes").join(nodeid.to_string())
    }

    /// `/sys/kernel/dlm/<kobj>/<attr>` (`id`, `control`, `event_done`, ...).
    pub fn ls_attr(&self, kobj: &OsStr, attr: &str) -> PathBuf {
        self.sysfs_dlm.join(kobj).join(attr)
    }

    /// `/dev/misc`, where libdlm looks for its devices.
    pub fn dev_misc(&self) -> PathBuf {
        self.dev.join("misc")
    }

    /// `/dev/misc/<devname>`.
    pub fn misc_link(&self, devname: &OsStr) -> PathBuf {
        self.dev_misc().join(devname)
    }

    /// `/dev/<devname>`: where devtmpfs puts the node.
    pub fn dev_node(&self, devname: &OsStr) -> PathBuf {
        self.dev.join(devname)
    }

    /// What a `/dev/misc/<devname>` link points at: `../<devname>`, the
    /// target the udev rule's `SYMLINK+="misc/%k"` makes.
    pub fn misc_link_target(devname: &OsStr) -> PathBuf {
        Path::new("..").join(devname)
    }
}

/// The minor of misc device `name` in the text of `/proc/misc`
/// (`<minor> <name>` per line).
pub fn misc_minor(proc_misc: &str, name: &str) -> Option<u32> {
    proc_misc.lines().find_map(|line| {
        let mut it = line.split_whitespace();
        let minor = it.next()?.parse().ok()?;
        (it.next()? == name).then_some(minor)
    })
}

/// `(major, minor)` from a sysfs `dev` attribute (`10:123`).
pub fn parse_dev(dev: &str) -> Option<(u32, u32)> {
    let (a, b) = dev.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let l = Layout::system();
        let ls = OsStr::new("smoke");
        assert_eq!(l.cluster(), Path::new("/sys/kernel/config/dlm/cluster"));
        assert_eq!(
            l.comm(1),
            Path::new("/sys/kernel/config/dlm/cluster/comms/1")
        );
        assert_eq!(
            l.space_node(ls, 1),
            Path::new("/sys/kernel/config/dlm/cluster/spaces/smoke/nodes/1")
        );
        assert_eq!(
            l.ls_attr(ls, "event_done"),
            Path::new("/sys/kernel/dlm/smoke/event_done")
        );
        assert_eq!(
            l.misc_link(OsStr::new("dlm_smoke")),
            Path::new("/dev/misc/dlm_smoke")
        );
        assert_eq!(
            Layout::misc_link_target(OsStr::new("dlm_smoke")),
            Path::new("../dlm_smoke")
        );
        let t = Layout::under(Path::new("/tmp/x"));
        assert_eq!(t.sysfs_dlm, Path::new("/tmp/x/sys/kernel/dlm"));
        assert_eq!(t.proc, Path::new("/tmp/x/proc"));
        assert_eq!(t.run, Path::new("/tmp/x/run/dlm-controld"));
        assert_eq!(l.run, Path::new(RUN_DIR));
    }

    #[test]
    fn proc_misc_and_dev() {
        let misc = "122 dlm_plock\n123 dlm-monitor\n124 dlm-control\n  1 psaux\n";
        assert_eq!(misc_minor(misc, "dlm-monitor"), Some(123));
        assert_eq!(misc_minor(misc, "psaux"), Some(1));
        assert_eq!(misc_minor(misc, "dlm"), None);
        assert_eq!(parse_dev("10:123\n"), Some((10, 123)));
        assert_eq!(parse_dev("10"), None);
    }
}
