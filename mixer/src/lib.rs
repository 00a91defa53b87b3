//! The Mixer server: wire API, attribute decoding, config store, runtime.
