//! The wire: generated protobuf messages, the strict gRPC codec, and the mappings between
//! the domain's `google.rpc.Code` values and what protocols carry (HTTP statuses, type
//! URLs). A leaf: nothing here knows bags, configuration or the runtime.

pub mod codec;
pub mod pb;
pub mod status;
