//! veritrace-devnet: start, break and inspect a local network of real node processes.
//!
//! It generates a realistic cast of organisations with random keys and a genesis for them
//! ([`cast`]), writes each node's config ([`config`]), launches `veritrace-node` processes
//! ([`process`]) either on 127.0.0.1 with ports chosen at run time ([`ports`]) or each in a
//! network namespace of its own on a bridge of the network ([`netns`], root only), and
//! controls and observes them through a [`Network`] handle: start, stop, kill -9, pause,
//! resume, restart, wipe, partition, one-way cuts and heal, status from `/metrics` and the
//! gRPC `Status` RPC ([`client`]), waiting for a leader. A manifest (`devnet.json`,
//! [`manifest`]) lets a later process — the `veritrace devnet` CLI — find and control a
//! network another process started, and remove what it made. [`demo`] plays the seeds'
//! traceability chains through the gRPC API of a running network; [`admit`] grows one by
//! a node the genesis does not name, admitted as a validator by governance.
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
//! A network that can be partitioned (as root):
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use veritrace_devnet::{NetMode, Network, NetworkSpec};
//! let mut spec = NetworkSpec::temp(3, 0, veritrace_devnet::locate::node_binary_for_tests()?)?;
//! spec.net = NetMode::Namespaces;
//! let net = Network::create(spec)?;
//! net.start_all()?;
//! net.partition(&["node-1"])?; // node-1 | node-2, node-3
//! net.heal()?;
//! # Ok(()) }
//! ```
//!
//! Architecture invariant: it launches the node binary; it never links the node crate.
//! Its picture of the node's config is its own ([`config`]); `tests/` checks the two agree
//! by starting real nodes.

pub mod admit;
pub mod cast;
pub mod client;
pub mod config;
pub mod demo;
mod fsutil;
pub mod http;
pub mod keyfile;
pub mod locate;
pub mod manifest;
pub mod netns;
pub mod network;
pub mod ports;
pub mod process;
#[cfg(test)]
mod testdir;

pub use manifest::NetMode;
pub use network::{Network, NetworkSpec, NodeStatus, Stopped};
