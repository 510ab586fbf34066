//! `dlmd`, the dlm-rs fallback daemon: the kernel-exact lock engine
//! ([`dlm_engine`]) behind a Unix socket, playing the kernel's DLM devices
//! for its clients (the protocol is in [`dlm_proto::wire`]).
//!
//! The daemon itself is the `dlmd` program; this library holds only its
//! command line ([`cli`]), so that the man page and the shell completions
//! are made from the same definition (`dlm-man`).
#![forbid(unsafe_code)]

pub mod cli;
