//! The launcher: the only part of ccvm with side effects on the host (S11). From a
//! [`LaunchPlan`] it makes the private run directory, writes the seed and the session keys,
//! starts the machine, waits for the guest's ready marker, runs `ssh -tt` in the foreground
//! and returns claude's exit status, tearing everything down on every path.

use std::ffi::OsString;
use std::fs;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ccvm_plugin_api::seed::{INIT_MARKER, SSHD_MARKER};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::config::Env;
use crate::error::Error;
use crate::machine::{Boot, Machine};
use crate::planner::LaunchPlan;
use crate::seed;

/// How long the guest may take to print its ready marker. TCG boots take 2–10 s; a loaded
/// machine far more.
const BOOT_DEADLINE: Duration = Duration::from_secs(180);
/// How long the guest may take to power off after the session before it is killed.
const POWEROFF_GRACE: Duration = Duration::from_secs(5);
/// Console lines shown when a boot fails.
const CONSOLE_TAIL: usize = 25;

/// The run directory (S6.4). Removed on drop unless kept for debugging; and because a
/// SIGKILLed ccvm runs no destructor, a small `ccvm --ccvm-reap DIR` process holds the read
/// end of a pipe to us and removes the directory when that pipe closes, however we exit.
struct RunDir {
    path: PathBuf,
    keep: bool,
    reaper: Option<std::process::Child>,
}

impl RunDir {
    /// `scrub`: the API key variable, which the reaper has no use for.
    fn create(path: &Path, keep: bool, scrub: &str) -> Result<RunDir, Error> {
        crate::dirs::create_run_dir(path)?;
        let reaper = if keep {
            None
        } else {
            let exe = std::env::current_exe().map_err(|source| Error::Io {
                what: "cannot locate",
                path: PathBuf::from("ccvm"),
                source,
            })?;
            let child = Command::new(exe)
                .arg("--ccvm-reap")
                .arg(path)
                .env_remove(scrub)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .map_err(|e| Error::Host {
                    message: format!("cannot start the scratch-directory reaper: {e}"),
                    hint: None,
                })?;
            Some(child)
        };
        Ok(RunDir {
            path: path.to_owned(),
            keep,
            reaper,
        })
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!(
                "ccvm: debug: kept the scratch directory {}",
                self.path.display()
            );
            return;
        }
        let _ = fs::remove_dir_all(&self.path);
        if let Some(mut reaper) = self.reaper.take() {
            drop(reaper.stdin.take());
            let _ = reaper.wait();
        }
    }
}

/// `--ccvm-reap DIR`: waits for stdin to close, then removes `DIR`, which must be a ccvm run
/// directory (`…/run-<random>` or `…/ccvm-run-<random>`) owned by us.
pub fn reap(dir: &Path) -> u8 {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    // Not killed by the Ctrl-C meant for the session.
    let _ =
        signal_hook::flag::register(SIGINT, Arc::new(std::sync::atomic::AtomicBool::new(false)));
    let _ =
        signal_hook::flag::register(SIGHUP, Arc::new(std::sync::atomic::AtomicBool::new(false)));
    let mut sink = [0u8; 64];
    while std::io::stdin().read(&mut sink).is_ok_and(|n| n > 0) {}
    let is_run_dir = dir
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| crate::dirs::RUN_PREFIXES.iter().any(|p| n.starts_with(p)));
    let ours = fs::symlink_metadata(dir)
        .is_ok_and(|m| m.is_dir() && m.uid() == nix::unistd::getuid().as_raw());
    if is_run_dir && ours {
        let _ = fs::remove_dir_all(dir);
    }
    0
}

/// Prints what changed among the project's host-run files when dropped (S5.1's caveat for
/// a writable project; see [`crate::watch`]).
struct ReportChanges(Option<crate::watch::Snapshot>);

impl Drop for ReportChanges {
    fn drop(&mut self) {
        if let Some(text) = self.0.as_ref().and_then(crate::watch::Snapshot::report) {
            // Attributes the session left set (concealed text, a hidden cursor) must not hide
            // the report.
            if std::io::stderr().is_terminal() {
                eprint!("\x1b[0m\x1b[?25h");
            }
            eprint!("{text}");
        }
    }
}

/// The signal that asked ccvm to stop, if any (SIGINT, SIGTERM, SIGHUP).
#[derive(Clone)]
struct Stop(Arc<AtomicUsize>);

impl Stop {
    fn install() -> Result<Stop, Error> {
        let flag = Arc::new(AtomicUsize::new(0));
        for signal in [SIGINT, SIGTERM, SIGHUP] {
            signal_hook::flag::register_usize(signal, Arc::clone(&flag), signal as usize).map_err(
                |e| Error::Host {
                    message: format!("cannot install the handler for signal {signal}: {e}"),
                    hint: None,
                },
            )?;
        }
        Ok(Stop(flag))
    }

    fn signal(&self) -> Option<i32> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            signal => Some(signal as i32),
        }
    }
}

/// Boot progress on a terminal; nothing when stderr is piped (S11.5).
struct Progress {
    on: bool,
    started: Instant,
    last: Option<u64>,
}

impl Progress {
    fn tick(&mut self) {
        let seconds = self.started.elapsed().as_secs();
        if self.on && self.last != Some(seconds) {
            self.last = Some(seconds);
            eprint!("\r\x1b[2Kccvm: booting the VM… {seconds} s");
            let _ = std::io::stderr().flush();
        }
    }

    fn clear(&mut self) {
        if self.on && self.last.is_some() {
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
            self.last = None;
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn boot_failure(machine: &Machine, what: String, run_dir: &Path, debug: bool) -> Error {
    let console = tail(&machine.console_text(), CONSOLE_TAIL);
    let hypervisor = machine.hypervisor_output();
    let mut message = format!("the VM did not boot: {what}");
    if !console.trim().is_empty() {
        message.push_str(&format!(
            "\n--- last lines of the guest console ---\n{console}"
        ));
    }
    if !hypervisor.trim().is_empty() {
        message.push_str(&format!(
            "\n--- hypervisor output ---\n{}",
            tail(&hypervisor, CONSOLE_TAIL)
        ));
    }
    Error::Host {
        message,
        hint: Some(if debug {
            format!("everything is kept in {}", run_dir.display())
        } else {
            "rerun with --ccvm-debug to stream the whole console and keep the scratch directory"
                .to_owned()
        }),
    }
}

/// The exit status for a stop by `signal` (130 for Ctrl-C, as a shell reports it).
fn signal_status(signal: i32) -> u8 {
    (128 + signal).clamp(0, 255) as u8
}

/// Runs one session from `plan`. `argv` is what claude (or the shell) receives.
/// `CCVM_TIMINGS=FILE`: when each phase of a session was reached, written to FILE as one JSON
/// object of seconds since the Unix epoch once the session ends. For benchmarks, which compare
/// these with their own clock; nothing is written when the variable is unset.
struct Timings {
    file: Option<PathBuf>,
    marks: Vec<(&'static str, f64)>,
}

impl Timings {
    fn new(env: &Env) -> Self {
        Timings {
            file: env.abs_path("CCVM_TIMINGS"),
            marks: Vec::new(),
        }
    }

    fn mark(&mut self, phase: &'static str) {
        if self.file.is_some() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.marks.push((phase, now));
        }
    }

    fn write(&self) {
        let Some(file) = &self.file else { return };
        let object: serde_json::Map<String, serde_json::Value> = self
            .marks
            .iter()
            .map(|(phase, at)| ((*phase).to_owned(), (*at).into()))
            .collect();
        if let Err(e) = std::fs::write(file, serde_json::Value::Object(object).to_string()) {
            eprintln!(
                "ccvm: warning: cannot write CCVM_TIMINGS={}: {e}",
                file.display()
            );
        }
    }
}

pub fn run(plan: &LaunchPlan, argv: &[OsString], env: &Env) -> Result<u8, Error> {
    let mut timings = Timings::new(env);
    timings.mark("planned");
    let debug = plan.config.debug;
    let stop = Stop::install()?;
    let run_dir = RunDir::create(
        Path::new(&plan.run_dir),
        debug,
        &plan.session.api_key_variable,
    )?;
    let seed_dir = Path::new(&plan.seed.dir);
    let rules = seed::link_rules(
        Path::new(&plan.seed.manifest.user.home),
        &plan.seed.files,
        &plan.host_reads,
    );
    for warning in seed::write(
        seed_dir,
        &plan.seed.manifest,
        argv,
        &plan.seed.files,
        &rules,
    )? {
        eprintln!("ccvm: warning: {warning}");
    }
    let ssh_keygen = crate::host::require_program("ssh-keygen", "openssh-client", env)?;
    seed::generate_keys(&ssh_keygen, &run_dir.path, seed_dir)?;

    // `persist_claude_projects`: the host side of the share must exist before QEMU opens it.
    for share in &plan.machine.shares {
        if share.tag == crate::planner::PROJECTS_TAG {
            seed::private_dir(Path::new(&share.host_path), true)?;
        }
    }
    // With a writable project, the files the host runs later are compared at exit, however
    // the session ends (the report is printed when `_watch` is dropped).
    let _watch = ReportChanges(
        plan.seed
            .manifest
            .writable_cwd
            .then(|| crate::watch::Snapshot::take(Path::new(&plan.session.project_dir))),
    );
    timings.mark("prepared");
    let mut machine = Machine::start(
        &plan.machine,
        &run_dir.path,
        &[plan.session.api_key_variable.as_str()],
    )?;
    timings.mark("hypervisor_started");
    let mut progress = Progress {
        on: !debug && std::io::stderr().is_terminal(),
        started: Instant::now(),
        last: None,
    };
    let boot = machine.wait_ready(
        Instant::now() + BOOT_DEADLINE,
        // In debug mode there is no progress line to clear.
        |line| {
            if line.contains(INIT_MARKER) {
                timings.mark("agent_started");
            } else if line.contains(SSHD_MARKER) {
                timings.mark("sshd_starting");
            }
            if debug {
                eprintln!("{line}");
            }
        },
        || {
            progress.tick();
            stop.signal().is_some()
        },
    );
    progress.clear();
    if let Some(signal) = stop.signal() {
        // Asked to stop while booting: not a boot failure (S11.1).
        return Ok(signal_status(signal));
    }
    match boot? {
        Boot::Ready => timings.mark("ready"),
        Boot::GuestFailed(why) => {
            return Err(boot_failure(
                &machine,
                format!("the guest agent stopped: {why}"),
                &run_dir.path,
                debug,
            ));
        }
        Boot::HypervisorExited(status) => {
            return Err(boot_failure(
                &machine,
                format!("the hypervisor exited ({status}) before the guest was ready"),
                &run_dir.path,
                debug,
            ));
        }
        Boot::TimedOut => {
            return Err(boot_failure(
                &machine,
                format!("no ready marker within {} s", BOOT_DEADLINE.as_secs()),
                &run_dir.path,
                debug,
            ));
        }
    }

    let ssh = crate::host::require_program(&plan.ssh.program, "openssh-client", env)?;
    let mut child = Command::new(ssh)
        .args(&plan.ssh.args)
        .stdin(Stdio::inherit())
        .spawn()
        .map_err(|e| Error::Host {
            message: format!("cannot start ssh: {e}"),
            hint: None,
        })?;
    timings.mark("ssh_started");
    // Ctrl-C belongs to the session (ssh forwards it to the guest's PTY); SIGTERM and SIGHUP
    // end the session.
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| Error::Host {
            message: format!("cannot wait for ssh: {e}"),
            hint: None,
        })? {
            break status;
        }
        if let Some(signal) = stop.signal().filter(|s| *s != SIGINT) {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(signal_status(signal));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    timings.mark("session_ended");
    timings.write();
    let _ = machine.wait_exit(POWEROFF_GRACE);
    if debug {
        // The console lines of the session and the power-off.
        for line in machine.new_console_lines() {
            eprintln!("{line}");
        }
    }
    machine.stop();
    match status.code() {
        // ssh's own failure: connection, authentication, host key.
        Some(255) => Err(Error::Host {
            message: "the ssh session to the VM failed (ssh exited 255)".to_owned(),
            hint: Some("rerun with --ccvm-debug to see the guest console".to_owned()),
        }),
        Some(code) => Ok(code.clamp(0, 255) as u8),
        None => Ok(1),
    }
}
