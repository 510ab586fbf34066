//! dlm-controld: a single-node controller for the kernel DLM.
//!
//! The kernel DLM (`dlm.ko`) needs a userspace controller: it asks, with a
//! uevent, to be told the members of each lockspace it creates, and blocks
//! the creating process until the controller answers. In a cluster that is
//! dlm_controld with corosync. On one host, with no cluster stack, this
//! controller answers instead: every lockspace has one member, this node.
//! It lets libdlm programs (and dlm-rs's kernel backend) use the kernel DLM
//! on a single machine.
//!
//! The logic is in plain modules that run anywhere, over a
//! [`sys::Fs`] trait; the binary (`src/main.rs`) adds the netlink socket,
//! the monitor device and signals:
//!
//! - [`uevent`]: parsing `NETLINK_KOBJECT_UEVENT` datagrams;
//! - [`crc`]: the lockspace global id, as dlm_controld computes it;
//! - [`addr`]: the 128-byte `sockaddr_storage` configfs takes;
//! - [`layout`]: every path under configfs, sysfs and `/dev`;
//! - [`controller`]: the start-up, join, leave, restart and teardown steps;
//! - [`events`]: the event socket, where users of a lockspace hear of its
//!   stops and starts (their recovery callbacks), and its protocol;
//! - [`cli`]: the command line.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod addr;
pub mod cli;
pub mod controller;
pub mod crc;
pub mod error;
pub mod events;
pub mod layout;
pub mod sys;
pub mod uevent;

pub use controller::{Config, Controller};
pub use error::{Error, Result};
pub use layout::Layout;
