//! The state every prometheus handler publishes into, served on one HTTP listener.

/// Metric families of all prometheus handlers, rendered for a scrape.
#[derive(Default)]
pub struct Exporter {
    registry: ::prometheus::Registry,
}

impl Exporter {
    /// The Prometheus text exposition of everything published.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = ::prometheus::TextEncoder::new();
        if ::prometheus::Encoder::encode(&encoder, &self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
