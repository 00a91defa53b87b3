//! `listchecker`: checks whether a value is on a list (whitelist or blacklist). The
//! directory is `list`, as in Istio; the adapter name is `listchecker`.

pub mod config;
