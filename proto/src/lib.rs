//! veritrace-proto: the wire format of the gRPC API.
//!
//! The `.proto` files under `proto/`, the tonic/prost code generated from them (protoc
//! from the protoc-bin-vendored crate), and, as the API grows, the conversions to and from
//! `veritrace-ledger` types.
//!
//! Architecture invariant: only this crate knows the wire format; ledger types do not
//! derive protobuf.

/// Generated messages and services of `veritrace.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("veritrace.v1");

    /// The encoded file descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("veritrace_descriptor");
}

pub mod codec;
pub mod convert;
