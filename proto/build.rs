//! Compiles the `.proto` files with prost-build, using the protoc binary shipped by the
//! `protoc-bin-vendored` crate so that no machine needs protoc installed.

use std::io;

fn main() -> io::Result<()> {
    let protoc = protoc_bin_vendored::protoc_bin_path()
        .map_err(|e| io::Error::other(format!("no vendored protoc for this platform: {e}")))?;
    let files = [
        "protos/handshake.proto",
        "protos/rpc.proto",
        "protos/direct_send.proto",
        "protos/health.proto",
        "protos/discovery.proto",
        "protos/consensus.proto",
        "protos/mempool.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    // `bytes` fields become `bytes::Bytes`, so payloads are shared, not copied.
    config.bytes(["."]);
    config.compile_protos(&files, &["protos"])
}
