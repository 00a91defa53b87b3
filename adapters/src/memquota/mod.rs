//! `memquota`: in-memory quota counters for a single server.

pub mod config;
