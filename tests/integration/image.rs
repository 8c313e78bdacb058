//! `--ccvm-image`: errors, listing and removal without building anything.

use ccvm_test_support::world::{Outcome, World};

#[test]
fn image_without_an_action_or_with_a_bad_option_is_a_usage_error() {
    let world = World::new();
    let out = world.ccvm().arg("--ccvm-image").run().expect_code(2);
    assert!(
        out.error_line().contains("needs an action"),
        "{}",
        out.stderr
    );
    let out = world
        .ccvm()
        .args(["--ccvm-image", "build", "--sweet"])
        .run()
        .expect_code(2);
    assert!(out.error_line().contains("`--sweet`"), "{}", out.stderr);
    assert!(out.hint_line().contains("--ccvm-image build [--name NAME]"));
}

#[test]
fn build_names_the_missing_tool_and_its_package_and_leaves_nothing_behind() {
    let world = World::new();
    // Only the fake programs: no mmdebstrap.
    let out = world
        .ccvm()
        .args(["--ccvm-image", "build", "--stub"])
        .env("PATH", world.path("bin"))
        .run()
        .expect_code(1);
    assert!(out.error_line().contains("`mmdebstrap`"), "{}", out.stderr);
    assert!(
        out.hint_line().contains("package `mmdebstrap`"),
        "{}",
        out.stderr
    );
    assert!(
        world
            .tree()
            .iter()
            .all(|p| !p.starts_with(world.path("cache/ccvm")))
    );
}

/// mmdebstrap refuses a foreign root without arch-test, after apt has started ("install
/// arch-test for foreign architecture support"); ccvm names it before anything runs.
#[test]
fn a_foreign_build_names_arch_test_when_it_is_missing() {
    let world = World::new();
    let foreign = if std::env::consts::ARCH == "aarch64" {
        "x86_64"
    } else {
        "aarch64"
    };
    for tool in ["mmdebstrap", "tar2sqfs", "tar", "xz"] {
        world.program(tool, "#!/bin/sh\necho ran >> \"$0.ran\"\nexit 99\n");
    }
    let out = world
        .ccvm()
        .args(["--ccvm-image", "build", "--stub", "--arch", foreign])
        .env("PATH", world.path("bin"))
        .run()
        .expect_code(1);
    assert!(out.error_line().contains("`arch-test`"), "{}", out.stderr);
    assert!(
        out.hint_line().contains("package `arch-test`"),
        "{}",
        out.stderr
    );
    assert!(!world.path("bin/mmdebstrap.ran").exists(), "nothing ran");
}

/// Ctrl-C during the root filesystem's build, as a terminal sends it (to ccvm's whole process
/// group), while the step ignores SIGINT as apt and dpkg under mmdebstrap do: ccvm stops the
/// step, waits for it, leaves no unfinished build behind and exits 130.
#[test]
fn ctrl_c_during_a_build_stops_its_step_and_keeps_nothing() {
    use std::os::unix::process::CommandExt;
    let world = World::new();
    for tool in ["tar2sqfs", "tar", "xz"] {
        world.program(tool, "#!/bin/sh\nexit 0\n");
    }
    let state = world.path("mmdebstrap-state");
    world.program(
        "mmdebstrap",
        &format!(
            "#!/bin/sh\ntrap '' INT\ntrap 'echo stopped-by-term >> {0}; exit 143' TERM\n\
             echo $$ > {0}.pid\nwhile :; do sleep 0.1; done\n",
            state.display()
        ),
    );
    let mut command = world
        .ccvm()
        .args(["--ccvm-image", "build", "--stub"])
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", world.path("bin").display()),
        )
        .into_command();
    let child = command
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ccvm runs");
    let pid_file = world.path("mmdebstrap-state.pid");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !pid_file.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "mmdebstrap never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let step: i32 = std::fs::read_to_string(&pid_file)
        .expect("pid")
        .trim()
        .parse()
        .expect("a pid");
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGINT).expect("Ctrl-C");
    let (output, in_time) =
        ccvm_test_support::vm::output_within(child, std::time::Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(in_time, "ccvm did not stop: {stderr}");
    // Whatever happens, the step must not outlive the test.
    let step_alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(step), None).is_ok();
    if step_alive {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(step),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(!step_alive, "the step was left running");
    assert_eq!(
        std::fs::read_to_string(&state).expect("the step was asked to stop"),
        "stopped-by-term\n"
    );
    assert!(
        stderr.contains("ccvm: error: the image build was stopped (signal 2)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("nothing of the unfinished build was kept"),
        "{stderr}"
    );
    let images = world.path("cache/ccvm/images");
    let left: Vec<_> = std::fs::read_dir(&images)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "left behind in {}: {left:?}",
        images.display()
    );
}

#[test]
fn list_shows_built_images_and_remove_deletes_them() {
    let world = World::new();
    let out = world
        .ccvm()
        .args(["--ccvm-image", "list"])
        .run()
        .expect_code(0);
    assert!(out.stdout.contains("(no images in"), "{}", out.stdout);

    // A published image as the builder leaves it, and a half build that must stay invisible.
    let images = world.path("cache/ccvm/images");
    let key = images.join("0123456789abcdef");
    std::fs::create_dir_all(&key).expect("mkdir");
    let manifest = serde_json::json!({
        "key": "0123456789abcdef", "name": "mine", "arch": std::env::consts::ARCH,
        "suite": "bookworm", "kernel_flavour": "", "kernel_release": "6.1.0-99-amd64",
        "kernel_format": "elf", "claude_code": "2.1.330", "guest_agent_sha256": "00",
        "recipe": {"version": 1, "suite": "bookworm", "debian_arch": "amd64", "kernel_flavour": "amd64",
                   "packages": [], "path_excludes": [], "claude": "2.1.330"},
        "packages": {}, "build_seconds": 1, "root_image_bytes": 300000000u64
    });
    std::fs::write(key.join("manifest.json"), manifest.to_string()).expect("write");
    std::os::unix::fs::symlink(
        "0123456789abcdef",
        images.join(format!("mine-{}", std::env::consts::ARCH)),
    )
    .expect("symlink");
    std::fs::create_dir_all(images.join(".build-fedcba9876543210-1")).expect("mkdir");

    let out = world
        .ccvm()
        .args(["--ccvm-image", "list"])
        .run()
        .expect_code(0);
    let rows: Vec<&str> = out.stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{}", out.stdout);
    assert!(
        rows[0].starts_with("mine ") && rows[0].contains("2.1.330") && rows[0].contains("300 MB"),
        "{}",
        rows[0]
    );

    let out = world
        .ccvm()
        .args(["--ccvm-image", "remove", "nope"])
        .run()
        .expect_code(2);
    assert!(
        out.error_line().contains("no image named `nope`"),
        "{}",
        out.stderr
    );
    world
        .ccvm()
        .args(["--ccvm-image", "remove", "mine"])
        .run()
        .expect_code(0);
    assert!(!key.exists());
}

/// S10.3: the Claude Code tarball is checked against the pinned registry digest before
/// anything in it runs, and the download runs without the user's secrets. A fake `npm` serves
/// a package whose `claude` would record that it ran, and records its own environment.
#[test]
fn a_claude_code_download_with_the_wrong_digest_fails_naming_both_and_never_runs() {
    let world = World::new();
    let marker = world.path("claude-ran");
    let npm_env = world.path("npm-env");
    let package = world.path("package");
    std::fs::create_dir(&package).expect("mkdir");
    std::fs::write(
        package.join("claude"),
        format!(
            "#!/bin/sh\ntouch {}\necho '2.1.330 (Claude Code)'\n",
            marker.display()
        ),
    )
    .expect("write");
    std::fs::set_permissions(
        package.join("claude"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let npm = world.path("bin/npm");
    std::fs::write(
        &npm,
        format!(
            "#!/bin/sh\nenv > {env}\n# npm pack --silent --pack-destination DIR SPEC\n\
             tar -czf \"$4/claude-code-linux-x64-2.1.330.tgz\" -C {root} package\n",
            env = npm_env.display(),
            root = world.root.path().display()
        ),
    )
    .expect("write");
    std::fs::set_permissions(&npm, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let out = world
        .ccvm()
        .args(["--ccvm-image", "build"])
        .env("ANTHROPIC_API_KEY", "sk-ant-must-not-leak")
        .env("GITHUB_TOKEN", "ghp_must_not_leak")
        .env("npm_config_registry", "http://127.0.0.1:9/")
        .run()
        .expect_code(1);
    let error = out.error_line();
    assert!(
        error.contains("has the digest sha512-")
            && error.contains("but ccvm pins sha512-9Gn+V7DtJ8M1nztP9CeDVl9g3Rtrep"),
        "{}",
        out.stderr
    );
    assert!(!marker.exists(), "the downloaded claude ran");
    let seen = std::fs::read_to_string(&npm_env).expect("npm ran");
    assert!(!seen.contains("must-not-leak"), "npm saw a secret:\n{seen}");
    assert!(
        seen.contains("npm_config_registry=http://127.0.0.1:9/"),
        "{seen}"
    );
    assert!(
        world
            .tree()
            .iter()
            .all(|p| !p.to_string_lossy().contains("/images/.build-")),
        "the failed build left its work directory"
    );
}

/// S10 (issue 18): an image older than 30 days gets one line at start saying so and how to
/// refresh it; a recent one gets none.
#[test]
fn an_old_image_is_pointed_out_with_the_refresh_command() {
    let world = World::new();
    let images = world.path("cache/ccvm/images");
    let key = images.join("0123456789abcdef");
    std::fs::create_dir_all(&key).expect("mkdir");
    let manifest = serde_json::json!({
        "key": "0123456789abcdef", "name": "default", "arch": std::env::consts::ARCH,
        "suite": "bookworm", "kernel_flavour": "", "kernel_release": "6.1.0-99-amd64",
        "kernel_format": "elf", "claude_code": "2.1.330", "guest_agent_sha256": "00",
        "recipe": {"version": 1, "suite": "bookworm", "debian_arch": "amd64", "kernel_flavour": "amd64",
                   "packages": [], "path_excludes": [], "claude": "2.1.330"},
        "packages": {}, "build_seconds": 1, "root_image_bytes": 300000000u64
    });
    let file = key.join("manifest.json");
    std::fs::write(&file, manifest.to_string()).expect("write");
    std::os::unix::fs::symlink(
        "0123456789abcdef",
        images.join(format!("default-{}", std::env::consts::ARCH)),
    )
    .expect("symlink");
    let plan = || world.ccvm().arg("--ccvm-plan").run().expect_code(0);

    let fresh = plan();
    assert_eq!(fresh.json()["image"]["present"], true, "{}", fresh.stdout);
    assert!(!fresh.stderr.contains("days ago"), "{}", fresh.stderr);

    let forty_days = std::time::Duration::from_secs(40 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .and_then(|f| f.set_modified(std::time::SystemTime::now() - forty_days))
        .expect("age the image");
    let old = plan();
    let lines: Vec<&str> = old
        .stderr
        .lines()
        .filter(|l| l.contains("was built 40 days ago"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", old.stderr);
    assert!(
        lines[0].contains("ccvm --ccvm-image build --refresh"),
        "{}",
        lines[0]
    );
}

/// The platform package the image builder asks the registry for on this host.
fn claude_platform_package() -> &'static str {
    if std::env::consts::ARCH == "aarch64" {
        "@anthropic-ai/claude-code-linux-arm64"
    } else {
        "@anthropic-ai/claude-code-linux-x64"
    }
}

/// A world whose image builds ask a loopback registry (the real npm, `npm_config_registry`)
/// for Claude Code, with `claude_code_version` set; `None` (after printing why) without npm.
fn registry_world(
    version: &str,
    releases: impl FnOnce(&World) -> Vec<ccvm_test_support::registry::Release>,
    latest: &str,
) -> Option<(World, ccvm_test_support::registry::Registry)> {
    if which::which("npm").is_err() {
        ccvm_test_support::vm::skip("npm is not installed (scripts/deps.sh --user installs it)");
        return None;
    }
    let world = World::new();
    world.config(&format!("claude_code_version = \"{version}\"\n"));
    let registry = ccvm_test_support::registry::Registry::start(
        claude_platform_package(),
        releases(&world),
        latest,
    );
    Some((world, registry))
}

/// A `claude` that records that it ran (and with what environment) and prints `printed`.
fn recording_claude(world: &World, printed: &str) -> String {
    format!(
        "#!/bin/sh\nenv > {}\necho '{printed}'\n",
        world.path("claude-ran").display()
    )
}

/// Builds with the world's config against `registry`; npm retries a corrupt download twice,
/// with back-off, before it gives up: not here.
fn build_against(world: &World, registry: &ccvm_test_support::registry::Registry) -> Outcome {
    world
        .ccvm()
        .args(["--ccvm-image", "build"])
        .env("npm_config_registry", &registry.url)
        .env("npm_config_fetch_retries", "0")
        .env("ANTHROPIC_API_KEY", "sk-ant-must-not-leak")
        .run()
}

/// A release whose tarball is `served` while the registry lists the digest of `listed`.
fn mismatched(
    listed: ccvm_test_support::registry::Release,
    served: ccvm_test_support::registry::Release,
) -> ccvm_test_support::registry::Release {
    ccvm_test_support::registry::Release {
        tarball: served.tarball,
        ..listed
    }
}

/// S10.2 (issue 18): `latest` is resolved from the registry; a download that is not what the
/// registry lists for that version is refused before anything in it runs.
#[test]
fn latest_is_resolved_from_the_registry_and_a_tarball_off_its_listed_digest_never_runs() {
    let Some((world, registry)) = registry_world(
        "latest",
        |world| {
            let listed = ccvm_test_support::registry::Release::with_script(
                claude_platform_package(),
                "9.9.9",
                "#!/bin/sh\necho '9.9.9 (Claude Code)'\n",
                &world.path("scratch"),
            );
            let served = ccvm_test_support::registry::Release::with_script(
                claude_platform_package(),
                "9.9.9",
                &recording_claude(world, "9.9.9 (Claude Code)"),
                &world.path("scratch2"),
            );
            vec![mismatched(listed, served)]
        },
        "9.9.9",
    ) else {
        return;
    };
    let out = build_against(&world, &registry).expect_code(1);
    let error = out.error_line();
    assert!(
        error.contains(&format!(
            "npm refused the download of {}@9.9.9",
            claude_platform_package()
        )) && error.contains("nothing of it was run"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("downloading Claude Code 9.9.9 (latest)"),
        "{}",
        out.stderr
    );
    assert!(
        !world.path("claude-ran").exists(),
        "the tampered claude ran"
    );
    let requests = registry.requests.lock().expect("requests").clone();
    assert!(
        requests.iter().any(|r| r.ends_with("/tarballs/9.9.9.tgz")),
        "{requests:?}"
    );
}

/// The pinned release is checked against ccvm's own digest: a registry (or mirror) that
/// serves another tarball and lists that tarball's digest, so that npm is content, is caught.
#[test]
fn a_registry_that_lies_consistently_about_the_pinned_release_is_caught_by_the_pin() {
    let pinned = ccvm_image::CLAUDE_CODE_VERSION;
    let Some((world, registry)) = registry_world(
        pinned,
        |world| {
            vec![ccvm_test_support::registry::Release::with_script(
                claude_platform_package(),
                pinned,
                &recording_claude(world, &format!("{pinned} (Claude Code)")),
                &world.path("scratch"),
            )]
        },
        pinned,
    ) else {
        return;
    };
    let out = build_against(&world, &registry).expect_code(1);
    assert!(
        out.error_line().contains("but ccvm pins sha512-"),
        "{}",
        out.stderr
    );
    assert!(!world.path("claude-ran").exists(), "the served claude ran");
}

/// An exact version the registry does not have fails naming it, before any download.
#[test]
fn a_claude_code_version_the_registry_lacks_fails_naming_it() {
    let Some((world, registry)) = registry_world(
        "9.9.8",
        |world| {
            vec![ccvm_test_support::registry::Release::with_script(
                claude_platform_package(),
                "9.9.9",
                &recording_claude(world, "9.9.9 (Claude Code)"),
                &world.path("scratch"),
            )]
        },
        "9.9.9",
    ) else {
        return;
    };
    let out = build_against(&world, &registry).expect_code(1);
    assert!(
        out.error_line().contains(&format!(
            "the npm registry has no {}@9.9.8",
            claude_platform_package()
        )),
        "{}",
        out.stderr
    );
    assert!(out.hint_line().contains("npm view"), "{}", out.stderr);
    let requests = registry.requests.lock().expect("requests").clone();
    assert!(
        !requests.iter().any(|r| r.contains("/tarballs/")),
        "{requests:?}"
    );
}

/// The resolved release is downloaded and checked, and nothing of it runs on the host
/// (S10.3): a tarball, listed with its true digest, whose package.json names another version
/// stops the build there.
#[test]
fn a_resolved_package_that_names_another_version_stops_the_build_and_never_runs() {
    let Some((world, registry)) = registry_world(
        "latest",
        |world| {
            let other = ccvm_test_support::registry::Release::with_script(
                claude_platform_package(),
                "9.9.8",
                &recording_claude(world, "9.9.9 (Claude Code)"),
                &world.path("scratch"),
            );
            vec![ccvm_test_support::registry::Release {
                version: "9.9.9".to_owned(),
                ..other
            }]
        },
        "9.9.9",
    ) else {
        return;
    };
    let out = build_against(&world, &registry).expect_code(1);
    assert!(
        out.error_line().contains(&format!(
            "the downloaded {}@9.9.9 is not that package: its package.json says version \
             \"9.9.8\", not \"9.9.9\"",
            claude_platform_package()
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.hint_line().contains("nothing of it ran"),
        "{}",
        out.stderr
    );
    assert!(
        !world.path("claude-ran").exists(),
        "the downloaded claude ran"
    );
    assert!(
        world
            .tree()
            .iter()
            .all(|p| !p.to_string_lossy().contains("/images/.build-")),
        "the failed build left its work directory"
    );
}

/// A package whose `claude` is a link to one of the user's files (its digest listed, so it
/// is downloaded): refused before the build makes it executable, which would have opened
/// the user's file to everyone.
#[test]
fn a_package_whose_claude_is_a_link_is_refused_and_the_target_keeps_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    let secret = std::cell::RefCell::new(std::path::PathBuf::new());
    let Some((world, registry)) = registry_world(
        "9.9.9",
        |world| {
            let key = world.home().join(".ssh/id_ed25519");
            std::fs::create_dir_all(key.parent().expect("dir")).expect("mkdir");
            std::fs::write(&key, "PRIVATE KEY\n").expect("write");
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            *secret.borrow_mut() = key.clone();
            vec![ccvm_test_support::registry::Release::with_files(
                claude_platform_package(),
                "9.9.9",
                &world.path("scratch"),
                |root| std::os::unix::fs::symlink(&key, root.join("claude")).expect("symlink"),
            )]
        },
        "9.9.9",
    ) else {
        return;
    };
    let out = build_against(&world, &registry).expect_code(1);
    assert!(
        out.error_line()
            .contains("is not that package: its `claude` is not a regular file"),
        "{}",
        out.stderr
    );
    let mode = std::fs::metadata(secret.borrow().as_path())
        .expect("the key is still there")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the user's file was opened up");
}

#[test]
fn a_claude_code_version_that_is_not_latest_or_exact_is_refused_naming_it() {
    let world = World::new();
    world.config("claude_code_version = \"^2.1\"\n");
    let out = world.ccvm().arg("--ccvm-plan").run().expect_code(2);
    assert!(
        out.stderr.contains("claude_code_version") && out.stderr.contains("^2.1"),
        "{}",
        out.stderr
    );
    let out = World::new()
        .ccvm()
        .arg("--ccvm-plan")
        .env("CCVM_CLAUDE_CODE_VERSION", "file:../evil.tgz")
        .run()
        .expect_code(2);
    assert!(
        out.stderr.contains("CCVM_CLAUDE_CODE_VERSION"),
        "{}",
        out.stderr
    );
}
