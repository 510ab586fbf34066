//! The file operations the controller performs on configfs, sysfs, `/dev`
//! and `/proc`, behind a trait: [`RealFs`] does them, [`MemFs`] records
//! them in memory so the controller's exact sequence of operations can be
//! tested on any host.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The operations the controller needs.
pub trait Fs {
    /// `mkdir(path)`; in configfs this creates an object.
    fn mkdir(&mut self, path: &Path) -> io::Result<()>;
    /// `rmdir(path)`; in configfs this removes an object.
    fn rmdir(&mut self, path: &Path) -> io::Result<()>;
    /// Open an existing attribute and `write()` `data` in **one** call; a
    /// short write is an error. sysfs and configfs attributes take each
    /// write as a whole value.
    fn write(&mut self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Read a whole file.
    fn read(&mut self, path: &Path) -> io::Result<Vec<u8>>;
    /// The names of the subdirectories of `path`.
    fn subdirs(&mut self, path: &Path) -> io::Result<Vec<OsString>>;
    /// Whether anything (even a dangling symlink) is at `path`.
    fn exists(&mut self, path: &Path) -> bool;
    /// `symlink(target, link)`.
    fn symlink(&mut self, target: &Path, link: &Path) -> io::Result<()>;
    /// `readlink(path)`; `EINVAL` if it is not a symlink.
    fn read_link(&mut self, path: &Path) -> io::Result<PathBuf>;
    /// `unlink(path)`.
    fn unlink(&mut self, path: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

impl Fs for RealFs {
    fn mkdir(&mut self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn rmdir(&mut self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn write(&mut self, path: &Path, data: &[u8]) -> io::Result<()> {
        // No O_CREAT or O_TRUNC: attributes exist or the write is wrong.
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        let n = f.write(data)?;
        if n != data.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {n} of {} bytes", data.len()),
            ));
        }
        Ok(())
    }

    fn read(&mut self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn subdirs(&mut self, path: &Path) -> io::Result<Vec<OsString>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(path)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                out.push(e.file_name());
            }
        }
        out.sort();
        Ok(out)
    }

    fn exists(&mut self, path: &Path) -> bool {
        std::fs::symlink_metadata(path).is_ok()
    }

    fn symlink(&mut self, target: &Path, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }

    fn read_link(&mut self, path: &Path) -> io::Result<PathBuf> {
        std::fs::read_link(path)
    }

    fn unlink(&mut self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
}

/// One operation that changed something, as [`MemFs`] records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `mkdir`.
    Mkdir(PathBuf),
    /// `rmdir`.
    Rmdir(PathBuf),
    /// `write` of these bytes.
    Write(PathBuf, Vec<u8>),
    /// `symlink(target, link)`.
    Symlink(PathBuf, PathBuf),
    /// `unlink`.
    Unlink(PathBuf),
}

/// An in-memory tree that records every change, for tests.
///
/// Directories, files and symlinks live in maps. `write` needs the parent
/// directory and creates or replaces the file (attributes need not be
/// declared); `rmdir` removes a directory's files with it (as configfs
/// does with attributes) but fails with `ENOTEMPTY` while subdirectories or
/// links remain. [`fail_on`](MemFs::fail_on) makes one path fail.
///
/// [`MemFs::dlm_configfs`] adds configfs's *default groups* as the DLM
/// declares them: `mkdir cluster` brings `comms/` and `spaces/`, and
/// `mkdir spaces/<ls>` brings `nodes/`; they go away with their parent
/// and cannot be removed on their own.
#[derive(Debug, Default, Clone)]
pub struct MemFs {
    dirs: BTreeSet<PathBuf>,
    files: BTreeMap<PathBuf, Vec<u8>>,
    links: BTreeMap<PathBuf, PathBuf>,
    fail: BTreeMap<PathBuf, i32>,
    defaults: BTreeSet<PathBuf>,
    default_groups: Option<fn(&Path) -> &'static [&'static str]>,
    /// Every change, in order.
    pub ops: Vec<Op>,
}

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

const ENOENT: i32 = 2;
const EEXIST: i32 = 17;
const ENOTDIR: i32 = 20;
const EINVAL: i32 = 22;
const ENOTEMPTY: i32 = 39;

impl MemFs {
    /// An empty tree (with `/`).
    pub fn new() -> MemFs {
        let mut fs = MemFs::default();
        fs.dirs.insert(PathBuf::from("/"));
        fs
    }

    /// An empty tree that creates the DLM's configfs default groups.
    pub fn dlm_configfs() -> MemFs {
        fn groups(p: &Path) -> &'static [&'static str] {
            if p.ends_with("dlm/cluster") {
                &["comms", "spaces"]
            } else if p
                .parent()
                .is_some_and(|q| q.ends_with("dlm/cluster/spaces"))
            {
                &["nodes"]
            } else {
                &[]
            }
        }
        let mut fs = MemFs::new();
        fs.default_groups = Some(groups);
        fs
    }

    /// Create `path` and its parents without recording it (set-up).
    pub fn add_dir(&mut self, path: impl AsRef<Path>) {
        for a in path.as_ref().ancestors() {
            self.dirs.insert(a.to_path_buf());
        }
    }

    /// Create a file (and its directory) without recording it (set-up).
    pub fn add_file(&mut self, path: impl AsRef<Path>, data: impl AsRef<[u8]>) {
        let path = path.as_ref();
        if let Some(p) = path.parent() {
            self.add_dir(p);
        }
        self.files
            .insert(path.to_path_buf(), data.as_ref().to_vec());
    }

    /// Make every operation on `path` fail with `errno`.
    pub fn fail_on(&mut self, path: impl AsRef<Path>, errno: i32) {
        self.fail.insert(path.as_ref().to_path_buf(), errno);
    }

    /// A file's contents.
    pub fn file(&self, path: impl AsRef<Path>) -> Option<&[u8]> {
        self.files.get(path.as_ref()).map(Vec::as_slice)
    }

    /// Whether `path` is a directory.
    pub fn is_dir(&self, path: impl AsRef<Path>) -> bool {
        self.dirs.contains(path.as_ref())
    }

    /// Where the symlink at `path` points.
    pub fn link(&self, path: impl AsRef<Path>) -> Option<&Path> {
        self.links.get(path.as_ref()).map(PathBuf::as_path)
    }

    fn check(&self, path: &Path) -> io::Result<()> {
        match self.fail.get(path) {
            Some(&e) => Err(errno(e)),
            None => Ok(()),
        }
    }

    fn taken(&self, path: &Path) -> bool {
        self.dirs.contains(path) || self.files.contains_key(path) || self.links.contains_key(path)
    }

    fn parent_ok(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(p) if self.dirs.contains(p) => Ok(()),
            Some(p) if self.taken(p) => Err(errno(ENOTDIR)),
            _ => Err(errno(ENOENT)),
        }
    }
}

impl Fs for MemFs {
    fn mkdir(&mut self, path: &Path) -> io::Result<()> {
        self.check(path)?;
        self.parent_ok(path)?;
        if self.taken(path) {
            return Err(errno(EEXIST));
        }
        self.dirs.insert(path.to_path_buf());
        self.ops.push(Op::Mkdir(path.to_path_buf()));
        if let Some(groups) = self.default_groups {
            for g in groups(path) {
                self.dirs.insert(path.join(g));
                self.defaults.insert(path.join(g));
            }
        }
        Ok(())
    }

    fn rmdir(&mut self, path: &Path) -> io::Result<()> {
        self.check(path)?;
        if !self.dirs.contains(path) {
            return Err(errno(if self.taken(path) { ENOTDIR } else { ENOENT }));
        }
        if self.defaults.contains(path) {
            return Err(errno(1)); // EPERM: configfs default groups stay
        }
        // Default groups go with their parent; anything else under it
        // makes it non-empty.
        let under = |p: &Path| p != path && p.starts_with(path);
        if self
            .dirs
            .iter()
            .any(|d| under(d) && !self.defaults.contains(d))
            || self.links.keys().any(|l| under(l))
        {
            return Err(errno(ENOTEMPTY));
        }
        self.files.retain(|p, _| !p.starts_with(path));
        self.dirs.retain(|d| !d.starts_with(path));
        self.defaults.retain(|d| !d.starts_with(path));
        self.ops.push(Op::Rmdir(path.to_path_buf()));
        Ok(())
    }

    fn write(&mut self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.check(path)?;
        self.parent_ok(path)?;
        if self.dirs.contains(path) {
            return Err(errno(21)); // EISDIR
        }
        self.files.insert(path.to_path_buf(), data.to_vec());
        self.ops.push(Op::Write(path.to_path_buf(), data.to_vec()));
        Ok(())
    }

    fn read(&mut self, path: &Path) -> io::Result<Vec<u8>> {
        self.check(path)?;
        self.files.get(path).cloned().ok_or_else(|| errno(ENOENT))
    }

    fn subdirs(&mut self, path: &Path) -> io::Result<Vec<OsString>> {
        self.check(path)?;
        if !self.dirs.contains(path) {
            return Err(errno(ENOENT));
        }
        Ok(self
            .dirs
            .iter()
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name().map(|n| n.to_os_string()))
            .collect())
    }

    fn exists(&mut self, path: &Path) -> bool {
        self.taken(path)
    }

    fn symlink(&mut self, target: &Path, link: &Path) -> io::Result<()> {
        self.check(link)?;
        self.parent_ok(link)?;
        if self.taken(link) {
            return Err(errno(EEXIST));
        }
        self.links.insert(link.to_path_buf(), target.to_path_buf());
        self.ops
            .push(Op::Symlink(target.to_path_buf(), link.to_path_buf()));
        Ok(())
    }

    fn read_link(&mut self, path: &Path) -> io::Result<PathBuf> {
        self.check(path)?;
        match self.links.get(path) {
            Some(t) => Ok(t.clone()),
            None if self.taken(path) => Err(errno(EINVAL)),
            None => Err(errno(ENOENT)),
        }
    }

    fn unlink(&mut self, path: &Path) -> io::Result<()> {
        self.check(path)?;
        if self.links.remove(path).is_none() && self.files.remove(path).is_none() {
            return Err(errno(ENOENT));
        }
        self.ops.push(Op::Unlink(path.to_path_buf()));
        Ok(())
    }
}
