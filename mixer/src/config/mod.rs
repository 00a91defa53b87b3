//! Configuration: reading the store, compiling resources into an immutable [`Snapshot`],
//! and watching for changes.

pub mod compile;
pub mod diagnostics;
pub mod kubernetes;
pub mod snapshot;
pub(crate) mod spec;
pub mod store;
pub mod watch;

pub use diagnostics::{Diagnostic, Severity};
pub use snapshot::Snapshot;
