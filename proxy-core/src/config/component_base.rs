//! Sections shared with other Kubernetes components (`k8s.io/component-base`):
//! `clientConnection` and `logging`.
//!
//! `Default` is Go's zero value; upstream's defaults are applied by
//! [`KubeProxyConfiguration`](super::KubeProxyConfiguration) (see `defaults.rs`).

use serde::{Deserialize, Serialize};

use super::duration::Duration;
use super::fields;

/// `clientConnection`: how to reach the API server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientConnectionConfiguration {
    /// `acceptContentTypes`: the `Accept` header; empty means the client's
    /// default (`application/json`).
    pub accept_content_types: String,
    /// `burst`: extra queries allowed above `qps` in a burst (default 10).
    pub burst: i32,
    /// `contentType`: the encoding of requests (default
    /// `application/vnd.kubernetes.protobuf`).
    pub content_type: String,
    /// `kubeconfig`: path of a kubeconfig file; empty means in-cluster.
    pub kubeconfig: String,
    /// `qps`: sustained queries per second (default 5).
    #[serde(serialize_with = "fields::go_float32")]
    pub qps: f32,
}

/// `logging`: component-base's `LoggingConfiguration` (`logs/api/v1`).
///
/// Accepted as upstream writes it, so that upstream's generated default
/// configuration loads; how much of it is honoured is up to the binary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct LoggingConfiguration {
    /// `flushFrequency`: the maximum time between log flushes (default 5s).
    /// Upstream also accepts an integer number of nanoseconds here.
    #[serde(deserialize_with = "fields::logging_flush_frequency")]
    pub flush_frequency: Duration,
    /// `format`: the log format, `text` (default) or `json`.
    pub format: String,
    /// `options`: per-format options.
    #[serde(deserialize_with = "fields::null_as_default")]
    pub options: FormatOptions,
    /// `verbosity`: the threshold of log messages to emit (`-v`).
    pub verbosity: u32,
    /// `vmodule`: per-file verbosity overrides (text format only).
    #[serde(
        deserialize_with = "fields::null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub vmodule: Vec<VModuleItem>,
}

/// One `logging.vmodule` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct VModuleItem {
    /// `filePattern`: a base file name pattern, without `.go`; may contain `*`.
    pub file_pattern: String,
    /// `verbosity`: the threshold for files matching the pattern.
    pub verbosity: u32,
}

/// `logging.options`: options of each log format.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct FormatOptions {
    /// `json`: options of the `json` format.
    #[serde(deserialize_with = "fields::null_as_default")]
    pub json: OutputRoutingOptions,
    /// `text`: options of the `text` format.
    #[serde(deserialize_with = "fields::null_as_default")]
    pub text: OutputRoutingOptions,
}

/// `logging.options.{json,text}`: where log output goes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct OutputRoutingOptions {
    /// `infoBufferSize`: a Kubernetes quantity (`"0"`, `"64Ki"`), the size of
    /// the info-stream buffer when `splitStream` is on. Kept as written.
    pub info_buffer_size: String,
    /// `splitStream`: info messages to stdout, errors to stderr.
    #[serde(skip_serializing_if = "fields::is_false")]
    pub split_stream: bool,
}
