//! The `sentinel` command.
//!
//! The one `unsafe` block of the project is in `run.rs`: a `pre_exec` hook that ties the child
//! command's life to the runner (PR_SET_PDEATHSIG).

mod base64;
mod cli;
mod duration;
mod format;
mod run;
mod store;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use sentinel::store::{ListQuery, OperatorAction, PruneQuery, Resolution};
use sentinel::{FencingToken, ResultKind, State, StoredResult};

use crate::cli::{Cli, Command, StateArg};
use crate::store::{EXIT_REFUSED, Failure, fail};

fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == run::WATCHDOG_ARG)
    {
        run::watchdog();
        return ExitCode::SUCCESS;
    }
    let default_db = store::default_sqlite_path().map_or_else(
        || "(no state directory: set XDG_STATE_HOME or HOME)".to_owned(),
        |p| p.display().to_string(),
    );
    let after = format!(
        "Database: --database-url, else SENTINEL_DATABASE_URL, else the SQLite file\n  {default_db}\n\
         (created on first use). DATABASE_URL is deliberately not read.\n\n\
         Exit codes of `run`: the command's own code (fresh or replayed); 75 another worker holds\n\
         the key; 76 the key is uncertain or being reconciled; 124 Sentinel stopped the command;\n\
         74 the outcome could not be recorded; 126/127 the command is not executable / not found;\n\
         65 another --fingerprint; 2 usage error; 69 the database is unreachable."
    );
    let matches = match Cli::command().after_help(after).try_get_matches() {
        Ok(m) => m,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sentinel: cannot start: {e}");
            return ExitCode::from(70);
        }
    };
    let code = match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("sentinel: {}", f.message);
            f.code
        }
    };
    ExitCode::from(code)
}

async fn dispatch(cli: Cli) -> Result<u8, Failure> {
    let url = store::resolve_url(cli.database_url)?;
    let ns = cli.namespace;
    sentinel::validate_namespace(&ns).map_err(|e| fail(e, &url))?;
    let init = matches!(cli.command, Command::Init);
    let s = store::open(&url, init).await?;
    let action = |key: &str, reason: Option<String>| {
        OperatorAction::new(ns.clone(), key, store::actor(), reason)
    };
    let out = match cli.command {
        Command::Init => {
            println!(
                "sentinel: schema ready ({})",
                sentinel::postgres::redact_url(&url)
            );
            0
        }
        Command::Run(args) => run::run(&s, &ns, &url, args).await?,
        Command::Inspect { key, json } => {
            sentinel::validate_key(&key).map_err(|e| fail(e, &url))?;
            let Some(record) = s.inspect(&ns, &key).await.map_err(|e| fail(e, &url))? else {
                return Err(Failure::new(
                    EXIT_REFUSED,
                    format!("no record for key {key} in namespace {ns}"),
                ));
            };
            if json {
                println!("{}", format::record_json(&record));
            } else {
                print!("{}", format::record_text(&record));
            }
            0
        }
        Command::History { key, json, limit } => {
            sentinel::validate_key(&key).map_err(|e| fail(e, &url))?;
            let events = s
                .history(&ns, &key, limit)
                .await
                .map_err(|e| fail(e, &url))?;
            if json {
                let all: Vec<_> = events.iter().map(format::event_json).collect();
                println!("{}", serde_json::Value::Array(all));
            } else if events.is_empty() {
                eprintln!("sentinel: no events for key {key} in namespace {ns}");
            } else {
                let now = std::time::SystemTime::now();
                let rows: Vec<Vec<String>> = events
                    .iter()
                    .map(|e| {
                        vec![
                            format::rfc3339(e.at),
                            format!("({})", format::relative(e.at, now)),
                            e.kind.to_string(),
                            e.fencing_token.to_string(),
                            e.owner
                                .as_ref()
                                .map_or_else(String::new, ToString::to_string),
                            e.actor.clone().unwrap_or_default(),
                            e.reason.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    format::table(&["AT", "", "EVENT", "TOKEN", "OWNER", "BY", "WHY"], &rows)
                );
            }
            0
        }
        Command::List { state, json, limit } => {
            if limit == 0 {
                return Err(Failure::usage("--limit must be positive"));
            }
            let mut q = ListQuery::new(limit);
            q.namespace = Some(ns.clone());
            q.state = state.map(|s| match s {
                StateArg::Running => State::Running,
                StateArg::Uncertain => State::Uncertain,
                StateArg::Completed => State::Completed,
                StateArg::Reconciling => State::Reconciling,
            });
            let records = s.list(&q).await.map_err(|e| fail(e, &url))?;
            if json {
                let all: Vec<_> = records.iter().map(format::record_json).collect();
                println!("{}", serde_json::Value::Array(all));
            } else {
                let rows: Vec<Vec<String>> = records
                    .iter()
                    .map(|r| {
                        vec![
                            r.key.clone(),
                            r.state.to_string(),
                            r.fencing_token.to_string(),
                            r.owner
                                .as_ref()
                                .map_or_else(String::new, ToString::to_string),
                            format!("updated {}", format::relative(r.updated_at, r.observed_at)),
                            r.reason.map(|x| x.to_string()).unwrap_or_default(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    format::table(
                        &["KEY", "STATE", "TOKEN", "OWNER", "UPDATED", "REASON"],
                        &rows
                    )
                );
            }
            0
        }
        Command::Reconcile { key, force, reason } => {
            let token = s
                .reconcile(&action(&key, reason), force)
                .await
                .map_err(|e| fail(e, &url))?;
            println!("{token}");
            eprintln!(
                "sentinel: key {key} is yours to reconcile (fencing token {token}); finish with \
                 `sentinel resolve {key} --complete` or `--reset` (add --token {token})"
            );
            0
        }
        Command::Resolve(r) => {
            let resolution = if r.reset {
                Resolution::Reset
            } else {
                let result = match r.result {
                    Some(json) => {
                        serde_json::from_str::<serde_json::Value>(&json).map_err(|e| {
                            Failure::usage(format!("--result is not valid JSON: {e}"))
                        })?;
                        Some(StoredResult::new(ResultKind::Value, json))
                    }
                    None => None,
                };
                Resolution::Complete(result)
            };
            s.resolve(
                &action(&r.key, r.reason),
                &resolution,
                r.token.map(FencingToken::new),
            )
            .await
            .map_err(|e| fail(e, &url))?;
            let what = if r.reset {
                "reset: the next run executes again"
            } else {
                "completed"
            };
            eprintln!("sentinel: key {} {what}", r.key);
            0
        }
        Command::Forget { key, reason } => {
            s.forget(&action(&key, reason))
                .await
                .map_err(|e| fail(e, &url))?;
            eprintln!("sentinel: key {key} forgotten; it may run again");
            0
        }
        Command::Prune { older_than } => {
            let mut q = PruneQuery::default();
            q.older_than = older_than;
            let n = s.prune(&q).await.map_err(|e| fail(e, &url))?;
            println!("{n}");
            0
        }
    };
    s.shutdown().await;
    Ok(out)
}
