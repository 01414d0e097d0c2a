//! Exit codes: one type, which also writes the help text's table (docs/design.md §6), and the
//! mapping of library errors onto it.

use sentinel::{Error, StoreErrorKind};

/// Sentinel's own exit codes. A fresh or replayed `run` exits with the command's code instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    Refused = 1,
    Usage = 2,
    Fingerprint = 65,
    Unavailable = 69,
    Internal = 70,
    NotRecorded = 74,
    Busy = 75,
    Uncertain = 76,
    Stopped = 124,
    NotExecutable = 126,
    NotFound = 127,
}

impl Exit {
    /// Every code, in the order the help table lists them.
    const ALL: [Exit; 11] = [
        Exit::Busy,
        Exit::Uncertain,
        Exit::Stopped,
        Exit::NotRecorded,
        Exit::NotExecutable,
        Exit::NotFound,
        Exit::Fingerprint,
        Exit::Refused,
        Exit::Usage,
        Exit::Unavailable,
        Exit::Internal,
    ];

    pub(crate) fn code(self) -> u8 {
        self as u8
    }

    fn meaning(self) -> &'static str {
        match self {
            Exit::Refused => "an operator action was refused, or the key has no record",
            Exit::Usage => "usage or input error",
            Exit::Fingerprint => "the key was used with another --fingerprint",
            Exit::Unavailable => {
                "the database is unreachable (or has no schema: run `sentinel init`)"
            }
            Exit::Internal => "Sentinel itself failed",
            Exit::NotRecorded => "the command ran but its outcome could not be recorded",
            Exit::Busy => {
                "another worker holds the key (or --wait timed out), or the database stayed locked"
            }
            Exit::Uncertain => "the key is uncertain or being reconciled",
            Exit::Stopped => "Sentinel stopped the command (hard ceiling or lease lost)",
            Exit::NotExecutable => "the command is not executable (nothing ran)",
            Exit::NotFound => "the command was not found (nothing ran)",
        }
    }

    /// The table printed under `--help`.
    pub(crate) fn help() -> String {
        let mut out = String::from(
            "Exit codes: `run` exits with the command's own code, fresh or replayed; otherwise\n",
        );
        for e in Exit::ALL {
            out.push_str(&format!("  {:>3}  {}\n", e.code(), e.meaning()));
        }
        out
    }
}

/// An error with the exit code it maps to.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            code: exit.code(),
            message: message.into(),
        }
    }

    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, message)
    }
}

/// Maps a library error to an exit code and one line of text; `url` is shown (without its
/// password) when the database could not be reached.
pub(crate) fn fail(e: Error, url: &str) -> Failure {
    match e {
        Error::InvalidInput(m) => Failure::usage(m),
        // Locked or racing: nothing was written and a later try may succeed (EX_TEMPFAIL).
        Error::Store(s) if s.kind() == StoreErrorKind::Busy => {
            Failure::new(Exit::Busy, format!("{s}; try again"))
        }
        Error::Store(s) => {
            let hint = match s.kind() {
                StoreErrorKind::Unavailable => {
                    format!(" (database: {})", sentinel::redact_url(url))
                }
                _ => String::new(),
            };
            Failure::new(Exit::Unavailable, format!("{s}{hint}"))
        }
        Error::FingerprintMismatch { namespace, key } => Failure::new(
            Exit::Fingerprint,
            format!("key {key} (namespace {namespace}) was used with another --fingerprint"),
        ),
        Error::NotRecorded(nr) => Failure::new(
            Exit::NotRecorded,
            format!(
                "the command ran (fencing token {}) but its outcome could not be recorded: {}; \
                 the key is left uncertain",
                nr.token, nr.detail
            ),
        ),
        Error::NotFound { namespace, key } => Failure::new(
            Exit::Refused,
            format!("no record for key {key} in namespace {namespace}"),
        ),
        Error::Refused {
            key,
            state,
            token,
            why,
            ..
        } => Failure::new(
            Exit::Refused,
            format!("refused: key {key} is {state} (fencing token {token}); {why}"),
        ),
        Error::Codec(m) => Failure::new(Exit::Refused, m),
        Error::Internal(m) => Failure::new(Exit::Internal, m),
        other => Failure::new(Exit::Internal, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::{Exit, fail};
    use sentinel::{Error, StoreError};

    /// L13: a store that stayed locked is "try again" (75), not "unreachable" (69).
    #[test]
    fn a_locked_store_is_busy_not_unreachable() {
        let f = fail(Error::Store(StoreError::busy("locked")), "sqlite:///x.db");
        assert_eq!(f.code, Exit::Busy.code());
        let f = fail(
            Error::Store(StoreError::unavailable("down")),
            "postgres://u:pw@h/d",
        );
        assert_eq!(f.code, Exit::Unavailable.code());
        assert!(!f.message.contains("pw"), "{}", f.message);
    }

    /// The help table lists every code exactly once (the match below fails to compile when a
    /// variant is added, and the count check fails when it is not added to `ALL`).
    #[test]
    fn help_table_lists_every_exit_code() {
        let variants = |e: Exit| match e {
            Exit::Refused
            | Exit::Usage
            | Exit::Fingerprint
            | Exit::Unavailable
            | Exit::Internal
            | Exit::NotRecorded
            | Exit::Busy
            | Exit::Uncertain
            | Exit::Stopped
            | Exit::NotExecutable
            | Exit::NotFound => 11,
        };
        assert_eq!(Exit::ALL.len(), variants(Exit::Usage));
        let mut codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Exit::ALL.len());
        let help = Exit::help();
        for e in Exit::ALL {
            assert!(help.contains(&format!("{:>3}  ", e.code())), "{help}");
        }
    }
}
