//! The wire: generated protobuf messages, the strict gRPC codec, and the mappings between
//! the domain's `google.rpc.Code` values and what protocols carry (HTTP statuses, type
//! URLs). A leaf: nothing here knows bags, configuration or the runtime.

pub mod codec;
pub mod pb;
pub mod status;
pub mod view;

/// The `istio.mixer.v1.Mixer` server the API port runs: Checks and Reports arrive as
/// [`view::CheckView`]s and [`view::ReportView`]s (see `build.rs`).
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    rustdoc::all,
    unreachable_pub,
    unused_qualifications
)]
pub mod service {
    include!(concat!(env!("OUT_DIR"), "/istio.mixer.v1.Mixer.rs"));
}
