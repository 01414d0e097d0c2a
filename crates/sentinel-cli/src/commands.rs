//! The operator subcommands, one function each: `init`, `inspect`, `history`, `list`,
//! `reconcile`, `resolve`, `forget`, `prune`. Each returns its exit code; what they print is
//! built in `format.rs`.

use std::time::Duration;

use sentinel::store::{ListQuery, OperatorAction, PruneQuery, Resolution};
use sentinel::{FencingToken, ResultKind, State, StoredResult};

use crate::cli::ResolveArgs;
use crate::exit::{Exit, Failure, fail};
use crate::format;
use crate::store::{Target, actor};

impl Target {
    fn action(&self, key: &str, reason: Option<String>) -> OperatorAction {
        OperatorAction::new(self.namespace.clone(), key, actor(), reason)
    }

    fn fail(&self, e: sentinel::Error) -> Failure {
        fail(e, &self.url)
    }
}

pub(crate) fn init(t: &Target) -> Result<u8, Failure> {
    println!("sentinel: schema ready ({})", sentinel::redact_url(&t.url));
    Ok(0)
}

pub(crate) async fn inspect(t: &Target, key: &str, json: bool) -> Result<u8, Failure> {
    let Some(record) = t
        .sentinel
        .inspect(&t.namespace, key)
        .await
        .map_err(|e| t.fail(e))?
    else {
        return Err(Failure::new(
            Exit::Refused,
            format!("no record for key {key} in namespace {}", t.namespace),
        ));
    };
    if json {
        println!("{}", sentinel::format::record_json(&record));
    } else {
        print!("{}", format::record_text(&record));
    }
    Ok(0)
}

pub(crate) async fn history(
    t: &Target,
    key: &str,
    json: bool,
    limit: usize,
) -> Result<u8, Failure> {
    let events = t
        .sentinel
        .history(&t.namespace, key, limit)
        .await
        .map_err(|e| t.fail(e))?;
    if json {
        let all: Vec<_> = events.iter().map(sentinel::format::event_json).collect();
        println!("{}", serde_json::Value::Array(all));
    } else if events.is_empty() {
        eprintln!(
            "sentinel: no events for key {key} in namespace {}",
            t.namespace
        );
    } else {
        print!("{}", format::events_table(&events));
    }
    Ok(0)
}

pub(crate) async fn list(
    t: &Target,
    state: Option<State>,
    json: bool,
    limit: usize,
) -> Result<u8, Failure> {
    let mut q = ListQuery::new(limit);
    q.namespace = Some(t.namespace.clone());
    q.state = state;
    let records = t.sentinel.list(&q).await.map_err(|e| t.fail(e))?;
    if json {
        let all: Vec<_> = records.iter().map(sentinel::format::record_json).collect();
        println!("{}", serde_json::Value::Array(all));
    } else {
        print!("{}", format::records_table(&records));
    }
    Ok(0)
}

pub(crate) async fn reconcile(
    t: &Target,
    key: &str,
    force: bool,
    reason: Option<String>,
) -> Result<u8, Failure> {
    let token = t
        .sentinel
        .reconcile(&t.action(key, reason), force)
        .await
        .map_err(|e| t.fail(e))?;
    println!("{token}");
    eprintln!(
        "sentinel: key {key} is yours to reconcile (fencing token {token}); finish with \
         `sentinel resolve {key} --complete` or `--reset` (add --token {token})"
    );
    Ok(0)
}

pub(crate) async fn resolve(t: &Target, r: ResolveArgs) -> Result<u8, Failure> {
    let resolution = if r.reset {
        Resolution::Reset
    } else {
        // The engine refuses a result that is not JSON (exit 2).
        let result = r
            .result
            .map(|json| StoredResult::new(ResultKind::Value, json));
        Resolution::Complete(result)
    };
    t.sentinel
        .resolve(
            &t.action(&r.key, r.reason),
            &resolution,
            r.token.map(FencingToken::new),
        )
        .await
        .map_err(|e| t.fail(e))?;
    let what = if r.reset {
        "reset: the next run executes again"
    } else {
        "completed"
    };
    eprintln!("sentinel: key {} {what}", r.key);
    Ok(0)
}

pub(crate) async fn forget(t: &Target, key: &str, reason: Option<String>) -> Result<u8, Failure> {
    t.sentinel
        .forget(&t.action(key, reason))
        .await
        .map_err(|e| t.fail(e))?;
    eprintln!("sentinel: key {key} forgotten; it may run again");
    Ok(0)
}

pub(crate) async fn prune(
    t: &Target,
    older_than: Option<Duration>,
    all_namespaces: bool,
) -> Result<u8, Failure> {
    let mut q = if all_namespaces {
        PruneQuery::default()
    } else {
        PruneQuery::in_namespace(t.namespace.clone())
    };
    q.older_than = older_than;
    let n = t.sentinel.prune(&q).await.map_err(|e| t.fail(e))?;
    println!("{n}");
    Ok(0)
}
