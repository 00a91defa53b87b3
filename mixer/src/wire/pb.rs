//! Generated protobuf messages and the tonic client and server, one module per proto package.
//!
//! The protos live in `mixer/proto/` and are compiled by `build.rs` (protox + tonic-prost-build).
//! Well-known types (`google.protobuf.*`) are the `prost_types` ones.

/// Package `istio.*`.
pub mod istio {
    /// Package `istio.mixer.*`.
    pub mod mixer {
        /// Package `istio.mixer.v1`: the Mixer service, its requests and attribute messages.
        #[allow(
            clippy::all,
            clippy::pedantic,
            missing_docs,
            rustdoc::all,
            unreachable_pub,
            unused_qualifications
        )]
        pub mod v1 {
            tonic::include_proto!("istio.mixer.v1");
        }
    }

    /// Package `istio.policy.*`.
    pub mod policy {
        /// Package `istio.policy.v1beta1`: value types and direct HTTP responses.
        #[allow(
            clippy::all,
            clippy::pedantic,
            missing_docs,
            rustdoc::all,
            unreachable_pub,
            unused_qualifications
        )]
        pub mod v1beta1 {
            tonic::include_proto!("istio.policy.v1beta1");
        }
    }
}

/// Package `google.*`.
pub mod google {
    /// Package `google.rpc`: `Status` and `Code`.
    #[allow(
        clippy::all,
        clippy::pedantic,
        missing_docs,
        rustdoc::all,
        unreachable_pub,
        unused_qualifications
    )]
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

/// The encoded `FileDescriptorSet` that gRPC server reflection serves for the Mixer and
/// Envoy services, with every file they import (written by `build.rs`). The OTLP logs
/// service's descriptors come from `opentelemetry-proto`.
pub const REFLECTION_DESCRIPTORS: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/reflection.bin"));

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use prost::Message;

    use super::google::rpc::Status;
    use super::istio::mixer::v1::{
        CheckRequest, CheckResponse, CompressedAttributes, ReferencedAttributes, ReportRequest,
        check_response::PreconditionResult, referenced_attributes::AttributeMatch,
        referenced_attributes::Condition, report_request::RepeatedAttributesSemantics,
    };

    #[test]
    fn service_paths() {
        // The generated server routes on these exact paths; the client sends them.
        let src = include_str!(concat!(env!("OUT_DIR"), "/istio.mixer.v1.rs"));
        assert!(src.contains("\"/istio.mixer.v1.Mixer/Check\""));
        assert!(src.contains("\"/istio.mixer.v1.Mixer/Report\""));
        assert_eq!(
            <super::istio::mixer::v1::mixer_server::MixerServer<Dummy> as tonic::server::NamedService>::NAME,
            "istio.mixer.v1.Mixer"
        );
    }

    struct Dummy;

    #[tonic::async_trait]
    impl super::istio::mixer::v1::mixer_server::Mixer for Dummy {
        async fn check(
            &self,
            _: tonic::Request<CheckRequest>,
        ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("test"))
        }
        async fn report(
            &self,
            _: tonic::Request<ReportRequest>,
        ) -> Result<tonic::Response<super::istio::mixer::v1::ReportResponse>, tonic::Status>
        {
            Err(tonic::Status::unimplemented("test"))
        }
    }

    #[test]
    fn check_request_wire_form() {
        let req = CheckRequest {
            attributes: Some(CompressedAttributes {
                words: vec![b"w".to_vec()],
                // name index 1 (global), value index -1 (words[0]).
                strings: BTreeMap::from([(1, -1)]),
                ..Default::default()
            }),
            global_word_count: 222,
            ..Default::default()
        };
        let bytes = req.encode_to_vec();
        let expected: &[u8] = &[
            0x0a, 0x09, // field 1 (attributes), length-delimited, 9 bytes
            0x0a, 0x01, b'w', // words[0] = "w"
            0x12, 0x04, // field 2 (strings) map entry, 4 bytes
            0x08, 0x02, // key: sint32 1 zig-zags to 2
            0x10, 0x01, // value: sint32 -1 zig-zags to 1
            0x10, 0xde, 0x01, // field 2 (global_word_count) = 222
        ];
        assert_eq!(bytes, expected);
        assert_eq!(CheckRequest::decode(&bytes[..]).unwrap(), req);
    }

    #[test]
    fn referenced_and_reserved_fields() {
        let resp = CheckResponse {
            precondition: Some(PreconditionResult {
                status: Some(Status::default()),
                referenced_attributes: Some(ReferencedAttributes {
                    words: vec![],
                    attribute_matches: vec![AttributeMatch {
                        name: -3,
                        condition: Condition::Absence as i32,
                        regex: String::new(),
                        map_key: 0,
                    }],
                }),
                ..Default::default()
            }),
            quotas: BTreeMap::new(),
        };
        let bytes = resp.encode_to_vec();
        // precondition is field 2 (CheckResponse has no field 1).
        assert_eq!(bytes[0], 0x12);
        // status (field 1, empty) then referenced_attributes as field 5.
        assert_eq!(&bytes[2..4], &[0x0a, 0x00]);
        assert_eq!(bytes[4], 0x2a);
        // the match: name -3 zig-zags to 5, condition ABSENCE = 1.
        assert_eq!(&bytes[6..], &[0x12, 0x04, 0x08, 0x05, 0x10, 0x01]);
        assert_eq!(
            ReportRequest::default().repeated_attributes_semantics(),
            RepeatedAttributesSemantics::DeltaEncoding
        );
    }
}
