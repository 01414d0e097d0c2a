//! `sentinel run`: a command at most once per key, its output streamed live and stored.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use sentinel::{Disposition, Error, ExecutionContext, FailurePolicy, LeaseLost, Outcome, Sentinel};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::signal::unix::{SignalKind, signal};

use tokio::sync::oneshot;

use crate::cli::{OnFailure, RunArgs};
use crate::store::{EXIT_BUSY, EXIT_STOPPED, EXIT_UNCERTAIN, Failure, fail};

/// Output kept per stream; the live stream is never cut.
const OUTPUT_LIMIT: usize = 256 * 1024;
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

#[derive(Default, Clone)]
struct Captured {
    bytes: Vec<u8>,
    total: u64,
    /// The pump did not reach the end of the stream (someone else still holds it).
    abandoned: bool,
}

type Shared = std::sync::Arc<std::sync::Mutex<Captured>>;

/// Copies a child's stream to ours as it comes, keeping the first `OUTPUT_LIMIT` bytes in
/// `captured`; returns at end of stream.
fn pump(source: Option<impl Read>, mut sink: impl Write, captured: &Shared) {
    let Some(mut source) = source else {
        return;
    };
    let mut buf = [0u8; 8192];
    loop {
        match source.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let _ = sink.write_all(&buf[..n]);
                let _ = sink.flush();
                let mut c = captured
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let room = OUTPUT_LIMIT.saturating_sub(c.bytes.len());
                c.bytes.extend_from_slice(&buf[..n.min(room)]);
                c.total += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// How long output is still collected after the command exited: a process it left behind
/// (a daemon) may hold the pipes open for ever.
const DRAIN: Duration = Duration::from_secs(2);

/// Finds the program as `execvp` would; 127 when missing, 126 when not executable.
fn resolve_program(name: &OsString) -> Result<PathBuf, Failure> {
    let shown = name.to_string_lossy();
    // access(2) answers for this user (mode bits alone are wrong for root and for files
    // owned by others).
    let executable = |p: &Path| {
        p.metadata().is_ok_and(|m| m.is_file())
            && nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok()
    };
    let path = Path::new(name);
    if name.is_empty() {
        return Err(Failure::new(127, "empty command"));
    }
    if path.components().count() > 1 || shown.contains('/') {
        if !path.exists() {
            return Err(Failure::new(127, format!("{shown}: no such file")));
        }
        if !executable(path) {
            return Err(Failure::new(126, format!("{shown}: not executable")));
        }
        return Ok(path.to_path_buf());
    }
    let mut found_non_executable = false;
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let candidate = dir.join(path);
        if executable(&candidate) {
            return Ok(candidate);
        }
        found_non_executable |= candidate.is_file();
    }
    if found_non_executable {
        Err(Failure::new(126, format!("{shown}: not executable")))
    } else {
        Err(Failure::new(127, format!("{shown}: command not found")))
    }
}

fn exit_byte(code: i32) -> u8 {
    u8::try_from(code.rem_euclid(256)).unwrap_or(1)
}

fn describe(why: LeaseLost) -> &'static str {
    match why {
        LeaseLost::CeilingPassed => "the hard ceiling (--hard-ttl) passed",
        LeaseLost::Fenced => "the lease was lost: another owner (an operator?) holds the key",
        _ => "the lease was lost: renewals have been failing",
    }
}

/// How the child ended, with what it wrote.
type Finished = (
    std::io::Result<std::process::ExitStatus>,
    Captured,
    Captured,
);

/// Runs the child on a thread of its own that lives until the child is reaped: the child's
/// PR_SET_PDEATHSIG fires when that *thread* exits, so it must not be a pooled one.
fn spawn_child(
    program: PathBuf,
    arg0: OsString,
    args: Vec<OsString>,
    env: Vec<(&'static str, String)>,
    own_group: bool,
) -> (
    oneshot::Receiver<std::io::Result<u32>>,
    oneshot::Receiver<Finished>,
) {
    let (pid_tx, pid_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    let parent = std::process::id();
    let spawned = std::thread::Builder::new()
        .name("sentinel-child".into())
        .spawn(move || {
            let mut cmd = std::process::Command::new(&program);
            // The command sees the name it was given, not the path it was found at.
            cmd.arg0(&arg0)
                .args(&args)
                .envs(env)
                .stdin(Stdio::inherit())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            if own_group {
                // Its own process group: signals we forward (and kills) reach the whole tree.
                // Not at a terminal: there the command must stay in the foreground group to
                // read the terminal, and Ctrl-C reaches it directly.
                cmd.process_group(0);
            }
            // SAFETY: the closure runs in the forked child before exec and only makes the
            // async-signal-safe calls prctl(2) and getppid(2); it allocates nothing on success.
            #[allow(unsafe_code)]
            unsafe {
                cmd.pre_exec(move || {
                    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
                        .map_err(std::io::Error::from)?;
                    // The runner may have died between fork and prctl.
                    if u32::try_from(nix::unistd::getppid().as_raw()).ok() != Some(parent) {
                        return Err(std::io::Error::other("the runner exited"));
                    }
                    Ok(())
                });
            }
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    let _ = pid_tx.send(Err(e));
                    return;
                }
            };
            let _ = pid_tx.send(Ok(child.id()));
            let (out, err) = (child.stdout.take(), child.stderr.take());
            let (out_buf, err_buf) = (Shared::default(), Shared::default());
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let (o, t) = (out_buf.clone(), tx.clone());
            std::thread::spawn(move || {
                pump(out, std::io::stdout(), &o);
                let _ = t.send(());
            });
            let (e, t) = (err_buf.clone(), tx);
            std::thread::spawn(move || {
                pump(err, std::io::stderr(), &e);
                let _ = t.send(());
            });
            let status = child.wait();
            // Both streams end with the command, unless something it started holds them.
            let deadline = std::time::Instant::now() + DRAIN;
            let mut ended = 0;
            while ended < 2 {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if rx.recv_timeout(left).is_err() {
                    break;
                }
                ended += 1;
            }
            let take = |b: &Shared| {
                let mut c = b
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                c.abandoned = ended < 2;
                c
            };
            let _ = done_tx.send((status, take(&out_buf), take(&err_buf)));
        });
    if let Err(e) = spawned {
        let (pid_tx, pid_rx2) = oneshot::channel();
        let _ = pid_tx.send(Err(e));
        return (pid_rx2, done_rx);
    }
    (pid_rx, done_rx)
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

/// The hidden first argument that makes the binary a watchdog (see [`watchdog`]).
pub(crate) const WATCHDOG_ARG: &str = "__sentinel_watchdog";

/// Kills the command's whole process group if the runner dies without saying goodbye.
///
/// PR_SET_PDEATHSIG reaches only the direct child; a shell's own children would outlive a runner
/// killed with SIGKILL. This helper (the same binary, run as `sentinel __sentinel_watchdog PGID`)
/// blocks on a pipe that only the runner writes: `d` means the runner finished normally; end of
/// file without it means the runner died, and the group gets SIGKILL.
pub(crate) fn watchdog() {
    let Some(group) = std::env::args()
        .nth(2)
        .and_then(|g| g.parse::<i32>().ok())
        .filter(|g| *g > 1)
    else {
        return;
    };
    let mut byte = [0u8; 1];
    let done = matches!(std::io::stdin().read(&mut byte), Ok(1) if byte[0] == b'd');
    if !done {
        let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
    }
}

/// Starts the watchdog for a process group; returns the pipe to tell it goodbye.
fn start_watchdog(group: Pid) -> Option<std::process::ChildStdin> {
    let exe = std::env::current_exe().ok()?;
    let mut child = std::process::Command::new(exe)
        .arg(WATCHDOG_ARG)
        .arg(group.as_raw().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let stdin = child.stdin.take();
    // Reaped by a thread so it never lingers as a zombie while we run.
    std::thread::spawn(move || child.wait());
    stdin
}

/// SIGINT and SIGTERM, caught from the start of `run` so that none is missed or kills the runner
/// while the key is held.
pub(crate) struct Signals {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    pub(crate) fn catch() -> Self {
        Self {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
        }
    }
}

async fn next(sig: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match sig.as_mut() {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// True when the child has exited (it may not be reaped yet); `WNOWAIT` leaves it to `wait`.
fn has_exited(pid: Pid) -> bool {
    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    !matches!(waitid(Id::Pid(pid), flags), Ok(WaitStatus::StillAlive))
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
    if args.key.is_empty() {
        return Err(Failure::usage("--key must not be empty"));
    }
    if let Some(h) = args.hard_ttl {
        if h < args.ttl {
            return Err(Failure::usage(format!(
                "--hard-ttl ({h:?}) must not be shorter than --ttl ({:?})",
                args.ttl
            )));
        }
    }
    let mut command = args.command.into_iter();
    let Some(first) = command.next() else {
        return Err(Failure::usage("no command given after --"));
    };
    // Checked before claiming: a command that cannot start leaves no record (nothing ran).
    let program = resolve_program(&first)?;
    let rest: Vec<OsString> = command.collect();
    let policy = match args.on_failure {
        OnFailure::Uncertain => FailurePolicy::Uncertain,
        OnFailure::Release => FailurePolicy::Release,
        OnFailure::Record => FailurePolicy::Record,
    };
    let mut once = s
        .once(&args.key)
        .namespace(namespace)
        .ttl(args.ttl)
        .on_failure(policy);
    if let Some(h) = args.hard_ttl {
        once = once.hard_ttl(h);
    }
    if let Some(f) = &args.fingerprint {
        once = once.fingerprint(f);
    }
    if args.wait {
        once = once.wait(args.wait_timeout);
    }
    let stopped = Arc::new(AtomicBool::new(false));
    let flag = stopped.clone();
    let outcome = once
        .run(move |ctx| execute(ctx, program, first, rest, flag, signals))
        .await;
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
        return Ok(EXIT_STOPPED);
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
            Ok(EXIT_BUSY)
        }
        Ok(Outcome::Uncertain { reason, token, .. }) => {
            eprintln!(
                "sentinel: key {key} is uncertain ({reason}, fencing token {token}); \
                 inspect it and run `sentinel reconcile {key}`"
            );
            Ok(EXIT_UNCERTAIN)
        }
        Ok(other) => Err(Failure::new(1, format!("unexpected outcome {other:?}"))),
        Err(Error::Codec(m)) => Err(Failure::new(1, m)),
        Err(e) => Err(fail(e, url)),
    }
}
