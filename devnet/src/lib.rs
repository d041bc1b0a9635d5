//! veritrace-devnet: start, break and inspect a local network of node processes.
//!
//! Status: not built yet (issue 5). It will generate a genesis and keys for a realistic
//! cast, write node configs, launch `veritrace-node` processes on 127.0.0.1 with free
//! ports, and control them (stop, kill, pause, restart, partition).
//!
//! Architecture invariant: it launches the node binary; it never links the node crate.
