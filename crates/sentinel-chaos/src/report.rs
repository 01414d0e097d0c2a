//! What the processes write down, and how the parent reads it back: the shared ledger of
//! executions (`start`/`effect` lines written by the function itself) and each worker's report
//! (one JSON line per finished call).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Appends one line with a single `write(2)`: the files are opened with `O_APPEND`, so lines of
/// concurrent processes never interleave, and a SIGKILL cannot land inside one.
pub(crate) fn append_line(file: &File, line: &str) -> std::io::Result<()> {
    let mut f = file;
    f.write_all(line.as_bytes())
}

/// Opens (creating) a file for appending.
pub(crate) fn open_append(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// Which half of an execution a ledger line records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// The function was entered (`start <key> <token> <pid>`).
    Start,
    /// The function's side effect happened (`effect <key> <token> <pid>`): the one thing that
    /// must never happen twice for a key.
    Effect,
}

/// One line of the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LedgerLine {
    /// Start or effect.
    pub(crate) phase: Phase,
    /// The key executed.
    pub(crate) key: String,
    /// The fencing token the function ran under.
    pub(crate) token: u64,
    /// The process that ran it.
    pub(crate) pid: u32,
}

impl LedgerLine {
    /// The line as written (with its newline).
    pub(crate) fn render(phase: Phase, key: &str, token: u64, pid: u32) -> String {
        let word = match phase {
            Phase::Start => "start",
            Phase::Effect => "effect",
        };
        format!("{word} {key} {token} {pid}\n")
    }

    /// Parses one line (without its newline); `None` when malformed.
    pub(crate) fn parse(line: &str) -> Option<Self> {
        let mut words = line.split(' ');
        let phase = match words.next()? {
            "start" => Phase::Start,
            "effect" => Phase::Effect,
            _ => return None,
        };
        let key = words.next()?.to_owned();
        let token = words.next()?.parse().ok()?;
        let pid = words.next()?.parse().ok()?;
        if words.next().is_some() {
            return None;
        }
        Some(Self {
            phase,
            key,
            token,
            pid,
        })
    }
}

/// The value an execution returns: which key, token and process produced it. Every stored or
/// replayed value must be one of these, with an `effect` line to match.
pub(crate) fn execution_value(key: &str, token: u64, pid: u32) -> String {
    format!("{key}:{token}:{pid}")
}

/// What one call told the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CallKind {
    /// This call ran the function and its value was stored.
    Completed,
    /// A stored value was replayed.
    Replayed,
    /// Another worker held a live lease.
    Running,
    /// The key was uncertain.
    Uncertain,
    /// The function ran but its outcome could not be stored (`Error::NotRecorded`).
    NotRecorded,
    /// The function failed (it never does here: a harness problem).
    Failed,
    /// Any other error (store unreachable, ambiguous claim not settled, …).
    Error,
    /// An outcome this harness does not expect (e.g. completed without a result).
    Other,
}

impl CallKind {
    /// The snake_case name used in the summary.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CallKind::Completed => "completed",
            CallKind::Replayed => "replayed",
            CallKind::Running => "running",
            CallKind::Uncertain => "uncertain",
            CallKind::NotRecorded => "not_recorded",
            CallKind::Failed => "failed",
            CallKind::Error => "error",
            CallKind::Other => "other",
        }
    }
}

/// One line of a worker's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CallReport {
    /// The key called.
    pub(crate) key: String,
    /// What the call returned.
    pub(crate) kind: CallKind,
    /// The value: fresh or replayed, or the function's output inside a not-recorded error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) value: Option<String>,
    /// The fencing token the outcome refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) token: Option<u64>,
    /// A reason or an error's text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) detail: Option<String>,
    /// Milliseconds from the call to the function's first line (when it ran) or to the call's
    /// return (when it did not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) claim_ms: Option<u64>,
    /// Milliseconds from the function's return to the call's return (storing the outcome).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) finish_ms: Option<u64>,
    /// When the call started, in milliseconds since the Unix epoch (to line reports up with the
    /// store's event times).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) at_ms: Option<u64>,
}

/// Counts the complete lines appended to `path` since `offset` and moves `offset` past them.
/// A file not created yet has none; a trailing partial line is left for the next look.
pub(crate) fn count_new_lines(path: &Path, offset: &mut u64) -> std::io::Result<u64> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    file.seek(SeekFrom::Start(*offset))?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)?;
    let Some(last) = buf.iter().rposition(|b| *b == b'\n') else {
        return Ok(0);
    };
    let complete = &buf[..=last];
    *offset += u64::try_from(complete.len()).unwrap_or(u64::MAX);
    let lines = complete.iter().filter(|b| **b == b'\n').count();
    Ok(u64::try_from(lines).unwrap_or(u64::MAX))
}

/// Reads a whole line-oriented file: its complete lines, and whether something followed the
/// last newline (a torn write, which a SIGKILL cannot cause with one `write(2)` per line).
pub(crate) fn read_lines(path: &Path) -> std::io::Result<(Vec<String>, bool)> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), false)),
        Err(e) => return Err(e),
    };
    let torn = !text.is_empty() && !text.ends_with('\n');
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if torn {
        lines.pop();
    }
    Ok((lines, torn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_lines_round_trip_and_garbage_is_refused() {
        let line = LedgerLine::render(Phase::Effect, "k7", 42, 1234);
        let parsed = LedgerLine::parse(line.trim_end()).unwrap();
        assert_eq!(
            parsed,
            LedgerLine {
                phase: Phase::Effect,
                key: "k7".into(),
                token: 42,
                pid: 1234
            }
        );
        assert_eq!(LedgerLine::parse("effect k7 42"), None);
        assert_eq!(LedgerLine::parse("effect k7 42 1 x"), None);
        assert_eq!(LedgerLine::parse("begin k7 42 1"), None);
        assert_eq!(LedgerLine::parse("start k7 -1 1"), None);
    }
}
