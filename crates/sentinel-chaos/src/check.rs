//! The verdict: the records as the store holds them after the run, the ledger the functions
//! wrote and every worker's report, held against the invariants (see the crate docs).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::report::{CallKind, CallReport, LedgerLine, Phase, execution_value};

/// Violations listed one by one before the rest are only counted.
const MAX_LISTED: usize = 50;

/// The state of one key's record after the run, reduced to what the checks need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyRecord {
    /// The state by the store's clock.
    pub(crate) state: sentinel::State,
    /// The record's current fencing token.
    pub(crate) token: u64,
    /// The process that claimed the current execution.
    pub(crate) owner_pid: Option<u32>,
    /// Why it is uncertain (stored or derived).
    pub(crate) reason: Option<String>,
    /// A completed record's value: `Ok(text)` for a stored string, `Err(json)` for anything
    /// else (a recorded error, another type, no result).
    pub(crate) value: Option<Result<String, String>>,
}

impl KeyRecord {
    /// Reduces a record as read from the store.
    pub(crate) fn from_record(record: &sentinel::Record) -> Self {
        let value = record.result.as_ref().map(|r| {
            if r.kind == sentinel::ResultKind::Value {
                serde_json::from_str::<String>(&r.json).map_err(|_| r.json.clone())
            } else {
                Err(format!("recorded error {}", r.json))
            }
        });
        Self {
            state: record.state,
            token: record.fencing_token.get(),
            owner_pid: record.owner.as_ref().map(|o| o.pid),
            reason: record.reason.map(|r| r.as_str().to_owned()),
            value,
        }
    }
}

/// Everything the checks read.
#[derive(Debug)]
pub(crate) struct Evidence<'a> {
    /// Every key's record, by key (absent keys have none).
    pub(crate) records: &'a HashMap<String, KeyRecord>,
    /// The ledger, in the order it was written.
    pub(crate) ledger: &'a [LedgerLine],
    /// Ledger lines that did not parse (or were torn).
    pub(crate) malformed_ledger_lines: u64,
    /// Every report line, with the pid of the process that wrote it, in each process's order.
    pub(crate) reports: &'a [(u32, CallReport)],
    /// The processes the harness SIGKILLed.
    pub(crate) killed: &'a HashSet<u32>,
}

/// What the checks found.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Findings {
    /// Extra `effect` lines: a key whose effect happened n times counts n − 1.
    pub(crate) double_executions: u64,
    /// Extra `start` lines: a key whose function was entered n times counts n − 1.
    pub(crate) double_claims: u64,
    /// Calls told "completed" (fresh or replayed) with a value the store does not hold.
    pub(crate) lost_completions: u64,
    /// Keys completed at the end.
    pub(crate) completed_keys: u64,
    /// Keys uncertain at the end.
    pub(crate) uncertain_keys: u64,
    /// Keys without a record at the end.
    pub(crate) absent_keys: u64,
    /// Keys still running (or reconciling) at the end.
    pub(crate) unsettled_keys: u64,
    /// Uncertain keys by what explains them (`owner_killed`, `owner_killed_before_f`,
    /// `not_recorded`, `owner_store_error`, `unexplained`).
    pub(crate) uncertain_by_cause: BTreeMap<String, u64>,
    /// Uncertain keys by the reason the store gives.
    pub(crate) uncertain_by_reason: BTreeMap<String, u64>,
    /// Keys some call saw uncertain that ended completed (a lease that expired while the work
    /// finished, then its completion stored under the same token: allowed, §2).
    pub(crate) uncertain_then_completed_keys: u64,
    /// Calls by what they returned.
    pub(crate) outcomes: BTreeMap<String, u64>,
    /// The longest a call took to claim (or to settle, when it did not run the function), in
    /// ms: a store stalled longer than the lease makes live owners read as uncertain.
    pub(crate) max_claim_ms: u64,
    /// The longest a completion took to be stored after the function returned, in ms.
    pub(crate) max_finish_ms: u64,
    /// `start` lines in the ledger.
    pub(crate) starts: u64,
    /// `effect` lines in the ledger.
    pub(crate) effects: u64,
    /// Every violation, in words (the first [`MAX_LISTED`]; the rest counted).
    pub(crate) violations: Vec<String>,
    /// Violations beyond the listed ones.
    pub(crate) violations_not_listed: u64,
}

impl Findings {
    fn violation(&mut self, text: String) {
        if self.violations.len() < MAX_LISTED {
            self.violations.push(text);
        } else {
            self.violations_not_listed += 1;
        }
    }

    /// True when no invariant was broken.
    pub(crate) fn ok(&self) -> bool {
        self.violations.is_empty() && self.violations_not_listed == 0
    }
}

/// The ledger and reports of one key.
#[derive(Default)]
struct KeyEvidence<'a> {
    starts: Vec<&'a LedgerLine>,
    effects: Vec<&'a LedgerLine>,
    reports: Vec<(u32, &'a CallReport)>,
}

/// Holds the evidence against the invariants.
pub(crate) fn check(evidence: &Evidence<'_>) -> Findings {
    let mut findings = Findings::default();
    if evidence.malformed_ledger_lines > 0 {
        findings.violation(format!(
            "the ledger has {} malformed line(s): the harness cannot vouch for its counts",
            evidence.malformed_ledger_lines
        ));
    }
    let mut keys: BTreeMap<&str, KeyEvidence<'_>> = BTreeMap::new();
    for line in evidence.ledger {
        let e = keys.entry(&line.key).or_default();
        match line.phase {
            Phase::Start => e.starts.push(line),
            Phase::Effect => e.effects.push(line),
        }
    }
    for (pid, report) in evidence.reports {
        *findings
            .outcomes
            .entry(report.kind.as_str().to_owned())
            .or_default() += 1;
        findings.max_claim_ms = findings.max_claim_ms.max(report.claim_ms.unwrap_or(0));
        findings.max_finish_ms = findings.max_finish_ms.max(report.finish_ms.unwrap_or(0));
        keys.entry(&report.key)
            .or_default()
            .reports
            .push((*pid, report));
    }
    for key in evidence.records.keys() {
        keys.entry(key).or_default();
    }
    findings.starts = count(evidence.ledger.iter().filter(|l| l.phase == Phase::Start));
    findings.effects = count(evidence.ledger.iter().filter(|l| l.phase == Phase::Effect));
    for (key, e) in &keys {
        check_key(
            key,
            e,
            evidence.records.get(*key),
            evidence.killed,
            &mut findings,
        );
    }
    findings
}

fn count<I: Iterator>(it: I) -> u64 {
    u64::try_from(it.count()).unwrap_or(u64::MAX)
}

fn describe_lines(lines: &[&LedgerLine]) -> String {
    lines
        .iter()
        .map(|l| format!("token {} pid {}", l.token, l.pid))
        .collect::<Vec<_>>()
        .join(", ")
}

#[allow(clippy::too_many_lines)] // one key, every rule in the order the docs list them
fn check_key(
    key: &str,
    e: &KeyEvidence<'_>,
    record: Option<&KeyRecord>,
    killed: &HashSet<u32>,
    findings: &mut Findings,
) {
    // 0 double executions: one effect per key at most, one entry into the function at most
    // (nothing here releases or resets a key), fenced: tokens grow in ledger order.
    if e.effects.len() > 1 {
        findings.double_executions += count(e.effects.iter()) - 1;
        findings.violation(format!(
            "DOUBLE EXECUTION: {key} had its effect {} times ({})",
            e.effects.len(),
            describe_lines(&e.effects)
        ));
    }
    if e.starts.len() > 1 {
        findings.double_claims += count(e.starts.iter()) - 1;
        findings.violation(format!(
            "DOUBLE CLAIM: the function of {key} was entered {} times ({})",
            e.starts.len(),
            describe_lines(&e.starts)
        ));
        if e.starts.windows(2).any(|w| w[0].token >= w[1].token) {
            findings.violation(format!(
                "FENCING: the tokens of {key}'s starts do not grow in ledger order ({})",
                describe_lines(&e.starts)
            ));
        }
    }
    for effect in &e.effects {
        if !e
            .starts
            .iter()
            .any(|s| s.token == effect.token && s.pid == effect.pid)
        {
            findings.violation(format!(
                "LEDGER: {key} has an effect (token {} pid {}) without its start",
                effect.token, effect.pid
            ));
        }
    }

    // The stored state: completed, uncertain, or absent and never entered.
    let stored_value = record.and_then(|r| {
        if r.state == sentinel::State::Completed {
            r.value.clone()
        } else {
            None
        }
    });
    match record {
        None => {
            findings.absent_keys += 1;
            if !e.starts.is_empty() {
                findings.violation(format!(
                    "ABSENT AFTER A RUN: {key} has no record although its function ran ({})",
                    describe_lines(&e.starts)
                ));
            }
        }
        Some(r) if r.state == sentinel::State::Completed => {
            findings.completed_keys += 1;
            match &r.value {
                Some(Ok(value)) => {
                    let produced = e
                        .effects
                        .iter()
                        .any(|l| *value == execution_value(key, l.token, l.pid));
                    if !produced {
                        findings.violation(format!(
                            "PHANTOM COMPLETION: {key} holds {value:?}, which no execution with \
                             an effect produced (effects: {})",
                            describe_lines(&e.effects)
                        ));
                    }
                    if !value.starts_with(&format!("{key}:{}:", r.token)) {
                        findings.violation(format!(
                            "FENCING: {key} is completed under token {} with the value {value:?} \
                             of another token",
                            r.token
                        ));
                    }
                }
                other => findings.violation(format!(
                    "WRONG RESULT: {key} is completed with {other:?}, not a string this harness \
                     returns"
                )),
            }
        }
        Some(r) if r.state == sentinel::State::Uncertain => {
            findings.uncertain_keys += 1;
            let reason = r.reason.clone().unwrap_or_else(|| "none".to_owned());
            *findings.uncertain_by_reason.entry(reason).or_default() += 1;
            let cause = uncertain_cause(r, e, killed);
            *findings
                .uncertain_by_cause
                .entry(cause.to_owned())
                .or_default() += 1;
            if cause == "unexplained" {
                findings.violation(format!(
                    "UNEXPLAINED UNCERTAIN: {key} (token {}, owner pid {:?}, reason {:?}) was \
                     neither run by a killed process nor reported not recorded, failed with a \
                     store error or uncertain (starts: {}; reports: {:?})",
                    r.token,
                    r.owner_pid,
                    r.reason,
                    describe_lines(&e.starts),
                    e.reports
                ));
            }
        }
        Some(r) => {
            findings.unsettled_keys += 1;
            findings.violation(format!(
                "UNSETTLED: {key} is still {} (token {}, owner pid {:?}) after every worker \
                 exited and the lease had time to expire",
                r.state, r.token, r.owner_pid
            ));
        }
    }

    // 0 lost completions: what a caller was told completed is what the store holds.
    let mut saw_uncertain = false;
    for (pid, report) in &e.reports {
        match report.kind {
            CallKind::Completed | CallKind::Replayed => {
                let told = report.value.as_deref().unwrap_or("");
                if stored_value.as_ref().and_then(|v| v.as_deref().ok()) != Some(told) {
                    findings.lost_completions += 1;
                    findings.violation(format!(
                        "LOST COMPLETION: pid {pid} was told {key} {} with {told:?} (token \
                         {:?}) but the store holds {} ",
                        report.kind.as_str(),
                        report.token,
                        match record {
                            None => "no record".to_owned(),
                            Some(r) => format!("{} {:?} (token {})", r.state, r.value, r.token),
                        }
                    ));
                }
                if report.kind == CallKind::Completed {
                    let fresh_effect = e.effects.iter().any(|l| {
                        l.pid == *pid
                            && Some(l.token) == report.token
                            && told == execution_value(key, l.token, l.pid)
                    });
                    if !fresh_effect {
                        findings.violation(format!(
                            "FRESH WITHOUT EFFECT: pid {pid} was told it ran {key} (token {:?}, \
                             value {told:?}) but the ledger has no such effect",
                            report.token
                        ));
                    }
                }
            }
            CallKind::Uncertain => saw_uncertain = true,
            CallKind::Failed | CallKind::Other => findings.violation(format!(
                "UNEXPECTED OUTCOME: pid {pid} got {} for {key}: {}",
                report.kind.as_str(),
                report.detail.as_deref().unwrap_or("")
            )),
            CallKind::Running | CallKind::NotRecorded | CallKind::Error => {}
        }
    }
    if saw_uncertain && stored_value.is_some() {
        findings.uncertain_then_completed_keys += 1;
    }
}

/// What explains an uncertain key, the strongest explanation first.
fn uncertain_cause(r: &KeyRecord, e: &KeyEvidence<'_>, killed: &HashSet<u32>) -> &'static str {
    // The execution that owns the record: its own start line, under the record's token.
    let killed_started = e
        .starts
        .iter()
        .any(|l| l.token == r.token && killed.contains(&l.pid));
    let owner_killed = r.owner_pid.is_some_and(|p| killed.contains(&p));
    if killed_started {
        return "owner_killed";
    }
    if owner_killed && !e.starts.iter().any(|l| l.token == r.token) {
        // Killed between the claim and the function's first line.
        return "owner_killed_before_f";
    }
    if e.reports
        .iter()
        .any(|(_, rep)| rep.kind == CallKind::NotRecorded && rep.token == Some(r.token))
    {
        return "not_recorded";
    }
    // The owner was told its call failed with a store error: a claim that committed while its
    // reply was lost and the re-read could not settle it (a cut, or a restart in progress).
    let owner_store_error = e.reports.iter().any(|(pid, rep)| {
        Some(*pid) == r.owner_pid
            && rep.kind == CallKind::Error
            && rep
                .detail
                .as_deref()
                .is_some_and(|d| d.starts_with("store error"))
    });
    if owner_store_error {
        return "owner_store_error";
    }
    "unexplained"
}

#[cfg(test)]
mod tests {
    use sentinel::State;

    use super::*;

    fn line(phase: Phase, key: &str, token: u64, pid: u32) -> LedgerLine {
        LedgerLine {
            phase,
            key: key.into(),
            token,
            pid,
        }
    }

    fn completed(key: &str, token: u64, pid: u32) -> KeyRecord {
        KeyRecord {
            state: State::Completed,
            token,
            owner_pid: Some(pid),
            reason: None,
            value: Some(Ok(execution_value(key, token, pid))),
        }
    }

    fn report(key: &str, kind: CallKind, value: Option<String>, token: Option<u64>) -> CallReport {
        CallReport {
            key: key.into(),
            kind,
            value,
            token,
            detail: None,
            claim_ms: None,
            finish_ms: None,
            at_ms: None,
        }
    }

    fn run(
        records: &HashMap<String, KeyRecord>,
        ledger: &[LedgerLine],
        reports: &[(u32, CallReport)],
        killed: &[u32],
    ) -> Findings {
        let killed: HashSet<u32> = killed.iter().copied().collect();
        check(&Evidence {
            records,
            ledger,
            malformed_ledger_lines: 0,
            reports,
            killed: &killed,
        })
    }

    #[test]
    fn a_clean_run_passes() {
        let records = HashMap::from([("k1".to_owned(), completed("k1", 3, 10))]);
        let ledger = [
            line(Phase::Start, "k1", 3, 10),
            line(Phase::Effect, "k1", 3, 10),
        ];
        let v = Some(execution_value("k1", 3, 10));
        let reports = [
            (10, report("k1", CallKind::Completed, v.clone(), Some(3))),
            (11, report("k1", CallKind::Replayed, v, Some(3))),
            (12, report("k2", CallKind::Running, None, Some(4))),
        ];
        let f = run(&records, &ledger, &reports, &[]);
        assert!(f.ok(), "{:?}", f.violations);
        assert_eq!((f.completed_keys, f.absent_keys), (1, 1));
    }

    #[test]
    fn a_second_effect_is_a_double_execution() {
        let records = HashMap::from([("k1".to_owned(), completed("k1", 5, 11))]);
        let ledger = [
            line(Phase::Start, "k1", 3, 10),
            line(Phase::Effect, "k1", 3, 10),
            line(Phase::Start, "k1", 5, 11),
            line(Phase::Effect, "k1", 5, 11),
        ];
        let f = run(&records, &ledger, &[], &[10]);
        assert_eq!((f.double_executions, f.double_claims), (1, 1));
        assert!(!f.ok());
    }

    #[test]
    fn a_completion_the_store_lost_is_counted() {
        let records = HashMap::from([(
            "k1".to_owned(),
            KeyRecord {
                state: State::Uncertain,
                token: 3,
                owner_pid: Some(10),
                reason: Some("owner_died".into()),
                value: None,
            },
        )]);
        let ledger = [
            line(Phase::Start, "k1", 3, 10),
            line(Phase::Effect, "k1", 3, 10),
        ];
        let v = Some(execution_value("k1", 3, 10));
        let reports = [(10, report("k1", CallKind::Completed, v, Some(3)))];
        let f = run(&records, &ledger, &reports, &[]);
        assert_eq!(f.lost_completions, 1);
        assert_eq!(f.uncertain_by_cause.get("unexplained"), Some(&1));
    }

    #[test]
    fn uncertain_keys_are_explained_by_kills_and_not_recorded_reports() {
        let uncertain = |pid| KeyRecord {
            state: State::Uncertain,
            token: 3,
            owner_pid: Some(pid),
            reason: Some("owner_died".into()),
            value: None,
        };
        let records = HashMap::from([
            ("k1".to_owned(), uncertain(10)),
            ("k2".to_owned(), uncertain(11)),
            ("k3".to_owned(), uncertain(12)),
        ]);
        let ledger = [
            line(Phase::Start, "k1", 3, 10),
            line(Phase::Start, "k2", 3, 11),
            line(Phase::Effect, "k2", 3, 11),
        ];
        let reports = [(
            11,
            report(
                "k2",
                CallKind::NotRecorded,
                Some(execution_value("k2", 3, 11)),
                Some(3),
            ),
        )];
        let f = run(&records, &ledger, &reports, &[10, 12]);
        assert!(f.ok(), "{:?}", f.violations);
        assert_eq!(f.uncertain_by_cause.get("owner_killed"), Some(&1));
        assert_eq!(f.uncertain_by_cause.get("not_recorded"), Some(&1));
        assert_eq!(f.uncertain_by_cause.get("owner_killed_before_f"), Some(&1));
    }

    #[test]
    fn an_absent_key_that_ran_and_a_running_key_are_violations() {
        let records = HashMap::from([(
            "k2".to_owned(),
            KeyRecord {
                state: State::Running,
                token: 4,
                owner_pid: Some(10),
                reason: None,
                value: None,
            },
        )]);
        let ledger = [line(Phase::Start, "k1", 3, 10)];
        let f = run(&records, &ledger, &[], &[]);
        assert_eq!(f.violations.len(), 2, "{:?}", f.violations);
        assert_eq!(f.unsettled_keys, 1);
    }
}
