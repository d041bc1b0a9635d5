//! Generates the gRPC code from `proto/veritrace/v1/*.proto`. protoc comes from the
//! protoc-bin-vendored crate unless PROTOC is set, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded; nothing else reads the environment here.
        unsafe { std::env::set_var("PROTOC", protoc) };
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("veritrace_descriptor.bin"))
        // Requests that do not parse are INVALID_ARGUMENT, not tonic-prost's INTERNAL.
        .codec_path("crate::codec::StrictCodec")
        .compile_protos(&["proto/veritrace/v1/ledger.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
