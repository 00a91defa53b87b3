//! Subcommands.

pub mod client;
pub mod expr;
pub mod server;
pub mod validate;
