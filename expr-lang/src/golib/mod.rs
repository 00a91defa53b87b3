//! Emulations of the Go standard-library behaviour that Mixer's expression
//! language relies on.
//!
//! Mixer is written in Go and its built-in functions (`ip()`, `timestamp()`,
//! `dnsName()`, `email()`, `uri()`) and typed equality rules are thin wrappers
//! around Go packages (`time`, `net`, `net/mail`, `net/url`,
//! `golang.org/x/net/idna`). To be compatible we must accept and reject the
//! same inputs and produce the same texts, so each submodule reimplements the
//! relevant slice of one Go package. Errors are plain `String`s because their
//! text becomes part of user-facing messages.
//!
//! Where a Go version changed behaviour, the submodules follow Go 1.19 with
//! the 2019 `x/net` revision Istio 1.6 pinned: that is the combination the
//! reference behaviour was observed with. Each submodule documents the
//! version-dependent points.

pub mod dns;
pub mod duration;
pub mod mail;
pub mod net;
pub mod time;
pub mod url;

mod goquote;
