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
}
