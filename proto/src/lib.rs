//! veritrace-proto: the wire format of the gRPC API.
//!
//! Status: not built yet (issue 4). It will hold the `.proto` files, the tonic/prost code
//! generated from them (protoc from the protoc-bin-vendored crate), and the conversions to
//! and from `veritrace-ledger` types.
//!
//! Architecture invariant: only this crate knows the wire format; ledger types do not
//! derive protobuf.
