//! Who may use the console: the auth file, `Authorization` headers (Bearer or Basic), roles,
//! and the CSRF token of the forms.
//!
//! The auth file has one user per line, `name role secret`, where `role` is `viewer` (reads
//! pages, the API and the metrics) or `operator` (also reconciles, resolves and forgets), and
//! `secret` is either the secret itself (at least 16 characters) or `sha256:` and the hex
//! SHA-256 of it. Blank lines and lines starting with `#` are ignored. A user signs in with
//! Basic credentials (`name` and the secret: what a browser asks for) or presents the secret as
//! a Bearer token (scripts, Prometheus).

use std::path::{Path, PathBuf};

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads pages, the API and the metrics.
    Viewer,
    /// Also takes keys into reconciliation, resolves and forgets them.
    Operator,
}

impl Role {
    /// The name used in the auth file and the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }
}

/// The authenticated user of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The name operator actions are recorded under.
    pub name: String,
    /// What the user may do.
    pub role: Role,
}

/// Why the auth file could not be used. Messages name the line, never a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthFileError {
    /// The file could not be read.
    #[error("cannot read auth file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not `name role secret`, or repeats a name or a secret.
    #[error("auth file line {line}: {message}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// No user is defined.
    #[error("auth file defines no user (lines are `name role secret`)")]
    Empty,
}

/// The shortest secret the auth file accepts in plain text.
pub const MIN_SECRET_LEN: usize = 16;

#[derive(Clone)]
struct User {
    name: String,
    role: Role,
    /// SHA-256 of the secret: plain secrets are hashed when the file is read, so that every
    /// comparison is of 32 bytes in constant time.
    digest: [u8; 32],
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// The users of an auth file.
#[derive(Debug, Clone)]
pub struct Auth {
    users: Vec<User>,
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No `Authorization` header.
    Missing,
    /// A header that names no user of the file.
    Invalid,
}

impl Auth {
    /// Reads an auth file.
    ///
    /// # Errors
    ///
    /// [`AuthFileError`] when it cannot be read or a line is wrong.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, AuthFileError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| AuthFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses the text of an auth file.
    ///
    /// # Errors
    ///
    /// [`AuthFileError`] naming the first wrong line.
    pub fn parse(text: &str) -> Result<Self, AuthFileError> {
        let mut users: Vec<User> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |message: String| AuthFileError::Line { line, message };
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = trimmed.split_whitespace().collect();
            let [name, role, secret] = fields[..] else {
                return Err(err(format!(
                    "expected `name role secret`, found {} fields",
                    fields.len()
                )));
            };
            if name.contains(':') {
                return Err(err(format!("user name `{name}` contains `:`")));
            }
            let role = match role {
                "viewer" => Role::Viewer,
                "operator" => Role::Operator,
                // The field is not echoed: in a line with its columns swapped it is a secret.
                _ => {
                    return Err(err(format!(
                        "the role of `{name}` (the second field) must be viewer or operator"
                    )));
                }
            };
            let digest = if let Some(hex) = secret.strip_prefix("sha256:") {
                parse_hex32(hex)
                    .ok_or_else(|| err("sha256: must be followed by 64 hex digits".to_owned()))?
            } else if secret.chars().count() < MIN_SECRET_LEN {
                return Err(err(format!(
                    "the secret of `{name}` is shorter than {MIN_SECRET_LEN} characters"
                )));
            } else {
                Sha256::digest(secret.as_bytes()).into()
            };
            if users.iter().any(|u| u.name == name) {
                return Err(err(format!("user `{name}` is defined twice")));
            }
            if users.iter().any(|u| u.digest == digest) {
                return Err(err(format!(
                    "the secret of `{name}` is another user's: a Bearer token must name one user"
                )));
            }
            users.push(User {
                name: name.to_owned(),
                role,
                digest,
            });
        }
        if users.is_empty() {
            return Err(AuthFileError::Empty);
        }
        Ok(Self { users })
    }

    /// The user a request's `Authorization` header names.
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, Denied> {
        let value = headers.get(AUTHORIZATION).ok_or(Denied::Missing)?;
        let value = value.to_str().map_err(|_| Denied::Invalid)?;
        let (scheme, rest) = value.trim().split_once(' ').ok_or(Denied::Invalid)?;
        let (name, secret) = if scheme.eq_ignore_ascii_case("bearer") {
            (None, rest.trim().to_owned())
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .map_err(|_| Denied::Invalid)?;
            let decoded = String::from_utf8(decoded).map_err(|_| Denied::Invalid)?;
            let (n, s) = decoded.split_once(':').ok_or(Denied::Invalid)?;
            (Some(n.to_owned()), s.to_owned())
        } else {
            return Err(Denied::Invalid);
        };
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        // Compare against every user so the time taken does not tell which names exist.
        let mut found = None;
        for user in &self.users {
            let same = constant_time_eq(&user.digest, &digest);
            if same && name.as_deref().is_none_or(|n| n == user.name) {
                found = Some(user);
            }
        }
        found
            .map(|u| Principal {
                name: u.name.clone(),
                role: u.role,
            })
            .ok_or(Denied::Invalid)
    }
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The key the forms' CSRF tokens are made with: random per process, so a token is worth
/// nothing after a restart (the form is simply shown again).
#[derive(Clone)]
pub(crate) struct CsrfKey([u8; 32]);

impl std::fmt::Debug for CsrfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfKey(..)")
    }
}

type HmacSha256 = hmac::Hmac<Sha256>;

impl CsrfKey {
    pub(crate) fn random() -> Self {
        let mut key = [0u8; 32];
        // Without the OS's randomness the console must not start with a guessable key.
        getrandom::fill(&mut key).expect("the operating system's random number generator failed");
        Self(key)
    }

    fn mac(&self, user: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(b"sentinel-console csrf\0");
        mac.update(user.as_bytes());
        mac
    }

    /// The token the forms of `user` carry.
    pub(crate) fn token(&self, user: &str) -> String {
        let tag = self.mac(user).finalize().into_bytes();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag)
    }

    /// Whether `token` is `user`'s (in constant time).
    pub(crate) fn verify(&self, user: &str, token: &str) -> bool {
        let Ok(tag) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token) else {
            return false;
        };
        self.mac(user).verify_slice(&tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const FILE: &str = "# who may use the console\n\
        alice operator correct-horse-battery\n\n\
        bob viewer   bobs-long-secret-1\n\
        carol operator sha256:0a4d55a8d778e5022fab701977c5d840bbc486d0b7a2b3f1b8d2f9e1c7b6a8f0\n";

    fn header(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn basic_and_bearer_name_their_user() {
        let auth = Auth::parse(FILE).unwrap();
        let basic = base64::engine::general_purpose::STANDARD.encode("alice:correct-horse-battery");
        let p = auth
            .authenticate(&header(&format!("Basic {basic}")))
            .unwrap();
        assert_eq!((p.name.as_str(), p.role), ("alice", Role::Operator));
        let p = auth
            .authenticate(&header("Bearer bobs-long-secret-1"))
            .unwrap();
        assert_eq!((p.name.as_str(), p.role), ("bob", Role::Viewer));
    }

    #[test]
    fn a_secret_under_another_name_is_refused() {
        let auth = Auth::parse(FILE).unwrap();
        let basic = base64::engine::general_purpose::STANDARD.encode("bob:correct-horse-battery");
        let denied = auth.authenticate(&header(&format!("Basic {basic}")));
        assert_eq!(denied, Err(Denied::Invalid));
        assert_eq!(auth.authenticate(&HeaderMap::new()), Err(Denied::Missing));
        assert_eq!(
            auth.authenticate(&header("Bearer nope")),
            Err(Denied::Invalid)
        );
    }

    #[test]
    fn hashed_secrets_match_their_preimage() {
        let digest = Sha256::digest(b"a-hashed-secret-here");
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let auth = Auth::parse(&format!("dave operator sha256:{hex}")).unwrap();
        let p = auth
            .authenticate(&header("Bearer a-hashed-secret-here"))
            .unwrap();
        assert_eq!(p.name, "dave");
    }

    #[test]
    fn bad_lines_are_named_without_their_secret() {
        for (text, needle) in [
            (
                "alice admin correct-horse-battery",
                "must be viewer or operator",
            ),
            (
                "alice correct-horse-battery operator",
                "must be viewer or operator",
            ),
            ("alice operator", "found 2 fields"),
            ("alice operator short", "shorter than 16"),
            ("alice operator sha256:zz", "64 hex digits"),
            (
                "a operator correct-horse-battery\na viewer another-long-secret",
                "defined twice",
            ),
            (
                "a operator correct-horse-battery\nb viewer correct-horse-battery",
                "another user's",
            ),
        ] {
            let e = Auth::parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
            assert!(!e.contains("correct-horse"), "{e}");
        }
        assert!(matches!(
            Auth::parse("# nobody\n"),
            Err(AuthFileError::Empty)
        ));
    }

    #[test]
    fn csrf_tokens_are_per_user_and_per_key() {
        let key = CsrfKey::random();
        let t = key.token("alice");
        assert!(key.verify("alice", &t));
        assert!(!key.verify("bob", &t));
        assert!(!CsrfKey::random().verify("alice", &t));
        assert!(!key.verify("alice", "not base64 !"));
    }
}
