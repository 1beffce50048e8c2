//! Reading and writing the configuration file (YAML, or JSON, which YAML
//! reads too).

use std::path::Path;

use super::types::{API_VERSION, KIND, KubeProxyConfiguration};
use crate::error::Error;

/// What parse errors of in-memory text are about.
const WHAT: &str = "KubeProxyConfiguration";

/// Whether `text` holds no YAML content: only whitespace, comments and
/// document markers.
fn is_blank(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .all(|line| line.is_empty() || line.starts_with('#') || line == "---" || line == "...")
}

/// Checks the `apiVersion` and `kind` a document was written with.
fn check_type(config: &KubeProxyConfiguration) -> Result<(), Error> {
    if config.api_version != API_VERSION {
        let found = if config.api_version.is_empty() {
            "missing".to_owned()
        } else {
            format!("\"{}\"", config.api_version)
        };
        return Err(Error::config(
            "apiVersion",
            format!("{found}; must be {API_VERSION}"),
        ));
    }
    if config.kind != KIND {
        let found = if config.kind.is_empty() {
            "missing".to_owned()
        } else {
            format!("\"{}\"", config.kind)
        };
        return Err(Error::config("kind", format!("{found}; must be {KIND}")));
    }
    Ok(())
}

fn parse(text: &str, what: &str) -> Result<KubeProxyConfiguration, Error> {
    if is_blank(text) {
        return Ok(KubeProxyConfiguration::default());
    }
    let mut config: KubeProxyConfiguration =
        serde_saphyr::from_str(text).map_err(|e| Error::Parse {
            what: what.to_owned(),
            // "<message> at line L, column C", without the source snippet.
            reason: e.without_snippet().to_string(),
        })?;
    check_type(&config)?;
    config.set_defaults();
    Ok(config)
}

impl KubeProxyConfiguration {
    /// Reads a configuration document (YAML or JSON).
    ///
    /// - A blank document (whitespace, comments, `---`) gives the defaults.
    /// - `apiVersion` must be `kubeproxy.config.k8s.io/v1alpha1` and `kind`
    ///   `KubeProxyConfiguration` ([`Error::Config`] naming the field).
    /// - Unknown fields, wrong types and bad values are [`Error::Parse`]
    ///   errors with the line and column; errors in durations and in the
    ///   `mode`/`detectLocalMode` names also name the field path.
    /// - Fields left out, or given as zero, get upstream's defaults
    ///   (`SetDefaults_KubeProxyConfiguration`). The platform defaults
    ///   ([`apply_defaults`](Self::apply_defaults)) and
    ///   [`validate`](Self::validate) are left to the caller, which merges
    ///   flags first, as upstream does.
    pub fn from_yaml(text: &str) -> Result<Self, Error> {
        parse(text, WHAT)
    }

    /// Reads the configuration file at `path` (see [`from_yaml`](Self::from_yaml));
    /// parse errors name the file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            context: format!("reading {}", path.display()),
            source,
        })?;
        parse(&text, &path.display().to_string())
    }

    /// Writes the configuration as YAML, keys in upstream's (alphabetical)
    /// order. For the defaults this is what upstream's
    /// `kube-proxy --write-config-to` writes, plus the `userspace` section.
    /// [`from_yaml`](Self::from_yaml) reads it back to an equal value.
    pub fn to_yaml(&self) -> Result<String, Error> {
        serde_saphyr::to_string(self).map_err(|e| Error::Parse {
            what: WHAT.to_owned(),
            reason: format!("cannot serialize: {e}"),
        })
    }
}
