//! Serde helpers for configuration fields: parsers whose errors name the
//! field path (`iptables.syncPeriod: invalid duration "3x"`), null-tolerant
//! sections, and Go-compatible number and empty-string encodings.

use std::fmt::Display;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serializer};

use super::duration::Duration;
use super::mode::{LocalMode, ProxyMode};
use crate::error::Error;

/// A value read from a scalar string, with an error message that does not
/// name the field (the caller adds the path).
pub(super) trait FieldValue: Sized {
    /// Whether the empty string means "unset" (`None`) for `Option<Self>`.
    const EMPTY_IS_NONE: bool = false;
    /// Parses the value.
    fn parse_value(s: &str) -> Result<Self, String>;
}

impl FieldValue for Duration {
    fn parse_value(s: &str) -> Result<Self, String> {
        s.parse()
    }
}

/// The reason of a configuration error, without its field.
fn reason(e: Error) -> String {
    match e {
        Error::Config { reason, .. } => reason,
        other => other.to_string(),
    }
}

impl FieldValue for ProxyMode {
    const EMPTY_IS_NONE: bool = true;
    fn parse_value(s: &str) -> Result<Self, String> {
        s.parse().map_err(reason)
    }
}

impl FieldValue for LocalMode {
    const EMPTY_IS_NONE: bool = true;
    fn parse_value(s: &str) -> Result<Self, String> {
        s.parse().map_err(reason)
    }
}

/// Deserializes `Self` from a scalar, naming `path` in errors.
pub(super) trait ParseField: Sized {
    /// Reads the value of the field at `path`.
    fn parse_field<'de, D: Deserializer<'de>>(d: D, path: &str) -> Result<Self, D::Error>;
}

impl<T: FieldValue> ParseField for T {
    fn parse_field<'de, D: Deserializer<'de>>(d: D, path: &str) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        T::parse_value(&s).map_err(|e| D::Error::custom(format_args!("{path}: {e}")))
    }
}

impl<T: FieldValue> ParseField for Option<T> {
    fn parse_field<'de, D: Deserializer<'de>>(d: D, path: &str) -> Result<Self, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) if s.is_empty() && T::EMPTY_IS_NONE => Ok(None),
            Some(s) => T::parse_value(&s)
                .map(Some)
                .map_err(|e| D::Error::custom(format_args!("{path}: {e}"))),
        }
    }
}

/// Defines one `deserialize_with` function per field, naming its path.
macro_rules! field_parsers {
    ($($name:ident: $ty:ty => $path:literal;)*) => {$(
        pub(super) fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
            <$ty as ParseField>::parse_field(d, $path)
        }
    )*};
}

field_parsers! {
    mode: Option<ProxyMode> => "mode";
    detect_local_mode: Option<LocalMode> => "detectLocalMode";
    config_sync_period: Duration => "configSyncPeriod";
    iptables_sync_period: Duration => "iptables.syncPeriod";
    iptables_min_sync_period: Duration => "iptables.minSyncPeriod";
    ipvs_sync_period: Duration => "ipvs.syncPeriod";
    ipvs_min_sync_period: Duration => "ipvs.minSyncPeriod";
    ipvs_tcp_timeout: Duration => "ipvs.tcpTimeout";
    ipvs_tcp_fin_timeout: Duration => "ipvs.tcpFinTimeout";
    ipvs_udp_timeout: Duration => "ipvs.udpTimeout";
    nftables_sync_period: Duration => "nftables.syncPeriod";
    nftables_min_sync_period: Duration => "nftables.minSyncPeriod";
    userspace_sync_period: Duration => "userspace.syncPeriod";
    userspace_min_sync_period: Duration => "userspace.minSyncPeriod";
    userspace_udp_idle_timeout: Duration => "userspace.udpIdleTimeout";
    conntrack_tcp_established_timeout: Option<Duration> => "conntrack.tcpEstablishedTimeout";
    conntrack_tcp_close_wait_timeout: Option<Duration> => "conntrack.tcpCloseWaitTimeout";
    conntrack_udp_timeout: Duration => "conntrack.udpTimeout";
    conntrack_udp_stream_timeout: Duration => "conntrack.udpStreamTimeout";
}

/// `logging.flushFrequency` is component-base's `TimeOrMetaDuration`: a
/// duration string, or an integer number of nanoseconds.
pub(super) fn logging_flush_frequency<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    let parsed = match s.parse::<i64>() {
        Ok(nanos) => Ok(Duration::from_nanos(nanos)),
        Err(_) => s.parse::<Duration>(),
    };
    parsed.map_err(|e| D::Error::custom(format_args!("logging.flushFrequency: {e}")))
}

/// `null` reads as the type's default (Go leaves a null struct, map or list
/// at its zero value).
pub(super) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Writes `None` as the empty string, `Some(v)` by its `Display` name.
pub(super) fn empty_if_none<S: Serializer, T: Display>(
    v: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        None => s.serialize_str(""),
        Some(v) => s.collect_str(v),
    }
}

/// Writes a float the way Go's JSON encoder writes a `float32`: whole
/// numbers without a fraction (`qps: 5`), others in their shortest form.
pub(super) fn go_float32<S: Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
    // Whole numbers below 2^24 are exact in f32, so the cast is lossless.
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 16_777_216.0 {
        s.serialize_i64(*v as i64)
    } else {
        // The shortest decimal that reads back as this f32, widened to f64
        // without picking up binary noise (0.1f32 stays 0.1).
        s.serialize_f64(v.to_string().parse::<f64>().unwrap_or(f64::from(*v)))
    }
}

/// Skips `false` (Go's `omitempty` on a bool).
pub(super) fn is_false(v: &bool) -> bool {
    !*v
}
