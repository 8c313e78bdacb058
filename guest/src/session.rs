//! `ccvm-guest session`: sshd's forced command (S6.3). Runs claude (or the login shell) with
//! the seed's argv in the project directory, on the PTY sshd allocated, and supervises it:
//! if it stops itself it is resumed at once (S6.5), and its exit status is returned. Any
//! command the ssh client sent (`SSH_ORIGINAL_COMMAND`) is ignored.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use ccvm_plugin_api::seed::SessionMode;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, kill, sigaction};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::setup::AGENT_SHELL;

/// Where PID 1 leaves what the session needs (root-owned, world-readable).
pub const SESSION_DIR: &str = "/run/ccvm/session";
/// The FIFO PID 1 listens on; the session writes its exit status there.
pub const DONE_FIFO: &str = "/run/ccvm/session-done";

/// `argv` file contents → arguments (each terminated by NUL).
pub fn decode_argv(bytes: &[u8]) -> Vec<OsString> {
    let mut args: Vec<OsString> = bytes
        .split(|b| *b == 0)
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect();
    // The encoding terminates every argument, so the last split is always empty.
    args.pop();
    args
}

/// The program and arguments for `mode`.
pub fn command_for(mode: SessionMode, argv: Vec<OsString>) -> Command {
    match mode {
        SessionMode::Claude => {
            let mut command = Command::new("claude");
            command.args(argv);
            command
        }
        SessionMode::Shell => {
            let mut command = Command::new(AGENT_SHELL);
            command.arg0("-bash").args(argv);
            command
        }
    }
}

extern "C" fn ignore(_: nix::libc::c_int) {}

/// Signals the supervisor must survive but its child must receive normally. A handler
/// (unlike SIG_IGN) is reset to the default by exec, so the child is unaffected.
fn survive(signals: &[Signal]) {
    let action = SigAction::new(
        SigHandler::Handler(ignore),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in signals {
        #[allow(unsafe_code)]
        // SAFETY: `ignore` does nothing, so it is async-signal-safe.
        let _ = unsafe { sigaction(*signal, &action) };
    }
}

fn read_session() -> Result<(SessionMode, Vec<OsString>, String), String> {
    let dir = Path::new(SESSION_DIR);
    let read = |name: &str| {
        std::fs::read(dir.join(name)).map_err(|e| format!("cannot read {SESSION_DIR}/{name}: {e}"))
    };
    let mode = match read("mode")?.as_slice() {
        b"shell" => SessionMode::Shell,
        b"claude" => SessionMode::Claude,
        other => {
            return Err(format!(
                "unknown session mode {:?}",
                String::from_utf8_lossy(other)
            ));
        }
    };
    let argv = decode_argv(&read("argv")?);
    let project = String::from_utf8(read("project_dir")?)
        .map_err(|_| "project_dir is not UTF-8".to_owned())?;
    Ok((mode, argv, project))
}

/// Waits for `child`, resuming it whenever it stops; returns a shell-style exit status.
fn supervise(child: Pid) -> i32 {
    loop {
        match waitpid(child, Some(WaitPidFlag::WUNTRACED)) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, signal, _)) => return 128 + signal as i32,
            Ok(WaitStatus::Stopped(_, _)) => {
                let _ = kill(child, Signal::SIGCONT);
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                eprintln!("ccvm-guest session: waiting for the agent failed: {e}");
                return 1;
            }
        }
    }
}

pub fn run() -> i32 {
    let (mode, argv, project) = match read_session() {
        Ok(session) => session,
        Err(e) => {
            eprintln!("ccvm-guest session: {e}");
            return 1;
        }
    };
    if let Err(e) = std::env::set_current_dir(&project) {
        eprintln!("ccvm-guest session: cannot enter the project directory {project}: {e}");
        return 1;
    }
    survive(&[
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGTSTP,
        Signal::SIGHUP,
    ]);
    let mut command = command_for(mode, argv);
    command.env_remove("SSH_ORIGINAL_COMMAND");
    let code = match command.spawn() {
        Ok(child) => supervise(Pid::from_raw(child.id() as i32)),
        Err(e) => {
            eprintln!(
                "ccvm-guest session: cannot start {:?}: {e}",
                command.get_program()
            );
            127
        }
    };
    if let Ok(mut fifo) = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(DONE_FIFO)
    {
        let _ = writeln!(fifo, "{code}");
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_decodes_exactly_including_empty_and_non_utf8() {
        let args = decode_argv(b"-p\0two words\0\0\xff\0");
        assert_eq!(
            args,
            [
                OsString::from("-p"),
                OsString::from("two words"),
                OsString::new(),
                OsString::from_vec(vec![0xff])
            ]
        );
        assert!(decode_argv(b"").is_empty());
    }

    #[test]
    fn shell_mode_is_a_login_bash_with_the_arguments() {
        let command = command_for(SessionMode::Shell, vec!["-c".into(), "make test".into()]);
        assert_eq!(command.get_program(), "/bin/bash");
        let args: Vec<_> = command.get_args().collect();
        assert_eq!(args, ["-c", "make test"]);
    }

    #[test]
    // `supervise` reaps the child with waitpid.
    #[allow(clippy::zombie_processes)]
    fn stopped_child_is_resumed_and_its_status_returned() {
        let child = Command::new("/bin/sh")
            .args(["-c", "kill -STOP $$; exit 7"])
            .spawn()
            .expect("spawn sh");
        assert_eq!(supervise(Pid::from_raw(child.id() as i32)), 7);
    }
}
