//! veritrace-ledger: the domain of a product quality-safety traceability ledger.
//!
//! Identifiers ([`ids`]), organisations and genesis ([`org`]), signed records
//! ([`record`]) in one canonical encoding ([`codec`]), the rules and the deterministic
//! apply of a block ([`apply`]), the Merkle log ([`merkle`]) and the subject state map
//! ([`smt`]), batched signature checks ([`sigbatch`]), blocks and checkpoints ([`block`]), trace bundles and their offline
//! verification ([`bundle`]), the store ([`store`]) over RocksDB or memory ([`kv`]) with
//! its streamed snapshots ([`snapshot`]), EPCIS 2.0 documents ([`epcis`]) and calendar times ([`time`]).
//!
//! Architecture invariant: this crate knows nothing of tokio, libp2p, Raft or protobuf.
//! Apply is a pure function of (stored state, block); the network, consensus and wire
//! formats live in other crates and call in here.

pub mod apply;
pub mod block;
pub mod bundle;
mod cache;
pub mod codec;
pub mod epcis;
#[doc(hidden)]
pub mod fuzzing;
pub mod hash;
pub mod ids;
pub mod keyfile;
pub mod kv;
pub mod merkle;
pub mod org;
pub mod record;
pub mod sigbatch;
pub mod smt;
pub mod snapshot;
pub mod state;
pub mod store;
pub mod testkit;
pub mod time;
pub mod view;
