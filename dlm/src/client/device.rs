//! Transports: how records reach the DLM.
//!
//! A [`Device`] is one open lockspace (or the control device): the kernel's
//! misc device, or a connection to `dlmd` that plays one. Both move the
//! same records ([`records`](dlm_proto::records)); this module hides the
//! difference: [`Device::write`] returns what `write()` returns, and
//! [`Device::read_available`] collects the records `read()` would return.
//!
//! The fd is always non-blocking; blocking waits use `poll(2)`.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use dlm_proto::error::{Errno, Error, Refusal};
use dlm_proto::records::{self, LockResult, RESULT_WITH_LVB_SIZE};
use dlm_proto::trust;
use dlm_proto::wire::{self, Kind};

/// One open device: the kernel's, or a `dlmd` connection playing one.
#[derive(Debug)]
pub(crate) enum Device {
    Kernel(File),
    Socket(SocketConn),
}

/// A connection to `dlmd`.
#[derive(Debug)]
pub(crate) struct SocketConn {
    stream: UnixStream,
    decoder: wire::Decoder,
    /// Callback records that arrived while waiting for a reply.
    stash: VecDeque<LockResult>,
    /// A copy of the socket was handed to child processes: closing this
    /// one must not end the connection's locks (no `Bye`).
    shared: bool,
}

fn io_errno(e: std::io::Error) -> Errno {
    Errno::from(e)
}

/// Wait until `fd` is readable (or writable), up to `timeout`.
pub(crate) fn wait_fd(
    fd: BorrowedFd<'_>,
    write: bool,
    timeout: Option<Duration>,
) -> Result<bool, Errno> {
    wait_fds(&[fd], write, timeout)
}

/// Wait until any of `fds` is readable, up to `timeout`.
pub(crate) fn wait_any(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> Result<bool, Errno> {
    wait_fds(fds, false, timeout)
}

fn wait_fds(fds: &[BorrowedFd<'_>], write: bool, timeout: Option<Duration>) -> Result<bool, Errno> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let flags = if write { PollFlags::OUT } else { PollFlags::IN };
    // A deadline the clock cannot represent is no deadline.
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    loop {
        let mut pfds: Vec<PollFd<'_>> = fds.iter().map(|fd| PollFd::new(fd, flags)).collect();
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let ts = left.map(|d| Timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(d.subsec_nanos()),
        });
        match poll(&mut pfds, ts.as_ref()) {
            Ok(n) => return Ok(n > 0),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Errno::from_raw(e.raw_os_error())),
        }
    }
}

/// `write()` a request to a kernel device; what `write()` returns (the
/// new lock id for a lock request). Takes any fd of the device: the
/// kernel serialises writes, so no lock is needed.
#[inline]
pub(crate) fn kernel_write(fd: BorrowedFd<'_>, bytes: &[u8]) -> Result<i64, Errno> {
    loop {
        match rustix::io::write(fd, bytes) {
            Ok(n) => return Ok(n as i64),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Errno::from_raw(e.raw_os_error())),
        }
    }
}

/// A buffer for one record read from a kernel device.
pub(crate) type RecordBuf = [u8; RESULT_WITH_LVB_SIZE];

/// One `read()` of a kernel device (non-blocking) into `buf`: the next
/// callback record, checked and read in place, or `None` for `EAGAIN`.
#[inline(always)]
pub(crate) fn kernel_read_view<'a>(
    fd: BorrowedFd<'_>,
    buf: &'a mut RecordBuf,
) -> Result<Option<records::ResultView<'a>>, Errno> {
    let n = loop {
        match rustix::io::read(fd, &mut buf[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::AGAIN) => return Ok(None),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Errno::from_raw(e.raw_os_error())),
        }
    };
    records::ResultView::parse(&buf[..n]).map(Some)
}

/// One `read()` of a kernel device (non-blocking): the next callback
/// record, or `None` for `EAGAIN`.
#[inline(always)]
pub(crate) fn kernel_read_next(fd: BorrowedFd<'_>) -> Result<Option<LockResult>, Errno> {
    let mut b = [0; RESULT_WITH_LVB_SIZE];
    Ok(kernel_read_view(fd, &mut b)?.map(|v| v.to_result()))
}

impl Device {
    /// Open a kernel device node read-write, non-blocking, close-on-exec.
    pub(crate) fn open_kernel(path: &Path) -> Result<Device, Errno> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(io_errno)?;
        Ok(Device::Kernel(f))
    }

    /// Connect to `dlmd` at `path` and say hello as `role`.
    ///
    /// The socket's directory is checked before the connect, and the
    /// peer's uid before the hello (see [`trust`]): an untrusted socket
    /// is [`Error::UntrustedSocket`] and hears nothing from us.
    ///
    /// Returns the device and the daemon's answer to the hello (0, or a
    /// lockspace's minor). A daemon that turns the connection away (a
    /// connection cap or quota) is [`Error::DaemonRefused`]; every other
    /// failure, the connect's or the hello's, is [`Error::Os`].
    pub(crate) fn connect(
        path: &Path,
        role: u8,
        flags: u8,
        name: &[u8],
    ) -> Result<(Device, i64), Error> {
        let user = rustix::process::getuid().as_raw();
        trust::check_socket_dir(&trust::socket_dir(path), user)?;
        let stream = UnixStream::connect(path).map_err(|e| Error::Os(io_errno(e)))?;
        trust::check_peer(&stream, path, user)?;
        Self::hello(stream, path, role, flags, name)
    }

    /// Say hello on a connected, checked stream.
    fn hello(
        stream: UnixStream,
        path: &Path,
        role: u8,
        flags: u8,
        name: &[u8],
    ) -> Result<(Device, i64), Error> {
        stream
            .set_nonblocking(true)
            .map_err(|e| Error::Os(io_errno(e)))?;
        let mut dev = Device::Socket(SocketConn {
            stream,
            decoder: wire::Decoder::new(),
            stash: VecDeque::new(),
            shared: false,
        });
        let mut body = vec![role, flags];
        body.extend_from_slice(name);
        let v = match dev.call(Kind::Hello, &body) {
            Ok(v) => v,
            // A daemon at its connection cap answers before it closes,
            // and the answer may still be read after the close.
            Err(e) if e == Errno::EPIPE || e == Errno::from_raw(libc::ECONNRESET) => {
                dev.refusal().ok_or(Error::Os(e))?
            }
            Err(e) => return Err(Error::Os(e)),
        };
        if v < 0 {
            let e = Errno::from_raw((-v).min(i64::from(i32::MAX)) as i32);
            // A Hello is never answered EMFILE or EUSERS but by a refusal.
            let uid = rustix::process::geteuid().as_raw();
            return Err(match Refusal::from_errno(e, uid) {
                Some(reason) => Error::DaemonRefused {
                    path: path.to_path_buf(),
                    reason,
                },
                None => Error::Os(e),
            });
        }
        Ok((dev, v))
    }

    /// The `Result` a daemon sent before it closed the connection, if any.
    fn refusal(&mut self) -> Option<i64> {
        match self {
            Device::Kernel(_) => None,
            Device::Socket(s) => {
                // Whatever the read says, only a complete frame counts.
                let _ = s.fill(false);
                let body = s.take_frames(Some(Kind::Result)).ok()??;
                wire::result_value(&body).ok()
            }
        }
    }

    /// Copies of the fd are handed to child processes: from now on a close
    /// only closes (a daemon connection says no `Bye`), so the locks stay
    /// while a copy is open, as the kernel keeps them while its open file
    /// has a descriptor.
    pub(crate) fn share_with_children(&mut self) {
        if let Device::Socket(s) = self {
            s.shared = true;
        }
    }

    /// A duplicate of the fd (for polling without the device's lock).
    pub(crate) fn dup_fd(&self) -> Result<std::os::fd::OwnedFd, Errno> {
        self.fd().try_clone_to_owned().map_err(io_errno)
    }

    /// The fd to poll for callbacks.
    pub(crate) fn raw_fd(&self) -> RawFd {
        match self {
            Device::Kernel(f) => f.as_raw_fd(),
            Device::Socket(s) => s.stream.as_raw_fd(),
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Device::Kernel(f) => f.as_fd(),
            Device::Socket(s) => s.stream.as_fd(),
        }
    }

    /// Whether records are already waiting in user space (so polling the
    /// fd would not see them).
    pub(crate) fn has_stashed(&self) -> bool {
        match self {
            Device::Kernel(_) => false,
            Device::Socket(s) => !s.stash.is_empty(),
        }
    }

    /// `write()` a request; returns what the kernel's `write()` returns.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<i64, Errno> {
        match self {
            Device::Kernel(f) => kernel_write(f.as_fd(), bytes),
            Device::Socket(_) => {
                let v = self.call(Kind::Write, bytes)?;
                if v < 0 {
                    Err(Errno::from_raw((-v).min(i64::from(i32::MAX)) as i32))
                } else {
                    Ok(v)
                }
            }
        }
    }

    /// The device version (a 12-byte read).
    pub(crate) fn version(&mut self) -> Result<[u32; 3], Errno> {
        match self {
            Device::Kernel(f) => {
                let mut b = [0u8; records::VERSION_SIZE];
                let n = f.read(&mut b).map_err(io_errno)?;
                records::decode_version(&b[..n])
            }
            Device::Socket(s) => {
                s.send(Kind::Version, &[])?;
                let body = s.wait_reply(Kind::Version)?;
                records::decode_version(&body)
            }
        }
    }

    /// Send a `Query`/`Chmod`-style frame and return the raw reply body.
    /// A long query answer arrives as `QueryPart` frames before the
    /// `QueryReply`; they are joined here. A `Result` instead of the
    /// expected reply carries an error.
    pub(crate) fn socket_request(
        &mut self,
        kind: Kind,
        body: &[u8],
        reply: Kind,
    ) -> Result<Vec<u8>, Errno> {
        match self {
            Device::Kernel(_) => Err(Errno::ENOSYS),
            Device::Socket(s) => {
                s.send(kind, body)?;
                let mut whole = Vec::new();
                loop {
                    let (k, part) = s.wait_any(&[reply, Kind::QueryPart, Kind::Result])?;
                    if k == Kind::Result && reply != Kind::Result {
                        let v = wire::result_value(&part)?;
                        return Err(Errno::from_raw((-v).clamp(1, i64::from(i32::MAX)) as i32));
                    }
                    whole.extend_from_slice(&part);
                    if k != Kind::QueryPart {
                        return Ok(whole);
                    }
                }
            }
        }
    }

    fn call(&mut self, kind: Kind, body: &[u8]) -> Result<i64, Errno> {
        match self {
            Device::Kernel(_) => Err(Errno::ENOSYS),
            Device::Socket(s) => {
                s.send(kind, body)?;
                let body = s.wait_reply(Kind::Result)?;
                wire::result_value(&body)
            }
        }
    }

    /// One `read()` in pull mode: ask the daemon for one record (kernel
    /// devices: just read one). `None` is `EAGAIN`.
    pub(crate) fn read_one(&mut self) -> Result<Option<LockResult>, Errno> {
        match self {
            Device::Kernel(_) => self.read_next(),
            Device::Socket(s) => {
                if let Some(r) = s.stash.pop_front() {
                    return Ok(Some(r));
                }
                s.send(Kind::Read, &(RESULT_WITH_LVB_SIZE as u32).to_le_bytes())?;
                loop {
                    if let Some(r) = s.stash.pop_front() {
                        return Ok(Some(r));
                    }
                    if let Some(body) = s.take_frames(Some(Kind::Result))? {
                        return match wire::result_value(&body)? {
                            v if v == -i64::from(libc::EAGAIN) => Ok(None),
                            v if v < 0 => {
                                Err(Errno::from_raw((-v).min(i64::from(i32::MAX)) as i32))
                            }
                            _ => Err(Errno::EPROTO),
                        };
                    }
                    if !s.stash.is_empty() {
                        continue;
                    }
                    s.fill(true)?;
                }
            }
        }
    }

    /// The next record that can be read without blocking, if any.
    pub(crate) fn read_next(&mut self) -> Result<Option<LockResult>, Errno> {
        match self {
            Device::Kernel(f) => kernel_read_next(f.as_fd()),
            Device::Socket(s) => {
                if s.stash.is_empty() {
                    s.fill(false)?;
                    s.take_frames(None)?;
                }
                Ok(s.stash.pop_front())
            }
        }
    }

    /// Move every record that can be read without blocking into `out`.
    /// End of file (the daemon went away) is `EPIPE`.
    pub(crate) fn read_available(&mut self, out: &mut VecDeque<LockResult>) -> Result<(), Errno> {
        match self {
            Device::Kernel(_) => {
                while let Some(r) = self.read_next()? {
                    out.push_back(r);
                }
                Ok(())
            }
            Device::Socket(s) => {
                // Records already stashed are handed out first, without a
                // read; whatever is left in the socket keeps its fd
                // readable for the next round.
                if s.stash.is_empty() {
                    s.fill(false)?;
                    s.take_frames(None)?;
                }
                out.extend(s.stash.drain(..));
                Ok(())
            }
        }
    }

    /// The peer's pid (daemon connections).
    pub(crate) fn peer_pid(&self) -> Option<i32> {
        match self {
            Device::Kernel(_) => None,
            Device::Socket(s) => rustix::net::sockopt::socket_peercred(&s.stream)
                .ok()
                .map(|c| c.pid.as_raw_nonzero().get()),
        }
    }

    /// The device's minor number (kernel backend).
    pub(crate) fn minor(&self) -> Option<u32> {
        match self {
            Device::Kernel(f) => {
                use std::os::unix::fs::MetadataExt;
                let rdev = f.metadata().ok()?.rdev();
                Some(rustix::fs::minor(rdev))
            }
            Device::Socket(_) => None,
        }
    }

    /// `fchmod` the device node (kernel backend): libdlm's lockspace mode.
    pub(crate) fn fchmod(&self, mode: u32) -> Result<(), Errno> {
        match self {
            Device::Kernel(f) => rustix::fs::fchmod(f, rustix::fs::Mode::from_raw_mode(mode))
                .map_err(|e| Errno::from_raw(e.raw_os_error())),
            Device::Socket(_) => Err(Errno::ENOSYS),
        }
    }
}

impl Drop for SocketConn {
    /// Close as the kernel device does: synchronously. Tell the daemon
    /// and wait (briefly) for its answer, so this connection's locks are
    /// released before the drop returns and other processes see them
    /// free at once.
    fn drop(&mut self) {
        if self.shared {
            // Another process's copy may still hold the locks.
            return;
        }
        // One attempt, never a wait: a drop must not hang on a daemon
        // that stopped reading.
        let mut frame = Vec::with_capacity(5);
        if wire::put_frame(&mut frame, Kind::Bye, &[]).is_err()
            || !matches!(
                rustix::net::send(&self.stream, &frame, rustix::net::SendFlags::NOSIGNAL),
                Ok(n) if n == frame.len()
            )
        {
            return;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            match self.take_any(&[Kind::Result]) {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => {}
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero()
                || !matches!(wait_fd(self.stream.as_fd(), false, Some(left)), Ok(true))
            {
                return;
            }
            if self.fill(false).is_err() {
                return;
            }
        }
    }
}

impl SocketConn {
    fn send(&mut self, kind: Kind, body: &[u8]) -> Result<(), Errno> {
        let mut frame = Vec::with_capacity(body.len() + 5);
        wire::put_frame(&mut frame, kind, body)?;
        let mut off = 0;
        while off < frame.len() {
            // MSG_NOSIGNAL: a daemon that went away is EPIPE, never a
            // SIGPIPE that kills the calling program.
            match rustix::net::send(
                &self.stream,
                &frame[off..],
                rustix::net::SendFlags::NOSIGNAL,
            ) {
                Ok(0) => return Err(Errno::EPIPE),
                Ok(n) => off += n,
                Err(rustix::io::Errno::AGAIN) => {
                    wait_fd(self.stream.as_fd(), true, None)?;
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(Errno::from_raw(e.raw_os_error())),
            }
        }
        Ok(())
    }

    /// Read what is there (and, if `block`, wait for at least something).
    fn fill(&mut self, block: bool) -> Result<(), Errno> {
        let mut buf = [0u8; 8192];
        let mut got = false;
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(Errno::EPIPE),
                Ok(n) => {
                    self.decoder.feed(&buf[..n]);
                    got = true;
                    if n < buf.len() {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if got || !block {
                        return Ok(());
                    }
                    wait_fd(self.stream.as_fd(), false, None)?;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(io_errno(e)),
            }
        }
    }

    /// Decode buffered frames: callback records go to the stash; the
    /// first frame of kind `want` is returned.
    fn take_frames(&mut self, want: Option<Kind>) -> Result<Option<Vec<u8>>, Errno> {
        let wants: &[Kind] = match &want {
            Some(k) => core::slice::from_ref(k),
            None => &[],
        };
        Ok(self.take_any(wants)?.map(|(_, body)| body))
    }

    /// Like `take_frames`, for any of several kinds.
    fn take_any(&mut self, wants: &[Kind]) -> Result<Option<(Kind, Vec<u8>)>, Errno> {
        while let Some(frame) = self.decoder.next_frame()? {
            match frame.kind {
                Kind::Ast => {
                    let r = records::decode_result(frame.body)?;
                    self.stash.push_back(r);
                }
                k if wants.contains(&k) => return Ok(Some((k, frame.body.to_vec()))),
                // A reply nobody waits for means the stream is out of step.
                _ => return Err(Errno::EPROTO),
            }
        }
        Ok(None)
    }

    fn wait_any(&mut self, wants: &[Kind]) -> Result<(Kind, Vec<u8>), Errno> {
        loop {
            if let Some(found) = self.take_any(wants)? {
                self.take_frames(None)?;
                return Ok(found);
            }
            self.fill(true)?;
        }
    }

    fn wait_reply(&mut self, want: Kind) -> Result<Vec<u8>, Errno> {
        loop {
            if let Some(body) = self.take_frames(Some(want))? {
                // Callback records that came in the same read move to the
                // stash now, so `has_stashed` sees them.
                self.take_frames(None)?;
                return Ok(body);
            }
            self.fill(true)?;
        }
    }
}
