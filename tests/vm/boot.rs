//! The guest agent and the stub image, booted with QEMU under TCG straight from the test:
//! the plan comes from `ccvm --ccvm-plan`, the seed and keys from ccvm's library, and the test
//! starts the hypervisor itself, waits for the ready marker and logs in over ssh. (The full
//! `ccvm` launch is tested separately.) Covers S5.1–S5.6 (shares, staging, sanitizing,
//! CLAUDE.md), S6.3 (sshd forced command), S10.1 (overlay root) and S10.4 (hardening).

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ccvm::launch::machine::{Boot, Machine};
use ccvm_plugin_api::seed::SeedManifest;
use ccvm_plugin_api::{BackendPlan, SeedFile};

use ccvm_test_support::vm;
use ccvm_test_support::world::World;

/// Boot under TCG takes 2–10 s; a loaded 2-core machine may need far more.
const BOOT_LIMIT: Duration = Duration::from_secs(180);
const SESSION_LIMIT: Duration = Duration::from_secs(90);

/// What the `--shell -c` session reports; every line starts with `check: `.
const CHECK_SCRIPT: &str = r#"
P="$(pwd)"
echo "check: id=$(id -u):$(id -g):$(id -un)"
echo "check: pwd=$P"
echo "check: home=$HOME"
awk -v p="$P" -v c="$HOME/.claude" '$2 == p || $2 == c || $2 == "/" || $2 == "/run/ccvm/seed" { print "check: mount " $2 " " $3 " " $4 }' /proc/mounts
(cd "$HOME/.claude" && find . -mindepth 1 | sort) | while read -r f; do
    echo "check: staged $(stat -c '%u:%g %a %F' "$HOME/.claude/$f") $f"
done
echo "check: claude-json-secrets=$(grep -c -e primaryApiKey -e sk-test "$HOME/.claude.json")"
echo "check: claude-json-servers=$(grep -c '"mcpServers"' "$HOME/.claude.json")"
tr '\n' '|' < "$HOME/.claude/CLAUDE.md" | sed 's/^/check: claude-md=/'; echo
echo "check: git-user=$(git config --global user.name)"
echo "check: git-credential=$(git config --global --get-regexp '^credential' | wc -l)"
echo edited >> "$HOME/.claude/settings.json" && echo "check: settings-writable"
echo from-guest > "$P/from-guest.txt" && echo "check: project-write=ok"
echo "check: project-read=$(cat "$P/hello.txt")"
if sudo -n true 2>/dev/null; then echo "check: sudo=yes"; else echo "check: sudo=no"; fi
echo "check: nproc=$(nproc)"
echo "check: kptr_restrict=$(cat /proc/sys/kernel/kptr_restrict)"
echo "check: shadow-root=$(sudo -n grep '^root:' /etc/shadow | cut -d: -f2)"
echo "check: sshd-config=$(grep -c '^ForceCommand /usr/local/bin/ccvm-guest session' /etc/ssh/ccvm_sshd_config)"
exit 7
"#;

/// Sets up a home with a `~/.claude` worth staging, a `~/.claude.json` with secrets, a git
/// config with a credential helper, and a project with one file.
fn populate(world: &World) {
    let home = world.home();
    let claude = home.join(".claude");
    fs::create_dir_all(claude.join("agents/nested")).expect("mkdir");
    fs::write(
        claude.join("CLAUDE.md"),
        "# host memory\nprefer small commits\n",
    )
    .expect("write");
    fs::write(claude.join("agents/reviewer.md"), "review carefully\n").expect("write");
    fs::write(
        claude.join("agents/nested/.credentials.json"),
        "{\"token\":\"x\"}",
    )
    .expect("write");
    fs::write(claude.join(".credentials.json"), "{\"claudeAiOauth\":{}}").expect("write");
    fs::write(claude.join("history.jsonl"), "{}\n").expect("write");
    // A symlinked settings file (dotfiles repo) must arrive as a writable file.
    let dotfiles = home.join("dotfiles");
    fs::create_dir_all(&dotfiles).expect("mkdir");
    fs::write(dotfiles.join("settings.json"), "{\"theme\":\"dark\"}\n").expect("write");
    std::os::unix::fs::symlink(dotfiles.join("settings.json"), claude.join("settings.json"))
        .expect("symlink");
    fs::write(
        home.join(".claude.json"),
        r#"{"userID":"u1","primaryApiKey":"sk-test-1","mcpServers":{"db":{"command":"db","env":{"TOKEN":"sk-test-2"}}}}"#,
    )
    .expect("write");
    fs::write(
        home.join(".gitconfig"),
        "[user]\n\tname = Test User\n[credential]\n\thelper = store\n",
    )
    .expect("write");
    fs::write(world.path("project/hello.txt"), "hello from the host\n").expect("write");
}

pub struct Session {
    pub lines: Vec<String>,
    pub status: Option<i32>,
    pub boot_seconds: f64,
    pub console: String,
    /// What the ssh client printed on stderr.
    pub ssh_stderr: String,
}

impl Session {
    pub fn check(&self, key: &str) -> Vec<&str> {
        let prefix = format!("check: {key}");
        self.lines
            .iter()
            .filter_map(|l| l.strip_prefix(&prefix))
            .collect()
    }

    pub fn value(&self, key: &str) -> &str {
        let found = self.check(&format!("{key}="));
        assert_eq!(
            found.len(),
            1,
            "one `{key}=` line expected; session:\n{}",
            self.lines.join("\n")
        );
        found[0]
    }
}

fn json_field<T: serde::de::DeserializeOwned>(plan: &serde_json::Value, pointer: &str) -> T {
    serde_json::from_value(
        plan.pointer(pointer)
            .unwrap_or_else(|| panic!("plan has no {pointer}"))
            .clone(),
    )
    .unwrap_or_else(|e| panic!("plan {pointer}: {e}"))
}

/// Plans with `ccvm`, writes the seed, boots, runs the check script over ssh.
fn boot_and_check(world: &World, backend: &str) -> Session {
    boot_session(world, backend, CHECK_SCRIPT, |_, _| {})
}

/// A booted (or failed) stub guest whose seed `ccvm --ccvm-plan` planned.
struct Started {
    machine: Machine,
    boot: Boot,
    boot_seconds: f64,
    ssh: ccvm_plugin_api::Command,
}

/// Plans a `--shell -c SCRIPT` session with `ccvm`, lets `tamper` change the seed manifest
/// and files (to provoke what no configuration can), lets `ssh_args` change the ssh client's
/// arguments (a client that asks for more than ccvm's does), writes the seed and starts the
/// stub image, waiting until it is ready or has failed.
fn start_guest(
    world: &World,
    backend: &str,
    script: &str,
    tamper: impl FnOnce(&mut SeedManifest, &mut Vec<SeedFile>),
    ssh_args: impl FnOnce(&mut Vec<String>),
) -> Started {
    let outcome = world
        .ccvm()
        .args(["--ccvm-plan", "--backend", backend, "--shell", "-c", script])
        .env("CCVM_ACCEL", "tcg")
        .run()
        .expect_code(0);
    let plan = outcome.json();
    let run_dir = Path::new(ccvm_test_support::world::plan_run_dir(&plan)).to_owned();
    let mut manifest: SeedManifest = json_field(&plan, "/seed/manifest");
    let host_home = manifest.user.home.clone();
    let mut files: Vec<SeedFile> = json_field(&plan, "/seed/files");
    tamper(&mut manifest, &mut files);
    let machine_plan: BackendPlan = json_field(&plan, "/machine");
    let mut ssh: ccvm_plugin_api::Command = json_field(&plan, "/ssh");
    ssh_args(&mut ssh.args);

    ccvm::host::dirs::create_run_dir(&run_dir).expect("run dir");
    let seed_dir = run_dir.join("seed");
    let argv = [OsString::from("-c"), OsString::from(script)];
    let reads: Vec<String> = json_field(&plan, "/host_reads");
    let rules = ccvm::launch::seed::link_rules(Path::new(&host_home), &files, &reads);
    let warnings = ccvm::launch::seed::write(&seed_dir, &manifest, &argv, &files, &rules)
        .expect("seed written");
    assert!(warnings.is_empty(), "{warnings:?}");
    let ssh_keygen = which::which("ssh-keygen").expect("ssh-keygen");
    ccvm::launch::seed::generate_keys(&ssh_keygen, &run_dir, &seed_dir).expect("keys");

    let started = Instant::now();
    let mut machine = Machine::start(&machine_plan, &run_dir, &[]).expect("the hypervisor starts");
    let boot = machine
        .wait_ready(started + BOOT_LIMIT, |_| {}, || false)
        .expect("waiting for the guest");
    Started {
        machine,
        boot,
        boot_seconds: started.elapsed().as_secs_f64(),
        ssh,
    }
}

/// Starts a guest whose setup must fail: returns the guest agent's fatal message.
pub fn boot_until_fatal(
    world: &World,
    backend: &str,
    tamper: impl FnOnce(&mut SeedManifest),
) -> String {
    let mut started = start_guest(
        world,
        backend,
        "echo check: never",
        |manifest, _| tamper(manifest),
        |_| {},
    );
    let _ = started.machine.wait_exit(Duration::from_secs(60));
    match started.boot {
        Boot::GuestFailed(why) => why,
        other => panic!(
            "{backend}: the guest setup was expected to fail, got {other:?}\n--- guest console \
             ---\n{}",
            started.machine.console_text()
        ),
    }
}

/// [`start_guest`], then runs the script over ssh. The script must print at least one
/// `check: ` line.
pub fn boot_session(
    world: &World,
    backend: &str,
    script: &str,
    tamper: impl FnOnce(&mut SeedManifest, &mut Vec<SeedFile>),
) -> Session {
    boot_session_with(world, backend, script, tamper, |_| {})
}

/// [`boot_session`], with `ssh_args` changing the ssh client's arguments first.
pub fn boot_session_with(
    world: &World,
    backend: &str,
    script: &str,
    tamper: impl FnOnce(&mut SeedManifest, &mut Vec<SeedFile>),
    ssh_args: impl FnOnce(&mut Vec<String>),
) -> Session {
    let Started {
        mut machine,
        boot,
        boot_seconds,
        ssh,
    } = start_guest(world, backend, script, tamper, ssh_args);
    let fail = |machine: &Machine, what: String| -> ! {
        panic!(
            "{what}\n--- guest console ---\n{}\n--- hypervisor ---\n{}",
            machine.console_text(),
            machine.hypervisor_output()
        )
    };
    if !matches!(boot, Boot::Ready) {
        fail(
            &machine,
            format!("{backend}: the guest did not become ready: {boot:?}"),
        );
    }
    eprintln!("{backend}: ready marker after {boot_seconds:.2} s");

    let child = Command::new(&ssh.program)
        .args(&ssh.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh runs");
    let (output, in_time) = vm::output_within(child, SESSION_LIMIT);
    if !in_time {
        fail(
            &machine,
            format!("{backend}: the ssh session did not end within {SESSION_LIMIT:?}"),
        );
    }
    let lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| l.trim_end_matches('\r').to_owned())
        .collect();
    if !lines.iter().any(|l| l.starts_with("check: ")) {
        fail(
            &machine,
            format!(
                "{backend}: the session printed no checks; ssh stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            ),
        );
    }
    if std::env::var_os("CCVM_TEST_VERBOSE").is_some() {
        eprintln!("{}", lines.join("\n"));
    }
    // The guest powers off by itself when the session ends.
    let exit = machine.wait_exit(Duration::from_secs(60)).expect("wait");
    if exit.is_none() {
        fail(
            &machine,
            format!("{backend}: the VM did not power off after the session"),
        );
    }
    Session {
        lines,
        status: output.status.code(),
        boot_seconds,
        console: machine.console_text(),
        ssh_stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn common_assertions(world: &World, session: &Session, read_only: bool, fstype: &str) {
    let uid = host_uid();
    let name = nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map(|u| u.name)
        .expect("a passwd entry for the test user");
    let project = fs::canonicalize(world.path("project")).expect("project");
    let home = world.home();
    assert_eq!(
        session.status,
        Some(7),
        "the session's exit status comes back through ssh"
    );
    assert_eq!(session.value("id"), format!("{uid}:{uid}:{name}"));
    assert_eq!(session.value("pwd"), project.display().to_string());
    assert_eq!(session.value("home"), home.display().to_string());

    // Mounts: RAM overlay root, seed gone, project nosuid/nodev, ~/.claude a tmpfs.
    let mounts = session.check("mount ");
    let mount_of = |path: &Path| -> Vec<&str> {
        mounts
            .iter()
            .filter(|m| m.starts_with(&format!("{} ", path.display())))
            .copied()
            .collect()
    };
    assert!(
        mounts.iter().any(|m| m.starts_with("/ overlay ")),
        "{mounts:?}"
    );
    assert!(
        !mounts.iter().any(|m| m.starts_with("/run/ccvm/seed ")),
        "the seed is unmounted: {mounts:?}"
    );
    let project_mount = mount_of(&project);
    assert_eq!(project_mount.len(), 1, "{mounts:?}");
    let expected_fs = if read_only { "overlay" } else { fstype };
    assert!(
        project_mount[0].starts_with(&format!("{} {expected_fs} ", project.display())),
        "{project_mount:?}"
    );
    assert!(
        project_mount[0].contains("nosuid") && project_mount[0].contains("nodev"),
        "{project_mount:?}"
    );
    let claude_mount = mount_of(&home.join(".claude"));
    assert_eq!(claude_mount.len(), 1, "{mounts:?}");
    assert!(claude_mount[0].contains(" tmpfs "), "{claude_mount:?}");

    // ~/.claude: the allowlist, owned by and writable for the agent, no credentials.
    let staged = session.check("staged ");
    let owner = format!("{uid}:{uid} ");
    for expected in [
        "./CLAUDE.md",
        "./settings.json",
        "./agents",
        "./agents/reviewer.md",
    ] {
        let line = staged
            .iter()
            .find(|l| l.ends_with(&format!(" {expected}")))
            .unwrap_or_else(|| panic!("{expected} not staged: {staged:?}"));
        assert!(line.starts_with(&owner), "{line}");
    }
    assert!(
        staged
            .iter()
            .any(|l| l.ends_with("regular file ./settings.json")),
        "the symlink arrives as a file: {staged:?}"
    );
    assert!(
        !staged.iter().any(|l| l.contains(".credentials.json")),
        "{staged:?}"
    );
    assert!(
        !staged.iter().any(|l| l.contains("history.jsonl")),
        "{staged:?}"
    );
    assert_eq!(session.check("settings-writable").len(), 1);
    assert_eq!(session.value("claude-json-secrets"), "0");
    assert_eq!(session.value("claude-json-servers"), "1");
    let claude_md = session.value("claude-md");
    assert!(
        claude_md.starts_with("# host memory|prefer small commits|"),
        "{claude_md}"
    );
    assert!(claude_md.contains("# ccvm session"), "{claude_md}");
    let header = if read_only {
        "discarded when the session ends"
    } else {
        "Project edits are live"
    };
    assert!(claude_md.contains(header), "{claude_md}");
    assert_eq!(session.value("git-user"), "Test User");
    assert_eq!(session.value("git-credential"), "0");

    // Project, sudo, hardening.
    assert_eq!(session.value("project-write"), "ok");
    assert_eq!(session.value("project-read"), "hello from the host");
    assert_eq!(
        session.value("sudo"),
        "yes",
        "no allowlist: the agent has sudo"
    );
    assert_eq!(session.value("kptr_restrict"), "2");
    assert_eq!(session.value("shadow-root"), "*");
    assert_eq!(session.value("sshd-config"), "1");
    assert!(
        session.console.contains("ccvm-guest: ready"),
        "{}",
        session.console
    );
    assert!(
        session
            .console
            .contains("ccvm-guest: session ended (7), powering off"),
        "{}",
        session.console
    );
}

fn prepared_world(config: &str) -> Option<World> {
    vm::stub_world(config, populate)
}

#[test]
fn microvm_9p_read_write_boots_applies_the_seed_and_powers_off() {
    let Some(world) = prepared_world("writable_cwd = true\n") else {
        return;
    };
    let session = boot_and_check(&world, "microvm");
    common_assertions(&world, &session, false, "9p");
    // `cpus` unset under TCG: no more vCPUs than the host has cores (at most 4).
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(session.value("nproc"), cores.min(4).to_string());
    let written = world.path("project/from-guest.txt");
    assert_eq!(
        fs::read_to_string(&written).expect("the guest's file is on the host"),
        "from-guest\n"
    );
    assert_eq!(
        fs::metadata(&written).expect("metadata").uid(),
        host_uid(),
        "owned by the host user"
    );
    eprintln!(
        "microvm/9p boot to ready marker: {:.2} s",
        session.boot_seconds
    );
}

#[test]
fn q35_virtio_fs_read_only_boots_and_keeps_the_host_project_unchanged() {
    if which::which("virtiofsd").is_err() {
        vm::skip(
            "virtiofsd (the Rust daemon) is not installed: `cargo install --locked virtiofsd`",
        );
        return;
    }
    let Some(world) = prepared_world("writable_cwd = false\nshare_transport = \"virtio-fs\"\n")
    else {
        return;
    };
    let session = boot_and_check(&world, "q35");
    common_assertions(&world, &session, true, "virtiofs");
    assert!(
        !world.path("project/from-guest.txt").exists(),
        "a read-only session's write must not reach the host"
    );
    eprintln!(
        "q35/virtio-fs boot to ready marker: {:.2} s",
        session.boot_seconds
    );
}

/// The same checks through the real launcher (`ccvm --shell -c …`), with `--ccvm-debug`
/// streaming the console to stderr; plus `persist_claude_projects`: the share appears inside
/// the fresh `~/.claude` and what the agent writes there lands on the host.
#[test]
fn ccvm_launch_applies_the_same_seed_and_persists_projects_when_asked() {
    let Some(world) = prepared_world("writable_cwd = true\npersist_claude_projects = true\n")
    else {
        return;
    };
    let script = format!(
        "echo kept > \"$HOME/.claude/projects/from-guest.jsonl\" && echo 'check: projects-write=ok'\n{CHECK_SCRIPT}"
    );
    let out = world
        .ccvm()
        .args(["--ccvm-debug", "--shell", "-c", &script])
        .run_within(Duration::from_secs(240));
    fs::remove_dir_all(vm::kept_scratch_dir(&out.stderr))
        .expect("remove the kept scratch directory");
    let session = Session {
        lines: out
            .stdout
            .lines()
            .map(|l| l.trim_end_matches('\r').to_owned())
            .collect(),
        status: Some(out.code),
        boot_seconds: 0.0,
        console: out.stderr.clone(),
        ssh_stderr: String::new(),
    };
    common_assertions(&world, &session, false, "9p");
    assert_eq!(session.value("projects-write"), "ok");
    let persisted = world.home().join(".claude/projects/from-guest.jsonl");
    assert_eq!(
        fs::read_to_string(&persisted).expect("persisted on the host"),
        "kept\n"
    );
    let claude_md = session.value("claude-md");
    assert!(claude_md.contains("persist across sessions"), "{claude_md}");
    let written = world.path("project/from-guest.txt");
    assert_eq!(
        fs::metadata(&written).expect("the guest's file").uid(),
        host_uid(),
        "owned by the host user"
    );
}

/// The uid ccvm runs as in VM tests.
fn host_uid() -> u32 {
    if nix::unistd::getuid().is_root() {
        vm::TEST_UID
    } else {
        nix::unistd::getuid().as_raw()
    }
}

/// S5.1, the guest's half: guest setup never writes through a share. The host refuses a
/// project that is (or holds) the home; here the seed says so anyway (as a tampered or buggy
/// host could), with a project holding its own `.claude.json`, `.gitconfig` and `.claude/`.
/// The guest refuses before writing anything, and the host files stay byte for byte.
#[test]
fn guest_refuses_a_share_over_the_home_and_the_host_files_stay_unchanged() {
    let Some(world) = prepared_world("") else {
        return;
    };
    let project = world.path("project");
    let own = [
        (project.join(".claude.json"), "{\"mine\":true}\n"),
        (
            project.join(".gitconfig"),
            "[user]\n\tname = Project Owner\n",
        ),
        (
            project.join(".claude/settings.json"),
            "{\"theme\":\"mine\"}\n",
        ),
        (project.join(".claude/CLAUDE.md"), "# the project's own\n"),
    ];
    for (path, content) in &own {
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, content).expect("write");
    }
    world.hand_over();
    let fatal = boot_until_fatal(&world, "microvm", |manifest| {
        manifest.user.home = manifest.project_dir.clone();
    });
    assert!(fatal.contains("would contain the agent's home"), "{fatal}");
    for (path, content) in &own {
        assert_eq!(
            fs::read_to_string(path).expect("still there"),
            *content,
            "{} changed on the host",
            path.display()
        );
    }
    let names: Vec<String> = fs::read_dir(project.join(".claude"))
        .expect("list")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "nothing was added to the project's .claude: {names:?}"
    );
}
