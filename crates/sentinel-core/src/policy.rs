//! What a failing function means for its key.

use crate::{Error, ExecutionContext, LeaseLost, UncertainReason};

/// What a failing function means for its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// The default: the effect may have happened; the key turns uncertain at once and waits for
    /// an operator.
    #[default]
    Uncertain,
    /// The failure means nothing happened: the record is removed and the next caller runs.
    Release,
    /// The error is stored and replayed as `Failed` to later callers.
    Record,
}

impl FailurePolicy {
    /// The lowercase name, as the CLI and the Python package spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::Uncertain => "uncertain",
            FailurePolicy::Release => "release",
            FailurePolicy::Record => "record",
        }
    }

    /// The policy that applies to this execution's failure. Once the lease is lost, an error
    /// says nothing reliable about what happened (the function may have been stopped half-way):
    /// only an operator can decide, so neither release nor record applies. Work declared not
    /// started is released whatever the policy.
    pub(crate) fn effective(self, ctx: &ExecutionContext) -> Self {
        if ctx.is_lease_lost() {
            FailurePolicy::Uncertain
        } else if ctx.did_not_start() {
            FailurePolicy::Release
        } else {
            self
        }
    }
}

impl std::fmt::Display for FailurePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for FailurePolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "uncertain" => Ok(Self::Uncertain),
            "release" => Ok(Self::Release),
            "record" => Ok(Self::Record),
            other => Err(Error::invalid(format!(
                "unknown failure policy `{other}` (expected uncertain, release or record)"
            ))),
        }
    }
}

/// Why a failure left the key uncertain: the lease loss when there was one.
pub(crate) fn failure_reason(ctx: &ExecutionContext) -> UncertainReason {
    match ctx.lease_lost_reason() {
        Some(LeaseLost::CeilingPassed) => UncertainReason::CeilingPassed,
        Some(_) => UncertainReason::OwnerDied,
        None => UncertainReason::Failed,
    }
}
