//! Compiles the Mixer protos with `protox` (pure Rust, no system `protoc`) and generates the
//! prost messages and the tonic client and server for `istio.mixer.v1.Mixer`.

use std::error::Error;

const PROTO_DIR: &str = "proto";

const PROTOS: &[&str] = &[
    "istio/mixer/v1/mixer.proto",
    "istio/mixer/v1/attributes.proto",
    "istio/policy/v1beta1/value_type.proto",
    "istio/policy/v1beta1/http_response.proto",
    "google/rpc/status.proto",
    "google/rpc/code.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={PROTO_DIR}");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={PROTO_DIR}/{proto}");
    }

    // Well-known types (`google/protobuf/*.proto`) resolve to protox's bundled copies, and
    // prost-build maps `.google.protobuf` to `::prost_types` by default.
    let fds = protox::compile(PROTOS, [PROTO_DIR])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Ordered maps: decoding a few dozen small integer keys into a BTreeMap costs no
        // hashing and fewer allocations than a HashMap, and encodes deterministically.
        .btree_map(".")
        // Malformed requests are INVALID_ARGUMENT, not tonic's INTERNAL (see wire/codec.rs).
        .codec_path("crate::wire::codec::StrictCodec")
        .compile_fds(fds)?;
    Ok(())
}
