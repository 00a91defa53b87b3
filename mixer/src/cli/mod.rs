//! Subcommands.

pub mod expr;
