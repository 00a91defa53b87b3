//! Configuration: reading the store, resolving and compiling resources into a snapshot.

pub mod compile;
pub mod store;
pub mod watch;
