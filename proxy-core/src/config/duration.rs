//! Go `time.Duration` strings, as `metav1.Duration` writes them in the
//! configuration (`"30s"`, `"1m0s"`, `"24h0m0s"`, `"250ms"`, `"0s"`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const NANOSECOND: u64 = 1;
const MICROSECOND: u64 = 1_000 * NANOSECOND;
const MILLISECOND: u64 = 1_000 * MICROSECOND;
const SECOND: u64 = 1_000 * MILLISECOND;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;
/// `1 << 63`: one more than the largest positive duration, the magnitude of
/// the most negative one.
const LIMIT: u64 = 1 << 63;

/// A signed span of time with nanosecond precision, written like Go's
/// `time.Duration` (upstream's `metav1.Duration`).
///
/// Parsing accepts what Go's `time.ParseDuration` accepts: an optional sign,
/// then one or more decimal numbers with a unit (`ns`, `us`/`µs`/`μs`, `ms`,
/// `s`, `m`, `h`), e.g. `1h30m`, `1.5s`, `-250ms`; the lone `0` needs no unit.
/// Display (and serialization) follows Go's `Duration.String()`: `1h0m0s`,
/// `15m0s`, `1.5s`, `250ms`, `0s`.
///
/// Durations can be negative, as in Go; validation rejects negative values
/// where upstream does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(i64);

impl Duration {
    /// The zero duration (`0s`).
    pub const ZERO: Duration = Duration(0);

    /// A duration of `nanos` nanoseconds.
    pub const fn from_nanos(nanos: i64) -> Self {
        Duration(nanos)
    }

    /// A duration of `millis` milliseconds (saturating).
    pub const fn from_millis(millis: i64) -> Self {
        Duration(millis.saturating_mul(MILLISECOND as i64))
    }

    /// A duration of `secs` seconds (saturating).
    pub const fn from_secs(secs: i64) -> Self {
        Duration(secs.saturating_mul(SECOND as i64))
    }

    /// A duration of `mins` minutes (saturating).
    pub const fn from_mins(mins: i64) -> Self {
        Duration(mins.saturating_mul(MINUTE as i64))
    }

    /// A duration of `hours` hours (saturating).
    pub const fn from_hours(hours: i64) -> Self {
        Duration(hours.saturating_mul(HOUR as i64))
    }

    /// The length in nanoseconds.
    pub const fn as_nanos(self) -> i64 {
        self.0
    }

    /// Whether the duration is zero.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Whether the duration is negative.
    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// The duration as a [`std::time::Duration`]; negative durations become zero.
    pub const fn to_std(self) -> std::time::Duration {
        if self.0 <= 0 {
            std::time::Duration::ZERO
        } else {
            std::time::Duration::from_nanos(self.0 as u64)
        }
    }
}

impl From<std::time::Duration> for Duration {
    /// Converts, saturating at the largest Go duration (about 292 years).
    fn from(d: std::time::Duration) -> Self {
        Duration(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }
}

/// Why a duration string is not valid, with the input, in Go's wording.
fn invalid(what: &str, orig: &str) -> String {
    format!("{what} \"{orig}\"")
}

/// Parses a run of leading decimal digits. Returns the value, the rest of
/// the input and whether it overflowed `LIMIT`.
fn leading_int(s: &str) -> Result<(u64, &str), ()> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let mut x: u64 = 0;
    for b in s[..end].bytes() {
        if x > LIMIT / 10 {
            return Err(());
        }
        x = x * 10 + u64::from(b - b'0');
        if x > LIMIT {
            return Err(());
        }
    }
    Ok((x, &s[end..]))
}

/// Parses the digits after a decimal point. Returns the value, the scale
/// (10^digits kept) and the rest; digits beyond u64 precision are dropped,
/// as in Go.
fn leading_fraction(s: &str) -> (u64, f64, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let mut x: u64 = 0;
    let mut scale = 1.0_f64;
    let mut overflow = false;
    for b in s[..end].bytes() {
        if overflow {
            continue;
        }
        if x > (i64::MAX as u64) / 10 {
            overflow = true;
            continue;
        }
        let y = x * 10 + u64::from(b - b'0');
        if y > LIMIT {
            overflow = true;
            continue;
        }
        x = y;
        scale *= 10.0;
    }
    (x, scale, &s[end..])
}

fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => NANOSECOND,
        "us" | "\u{00b5}s" | "\u{03bc}s" => MICROSECOND,
        "ms" => MILLISECOND,
        "s" => SECOND,
        "m" => MINUTE,
        "h" => HOUR,
        _ => return None,
    })
}

/// Go's `time.ParseDuration`.
fn parse_go_duration(orig: &str) -> Result<i64, String> {
    let mut s = orig;
    let mut neg = false;
    if let Some(rest) = s.strip_prefix('-') {
        neg = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid("invalid duration", orig));
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        if !s.starts_with(|c: char| c == '.' || c.is_ascii_digit()) {
            return Err(invalid("invalid duration", orig));
        }
        let before = s.len();
        let (mut v, rest) = leading_int(s).map_err(|()| invalid("invalid duration", orig))?;
        let pre = rest.len() != before;
        s = rest;

        let mut post = false;
        let (mut f, mut scale) = (0_u64, 1.0_f64);
        if let Some(rest) = s.strip_prefix('.') {
            let before = rest.len();
            let (ff, sc, rest) = leading_fraction(rest);
            (f, scale) = (ff, sc);
            post = rest.len() != before;
            s = rest;
        }
        if !pre && !post {
            return Err(invalid("invalid duration", orig));
        }

        let unit_end = s
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        if unit_end == 0 {
            return Err(invalid("missing unit in duration", orig));
        }
        let unit = &s[..unit_end];
        s = &s[unit_end..];
        let Some(unit) = unit_nanos(unit) else {
            return Err(format!("unknown unit \"{unit}\" in duration \"{orig}\""));
        };
        if v > LIMIT / unit {
            return Err(invalid("invalid duration", orig));
        }
        v *= unit;
        if f > 0 {
            // Go computes this in float64 too; it stays below `unit`.
            v += (f as f64 * (unit as f64 / scale)) as u64;
            if v > LIMIT {
                return Err(invalid("invalid duration", orig));
            }
        }
        total += v;
        if total > LIMIT {
            return Err(invalid("invalid duration", orig));
        }
    }
    if neg {
        // total <= LIMIT, so -(total) fits (LIMIT itself is i64::MIN).
        return Ok((total as i64).wrapping_neg());
    }
    if total > LIMIT - 1 {
        return Err(invalid("invalid duration", orig));
    }
    Ok(total as i64)
}

impl FromStr for Duration {
    type Err = String;

    /// Parses a Go duration string; the error says what is wrong, in Go's
    /// wording (`invalid duration "x"`, `missing unit in duration "5"`, …).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_go_duration(s).map(Duration)
    }
}

/// Writes `v / 10^prec` with the fraction's trailing zeros (and a bare
/// decimal point) left out, as Go's `fmtFrac` + `fmtInt` do.
fn push_decimal(out: &mut String, v: u64, prec: u32) {
    let scale = 10_u64.pow(prec);
    let (int, frac) = (v / scale, v % scale);
    out.push_str(&int.to_string());
    if frac != 0 {
        let digits = format!("{frac:0width$}", width = prec as usize);
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

impl fmt::Display for Duration {
    /// Formats like Go's `time.Duration.String()`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let neg = self.0 < 0;
        let u = self.0.unsigned_abs();
        let mut out = String::with_capacity(24);
        if neg {
            out.push('-');
        }
        if u == 0 {
            return f.write_str("0s");
        } else if u < MICROSECOND {
            push_decimal(&mut out, u, 0);
            out.push_str("ns");
        } else if u < MILLISECOND {
            push_decimal(&mut out, u, 3);
            out.push_str("\u{00b5}s");
        } else if u < SECOND {
            push_decimal(&mut out, u, 6);
            out.push_str("ms");
        } else {
            let hours = u / HOUR;
            let mins = (u / MINUTE) % 60;
            let sub_minute = u % MINUTE;
            if hours > 0 {
                out.push_str(&format!("{hours}h{mins}m"));
            } else if mins > 0 {
                out.push_str(&format!("{mins}m"));
            }
            push_decimal(&mut out, sub_minute, 9);
            out.push('s');
        }
        f.write_str(&out)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    /// Reads a Go duration string. Configuration fields go through
    /// path-naming wrappers instead, so that errors name the field.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> i64 {
        s.parse::<Duration>().unwrap().as_nanos()
    }

    #[test]
    fn parses_go_forms() {
        let s = SECOND as i64;
        let cases: &[(&str, i64)] = &[
            ("0", 0),
            ("0s", 0),
            ("-0", 0),
            ("+0", 0),
            ("5s", 5 * s),
            ("30s", 30 * s),
            ("478s", 478 * s),
            ("-5s", -5 * s),
            ("+5s", 5 * s),
            ("-0s", 0),
            ("+0s", 0),
            ("5.0s", 5 * s),
            ("5.6s", 5 * s + 600 * MILLISECOND as i64),
            ("5.s", 5 * s),
            (".5s", 500 * MILLISECOND as i64),
            ("1.0s", s),
            ("1.00s", s),
            ("1.004s", s + 4 * MILLISECOND as i64),
            ("1.0040s", s + 4 * MILLISECOND as i64),
            ("100.00100s", 100 * s + MILLISECOND as i64),
            ("10ns", 10),
            ("11us", 11_000),
            ("12µs", 12_000),
            ("12μs", 12_000),
            ("13ms", 13 * MILLISECOND as i64),
            ("14s", 14 * s),
            ("15m", 15 * MINUTE as i64),
            ("16h", 16 * HOUR as i64),
            ("3h30m", 3 * HOUR as i64 + 30 * MINUTE as i64),
            (
                "10.5s4m",
                4 * MINUTE as i64 + 10 * s + 500 * MILLISECOND as i64,
            ),
            (
                "-2m3.4s",
                -(2 * MINUTE as i64 + 3 * s + 400 * MILLISECOND as i64),
            ),
            (
                "1h2m3s4ms5us6ns",
                (HOUR + 2 * MINUTE + 3 * SECOND + 4 * MILLISECOND + 5 * MICROSECOND + 6) as i64,
            ),
            (
                "39h9m14.425s",
                (39 * HOUR + 9 * MINUTE + 14 * SECOND + 425 * MILLISECOND) as i64,
            ),
            ("52763797000ns", 52_763_797_000),
            ("0.3333333333333333333h", 20 * MINUTE as i64),
            ("9007199254740993ns", (1 << 53) + 1),
            ("9223372036854775807ns", i64::MAX),
            ("9223372036854775.807us", i64::MAX),
            ("9223372036s854ms775us807ns", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
            ("-9223372036s854ms775us808ns", i64::MIN),
            ("-2562047h47m16.854775808s", i64::MIN),
            ("0.100000000000000000000h", 6 * MINUTE as i64),
            (
                "0.830103483285477580700h",
                49 * MINUTE as i64 + 48 * s + 372_539_827,
            ),
            ("24h0m0s", 24 * HOUR as i64),
            ("1m0s", MINUTE as i64),
            ("250ms", 250 * MILLISECOND as i64),
        ];
        for (text, want) in cases {
            assert_eq!(p(text), *want, "{text}");
        }
    }

    #[test]
    fn rejects_what_go_rejects() {
        for bad in [
            "",
            "3",
            "-",
            "s",
            ".",
            "-.",
            ".s",
            "+.s",
            "1d",
            "\u{85}\u{85}",
            "\u{FFFD}",
            "9223372036854775810ns",
            "9223372036854775808ns",
            "9223372036854775.808us",
            "9223372036854ms775us808ns",
            "-9223372036854775809ns",
            "5 s",
            " 5s",
            "5s ",
            "1.5",
            "1e3s",
            "-5",
            "++5s",
        ] {
            assert!(
                bad.parse::<Duration>().is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn error_messages_follow_go() {
        assert_eq!("".parse::<Duration>().unwrap_err(), "invalid duration \"\"");
        assert_eq!(
            "5".parse::<Duration>().unwrap_err(),
            "missing unit in duration \"5\""
        );
        assert_eq!(
            "5x".parse::<Duration>().unwrap_err(),
            "unknown unit \"x\" in duration \"5x\""
        );
        assert_eq!(
            "abc".parse::<Duration>().unwrap_err(),
            "invalid duration \"abc\""
        );
    }

    #[test]
    fn formats_like_go() {
        let cases: &[(i64, &str)] = &[
            (0, "0s"),
            (1, "1ns"),
            (1_100, "1.1\u{00b5}s"),
            (2_200_000, "2.2ms"),
            (3_300_000_000, "3.3s"),
            (4 * MINUTE as i64 + 5 * SECOND as i64, "4m5s"),
            (4 * MINUTE as i64 + 5_001 * MILLISECOND as i64, "4m5.001s"),
            (
                5 * HOUR as i64 + 6 * MINUTE as i64 + 7_001 * MILLISECOND as i64,
                "5h6m7.001s",
            ),
            (8 * MINUTE as i64 + 1, "8m0.000000001s"),
            (i64::MAX, "2562047h47m16.854775807s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
            (-1, "-1ns"),
            (30 * SECOND as i64, "30s"),
            (MINUTE as i64, "1m0s"),
            (15 * MINUTE as i64, "15m0s"),
            (HOUR as i64, "1h0m0s"),
            (24 * HOUR as i64, "24h0m0s"),
            (250 * MILLISECOND as i64, "250ms"),
            (5 * SECOND as i64, "5s"),
            (SECOND as i64, "1s"),
        ];
        for (nanos, want) in cases {
            assert_eq!(Duration::from_nanos(*nanos).to_string(), *want, "{nanos}");
        }
    }

    #[test]
    fn display_parses_back() {
        for nanos in [
            0,
            1,
            999,
            1_000,
            1_500,
            999_999,
            1_000_000,
            123_456_789,
            59_999_999_999,
            3_600_000_000_001,
            -42_000_000_000,
        ] {
            let d = Duration::from_nanos(nanos);
            assert_eq!(d.to_string().parse::<Duration>().unwrap(), d, "{d}");
        }
    }

    #[test]
    fn constructors_and_std() {
        assert_eq!(Duration::from_secs(30).to_string(), "30s");
        assert_eq!(
            Duration::from_millis(250).to_std(),
            std::time::Duration::from_millis(250)
        );
        assert_eq!(Duration::from_secs(-1).to_std(), std::time::Duration::ZERO);
        assert_eq!(
            Duration::from(std::time::Duration::from_secs(90)).to_string(),
            "1m30s"
        );
        assert_eq!(
            Duration::from(std::time::Duration::MAX).as_nanos(),
            i64::MAX
        );
        assert!(Duration::from_mins(-1).is_negative());
        assert!(Duration::ZERO.is_zero());
        assert_eq!(Duration::from_hours(1), Duration::from_mins(60));
    }
}
