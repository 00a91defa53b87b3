//! `stdio`: writes log entries and metrics to standard output, standard error or files.

pub mod config;
