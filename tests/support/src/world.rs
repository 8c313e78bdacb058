//! Running `ccvm` like a user would, in isolation.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Programs the fake-hypervisor directory provides. Each only records that it ran.
const FAKE_PROGRAMS: [&str; 4] = [
    "qemu-system-x86_64",
    "qemu-system-aarch64",
    "cloud-hypervisor",
    "virtiofsd",
];

/// A private world for one test: home, XDG directories, project dir, fake programs.
#[derive(Debug)]
pub struct World {
    pub root: tempfile::TempDir,
    /// Real programs (a VM test) instead of the fake ones.
    real: bool,
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

impl World {
    pub fn new() -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let world = World { root, real: false };
        for dir in ["home", "config", "cache", "runtime", "project", "bin"] {
            std::fs::create_dir(world.path(dir)).expect("mkdir");
        }
        // Like /run/user/<uid>: ccvm refuses a runtime directory others can enter (S6.4).
        std::fs::set_permissions(
            world.path("runtime"),
            std::fs::Permissions::from_mode(0o700),
        )
        .expect("chmod");
        for program in FAKE_PROGRAMS {
            world.program(program, "#!/bin/sh\necho \"fake $0 $*\" >&2\nexit 0\n");
        }
        world
    }

    /// Puts an executable `name` with `script` in the world's `bin` (on ccvm's `PATH`).
    pub fn program(&self, name: &str, script: &str) -> PathBuf {
        let path = self.path("bin").join(name);
        std::fs::write(&path, script).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    /// A world whose `ccvm` sees the real programs on the test's `PATH` (QEMU, ssh,
    /// virtiofsd), for tests that boot a VM. When the tests run as root, `ccvm` runs as the
    /// unprivileged [`crate::vm::TEST_UID`], as a real user would (S11.3); call
    /// [`World::hand_over`] once the world's files are in place.
    pub fn for_vm() -> Self {
        let mut world = World::new();
        world.real = true;
        world
    }

    /// When running as root: gives every file of the world to the test user.
    pub fn hand_over(&self) {
        if !nix::unistd::getuid().is_root() {
            return;
        }
        fn walk(path: &Path) {
            let id = Some(crate::vm::TEST_UID);
            std::os::unix::fs::lchown(path, id, id).expect("chown to the test user");
            if path.is_dir() && !path.is_symlink() {
                for entry in std::fs::read_dir(path).expect("read_dir").flatten() {
                    walk(&entry.path());
                }
            }
        }
        walk(self.root.path());
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    pub fn home(&self) -> PathBuf {
        self.path("home")
    }

    /// Writes the user's config file.
    pub fn config(&self, text: &str) {
        let dir = self.path("config").join("ccvm");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("config.toml"), text).expect("write config");
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("config").join("ccvm").join("config.toml")
    }

    /// A fresh plugin directory (mode 0755) holding copies of the named built libraries.
    pub fn plugin_dir(&self, name: &str, libraries: &[&str]) -> PathBuf {
        let dir = self.path(name);
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        for library in libraries {
            let file = format!("lib{library}.so");
            std::fs::copy(built_library(library), dir.join(&file)).expect("copy library");
        }
        dir
    }

    /// `ccvm` with this world's environment and no other.
    pub fn ccvm(&self) -> Ccvm {
        let system_path = "/usr/local/bin:/usr/bin:/bin";
        let mut command = Command::new(crate::ccvm_binary());
        command
            .env_clear()
            .current_dir(self.path("project"))
            .env("HOME", self.home())
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("XDG_CACHE_HOME", self.path("cache"))
            .env("XDG_RUNTIME_DIR", self.path("runtime"))
            .env("GIT_CONFIG_NOSYSTEM", "1");
        if self.real {
            command.env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| system_path.into()),
            );
            if nix::unistd::getuid().is_root() {
                use std::os::unix::process::CommandExt;
                command
                    .uid(crate::vm::TEST_UID)
                    .gid(crate::vm::TEST_UID)
                    .env("USER", crate::vm::TEST_USER);
            }
        } else {
            command.env(
                "PATH",
                format!("{}:{system_path}", self.path("bin").display()),
            );
        }
        Ccvm { command }
    }

    /// Every file and directory under the world's home, XDG and runtime directories.
    pub fn tree(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
                out.push(entry.path());
                if entry.path().is_dir() {
                    walk(&entry.path(), out);
                }
            }
        }
        let mut out = Vec::new();
        for dir in ["home", "config", "cache", "runtime", "project"] {
            walk(&self.path(dir), &mut out);
        }
        out.sort();
        out
    }
}

/// Path of a library built by `cargo build --workspace`, next to the ccvm binary.
pub fn built_library(name: &str) -> PathBuf {
    let binary = crate::ccvm_binary();
    let dir = binary.parent().expect("the binary has a directory");
    let path = dir.join(format!("lib{name}.so"));
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace` before the tests (the README's test \
         command does)",
        path.display()
    );
    path
}

/// One invocation under construction.
#[must_use]
#[derive(Debug)]
pub struct Ccvm {
    command: Command,
}

impl Ccvm {
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.command.arg(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        for arg in args {
            self.command.arg(arg.into());
        }
        self
    }

    pub fn env_remove(mut self, key: &str) -> Self {
        self.command.env_remove(key);
        self
    }

    /// Runs it as the unprivileged test user when the tests run as root (ccvm refuses to
    /// start a session as root, S11.3). The world must have been handed over.
    pub fn unprivileged(mut self) -> Self {
        if nix::unistd::getuid().is_root() {
            use std::os::unix::process::CommandExt;
            self.command
                .uid(crate::vm::TEST_UID)
                .gid(crate::vm::TEST_UID)
                .env("USER", crate::vm::TEST_USER);
        }
        self
    }

    /// Runs it from `dir` instead of the world's project directory.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.command.current_dir(dir);
        self
    }

    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Self {
        self.command.env(key, value.into());
        self
    }

    /// Starts it with no stdin and piped output.
    pub fn spawn_quiet(mut self) -> std::process::Child {
        self.command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("ccvm runs")
    }

    /// Runs with no stdin and a hard deadline; a run that overstays is killed and fails.
    pub fn run_within(mut self, limit: std::time::Duration) -> Outcome {
        let child = self
            .command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("ccvm runs");
        let (output, in_time) = crate::vm::output_within(child, limit);
        let outcome = Outcome {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        assert!(in_time, "ccvm did not finish within {limit:?}: {outcome:?}");
        outcome
    }

    /// The command itself, for callers that need its pipes (the benchmarks).
    #[allow(dead_code)]
    pub fn into_command(self) -> Command {
        self.command
    }

    pub fn run(mut self) -> Outcome {
        let output = self.command.output().expect("ccvm runs");
        Outcome {
            code: output.status.code().expect("ccvm exits, not killed"),
            stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
        }
    }
}

/// What an invocation did.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Asserts the exit code, showing the output when it differs.
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "exit code; stderr:\n{}\nstdout:\n{}",
            self.stderr, self.stdout
        );
        self
    }

    /// The stdout parsed as JSON (for `--ccvm-plan`).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    /// The `ccvm: error:` line, asserting there is exactly one.
    pub fn error_line(&self) -> &str {
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("ccvm: error: "))
            .collect();
        assert_eq!(errors.len(), 1, "one error line expected:\n{}", self.stderr);
        errors[0]
    }

    pub fn hint_line(&self) -> &str {
        self.stderr
            .lines()
            .find(|l| l.starts_with("ccvm: hint: "))
            .unwrap_or_else(|| panic!("no hint line:\n{}", self.stderr))
    }
}

/// The text a plan appends to the guest `~/.claude/CLAUDE.md` (its `ccvm-session.md` seed
/// file).
pub fn plan_context(plan: &serde_json::Value) -> &str {
    plan["seed"]["files"]
        .as_array()
        .expect("seed files")
        .iter()
        .find(|f| f["path"] == "ccvm-session.md")
        .and_then(|f| f["source"]["content"].as_str())
        .unwrap_or_else(|| panic!("the plan has no ccvm-session.md: {plan}"))
}

/// A plan's guest setup steps (in its seed manifest).
pub fn plan_steps(plan: &serde_json::Value) -> &serde_json::Value {
    &plan["seed"]["manifest"]["setup_steps"]
}

/// A plan's run directory.
pub fn plan_run_dir(plan: &serde_json::Value) -> &str {
    plan["vm"]["run_dir"].as_str().expect("run_dir")
}
