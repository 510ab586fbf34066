//! What the controller does to the kernel: the start-up configuration, the
//! lockspace join and leave steps, the `/dev/misc` links and the final
//! teardown. Everything goes through an [`Fs`], so the exact sequence of
//! operations is tested in memory (see the tests below) and the same code
//! drives the real kernel in `main.rs`.
//!
//! The steps are dlm_controld's, reduced to one node (no corosync, no
//! fencing, no quorum), in the order that was verified on Linux 6.1:
//!
//! At start:
//! 1. clear a stale `cluster` left by a controller that died;
//! 2. `mkdir .../dlm/cluster`, write `cluster_name`;
//! 3. `mkdir cluster/comms/<nodeid>`, write `nodeid`, `local` = 1, then
//!    `addr`: a 128-byte `struct sockaddr_storage` in one write; read
//!    `addr_list` back to check it.
//!
//! On `online` (join):
//! 1. write the global id to `/sys/kernel/dlm/<ls>/id`;
//! 2. `mkdir cluster/spaces/<ls>` and `.../nodes/<nodeid>`, write the node's
//!    `nodeid` and `weight` = 1;
//! 3. write `control` = 1 (the kernel starts recovery);
//! 4. link `/dev/misc/dlm_<ls>` -> `../dlm_<ls>` (dangling until the
//!    kernel registers the device, right after the join);
//! 5. write `event_done` = 0: the creating process wakes up.
//!
//! Any failure undoes 2 and writes `-errno` to `event_done` instead: the
//! creator gets the error rather than hanging in D state.
//!
//! On `offline` (leave): `control` = 0, `rmdir` the node and the space,
//! remove the link, `event_done` = 0.
//!
//! Misc device `add`/`remove` uevents keep the `/dev/misc` links in step
//! with the devices; existing entries that are not our links (udev's) are
//! never touched.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::addr::{addr_list_contains, sockaddr_storage};
use crate::crc::lockspace_global_id;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::sys::Fs;
use crate::uevent::{is_dlm_device, valid_lockspace_name, DlmEvent, LockspaceRef};

/// The misc devices dlm.ko registers when it loads.
pub const STATIC_DEVICES: [&str; 3] = ["dlm-control", "dlm-monitor", "dlm_plock"];

/// Process names of DLM controllers (`/proc/<pid>/comm`).
pub const CONTROLLER_NAMES: [&str; 2] = ["dlm_controld", "dlm-controld"];

/// The controller's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// configfs `cluster_name`.
    pub cluster_name: String,
    /// This node's id (`comms/<nodeid>`, `nodes/<nodeid>`).
    pub nodeid: u32,
    /// The address the kernel's lowcomms binds (port `tcp_port`, 21064).
    pub addr: IpAddr,
    /// Create `/dev/misc/<dev>` -> `../<dev>` links for libdlm (the udev
    /// rule's job, for systems without udev).
    pub dev_links: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cluster_name: "local".into(),
            nodeid: 1,
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            dev_links: true,
        }
    }
}

/// The first running DLM controller found in `/proc`, other than the
/// processes in `ignore` (ourselves, our parent): `(pid, comm)`.
pub fn find_other_controller<F: Fs>(
    fs: &mut F,
    layout: &Layout,
    ignore: &[u32],
) -> Option<(u32, String)> {
    let pids = fs.subdirs(&layout.proc).ok()?;
    pids.iter().find_map(|name| {
        let pid: u32 = name.to_str()?.parse().ok()?;
        if ignore.contains(&pid) {
            return None;
        }
        let comm = fs.read(&layout.proc.join(name).join("comm")).ok()?;
        let comm = String::from_utf8_lossy(&comm).trim_end().to_string();
        CONTROLLER_NAMES
            .contains(&comm.as_str())
            .then_some((pid, comm))
    })
}

fn ignore_enoent(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

fn ignore_eexist(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        r => r,
    }
}

/// Bytes for the log: text as a quoted string, anything else (the
/// `sockaddr_storage`) as hex up to its last non-zero byte.
struct Shown<'a>(&'a [u8]);

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match std::str::from_utf8(self.0) {
            Ok(s) if !s.contains(|c: char| c.is_control()) => write!(f, "{s:?}"),
            _ => {
                let end = self.0.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
                write!(f, "{} bytes:", self.0.len())?;
                for b in &self.0[..end] {
                    write!(f, " {b:02x}")?;
                }
                if end < self.0.len() {
                    write!(f, " (then zeros)")?;
                }
                Ok(())
            }
        }
    }
}

/// The single-node controller.
#[derive(Debug)]
pub struct Controller<F: Fs> {
    fs: F,
    layout: Layout,
    cfg: Config,
    /// Each joined lockspace's generation: 1 at join, one more for each
    /// restart ([`start`](Self::start)).
    joined: BTreeMap<OsString, u32>,
}

impl<F: Fs> Controller<F> {
    /// A controller that has not configured anything yet.
    pub fn new(fs: F, layout: Layout, cfg: Config) -> Self {
        Controller {
            fs,
            layout,
            cfg,
            joined: BTreeMap::new(),
        }
    }

    /// The file operations (tests inspect a [`MemFs`](crate::sys::MemFs)'s record).
    pub fn fs(&self) -> &F {
        &self.fs
    }

    /// The file operations, mutably.
    pub fn fs_mut(&mut self) -> &mut F {
        &mut self.fs
    }

    /// The paths in use.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The lockspaces this controller has joined and not yet left.
    pub fn joined(&self) -> impl Iterator<Item = &OsStr> {
        self.joined.keys().map(OsString::as_os_str)
    }

    /// The generation of joined lockspace `name`: 1 at join, one more for
    /// each restart. `None` if this controller has not joined it.
    pub fn generation(&self, name: &OsStr) -> Option<u32> {
        self.joined.get(name).copied()
    }

    /// The members of every lockspace this controller joins, with their
    /// slots: this node alone, in slot 1.
    pub fn members(&self) -> Vec<(u32, u32)> {
        vec![(self.cfg.nodeid, 1)]
    }

    /// This node's slot in every lockspace: 1.
    pub fn our_slot(&self) -> u32 {
        1
    }

    fn mkdir(&mut self, path: &Path) -> Result<()> {
        log::debug!("mkdir {}", path.display());
        self.fs.mkdir(path).map_err(|e| Error::io("mkdir", path, e))
    }

    fn rmdir(&mut self, path: &Path) -> Result<()> {
        log::debug!("rmdir {}", path.display());
        self.fs.rmdir(path).map_err(|e| Error::io("rmdir", path, e))
    }

    fn write(&mut self, path: &Path, data: &[u8]) -> Result<()> {
        log::debug!("write {} <- {}", path.display(), Shown(data));
        self.fs
            .write(path, data)
            .map_err(|e| Error::io("write", path, e))
    }

    /// The lockspaces the kernel has (`/sys/kernel/dlm/*`); none if the
    /// directory is missing.
    pub fn lockspaces(&mut self) -> Result<Vec<OsString>> {
        let dir = self.layout.sysfs_dlm.clone();
        match self.fs.subdirs(&dir) {
            Ok(v) => Ok(v),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::io("read directory", dir, e)),
        }
    }

    /// Lockspaces that exist but were not joined by this controller.
    pub fn foreign_lockspaces(&mut self) -> Result<Vec<OsString>> {
        let all = self.lockspaces()?;
        // Joined lockspaces are tracked by name; the kobject differs only
        // for names with a '/', which are never joined.
        Ok(all
            .into_iter()
            .filter(|k| !self.joined.contains_key(k))
            .collect())
    }

    /// The start-up configuration (steps 1-3 in the module docs), then the
    /// `/dev/misc` links of the static devices. Refuses if any lockspace
    /// exists: a controller must not adopt lockspaces it never joined.
    pub fn configure(&mut self) -> Result<()> {
        let foreign = self.foreign_lockspaces()?;
        if !foreign.is_empty() {
            return Err(Error::Lockspaces(foreign));
        }
        if !self.fs.exists(&self.layout.dlm_config()) {
            return Err(Error::NoDlm(format!(
                "{} does not exist (is dlm.ko loaded and configfs mounted?)",
                self.layout.dlm_config().display()
            )));
        }
        if self.fs.exists(&self.layout.cluster()) {
            log::warn!(
                "clearing a stale configuration in {}",
                self.layout.cluster().display()
            );
            self.clear_configfs()?;
        }
        let l = self.layout.clone();
        self.mkdir(&l.cluster())?;
        let name = self.cfg.cluster_name.clone();
        self.write(&l.cluster_attr("cluster_name"), name.as_bytes())?;

        let nodeid = self.cfg.nodeid;
        let comm = l.comm(nodeid);
        self.mkdir(&comm)?;
        self.write(&comm.join("nodeid"), nodeid.to_string().as_bytes())?;
        self.write(&comm.join("local"), b"1")?;
        self.write(&comm.join("addr"), &sockaddr_storage(self.cfg.addr))?;
        match self.fs.read(&comm.join("addr_list")) {
            Ok(list) => {
                let list = String::from_utf8_lossy(&list);
                if !addr_list_contains(&list, self.cfg.addr) {
                    return Err(Error::Config(format!(
                        "{} is {list:?} after writing {}",
                        comm.join("addr_list").display(),
                        self.cfg.addr
                    )));
                }
            }
            Err(e) => log::warn!("cannot check {}: {e}", comm.join("addr_list").display()),
        }
        log::info!(
            "configured cluster {:?}: node {nodeid} at {} (local)",
            self.cfg.cluster_name,
            self.cfg.addr
        );
        for dev in STATIC_DEVICES {
            self.link_device(OsStr::new(dev));
        }
        Ok(())
    }

    /// Remove everything under `.../dlm/cluster`, and `cluster` itself.
    pub fn clear_configfs(&mut self) -> Result<()> {
        let l = self.layout.clone();
        if !self.fs.exists(&l.cluster()) {
            return Ok(());
        }
        for ls in self.fs.subdirs(&l.spaces()).unwrap_or_default() {
            let nodes = l.space(&ls).join("nodes");
            for n in self.fs.subdirs(&nodes).unwrap_or_default() {
                self.rmdir(&nodes.join(n))?;
            }
            self.rmdir(&l.space(&ls))?;
        }
        for c in self.fs.subdirs(&l.comms()).unwrap_or_default() {
            self.rmdir(&l.comms().join(c))?;
        }
        self.rmdir(&l.cluster())
    }

    /// Join lockspace `ls` (an `online` uevent): the steps in the module
    /// docs, ending with `event_done` = 0; on failure, `event_done` =
    /// `-errno` and the error is returned.
    pub fn join(&mut self, ls: &LockspaceRef) -> Result<()> {
        if self.joined.contains_key(&ls.name) {
            log::warn!(
                "online event for {:?}, which is already joined: ignored",
                ls.name
            );
            return Ok(());
        }
        let steps = if valid_lockspace_name(&ls.name) {
            self.join_steps(ls)
        } else {
            Err(Error::InvalidName(ls.name.clone()))
        };
        let event_done = self.layout.ls_attr(&ls.kobj, "event_done");
        match steps {
            Ok(id) => {
                self.write(&event_done, b"0")?;
                self.joined.insert(ls.name.clone(), 1);
                log::info!("joined lockspace {:?} (global id {id:#010x})", ls.name);
                Ok(())
            }
            Err(e) => {
                if valid_lockspace_name(&ls.name) {
                    self.undo_members(&ls.name);
                }
                let code = -e.errno();
                log::error!(
                    "joining lockspace {:?} failed: {e}; event_done = {code}",
                    ls.name
                );
                if let Err(e2) = self.write(&event_done, code.to_string().as_bytes()) {
                    log::error!("cannot fail the join: {e2}; the creating process may hang");
                }
                Err(e)
            }
        }
    }

    fn join_steps(&mut self, ls: &LockspaceRef) -> Result<u32> {
        let l = self.layout.clone();
        let id = lockspace_global_id(ls.name.as_bytes());
        self.write(&l.ls_attr(&ls.kobj, "id"), id.to_string().as_bytes())?;
        let space = l.space(&ls.name);
        log::debug!("mkdir {}", space.display());
        ignore_eexist(self.fs.mkdir(&space)).map_err(|e| Error::io("mkdir", &space, e))?;
        let nodeid = self.cfg.nodeid;
        let node = l.space_node(&ls.name, nodeid);
        log::debug!("mkdir {}", node.display());
        ignore_eexist(self.fs.mkdir(&node)).map_err(|e| Error::io("mkdir", &node, e))?;
        self.write(&node.join("nodeid"), nodeid.to_string().as_bytes())?;
        self.write(&node.join("weight"), b"1")?;
        self.write(&l.ls_attr(&ls.kobj, "control"), b"1")?;
        // libdlm opens /dev/misc/dlm_<ls> as soon as the create returns,
        // and the device is registered only after this join: link it now
        // (dangling for a moment) so the link is there in time.
        let mut dev = OsString::from("dlm_");
        dev.push(&ls.name);
        self.link_device(&dev);
        Ok(id)
    }

    /// Best-effort removal of a lockspace's configfs members.
    fn undo_members(&mut self, name: &OsStr) {
        let l = self.layout.clone();
        for dir in [l.space_node(name, self.cfg.nodeid), l.space(name)] {
            if let Err(e) = ignore_enoent(self.fs.rmdir(&dir)) {
                log::warn!("rmdir {}: {e}", dir.display());
            }
        }
    }

    /// Leave lockspace `ls` (an `offline` uevent): `control` = 0, remove
    /// the members, `event_done` = 0. The kernel frees the lockspace
    /// whatever we answer, so the steps before `event_done` are best
    /// effort (logged) and the answer is always 0.
    pub fn leave(&mut self, ls: &LockspaceRef) -> Result<()> {
        let control = self.layout.ls_attr(&ls.kobj, "control");
        if let Err(e) = self.write(&control, b"0") {
            log::warn!("{e}");
        }
        if valid_lockspace_name(&ls.name) {
            self.undo_members(&ls.name);
            let mut dev = OsString::from("dlm_");
            dev.push(&ls.name);
            self.unlink_device(&dev);
        }
        self.joined.remove(&ls.name);
        self.write(&self.layout.ls_attr(&ls.kobj, "event_done"), b"0")?;
        log::info!("left lockspace {:?}", ls.name);
        Ok(())
    }

    /// Stop joined lockspace `name` for a restart: `control` = 0 (the
    /// kernel's `dlm_ls_stop`, where it calls `recover_prep` for its own
    /// users). Returns the generation that ends. [`Error::NotJoined`] if
    /// this controller did not join it.
    pub fn stop(&mut self, name: &OsStr) -> Result<u32> {
        let generation = self
            .generation(name)
            .ok_or_else(|| Error::NotJoined(name.to_os_string()))?;
        self.write(&self.layout.ls_attr(name, "control"), b"0")?;
        log::info!("stopped lockspace {name:?} (generation {generation})");
        Ok(generation)
    }

    /// Start stopped lockspace `name` again: `control` = 1 (the kernel's
    /// `dlm_ls_start`: it reads the members from configfs and runs
    /// recovery), then wait up to `wait` for that recovery to finish
    /// (`recover_status` shows `DLM_RS_DONE_ALL`, 0x80). No `event_done`:
    /// the kernel waits for one only after its own uevents. Returns the
    /// new generation (one more), whether or not the wait saw the end of
    /// recovery (a wait that ran out is logged).
    pub fn start(&mut self, name: &OsStr, wait: Duration) -> Result<u32> {
        let generation = self
            .generation(name)
            .ok_or_else(|| Error::NotJoined(name.to_os_string()))?;
        self.write(&self.layout.ls_attr(name, "control"), b"1")?;
        let generation = generation.wrapping_add(1).max(1);
        self.joined.insert(name.to_os_string(), generation);
        if !self.wait_recovered(name, wait) {
            log::warn!(
                "lockspace {name:?}: recovery not seen done within {} ms of the start",
                wait.as_millis()
            );
        }
        log::info!("started lockspace {name:?} (generation {generation})");
        Ok(generation)
    }

    /// Poll `/sys/kernel/dlm/<ls>/recover_status` until it shows
    /// `DLM_RS_DONE_ALL` (set at the end of the kernel's `ls_recover`,
    /// cleared by the next stop), for at most `wait`.
    fn wait_recovered(&mut self, name: &OsStr, wait: Duration) -> bool {
        const DLM_RS_DONE_ALL: u32 = 0x80;
        let path = self.layout.ls_attr(name, "recover_status");
        let deadline = Instant::now() + wait;
        loop {
            let status = self
                .fs
                .read(&path)
                .ok()
                .and_then(|b| u32::from_str_radix(String::from_utf8_lossy(&b).trim(), 16).ok());
            if status.is_some_and(|s| s & DLM_RS_DONE_ALL != 0) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Answer an `online` event with an error without joining (used while
    /// shutting down): `event_done` = `-errno`.
    pub fn refuse(&mut self, ls: &LockspaceRef, errno: i32) -> Result<()> {
        log::warn!("refusing lockspace {:?}: event_done = {}", ls.name, -errno);
        self.write(
            &self.layout.ls_attr(&ls.kobj, "event_done"),
            (-errno).to_string().as_bytes(),
        )
    }

    /// Create `/dev/misc/<devname>` -> `../<devname>` unless links are off,
    /// something is already there, or `devname` is not a DLM device.
    /// Failures are logged, not returned: the links are a convenience for
    /// libdlm, never a reason to fail a join.
    pub fn link_device(&mut self, devname: &OsStr) {
        if !self.cfg.dev_links || !is_dlm_device(devname) {
            return;
        }
        let misc = self.layout.dev_misc();
        if let Err(e) = ignore_eexist(self.fs.mkdir(&misc)) {
            log::warn!("mkdir {}: {e}", misc.display());
            return;
        }
        let link = self.layout.misc_link(devname);
        if self.fs.exists(&link) {
            return; // udev's, or ours from before
        }
        let target = Layout::misc_link_target(devname);
        match self.fs.symlink(&target, &link) {
            Ok(()) => log::debug!("linked {} -> {}", link.display(), target.display()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => log::warn!("symlink {}: {e}", link.display()),
        }
    }

    /// Remove `/dev/misc/<devname>` if it is our kind of link.
    pub fn unlink_device(&mut self, devname: &OsStr) {
        if !self.cfg.dev_links || !is_dlm_device(devname) {
            return;
        }
        let link = self.layout.misc_link(devname);
        match self.fs.read_link(&link) {
            Ok(t) if t == Layout::misc_link_target(devname) => {
                if let Err(e) = ignore_enoent(self.fs.unlink(&link)) {
                    log::warn!("unlink {}: {e}", link.display());
                }
            }
            _ => {}
        }
    }

    /// Act on one event. Errors are returned after the kernel has been
    /// answered (a failed join has already written `-errno`).
    pub fn handle(&mut self, ev: &DlmEvent) -> Result<()> {
        match ev {
            DlmEvent::Online(ls) => self.join(ls),
            DlmEvent::Offline(ls) => self.leave(ls),
            DlmEvent::DeviceAdded(dev) => {
                self.link_device(dev);
                Ok(())
            }
            DlmEvent::DeviceRemoved(dev) => {
                self.unlink_device(dev);
                Ok(())
            }
        }
    }

    /// The final teardown: refused while any lockspace exists (stopping
    /// the controller then would leave every later join or leave hanging
    /// in the kernel); otherwise the configfs tree is removed.
    pub fn shutdown(&mut self) -> Result<()> {
        let ls = self.lockspaces()?;
        if !ls.is_empty() {
            return Err(Error::Lockspaces(ls));
        }
        self.clear_configfs()?;
        log::info!("configuration removed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{MemFs, Op};
    use std::path::PathBuf;

    const CLUSTER: &str = "/sys/kernel/config/dlm/cluster";

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    fn w(path: &str, data: &[u8]) -> Op {
        Op::Write(p(path), data.to_vec())
    }

    /// A kernel with dlm.ko loaded, configfs mounted, devtmpfs on /dev.
    fn kernel() -> MemFs {
        let mut fs = MemFs::dlm_configfs();
        fs.add_dir("/sys/kernel/config/dlm");
        fs.add_dir("/sys/kernel/dlm");
        fs.add_dir("/dev");
        for d in STATIC_DEVICES {
            fs.add_file(format!("/dev/{d}"), "");
        }
        fs.add_dir("/proc/1");
        fs
    }

    /// The kernel creating lockspace `name` (its sysfs kobject).
    fn create(fs: &mut MemFs, name: &str) {
        for attr in ["id", "control", "event_done"] {
            fs.add_file(format!("/sys/kernel/dlm/{name}/{attr}"), "");
        }
    }

    fn configured() -> Controller<MemFs> {
        let mut c = Controller::new(kernel(), Layout::system(), Config::default());
        c.configure().unwrap();
        c.fs_mut().ops.clear();
        c
    }

    #[test]
    fn startup_writes_the_documented_sequence() {
        let mut c = Controller::new(kernel(), Layout::system(), Config::default());
        c.configure().unwrap();
        let mut addr = vec![0u8; 128];
        addr[..2].copy_from_slice(&2u16.to_ne_bytes());
        addr[4..8].copy_from_slice(&[127, 0, 0, 1]);
        let comm = format!("{CLUSTER}/comms/1");
        assert_eq!(
            c.fs().ops,
            vec![
                Op::Mkdir(p(CLUSTER)),
                w(&format!("{CLUSTER}/cluster_name"), b"local"),
                Op::Mkdir(p(&comm)),
                w(&format!("{comm}/nodeid"), b"1"),
                w(&format!("{comm}/local"), b"1"),
                Op::Write(p(&format!("{comm}/addr")), addr),
                Op::Mkdir(p("/dev/misc")),
                Op::Symlink(p("../dlm-control"), p("/dev/misc/dlm-control")),
                Op::Symlink(p("../dlm-monitor"), p("/dev/misc/dlm-monitor")),
                Op::Symlink(p("../dlm_plock"), p("/dev/misc/dlm_plock")),
            ]
        );
    }

    /// A kernel whose `addr_list` shows a fixed text.
    struct AddrList(MemFs, &'static str);

    impl Fs for AddrList {
        fn mkdir(&mut self, path: &Path) -> io::Result<()> {
            self.0.mkdir(path)
        }
        fn rmdir(&mut self, path: &Path) -> io::Result<()> {
            self.0.rmdir(path)
        }
        fn write(&mut self, path: &Path, data: &[u8]) -> io::Result<()> {
            self.0.write(path, data)
        }
        fn read(&mut self, path: &Path) -> io::Result<Vec<u8>> {
            if path.ends_with("addr_list") {
                return Ok(self.1.as_bytes().to_vec());
            }
            self.0.read(path)
        }
        fn subdirs(&mut self, path: &Path) -> io::Result<Vec<OsString>> {
            self.0.subdirs(path)
        }
        fn exists(&mut self, path: &Path) -> bool {
            self.0.exists(path)
        }
        fn symlink(&mut self, target: &Path, link: &Path) -> io::Result<()> {
            self.0.symlink(target, link)
        }
        fn read_link(&mut self, path: &Path) -> io::Result<PathBuf> {
            self.0.read_link(path)
        }
        fn unlink(&mut self, path: &Path) -> io::Result<()> {
            self.0.unlink(path)
        }
    }

    #[test]
    fn addr_list_is_checked() {
        let ok = AddrList(kernel(), "AF_INET\t127.0.0.1\n");
        Controller::new(ok, Layout::system(), Config::default())
            .configure()
            .unwrap();
        let wrong = AddrList(kernel(), "AF_INET\t10.1.1.1\n");
        let mut c = Controller::new(wrong, Layout::system(), Config::default());
        assert!(matches!(c.configure(), Err(Error::Config(_))));
    }

    #[test]
    fn stale_configuration_is_cleared_first() {
        let mut fs = kernel();
        for d in [
            "",
            "/comms/1",
            "/comms/2",
            "/spaces/old",
            "/spaces/old/nodes/1",
        ] {
            fs.mkdir(&p(&format!("{CLUSTER}{d}"))).unwrap();
        }
        fs.ops.clear();
        let mut c = Controller::new(fs, Layout::system(), Config::default());
        c.configure().unwrap();
        assert_eq!(
            &c.fs().ops[..5],
            &[
                Op::Rmdir(p(&format!("{CLUSTER}/spaces/old/nodes/1"))),
                Op::Rmdir(p(&format!("{CLUSTER}/spaces/old"))),
                Op::Rmdir(p(&format!("{CLUSTER}/comms/1"))),
                Op::Rmdir(p(&format!("{CLUSTER}/comms/2"))),
                Op::Rmdir(p(CLUSTER)),
            ]
        );
        assert!(c.fs().is_dir(format!("{CLUSTER}/comms/1")));
        assert!(!c.fs().is_dir(format!("{CLUSTER}/comms/2")));
    }

    #[test]
    fn existing_lockspaces_are_refused() {
        let mut fs = kernel();
        create(&mut fs, "theirs");
        let mut c = Controller::new(fs, Layout::system(), Config::default());
        match c.configure() {
            Err(Error::Lockspaces(ls)) => assert_eq!(ls, vec![OsString::from("theirs")]),
            other => panic!("{other:?}"),
        }
        assert!(c.fs().ops.is_empty(), "nothing touched");
    }

    #[test]
    fn no_dlm_module() {
        let mut fs = MemFs::dlm_configfs();
        fs.add_dir("/sys/kernel/config");
        let mut c = Controller::new(fs, Layout::system(), Config::default());
        assert!(matches!(c.configure(), Err(Error::NoDlm(_))));
    }

    #[test]
    fn join_writes_the_documented_sequence() {
        let mut c = configured();
        create(c.fs_mut(), "smoke");
        c.handle(&DlmEvent::Online(LockspaceRef::new("smoke")))
            .unwrap();
        let node = format!("{CLUSTER}/spaces/smoke/nodes/1");
        assert_eq!(
            c.fs().ops,
            vec![
                w(
                    "/sys/kernel/dlm/smoke/id",
                    0x4F35_9037u32.to_string().as_bytes()
                ),
                Op::Mkdir(p(&format!("{CLUSTER}/spaces/smoke"))),
                Op::Mkdir(p(&node)),
                w(&format!("{node}/nodeid"), b"1"),
                w(&format!("{node}/weight"), b"1"),
                w("/sys/kernel/dlm/smoke/control", b"1"),
                Op::Symlink(p("../dlm_smoke"), p("/dev/misc/dlm_smoke")),
                w("/sys/kernel/dlm/smoke/event_done", b"0"),
            ]
        );
        assert_eq!(c.joined().collect::<Vec<_>>(), vec![OsStr::new("smoke")]);
        assert!(c.foreign_lockspaces().unwrap().is_empty());
    }

    #[test]
    fn a_restart_stops_and_starts_and_counts_generations() {
        let mut c = configured();
        create(c.fs_mut(), "smoke");
        c.fs_mut()
            .add_file("/sys/kernel/dlm/smoke/recover_status", "c0\n");
        c.join(&LockspaceRef::new("smoke")).unwrap();
        assert_eq!(c.generation(OsStr::new("smoke")), Some(1));
        c.fs_mut().ops.clear();
        assert_eq!(c.stop(OsStr::new("smoke")).unwrap(), 1);
        let g = c.start(OsStr::new("smoke"), Duration::ZERO).unwrap();
        assert_eq!(g, 2);
        assert_eq!(c.generation(OsStr::new("smoke")), Some(2));
        // No event_done: the kernel waits for none after a start of ours.
        assert_eq!(
            c.fs().ops,
            vec![
                w("/sys/kernel/dlm/smoke/control", b"0"),
                w("/sys/kernel/dlm/smoke/control", b"1"),
            ]
        );
        assert_eq!(c.members(), vec![(1, 1)]);
        assert!(matches!(
            c.stop(OsStr::new("other")),
            Err(Error::NotJoined(_))
        ));
        assert!(matches!(
            c.start(OsStr::new("other"), Duration::ZERO),
            Err(Error::NotJoined(_))
        ));
        // A recovery never seen done: the start is still reported, after
        // the wait.
        c.fs_mut()
            .add_file("/sys/kernel/dlm/smoke/recover_status", "0\n");
        let t = Instant::now();
        assert_eq!(
            c.start(OsStr::new("smoke"), Duration::from_millis(50))
                .unwrap(),
            3
        );
        assert!(t.elapsed() >= Duration::from_millis(50));
        // Leaving forgets the generation.
        c.leave(&LockspaceRef::new("smoke")).unwrap();
        assert_eq!(c.generation(OsStr::new("smoke")), None);
    }

    #[test]
    fn leave_undoes_the_join() {
        let mut c = configured();
        create(c.fs_mut(), "smoke");
        c.join(&LockspaceRef::new("smoke")).unwrap();
        c.fs_mut().ops.clear();
        c.handle(&DlmEvent::DeviceRemoved("dlm_smoke".into()))
            .unwrap();
        c.handle(&DlmEvent::Offline(LockspaceRef::new("smoke")))
            .unwrap();
        assert_eq!(
            c.fs().ops,
            vec![
                Op::Unlink(p("/dev/misc/dlm_smoke")),
                w("/sys/kernel/dlm/smoke/control", b"0"),
                Op::Rmdir(p(&format!("{CLUSTER}/spaces/smoke/nodes/1"))),
                Op::Rmdir(p(&format!("{CLUSTER}/spaces/smoke"))),
                w("/sys/kernel/dlm/smoke/event_done", b"0"),
            ]
        );
        assert_eq!(c.joined().count(), 0);
        // The same name can be joined again.
        c.join(&LockspaceRef::new("smoke")).unwrap();
    }

    #[test]
    fn a_failed_join_reports_the_errno_and_cleans_up() {
        let mut c = configured();
        create(c.fs_mut(), "bad");
        c.fs_mut().fail_on("/sys/kernel/dlm/bad/control", 16); // EBUSY
        let err = c.join(&LockspaceRef::new("bad")).unwrap_err();
        assert_eq!(err.errno(), 16);
        let ops = &c.fs().ops;
        assert_eq!(
            ops.last(),
            Some(&w("/sys/kernel/dlm/bad/event_done", b"-16"))
        );
        assert!(ops.contains(&Op::Rmdir(p(&format!("{CLUSTER}/spaces/bad")))));
        assert!(!c.fs().is_dir(format!("{CLUSTER}/spaces/bad")));
        assert_eq!(c.joined().count(), 0);
    }

    #[test]
    fn an_unusable_name_is_refused_with_einval() {
        let mut c = configured();
        create(c.fs_mut(), "a!b");
        let ls = LockspaceRef {
            name: "a/b".into(),
            kobj: "a!b".into(),
        };
        assert!(matches!(c.join(&ls), Err(Error::InvalidName(_))));
        assert_eq!(
            c.fs().ops,
            vec![w("/sys/kernel/dlm/a!b/event_done", b"-22")]
        );
    }

    #[test]
    fn a_second_online_for_a_joined_lockspace_is_ignored() {
        let mut c = configured();
        create(c.fs_mut(), "x");
        c.join(&LockspaceRef::new("x")).unwrap();
        let n = c.fs().ops.len();
        c.join(&LockspaceRef::new("x")).unwrap();
        assert_eq!(
            c.fs().ops.len(),
            n,
            "a stray event_done would confuse the next uevent"
        );
    }

    #[test]
    fn device_links_respect_what_is_there() {
        let mut c = configured();
        // Somebody else's link (udev's, pointing elsewhere) is left alone.
        c.fs_mut()
            .symlink(Path::new("/elsewhere"), Path::new("/dev/misc/dlm_x"))
            .unwrap();
        c.fs_mut().ops.clear();
        c.handle(&DlmEvent::DeviceAdded("dlm_x".into())).unwrap();
        c.handle(&DlmEvent::DeviceRemoved("dlm_x".into())).unwrap();
        assert!(c.fs().ops.is_empty());
        assert_eq!(
            c.fs().link("/dev/misc/dlm_x"),
            Some(Path::new("/elsewhere"))
        );
        // A new device gets a link, and loses it on removal.
        c.handle(&DlmEvent::DeviceAdded("dlm_y".into())).unwrap();
        assert_eq!(c.fs().link("/dev/misc/dlm_y"), Some(Path::new("../dlm_y")));
        c.handle(&DlmEvent::DeviceRemoved("dlm_y".into())).unwrap();
        assert_eq!(c.fs().link("/dev/misc/dlm_y"), None);
    }

    #[test]
    fn links_can_be_turned_off() {
        let cfg = Config {
            dev_links: false,
            ..Config::default()
        };
        let mut c = Controller::new(kernel(), Layout::system(), cfg);
        c.configure().unwrap();
        assert!(!c.fs().ops.iter().any(|o| matches!(o, Op::Symlink(..))));
    }

    #[test]
    fn shutdown_refuses_while_lockspaces_exist() {
        let mut c = configured();
        create(c.fs_mut(), "busy");
        c.join(&LockspaceRef::new("busy")).unwrap();
        assert!(matches!(c.shutdown(), Err(Error::Lockspaces(_))));
        assert!(c.fs().is_dir(CLUSTER));
        c.leave(&LockspaceRef::new("busy")).unwrap();
        // The kernel removes the kobject after the leave.
        c.fs_mut().rmdir(Path::new("/sys/kernel/dlm/busy")).unwrap();
        c.fs_mut().ops.clear();
        c.shutdown().unwrap();
        assert_eq!(
            c.fs().ops,
            vec![
                Op::Rmdir(p(&format!("{CLUSTER}/comms/1"))),
                Op::Rmdir(p(CLUSTER))
            ]
        );
    }

    #[test]
    fn logged_bytes() {
        assert_eq!(Shown(b"local").to_string(), "\"local\"");
        assert_eq!(
            Shown(&[2, 0, 0, 0, 127, 0, 0, 1, 0, 0]).to_string(),
            "10 bytes: 02 00 00 00 7f 00 00 01 (then zeros)"
        );
    }

    #[test]
    fn other_controllers_are_found_in_proc() {
        let mut fs = kernel();
        fs.add_file("/proc/1/comm", "init\n");
        fs.add_file("/proc/42/comm", "dlm_controld\n");
        fs.add_file("/proc/43/comm", "dlm-controld\n");
        fs.add_dir("/proc/self");
        let l = Layout::system();
        assert_eq!(
            find_other_controller(&mut fs, &l, &[]),
            Some((42, "dlm_controld".into()))
        );
        assert_eq!(
            find_other_controller(&mut fs, &l, &[42]),
            Some((43, "dlm-controld".into()))
        );
        assert_eq!(find_other_controller(&mut fs, &l, &[42, 43]), None);
    }
}
