//! Front ends for today's Envoy: its external-service protocols mapped onto the same
//! rules, instances and handlers as the Mixer API.

pub mod attributes;
pub mod authz;
