//! Go `time.Parse(time.RFC3339, …)` and `Format(time.RFC3339Nano)`.
//!
//! Mixer's `timestamp()` accepts exactly what Go's RFC 3339 parser accepts,
//! keeps the zone offset the text was written with, and compares instants.
//! Calendar arithmetic is done here (proleptic Gregorian, days since the Unix
//! epoch) so no date crate is needed and the strictness stays Go's.

use std::cmp::Ordering;
use std::fmt::Write as _;

const NANOS_PER_SEC: u32 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// An instant plus the zone offset it was written with.
///
/// `secs`/`nanos` are the instant (seconds since the Unix epoch in UTC and a
/// nanosecond part in `0..1_000_000_000`); `offset_secs` is the offset east of
/// UTC that the timestamp is displayed in (0 for `Z`). The derived equality
/// compares all three fields, which is closer to Go's `==` on `time.Time`
/// (zone-sensitive) than to `Time.Equal`; use [`Timestamp::same_instant`] for
/// the latter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z.
    pub secs: i64,
    /// Nanoseconds within the second, `0..1_000_000_000`.
    pub nanos: u32,
    /// Zone offset east of UTC, in seconds.
    pub offset_secs: i32,
}

impl Timestamp {
    /// Orders two timestamps by instant only; zones are ignored.
    pub fn instant_cmp(&self, other: &Timestamp) -> Ordering {
        (self.secs, self.nanos).cmp(&(other.secs, other.nanos))
    }

    /// Go's `Time.Equal`: the same instant, whatever the zones.
    pub fn same_instant(&self, o: &Timestamp) -> bool {
        self.instant_cmp(o) == Ordering::Equal
    }

    /// A UTC timestamp from Unix seconds and nanoseconds. Nanoseconds of a
    /// second or more are carried into the seconds, like Go's `time.Unix`.
    pub fn from_unix(secs: i64, nanos: u32) -> Timestamp {
        Timestamp {
            secs: secs + i64::from(nanos / NANOS_PER_SEC),
            nanos: nanos % NANOS_PER_SEC,
            offset_secs: 0,
        }
    }

    /// Nanoseconds since the Unix epoch; `i128` so every `i64` second fits.
    pub fn to_unix_nanos(&self) -> i128 {
        i128::from(self.secs) * i128::from(NANOS_PER_SEC) + i128::from(self.nanos)
    }
}

/// Parses `s` like Go 1.19's `time.Parse(time.RFC3339, s)` (the Go version
/// Mixer's observed behaviour comes from).
///
/// Accepted: `YYYY-MM-DDTHH:MM:SS[.frac]` followed by `Z` or `±hh:mm`, with
/// uppercase `T` and `Z` only, and validated date and time ranges (days of
/// the month including leap years; second 60 is rejected). Go 1.19 runs the
/// RFC 3339 layout through its generic layout engine, whose quirks are kept
/// on purpose:
///
/// * the hour may be a single digit (`T1:04:05Z`);
/// * the fraction may start with `.` or `,`, may have any number of digits,
///   and only the first nine count (the rest are truncated);
/// * a missing seconds field is taken as `00` when a fraction follows
///   (`T15:04:.5Z`), because Go's fraction handling overwrites the error;
/// * the zone's hour and minute are two characters each read with Go's
///   `atoi`, which allows a sign (`+-7:30` is `+07:30` negated twice) and
///   has no range check (`+25:00`, `+01:80`). Go 1.20 added range checks
///   (`hh <= 24`, `mm <= 60`) and a strict fast path.
pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    let mut p = 0usize;

    let year = fixed_digits(b, &mut p, 4)? as i64;
    expect(b, &mut p, b'-')?;
    let month = fixed_digits(b, &mut p, 2)?;
    if !(1..=12).contains(&month) {
        return None;
    }
    expect(b, &mut p, b'-')?;
    let day = fixed_digits(b, &mut p, 2)?;
    expect(b, &mut p, b'T')?;
    // Go's layout token "15" reads one or two digits.
    let hour = if b.get(p + 1).is_some_and(u8::is_ascii_digit) {
        fixed_digits(b, &mut p, 2)?
    } else {
        fixed_digits(b, &mut p, 1)?
    };
    if hour >= 24 {
        return None;
    }
    expect(b, &mut p, b':')?;
    let minute = fixed_digits(b, &mut p, 2)?;
    if minute >= 60 {
        return None;
    }
    expect(b, &mut p, b':')?;
    let starts_fraction =
        |p: usize| b.len() >= p + 2 && (b[p] == b'.' || b[p] == b',') && b[p + 1].is_ascii_digit();
    let second = match fixed_digits(b, &mut p, 2) {
        Some(s) if s < 60 => s,
        Some(_) => return None,
        // Go 1.19 quirk: see the function documentation.
        None if starts_fraction(p) => 0,
        None => return None,
    };

    let mut nanos = 0u32;
    if starts_fraction(p) {
        p += 1;
        let start = p;
        while p < b.len() && b[p].is_ascii_digit() {
            p += 1;
        }
        // Only nanosecond precision is kept; extra digits are dropped.
        let digits = &b[start..p.min(start + 9)];
        let mut v = 0u32;
        for d in digits {
            v = v * 10 + u32::from(d - b'0');
        }
        nanos = v * 10u32.pow(9 - digits.len() as u32);
    }

    let offset_secs: i32 = if b.get(p) == Some(&b'Z') {
        p += 1;
        0
    } else {
        if b.len() < p + 6 || b[p + 3] != b':' {
            return None;
        }
        let sign = match b[p] {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let hh = go_atoi2(&b[p + 1..p + 3])?;
        let mm = go_atoi2(&b[p + 4..p + 6])?;
        p += 6;
        sign * (hh * 3600 + mm * 60)
    };
    if p != b.len() {
        return None;
    }
    if day < 1 || day > days_in_month(year, month) {
        return None;
    }

    let days = days_from_civil(year, month, day);
    let local = days * SECS_PER_DAY + i64::from(hour * 3600 + minute * 60 + second);
    Some(Timestamp {
        secs: local - i64::from(offset_secs),
        nanos,
        offset_secs,
    })
}

/// Reads exactly `n` ASCII digits at `*p`, advancing it.
fn fixed_digits(b: &[u8], p: &mut usize, n: usize) -> Option<u32> {
    let digits = b.get(*p..*p + n)?;
    let mut v = 0u32;
    for d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(d - b'0');
    }
    *p += n;
    Some(v)
}

/// Go's `atoi` on a two-byte zone field: two digits, or a sign and a digit.
fn go_atoi2(field: &[u8]) -> Option<i32> {
    match field {
        [a, b] if a.is_ascii_digit() && b.is_ascii_digit() => {
            Some(i32::from(a - b'0') * 10 + i32::from(b - b'0'))
        }
        [b'+', d] if d.is_ascii_digit() => Some(i32::from(d - b'0')),
        [b'-', d] if d.is_ascii_digit() => Some(-i32::from(d - b'0')),
        _ => None,
    }
}

/// Consumes the literal byte `c` at `*p`.
fn expect(b: &[u8], p: &mut usize, c: u8) -> Option<()> {
    if b.get(*p) == Some(&c) {
        *p += 1;
        Some(())
    } else {
        None
    }
}

/// Go's `t.UTC().Format(time.RFC3339Nano)`, e.g. `2015-01-02T15:04:35.5Z`.
pub fn format_rfc3339_nano_utc(t: &Timestamp) -> String {
    format_with_offset(t, 0)
}

/// Go's `t.Format(time.RFC3339Nano)` in the timestamp's own offset, e.g.
/// `2015-01-02T16:04:35+01:00` (`Z` when the offset is zero).
pub fn format_rfc3339_nano(t: &Timestamp) -> String {
    format_with_offset(t, t.offset_secs)
}

/// Formats the instant shifted into `offset_secs`, RFC3339Nano style:
/// fraction trimmed of trailing zeros and omitted when zero.
fn format_with_offset(t: &Timestamp, offset_secs: i32) -> String {
    let mut out = String::with_capacity(35);
    write_date_time(&mut out, t, offset_secs);
    if t.nanos != 0 {
        let frac = format!("{:09}", t.nanos);
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    if offset_secs == 0 {
        out.push('Z');
    } else {
        // Go converts to whole minutes with truncating division, so a
        // sub-minute offset prints as its minutes part only.
        let mut zone = offset_secs / 60;
        if zone < 0 {
            out.push('-');
            zone = -zone;
        } else {
            out.push('+');
        }
        let _ = write!(out, "{:02}:{:02}", zone / 60, zone % 60);
    }
    out
}

/// Appends `YYYY-MM-DDTHH:MM:SS` of the instant shifted into `offset_secs`, without
/// fraction or zone: the part of RFC 3339 text shared by callers with their own
/// fraction rules (the stdio access log's fixed six digits). No intermediate `String`.
pub fn write_date_time(out: &mut String, t: &Timestamp, offset_secs: i32) {
    let local = t.secs + i64::from(offset_secs);
    let days = local.div_euclid(SECS_PER_DAY);
    // In 0..86_400, so it fits in u64 without loss.
    let tod = local.rem_euclid(SECS_PER_DAY).unsigned_abs();
    let (year, month, day) = civil_from_days(days);
    // Go pads the year to four digits and puts a sign in front of
    // negative years ("-0001").
    if year < 0 {
        out.push('-');
    }
    super::push_padded(out, year.unsigned_abs(), 4);
    out.push('-');
    super::push_padded(out, u64::from(month), 2);
    out.push('-');
    super::push_padded(out, u64::from(day), 2);
    out.push('T');
    super::push_padded(out, tod / 3600, 2);
    out.push(':');
    super::push_padded(out, tod % 3600 / 60, 2);
    out.push(':');
    super::push_padded(out, tod % 60, 2);
}

/// Whether `year` is a Gregorian leap year.
fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// Number of days in `month` (1-12) of `year`.
fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
///
/// Counts in 400-year eras starting on March 1st, so that the leap day is the
/// last day of the counting year and every era has the same length.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // 0..=399
    let m = i64::from(month);
    let mp = (m + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1; // 0..=365
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // 0..=146096
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`]: (year, month, day) of a day number.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // 0..=365
    let mp = (5 * doy + 2) / 153; // March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        parse_rfc3339(s).unwrap_or_else(|| panic!("{s:?} should parse"))
    }

    #[test]
    fn parses_conformance_values() {
        // 2015-01-02T15:04:35Z, as Go's Unix() reports it.
        assert_eq!(
            ts("2015-01-02T15:04:35Z"),
            Timestamp::from_unix(1_420_211_075, 0)
        );
        assert_eq!(ts("2015-01-02T15:04:34Z").secs, 1_420_211_074);
        assert_eq!(ts("1977-02-04T12:00:00Z").secs, 223_905_600);
        assert_eq!(ts("1999-12-31T23:59:00Z").secs, 946_684_740);
        assert_eq!(ts("1970-01-01T00:00:00Z").secs, 0);
        assert_eq!(ts("2018-11-11T15:04:35Z").secs, 1_541_948_675);
        assert!(
            ts("2015-01-02T15:04:35Z")
                .instant_cmp(&ts("2015-01-02T15:04:36Z"))
                .is_lt()
        );
        assert!(!ts("2015-01-02T15:04:35Z").same_instant(&ts("2018-11-11T15:04:35Z")));
        assert_eq!(parse_rfc3339("242233"), None);
    }

    #[test]
    fn keeps_offsets_and_fractions() {
        let t = ts("2015-01-02T16:04:35.5+01:00");
        assert_eq!(t.offset_secs, 3600);
        assert_eq!(t.nanos, 500_000_000);
        assert!(t.same_instant(&ts("2015-01-02T15:04:35.5Z")));
        assert_ne!(t, ts("2015-01-02T15:04:35.5Z"));
        let t = ts("2015-01-02T10:34:35-04:30");
        assert_eq!(t.offset_secs, -(4 * 3600 + 1800));
        assert!(t.same_instant(&ts("2015-01-02T15:04:35Z")));
        assert_eq!(ts("2015-01-02T15:04:35.123456789Z").nanos, 123_456_789);
        assert_eq!(ts("2015-01-02T15:04:35.000000001Z").nanos, 1);
        // Go keeps nanosecond precision and truncates further digits.
        assert_eq!(ts("2015-01-02T15:04:35.1234567891Z").nanos, 123_456_789);
        // Go >= 1.17 also accepts a comma before the fraction.
        assert_eq!(ts("2015-01-02T15:04:35,25Z").nanos, 250_000_000);
        // Go's layout hour "15" also reads a single digit.
        assert_eq!(ts("2015-01-02T5:04:35Z"), ts("2015-01-02T05:04:35Z"));
        // Go 1.19 reads zone fields with atoi and checks no ranges.
        assert_eq!(ts("2015-01-02T00:00:00+24:00").offset_secs, 86_400);
        assert_eq!(ts("2015-01-02T15:04:35+25:00").offset_secs, 90_000);
        assert_eq!(ts("2015-01-02T15:04:35+01:80").offset_secs, 8_400);
        assert_eq!(ts("2015-01-02T15:04:35+01:-0").offset_secs, 3_600);
        assert_eq!(ts("2015-01-02T15:04:35--7:30").offset_secs, 23_400);
        assert_eq!(ts("2015-01-02T15:04:35-+7:00").offset_secs, -25_200);
        // ...and lets a fraction stand in for missing seconds.
        assert_eq!(ts("2015-01-02T15:04:.5Z"), ts("2015-01-02T15:04:00.5Z"));
        assert_eq!(ts("2015-01-02T5:04:,5Z"), ts("2015-01-02T05:04:00.5Z"));
    }

    #[test]
    fn rejects_like_go() {
        for s in [
            "",
            "2015-01-02",
            "2015-01-02T15:04:35",
            "2015-01-02T15:04:35z",
            "2015-01-02t15:04:35Z",
            "2015-01-02 15:04:35Z",
            "2015-01-02T15:04Z",
            "2015-01-02T15:04:35ZZ",
            "2015-01-02T15:04:35Z ",
            " 2015-01-02T15:04:35Z",
            "2015-01-02T15:04:35+0100",
            "2015-01-02T15:04:35+01",
            "2015-01-02T15:04:35 +01:00",
            "2015-01-02T15:04:35.Z",
            "2015-01-02T15:04:35.+01:00",
            "2015-13-02T15:04:35Z",
            "2015-00-02T15:04:35Z",
            "2015-01-00T15:04:35Z",
            "2015-01-32T15:04:35Z",
            "2015-02-29T15:04:35Z",
            "1900-02-29T15:04:35Z",
            "2015-04-31T15:04:35Z",
            "2015-01-02T24:00:00Z",
            "2015-01-02T23:60:00Z",
            "2015-01-02T23:59:60Z",
            "2015-01-02T15:04:35+1+:00",
            "2015-01-02T15:04:35+01:0-",
            "2015-01-02T15:04:35+-+:00",
            "2015-01-02T15:04:5.5Z",
            "2015-01-02T15:04:.Z",
            "2015-01-02T15:04:35*01:00",
            "2015-01-02T15:04:35+1:000",
            "15-01-02T15:04:35Z",
            "+015-01-02T15:04:35Z",
            "2015-1-02T15:04:35Z",
            "2015-01-2T15:04:35Z",
            "2015-01-02T15:4:35Z",
            "2015-01-02T15:04:5Z",
            "2015-01-02T123:04:35Z",
            "2015/01/02T15:04:35Z",
            "２０１５-01-02T15:04:35Z",
        ] {
            assert_eq!(parse_rfc3339(s), None, "{s:?} must not parse");
        }
    }

    #[test]
    fn leap_days() {
        assert!(parse_rfc3339("2016-02-29T00:00:00Z").is_some());
        assert!(parse_rfc3339("2000-02-29T00:00:00Z").is_some());
        assert!(parse_rfc3339("0000-02-29T00:00:00Z").is_some());
        assert!(parse_rfc3339("2100-02-29T00:00:00Z").is_none());
    }

    #[test]
    fn formats_like_go() {
        let t = ts("2015-01-02T15:04:35Z");
        assert_eq!(format_rfc3339_nano_utc(&t), "2015-01-02T15:04:35Z");
        assert_eq!(format_rfc3339_nano(&t), "2015-01-02T15:04:35Z");
        let t = ts("2015-01-02T16:04:35.500+01:00");
        assert_eq!(format_rfc3339_nano_utc(&t), "2015-01-02T15:04:35.5Z");
        assert_eq!(format_rfc3339_nano(&t), "2015-01-02T16:04:35.5+01:00");
        let t = ts("2015-01-02T00:04:35.000000120-04:30");
        assert_eq!(format_rfc3339_nano_utc(&t), "2015-01-02T04:34:35.00000012Z");
        assert_eq!(
            format_rfc3339_nano(&t),
            "2015-01-02T00:04:35.00000012-04:30"
        );
        // Offset "+00:00" is displayed as "Z", as Go does.
        assert_eq!(
            format_rfc3339_nano(&ts("2015-01-02T15:04:35+00:00")),
            "2015-01-02T15:04:35Z"
        );
        assert_eq!(
            format_rfc3339_nano_utc(&Timestamp::from_unix(0, 0)),
            "1970-01-01T00:00:00Z"
        );
        // Before the epoch and outside four-digit years.
        assert_eq!(
            format_rfc3339_nano_utc(&Timestamp::from_unix(-1, 999_999_999)),
            "1969-12-31T23:59:59.999999999Z"
        );
        assert_eq!(
            format_rfc3339_nano_utc(&ts("0000-01-01T00:00:00+01:00")),
            "-0001-12-31T23:00:00Z"
        );
        assert_eq!(
            format_rfc3339_nano_utc(&ts("9999-12-31T23:00:00-01:00")),
            "10000-01-01T00:00:00Z"
        );
        // A sub-minute offset (not producible by the parser) prints minutes.
        let odd = Timestamp {
            secs: 0,
            nanos: 0,
            offset_secs: -90,
        };
        assert_eq!(format_rfc3339_nano(&odd), "1969-12-31T23:58:30-00:01");
    }

    #[test]
    fn unix_conversions() {
        let t = Timestamp::from_unix(5, 1_500_000_000);
        assert_eq!((t.secs, t.nanos), (6, 500_000_000));
        assert_eq!(t.to_unix_nanos(), 6_500_000_000);
        assert_eq!(Timestamp::from_unix(-1, 0).to_unix_nanos(), -1_000_000_000);
        assert_eq!(
            Timestamp::from_unix(i64::MIN, 0).to_unix_nanos(),
            i128::from(i64::MIN) * 1_000_000_000
        );
    }

    #[test]
    fn civil_round_trip() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert!((1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m));
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}
