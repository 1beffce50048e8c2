//! Splitting `iptables-restore` lines into arguments, and quoting them back.

/// Splits a line into arguments: whitespace separates them, double quotes
/// group (the quotes are removed, `\"` is a literal quote).
pub fn tokenize(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_token = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_token = true;
            }
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    cur.push(next);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if in_token {
                    out.push(std::mem::take(&mut cur));
                    in_token = false;
                }
            }
            c => {
                cur.push(c);
                in_token = true;
            }
        }
    }
    if quoted {
        return Err(format!("unterminated quote in {line:?}"));
    }
    if in_token {
        out.push(cur);
    }
    Ok(out)
}

pub use proxy_core::exec::quote;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_comments_are_one_argument() {
        assert_eq!(
            tokenize(r#"-A X -m comment --comment "ns1/svc1:p80 cluster IP" -j Y"#).unwrap(),
            [
                "-A",
                "X",
                "-m",
                "comment",
                "--comment",
                "ns1/svc1:p80 cluster IP",
                "-j",
                "Y"
            ]
        );
        assert!(tokenize("-A X \"open").is_err());
    }

    #[test]
    fn quote_roundtrips() {
        for arg in ["plain", "with space", "with \"quote\""] {
            assert_eq!(tokenize(&quote(arg)).unwrap(), [arg]);
        }
    }
}
