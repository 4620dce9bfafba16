//! Compiles `proto/*.proto` with protox (pure Rust, no system `protoc`) and
//! generates prost messages and tonic clients/servers from the result.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/dataplane.proto",
        "proto/policy.proto",
        "proto/agent.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
