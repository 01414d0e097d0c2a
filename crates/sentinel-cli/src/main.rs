//! The `sentinel` command: `main` parses the flags, `run` opens the store and hands each
//! subcommand to its function (`commands.rs`, `run.rs`), and every failure becomes one line on
//! stderr and an exit code of `exit.rs`.
//!
//! The one `unsafe` block of the project is in `child.rs`: a `pre_exec` hook that ties the child
//! command's life to the runner (PR_SET_PDEATHSIG).

mod base64;
mod child;
mod cli;
mod commands;
mod duration;
mod exit;
mod format;
mod run;
mod serve;
mod store;

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::exit::{Exit, Failure};

fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == child::WATCHDOG_ARG)
    {
        child::watchdog();
        return ExitCode::SUCCESS;
    }
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let code = match run(cli) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("sentinel: {}", f.message);
            f.code
        }
    };
    ExitCode::from(code)
}

/// Opens the store the flags name and runs one subcommand; returns its exit code.
fn run(cli: Cli) -> Result<u8, Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::new(Exit::Internal, format!("cannot start: {e}")))?;
    runtime.block_on(async {
        // Checked before the store opens, so that a refused address touches nothing.
        let console = match &cli.command {
            Command::Serve(args) => Some(serve::prepare(args)?),
            _ => None,
        };
        let url = store::resolve_url(cli.database_url)?;
        sentinel::validate_namespace(&cli.namespace).map_err(|e| exit::fail(e, &url))?;
        let target = store::Target::open(url, cli.namespace, &cli.command).await?;
        let code = match cli.command {
            Command::Init => commands::init(&target),
            Command::Run(args) => {
                run::run(&target.sentinel, &target.namespace, &target.url, args).await
            }
            Command::Inspect { key, json } => commands::inspect(&target, &key, json).await,
            Command::History { key, json, limit } => {
                commands::history(&target, &key, json, limit).await
            }
            Command::List { state, json, limit } => {
                commands::list(&target, state.map(Into::into), json, limit).await
            }
            Command::Reconcile { key, force, reason } => {
                commands::reconcile(&target, &key, force, reason).await
            }
            Command::Resolve(args) => commands::resolve(&target, args).await,
            Command::Serve(_) => match console {
                Some(c) => serve::serve(&target, c).await,
                None => unreachable!("prepared above"),
            },
            Command::Forget { key, reason } => commands::forget(&target, &key, reason).await,
            Command::Prune {
                older_than,
                all_namespaces,
            } => commands::prune(&target, older_than, all_namespaces).await,
        };
        target.sentinel.shutdown().await;
        code
    })
}
