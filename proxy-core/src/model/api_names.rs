//! The API server's rules for names (`k8s.io/apimachinery/pkg/util/validation`):
//! what a namespace, a Service, an EndpointSlice, a port or a node may be
//! called. The topology applies them to every object, whatever its source,
//! so that only names the API server would accept reach a backend.
//!
//! Each check returns `Err(reason)` with upstream's wording, shortened.

/// `IsDNS1123Label`'s maximum length.
pub const DNS1123_LABEL_MAX: usize = 63;
/// `IsDNS1123Subdomain`'s maximum length.
pub const DNS1123_SUBDOMAIN_MAX: usize = 253;
/// `IsValidLabelValue`'s maximum length.
pub const LABEL_VALUE_MAX: usize = 63;

fn too_long(value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        Err(format!(
            "must be no more than {max} characters (has {})",
            value.len()
        ))
    } else {
        Ok(())
    }
}

fn lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, without the length check.
fn is_label_text(value: &str) -> bool {
    let bytes = value.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            lower_alnum(first)
                && lower_alnum(last)
                && bytes.iter().all(|&b| lower_alnum(b) || b == b'-')
        }
        _ => false,
    }
}

/// `IsDNS1123Label`: a lowercase RFC 1123 label, at most 63 characters
/// (namespaces, port names, endpoint hostnames).
pub fn dns1123_label(value: &str) -> Result<(), String> {
    too_long(value, DNS1123_LABEL_MAX)?;
    if is_label_text(value) {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a lowercase RFC 1123 label: lower case alphanumeric \
             characters or '-', starting and ending with an alphanumeric character \
             (regex '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        ))
    }
}

/// `IsDNS1035Label`: a DNS-1123 label that starts with a letter, at most 63
/// characters (Service names without `RelaxedServiceNameValidation`).
pub fn dns1035_label(value: &str) -> Result<(), String> {
    too_long(value, DNS1123_LABEL_MAX)?;
    if is_label_text(value) && value.as_bytes()[0].is_ascii_lowercase() {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a DNS-1035 label: lower case alphanumeric characters \
             or '-', starting with a letter and ending with an alphanumeric character \
             (regex '[a-z]([-a-z0-9]*[a-z0-9])?')"
        ))
    }
}

/// The name of a Service: a DNS-1123 label. The API server has long
/// required a DNS-1035 label (first character a letter); Kubernetes 1.34's
/// `RelaxedServiceNameValidation` accepts any DNS-1123 label. The proxy
/// takes the wider rule, so that no Service the API server accepts is
/// rejected here; both rules allow only `[a-z0-9-]`, at most 63 characters.
pub fn service_name(value: &str) -> Result<(), String> {
    dns1123_label(value)
}

/// `IsDNS1123Subdomain`: dot-separated lowercase RFC 1123 labels, at most
/// 253 characters (EndpointSlice and node names).
pub fn dns1123_subdomain(value: &str) -> Result<(), String> {
    too_long(value, DNS1123_SUBDOMAIN_MAX)?;
    if !value.is_empty() && value.split('.').all(is_label_text) {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a lowercase RFC 1123 subdomain: lower case alphanumeric \
             characters, '-' or '.', starting and ending with an alphanumeric character"
        ))
    }
}

/// `IsValidLabelValue`: empty, or at most 63 characters of `[A-Za-z0-9_.-]`
/// starting and ending with an alphanumeric character.
pub fn label_value(value: &str) -> Result<(), String> {
    too_long(value, LABEL_VALUE_MAX)?;
    let bytes = value.as_bytes();
    let ok = match (bytes.first(), bytes.last()) {
        (None, _) | (_, None) => true,
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a label value: alphanumeric characters, '-', '_' or '.', \
             starting and ending with an alphanumeric character"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_rfc_1123() {
        for ok in ["a", "0", "my-name", "123-abc", &"a".repeat(63)] {
            assert_eq!(dns1123_label(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a.b",
            "a_b",
            "we\"b",
            "a b",
            "a\nb",
            "é",
            &"a".repeat(64),
        ] {
            assert!(dns1123_label(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dns_1035_labels_start_with_a_letter() {
        assert_eq!(dns1035_label("web-1"), Ok(()));
        assert!(dns1035_label("1web").is_err());
        assert_eq!(service_name("1web"), Ok(()));
        assert!(service_name("Web").is_err());
    }

    #[test]
    fn subdomains_are_dot_separated_labels() {
        for ok in ["a", "web-abc12", "node-1.example.com", &"a".repeat(253)] {
            assert_eq!(dns1123_subdomain(ok), Ok(()), "{ok}");
        }
        for bad in ["", ".a", "a.", "a..b", "A.b", "a/b", &"a".repeat(254)] {
            assert!(dns1123_subdomain(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn label_values_allow_case_dots_and_underscores() {
        for ok in ["", "web", "Web_1.x", &"a".repeat(63)] {
            assert_eq!(label_value(ok), Ok(()), "{ok}");
        }
        for bad in ["-web", "web.", "we\"b", "a b", &"a".repeat(64)] {
            assert!(label_value(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn too_long_names_say_their_length() {
        let err = dns1123_label(&"a".repeat(64)).unwrap_err();
        assert!(err.contains("63") && err.contains("64"), "{err}");
    }
}
