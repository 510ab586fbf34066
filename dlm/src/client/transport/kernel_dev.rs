//! The kernel transport: a DLM misc device (`dlm-control`, `dlm_<ls>`).
//!
//! Every operation is one system call on the device's fd, which is
//! non-blocking: `write()` returns what the kernel decided, `read()` the
//! next callback record or `EAGAIN`. The kernel serialises writes itself,
//! so no lock is needed; the fd itself is the pollable fd.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use dlm_proto::error::Errno;
use dlm_proto::records::{self, LockResult, RESULT_WITH_LVB_SIZE};

/// A buffer for one record read from a kernel device.
pub(crate) type RecordBuf = [u8; RESULT_WITH_LVB_SIZE];

/// An open kernel device.
#[derive(Debug)]
pub(crate) struct KernelDev {
    file: File,
}

fn sys(e: rustix::io::Errno) -> Errno {
    Errno::from_raw(e.raw_os_error())
}

impl KernelDev {
    /// Open a kernel device node read-write, non-blocking, close-on-exec.
    pub(crate) fn open(path: &Path) -> Result<KernelDev, Errno> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)?;
        Ok(KernelDev { file })
    }

    /// The fd: to poll, and to hand to children.
    #[inline(always)]
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// `write()` a request; what `write()` returns (the new lock id for a
    /// lock request).
    #[inline]
    pub(crate) fn write(&self, bytes: &[u8]) -> Result<i64, Errno> {
        loop {
            match rustix::io::write(&self.file, bytes) {
                Ok(n) => return Ok(n as i64),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(sys(e)),
            }
        }
    }

    /// One `read()` into `buf`: the next callback record, checked and read
    /// in place, or `None` for `EAGAIN`.
    #[inline(always)]
    pub(crate) fn read_view<'a>(
        &self,
        buf: &'a mut RecordBuf,
    ) -> Result<Option<records::ResultView<'a>>, Errno> {
        let n = loop {
            match rustix::io::read(&self.file, &mut buf[..]) {
                Ok(n) => break n,
                Err(rustix::io::Errno::AGAIN) => return Ok(None),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(sys(e)),
            }
        };
        records::ResultView::parse(&buf[..n]).map(Some)
    }

    /// One `read()`: the next callback record, copied out, or `None`.
    #[inline]
    pub(crate) fn read_next(&self) -> Result<Option<LockResult>, Errno> {
        let mut b = [0; RESULT_WITH_LVB_SIZE];
        Ok(self.read_view(&mut b)?.map(|v| v.to_result()))
    }

    /// The device version (a 12-byte read).
    pub(crate) fn version(&self) -> Result<[u32; 3], Errno> {
        let mut b = [0u8; records::VERSION_SIZE];
        let n = (&self.file).read(&mut b)?;
        records::decode_version(&b[..n])
    }

    /// The device's minor number.
    pub(crate) fn minor(&self) -> Option<u32> {
        use std::os::unix::fs::MetadataExt;
        let rdev = self.file.metadata().ok()?.rdev();
        Some(rustix::fs::minor(rdev))
    }

    /// `fchmod` the device node: libdlm's lockspace mode.
    pub(crate) fn chmod(&self, mode: u32) -> Result<(), Errno> {
        rustix::fs::fchmod(&self.file, rustix::fs::Mode::from_raw_mode(mode)).map_err(sys)
    }
}
