//! Go's JSON encoding of `time.Time` (RFC 3339 with nanoseconds, trailing
//! zeros of the fraction dropped), in UTC.

use std::time::{SystemTime, UNIX_EPOCH};

/// Go's zero `time.Time`, as `encoding/json` writes it: what upstream
/// reports for a family that never synced.
pub const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// `t` as Go's `time.Time.MarshalJSON` writes a UTC time
/// (`2024-05-01T10:20:30.123456789Z`, `2024-05-01T10:20:30Z`), without the
/// quotes; `None` is Go's zero time. Times before 1970 read as 1970.
pub fn rfc3339_nano(t: Option<SystemTime>) -> String {
    let Some(t) = t else {
        return GO_ZERO_TIME.to_string();
    };
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let nanos = since.subsec_nanos();
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Year, month, day of the civil (proleptic Gregorian) date `days` after
/// 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(secs: u64, nanos: u32) -> Option<SystemTime> {
        Some(UNIX_EPOCH + Duration::new(secs, nanos))
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(rfc3339_nano(at(0, 0)), "1970-01-01T00:00:00Z");
        // date -u -d @1700000000 → 2023-11-14 22:13:20
        assert_eq!(rfc3339_nano(at(1_700_000_000, 0)), "2023-11-14T22:13:20Z");
        assert_eq!(
            rfc3339_nano(at(1_700_000_000, 120_000_000)),
            "2023-11-14T22:13:20.12Z"
        );
        assert_eq!(
            rfc3339_nano(at(1_700_000_000, 1)),
            "2023-11-14T22:13:20.000000001Z"
        );
        // a leap day: 2024-02-29T12:00:00Z
        assert_eq!(rfc3339_nano(at(1_709_208_000, 0)), "2024-02-29T12:00:00Z");
        assert_eq!(rfc3339_nano(None), GO_ZERO_TIME);
    }
}
