//! `prometheus`: publishes metric instances for Prometheus to scrape.

pub mod config;
pub mod exporter;

pub use exporter::Exporter;
pub mod pbjson;

#[cfg(test)]
mod testdata;
