//! Generates the gRPC code with protox (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = [
        "proto/photon/v1/controller.proto",
        "proto/photon/v1/replica.proto",
        "proto/photon/v1/models.proto",
        "proto/ray/serve/serve.proto",
    ];
    let descriptors = protox::compile(files, ["proto"])?;
    // `bytes` fields as `Bytes`: bodies pass from hyper to tonic without copies.
    tonic_prost_build::configure().bytes(".").compile_fds(descriptors)?;
    Ok(())
}
