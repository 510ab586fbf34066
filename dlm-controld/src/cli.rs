//! `dlm-controld`'s command line: the clap definition the program parses
//! and the man page and shell completions are made from.

use std::ffi::OsString;
use std::net::IpAddr;

use clap::{Parser, Subcommand};

use crate::Config;

/// The text after `dlm-controld --help`.
pub const AFTER_HELP: &str = "\
Without --foreground it starts itself again in the background (in a new
session) and returns once that copy is ready: when the command returns 0,
lockspaces can be created. Logs go to stderr (-v or RUST_LOG=debug for
every write).

It refuses to start when dlm_controld (or another dlm-controld) runs, or
when lockspaces already exist. Then it loads dlm (and configfs) with
modprobe if needed, mounts configfs if needed, subscribes to kernel
uevents, opens and holds dlm-monitor, configures the cluster, and answers
each lockspace's online and offline uevents.

SIGTERM or SIGINT stop it, but never while a lockspace exists: then it says
so and keeps serving, and exits as soon as the last lockspace is removed
(exiting earlier would stop every lockspace). SIGKILL remains the way to
force it, with exactly those consequences.

It listens on /run/dlm-controld/events.sock, where the users of a
lockspace (dlm-rs's kernel backend, for a lockspace opened with recovery
callbacks) subscribe to hear when the controller stops it (they call
recover_prep) and starts it again (recover_done, with the generation one
higher). `dlm-controld recover LOCKSPACE` asks the running controller for
such a stop and restart.";

/// The text after `dlm-controld recover --help`.
pub const RECOVER_AFTER_HELP: &str = "\
The running controller writes control = 0 to /sys/kernel/dlm/LOCKSPACE
(the kernel stops the lockspace: lock requests wait), tells the
lockspace's subscribers \"stop\", writes control = 1 (the kernel runs its
recovery, which this node alone finishes at once), waits for that recovery
to be done (recover_status, at most 10 s), and tells them \"start\" with the
generation one higher. Granted locks stay granted.

Root only (the controller checks the caller's credentials). It prints the
new generation and exits 0; it exits 1 with a message when no controller
runs, the lockspace was not joined by it, or the caller is not root, and 2
on a bad command line.";

/// `dlm-controld`'s command line.
#[derive(Debug, Parser)]
#[command(
    name = "dlm-controld",
    version,
    about = "Controller for the kernel DLM on a single host (no corosync): joins every \
             lockspace with this node as its only member",
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    /// A request to the running controller instead of running one.
    #[command(subcommand)]
    pub command: Option<Cmd>,
    /// Required: the only mode implemented (a cluster needs dlm_controld
    /// with corosync).
    #[arg(long)]
    pub single_node: bool,
    /// Stay in the foreground (default: return once ready).
    #[arg(short, long)]
    pub foreground: bool,
    /// configfs cluster_name.
    #[arg(long, value_name = "NAME", default_value = "local")]
    pub cluster_name: String,
    /// This node's id.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub nodeid: u32,
    /// The address for the DLM's lowcomms.
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    pub addr: IpAddr,
    /// Do not create /dev/misc/DEV links for libdlm (the udev rule's job).
    #[arg(long)]
    pub no_dev_links: bool,
    /// Log every write (same as RUST_LOG=debug).
    #[arg(short, long)]
    pub verbose: bool,
}

/// Requests to the running controller.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Stop and restart a lockspace, as a membership change would: its
    /// users' recover_prep, then recover_done with the next generation.
    #[command(after_help = RECOVER_AFTER_HELP)]
    Recover {
        /// The lockspace's name.
        lockspace: OsString,
    },
}

impl Args {
    /// The controller's settings these arguments ask for.
    pub fn config(&self) -> Config {
        Config {
            cluster_name: self.cluster_name.clone(),
            nodeid: self.nodeid,
            addr: self.addr,
            dev_links: !self.no_dev_links,
        }
    }
}

/// The clap definition of `dlm-controld`, for the man page and the
/// completions.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    Args::command()
}
