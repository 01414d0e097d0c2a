//! The command's process: finding the program, spawning it with its life tied to the runner
//! (the project's one `unsafe` block), pumping its output, the watchdog that kills its process
//! group if the runner dies, and the signals the runner forwards. `run.rs` decides what it all
//! means for the key.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

use crate::exit::{Exit, Failure};

/// Output kept per stream; the live stream is never cut.
pub(crate) const OUTPUT_LIMIT: usize = 256 * 1024;

/// What one stream wrote, as far as it is kept.
#[derive(Default, Clone)]
pub(crate) struct Captured {
    pub(crate) bytes: Vec<u8>,
    pub(crate) total: u64,
    /// The pump did not reach the end of the stream (someone else still holds it).
    pub(crate) abandoned: bool,
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
pub(crate) fn resolve_program(name: &OsString) -> Result<PathBuf, Failure> {
    let shown = name.to_string_lossy();
    // access(2) answers for this user (mode bits alone are wrong for root and for files
    // owned by others).
    let executable = |p: &Path| {
        p.metadata().is_ok_and(|m| m.is_file())
            && nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok()
    };
    let path = Path::new(name);
    if name.is_empty() {
        return Err(Failure::new(Exit::NotFound, "empty command"));
    }
    if path.components().count() > 1 || shown.contains('/') {
        if !path.exists() {
            return Err(Failure::new(
                Exit::NotFound,
                format!("{shown}: no such file"),
            ));
        }
        if !executable(path) {
            return Err(Failure::new(
                Exit::NotExecutable,
                format!("{shown}: not executable"),
            ));
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
        Err(Failure::new(
            Exit::NotExecutable,
            format!("{shown}: not executable"),
        ))
    } else {
        Err(Failure::new(
            Exit::NotFound,
            format!("{shown}: command not found"),
        ))
    }
}

/// How the child ended, with what it wrote.
pub(crate) type Finished = (
    std::io::Result<std::process::ExitStatus>,
    Captured,
    Captured,
);

/// Runs the child on a thread of its own that lives until the child is reaped: the child's
/// PR_SET_PDEATHSIG fires when that *thread* exits, so it must not be a pooled one.
pub(crate) fn spawn_child(
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
            // Not reaped yet: while the leader is a zombie its pid, the group's id, cannot be
            // handed to another process, so signals forwarded to the group during the drain
            // reach only what the command left behind.
            wait_exited(child.id());
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
            let status = child.wait();
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
pub(crate) fn start_watchdog(group: Pid) -> Option<std::process::ChildStdin> {
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
    pub(crate) int: Option<tokio::signal::unix::Signal>,
    pub(crate) term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    pub(crate) fn catch() -> Self {
        Self {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
        }
    }
}

impl Signals {
    /// The first of SIGINT and SIGTERM to arrive, as its number.
    pub(crate) async fn first(&mut self) -> i32 {
        tokio::select! {
            Some(()) = next(&mut self.int) => Signal::SIGINT as i32,
            Some(()) = next(&mut self.term) => Signal::SIGTERM as i32,
        }
    }
}

pub(crate) async fn next(sig: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match sig.as_mut() {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Blocks until the child has exited, leaving it to be reaped (`WNOWAIT`).
fn wait_exited(pid: u32) {
    use nix::sys::wait::{Id, WaitPidFlag, waitid};
    let pid = Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
    while let Err(nix::errno::Errno::EINTR) = waitid(Id::Pid(pid), flags) {}
}

/// True when the child has exited (it may not be reaped yet); `WNOWAIT` leaves it to `wait`.
pub(crate) fn has_exited(pid: Pid) -> bool {
    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    !matches!(waitid(Id::Pid(pid), flags), Ok(WaitStatus::StillAlive))
}
