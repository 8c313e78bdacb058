//! A private tmux server playing the user's terminal emulator: one pane running one command
//! (`ccvm`, or the real `claude` natively for a comparison), driven by keystrokes and read
//! back as the captured screen. Every wait polls with a deadline.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::vm;
use crate::world::World;

/// `text` quoted for sh.
pub fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Whether the screen has a line equal to `line` (trailing blanks ignored).
pub fn has_line(screen: &str, line: &str) -> bool {
    screen.lines().any(|l| l.trim_end() == line)
}

/// Why tmux cannot run here, if it cannot.
pub fn missing() -> Option<String> {
    which::which("tmux")
        .is_err()
        .then(|| "`tmux` is not installed (package tmux; scripts/deps.sh installs it)".to_owned())
}

/// A private tmux server (its socket in the world) showing one command in one pane. It runs
/// as the world's user: when the tests run as root, ccvm runs as the test user (S11.3), and
/// a tmux server serves its own user only.
#[derive(Debug)]
pub struct Tmux {
    socket: PathBuf,
    config: PathBuf,
    home: PathBuf,
    exit_file: PathBuf,
    /// When the pane was started.
    pub started: Instant,
}

impl Tmux {
    /// Starts `command` (its program, arguments, directory and environment; nothing else of
    /// this process reaches it) in a `cols`×`rows` pane, with `TERM=term` (`None`: the pane's
    /// own `tmux-256color`).
    pub fn start(
        world: &World,
        command: &Command,
        term: Option<&str>,
        (cols, rows): (u16, u16),
    ) -> Tmux {
        // A fresh socket per pane: a server just told to exit may still hold the last one.
        static PANES: AtomicUsize = AtomicUsize::new(0);
        let n = PANES.fetch_add(1, Ordering::Relaxed);
        let tmux = Tmux {
            socket: world.path(&format!("tmux-{n}.sock")),
            config: world.path("tmux.conf"),
            home: world.home(),
            exit_file: world.path(&format!("pane-{n}.exit")),
            started: Instant::now(),
        };
        std::fs::write(
            &tmux.config,
            "set -g default-terminal tmux-256color\nset -g remain-on-exit on\nset -g status off\n",
        )
        .expect("write tmux.conf");
        let mut script = String::from("#!/bin/sh\n");
        if let Some(dir) = command.get_current_dir() {
            script.push_str(&format!(
                "cd {} || exit 1\n",
                quoted(&dir.to_string_lossy())
            ));
        }
        if let Some(term) = term {
            script.push_str(&format!("TERM={}; export TERM\n", quoted(term)));
        }
        script.push_str(&quoted(&command.get_program().to_string_lossy()));
        for arg in command.get_args() {
            script.push(' ');
            script.push_str(&quoted(&arg.to_string_lossy()));
        }
        script.push_str(&format!(
            "\necho \"EXIT=$?\" > {}\n",
            quoted(&tmux.exit_file.to_string_lossy())
        ));
        let script_path = world.path(&format!("pane-{n}.sh"));
        std::fs::write(&script_path, script).expect("write the pane's script");
        // The server keeps the environment it starts with, and the pane inherits it: the
        // command's variables (a key) reach it without appearing in any argv.
        let envs: Vec<(OsString, OsString)> = command
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
            .collect();
        let out = tmux
            .command()
            .envs(envs)
            .args(["new-session", "-d", "-s", "pane", "-x"])
            .arg(cols.to_string())
            .arg("-y")
            .arg(rows.to_string())
            .arg(format!("sh {}", quoted(&script_path.to_string_lossy())))
            .output()
            .expect("tmux runs");
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    /// A tmux client of this server, as the test user.
    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command
            .env_clear()
            .env("HOME", &self.home)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LANG", "C.UTF-8")
            .env("SHELL", "/bin/sh")
            .arg("-S")
            .arg(&self.socket)
            .arg("-f")
            .arg(&self.config)
            .stdin(Stdio::null());
        if nix::unistd::getuid().is_root() {
            command.uid(vm::TEST_UID).gid(vm::TEST_UID);
        }
        command
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().expect("tmux runs");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The pane's screen now.
    pub fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "pane"])
    }

    /// Named keys (`C-z`, `Enter`, `Left`).
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "pane"];
        args.extend(keys);
        self.run(&args);
    }

    /// Literal text, as if typed.
    pub fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", "pane", "-l", "--", text]);
    }

    /// Resizes the window, as a user dragging the terminal's corner.
    pub fn resize(&self, cols: u16, rows: u16) {
        self.run(&[
            "resize-window",
            "-t",
            "pane",
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
        ]);
    }

    /// Polls the screen every `every` until `done` holds, then returns it with when it was
    /// captured; `None` after `limit`, with the last screen.
    pub fn poll(
        &self,
        limit: Duration,
        every: Duration,
        done: impl Fn(&str) -> bool,
    ) -> Result<(String, Instant), String> {
        let deadline = Instant::now() + limit;
        loop {
            let screen = self.screen();
            let at = Instant::now();
            if done(&screen) {
                return Ok((screen, at));
            }
            if at >= deadline {
                return Err(screen);
            }
            std::thread::sleep(every);
        }
    }

    /// Polls the screen until `done` holds; panics with the last screen after `limit`.
    pub fn wait_for(&self, what: &str, limit: Duration, done: impl Fn(&str) -> bool) -> String {
        match self.poll(limit, Duration::from_millis(250), done) {
            Ok((screen, _)) => screen,
            Err(screen) => {
                panic!("{what}: not on the screen within {limit:?}; the last screen:\n{screen}")
            }
        }
    }

    /// Waits until the shell shows its prompt with nothing typed after it. Input typed
    /// earlier could be lost: vim and less discard pending input when they leave.
    pub fn shell_prompt(&self, limit: Duration) {
        self.wait_for("the shell's prompt", limit, |s| {
            s.lines()
                .map(str::trim_end)
                .rfind(|l| !l.is_empty())
                .is_some_and(|l| l.ends_with('$'))
        });
    }

    /// At the shell's prompt, types `command` and Enter, then waits for a line equal to
    /// `expected`.
    pub fn shell(&self, command: &str, expected: &str, limit: Duration) -> String {
        self.shell_prompt(limit);
        self.type_text(command);
        self.keys(&["Enter"]);
        self.wait_for(&format!("{expected:?} from `{command}`"), limit, |s| {
            has_line(s, expected)
        })
    }

    /// The pane command's exit status, once the pane's script has recorded it.
    pub fn exit_status(&self, limit: Duration) -> i32 {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(text) = std::fs::read_to_string(&self.exit_file)
                && let Some(code) = text.trim().strip_prefix("EXIT=")
            {
                return code.parse().expect("a number");
            }
            assert!(
                Instant::now() < deadline,
                "the pane's command did not exit within {limit:?}; the last screen:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Tmux {
    /// Ends the server; the pane's command gets SIGHUP (ccvm tears its VM down).
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").output();
    }
}
