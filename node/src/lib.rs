//! veritrace-node: the daemon (binary `veritrace-node`).
//!
//! Wires a `veritrace-ledger` store (the state machine) to a `veritrace-consensus` Raft
//! group over libp2p, and serves the gRPC API and HTTP endpoints.
//!
//! - [`config`]: the TOML config and key files;
//! - [`machine`]: the ledger as Raft's state machine (one entry = one block);
//! - [`p2p`]: libp2p transport, permissioned by the members' node keys;
//! - [`members`]: who is in the network (genesis, then governance) and how to reach them;
//! - [`service`]: submissions (check, forward, batch, wait), checkpoint signatures,
//!   membership;
//! - [`grpc`] / [`serve`]: the listeners; [`query`]: the read queries of the API;
//!   [`consumer`]: the consumer page, its JSON, bundle and QR codes ([`qr`]);
//!   [`run`]: start and stop; [`snapshots`]: when this node builds its snapshots.
//!
//! Architecture invariant: the node holds no ledger logic of its own; rules live in the
//! ledger crate and Raft in openraft.

pub mod config;
pub mod consumer;
pub mod grpc;
pub mod machine;
pub mod members;
pub mod p2p;
pub mod qr;
pub mod query;
pub mod run;
pub mod serve;
pub mod service;
pub mod snapshots;
