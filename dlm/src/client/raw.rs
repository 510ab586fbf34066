//! [`RawDevice`]: the device at the level of `write()` and `read()`.

use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use dlm_proto::error::{Errno, Error, Result};
use dlm_proto::name::LockspaceName;
use dlm_proto::records::LockResult;
use dlm_proto::wire;

use super::transport::{KernelDev, Socket, Transport};

/// A device handle at the level of `write()` and `read()`: the records of
/// [`dlm_proto::records`], nothing more. This is what libdlm itself does
/// with the device; the C ABI and the conformance suite use it. Most
/// programs want [`Lockspace`](crate::Lockspace) instead.
#[derive(Debug)]
pub struct RawDevice(Transport);

impl RawDevice {
    /// Open a kernel device node (`/dev/misc/dlm-control`, `/dev/dlm_<ls>`).
    pub fn open_kernel(path: &Path) -> Result<RawDevice> {
        Ok(RawDevice(Transport::Kernel(KernelDev::open(path)?)))
    }

    /// Connect to `dlmd` as its control device (`lockspace` `None`) or as
    /// the named lockspace's device. With `pull`, records come only when
    /// read, one per [`read`](Self::read), as from the kernel device;
    /// otherwise the daemon pushes them as they happen.
    ///
    /// The socket is checked as [`Dlm`](crate::Dlm) checks its own (see
    /// [`trust`](dlm_proto::trust)): [`Error::UntrustedSocket`] if it fails.
    pub fn connect(
        socket: &Path,
        lockspace: Option<&LockspaceName>,
        pull: bool,
    ) -> Result<RawDevice> {
        let (role, name) = match lockspace {
            Some(n) => (wire::ROLE_LOCKSPACE, n.as_bytes()),
            None => (wire::ROLE_CONTROL, &b""[..]),
        };
        let flags = if pull { wire::HELLO_PULL } else { 0 };
        let (dev, _) = Socket::connect(socket, role, flags, name)?;
        Ok(RawDevice(Transport::Socket(Box::new(dev))))
    }

    /// `write()` a request; its return value.
    pub fn write(&mut self, bytes: &[u8]) -> Result<i64, Errno> {
        let r = self.0.write(bytes);
        self.0.settle();
        r
    }

    /// One `read()` of a callback record; `None` when there is none
    /// (`EAGAIN`).
    pub fn read(&mut self) -> Result<Option<LockResult>, Errno> {
        let r = self.0.read_one();
        self.0.settle();
        r
    }

    /// The 12-byte version read.
    pub fn version(&mut self) -> Result<[u32; 3], Errno> {
        self.0.version()
    }

    /// The fd, for polling: readable when a record can be read (on a
    /// daemon connection, an epoll fd over the socket and the records
    /// already read from it).
    pub fn raw_fd(&self) -> RawFd {
        self.0.poll_fd().as_raw_fd()
    }

    /// The daemon's lockspaces (a control connection to `dlmd` only;
    /// `ENOSYS` on a kernel device, whose lockspaces
    /// [`Dlm::lockspaces`](crate::Dlm::lockspaces) reads from sysfs).
    pub fn lockspaces(&mut self) -> Result<Vec<dlm_proto::query::LockspaceInfo>> {
        match &self.0 {
            Transport::Kernel(_) => Err(Error::Os(Errno::ENOSYS)),
            Transport::Socket(s) => super::dlm::query_lockspaces(s),
        }
    }
}
