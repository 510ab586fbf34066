//! `--log-file`: the daemon's log in a file of bounded size.
//!
//! Lines are appended to the file; once it would pass the bound, it is
//! renamed to `PATH.1` (replacing the one before) and a new file begun, so
//! the log never takes more than about twice the bound. If the rename
//! fails, the file is emptied instead. The file is made `0600`, and a
//! symbolic link or anything but a regular file at the path is refused.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A log file that keeps itself under a size. Clones share the file.
#[derive(Clone, Debug)]
pub struct LogFile(Arc<Mutex<State>>);

#[derive(Debug)]
struct State {
    path: PathBuf,
    file: File,
    size: u64,
    max: u64,
}

/// Open `path` to append to it, as the log needs: a regular file, not
/// through a symbolic link, mode 0600 when made.
fn open(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(file)
}

/// `PATH.1`.
fn rotated(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

impl LogFile {
    /// Open (or create) the log at `path`, bounded by `max` bytes.
    pub fn open(path: &Path, max: u64) -> Result<LogFile, String> {
        let file =
            open(path).map_err(|e| format!("cannot open the log file {}: {e}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(LogFile(Arc::new(Mutex::new(State {
            path: path.to_path_buf(),
            file,
            size,
            max,
        }))))
    }
}

impl State {
    /// Begin a new file: the current one becomes `PATH.1`.
    fn rotate(&mut self) {
        let renamed = std::fs::rename(&self.path, rotated(&self.path));
        match renamed.and_then(|()| open(&self.path)) {
            Ok(f) => self.file = f,
            // Keep the bound all the same: start the file we have over.
            Err(_) => {
                let _ = self.file.set_len(0);
            }
        }
        self.size = 0;
    }
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut st = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if st.size > 0 && st.size.saturating_add(buf.len() as u64) > st.max {
            st.rotate();
        }
        st.file.write_all(buf)?;
        st.size = st.size.saturating_add(buf.len() as u64);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut st = self.0.lock().unwrap_or_else(|p| p.into_inner());
        st.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_stays_under_twice_its_bound() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("dlmd.log");
        let mut log = LogFile::open(&path, 4096).expect("open");
        let line = [b'x'; 99];
        for _ in 0..1000 {
            log.write_all(&line).expect("write");
            log.write_all(b"\n").expect("write");
        }
        let now = std::fs::metadata(&path).expect("log").len();
        let old = std::fs::metadata(rotated(&path)).expect("log.1").len();
        assert!(now <= 4096 && old <= 4096, "{now} {old}");
        assert!(old > 3000, "the rotated file holds a full log: {old}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("log").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_symbolic_link_is_not_followed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = dir.path().join("target");
        std::fs::write(&target, b"keep").expect("target");
        let link = dir.path().join("dlmd.log");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert!(LogFile::open(&link, 4096).is_err());
        assert_eq!(std::fs::read(&target).expect("target"), b"keep");
    }
}
