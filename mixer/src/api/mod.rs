//! Front ends: one module per protocol, translating its wire messages into bags and the
//! runtime's answers back into its wire messages. No policy lives here.

mod check_response;
pub mod envoy;
pub mod introspection;
pub mod mixer;
pub mod shed;
