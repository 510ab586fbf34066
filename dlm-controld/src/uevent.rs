//! Kernel uevents as they arrive on a `NETLINK_KOBJECT_UEVENT` socket, and
//! the few the controller acts on.
//!
//! A kernel uevent datagram is `ACTION@DEVPATH\0` followed by
//! `KEY=VALUE\0` pairs (`ACTION`, `DEVPATH`, `SUBSYSTEM`, `SEQNUM`, ...).
//! udev's re-broadcasts start with `libudev\0` and a binary header instead;
//! they are not kernel events and are rejected.
//!
//! The DLM sends, for the kobject `/sys/kernel/dlm/<ls>` (subsystem `dlm`):
//! `online` when a lockspace is being created, and `offline` when it is
//! being released, each with `LOCKSPACE=<name>`; the kernel thread then
//! waits until the controller writes `event_done`. Misc devices (`dlm-control`,
//! `dlm-monitor`, `dlm_plock`, `dlm_<ls>`) come and go with `add`/`remove`
//! events of subsystem `misc` carrying `DEVNAME`.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

/// One parsed uevent. Values are bytes: lockspace names need not be UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent {
    /// The action from the header (`add`, `online`, ...).
    pub action: Vec<u8>,
    /// The kobject path from the header, relative to `/sys`.
    pub devpath: Vec<u8>,
    vars: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Uevent {
    /// Parse one datagram; `None` if it is not a kernel uevent.
    pub fn parse(buf: &[u8]) -> Option<Uevent> {
        let mut fields = buf.split(|&b| b == 0);
        let header = fields.next()?;
        let at = header.iter().position(|&b| b == b'@')?;
        let (action, devpath) = (&header[..at], &header[at + 1..]);
        if action.is_empty() || !devpath.starts_with(b"/") {
            return None;
        }
        let vars = fields
            .filter(|f| !f.is_empty())
            .filter_map(|f| {
                let eq = f.iter().position(|&b| b == b'=')?;
                Some((f[..eq].to_vec(), f[eq + 1..].to_vec()))
            })
            .collect();
        Some(Uevent {
            action: action.to_vec(),
            devpath: devpath.to_vec(),
            vars,
        })
    }

    /// The value of `key`, if the event carries it.
    pub fn var(&self, key: &str) -> Option<&[u8]> {
        self.vars
            .iter()
            .find(|(k, _)| k == key.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// `ACTION=`, falling back to the header's action.
    pub fn action(&self) -> &[u8] {
        self.var("ACTION").unwrap_or(&self.action)
    }
}

/// A lockspace named by a DLM uevent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockspaceRef {
    /// The lockspace's name (`LOCKSPACE=`): the configfs `spaces/` entry.
    pub name: OsString,
    /// Its kobject's name, the last component of `DEVPATH`: the directory
    /// under `/sys/kernel/dlm`. The same as `name` unless the name holds a
    /// `/`, which sysfs shows as `!`.
    pub kobj: OsString,
}

impl LockspaceRef {
    /// A lockspace whose name and kobject name agree.
    pub fn new(name: impl Into<OsString>) -> LockspaceRef {
        let name = name.into();
        LockspaceRef {
            kobj: name.clone(),
            name,
        }
    }
}

/// The uevents the controller acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DlmEvent {
    /// `online`: a lockspace is being created; join it.
    Online(LockspaceRef),
    /// `offline`: a lockspace is being released; leave it.
    Offline(LockspaceRef),
    /// A DLM misc device appeared (`DEVNAME`, e.g. `dlm_<ls>`).
    DeviceAdded(OsString),
    /// A DLM misc device went away.
    DeviceRemoved(OsString),
}

/// The event `ev` means for the controller, if any.
pub fn classify(ev: &Uevent) -> Option<DlmEvent> {
    let subsystem = ev.var("SUBSYSTEM")?;
    let action = ev.action();
    match subsystem {
        b"dlm" => {
            let devpath = ev.var("DEVPATH").unwrap_or(&ev.devpath);
            let kobj = devpath
                .rsplit(|&b| b == b'/')
                .next()
                .filter(|k| !k.is_empty())?;
            let name = ev.var("LOCKSPACE").unwrap_or(kobj);
            let ls = LockspaceRef {
                name: OsStr::from_bytes(name).to_owned(),
                kobj: OsStr::from_bytes(kobj).to_owned(),
            };
            match action {
                b"online" => Some(DlmEvent::Online(ls)),
                b"offline" => Some(DlmEvent::Offline(ls)),
                _ => None,
            }
        }
        b"misc" => {
            let devname = ev.var("DEVNAME")?;
            if !is_dlm_device(OsStr::from_bytes(devname)) {
                return None;
            }
            let devname = OsStr::from_bytes(devname).to_owned();
            match action {
                b"add" => Some(DlmEvent::DeviceAdded(devname)),
                b"remove" => Some(DlmEvent::DeviceRemoved(devname)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether a `/dev` name is one of the DLM's misc devices: `dlm-control`,
/// `dlm-monitor`, `dlm_plock` or a lockspace's `dlm_<ls>`. Names with a `/`
/// (a device in a subdirectory) are not.
pub fn is_dlm_device(devname: &OsStr) -> bool {
    let b = devname.as_bytes();
    !b.contains(&b'/')
        && (b == b"dlm-control" || b == b"dlm-monitor" || (b.starts_with(b"dlm_") && b.len() > 4))
}

/// Whether a lockspace name can be used as a configfs directory name:
/// 1 to 64 bytes (`DLM_LOCKSPACE_LEN`), no `/` or NUL, not `.` or `..`.
pub fn valid_lockspace_name(name: &OsStr) -> bool {
    let b = name.as_bytes();
    (1..=64).contains(&b.len()) && !b.contains(&b'/') && !b.contains(&0) && b != b"." && b != b".."
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(header: &str, vars: &[&str]) -> Vec<u8> {
        let mut b = header.as_bytes().to_vec();
        b.push(0);
        for v in vars {
            b.extend_from_slice(v.as_bytes());
            b.push(0);
        }
        b
    }

    #[test]
    fn dlm_online_and_offline() {
        let on = datagram(
            "online@/kernel/dlm/smoke",
            &[
                "ACTION=online",
                "DEVPATH=/kernel/dlm/smoke",
                "SUBSYSTEM=dlm",
                "LOCKSPACE=smoke",
                "SEQNUM=1234",
            ],
        );
        let ev = Uevent::parse(&on).unwrap();
        assert_eq!(ev.var("SEQNUM"), Some(&b"1234"[..]));
        assert_eq!(
            classify(&ev),
            Some(DlmEvent::Online(LockspaceRef::new("smoke")))
        );

        let off = datagram(
            "offline@/kernel/dlm/smoke",
            &[
                "ACTION=offline",
                "DEVPATH=/kernel/dlm/smoke",
                "SUBSYSTEM=dlm",
                "LOCKSPACE=smoke",
                "RELEASE_RECOVER=0",
            ],
        );
        let ev = Uevent::parse(&off).unwrap();
        assert_eq!(
            classify(&ev),
            Some(DlmEvent::Offline(LockspaceRef::new("smoke")))
        );
    }

    #[test]
    fn name_and_kobject_can_differ() {
        let on = datagram(
            "online@/kernel/dlm/a!b",
            &[
                "ACTION=online",
                "DEVPATH=/kernel/dlm/a!b",
                "SUBSYSTEM=dlm",
                "LOCKSPACE=a/b",
            ],
        );
        let ev = Uevent::parse(&on).unwrap();
        let want = LockspaceRef {
            name: "a/b".into(),
            kobj: "a!b".into(),
        };
        assert_eq!(classify(&ev), Some(DlmEvent::Online(want)));
        assert!(!valid_lockspace_name(OsStr::new("a/b")));
    }

    #[test]
    fn missing_lockspace_var_falls_back_to_the_devpath() {
        let on = datagram("online@/kernel/dlm/x", &["SUBSYSTEM=dlm"]);
        let ev = Uevent::parse(&on).unwrap();
        assert_eq!(
            classify(&ev),
            Some(DlmEvent::Online(LockspaceRef::new("x")))
        );
    }

    #[test]
    fn other_dlm_actions_are_ignored() {
        let add = datagram(
            "add@/kernel/dlm/x",
            &["ACTION=add", "SUBSYSTEM=dlm", "LOCKSPACE=x"],
        );
        assert_eq!(classify(&Uevent::parse(&add).unwrap()), None);
        let other = datagram(
            "online@/devices/system/cpu/cpu1",
            &["ACTION=online", "SUBSYSTEM=cpu"],
        );
        assert_eq!(classify(&Uevent::parse(&other).unwrap()), None);
    }

    #[test]
    fn misc_devices() {
        let add = datagram(
            "add@/devices/virtual/misc/dlm_smoke",
            &[
                "ACTION=add",
                "SUBSYSTEM=misc",
                "DEVNAME=dlm_smoke",
                "MAJOR=10",
                "MINOR=121",
            ],
        );
        assert_eq!(
            classify(&Uevent::parse(&add).unwrap()),
            Some(DlmEvent::DeviceAdded("dlm_smoke".into()))
        );
        let rm = datagram(
            "remove@/devices/virtual/misc/dlm_smoke",
            &["ACTION=remove", "SUBSYSTEM=misc", "DEVNAME=dlm_smoke"],
        );
        assert_eq!(
            classify(&Uevent::parse(&rm).unwrap()),
            Some(DlmEvent::DeviceRemoved("dlm_smoke".into()))
        );
        let other = datagram(
            "add@/devices/virtual/misc/hpet",
            &["ACTION=add", "SUBSYSTEM=misc", "DEVNAME=hpet"],
        );
        assert_eq!(classify(&Uevent::parse(&other).unwrap()), None);
        assert!(is_dlm_device(OsStr::new("dlm_plock")));
        assert!(is_dlm_device(OsStr::new("dlm-monitor")));
        assert!(!is_dlm_device(OsStr::new("dlm_")));
        assert!(!is_dlm_device(OsStr::new("dlm_x/y")));
    }

    #[test]
    fn non_kernel_datagrams_are_rejected() {
        assert_eq!(Uevent::parse(b"libudev\0\xfe\xed\xca\xfe"), None);
        assert_eq!(Uevent::parse(b""), None);
        assert_eq!(Uevent::parse(b"@/x\0"), None);
        assert_eq!(Uevent::parse(b"add@relative\0"), None);
    }

    #[test]
    fn lockspace_names() {
        assert!(valid_lockspace_name(OsStr::new("lvm_global")));
        assert!(valid_lockspace_name(OsStr::new(&"x".repeat(64))));
        assert!(!valid_lockspace_name(OsStr::new(&"x".repeat(65))));
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(!valid_lockspace_name(OsStr::new(bad)), "{bad:?}");
        }
    }
}
