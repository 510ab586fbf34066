//! `dlm-controld --single-node`: the kernel DLM's controller on one host.
//!
//! ```text
//! dlm-controld --single-node [--foreground] [--cluster-name NAME]
//!              [--nodeid N] [--addr IP] [--no-dev-links] [-v]
//! ```
//!
//! Without `--foreground` it starts itself again in the background (in a
//! new session) and returns once that copy is ready: when the command
//! returns 0, lockspaces can be created. Logs go to stderr (`-v` or
//! `RUST_LOG=debug` for every write).
//!
//! It refuses to start when dlm_controld (or another dlm-controld) runs,
//! or when lockspaces already exist. Then it loads dlm (and configfs) with
//! `modprobe` if needed, mounts configfs if needed, subscribes to kernel
//! uevents, opens and holds `dlm-monitor`, configures the cluster, and
//! answers each lockspace's `online` and `offline` uevents (see
//! `dlm_controld::controller`).
//!
//! SIGTERM or SIGINT stop it — but never while a lockspace exists: then
//! it says so and keeps serving, and exits as soon as the last lockspace
//! is removed. Exiting earlier would stop every lockspace (the kernel
//! does that when the monitor device closes) and leave later joins and
//! leaves waiting for an answer forever. SIGKILL remains the way to force
//! it, with exactly those consequences.
//!
//! It serves the event socket `/run/dlm-controld/events.sock`
//! (`dlm_controld::events`): subscribers hear each lockspace's stops and
//! starts. `dlm-controld recover LOCKSPACE` is a client of that socket:
//! it asks the running controller to stop and restart a lockspace.

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use dlm_controld::cli;
use dlm_controld::controller::find_other_controller;
use dlm_controld::error::{Error, Result};
use dlm_controld::events::{self, EventServer, Request, RequestKind};
use dlm_controld::layout::{misc_minor, parse_dev, RUN_DIR};
use dlm_controld::sys::RealFs;
use dlm_controld::uevent::{classify, valid_lockspace_name, DlmEvent, LockspaceRef, Uevent};
use dlm_controld::{Config, Controller, Layout};
use rustix::event::{poll, PollFd, PollFlags};
use rustix::io::Errno;
use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{AddressFamily, RecvFlags, SocketFlags, SocketType};

/// Set in the environment of the background copy: its stdout is a pipe on
/// which it reports readiness.
const NOTIFY_ENV: &str = "DLM_CONTROLD_NOTIFY";

/// The uevent multicast group of kernel events.
const UEVENT_GROUP_KERNEL: u32 = 1;

/// Socket receive buffer for uevents (a burst of device events must not
/// overflow it).
const UEVENT_RCVBUF: usize = 4 << 20;

/// How long the controller waits for the kernel's recovery after
/// restarting a lockspace before it publishes the start anyway.
const RECOVERY_WAIT: Duration = Duration::from_secs(10);

/// How long `dlm-controld recover` waits for the controller's answer.
const RECOVER_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Args {
    /// `recover LOCKSPACE`: a request to the running controller.
    recover: Option<OsString>,
    foreground: bool,
    verbose: bool,
    cfg: Config,
}

/// Parse the command line (`dlm_controld::cli`); `Ok(None)` when it asked
/// for the help or the version, which are printed here.
fn parse_args(it: impl Iterator<Item = String>) -> Result<Option<Args>> {
    use clap::error::ErrorKind;
    use clap::Parser;
    let a = match cli::Args::try_parse_from(std::iter::once("dlm-controld".to_string()).chain(it)) {
        Ok(a) => a,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return Ok(None);
        }
        Err(e) => return Err(Error::Usage(e.render().to_string().trim_end().to_string())),
    };
    if let Some(cli::Cmd::Recover { lockspace }) = a.command {
        return Ok(Some(Args {
            recover: Some(lockspace),
            foreground: true,
            verbose: a.verbose,
            cfg: Config::default(),
        }));
    }
    if !a.single_node {
        return Err(Error::Usage(
            "only --single-node is implemented; a cluster needs dlm_controld with corosync".into(),
        ));
    }
    Ok(Some(Args {
        recover: None,
        foreground: a.foreground,
        verbose: a.verbose,
        cfg: a.config(),
    }))
}

fn init_logging(verbose: bool) {
    let start = Instant::now();
    let pid = std::process::id();
    env_logger::Builder::new()
        .filter_level(if verbose {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Info
        })
        .parse_env("RUST_LOG")
        .format(move |buf, rec| {
            let t = start.elapsed();
            writeln!(
                buf,
                "dlm-controld[{pid}] {:4}.{:03} {}: {}",
                t.as_secs(),
                t.subsec_millis(),
                rec.level(),
                rec.args()
            )
        })
        .init();
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(raw.clone().into_iter()) {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dlm-controld: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(args.verbose);
    if let Some(name) = args.recover {
        return recover_command(&name);
    }
    if !args.foreground {
        return start_in_background(raw);
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `dlm-controld recover LOCKSPACE`: ask the running controller to stop
/// and restart the lockspace.
fn recover_command(name: &std::ffi::OsStr) -> ExitCode {
    let shown = name.to_string_lossy();
    if !valid_lockspace_name(name) {
        eprintln!("dlm-controld recover: {shown:?} is not a lockspace name");
        return ExitCode::from(2);
    }
    if !rustix::process::geteuid().is_root() {
        eprintln!("dlm-controld recover {shown}: only root may restart a lockspace");
        return ExitCode::FAILURE;
    }
    match events::recover(Path::new(RUN_DIR), name, RECOVER_COMMAND_TIMEOUT) {
        Ok(generation) => {
            println!("lockspace {shown} stopped and restarted: generation {generation}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dlm-controld recover {shown}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Start `dlm-controld ... --foreground` in the background and wait until
/// it reports ready (or fails).
fn start_in_background(args: Vec<String>) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            log::error!("cannot find my own executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let child = Command::new(exe)
        .args(args)
        .arg("--foreground")
        .env(NOTIFY_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            log::error!("cannot start the background controller: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    if line.trim() == "READY" {
        log::info!("running in the background as pid {}", child.id());
        return ExitCode::SUCCESS;
    }
    match child.wait() {
        Ok(st) => log::error!("the controller failed to start ({st})"),
        Err(e) => log::error!("the controller failed to start: {e}"),
    }
    ExitCode::FAILURE
}

fn run(args: Args) -> Result<()> {
    let notify = std::env::var_os(NOTIFY_ENV).is_some();
    let mut ignore = vec![std::process::id()];
    if notify {
        // The background copy: leave the caller's session and process
        // group, so its job control and terminal hang-ups pass us by.
        let _ = rustix::process::setsid();
        if let Some(ppid) = rustix::process::getppid() {
            ignore.push(ppid.as_raw_nonzero().get() as u32);
        }
    }
    // Signals first: a SIGTERM during the set-up must not kill us
    // half-way (it is honoured once we serve).
    let (sig_rx, sig_tx) = UnixStream::pair().map_err(|e| Error::io("socketpair", "", e))?;
    sig_rx
        .set_nonblocking(true)
        .map_err(|e| Error::io("fcntl", "", e))?;
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let tx = sig_tx.try_clone().map_err(|e| Error::io("dup", "", e))?;
        signal_hook::low_level::pipe::register(sig, tx)
            .map_err(|e| Error::io("sigaction", "", e))?;
    }
    // A hang-up must not kill a controller that serves lockspaces.
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Default::default())
        .map_err(|e| Error::io("sigaction", "", e))?;

    let layout = Layout::system();
    if let Some((pid, comm)) = find_other_controller(&mut RealFs, &layout, &ignore) {
        return Err(Error::OtherController { pid, comm });
    }
    ensure_kernel(&layout)?;

    let mut ctl = Controller::new(RealFs, layout.clone(), args.cfg);
    let foreign = ctl.foreign_lockspaces()?;
    if !foreign.is_empty() {
        return Err(Error::Lockspaces(foreign));
    }
    // Subscribe before anything can create a lockspace: the kernel accepts
    // creations once the local comm is configured, and an online event
    // sent before we listen would leave its creator hanging.
    let nl = open_uevent_socket()?;
    // dlm_controld opens the monitor before configuring the nodes; the
    // kernel stops all lockspaces when it is closed.
    let monitor = open_monitor(&layout)?;
    if let Err(e) = ctl.configure() {
        if !matches!(e, Error::Lockspaces(_)) {
            if let Err(e2) = ctl.clear_configfs() {
                log::warn!("cleaning up: {e2}");
            }
        }
        return Err(e);
    }
    // The event socket is a service to the lockspaces' users, not a
    // condition of serving the kernel: without it the controller runs on.
    let mut events = match EventServer::bind(&layout.run) {
        Ok(s) => Some(s),
        Err(e) => {
            log::error!(
                "no event socket in {}: {e}; recovery events and `dlm-controld recover` \
                 are unavailable",
                layout.run.display()
            );
            None
        }
    };
    log::info!(
        "ready: single node {} at {}",
        ctl.config().nodeid,
        ctl.config().addr
    );
    if notify {
        report_ready();
    }
    serve(&mut ctl, &nl, &sig_rx, &mut events);
    drop(events);

    // Stop. First close the monitor: from now on the kernel refuses new
    // lockspaces at once (EUNATCH; ENOTCONN once the local comm is gone)
    // instead of waiting for us. Then answer what was already sent, and
    // remove the configuration.
    drop(monitor);
    drain_after_close(&mut ctl, &nl);
    ctl.shutdown()?;
    log::info!("stopped");
    Ok(())
}

/// Tell the waiting parent we are ready, then point stdout at /dev/null:
/// the parent exits and the pipe would be broken.
fn report_ready() {
    let mut out = io::stdout();
    let _ = writeln!(out, "READY");
    let _ = out.flush();
    match File::options().write(true).open("/dev/null") {
        Ok(null) => {
            if let Err(e) = rustix::stdio::dup2_stdout(&null) {
                log::warn!("cannot redirect stdout: {e}");
            }
        }
        Err(e) => log::warn!("cannot open /dev/null: {e}"),
    }
}

/// Load dlm.ko (and configfs.ko) if missing, and mount configfs if needed.
fn ensure_kernel(layout: &Layout) -> Result<()> {
    let modprobe = |m: &str| match Command::new("modprobe").arg(m).status() {
        Ok(st) if st.success() => log::info!("loaded module {m}"),
        Ok(st) => log::warn!("modprobe {m}: {st}"),
        Err(e) => log::warn!("modprobe {m}: {e}"),
    };
    if !layout.sysfs_dlm.exists() {
        modprobe("dlm");
    }
    // Nothing is changed (no configfs mount) on a kernel without the DLM.
    if !layout.sysfs_dlm.exists() {
        return Err(Error::NoDlm(format!(
            "{} does not exist: dlm.ko is not loaded and modprobe dlm failed",
            layout.sysfs_dlm.display()
        )));
    }
    if !layout.configfs.exists() {
        modprobe("configfs");
    }
    if !layout.configfs.exists() {
        return Err(Error::NoDlm(format!(
            "{} does not exist (no configfs)",
            layout.configfs.display()
        )));
    }
    if !is_mounted(&layout.configfs, "configfs") {
        rustix::mount::mount(
            "configfs",
            &layout.configfs,
            "configfs",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .map_err(|e| Error::io("mount configfs on", &layout.configfs, e.into()))?;
        log::info!("mounted configfs on {}", layout.configfs.display());
    }
    if !layout.dlm_config().exists() {
        return Err(Error::NoDlm(format!(
            "{} does not exist",
            layout.dlm_config().display()
        )));
    }
    Ok(())
}

fn is_mounted(path: &Path, fstype: &str) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 2 && Path::new(f[1]) == path && f[2] == fstype
    })
}

fn open_uevent_socket() -> Result<rustix::fd::OwnedFd> {
    let fd = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        Some(netlink::KOBJECT_UEVENT),
    )
    .map_err(|e| Error::Netlink(e.into()))?;
    if rustix::net::sockopt::set_socket_recv_buffer_size_force(&fd, UEVENT_RCVBUF).is_err() {
        if let Err(e) = rustix::net::sockopt::set_socket_recv_buffer_size(&fd, UEVENT_RCVBUF) {
            log::warn!("uevent socket receive buffer: {e}");
        }
    }
    rustix::net::bind(&fd, &SocketAddrNetlink::new(0, UEVENT_GROUP_KERNEL))
        .map_err(|e| Error::Netlink(e.into()))?;
    Ok(fd)
}

/// Open `dlm-monitor` read-only: `/dev/misc/dlm-monitor`, else
/// `/dev/dlm-monitor`, else a node made from the minor in
/// `/sys/class/misc/dlm-monitor/dev` or `/proc/misc`.
fn open_monitor(layout: &Layout) -> Result<File> {
    let name = "dlm-monitor";
    let candidates = [
        layout.misc_link(name.as_ref()),
        layout.dev_node(name.as_ref()),
    ];
    for path in &candidates {
        match File::open(path) {
            Ok(f) => {
                log::debug!("holding {} open", path.display());
                return Ok(f);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("open", path, e)),
        }
    }
    let minor = std::fs::read_to_string(layout.sys_class_misc.join(name).join("dev"))
        .ok()
        .and_then(|d| parse_dev(&d))
        .map(|(_, minor)| minor)
        .or_else(|| {
            misc_minor(
                &std::fs::read_to_string(layout.proc.join("misc")).ok()?,
                name,
            )
        })
        .ok_or_else(|| {
            Error::NoDevice(format!(
                "no {name} device: neither in /dev nor in /proc/misc"
            ))
        })?;
    let path: PathBuf = layout.dev_node(name.as_ref());
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &path,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o600),
        rustix::fs::makedev(10, minor),
    )
    .map_err(|e| Error::io("mknod", &path, e.into()))?;
    log::info!("created {} (10:{minor})", path.display());
    File::open(&path).map_err(|e| Error::io("open", &path, e))
}

/// Receive every queued uevent and hand the DLM's to `f`. Returns once
/// the socket is empty.
fn drain_uevents(
    nl: &rustix::fd::OwnedFd,
    ctl: &mut Controller<RealFs>,
    mut f: impl FnMut(&mut Controller<RealFs>, DlmEvent),
) -> Result<()> {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        match rustix::net::recvfrom(nl, &mut buf[..], RecvFlags::DONTWAIT) {
            Ok((n, full, from)) => {
                // Only the kernel (port id 0) sends real uevents.
                let sender = from
                    .and_then(|a| SocketAddrNetlink::try_from(a).ok())
                    .map(|a| a.pid());
                if sender != Some(0) {
                    log::debug!("ignoring a uevent from port {sender:?}");
                    continue;
                }
                if full > n {
                    log::warn!("a {full}-byte uevent was truncated; ignored");
                    continue;
                }
                if let Some(ev) = Uevent::parse(&buf[..n]).as_ref().and_then(classify) {
                    log::debug!("uevent: {ev:?}");
                    f(ctl, ev);
                }
            }
            Err(Errno::AGAIN) => return Ok(()),
            Err(Errno::INTR) => {}
            Err(Errno::NOBUFS) => {
                // The kernel dropped uevents. A lost online event would
                // leave its creator waiting: join whatever we do not know.
                log::error!("uevents were lost (socket buffer overflow); rescanning lockspaces");
                for ls in ctl.foreign_lockspaces().unwrap_or_default() {
                    let _ = ctl.join(&LockspaceRef::new(ls));
                }
            }
            Err(e) => return Err(Error::Netlink(e.into())),
        }
    }
}

/// The main loop: uevents until a stop signal arrives and no lockspace is
/// left. It never returns earlier, whatever fails: leaving would stop the
/// lockspaces that exist.
fn serve(
    ctl: &mut Controller<RealFs>,
    nl: &rustix::fd::OwnedFd,
    sig_rx: &UnixStream,
    events: &mut Option<EventServer>,
) {
    let mut stopping = false;
    let mut last_refusal: Vec<OsString> = Vec::new();
    // While a stop waits for lockspaces to go, look again every 100 ms:
    // the kernel removes a lockspace's kobject only after our answer to
    // its offline event, and nothing else wakes us then. After an error,
    // back off as long.
    let tick = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 100_000_000,
    };
    let mut backoff = false;
    loop {
        let (ids, revents) = {
            let (ids, ev_fds) = events.as_ref().map(|e| e.poll_fds()).unwrap_or_default();
            let mut fds = vec![
                PollFd::new(nl, PollFlags::IN),
                PollFd::new(sig_rx, PollFlags::IN),
            ];
            fds.extend(ev_fds);
            let timeout = (stopping || backoff).then_some(&tick);
            backoff = false;
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(e) => {
                    log::error!("poll: {e}");
                    backoff = true;
                    continue;
                }
            }
            let revents: Vec<PollFlags> = fds.iter().map(|f| f.revents()).collect();
            (ids, revents)
        };
        let (nl_ready, sig_ready) = (!revents[0].is_empty(), !revents[1].is_empty());
        if let Some(ev) = events.as_mut() {
            for req in ev.handle(&ids, &revents[2..]) {
                answer(ctl, ev, req);
            }
        }
        if nl_ready {
            let r = drain_uevents(nl, ctl, |ctl, ev| {
                if let Err(e) = ctl.handle(&ev) {
                    log::error!("{e}");
                }
                if let (DlmEvent::Offline(ls), Some(events)) = (&ev, events.as_mut()) {
                    events.publish_gone(&ls.name);
                }
            });
            // Never give up while lockspaces may depend on us.
            if let Err(e) = r {
                log::error!("{e}");
                backoff = true;
            }
        }
        if sig_ready {
            let mut b = [0u8; 64];
            while matches!(io::Read::read(&mut &*sig_rx, &mut b), Ok(n) if n > 0) {}
            if !stopping {
                log::info!("stop requested");
            }
            stopping = true;
        }
        if stopping {
            let ls = match ctl.lockspaces() {
                Ok(ls) => ls,
                Err(e) => {
                    log::error!("{e}");
                    continue;
                }
            };
            if ls.is_empty() {
                return;
            }
            if ls != last_refusal {
                log::warn!(
                    "not stopping while lockspaces exist ({}); will stop once they are removed",
                    ls.iter()
                        .map(|l| l.to_string_lossy())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                last_refusal = ls;
            }
        }
    }
}

/// Answer one request on the event socket.
fn answer(ctl: &mut Controller<RealFs>, events: &mut EventServer, req: Request) {
    match req.kind {
        RequestKind::Subscribe(name) => match ctl.generation(&name) {
            Some(generation) => events.subscribed(req.conn, &name, generation),
            None => events.fail(req.conn, 2, "no such lockspace joined by this controller"),
        },
        RequestKind::Recover(name) => {
            if req.uid != 0 {
                log::warn!(
                    "refusing to restart lockspace {name:?} for uid {}: root only",
                    req.uid
                );
                events.fail(req.conn, 1, "only root may restart a lockspace");
                return;
            }
            log::info!("restarting lockspace {name:?} (asked by uid 0)");
            let ended = match ctl.stop(&name) {
                Ok(g) => g,
                Err(e) => {
                    log::error!("{e}");
                    events.fail(req.conn, e.errno(), &e.to_string());
                    return;
                }
            };
            events.publish_stop(&name, ended);
            match ctl.start(&name, RECOVERY_WAIT) {
                Ok(generation) => {
                    let (ours, members) = (ctl.our_slot(), ctl.members());
                    events.publish_start(&name, generation, ours, &members);
                    events.finish(req.conn, generation);
                }
                Err(e) => {
                    log::error!("lockspace {name:?} stays stopped: {e}");
                    events.fail(req.conn, e.errno(), &e.to_string());
                }
            }
        }
    }
}

/// After the monitor is closed: for a short while, answer any online
/// event that was sent before the close with EUNATCH (what the kernel
/// itself returns once no controller is available), and complete any
/// offline, so nobody is left waiting on us.
fn drain_after_close(ctl: &mut Controller<RealFs>, nl: &rustix::fd::OwnedFd) {
    let deadline = Instant::now() + Duration::from_millis(200);
    loop {
        let r = drain_uevents(nl, ctl, |ctl, ev| {
            let r = match &ev {
                DlmEvent::Online(ls) => ctl.refuse(ls, Errno::UNATCH.raw_os_error()),
                other => ctl.handle(other),
            };
            if let Err(e) = r {
                log::error!("{e}");
            }
        });
        if r.is_err() {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let mut fds = [PollFd::new(nl, PollFlags::IN)];
        let ts = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: left.as_nanos() as _,
        };
        let _ = poll(&mut fds, Some(&ts));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn the_recover_command() {
        let a = parse(&["recover", "fs0"]).unwrap().unwrap();
        assert_eq!(a.recover.as_deref(), Some(std::ffi::OsStr::new("fs0")));
        assert!(matches!(parse(&["recover"]), Err(Error::Usage(_))));
        assert!(matches!(
            parse(&["--single-node", "recover", "fs0"]),
            Err(Error::Usage(_))
        ));
    }

    fn parse(a: &[&str]) -> Result<Option<Args>> {
        parse_args(a.iter().map(|s| s.to_string()))
    }

    #[test]
    fn arguments() {
        let a = parse(&[
            "--single-node",
            "-f",
            "--nodeid",
            "3",
            "--addr",
            "::1",
            "--cluster-name",
            "c1",
        ])
        .unwrap()
        .unwrap();
        assert!(a.foreground);
        assert_eq!(a.cfg.nodeid, 3);
        assert_eq!(a.cfg.addr, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(a.cfg.cluster_name, "c1");
        assert!(a.cfg.dev_links);
        assert!(!parse(&["--single-node"]).unwrap().unwrap().foreground);
        assert!(matches!(parse(&[]), Err(Error::Usage(_))));
        assert!(matches!(
            parse(&["--single-node", "--nodeid", "0"]),
            Err(Error::Usage(_))
        ));
        assert!(matches!(
            parse(&["--single-node", "--addr"]),
            Err(Error::Usage(_))
        ));
        assert!(matches!(
            parse(&["--single-node", "--bogus"]),
            Err(Error::Usage(_))
        ));
    }
}
