//! Generates the v1 API into OUT_DIR with the vendored protoc, so a fresh machine needs no
//! system protobuf package.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let files = [
        "stackhive/v1/types.proto",
        "stackhive/v1/jobs.proto",
        "stackhive/v1/worker.proto",
        "stackhive/v1/datasets.proto",
        "stackhive/v1/artifacts.proto",
        "stackhive/v1/auth.proto",
        "stackhive/v1/features.proto",
        "stackhive/v1/sweeps.proto",
    ];
    tonic_prost_build::configure()
        // Malformed messages (invalid UTF-8 in a string field, say) are the caller's fault:
        // INVALID_ARGUMENT, not INTERNAL (src/codec.rs).
        .codec_path("crate::codec::ProtoCodec")
        .file_descriptor_set_path(out.join("stackhive_v1_descriptor.bin"))
        .compile_protos(&files, &["."])?;
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    Ok(())
}
