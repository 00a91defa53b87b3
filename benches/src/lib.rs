//! Benchmarks live in `benches/`; the load generator arrives with the server.
