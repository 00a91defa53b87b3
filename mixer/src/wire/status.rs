//! Status mappings shared by the front ends.

use templates::code;

/// The type URL of `istio.policy.v1beta1.DirectHttpResponse` in a `google.rpc.Status`'s
/// details.
pub const DIRECT_HTTP_RESPONSE_TYPE: &str =
    "type.googleapis.com/istio.policy.v1beta1.DirectHttpResponse";

/// `google.rpc.Code` → HTTP status, as Mixer's server mapped it.
pub fn http_status_for(code: i32) -> u32 {
    match code {
        code::OK => 200,
        code::CANCELLED => 408,
        code::INVALID_ARGUMENT | code::OUT_OF_RANGE => 400,
        code::DEADLINE_EXCEEDED => 504,
        code::NOT_FOUND => 404,
        code::ALREADY_EXISTS | code::ABORTED => 409,
        code::PERMISSION_DENIED => 403,
        code::RESOURCE_EXHAUSTED => 429,
        code::FAILED_PRECONDITION => 412,
        code::UNIMPLEMENTED => 501,
        code::UNAVAILABLE => 503,
        code::UNAUTHENTICATED => 401,
        _ => 500,
    }
}

/// `google.rpc.Code` → HTTP status, as Istio's Envoy filter answered a denied request.
/// It differs from [`http_status_for`] (Mixer's server) in two codes: CANCELLED is 499
/// (client closed request), not 408, and FAILED_PRECONDITION is 400, not 412.
pub fn envoy_http_status_for(code: i32) -> u32 {
    match code {
        code::OK => 200,
        code::CANCELLED => 499,
        code::INVALID_ARGUMENT | code::FAILED_PRECONDITION | code::OUT_OF_RANGE => 400,
        code::NOT_FOUND => 404,
        code::ALREADY_EXISTS | code::ABORTED => 409,
        code::PERMISSION_DENIED => 403,
        code::UNAUTHENTICATED => 401,
        code::RESOURCE_EXHAUSTED => 429,
        code::UNIMPLEMENTED => 501,
        code::UNAVAILABLE => 503,
        code::DEADLINE_EXCEEDED => 504,
        _ => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_mapping() {
        assert_eq!(http_status_for(code::PERMISSION_DENIED), 403);
        assert_eq!(http_status_for(code::FAILED_PRECONDITION), 412);
        assert_eq!(http_status_for(code::RESOURCE_EXHAUSTED), 429);
        assert_eq!(http_status_for(99), 500);
    }

    #[test]
    fn envoy_filter_mapping() {
        let expected = [
            (code::OK, 200),
            (code::CANCELLED, 499),
            (code::UNKNOWN, 500),
            (code::INVALID_ARGUMENT, 400),
            (code::DEADLINE_EXCEEDED, 504),
            (code::NOT_FOUND, 404),
            (code::ALREADY_EXISTS, 409),
            (code::PERMISSION_DENIED, 403),
            (code::RESOURCE_EXHAUSTED, 429),
            (code::FAILED_PRECONDITION, 400),
            (code::ABORTED, 409),
            (code::OUT_OF_RANGE, 400),
            (code::UNIMPLEMENTED, 501),
            (code::INTERNAL, 500),
            (code::UNAVAILABLE, 503),
            (code::DATA_LOSS, 500),
            (code::UNAUTHENTICATED, 401),
            (99, 500),
        ];
        for (c, http) in expected {
            assert_eq!(envoy_http_status_for(c), http, "{}", code::name(c));
        }
        // Where the two mappings part.
        assert_eq!(http_status_for(code::CANCELLED), 408);
        assert_eq!(http_status_for(code::FAILED_PRECONDITION), 412);
    }
}
