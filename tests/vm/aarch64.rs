//! The `virt` backend for real: an aarch64 guest on QEMU's `virt` machine under TCG, booting
//! the aarch64 stub image that this x86_64 host builds under qemu-user (S3, S10). The same
//! launcher, seed, guest agent (cross-built) and OpenSSH as the x86_64 sessions.

use std::time::Duration;

use ccvm_test_support::vm;
use ccvm_test_support::world::World;

/// aarch64 under TCG boots far slower than x86_64 (bench/RESULTS.md); a loaded 2-core host
/// needs more still.
const SESSION_LIMIT: Duration = Duration::from_secs(420);

fn virt_world(config: &str) -> Option<World> {
    let image = match vm::aarch64_stub_image() {
        Ok(image) => image,
        Err(reason) => {
            vm::skip(&reason);
            return None;
        }
    };
    Some(vm::image_world(
        image,
        &format!("backend = \"virt\"\nacceleration = \"tcg\"\n{config}"),
        |world| {
            std::fs::write(world.path("project/hello.txt"), "hello from the host\n")
                .expect("write");
        },
    ))
}

#[test]
fn virt_boots_an_aarch64_guest_on_ttyama0_with_a_writable_project() {
    let Some(world) = virt_world("writable_cwd = true\n") else {
        return;
    };
    let script = r#"
echo "check: machine=$(uname -m)"
echo "check: console=$(cat /sys/class/tty/console/active)"
echo "check: cmdline-console=$(tr ' ' '\n' < /proc/cmdline | grep '^console=')"
echo "check: read=$(cat hello.txt)"
echo "written in the aarch64 guest" > from-virt.txt && echo "check: write=ok"
exit 3
"#;
    let out = world
        .ccvm()
        .args(["--shell", "-c", script])
        .run_within(SESSION_LIMIT);
    assert_eq!(
        out.code, 3,
        "stderr:\n{}\nstdout:\n{}",
        out.stderr, out.stdout
    );
    let checks: Vec<&str> = out
        .stdout
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter_map(|l| l.strip_prefix("check: "))
        .collect();
    assert!(checks.contains(&"machine=aarch64"), "{checks:?}");
    assert!(checks.contains(&"console=ttyAMA0"), "{checks:?}");
    assert!(
        checks.contains(&"cmdline-console=console=ttyAMA0"),
        "{checks:?}"
    );
    assert!(checks.contains(&"read=hello from the host"), "{checks:?}");
    assert!(checks.contains(&"write=ok"), "{checks:?}");
    assert_eq!(
        std::fs::read_to_string(world.path("project/from-virt.txt"))
            .expect("the guest's file is on the host"),
        "written in the aarch64 guest\n"
    );
}

#[test]
fn virt_hands_claude_its_argv_verbatim_and_returns_its_status() {
    let Some(world) = virt_world("") else {
        return;
    };
    let args = ["two words", "it's \"quoted\"", "*", "--stub-exit=6"];
    let out = world.ccvm().args(args).run_within(SESSION_LIMIT);
    assert_eq!(
        out.code, 6,
        "stderr:\n{}\nstdout:\n{}",
        out.stderr, out.stdout
    );
    let got: Vec<&str> = out
        .stdout
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| l.starts_with("stub-claude: arg-hex="))
        .collect();
    let expected: Vec<String> = args
        .iter()
        .map(|a| {
            format!(
                "stub-claude: arg-hex={}",
                a.bytes().map(|b| format!("{b:02x}")).collect::<String>()
            )
        })
        .collect();
    assert_eq!(got, expected, "{}", out.stdout);
    let project = std::fs::canonicalize(world.path("project")).expect("project");
    assert!(
        out.stdout
            .contains(&format!("stub-claude: cwd={}", project.display())),
        "{}",
        out.stdout
    );
}

#[test]
fn virt_runs_the_real_claude_code_for_arm64() {
    let Some(image) = vm::real_image_or_skip_for(vm::AARCH64) else {
        return;
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image.join("manifest.json")).expect("manifest"))
            .expect("json");
    assert_eq!(manifest["arch"], "aarch64");
    let version = manifest["claude_code"]
        .as_str()
        .expect("claude_code")
        .to_owned();
    let world = World::for_vm();
    world.config("acceleration = \"tcg\"\n");
    vm::install_image(&image, &world.path("cache"), "default");
    world.hand_over();
    let out = world
        .ccvm()
        .args(["--backend", "virt", "--version"])
        .run_within(SESSION_LIMIT);
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
}

/// `ccvm --backend virt` with no aarch64 image builds one first, as the x86_64 backends do
/// (S10.3), and then boots it: here with a Claude Code release from a loopback registry (an
/// exact `claude_code_version`, so the registry's digest is the one checked) whose `claude`
/// is a script that prints the version only where it runs as aarch64. Nothing downloaded runs
/// on the host; the session runs it in the guest.
#[test]
fn virt_builds_its_image_on_first_use_and_boots_it() {
    if let Some(reason) = vm::can_build(vm::AARCH64).err() {
        vm::skip(&reason);
        return;
    }
    if which::which("npm").is_err() {
        vm::skip("npm is not installed (scripts/deps.sh --user installs it)");
        return;
    }
    let world = World::for_vm();
    world.config("acceleration = \"tcg\"\nclaude_code_version = \"9.9.9\"\n");
    let release = ccvm_test_support::registry::Release::with_script(
        "@anthropic-ai/claude-code-linux-arm64",
        "9.9.9",
        // Right only where it runs as aarch64, in the guest; run on this host it would give
        // itself away.
        "#!/bin/sh\nif [ \"$(uname -m)\" = aarch64 ]; then echo '9.9.9 (Claude Code)'; \
         else echo \"run on $(uname -m)\"; fi\n",
        &world.path("scratch"),
    );
    let registry = ccvm_test_support::registry::Registry::start(
        "@anthropic-ai/claude-code-linux-arm64",
        vec![release],
        "9.9.9",
    );
    world.hand_over();
    let out = world
        .ccvm()
        .args(["--backend", "virt", "--version"])
        .env("npm_config_registry", &registry.url)
        .env("npm_config_fetch_retries", "0")
        // The build (about 4 minutes alone, under qemu-user) and the session.
        .run_within(SESSION_LIMIT + Duration::from_secs(900));
    assert_eq!(
        out.code, 0,
        "stderr:\n{}\nstdout:\n{}",
        out.stderr, out.stdout
    );
    assert!(
        out.stderr.contains(
            "ccvm: the guest image `default` for aarch64 is not built yet with Claude Code 9.9.9; \
             building it now"
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("[1/5] downloading Claude Code 9.9.9 for aarch64 from npm"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("image `default` built in"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout.trim_end(), "9.9.9 (Claude Code)");
    let requests = registry.requests.lock().expect("requests").clone();
    assert!(
        requests.iter().any(|r| r.ends_with("/tarballs/9.9.9.tgz")),
        "{requests:?}"
    );
}
