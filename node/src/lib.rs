//! veritrace-node: the daemon (binary `veritrace-node`).
//!
//! Status: not built yet (issue 3). It will wire a `veritrace-ledger` store, the
//! `veritrace-consensus` Raft group, the gRPC services of `veritrace-proto`, the consumer
//! page and metrics, from a TOML config.
