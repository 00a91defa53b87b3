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

/// Appends `v` in decimal, zero-padded to at least `width` digits (Go's `%0Nd` of an
/// unsigned value; `width` at most 20), without going through `fmt`, which costs several
/// times more per number: the write-into-buffer formatters (`write_date_time`, `write_ip`,
/// `write_duration`) and the access log run it once per logged value.
pub fn push_padded(out: &mut String, mut v: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        // A remainder below 10 fits in a u8.
        digits[start] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let start = start.min(digits.len().saturating_sub(width));
    for &d in &digits[start..] {
        out.push(char::from(d));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn push_padded_pads_and_never_truncates() {
        let text = |v, w| {
            let mut s = String::new();
            super::push_padded(&mut s, v, w);
            s
        };
        assert_eq!(text(0, 0), "0");
        assert_eq!(text(7, 2), "07");
        assert_eq!(text(12_345, 4), "12345");
        assert_eq!(text(42, 6), "000042");
        assert_eq!(text(u64::MAX, 1), "18446744073709551615");
    }
}
