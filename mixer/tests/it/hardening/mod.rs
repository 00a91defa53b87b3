//! Hardening: one hostile or broken input — a request, a peer, a file — never costs more than
//! its own answer. Each test drives a real `mixer server` process on loopback, bounded in
//! time, and measures memory from `/proc` where it matters. The table rows they cover are
//! named in each module.

mod config_files;
mod connections;
mod listchecker;
mod quota;
mod regex;
mod reports;
mod shutdown;
mod telemetry;
