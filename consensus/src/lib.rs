//! veritrace-consensus: Raft ordering of blocks and their replication over libp2p.
//!
//! Status: not built yet (issue 3). This crate will adapt openraft to RocksDB log storage
//! and a libp2p request-response transport, generic over the payload and the state
//! machine.
//!
//! Architecture invariant: it knows nothing of the ledger's domain (records, rules,
//! subjects); it orders opaque blocks and hands them to a state machine.
