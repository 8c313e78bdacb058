//! The launcher: the only part of ccvm with side effects on the host (S11). From a
//! [`LaunchPlan`] alone it makes the private run directory, writes the seed and the session
//! keys, starts the machine, waits for the guest's ready marker, runs `ssh -tt` in the
//! foreground and returns claude's exit status, tearing everything down on every path.

mod clipboard;
pub mod machine;
mod run_dir;
pub mod seed;
mod signals;
mod timings;
pub mod vsock;
pub mod watch;

use std::io::IsTerminal;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ccvm_plugin_api::guest::markers;
use ccvm_plugin_api::guest::paths::PROJECTS_TAG;
use signal_hook::consts::SIGINT;

use self::machine::{Boot, Machine};
use self::run_dir::RunDir;
pub use self::run_dir::reap;
use self::signals::{Progress, Stop, signal_status};
use self::timings::Timings;
use crate::error::Error;
use crate::plan::LaunchPlan;

/// How long the guest may take to print its ready marker. TCG boots take 2–10 s; a loaded
/// machine far more.
const BOOT_DEADLINE: Duration = Duration::from_secs(180);
/// How long the guest may take to power off after the session before it is killed.
const POWEROFF_GRACE: Duration = Duration::from_secs(5);
/// Console lines shown when a boot fails.
const CONSOLE_TAIL: usize = 25;

/// Prints what changed among the project's host-run files when dropped (S5.1's caveat for
/// a writable project; see [`crate::watch`]).
struct ReportChanges(Option<watch::Snapshot>);

impl Drop for ReportChanges {
    fn drop(&mut self) {
        if let Some(text) = self.0.as_ref().and_then(watch::Snapshot::report) {
            // Attributes the session left set (concealed text, a hidden cursor) must not hide
            // the report.
            if std::io::stderr().is_terminal() {
                eprint!("\x1b[0m\x1b[?25h");
            }
            eprint!("{text}");
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn boot_failure(machine: &Machine, what: String, run_dir: &Path, debug: bool) -> Error {
    Error::Boot {
        what,
        console: tail(&machine.console_text(), CONSOLE_TAIL),
        hypervisor: tail(&machine.hypervisor_output(), CONSOLE_TAIL),
        kept: debug.then(|| run_dir.to_owned()),
    }
}

/// A program the plan names must have been found on the trusted `PATH` (S3.3).
fn planned_program(path: Option<&str>, name: &str) -> Result<String, Error> {
    match path {
        Some(path) if Path::new(path).is_absolute() => Ok(path.to_owned()),
        _ => Err(Error::MissingProgram {
            program: name.to_owned(),
            package: "openssh-client".to_owned(),
        }),
    }
}

/// Runs one session from `plan`.
pub fn run(plan: &LaunchPlan) -> Result<u8, Error> {
    let mut timings = Timings::new(plan.session.timings_file.clone());
    timings.mark("planned");
    let debug = plan.session.debug;
    let manifest = &plan.seed.manifest;
    let stop = Stop::install()?;
    let disk = plan.vm.scratch_disk.as_ref();
    let run_dir = RunDir::create(
        plan.run_dir(),
        debug,
        disk.map(|d| Path::new(&d.path)),
        &manifest.api_key_variable,
    )?;
    if let Some(disk) = disk {
        run_dir.create_disk(disk.size_gib)?;
    }
    let seed_dir = Path::new(&plan.seed.dir);
    let rules = seed::link_rules(
        Path::new(&manifest.user.home),
        &plan.seed.files,
        &plan.host_reads,
    );
    for warning in seed::write(seed_dir, manifest, &plan.argv(), &plan.seed.files, &rules)? {
        eprintln!("ccvm: warning: {warning}");
    }
    let ssh_keygen = planned_program(plan.session.ssh_keygen.as_deref(), "ssh-keygen")?;
    seed::generate_keys(Path::new(&ssh_keygen), &run_dir.path, seed_dir)?;
    // The clipboard bridge's responder (S8); it stops when dropped, before the run directory.
    let _clipboard = clipboard::start(&plan.host_services, &plan.session.service_env);

    // `persist_claude_projects`: the host side of the share must exist before QEMU opens it.
    for share in &plan.machine.shares {
        if share.tag == PROJECTS_TAG {
            seed::private_dir(Path::new(&share.host_path), true)?;
        }
    }
    // With a writable project, the files the host runs later are compared at exit, however
    // the session ends (the report is printed when `_watch` is dropped).
    let _watch = ReportChanges(
        manifest
            .writable_cwd
            .then(|| watch::Snapshot::take(Path::new(&manifest.project_dir))),
    );
    timings.mark("prepared");
    let mut machine = Machine::start(
        &plan.machine,
        &run_dir.path,
        &[manifest.api_key_variable.as_str()],
    )?;
    timings.mark("hypervisor_started");
    let mut progress = Progress::new(!debug && std::io::stderr().is_terminal());
    let boot = machine.wait_ready(
        Instant::now() + BOOT_DEADLINE,
        // In debug mode there is no progress line to clear.
        |line| {
            if line.contains(markers::INIT) {
                timings.mark("agent_started");
            } else if line.contains(markers::SSHD) {
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
    let failed = |what: String| boot_failure(&machine, what, &run_dir.path, debug);
    match boot? {
        Boot::Ready => timings.mark("ready"),
        Boot::GuestFailed(why) => return Err(failed(format!("the guest agent stopped: {why}"))),
        Boot::HypervisorExited(status) => {
            return Err(failed(format!(
                "the hypervisor exited ({status}) before the guest was ready"
            )));
        }
        Boot::TimedOut => {
            return Err(failed(format!(
                "no ready marker within {} s",
                BOOT_DEADLINE.as_secs()
            )));
        }
    }

    let ssh = planned_program(Some(&plan.ssh.program), "ssh")?;
    let mut child = Command::new(&ssh)
        .args(&plan.ssh.args)
        .stdin(Stdio::inherit())
        .spawn()
        .map_err(|source| Error::Spawn {
            action: "start",
            program: ssh.clone(),
            source,
        })?;
    timings.mark("ssh_started");
    // Ctrl-C belongs to the session (ssh forwards it to the guest's PTY); SIGTERM and SIGHUP
    // end the session.
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|source| Error::Spawn {
            action: "wait for",
            program: ssh.clone(),
            source,
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
        Some(255) => Err(Error::SshFailed),
        Some(code) => Ok(code.clamp(0, 255) as u8),
        None => Ok(1),
    }
}
