//! Where scenarios run: the in-process engine, `dlmd`, or the kernel.

use std::path::{Path, PathBuf};

use dlm::raw::RawDevice;
use dlm::{Errno, LockspaceName};
use dlm_engine::{Engine, KernelModel, OwnerId};
use dlm_proto::records::{self, LockResult};

/// A lockspace that scenarios can open owners on, write to and read from.
pub trait Target {
    /// Open a new owner (an fd on the lockspace); returns its handle.
    fn open(&mut self) -> Result<usize, Errno>;
    /// Close an owner.
    fn close(&mut self, owner: usize) -> Result<(), Errno>;
    /// One `write()`; its return value.
    fn write(&mut self, owner: usize, bytes: &[u8]) -> Result<i64, Errno>;
    /// One `read()` with room for a value block; `None` is `EAGAIN`.
    fn read(&mut self, owner: usize) -> Result<Option<LockResult>, Errno>;
    /// The pid the DLM records for this owner's writes.
    fn pid(&self, owner: usize) -> u32;
}

/// The engine in this process, behind the same records as the devices.
#[derive(Debug, Default)]
pub struct EngineTarget {
    engine: Engine,
    owners: Vec<Option<OwnerId>>,
}

impl EngineTarget {
    /// A fresh lockspace, following Linux 6.1.
    pub fn new() -> EngineTarget {
        EngineTarget::default()
    }

    /// A fresh lockspace, following `model`.
    pub fn with_model(model: KernelModel) -> EngineTarget {
        EngineTarget {
            engine: Engine::with_model(model),
            owners: Vec::new(),
        }
    }

    fn owner(&self, h: usize) -> Result<OwnerId, Errno> {
        self.owners.get(h).copied().flatten().ok_or(Errno::EBADF)
    }
}

impl Target for EngineTarget {
    fn open(&mut self) -> Result<usize, Errno> {
        let o = self.engine.open_owner(std::process::id());
        self.owners.push(Some(o));
        Ok(self.owners.len() - 1)
    }

    fn close(&mut self, h: usize) -> Result<(), Errno> {
        let o = self.owner(h)?;
        self.owners[h] = None;
        self.engine.close_owner(o)
    }

    fn write(&mut self, h: usize, bytes: &[u8]) -> Result<i64, Errno> {
        let o = self.owner(h)?;
        let d = records::decode_write(bytes)?;
        self.engine.device_write(o, std::process::id(), &d.request)
    }

    fn read(&mut self, h: usize) -> Result<Option<LockResult>, Errno> {
        let o = self.owner(h)?;
        Ok(self.engine.read(o).map(|r| LockResult::from(&r)))
    }

    fn pid(&self, _: usize) -> u32 {
        std::process::id()
    }
}

enum Kind {
    Kernel { device: PathBuf },
    Daemon { socket: PathBuf },
}

/// A lockspace on a real device: the kernel's, or `dlmd` playing one.
/// The lockspace is created fresh and removed (with force) on drop.
pub struct DeviceTarget {
    kind: Kind,
    control: RawDevice,
    name: LockspaceName,
    minor: u32,
    owners: Vec<Option<RawDevice>>,
}

impl std::fmt::Debug for DeviceTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceTarget")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl DeviceTarget {
    /// A fresh lockspace `name` on the kernel DLM.
    pub fn kernel(name: &str) -> Result<DeviceTarget, String> {
        let ctl = dlm::kernel_device_node("dlm-control")
            .map_err(|e| format!("no dlm-control device ({e}): is the dlm module loaded?"))?;
        let control =
            RawDevice::open_kernel(&ctl).map_err(|e| format!("{}: {e}", ctl.display()))?;
        let mut t = DeviceTarget::create(control, name, |n| Kind::Kernel {
            device: PathBuf::from(format!("/dev/dlm_{n}")),
        })?;
        if let Kind::Kernel { device } = &mut t.kind {
            if let Ok(p) = dlm::kernel_device_node(&format!("dlm_{name}")) {
                *device = p;
            }
        }
        Ok(t)
    }

    /// A fresh lockspace `name` on the daemon at `socket`.
    pub fn daemon(socket: &Path, name: &str) -> Result<DeviceTarget, String> {
        let control = RawDevice::connect(socket, None, true)
            .map_err(|e| format!("{}: {e}", socket.display()))?;
        DeviceTarget::create(control, name, |_| Kind::Daemon {
            socket: socket.to_path_buf(),
        })
    }

    fn create(
        mut control: RawDevice,
        name: &str,
        kind: impl FnOnce(&str) -> Kind,
    ) -> Result<DeviceTarget, String> {
        let ls = LockspaceName::new(name).map_err(|e| format!("lockspace name {name:?}: {e}"))?;
        let req = records::encode_create(
            ls.as_bytes(),
            dlm::LockspaceFlags::NEWEXCL.bits(),
            records::VERSION,
        )
        .map_err(|e| e.to_string())?;
        let minor = control
            .write(req.as_bytes())
            .map_err(|e| format!("create lockspace {name}: {e}"))?;
        Ok(DeviceTarget {
            kind: kind(name),
            control,
            name: ls,
            minor: minor as u32,
            owners: Vec::new(),
        })
    }

    fn dev(&mut self, h: usize) -> Result<&mut RawDevice, Errno> {
        self.owners
            .get_mut(h)
            .and_then(|d| d.as_mut())
            .ok_or(Errno::EBADF)
    }
}

impl Target for DeviceTarget {
    fn open(&mut self) -> Result<usize, Errno> {
        let dev = match &self.kind {
            Kind::Kernel { device } => RawDevice::open_kernel(device).map_err(|e| e.errno())?,
            Kind::Daemon { socket } => {
                RawDevice::connect(socket, Some(&self.name), true).map_err(|e| e.errno())?
            }
        };
        self.owners.push(Some(dev));
        Ok(self.owners.len() - 1)
    }

    fn close(&mut self, h: usize) -> Result<(), Errno> {
        match self.owners.get_mut(h) {
            Some(d @ Some(_)) => *d = None,
            _ => return Err(Errno::EBADF),
        }
        if let Kind::Daemon { .. } = self.kind {
            // close() on the kernel device releases the fd's locks before
            // it returns; dlmd sees the end of a connection some time
            // later. Wait until it has, as a later request expects.
            let open = self.owners.iter().filter(|d| d.is_some()).count();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let spaces = self.control.lockspaces().map_err(|e| e.errno())?;
                let conns = spaces
                    .iter()
                    .find(|s| s.name == self.name.to_string())
                    .map_or(0, |s| s.connections);
                if conns <= open || std::time::Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        Ok(())
    }

    fn write(&mut self, h: usize, bytes: &[u8]) -> Result<i64, Errno> {
        self.dev(h)?.write(bytes)
    }

    fn read(&mut self, h: usize) -> Result<Option<LockResult>, Errno> {
        self.dev(h)?.read()
    }

    fn pid(&self, _: usize) -> u32 {
        std::process::id()
    }
}

impl Drop for DeviceTarget {
    fn drop(&mut self) {
        // Close every owner first: the kernel waits for them on release.
        self.owners.clear();
        let req = records::encode_remove(
            self.minor,
            dlm_sys::DLM_USER_LSFLG_FORCEFREE,
            records::VERSION,
        );
        if let Err(e) = self.control.write(req.as_bytes()) {
            eprintln!("warning: removing lockspace {}: {e}", self.name);
        }
    }
}
