//! Transports: how records reach the DLM. The client's one seam between
//! its backends.
//!
//! A [`Transport`] is one open device: the kernel's misc device
//! ([`KernelDev`]), or a connection to `dlmd` that plays one ([`Socket`]).
//! Both move the same records ([`records`](dlm_proto::records)), and offer
//! the same operations: write a request (what `write()` returns), read a
//! callback record without blocking (into a borrowed view, or copied
//! out), one pollable fd, and the device's version and mode. Nothing above
//! this module asks which transport it has.
//!
//! A transport is used through `&self` from any thread: the kernel device
//! needs no lock, and the socket takes its own short locks (see
//! [`socket`]).

mod kernel_dev;
mod poll;
pub(crate) mod socket;

use std::collections::VecDeque;
use std::os::fd::{BorrowedFd, OwnedFd};

use dlm_proto::error::Errno;
use dlm_proto::records::{self, LockResult};

pub(crate) use kernel_dev::{KernelDev, RecordBuf};
pub(crate) use poll::wait_fds;
pub(crate) use socket::Socket;

/// One open device, on either backend.
#[derive(Debug)]
pub(crate) enum Transport {
    Kernel(KernelDev),
    Socket(Box<Socket>),
}

/// What the client reads of a callback record: one read in place from the
/// kernel, or a record copied out of a daemon connection's stash.
pub(crate) trait Record {
    fn astparam(&self) -> u64;
    fn lkid(&self) -> u32;
    fn status(&self) -> i32;
    fn sb_flags(&self) -> u8;
    fn bast_mode(&self) -> u8;
    fn lvb(&self) -> Option<&[u8; records::LVB_LEN]>;
}

/// Something done with the next record, whatever its form: see
/// [`Transport::read_visit`].
pub(crate) trait Visit {
    type Out;
    fn visit<R: Record>(self, r: &R) -> Self::Out;
}

impl Transport {
    /// `write()` a request; what the kernel's `write()` returns (on the
    /// daemon: once its answer came back, without holding any lock of the
    /// caller's).
    #[inline(always)]
    pub(crate) fn write(&self, bytes: &[u8]) -> Result<i64, Errno> {
        match self {
            Transport::Kernel(k) => k.write(bytes),
            Transport::Socket(s) => s.write(bytes),
        }
    }

    /// Whether a write can wait for another process: the daemon answers
    /// each write, and may be stopped. The kernel completes a write itself
    /// (it queues the request and returns; only the cluster's recovery
    /// holds it, and then every writer of the lockspace alike).
    #[inline(always)]
    pub(crate) fn write_may_wait(&self) -> bool {
        matches!(self, Transport::Socket(_))
    }

    /// Read the next record without blocking and hand it to `v` where it
    /// lies (a kernel record is large, and copies cost). `None` if there
    /// is none.
    #[inline(always)]
    pub(crate) fn read_visit<V: Visit>(&self, v: V) -> Result<Option<V::Out>, Errno> {
        match self {
            Transport::Kernel(k) => {
                let mut buf: RecordBuf = [0; records::RESULT_WITH_LVB_SIZE];
                Ok(k.read_view(&mut buf)?.map(|r| v.visit(&r)))
            }
            Transport::Socket(s) => Self::visit_socket(s, v),
        }
    }

    #[inline(never)]
    /// On a daemon connection that failed, nothing is read now: the
    /// caller's next wait meets the failure, and replays or reports it
    /// there with no lock held (see the client's `replay`).
    fn visit_socket<V: Visit>(s: &Socket, v: V) -> Result<Option<V::Out>, Errno> {
        match s.read_next() {
            Ok(r) => Ok(r.map(|r| v.visit(&r))),
            Err(e) if e == Errno::EPIPE || e == Errno::from_raw(libc::ECONNRESET) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every record that can be read without blocking, into `out`; the
    /// epoch they were read in (see [`epoch`](Self::epoch)).
    pub(crate) fn read_available(&self, out: &mut VecDeque<LockResult>) -> Result<u32, Errno> {
        match self {
            Transport::Kernel(k) => {
                while let Some(r) = k.read_next()? {
                    out.push_back(r);
                }
                Ok(0)
            }
            Transport::Socket(s) => s.read_available(out),
        }
    }

    /// The next callback record that can be read without blocking, copied
    /// out, with the epoch it was read in (see [`epoch`](Self::epoch)).
    #[inline]
    pub(crate) fn read_next_tagged(&self) -> Result<Option<(LockResult, u32)>, Errno> {
        match self {
            Transport::Kernel(k) => Ok(k.read_next()?.map(|r| (r, 0))),
            Transport::Socket(s) => s.read_next_tagged(),
        }
    }

    /// The epoch of the records read now: on a daemon connection, one more
    /// each time a replay has planned from what the failed connection
    /// brought (`Socket::take_stash`). A record read in an earlier epoch
    /// and not taken in before it ended is dropped: the replay planned
    /// without it, as if it had never come. Always 0 on the kernel.
    #[inline]
    pub(crate) fn epoch(&self) -> u32 {
        match self {
            Transport::Kernel(_) => 0,
            Transport::Socket(s) => s.epoch(),
        }
    }

    /// One `read()` as the raw device does it: on a daemon connection in
    /// pull mode, a request for one record.
    pub(crate) fn read_one(&self) -> Result<Option<LockResult>, Errno> {
        match self {
            Transport::Kernel(k) => k.read_next(),
            Transport::Socket(s) => s.read_one(),
        }
    }

    /// An operation is over: make records it read for others visible on
    /// the pollable fd. Whether the connection closed (every lock of the
    /// handle went with it; never on the kernel).
    #[inline(always)]
    pub(crate) fn settle(&self) -> bool {
        match self {
            Transport::Kernel(_) => false,
            Transport::Socket(s) => Self::settle_socket(s),
        }
    }

    #[inline(never)]
    fn settle_socket(s: &Socket) -> bool {
        s.settle()
    }

    /// Whether the connection closed (see [`settle`](Self::settle)).
    pub(crate) fn closed(&self) -> bool {
        match self {
            Transport::Kernel(_) => false,
            Transport::Socket(s) => s.closed(),
        }
    }

    /// The one fd to poll for callback records: the device's own, or (on
    /// a daemon connection) an epoll fd over the socket and the stash's
    /// eventfd.
    pub(crate) fn poll_fd(&self) -> BorrowedFd<'_> {
        match self {
            Transport::Kernel(k) => k.fd(),
            Transport::Socket(s) => s.poll_fd(),
        }
    }

    /// From now on a copy of the device's descriptor may live in child
    /// processes: closing ours only closes it (a daemon connection says no
    /// `Bye`), as the kernel keeps the locks while its open file has a
    /// descriptor. Returns a new such copy, without close-on-exec.
    pub(crate) fn inheritable_fd(&self) -> Result<OwnedFd, Errno> {
        let fd = match self {
            Transport::Kernel(k) => k.fd(),
            Transport::Socket(s) => {
                s.share_with_children();
                s.stream_fd()
            }
        };
        rustix::io::dup(fd).map_err(|e| Errno::from_raw(e.raw_os_error()))
    }

    /// The device version (6.0.x).
    pub(crate) fn version(&self) -> Result<[u32; 3], Errno> {
        match self {
            Transport::Kernel(k) => k.version(),
            Transport::Socket(s) => s.version(),
        }
    }

    /// Set the lockspace's access mode (the node's mode, or the daemon's
    /// record of it).
    pub(crate) fn chmod(&self, mode: u32) -> Result<(), Errno> {
        match self {
            Transport::Kernel(k) => k.chmod(mode),
            Transport::Socket(s) => {
                let v = s.call(dlm_proto::wire::Kind::Chmod, &mode.to_le_bytes())?;
                if v < 0 {
                    return Err(Errno::from_raw((-v) as i32));
                }
                Ok(())
            }
        }
    }
}

impl Record for LockResult {
    #[inline(always)]
    fn astparam(&self) -> u64 {
        self.astparam
    }
    #[inline(always)]
    fn lkid(&self) -> u32 {
        self.lkid
    }
    #[inline(always)]
    fn status(&self) -> i32 {
        self.status
    }
    #[inline(always)]
    fn sb_flags(&self) -> u8 {
        self.sb_flags
    }
    #[inline(always)]
    fn bast_mode(&self) -> u8 {
        self.bast_mode
    }
    #[inline(always)]
    fn lvb(&self) -> Option<&[u8; records::LVB_LEN]> {
        self.lvb.as_ref()
    }
}

impl Record for records::ResultView<'_> {
    #[inline(always)]
    fn astparam(&self) -> u64 {
        records::ResultView::astparam(self)
    }
    #[inline(always)]
    fn lkid(&self) -> u32 {
        records::ResultView::lkid(self)
    }
    #[inline(always)]
    fn status(&self) -> i32 {
        records::ResultView::status(self)
    }
    #[inline(always)]
    fn sb_flags(&self) -> u8 {
        records::ResultView::sb_flags(self)
    }
    #[inline(always)]
    fn bast_mode(&self) -> u8 {
        records::ResultView::bast_mode(self)
    }
    #[inline(always)]
    fn lvb(&self) -> Option<&[u8; records::LVB_LEN]> {
        records::ResultView::lvb(self)
    }
}
