//! `prometheus`: publishes metric instances for Prometheus to scrape.

pub mod config;
pub mod pbjson;

#[cfg(test)]
mod testdata;
