//! Text from objects made safe to put inside a dataplane rule's comment.
//!
//! The topology only accepts names the API server would accept, so a valid
//! comment never changes here; this is the renderers' second line of
//! defence, for views built by hand through the library API: a comment
//! never holds a quote, a backslash, a newline or anything but plain
//! printable ASCII, and never exceeds the dataplane's limit (nft refuses a
//! comment over 128 characters, `xt_comment` holds 255).

use std::borrow::Cow;

/// Length of the hash suffix [`rule_comment`] appends to a truncated text:
/// `~` and 8 base32 characters.
pub const COMMENT_HASH_SUFFIX_LEN: usize = 9;

/// Whether `b` may appear in a comment as it is: ASCII letters and digits,
/// space, and `-._/:[]>()=,+@~`: everything object names, IP addresses and
/// our own fixed texts use, and nothing any rule language quotes or escapes.
fn is_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b' ' | b'-'
                | b'.'
                | b'_'
                | b'/'
                | b':'
                | b'['
                | b']'
                | b'>'
                | b'('
                | b')'
                | b'='
                | b','
                | b'+'
                | b'@'
                | b'~'
        )
}

/// Whether `text` is already a safe comment of at most `max` bytes.
pub fn is_safe_comment(text: &str, max: usize) -> bool {
    text.len() <= max && text.bytes().all(is_safe)
}

/// 40 bits of the FNV-1a hash of `text`, as 8 base32 characters
/// (`A-Z2-7`). Not a security measure: it only keeps truncated comments of
/// different texts apart for a reader.
fn hash8(text: &str) -> [u8; 8] {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut out = [0u8; 8];
    for (i, c) in out.iter_mut().enumerate() {
        *c = ALPHABET[((h >> (5 * i)) & 31) as usize];
    }
    out
}

/// `text` as a comment of at most `max` bytes: every byte outside the safe
/// set (see above; every multi-byte character) becomes `_`, and a text
/// longer than `max` keeps its first `max - 9` bytes followed by `~` and a
/// hash of the whole original text, so that truncated comments stay
/// readable and distinct. Idempotent; borrows `text` when it is already
/// safe, which every comment of API-valid names is unless too long.
pub fn rule_comment(text: &str, max: usize) -> Cow<'_, str> {
    if is_safe_comment(text, max) {
        return Cow::Borrowed(text);
    }
    let mut out: Vec<u8> = Vec::with_capacity(text.len().min(max));
    for ch in text.chars() {
        let safe = u8::try_from(ch).ok().filter(|b| is_safe(*b));
        out.push(safe.unwrap_or(b'_'));
    }
    if out.len() > max {
        if max > COMMENT_HASH_SUFFIX_LEN {
            out.truncate(max - COMMENT_HASH_SUFFIX_LEN);
            out.push(b'~');
            out.extend_from_slice(&hash8(text));
        } else {
            out.truncate(max);
        }
    }
    // Every byte is ASCII.
    Cow::Owned(out.into_iter().map(char::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_are_kept_as_they_are() {
        let text = "ns-1/web:http -> [fd00::1]:8080 (cluster IP)";
        assert!(matches!(rule_comment(text, 128), Cow::Borrowed(t) if t == text));
    }

    #[test]
    fn quotes_escapes_and_newlines_become_underscores() {
        assert_eq!(
            rule_comment("ns/we\"b\\x\ny'z\té;#", 128),
            "ns/we_b_x_y_z____"
        );
    }

    #[test]
    fn long_texts_keep_a_prefix_and_a_hash() {
        let a = format!("{}/{}:{}", "n".repeat(63), "s".repeat(63), "a".repeat(63));
        let b = format!("{}/{}:{}", "n".repeat(63), "s".repeat(63), "b".repeat(63));
        let (ca, cb) = (rule_comment(&a, 128), rule_comment(&b, 128));
        assert_eq!(ca.len(), 128);
        assert!(ca.starts_with(&a[..119]), "{ca}");
        assert_eq!(&ca[119..120], "~");
        assert_ne!(ca, cb, "different texts, different comments");
        assert_eq!(rule_comment(&ca, 128), ca, "idempotent");
    }

    #[test]
    fn any_text_gives_a_safe_comment_within_the_limit() {
        for text in ["", "\"", &"é".repeat(200), &"\"".repeat(300), "a\0b"] {
            for max in [0, 5, 9, 10, 128, 255] {
                let c = rule_comment(text, max);
                assert!(is_safe_comment(&c, max), "{text:?} {max} -> {c:?}");
                assert_eq!(rule_comment(&c, max), c);
            }
        }
    }
}
