//! `--ccvm-image`: errors, listing and removal without building anything.

use crate::harness::World;

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
