//! Validation of namespaces and keys.

use crate::Error;

/// Longest accepted key, in bytes. Long enough for a URL path plus a UUID, short enough to keep
/// the primary key index and `NOTIFY` payloads small.
pub const MAX_KEY_LEN: usize = 512;

/// Longest accepted namespace, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 128;

/// The namespace used when a call names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Checks a key: not empty, at most [`MAX_KEY_LEN`] bytes, no NUL byte (PostgreSQL text rejects
/// it), no other control characters.
///
/// # Errors
///
/// [`Error::InvalidInput`] saying which rule the value breaks.
pub fn validate_key(key: &str) -> Result<(), Error> {
    validate("key", key, MAX_KEY_LEN)
}

/// Checks a namespace with the same rules as a key, limited to [`MAX_NAMESPACE_LEN`] bytes.
///
/// # Errors
///
/// [`Error::InvalidInput`] saying which rule the value breaks.
pub fn validate_namespace(namespace: &str) -> Result<(), Error> {
    validate("namespace", namespace, MAX_NAMESPACE_LEN)
}

fn validate(what: &str, value: &str, max: usize) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::invalid(format!("{what} must not be empty")));
    }
    if value.len() > max {
        return Err(Error::invalid(format!(
            "{what} is {} bytes long; the limit is {max}",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "{what} must not contain NUL or other control characters"
        )));
    }
    Ok(())
}

/// Checks that a schema name is a plain SQL identifier (`[a-z_][a-z0-9_]*`, at most 63 bytes), so
/// that it can be interpolated into SQL unquoted.
///
/// # Errors
///
/// [`Error::InvalidInput`] saying which rule the value breaks.
pub fn validate_identifier(name: &str) -> Result<(), Error> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !first_ok || !rest_ok || name.len() > 63 {
        return Err(Error::invalid(format!(
            "`{name}` is not a valid schema name: use lowercase letters, digits and `_`, at most 63 bytes, not starting with a digit"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated() {
        assert!(validate_key("payment-1").is_ok());
        assert!(matches!(validate_key(""), Err(Error::InvalidInput(_))));
        assert!(matches!(validate_key("a\0b"), Err(Error::InvalidInput(_))));
        assert!(matches!(
            validate_key(&"x".repeat(MAX_KEY_LEN + 1)),
            Err(Error::InvalidInput(_))
        ));
        assert!(validate_key(&"x".repeat(MAX_KEY_LEN)).is_ok());
        assert!(matches!(
            validate_namespace(""),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn identifiers_are_validated() {
        assert!(validate_identifier("sentinel").is_ok());
        assert!(validate_identifier("t_1").is_ok());
        for bad in ["", "1a", "a-b", "A", "a;drop", "a b", &"a".repeat(64)] {
            assert!(validate_identifier(bad).is_err(), "{bad}");
        }
    }
}
