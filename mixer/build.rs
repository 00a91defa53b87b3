//! Compiles the Mixer protos with `protox` (pure Rust, no system `protoc`) and generates the
//! prost messages and the tonic client and server for `istio.mixer.v1.Mixer`.
//!
//! It also writes `reflection.bin`, the encoded descriptors that gRPC server reflection
//! serves: the Mixer protos plus the Envoy services' protos (and everything they import),
//! compiled from the `.proto` files the `envoy-types` crate ships beside its generated types,
//! so the descriptors describe exactly the types the server decodes.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;

const PROTO_DIR: &str = "proto";

const PROTOS: &[&str] = &[
    "istio/mixer/v1/mixer.proto",
    "istio/mixer/v1/attributes.proto",
    "istio/policy/v1beta1/value_type.proto",
    "istio/policy/v1beta1/http_response.proto",
    "google/rpc/status.proto",
    "google/rpc/code.proto",
];

/// The Envoy services the API port serves; their imports come along.
const ENVOY_SERVICE_PROTOS: &[&str] = &[
    "envoy/service/auth/v3/external_auth.proto",
    "envoy/service/ratelimit/v3/rls.proto",
    "envoy/service/accesslog/v3/als.proto",
];

/// The directories under `envoy-types/proto` that the Envoy service protos import from.
const ENVOY_INCLUDE_DIRS: &[&str] = &[
    "data-plane-api",
    "xds",
    "protoc-gen-validate",
    "googleapis",
    "cel-spec",
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
    compile_view_server();
    write_reflection_descriptors()
}

/// The server the API port runs for `istio.mixer.v1.Mixer`: the generated one above takes
/// owned prost messages, this one takes a Check or a Report as a view of its bytes
/// (`wire::view::CheckView`, `wire::view::ReportView`), so attribute sets are decoded
/// straight into bags, and answers a Check with the response already encoded
/// (`wire::codec::Encoded`).
fn compile_view_server() {
    use tonic_prost_build::manual::{Builder, Method, Service};
    let method = |name: &str, route: &str, input: &str, output: &str| {
        Method::builder()
            .name(name)
            .route_name(route)
            .input_type(input)
            .output_type(output)
            .codec_path("crate::wire::codec::ViewCodec")
            .build()
    };
    let pb = "crate::wire::pb::istio::mixer::v1";
    let service = Service::builder()
        .name("Mixer")
        .package("istio.mixer.v1")
        .method(method(
            "check",
            "Check",
            "crate::wire::view::CheckView",
            "crate::wire::codec::Encoded",
        ))
        .method(method(
            "report",
            "Report",
            "crate::wire::view::ReportView",
            &format!("{pb}::ReportResponse"),
        ))
        .build();
    Builder::new()
        .build_client(false)
        .build_transport(false)
        .compile(&[service]);
}

/// Compiles the Mixer and Envoy service protos into one descriptor set (a file imported by
/// both, like `google/rpc/status.proto`, appears once: the Mixer copy comes first) and
/// writes it to `$OUT_DIR/reflection.bin`.
fn write_reflection_descriptors() -> Result<(), Box<dyn Error>> {
    let envoy_protos = envoy_types_proto_dir()?;
    let mut includes = vec![PathBuf::from(PROTO_DIR)];
    includes.extend(ENVOY_INCLUDE_DIRS.iter().map(|dir| envoy_protos.join(dir)));
    let files = PROTOS.iter().chain(ENVOY_SERVICE_PROTOS);
    let mut compiler = protox::Compiler::new(includes)?;
    compiler.include_imports(true).include_source_info(false);
    compiler.open_files(files)?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("reflection.bin");
    std::fs::write(out, compiler.encode_file_descriptor_set())?;
    Ok(())
}

/// Where the `envoy-types` package in this build keeps its `.proto` files, asked of Cargo
/// itself so that registry, vendored and git sources all work.
fn envoy_types_proto_dir() -> Result<PathBuf, Box<dyn Error>> {
    let cargo = std::env::var("CARGO")?;
    let manifest = Path::new(&std::env::var("CARGO_MANIFEST_DIR")?).join("Cargo.toml");
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--locked"])
        .arg("--manifest-path")
        .arg(&manifest)
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let manifest_path = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|package| package["name"] == "envoy-types")
        .and_then(|package| package["manifest_path"].as_str())
        .ok_or("cargo metadata lists no envoy-types package")?;
    let dir = Path::new(manifest_path)
        .parent()
        .ok_or("envoy-types' manifest has no directory")?
        .join("proto");
    println!("cargo:rerun-if-changed={}", dir.display());
    Ok(dir)
}
