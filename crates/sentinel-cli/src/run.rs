//! `sentinel run`: a command at most once per key, its output streamed live and stored, and
//! what each outcome means as an exit code. The process mechanics are in `child.rs`.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use sentinel::{Begin, Disposition, ExecutionContext, LeaseLost, Outcome, Sentinel};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::child::{
    Captured, Signals, has_exited, next, resolve_program, spawn_child, start_watchdog,
};
use crate::cli::RunArgs;
use crate::exit::{Exit, Failure, fail};

/// Between SIGTERM and SIGKILL when Sentinel stops the command.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// What is stored for a run: the result shape of docs/design.md §6.
#[derive(Debug, Serialize, Deserialize)]
struct RunResult {
    exit_code: i32,
    signal: Option<i32>,
    stdout: String,
    stderr: String,
    encoding: String,
    truncated: bool,
    bytes_total: u64,
}

fn exit_byte(code: i32) -> u8 {
    u8::try_from(code.rem_euclid(256)).unwrap_or(1)
}

fn describe(why: LeaseLost) -> &'static str {
    match why {
        LeaseLost::CeilingPassed => "the hard ceiling (--hard-ttl) passed",
        LeaseLost::Fenced => "the lease was lost: another owner (an operator?) holds the key",
        LeaseLost::Stopped => "Sentinel is shutting down",
        _ => "the lease was lost: renewals have been failing",
    }
}

fn result_of(status: std::process::ExitStatus, out: Captured, err: Captured) -> RunResult {
    let signal = status.signal();
    let exit_code = status.code().unwrap_or_else(|| 128 + signal.unwrap_or(0));
    let truncated = out.total > out.bytes.len() as u64
        || err.total > err.bytes.len() as u64
        || out.abandoned
        || err.abandoned;
    let bytes_total = out.total + err.total;
    // A cut may split a character: drop the partial tail rather than base64 the whole output.
    let trim = |mut c: Captured| {
        if c.total > c.bytes.len() as u64 {
            if let Err(e) = std::str::from_utf8(&c.bytes) {
                if e.error_len().is_none() {
                    c.bytes.truncate(e.valid_up_to());
                }
            }
        }
        c
    };
    let (out, err) = (trim(out), trim(err));
    match (String::from_utf8(out.bytes), String::from_utf8(err.bytes)) {
        (Ok(stdout), Ok(stderr)) => RunResult {
            exit_code,
            signal,
            stdout,
            stderr,
            encoding: "utf8".into(),
            truncated,
            bytes_total,
        },
        (o, e) => {
            let raw = |r: Result<String, std::string::FromUtf8Error>| match r {
                Ok(s) => s.into_bytes(),
                Err(e) => e.into_bytes(),
            };
            RunResult {
                exit_code,
                signal,
                stdout: crate::base64::encode(&raw(o)),
                stderr: crate::base64::encode(&raw(e)),
                encoding: "base64".into(),
                truncated,
                bytes_total,
            }
        }
    }
}

fn failed_to_start(e: &std::io::Error) -> RunResult {
    let code = if e.kind() == std::io::ErrorKind::PermissionDenied {
        126
    } else {
        127
    };
    let msg = format!("sentinel: could not start the command: {e}\n");
    eprint!("{msg}");
    RunResult {
        exit_code: code,
        signal: None,
        stdout: String::new(),
        stderr: msg,
        encoding: "utf8".into(),
        truncated: false,
        bytes_total: 0,
    }
}

/// The function handed to `once`: runs the child, forwards signals, stops it when the lease is
/// lost or the ceiling passes.
async fn execute(
    ctx: ExecutionContext,
    program: PathBuf,
    arg0: OsString,
    args: Vec<OsString>,
    stopped: Arc<AtomicBool>,
    mut signals: Signals,
) -> Result<Value, Value> {
    use std::io::IsTerminal;
    let env = vec![
        ("SENTINEL_KEY", ctx.key().to_owned()),
        ("SENTINEL_NAMESPACE", ctx.namespace().to_owned()),
        ("SENTINEL_FENCING_TOKEN", ctx.fencing_token().to_string()),
    ];
    let to_value = |r: RunResult| serde_json::to_value(r).unwrap_or(Value::Null);
    let own_group = !std::io::stdin().is_terminal();
    let (pid_rx, mut done_rx) = spawn_child(program, arg0, args, env, own_group);
    let pid = match pid_rx.await {
        Ok(Ok(pid)) => pid,
        Ok(Err(e)) => {
            ctx.mark_not_started(); // nothing ran: the key is released
            return Err(to_value(failed_to_start(&e)));
        }
        Err(_) => {
            ctx.mark_not_started();
            return Err(to_value(failed_to_start(&std::io::Error::other(
                "no child",
            ))));
        }
    };
    let child = Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
    let mut watchdog = own_group.then(|| start_watchdog(child)).flatten();
    let send = |sig: Signal| {
        let _ = if own_group {
            killpg(child, sig)
        } else {
            nix::sys::signal::kill(child, sig)
        };
    };
    // The grace before SIGKILL stays within the lease's safety margin, so the command is gone
    // about when others start to see the key uncertain.
    let grace = KILL_GRACE.min((ctx.ttl() / 5).max(Duration::from_millis(200)));
    let mut kill_at: Option<tokio::time::Instant> = None;
    let mut killed = false;
    let (status, out, err) = loop {
        tokio::select! {
            // A command that already finished is never reported as stopped.
            biased;
            done = &mut done_rx => match done {
                Ok(done) => break done,
                Err(_) => return Err(to_value(failed_to_start(&std::io::Error::other("lost the child")))),
            },
            why = ctx.lease_lost(), if kill_at.is_none() => {
                if has_exited(child) {
                    // Finished meanwhile: let `done` deliver it; the completion is fenced if
                    // the key moved on.
                    kill_at = Some(tokio::time::Instant::now() + Duration::from_secs(3600));
                    killed = true;
                    continue;
                }
                eprintln!("sentinel: {}; stopping the command", describe(why));
                stopped.store(true, Ordering::SeqCst);
                send(Signal::SIGTERM);
                kill_at = Some(tokio::time::Instant::now() + grace);
            }
            () = async { tokio::time::sleep_until(kill_at.unwrap_or_else(tokio::time::Instant::now)).await },
                if kill_at.is_some() && !killed => {
                send(Signal::SIGKILL);
                killed = true;
            }
            Some(()) = next(&mut signals.int) => {
                // At a terminal, Ctrl-C already reached the command.
                if own_group {
                    send(Signal::SIGINT);
                }
            }
            Some(()) = next(&mut signals.term) => send(Signal::SIGTERM),
        }
    };
    if let Some(w) = watchdog.as_mut() {
        // The runner saw the command end: whatever it left running stays.
        let _ = w.write_all(b"d");
    }
    drop(watchdog);
    let result = match status {
        Ok(status) => result_of(status, out, err),
        Err(e) => failed_to_start(&e),
    };
    if result.exit_code == 0 && !stopped.load(Ordering::SeqCst) {
        Ok(to_value(result))
    } else {
        Err(to_value(result))
    }
}

/// Writes a stored run's output and returns its exit code; a result of another shape (set by
/// an operator or a library call) is printed as JSON, with `other_code`.
fn replay(value: &Value, other_code: u8) -> u8 {
    let Ok(r) = serde_json::from_value::<RunResult>(value.clone()) else {
        println!("{value}");
        return other_code;
    };
    let (out, err) = if r.encoding == "base64" {
        (
            crate::base64::decode(&r.stdout).unwrap_or_default(),
            crate::base64::decode(&r.stderr).unwrap_or_default(),
        )
    } else {
        (r.stdout.into_bytes(), r.stderr.into_bytes())
    };
    let _ = std::io::stdout().write_all(&out);
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().write_all(&err);
    exit_byte(r.exit_code)
}

/// Tells a person at a terminal that the output was replayed; scripts (no terminal on stderr)
/// see only the command's own output.
fn replay_note(
    key: &str,
    token: sentinel::FencingToken,
    completed_at: Option<std::time::SystemTime>,
) {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        let when = completed_at.map_or_else(String::new, |t| {
            format!(
                "ran {}, ",
                crate::format::relative(t, std::time::SystemTime::now())
            )
        });
        eprintln!(
            "sentinel: replayed the stored result of key {key} ({when}fencing token {token})"
        );
    }
}

fn exit_code_of(value: &Value) -> u8 {
    value
        .get("exit_code")
        .and_then(Value::as_i64)
        .and_then(|c| i32::try_from(c).ok())
        .map_or(1, exit_byte)
}

pub(crate) async fn run(
    s: &Sentinel,
    namespace: &str,
    url: &str,
    args: RunArgs,
) -> Result<u8, Failure> {
    // Caught from here on: a SIGTERM while the key is claimed is forwarded, not fatal.
    let signals = Signals::catch();
    let mut command = args.command.into_iter();
    let Some(first) = command.next() else {
        return Err(Failure::usage("no command given after --"));
    };
    let mut once = s
        .once(&args.key)
        .namespace(namespace)
        .ttl(args.ttl)
        .on_failure(args.on_failure.into());
    if let Some(h) = args.hard_ttl {
        once = once.hard_ttl(h);
    }
    if let Some(f) = &args.fingerprint {
        once = once.fingerprint(f);
    }
    if args.wait {
        once = once.wait(args.wait_timeout);
    }
    // Bad input and a command that cannot start are refused before claiming: no record, since
    // nothing ran.
    once.validate().map_err(|e| fail(e, url))?;
    let program = resolve_program(&first)?;
    let rest: Vec<OsString> = command.collect();
    let stopped = Arc::new(AtomicBool::new(false));
    let flag = stopped.clone();
    // Until the command starts, SIGINT and SIGTERM end the runner: nothing ran, and a claim in
    // flight is released by the engine (M4).
    let mut signals = signals;
    let begun = tokio::select! {
        begun = once.begin::<Value, Value>() => begun,
        sig = signals.first() => {
            eprintln!(
                "sentinel: stopped by signal {sig} before the command started; nothing ran"
            );
            return Ok(exit_byte(128 + sig));
        }
    };
    let outcome = match begun {
        Ok(Begin::Settled(outcome)) => Ok(outcome),
        Ok(Begin::Acquired(execution)) => {
            let ctx = execution.context().clone();
            match execute(ctx, program, first, rest, flag, signals).await {
                Ok(value) => execution.complete(value).await,
                Err(error) => execution.fail(error).await,
            }
        }
        Ok(other) => {
            return Err(Failure::new(
                Exit::Internal,
                format!("unexpected claim answer {other:?}"),
            ));
        }
        Err(e) => Err(e),
    };
    let key = &args.key;
    let stopped_here = stopped.load(Ordering::SeqCst)
        && matches!(
            outcome,
            Ok(Outcome::Failed {
                replayed: false,
                ..
            })
        );
    if stopped_here {
        eprintln!("sentinel: the command was stopped; key {key} is left uncertain for an operator");
        return Ok(Exit::Stopped.code());
    }
    match outcome {
        Ok(Outcome::Completed {
            value,
            replayed: false,
            ..
        }) => Ok(exit_code_of(&value)),
        Ok(Outcome::Completed {
            value,
            replayed: true,
            token,
            completed_at,
        }) => {
            let code = replay(&value, 0);
            replay_note(key, token, Some(completed_at));
            Ok(code)
        }
        Ok(Outcome::CompletedWithoutResult { .. }) => Ok(0),
        Ok(Outcome::Failed {
            error,
            replayed: false,
            disposition,
            ..
        }) => {
            let now = match disposition {
                Disposition::Released => "released: the next run executes again",
                Disposition::Recorded => "recorded: later runs replay this failure",
                _ => "uncertain: reconcile it before it can run again",
            };
            eprintln!(
                "sentinel: the command failed (exit {}); key {key} is {now}",
                exit_code_of(&error)
            );
            Ok(exit_code_of(&error))
        }
        Ok(Outcome::Failed {
            error,
            replayed: true,
            token,
            ..
        }) => {
            let code = replay(&error, 1);
            replay_note(key, token, None);
            Ok(code)
        }
        Ok(Outcome::Running {
            owner,
            lease_expires_at,
            token,
        }) => {
            let who = owner.map_or_else(|| "another worker".to_owned(), |o| o.to_string());
            let lease = lease_expires_at
                .map(|l| {
                    format!(
                        ", lease expires {}",
                        crate::format::relative(l, std::time::SystemTime::now())
                    )
                })
                .unwrap_or_default();
            eprintln!("sentinel: key {key} is running on {who} (fencing token {token}{lease})");
            Ok(Exit::Busy.code())
        }
        Ok(Outcome::Uncertain { reason, token, .. }) => {
            eprintln!(
                "sentinel: key {key} is uncertain ({reason}, fencing token {token}); \
                 inspect it and run `sentinel reconcile {key}`"
            );
            Ok(Exit::Uncertain.code())
        }
        Ok(other) => Err(Failure::new(
            Exit::Internal,
            format!("unexpected outcome {other:?}"),
        )),
        Err(e) => Err(fail(e, url)),
    }
}
