//! `--ccvm-image`: errors, listing and removal without building anything.

use ccvm_test_support::world::World;

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
