//! End-to-end sessions through the real `ccvm` binary: it plans, writes the seed, boots the
//! stub image under TCG, runs the session over ssh and tears everything down. Covers S1.2
//! (argv verbatim), S1.5 (`--shell`), S6.1 (the API key only in the session), S11.1 (teardown
//! on every path) and S11.2 (concurrent sessions); the S11.3 root refusal is in `cli.rs`.

use std::os::unix::ffi::OsStringExt;
use std::time::Duration;

use sha2::Digest;

use ccvm_test_support::vm;
use ccvm_test_support::world::World;

/// A session must finish well within this, boot included.
const SESSION_LIMIT: Duration = Duration::from_secs(240);

fn world(config: &str) -> Option<World> {
    vm::stub_world(config, |world| {
        std::fs::write(world.path("project/hello.txt"), "hello\n").expect("write");
    })
}

/// What of a session is still there: run directories and processes naming the world.
fn leftovers(world: &World) -> Vec<String> {
    let runtime = world.path("runtime/ccvm");
    let left: Vec<_> = std::fs::read_dir(&runtime)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    let mut survivors: Vec<String> = left
        .iter()
        .map(|p| format!("directory {}", p.display()))
        .collect();
    let marker = world.root.path().display().to_string();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(&marker)
        {
            survivors.push(format!(
                "process {}",
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            ));
        }
    }
    survivors
}

/// Nothing of the session is left: no run directory, no process using it.
fn assert_torn_down(world: &World) {
    let left = leftovers(world);
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Like [`assert_torn_down`], allowing `limit` for killed processes to go away.
fn assert_torn_down_within(world: &World, limit: Duration) {
    let deadline = std::time::Instant::now() + limit;
    while !leftovers(world).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_torn_down(world);
}

/// Starts `ccvm --shell -c 'sleep 600'` and waits until its console log exists and
/// contains `needle` (`""`: as soon as the hypervisor has created it).
// The caller waits for the returned child.
#[allow(clippy::zombie_processes)]
fn start_long_session(world: &World, needle: &str) -> std::process::Child {
    let mut child = world
        .ccvm()
        .args(["--shell", "-c", "sleep 600"])
        .spawn_quiet();
    let deadline = std::time::Instant::now() + SESSION_LIMIT;
    loop {
        let consoles: Vec<_> = std::fs::read_dir(world.path("runtime/ccvm"))
            .map(|e| e.flatten().map(|e| e.path().join("console.log")).collect())
            .unwrap_or_default();
        if consoles
            .iter()
            .any(|c| std::fs::read_to_string(c).is_ok_and(|t| t.contains(needle)))
        {
            return child;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the console never showed {needle:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ctrl_c_or_sigterm_during_boot_tears_down_without_a_boot_failure() {
    let Some(world) = world("") else { return };
    for (signal, status) in [
        (nix::sys::signal::Signal::SIGINT, 130),
        (nix::sys::signal::Signal::SIGTERM, 143),
    ] {
        // The hypervisor is running; the guest needs seconds more to be ready.
        let child = start_long_session(&world, "");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal)
            .expect("kill");
        let (output, in_time) = vm::output_within(child, Duration::from_secs(30));
        assert!(in_time, "ccvm did not stop after {signal}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(status), "{signal}: {stderr}");
        assert!(!stderr.contains("did not boot"), "{stderr}");
        assert!(
            !stderr.contains("error"),
            "a requested stop is not an error: {stderr}"
        );
        assert_torn_down_within(&world, Duration::from_secs(10));
    }
}

#[test]
fn sigkill_of_ccvm_takes_the_hypervisor_and_the_scratch_directory_with_it() {
    let Some(world) = world("share_transport = \"virtio-fs\"\n") else {
        return;
    };
    if which::which("virtiofsd").is_err() {
        vm::skip("virtiofsd is not installed (scripts/deps.sh installs it)");
        return;
    }
    let mut child = start_long_session(&world, "ccvm-guest: ready");
    child.kill().expect("SIGKILL ccvm");
    let _ = child.wait();
    assert_torn_down_within(&world, Duration::from_secs(10));
}

#[test]
fn shell_runs_the_command_in_the_project_and_returns_its_status() {
    let Some(world) = world("") else { return };
    let out = world
        .ccvm()
        .args([
            "--shell",
            "-c",
            "pwd; cat hello.txt; echo made-in-vm > made.txt; exit 3",
        ])
        .env("CCVM_TIMINGS", world.path("home/timings.json"))
        .run_within(SESSION_LIMIT);
    assert_eq!(
        out.code, 3,
        "stderr:\n{}\nstdout:\n{}",
        out.stderr, out.stdout
    );
    // CCVM_TIMINGS: every phase, in the order they happen (the benchmarks rely on it).
    let timings: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(world.path("home/timings.json")).expect("timings written"),
    )
    .expect("timings are a JSON object");
    let phases = [
        "planned",
        "prepared",
        "hypervisor_started",
        "agent_started",
        "sshd_starting",
        "ready",
        "ssh_started",
        "session_ended",
    ];
    let times: Vec<f64> = phases
        .iter()
        .map(|p| {
            timings[*p]
                .as_f64()
                .unwrap_or_else(|| panic!("{p}: {timings:?}"))
        })
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "phases out of order: {timings:?}"
    );
    let project = std::fs::canonicalize(world.path("project")).expect("project");
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .collect();
    assert!(
        lines.contains(&project.to_str().expect("utf8")),
        "{lines:?}"
    );
    assert!(lines.contains(&"hello"), "{lines:?}");
    assert_eq!(
        std::fs::read_to_string(world.path("project/made.txt"))
            .expect("the guest's file reached the host"),
        "made-in-vm\n"
    );
    assert_torn_down(&world);
}

#[test]
fn claude_gets_the_argv_verbatim_the_api_key_and_returns_its_status() {
    let Some(world) = world("") else { return };
    let odd: Vec<std::ffi::OsString> = vec![
        "two words".into(),
        "it's \"quoted\"".into(),
        "*".into(),
        "line\nbreak".into(),
        std::ffi::OsString::from_vec(vec![0xff, 0xfe, b'x']),
        "--stub-exit=5".into(),
        "--".into(),
        "--backend".into(),
    ];
    let secret = "sk-ant-e2e-not-a-real-key";
    let out = world
        .ccvm()
        .args([
            "-p".into(),
            std::ffi::OsString::from("--backend"),
            "microvm".into(),
        ])
        .args(odd.clone())
        .env("ANTHROPIC_API_KEY", secret)
        .run_within(SESSION_LIMIT);
    assert_eq!(
        out.code, 5,
        "stderr:\n{}\nstdout:\n{}",
        out.stderr, out.stdout
    );
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .collect();
    // `--backend microvm` before `--` is ccvm's; everything else reaches claude in order.
    let mut expected = vec!["-p".as_bytes().to_vec()];
    expected.extend(odd.iter().map(|a| a.clone().into_vec()));
    let hex: Vec<String> = expected
        .iter()
        .map(|a| {
            format!(
                "stub-claude: arg-hex={}",
                a.iter().map(|b| format!("{b:02x}")).collect::<String>()
            )
        })
        .collect();
    let got: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("stub-claude: arg-hex="))
        .collect();
    assert_eq!(got, hex, "{}", out.stdout);
    assert!(
        lines.contains(&format!("stub-claude: argc={}", expected.len()).as_str()),
        "{lines:?}"
    );
    let digest = format!("{:x}", sha2::Sha256::digest(secret.as_bytes()));
    assert!(
        lines.contains(&format!("stub-claude: api-key-sha256={digest}").as_str()),
        "{lines:?}"
    );
    let project = std::fs::canonicalize(world.path("project")).expect("project");
    assert!(
        lines.contains(&format!("stub-claude: cwd={}", project.display()).as_str()),
        "{lines:?}"
    );
    assert_torn_down(&world);
}

#[test]
fn version_is_passed_through_to_the_real_claude_code_in_the_vm() {
    let Some(image) = vm::real_image_or_skip() else {
        return;
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image.join("manifest.json")).expect("manifest"))
            .expect("json");
    let version = manifest["claude_code"]
        .as_str()
        .expect("claude_code")
        .to_owned();
    let world = World::for_vm();
    world.config("acceleration = \"tcg\"\n");
    vm::install_image(&image, &world.path("cache"), "default");
    world.hand_over();
    let out = world.ccvm().arg("--version").run_within(SESSION_LIMIT);
    assert_eq!(
        out.code, 0,
        "stderr:\n{}\nstdout:\n{}",
        out.stderr, out.stdout
    );
    assert_eq!(
        out.stdout.trim_end(),
        format!("{version} (Claude Code)"),
        "{}",
        out.stderr
    );
    assert_torn_down(&world);
}

/// Every process of the world with its command line and environment, read while it runs.
fn world_processes(world: &World) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let marker = world.root.path().display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(&marker) || String::from_utf8_lossy(&environ).contains(&marker) {
            found.push((text, cmdline, environ));
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_api_key_reaches_the_agent_and_nothing_else() {
    let Some(world) = world("") else { return };
    let secret = "sk-ant-containment-check-8d1f";
    let mut child = world
        .ccvm()
        .args(["--ccvm-debug", "--shell", "-c"])
        .arg(
            "echo \"agent-key-sha256=$(printf %s \"$ANTHROPIC_API_KEY\" | sha256sum | cut -d' ' -f1)\"; \
             grep -c containment /proc/cmdline; sleep 4",
        )
        .env("ANTHROPIC_API_KEY", secret)
        .spawn_quiet();
    // While the session runs: only ccvm and ssh may hold the key, in their environment.
    let deadline = std::time::Instant::now() + SESSION_LIMIT;
    let mut seen_qemu = false;
    while child.try_wait().expect("try_wait").is_none() && std::time::Instant::now() < deadline {
        for (name, cmdline, environ) in world_processes(&world) {
            assert!(
                !contains(&cmdline, secret.as_bytes()),
                "the key is in an argv: {name}"
            );
            let may_hold = name.contains("ccvm --ccvm-debug") || name.contains("ssh -F none -tt");
            assert!(
                may_hold || !contains(&environ, secret.as_bytes()),
                "the key is in the environment of {name}"
            );
            seen_qemu |=
                name.starts_with("/usr/bin/qemu-system") || name.contains("qemu-system-x86_64 ");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (output, in_time) = vm::output_within(child, Duration::from_secs(30));
    assert!(in_time);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}\n{stdout}");
    assert!(seen_qemu, "the hypervisor was never seen running");
    let digest = format!("{:x}", sha2::Sha256::digest(secret.as_bytes()));
    assert!(
        stdout.contains(&format!("agent-key-sha256={digest}")),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l.trim_end_matches('\r') == "0"),
        "kernel command line: {stdout}"
    );
    // --ccvm-debug streamed the console and kept the scratch directory: scan all of it.
    assert!(stderr.contains("ccvm-guest: ready"), "{stderr}");
    let kept = vm::kept_scratch_dir(&stderr);
    let mut files = Vec::new();
    let mut stack = vec![kept.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            if entry.file_type().expect("type").is_dir() {
                stack.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    assert!(
        files.iter().any(|f| f.ends_with("seed/seed.json")),
        "{files:?}"
    );
    for file in &files {
        let bytes = std::fs::read(file).unwrap_or_default();
        assert!(
            !contains(&bytes, secret.as_bytes()),
            "the key was written to {}",
            file.display()
        );
    }
    std::fs::remove_dir_all(&kept).expect("remove the kept directory");
}

#[test]
fn two_sessions_at_once_on_q35_and_microvm_do_not_collide() {
    let Some(world) = world("") else { return };
    let start = |backend: &str, word: &str| {
        world
            .ccvm()
            .args(["--backend", backend, "--read-only-cwd", "--shell", "-c"])
            .arg(format!("echo {word} > shared.txt && cat shared.txt"))
            .spawn_quiet()
    };
    let a = start("q35", "from-q35");
    let b = start("microvm", "from-microvm");
    for (child, word) in [(a, "from-q35"), (b, "from-microvm")] {
        let (output, in_time) = vm::output_within(child, SESSION_LIMIT);
        assert!(in_time, "{word}: did not finish");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{word}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains(word), "{word}: {stdout}");
    }
    // Read-only sessions: the writes stayed in the guests.
    assert!(!world.path("project/shared.txt").exists());
    assert_torn_down(&world);
}

#[test]
fn a_bad_config_value_fails_before_anything_starts() {
    let Some(world) = world("memory_mib = \"lots\"\n") else {
        return;
    };
    let out = world
        .ccvm()
        .args(["--shell", "-c", "true"])
        .run_within(SESSION_LIMIT);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.error_line().contains("memory_mib"), "{}", out.stderr);
    assert!(
        !world.path("runtime/ccvm").exists(),
        "nothing may be created"
    );
    assert_torn_down(&world);
}

/// With a writable project the agent can plant code the host runs later. A session that adds
/// a git hook and sets `core.fsmonitor` gets both named at exit, with the hook's first lines;
/// a session that only edits ordinary files gets no such warning.
#[test]
fn a_planted_git_hook_and_fsmonitor_are_reported_at_exit() {
    let Some(world) = vm::stub_world("", |world| {
        let project = world.path("project");
        std::fs::create_dir_all(project.join(".git/hooks")).expect("mkdir");
        std::fs::write(
            project.join(".git/config"),
            "[core]\n\trepositoryformatversion = 0\n",
        )
        .expect("write");
        std::fs::write(project.join("notes.txt"), "v1\n").expect("write");
    }) else {
        return;
    };
    let out = world
        .ccvm()
        .args(["--shell", "-c", "echo v2 > notes.txt"])
        .run_within(SESSION_LIMIT)
        .expect_code(0);
    assert!(
        !out.stderr.contains("programs on your host"),
        "{}",
        out.stderr
    );

    let plant = "printf '#!/bin/sh\\necho planted-by-the-agent\\n' > .git/hooks/pre-commit && \
                 chmod +x .git/hooks/pre-commit && \
                 printf '\\tfsmonitor = ./fsmonitor.sh\\n' >> .git/config";
    let out = world
        .ccvm()
        .args(["--shell", "-c", plant])
        .run_within(SESSION_LIMIT)
        .expect_code(0);
    for needle in [
        "ccvm: warning: the session changed files in the project that programs on your host run",
        "ccvm:   added    .git/hooks/pre-commit (executable)",
        "ccvm:     | echo planted-by-the-agent",
        "ccvm:   changed  .git/config",
        "ccvm:     + \tfsmonitor = ./fsmonitor.sh",
    ] {
        assert!(
            out.stderr.contains(needle),
            "missing {needle:?}:\n{}",
            out.stderr
        );
    }
}
