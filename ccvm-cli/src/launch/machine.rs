//! Running a [`BackendPlan`]: its helpers, then the hypervisor, then waiting for the guest's
//! ready marker on the console (S11).
//!
//! Every process started here gets `PR_SET_PDEATHSIG = SIGKILL`, so it dies with ccvm even
//! when ccvm itself is killed with SIGKILL (S11.1). [`Machine`] kills and reaps everything it
//! started when dropped, so every exit path tears the VM down.

use std::fs;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ccvm_plugin_api::guest::markers;
use ccvm_plugin_api::{BackendPlan, Command as PlannedCommand};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::Error;

/// How long a helper may take to create its socket.
const HELPER_TIMEOUT: Duration = Duration::from_secs(10);

/// A process from a plan, set to die with ccvm, without the variables in `scrub`.
fn command(planned: &PlannedCommand, log: &Path, scrub: &[&str]) -> Result<Command, Error> {
    // Plugins name programs found by the host (absolute); a bare name would make
    // `Command` search PATH, relative entries included (S3.3).
    if !Path::new(&planned.program).is_absolute() {
        return Err(Error::PluginPlan {
            plugin: "the backend".to_owned(),
            problem: format!(
                "`{}` to run, which is not an absolute path",
                planned.program
            ),
        });
    }
    let file = fs::File::create(log).map_err(|source| Error::Io {
        what: "cannot create",
        path: log.to_owned(),
        source,
    })?;
    let mut command = Command::new(&planned.program);
    command
        .args(&planned.args)
        .envs(&planned.env)
        .stdin(Stdio::null())
        .stdout(file.try_clone().map_err(|source| Error::Io {
            what: "cannot use",
            path: log.to_owned(),
            source,
        })?)
        .stderr(file);
    for name in scrub {
        command.env_remove(name);
    }
    die_with_parent(&mut command);
    Ok(command)
}

/// Sets `PR_SET_PDEATHSIG = SIGKILL` for the process `command` starts (also used for the
/// clipboard responder's tool).
#[allow(unsafe_code)]
pub(crate) fn die_with_parent(command: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only calls prctl(2), which is
    // async-signal-safe; it allocates nothing and touches no lock.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
}

/// How waiting for the guest ended.
#[derive(Debug)]
pub enum Boot {
    /// The ready marker appeared.
    Ready,
    /// The guest agent reported a fatal setup error (the line, without the prefix).
    GuestFailed(String),
    /// The hypervisor exited before the guest was ready.
    HypervisorExited(ExitStatus),
    /// The deadline passed.
    TimedOut,
}

/// A running VM and its helpers.
#[derive(Debug)]
pub struct Machine {
    hypervisor: Option<Child>,
    helpers: Vec<(String, Child)>,
    console_log: PathBuf,
    hypervisor_log: PathBuf,
    /// The console log, open once the hypervisor has created it.
    console: Option<fs::File>,
    console_partial: String,
}

impl Machine {
    /// Starts the helpers (waiting for each one's socket), then the hypervisor. Logs go to
    /// `log_dir` (`<helper>.log`, `hypervisor.log`). The variables named in `scrub` (the API
    /// key's) are removed from their environment: only ssh needs them (S6.1).
    pub fn start(plan: &BackendPlan, log_dir: &Path, scrub: &[&str]) -> Result<Machine, Error> {
        for stale in &plan.remove_before_start {
            let _ = fs::remove_file(stale);
        }
        let mut machine = Machine {
            hypervisor: None,
            helpers: Vec::new(),
            console_log: PathBuf::from(&plan.console.log_path),
            hypervisor_log: log_dir.join("hypervisor.log"),
            console: None,
            console_partial: String::new(),
        };
        for (index, helper) in plan.helpers.iter().enumerate() {
            let log = log_dir.join(format!("helper-{index}.log"));
            let child = command(&helper.command, &log, scrub)?
                .spawn()
                .map_err(|source| Error::Spawn {
                    action: "start",
                    program: format!("{} ({})", helper.name, helper.command.program),
                    source,
                })?;
            machine.helpers.push((helper.name.clone(), child));
            if let Some(socket) = &helper.ready_socket {
                machine.wait_for_socket(&helper.name, Path::new(socket), &log)?;
            }
        }
        let child = command(&plan.hypervisor, &machine.hypervisor_log, scrub)?
            .spawn()
            .map_err(|source| Error::Spawn {
                action: "start the hypervisor",
                program: plan.hypervisor.program.clone(),
                source,
            })?;
        machine.hypervisor = Some(child);
        Ok(machine)
    }

    fn wait_for_socket(&mut self, name: &str, socket: &Path, log: &Path) -> Result<(), Error> {
        let deadline = Instant::now() + HELPER_TIMEOUT;
        while !socket.exists() {
            let (_, child) = self.helpers.last_mut().expect("the helper was just pushed");
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::Helper {
                    name: name.to_owned(),
                    problem: format!(
                        "exited ({status}) before creating {}: {}",
                        socket.display(),
                        fs::read_to_string(log).unwrap_or_default().trim()
                    ),
                    log: log.to_owned(),
                });
            }
            if Instant::now() > deadline {
                return Err(Error::Helper {
                    name: name.to_owned(),
                    problem: format!(
                        "did not create {} within {HELPER_TIMEOUT:?}",
                        socket.display()
                    ),
                    log: log.to_owned(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// New complete console lines since the last call. The log is opened once it exists and
    /// then read on from where the last call stopped.
    pub fn new_console_lines(&mut self) -> Vec<String> {
        if self.console.is_none() {
            self.console = fs::File::open(&self.console_log).ok();
        }
        let Some(file) = self.console.as_mut() else {
            return Vec::new();
        };
        let mut bytes = Vec::new();
        if file.read_to_end(&mut bytes).is_err() {
            return Vec::new();
        }
        self.console_partial
            .push_str(&String::from_utf8_lossy(&bytes));
        let mut lines = Vec::new();
        while let Some(end) = self.console_partial.find('\n') {
            let line: String = self.console_partial.drain(..=end).collect();
            lines.push(line.trim_end_matches(['\r', '\n']).to_owned());
        }
        lines
    }

    /// Waits until the guest prints the ready marker, reports a fatal error, the hypervisor
    /// exits, `deadline` passes, or `cancelled()` says to stop. Every console line goes to
    /// `on_line` as it arrives.
    pub fn wait_ready(
        &mut self,
        deadline: Instant,
        mut on_line: impl FnMut(&str),
        mut cancelled: impl FnMut() -> bool,
    ) -> Result<Boot, Error> {
        loop {
            for line in self.new_console_lines() {
                on_line(&line);
                if line.contains(markers::READY) {
                    return Ok(Boot::Ready);
                }
                if let Some(at) = line.find(markers::FATAL) {
                    return Ok(Boot::GuestFailed(
                        line[at + markers::FATAL.len()..].trim().to_owned(),
                    ));
                }
            }
            if let Some(status) = self.hypervisor_exit()? {
                // The last lines may explain the exit.
                for line in self.new_console_lines() {
                    on_line(&line);
                }
                return Ok(Boot::HypervisorExited(status));
            }
            if cancelled() || Instant::now() > deadline {
                return Ok(Boot::TimedOut);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn hypervisor_exit(&mut self) -> Result<Option<ExitStatus>, Error> {
        match self.hypervisor.as_mut() {
            Some(child) => child.try_wait().map_err(|source| Error::Io {
                what: "cannot wait for the hypervisor",
                path: self.hypervisor_log.clone(),
                source,
            }),
            None => Ok(None),
        }
    }

    /// Waits up to `timeout` for the hypervisor to exit by itself (the guest powers off when
    /// the session ends).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.hypervisor_exit()? {
                return Ok(Some(status));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The whole console so far.
    pub fn console_text(&self) -> String {
        fs::read(&self.console_log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// What the hypervisor printed (its errors).
    pub fn hypervisor_output(&self) -> String {
        fs::read_to_string(&self.hypervisor_log).unwrap_or_default()
    }

    /// Process ids of everything still running (the hypervisor first).
    pub fn pids(&self) -> Vec<u32> {
        self.hypervisor
            .iter()
            .chain(self.helpers.iter().map(|(_, c)| c))
            .map(Child::id)
            .collect()
    }

    /// Kills and reaps the hypervisor, then the helpers. Idempotent.
    pub fn stop(&mut self) {
        let children = self
            .hypervisor
            .take()
            .into_iter()
            .chain(self.helpers.drain(..).map(|(_, c)| c));
        for mut child in children {
            if let Ok(None) = child.try_wait() {
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.stop();
    }
}
