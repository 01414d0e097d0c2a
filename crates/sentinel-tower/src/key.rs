//! The `Idempotency-Key` field: an RFC 8941 sf-string (`"abc"`), or a bare token (`abc`) — the
//! same key either way — of 1–255 visible ASCII characters.

use http::HeaderMap;

/// The field's name.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The longest key accepted, in characters (all ASCII).
pub const MAX_KEY_LEN: usize = 255;

/// Why a field value is not a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyError {
    /// More than one `Idempotency-Key` field line.
    Repeated,
    /// Empty, or only whitespace.
    Empty,
    /// Over [`MAX_KEY_LEN`] characters.
    TooLong,
    /// A list, parameters, a bad escape, an unterminated string, or a character outside
    /// 0x21–0x7E.
    Malformed,
}

impl KeyError {
    /// A sentence for the problem's `detail` (never echoing the value).
    pub(crate) fn detail(self) -> &'static str {
        match self {
            KeyError::Repeated => "the request has more than one Idempotency-Key field",
            KeyError::Empty => "the Idempotency-Key is empty",
            KeyError::TooLong => "the Idempotency-Key is longer than 255 characters",
            KeyError::Malformed => {
                "the Idempotency-Key must be one string (\"...\") or token of visible ASCII \
                 characters, without a list or parameters"
            }
        }
    }
}

/// The request's key: `Ok(None)` without the field.
pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Option<String>, KeyError> {
    let mut lines = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(first) = lines.next() else {
        return Ok(None);
    };
    if lines.next().is_some() {
        return Err(KeyError::Repeated);
    }
    parse(first.as_bytes()).map(Some)
}

/// One field value as a key.
pub(crate) fn parse(value: &[u8]) -> Result<String, KeyError> {
    // RFC 8941 §4.2: leading and trailing spaces are discarded (HTTP already trims tabs).
    let value = trim(value);
    if value.is_empty() {
        return Err(KeyError::Empty);
    }
    let key = if value[0] == b'"' {
        sf_string(value)?
    } else {
        value.to_vec()
    };
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong);
    }
    // Visible ASCII only; a bare value may not hold what would make it a list, a parameter or
    // a string.
    let bare = value[0] != b'"';
    if key
        .iter()
        .any(|&c| !(0x21..=0x7e).contains(&c) || (bare && matches!(c, b',' | b';' | b'"')))
    {
        return Err(KeyError::Malformed);
    }
    String::from_utf8(key).map_err(|_| KeyError::Malformed)
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// An sf-string that is the whole value: `"` chars (with `\"` and `\\` escapes) `"`, nothing
/// after it (a list or parameters would follow).
fn sf_string(value: &[u8]) -> Result<Vec<u8>, KeyError> {
    let mut out = Vec::with_capacity(value.len());
    let mut chars = value[1..].iter();
    loop {
        match chars.next() {
            None => return Err(KeyError::Malformed), // unterminated
            Some(b'\\') => match chars.next() {
                Some(&c @ (b'"' | b'\\')) => out.push(c),
                _ => return Err(KeyError::Malformed),
            },
            Some(b'"') => break,
            Some(&c) if (0x20..=0x7e).contains(&c) => out.push(c),
            Some(_) => return Err(KeyError::Malformed),
        }
        if out.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong);
        }
    }
    if chars.next().is_some() {
        return Err(KeyError::Malformed);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_and_a_token_are_the_same_key() {
        assert_eq!(parse(br#""abc-123""#), Ok("abc-123".into()));
        assert_eq!(parse(b"abc-123"), Ok("abc-123".into()));
        assert_eq!(parse(b"  abc  "), Ok("abc".into()));
        assert_eq!(parse(br#""8e03978e-40d5""#), Ok("8e03978e-40d5".into()));
    }

    #[test]
    fn escapes_are_decoded() {
        assert_eq!(parse(br#""a\"b\\c""#), Ok(r#"a"b\c"#.into()));
        assert_eq!(parse(br#""a\nb""#), Err(KeyError::Malformed));
    }

    #[test]
    fn empty_long_lists_parameters_and_spaces_are_refused() {
        assert_eq!(parse(b""), Err(KeyError::Empty));
        assert_eq!(parse(b"   "), Err(KeyError::Empty));
        assert_eq!(parse(br#""""#), Err(KeyError::Empty));
        assert_eq!(parse(&[b'a'; 255]).map(|k| k.len()), Ok(255));
        assert_eq!(parse(&[b'a'; 256]), Err(KeyError::TooLong));
        let mut quoted = vec![b'"'];
        quoted.extend([b'a'; 256]);
        quoted.push(b'"');
        assert_eq!(parse(&quoted), Err(KeyError::TooLong));
        assert_eq!(parse(br#""a", "b""#), Err(KeyError::Malformed));
        assert_eq!(parse(b"a, b"), Err(KeyError::Malformed));
        assert_eq!(parse(b"a,b"), Err(KeyError::Malformed));
        assert_eq!(parse(br#""a";x=1"#), Err(KeyError::Malformed));
        assert_eq!(parse(b"a;x=1"), Err(KeyError::Malformed));
        assert_eq!(parse(br#""a b""#), Err(KeyError::Malformed));
        assert_eq!(parse(b"a b"), Err(KeyError::Malformed));
        assert_eq!(parse(br#""abc"#), Err(KeyError::Malformed));
        assert_eq!(parse("\"caf\u{e9}\"".as_bytes()), Err(KeyError::Malformed));
        assert_eq!(parse(b"a\x7fb"), Err(KeyError::Malformed));
    }

    #[test]
    fn two_field_lines_are_refused() {
        let mut h = HeaderMap::new();
        assert_eq!(from_headers(&h), Ok(None));
        h.append(IDEMPOTENCY_KEY, "a".parse().unwrap());
        assert_eq!(from_headers(&h), Ok(Some("a".into())));
        h.append(IDEMPOTENCY_KEY, "a".parse().unwrap());
        assert_eq!(from_headers(&h), Err(KeyError::Repeated));
    }
}
