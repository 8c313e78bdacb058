//! `ccvm-guest session`: sshd's forced command (S6.3). Runs claude (or the login shell) with
//! the seed's argv in the project directory, on the PTY sshd allocated, and supervises it
//! like a small job-control shell (D9, S6.5): the agent runs in its own process group, which
//! owns the terminal; if it stops itself (Ctrl+Z) it is resumed at once, and its exit status
//! is returned. Before the start it marks the forwarded API key approved in `~/.claude.json`
//! (S6.1) and replaces a `TERM` the guest has no terminfo for (S6.5). Any command the ssh
//! client sent (`SSH_ORIGINAL_COMMAND`) is ignored, and the key is never written whole.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::fd::{BorrowedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};

use ccvm_guest_protocol::SessionMode;
use ccvm_guest_protocol::paths::{AGENT_SHELL, DONE_FIFO, SESSION_DIR};
use nix::sys::signal::{
    SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal, killpg, pthread_sigmask, sigaction,
};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getpgrp, tcgetpgrp, tcsetpgrp};

/// The file in [`SESSION_DIR`] naming the environment variable that carries the API key.
pub const API_KEY_VARIABLE_FILE: &str = "api_key_variable";

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

// ---------------------------------------------------------------------------------------
// Job control
// ---------------------------------------------------------------------------------------

/// The agent's process group while it runs (0 before), for the hangup forwarder.
static AGENT_GROUP: AtomicI32 = AtomicI32::new(0);

extern "C" fn ignore(_: nix::libc::c_int) {}

/// A hangup (sshd closed the PTY) reaches only the session leader; pass it on to the agent's
/// group, as a shell does for its jobs, so it ends instead of reading a dead terminal.
extern "C" fn forward_hangup(_: nix::libc::c_int) {
    let group = AGENT_GROUP.load(Ordering::Relaxed);
    if group > 0 {
        // kill(2) is async-signal-safe; a stopped job needs SIGCONT to see the SIGHUP.
        let _ = killpg(Pid::from_raw(group), Signal::SIGHUP);
        let _ = killpg(Pid::from_raw(group), Signal::SIGCONT);
    }
}

/// Installs `handler` for `signals`. A handler (unlike SIG_IGN) is reset to the default by
/// exec, so the agent receives these signals normally.
fn catch(signals: &[Signal], handler: extern "C" fn(nix::libc::c_int)) {
    let action = SigAction::new(
        SigHandler::Handler(handler),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in signals {
        #[allow(unsafe_code)]
        // SAFETY: both handlers only call async-signal-safe functions (an atomic load and
        // kill(2)) or nothing.
        let _ = unsafe { sigaction(*signal, &action) };
    }
}

/// The terminal a session runs on: a file descriptor that is its controlling terminal.
#[derive(Debug, Clone, Copy)]
pub struct Terminal {
    fd: RawFd,
}

impl Terminal {
    /// Stdin, when it is this process's controlling terminal (sshd allocated a PTY).
    /// `None` when stdin is a pipe, `/dev/null` or some other terminal.
    pub fn stdin() -> Option<Terminal> {
        let terminal = Terminal { fd: 0 };
        // tcgetpgrp succeeds only on the caller's controlling terminal.
        tcgetpgrp(terminal.fd()).ok().map(|_| terminal)
    }

    fn fd(&self) -> BorrowedFd<'_> {
        #[allow(unsafe_code)]
        // SAFETY: a Terminal is only made for stdin, which the session never closes.
        unsafe {
            BorrowedFd::borrow_raw(self.fd)
        }
    }

    /// Makes `group` the terminal's foreground process group. A caller outside the
    /// foreground group would get SIGTTOU (and stop) for this unless it blocks that signal,
    /// so it is blocked for the call, as job-control shells do. Async-signal-safe: the agent
    /// calls it between fork and exec.
    fn hand_to(&self, group: Pid) -> nix::Result<()> {
        let mut ttou = SigSet::empty();
        ttou.add(Signal::SIGTTOU);
        let mut previous = SigSet::empty();
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&ttou), Some(&mut previous))?;
        let handed = tcsetpgrp(self.fd(), group);
        pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&previous), None)?;
        handed
    }
}

/// Starts `command` as a job: in a process group of its own (never the session leader's,
/// which is orphaned, so the kernel would discard its stops) that owns `terminal`.
fn spawn_job(command: &mut Command, terminal: Option<Terminal>) -> std::io::Result<Pid> {
    command.process_group(0);
    if let Some(terminal) = terminal {
        let fd = terminal.fd;
        #[allow(unsafe_code)]
        // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
        // functions (getpgrp, pthread_sigmask, tcsetpgrp); it allocates nothing.
        unsafe {
            command.pre_exec(move || {
                // The child takes the terminal itself, before exec: claude's first act is to
                // switch the terminal to raw mode, which a background job cannot do.
                let _ = Terminal { fd }.hand_to(getpgrp());
                Ok(())
            });
        }
    }
    // `spawn` returns after the child has exec'd (std waits on a close-on-exec pipe), so the
    // child's group and the terminal are already set up.
    let child = command.spawn()?;
    Ok(Pid::from_raw(child.id() as i32))
}

/// Waits for the job led by `child`, resuming it whenever it stops; returns a shell-style
/// exit status (128 + the signal when a signal ended it). A stop for any reason (SIGTSTP
/// from Ctrl+Z or claude itself, SIGSTOP, SIGTTIN, SIGTTOU) gets the terminal handed back
/// to the job and SIGCONT to its whole group: the session has nobody to type `fg`.
fn supervise(child: Pid, terminal: Option<Terminal>) -> i32 {
    loop {
        match waitpid(child, Some(WaitPidFlag::WUNTRACED)) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, signal, _)) => return 128 + signal as i32,
            Ok(WaitStatus::Stopped(_, _)) => {
                if let Some(terminal) = terminal {
                    let _ = terminal.hand_to(child);
                }
                let _ = killpg(child, Signal::SIGCONT);
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                eprintln!("ccvm-guest session: waiting for the agent failed: {e}");
                return 1;
            }
        }
    }
}

/// Runs `command` as the session's job on `terminal` (if any) and returns its status, with
/// the terminal back in the supervisor's group.
pub fn run_job(mut command: Command, terminal: Option<Terminal>) -> i32 {
    let code = match spawn_job(&mut command, terminal) {
        Ok(child) => {
            AGENT_GROUP.store(child.as_raw(), Ordering::Relaxed);
            supervise(child, terminal)
        }
        Err(e) => {
            eprintln!(
                "ccvm-guest session: cannot start {:?}: {e}",
                command.get_program()
            );
            127
        }
    };
    AGENT_GROUP.store(0, Ordering::Relaxed);
    if let Some(terminal) = terminal {
        let _ = terminal.hand_to(getpgrp());
    }
    code
}

// ---------------------------------------------------------------------------------------
// The forwarded API key (S6.1)
// ---------------------------------------------------------------------------------------

/// How many trailing characters of a key Claude Code records in
/// `customApiKeyResponses.approved` (observed with Claude Code 2.1.330: answering "Yes" to
/// "Detected a custom API key" stores the key's last 20 characters).
pub const APPROVAL_SUFFIX_LEN: usize = 20;

/// Why the forwarded key could not be marked approved.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("the key is {0} characters long; approving it would write it whole")]
    TooShort(usize),
    #[error("the key is not valid UTF-8")]
    NotUtf8,
    #[error("the key's last {APPROVAL_SUFFIX_LEN} characters start inside a character")]
    SplitCharacter,
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {source}")]
    NotJson {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path} does not hold a JSON object")]
    NotObject { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What Claude Code records for `key`: its last [`APPROVAL_SUFFIX_LEN`] characters as
/// JavaScript counts them (UTF-16 code units). A key no longer than that is refused: its
/// "suffix" would be the whole key.
pub fn approval_suffix(key: &OsStr) -> Result<String, ApprovalError> {
    let key = key.to_str().ok_or(ApprovalError::NotUtf8)?;
    let units: Vec<u16> = key.encode_utf16().collect();
    if units.len() <= APPROVAL_SUFFIX_LEN {
        return Err(ApprovalError::TooShort(units.len()));
    }
    // A suffix that starts inside a surrogate pair has no UTF-8 form; it cannot be written
    // the way Claude Code would compare it.
    String::from_utf16(&units[units.len() - APPROVAL_SUFFIX_LEN..])
        .map_err(|_| ApprovalError::SplitCharacter)
}

/// The array at `object[name]`, made an empty one when it is missing or not an array.
fn array_at<'a>(
    object: &'a mut serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> &'a mut Vec<serde_json::Value> {
    let entry = object
        .entry(name)
        .or_insert_with(|| serde_json::Value::Array(Vec::new()));
    if !entry.is_array() {
        *entry = serde_json::Value::Array(Vec::new());
    }
    entry.as_array_mut().expect("made an array just above")
}

/// `config` (a `~/.claude.json` object) with `suffix` once in
/// `customApiKeyResponses.approved` and not in `rejected`; every other key is kept.
pub fn approve_suffix(
    mut config: serde_json::Map<String, serde_json::Value>,
    suffix: &str,
) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::Value;
    let responses = config
        .entry("customApiKeyResponses")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    if !responses.is_object() {
        *responses = Value::Object(serde_json::Map::new());
    }
    let responses = responses
        .as_object_mut()
        .expect("made an object just above");
    array_at(responses, "rejected").retain(|v| v.as_str() != Some(suffix));
    let approved = array_at(responses, "approved");
    if !approved.iter().any(|v| v.as_str() == Some(suffix)) {
        approved.push(Value::String(suffix.to_owned()));
    }
    config
}

/// Marks `key` approved in `home/.claude.json`, creating the file when it is missing. The
/// file is replaced by a rename, so claude never reads half of it.
pub fn approve_forwarded_key(home: &Path, key: &OsStr) -> Result<(), ApprovalError> {
    let suffix = approval_suffix(key)?;
    let path = home.join(".claude.json");
    let config = match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(serde_json::Value::Object(config)) => config,
            Ok(_) => return Err(ApprovalError::NotObject { path }),
            Err(source) => return Err(ApprovalError::NotJson { path, source }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::Map::new(),
        Err(source) => return Err(ApprovalError::Read { path, source }),
    };
    let text = serde_json::to_vec_pretty(&approve_suffix(config, &suffix))
        .expect("a JSON map always serializes");
    let temporary = home.join(".claude.json.ccvm-new");
    let write = || -> std::io::Result<()> {
        let _ = std::fs::remove_file(&temporary);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(&text)?;
        file.write_all(b"\n")?;
        std::fs::rename(&temporary, &path)
    };
    write().map_err(|source| ApprovalError::Write { path, source })
}

/// The approval step of [`run`]: when the session's environment carries the key (under the
/// name PID 1 left in the session directory), approve it; say why when that fails, since
/// claude will then ask.
fn approve_session_key() {
    let Ok(name) = std::fs::read_to_string(Path::new(SESSION_DIR).join(API_KEY_VARIABLE_FILE))
    else {
        return;
    };
    let Some(key) = std::env::var_os(name.trim()).filter(|k| !k.is_empty()) else {
        return;
    };
    let Some(home) = std::env::var_os("HOME") else {
        return;
    };
    if let Err(e) = approve_forwarded_key(Path::new(&home), &key) {
        eprintln!(
            "ccvm: warning: could not mark the forwarded {} approved ({e}); Claude Code will \
             ask whether to use it",
            name.trim()
        );
    }
}

// ---------------------------------------------------------------------------------------
// TERM (S6.5)
// ---------------------------------------------------------------------------------------

/// Terminals that speak xterm's language well enough for `xterm-256color` to describe them.
const XTERM_LIKE: &[&str] = &[
    "xterm",
    "ghostty",
    "wezterm",
    "kitty",
    "alacritty",
    "foot",
    "konsole",
    "gnome",
    "vte",
    "iterm",
    "contour",
];

/// Where ncurses looks for compiled entries, in its order (terminfo(5)): `$TERMINFO`,
/// `~/.terminfo`, `$TERMINFO_DIRS`, then Debian's built-in list.
fn terminfo_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os("TERMINFO") {
        dirs.push(PathBuf::from(dir));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".terminfo"));
    }
    if let Some(list) = std::env::var_os("TERMINFO_DIRS") {
        dirs.extend(std::env::split_paths(&list).filter(|d| !d.as_os_str().is_empty()));
    }
    dirs.extend(
        ["/etc/terminfo", "/lib/terminfo", "/usr/share/terminfo"]
            .iter()
            .map(PathBuf::from),
    );
    dirs
}

/// Whether `name` could be a terminfo entry name at all (and so is safe to use in a path).
fn plausible_term(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b))
}

/// Whether one of `dirs` holds a compiled entry for `name` (in the `x/` or the hashed `78/`
/// layout).
fn has_terminfo(dirs: &[PathBuf], name: &str) -> bool {
    let Some(first) = name.bytes().next().filter(|_| plausible_term(name)) else {
        return false;
    };
    dirs.iter().any(|dir| {
        dir.join(char::from(first).to_string()).join(name).is_file()
            || dir.join(format!("{first:02x}")).join(name).is_file()
    })
}

/// The entries to use in place of `term`, closest first: a multiplexer's own family, the
/// xterm family for terminals that emulate it, else `term` cut back one `-part` at a time,
/// and finally xterm, which nearly every terminal emulator speaks.
pub fn fallback_candidates(term: &str) -> Vec<String> {
    let owned = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
    if term.starts_with("tmux") {
        return owned(&["tmux-256color", "tmux", "screen-256color", "screen"]);
    }
    if term.starts_with("screen") {
        return if term.contains("256color") {
            owned(&["screen-256color", "screen"])
        } else {
            owned(&["screen", "screen-256color"])
        };
    }
    let xterm = ["xterm-256color", "xterm"];
    if XTERM_LIKE.iter().any(|family| term.contains(family)) {
        return owned(&xterm);
    }
    let mut candidates = Vec::new();
    if plausible_term(term) {
        let mut cut = term;
        while let Some((shorter, _)) = cut.rsplit_once('-') {
            candidates.push(shorter.to_owned());
            cut = shorter;
        }
    }
    candidates.extend(owned(&xterm));
    candidates
}

/// What to do about `term`: `None` when it has an entry (or is unset/empty: nothing to
/// describe), else `Some(Some(entry))` to use instead, or `Some(None)` when no candidate
/// exists either.
pub fn term_replacement(term: &str, exists: impl Fn(&str) -> bool) -> Option<Option<String>> {
    if term.is_empty() || (plausible_term(term) && exists(term)) {
        return None;
    }
    Some(
        fallback_candidates(term)
            .into_iter()
            .find(|candidate| exists(candidate)),
    )
}

/// The TERM step of [`run`]: points `command` at the closest entry the guest has and says so
/// once.
fn fix_term(command: &mut Command) {
    let Some(term) = std::env::var_os("TERM") else {
        return;
    };
    let term = term.to_string_lossy().into_owned();
    let dirs = terminfo_dirs();
    match term_replacement(&term, |name| has_terminfo(&dirs, name)) {
        None => {}
        Some(Some(entry)) => {
            eprintln!("ccvm: note: the VM has no terminfo for TERM={term:?}; using {entry}");
            command.env("TERM", entry);
        }
        Some(None) => {
            eprintln!("ccvm: note: the VM has no terminfo for TERM={term:?} nor a close one");
        }
    }
}

// ---------------------------------------------------------------------------------------
// The session
// ---------------------------------------------------------------------------------------

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
    // The supervisor sits outside the terminal's foreground group while the agent runs, so
    // the terminal's signals go to the agent alone; these are for stray ones.
    catch(&[Signal::SIGINT, Signal::SIGQUIT, Signal::SIGTSTP], ignore);
    catch(&[Signal::SIGHUP], forward_hangup);
    approve_session_key();
    let mut command = command_for(mode, argv);
    command.env_remove("SSH_ORIGINAL_COMMAND");
    let terminal = Terminal::stdin();
    if terminal.is_some() {
        fix_term(&mut command);
    }
    let code = run_job(command, terminal);
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

    fn sh(script: &str) -> Command {
        let mut command = Command::new("/bin/sh");
        command.args(["-c", script]);
        command
    }

    #[test]
    fn stopped_job_without_a_terminal_is_resumed_and_its_status_returned() {
        // Both ways a program stops itself: SIGSTOP (older Claude Code) and SIGTSTP (2.1.330).
        assert_eq!(run_job(sh("kill -STOP $$; exit 7"), None), 7);
        assert_eq!(
            run_job(
                sh("trap 'exit 8' CONT; kill -TSTP $$; sleep 5; exit 9"),
                None
            ),
            8
        );
    }

    #[test]
    fn job_killed_by_a_signal_returns_128_plus_the_signal() {
        assert_eq!(run_job(sh("kill -TERM $$"), None), 128 + 15);
    }

    #[test]
    fn job_that_cannot_start_returns_127() {
        assert_eq!(run_job(Command::new("/nonexistent/claude"), None), 127);
    }

    /// Set in the re-executed test binary that plays the session leader.
    const LEADER_ROLE: &str = "CCVM_GUEST_TEST_SESSION_LEADER";

    /// The job of the orphaned-session test: it checks that it leads its own process group
    /// and that this group owns the terminal (fields 5 and 8 of /proc/PID/stat), then stops
    /// itself with SIGTSTP as Claude Code 2.1.330 does on Ctrl+Z and exits 7 only once
    /// SIGCONT arrives. A discarded stop (or no SIGCONT) makes it exit 9 after 5 s.
    const STOPPING_JOB: &str = "set -- $(cat /proc/$$/stat); \
        [ \"$5\" = \"$$\" ] || exit 5; [ \"$8\" = \"$$\" ] || exit 8; \
        trap 'exit 7' CONT; kill -TSTP $$; sleep 5; exit 9";

    /// In the re-executed binary: supervise the job on the controlling terminal (stdin),
    /// then exit with its status, or 99 when the terminal did not come back.
    fn play_session_leader() -> ! {
        let terminal = Terminal::stdin().expect("stdin is the controlling terminal");
        let code = run_job(sh(STOPPING_JOB), Some(terminal));
        let back = tcgetpgrp(terminal.fd()).ok() == Some(getpgrp());
        std::process::exit(if back { code } else { 99 });
    }

    #[test]
    fn job_in_an_orphaned_session_that_stops_itself_with_sigtstp_is_resumed() {
        if std::env::var_os(LEADER_ROLE).is_some() {
            play_session_leader();
        }
        // sshd's forced command is a session leader whose parent is in another session: its
        // own process group is orphaned. Rebuild that: this test binary, re-executed in a
        // fresh session on a new PTY, plays the supervisor.
        let pty = nix::pty::openpty(None, None).expect("openpty");
        // Other tests spawn children meanwhile; they must not hold the PTY open.
        for fd in [&pty.master, &pty.slave] {
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .expect("close-on-exec");
        }
        let slave = std::fs::File::from(pty.slave);
        let mut leader = Command::new(std::env::current_exe().expect("test binary"));
        leader
            .args([
                "--exact",
                "session::tests::job_in_an_orphaned_session_that_stops_itself_with_sigtstp_is_resumed",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(LEADER_ROLE, "1")
            .stdin(slave.try_clone().expect("dup"))
            .stdout(slave.try_clone().expect("dup"))
            .stderr(slave);
        #[allow(unsafe_code)]
        // SAFETY: setsid and ioctl are async-signal-safe and allocate nothing.
        unsafe {
            leader.pre_exec(|| {
                nix::unistd::setsid()?;
                if nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = leader.spawn().expect("re-execute the test binary");
        drop(leader);
        // Drain the PTY so the child never blocks on a full buffer; keep what it said.
        let mut master = std::fs::File::from(pty.master);
        let said = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = std::io::Read::read_to_end(&mut master, &mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("the session leader did not finish in 60 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let said = said.join().expect("reader");
        assert_eq!(status.code(), Some(7), "the session leader said:\n{said}");
    }

    #[test]
    fn approval_suffix_is_the_last_20_characters_as_javascript_counts_them() {
        // As observed with Claude Code 2.1.330 (`slice(-20)`).
        assert_eq!(
            approval_suffix(OsStr::new("sk-ant-api03-fakefakefake-0123456789abcdefghij"))
                .expect("long key"),
            "0123456789abcdefghij"
        );
        assert_eq!(
            approval_suffix(OsStr::new("sk-ant-abcdefghijklmnopqrstuvwxyzééééé0123"))
                .expect("non-ASCII key"),
            "pqrstuvwxyzééééé0123"
        );
    }

    #[test]
    fn approval_suffix_of_a_short_or_binary_key_is_refused() {
        assert!(matches!(
            approval_suffix(OsStr::new("01234567890123456789")),
            Err(ApprovalError::TooShort(20))
        ));
        assert!(matches!(
            approval_suffix(&OsString::from_vec(b"\xff-0123456789012345678901".to_vec())),
            Err(ApprovalError::NotUtf8)
        ));
        // 20 units that start with the second half of a surrogate pair.
        let key = format!("sk-ant-{}{}", "\u{1F600}", "x".repeat(19));
        assert!(matches!(
            approval_suffix(OsStr::new(&key)),
            Err(ApprovalError::SplitCharacter)
        ));
    }

    #[test]
    fn approving_keeps_onboarding_and_trust_and_replaces_a_rejection() {
        let config: serde_json::Value = serde_json::json!({
            "hasCompletedOnboarding": true,
            "projects": {"/p": {"hasTrustDialogAccepted": true}},
            "customApiKeyResponses": {"approved": ["older"], "rejected": ["0123456789abcdefghij"]}
        });
        let serde_json::Value::Object(config) = config else {
            unreachable!()
        };
        let approved = serde_json::Value::Object(approve_suffix(config, "0123456789abcdefghij"));
        assert_eq!(
            approved,
            serde_json::json!({
                "hasCompletedOnboarding": true,
                "projects": {"/p": {"hasTrustDialogAccepted": true}},
                "customApiKeyResponses": {
                    "approved": ["older", "0123456789abcdefghij"],
                    "rejected": []
                }
            })
        );
    }

    #[test]
    fn approving_twice_lists_the_suffix_once_and_repairs_odd_shapes() {
        let config = serde_json::json!({"customApiKeyResponses": {"approved": "x"}});
        let serde_json::Value::Object(config) = config else {
            unreachable!()
        };
        let once = approve_suffix(config, "s");
        let twice = serde_json::Value::Object(approve_suffix(once, "s"));
        assert_eq!(
            twice,
            serde_json::json!({"customApiKeyResponses": {"approved": ["s"], "rejected": []}})
        );
    }

    #[test]
    fn forwarded_key_is_approved_in_a_new_or_existing_file_without_writing_it_whole() {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().expect("tempdir");
        let key = OsStr::new("sk-ant-api03-SECRETPART-0123456789abcdefghij");
        approve_forwarded_key(home.path(), key).expect("create");
        let path = home.path().join(".claude.json");
        let text = std::fs::read_to_string(&path).expect("written");
        assert!(!text.contains("SECRETPART"), "{text}");
        let written: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(
            written["customApiKeyResponses"]["approved"],
            serde_json::json!(["0123456789abcdefghij"])
        );
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        std::fs::write(
            &path,
            r#"{"hasCompletedOnboarding": true, "numStartups": 3}"#,
        )
        .expect("write");
        approve_forwarded_key(home.path(), key).expect("update");
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        assert_eq!(written["hasCompletedOnboarding"], true);
        assert_eq!(written["numStartups"], 3);
        assert_eq!(
            written["customApiKeyResponses"]["approved"],
            serde_json::json!(["0123456789abcdefghij"])
        );
        let names: Vec<_> = std::fs::read_dir(home.path())
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, [".claude.json"], "no temporary file is left");
    }

    #[test]
    fn a_claude_json_that_is_not_an_object_is_left_alone() {
        let home = tempfile::tempdir().expect("tempdir");
        let path = home.path().join(".claude.json");
        for text in ["not json", "[1, 2]"] {
            std::fs::write(&path, text).expect("write");
            let key = OsStr::new("sk-ant-api03-0123456789abcdefghij");
            assert!(approve_forwarded_key(home.path(), key).is_err());
            assert_eq!(std::fs::read_to_string(&path).expect("read"), text);
        }
    }

    fn bookworm(name: &str) -> bool {
        // What the image has: ncurses-base, ncurses-term (alacritty), kitty-terminfo,
        // foot-terminfo. Not wezterm, not xterm-ghostty.
        [
            "xterm",
            "xterm-256color",
            "screen",
            "screen-256color",
            "tmux",
            "tmux-256color",
            "alacritty",
            "kitty",
            "foot",
            "rxvt-unicode",
            "dumb",
        ]
        .contains(&name)
    }

    #[test]
    fn known_term_is_kept() {
        for term in [
            "xterm-256color",
            "kitty",
            "alacritty",
            "tmux-256color",
            "dumb",
            "",
        ] {
            assert_eq!(term_replacement(term, bookworm), None, "{term}");
        }
    }

    #[test]
    fn unknown_xterm_like_term_falls_back_to_xterm_256color() {
        for term in [
            "xterm-ghostty",
            "ghostty",
            "wezterm",
            "xterm-kitty",
            "foot-extra",
        ] {
            assert_eq!(
                term_replacement(term, bookworm),
                Some(Some("xterm-256color".to_owned())),
                "{term}"
            );
        }
    }

    #[test]
    fn unknown_multiplexer_term_falls_back_to_its_family() {
        assert_eq!(
            term_replacement("tmux-direct", bookworm),
            Some(Some("tmux-256color".to_owned()))
        );
        assert_eq!(
            term_replacement("screen.xterm-256color", bookworm),
            Some(Some("screen-256color".to_owned()))
        );
        assert_eq!(
            term_replacement("screen-w-odd", bookworm),
            Some(Some("screen".to_owned()))
        );
    }

    #[test]
    fn other_unknown_term_is_cut_back_then_xterm() {
        assert_eq!(
            term_replacement("rxvt-unicode-24bit", bookworm),
            Some(Some("rxvt-unicode".to_owned()))
        );
        assert_eq!(
            term_replacement("st-256color", bookworm),
            Some(Some("xterm-256color".to_owned()))
        );
        // A TERM that is not a name at all is never used as a path.
        assert_eq!(
            term_replacement("../../x/xterm", |name| {
                assert!(!name.contains('/'), "{name}");
                bookworm(name)
            }),
            Some(Some("xterm-256color".to_owned()))
        );
        assert_eq!(term_replacement("wezterm", |_| false), Some(None));
    }

    #[test]
    fn terminfo_is_found_in_both_directory_layouts() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("x")).expect("mkdir");
        std::fs::write(dir.path().join("x/xterm-new"), b"").expect("write");
        std::fs::create_dir_all(dir.path().join("77")).expect("mkdir");
        std::fs::write(dir.path().join("77/wezterm"), b"").expect("write");
        let dirs = [dir.path().to_owned()];
        assert!(has_terminfo(&dirs, "xterm-new"));
        assert!(has_terminfo(&dirs, "wezterm"));
        assert!(!has_terminfo(&dirs, "xterm-ghostty"));
        assert!(!has_terminfo(&dirs, "../x/xterm-new"));
    }
}
