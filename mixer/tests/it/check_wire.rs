//! A Check read straight from its bytes (`wire::view::CheckView`), through a real server:
//! a message prost would merge or overwrite means the same, and malformed input or input
//! over a limit is refused with the status and message it always had.

use std::collections::BTreeMap;

use mixer::attrs::{AttributeEncoder, DecodeLimits, GLOBAL_WORD_COUNT, global_word_index};
use mixer::runtime::PolicyErrorMode;
use mixer::server::start;
use mixer::wire::pb::istio::mixer::v1::{
    CheckRequest, CheckResponse, CompressedAttributes, StringMap, check_request,
};
use prost::Message;
use tonic::Code;

use crate::common::raw::unary;
use crate::common::*;

const CHECK: &str = "/istio.mixer.v1.Mixer/Check";

/// Denies workloads labelled `app=untrusted`; charges `userquota`, 5 per hour.
const POLICY: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: denyall, namespace: istio-system}
spec:
  compiledAdapter: denier
  params:
    status: {code: 7, message: Not allowed}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: denyrequest, namespace: istio-system}
spec:
  compiledTemplate: checknothing
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: deny-untrusted, namespace: istio-system}
spec:
  match: source.labels["app"] == "untrusted"
  actions:
  - handler: denyall
    instances: [denyrequest]
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: userquota, namespace: istio-system}
spec:
  compiledTemplate: quota
  params:
    dimensions:
      user: request.headers["x-user"] | "anonymous"
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: quotahandler, namespace: istio-system}
spec:
  compiledAdapter: memquota
  params:
    minDeduplicationDuration: 1h
    quotas:
    - name: userquota.instance.istio-system
      maxAmount: 5
      validDuration: 1h
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: charge-users, namespace: istio-system}
spec:
  actions:
  - handler: quotahandler
    instances: [userquota]
"#;

fn global(word: &str) -> i32 {
    global_word_index(word).expect("a global word") as i32
}

fn len_field(field: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_key(field, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(body.len() as u64, &mut out);
    out.extend_from_slice(body);
    out
}

/// A `quotas` entry asking `amount` of `name`.
fn quota_entry(name: &str, amount: i64) -> Vec<u8> {
    let params = check_request::QuotaParams {
        amount,
        best_effort: false,
    };
    len_field(
        4,
        &[
            len_field(1, name.as_bytes()),
            len_field(2, &params.encode_to_vec()),
        ]
        .concat(),
    )
}

fn granted(response: &[u8], quota: &str) -> i64 {
    let r = CheckResponse::decode(response).expect("a CheckResponse");
    r.quotas
        .get(quota)
        .expect("an answer for the quota")
        .granted_amount
}

/// What prost says of `bytes` as a CheckRequest: the server's message must carry it.
fn prost_error(bytes: &[u8]) -> String {
    CheckRequest::decode(bytes).unwrap_err().to_string()
}

#[tokio::test]
async fn checks_read_from_bytes_mean_what_prost_makes_of_them() {
    let dir = config_dir(&[("policy.yaml", POLICY)]);
    let server = start_server(dir.path(), PolicyErrorMode::Mixer).await;
    let at = server.api_address;

    // The same quota named twice: the last entry is the one asked (prost's map).
    let user = |name: &str| {
        let attrs = [("request.headers".to_owned(), map(&[("x-user", name)]))];
        let mut enc = AttributeEncoder::new(GLOBAL_WORD_COUNT as u32);
        let mut compressed = enc.encode(&attrs);
        compressed.words = enc.into_words();
        len_field(1, &compressed.encode_to_vec())
    };
    let gwc = CheckRequest {
        global_word_count: GLOBAL_WORD_COUNT as u32,
        ..Default::default()
    }
    .encode_to_vec();
    let twice = [
        user("alice"),
        gwc.clone(),
        len_field(3, b"dedup-1"),
        quota_entry("userquota", 4),
        quota_entry("userquota", 2),
    ]
    .concat();
    let response = unary(at, CHECK, twice).await.expect("Check answers");
    assert_eq!(granted(&response, "userquota"), 2);
    // Only 2 of alice's 5 were taken.
    let rest = [
        user("alice"),
        gwc.clone(),
        len_field(3, b"dedup-2"),
        quota_entry("userquota", 3),
    ]
    .concat();
    let response = unary(at, CHECK, rest).await.expect("Check answers");
    assert_eq!(granted(&response, "userquota"), 3);

    // `attributes` in two parts: prost merges them, so the label in the first part and
    // the word it names are one request's.
    let labels = CompressedAttributes {
        words: vec![b"untrusted".to_vec(), b"app".to_vec()],
        string_maps: BTreeMap::from([(
            global("source.labels"),
            StringMap {
                entries: BTreeMap::from([(-2, -1)]),
            },
        )]),
        ..Default::default()
    };
    let protocol = CompressedAttributes {
        strings: BTreeMap::from([(global("context.protocol"), global("http"))]),
        ..Default::default()
    };
    let split = [
        len_field(1, &labels.encode_to_vec()),
        gwc.clone(),
        len_field(1, &protocol.encode_to_vec()),
    ]
    .concat();
    let response = unary(at, CHECK, split).await.expect("Check answers");
    let r = CheckResponse::decode(&response[..]).unwrap();
    assert_eq!(status_of(&r).0, 7, "{r:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn malformed_checks_are_refused_as_before() {
    let dir = config_dir(&[("policy.yaml", POLICY)]);
    let mut options = loopback_options(dir.path(), PolicyErrorMode::Mixer);
    options.decode_limits = DecodeLimits {
        max_attributes_per_set: 4,
        max_string_map_entries: 2,
        ..DecodeLimits::default()
    };
    let server = start(options).await.expect("server starts");
    let at = server.api_address;

    // Malformed protobuf: INVALID_ARGUMENT with prost's own description.
    let entry = len_field(2, &[0x08, 0x02, 0x10, 0x01]);
    for bytes in [
        // A length past the end of the message.
        len_field(1, &entry)[..5].to_vec(),
        // `global_word_count` as a length-delimited field.
        len_field(2, b"x"),
        // A deduplication id that is not UTF-8.
        len_field(3, &[b'i', b'd', 0xff]),
        // A quota name that is not UTF-8.
        len_field(4, &len_field(1, &[0xc3, 0x28])),
        // A string value given as a fixed64.
        len_field(
            1,
            &len_field(2, &[0x08, 0x02, 0x11, 0, 0, 0, 0, 0, 0, 0, 0]),
        ),
    ] {
        let err = unary(at, CHECK, bytes.clone()).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bytes:?}: {err:?}");
        assert_eq!(
            err.message(),
            format!(
                "malformed protobuf message: failed to decode Protobuf message: {}",
                prost_error(&bytes)
            )
        );
    }

    // Indexes that resolve to nothing: INVALID_ARGUMENT naming the index.
    let bad_word = CompressedAttributes {
        strings: BTreeMap::from([(global("request.path"), -3)]),
        words: vec![b"w".to_vec()],
        ..Default::default()
    };
    let err = unary(at, CHECK, len_field(1, &bad_word.encode_to_vec()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().starts_with("invalid attributes: ") && err.message().contains("-3"),
        "{}",
        err.message()
    );

    // Over a limit: RESOURCE_EXHAUSTED naming its flag.
    let many = CompressedAttributes {
        int64s: (0..5).map(|i| (global("request.size") + i, 1)).collect(),
        ..Default::default()
    };
    let headers = CompressedAttributes {
        string_maps: BTreeMap::from([(
            global("request.headers"),
            StringMap {
                entries: (0..3)
                    .map(|i| (global(":path") + i, global("http")))
                    .collect(),
            },
        )]),
        ..Default::default()
    };
    for (set, flag) in [
        (many, "--max-attributes-per-set"),
        (headers, "--max-string-map-entries"),
    ] {
        let err = unary(at, CHECK, len_field(1, &set.encode_to_vec()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
        assert!(err.message().contains(flag), "{}", err.message());
    }

    // A negative quota amount, as before.
    let err = unary(at, CHECK, quota_entry("userquota", -1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("is negative"), "{}", err.message());

    // The server keeps serving.
    let mut c = client(&server).await;
    let r = check(&mut c, &[("source.labels", map(&[("app", "untrusted")]))])
        .await
        .unwrap();
    assert_eq!(status_of(&r).0, 7);
    server.shutdown().await.unwrap();
}
