//! veritrace-devnet: start, break and inspect a local network of real node processes.
//!
//! It generates a realistic cast of organisations with random keys and a genesis for them
//! ([`cast`]), writes each node's config ([`config`]), launches `veritrace-node` processes
//! on 127.0.0.1 with ports chosen at run time ([`ports`], [`process`]), and controls and
//! observes them through a [`Network`] handle: start, stop, kill -9, pause, resume,
//! restart, wipe, status from `/metrics`, waiting for a leader. A manifest
//! (`devnet.json`, [`manifest`]) lets a later process — the `veritrace devnet` CLI — find
//! and control a network another process started.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use std::time::Duration;
//! let bin = veritrace_devnet::locate::node_binary_for_tests()?;
//! let net = veritrace_devnet::Network::temp(3, 1, bin)?;
//! net.start_all()?;
//! let leader = net.wait_for_leader(Duration::from_secs(20))?;
//! net.kill(&leader)?;
//! net.wait_for_leader(Duration::from_secs(20))?;
//! # Ok(()) }
//! ```
//!
//! Architecture invariant: it launches the node binary; it never links the node crate.
//! Its picture of the node's config is its own ([`config`]); `tests/` checks the two agree
//! by starting real nodes.

pub mod cast;
pub mod config;
mod fsutil;
pub mod http;
pub mod keyfile;
pub mod locate;
pub mod manifest;
pub mod network;
pub mod ports;
pub mod process;
#[cfg(test)]
mod testdir;

pub use network::{Network, NetworkSpec, NodeStatus, Stopped};
