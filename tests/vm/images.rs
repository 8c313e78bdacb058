//! Guest images people can work in (S10): `extra_packages` reach the image and a session.

use std::time::Duration;

use ccvm_test_support::vm;
use ccvm_test_support::world::World;

/// A session on the image, boot included.
const SESSION_LIMIT: Duration = Duration::from_secs(180);

/// `extra_packages = ["python3"]`: the image built with it runs `python3` in a session; the
/// same image without the option configured is not the one ccvm boots (the plan says it is
/// not built, so a session would build the right one first).
#[test]
fn an_image_with_extra_packages_runs_them_and_is_rebuilt_when_they_change() {
    let image = match vm::stub_image_with("test-python3", &["python3"]) {
        Ok(image) => image,
        Err(reason) => {
            vm::skip(&reason);
            return;
        }
    };
    let world = World::for_vm();
    let config = "acceleration = \"tcg\"\nimage = \"test-python3\"\n";
    world.config(&format!("{config}extra_packages = [\"python3\"]\n"));
    vm::install_image(&image, &world.path("cache"), "test-python3");
    world.hand_over();
    let plan = world.ccvm().arg("--ccvm-plan").run().expect_code(0).json();
    assert_eq!(plan["image"]["present"], true, "{:#}", plan["image"]);
    assert_eq!(
        plan["image"]["extra_packages"],
        serde_json::json!(["python3"])
    );

    let out = world
        .ccvm()
        .args(["--shell", "-c", "python3 -c 'print(6 * 7)'"])
        .run_within(SESSION_LIMIT);
    assert_eq!(out.code, 0, "stderr:\n{}", out.stderr);
    assert!(
        out.stdout.lines().any(|l| l.trim_end() == "42"),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );

    // The option changed: this image no longer matches.
    world.config(config);
    let plan = world.ccvm().arg("--ccvm-plan").run().expect_code(0).json();
    assert_eq!(plan["image"]["present"], false, "{:#}", plan["image"]);
    let other = world
        .ccvm()
        .arg("--ccvm-plan")
        .env("CCVM_EXTRA_PACKAGES", "python3,jq")
        .run()
        .expect_code(0);
    assert_eq!(other.json()["image"]["present"], false);
    assert!(
        other
            .stderr
            .contains("not built yet with extra_packages jq, python3")
            || other.json()["diagnostics"]
                .to_string()
                .contains("with extra_packages jq, python3"),
        "{}",
        other.stderr
    );
}

/// squashfs's compression ids (the superblock's 16-bit field at byte 20).
const SQUASHFS_LZ4: u16 = 5;

/// The root image is squashfs compressed with lz4 (not zstd): under TCG the guest
/// decompresses at emulated speed, and lz4 cut the real Claude Code's first frame by ~1.3 s
/// (bench/RESULTS.md, the cold start section). Checked on the stub image and, when it is
/// built, the real one.
#[test]
fn the_root_image_is_squashfs_with_lz4() {
    let stub = match vm::stub_image() {
        Ok(image) => image.to_owned(),
        Err(reason) => {
            vm::skip(&reason);
            return;
        }
    };
    let mut images = vec![stub];
    images.extend(vm::real_image_or_skip());
    for image in images {
        let root = image.join("root.img");
        let mut head = [0u8; 22];
        std::fs::File::open(&root)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
            .unwrap_or_else(|e| panic!("{}: {e}", root.display()));
        assert_eq!(&head[..4], b"hsqs", "{} is squashfs", root.display());
        let compression = u16::from_le_bytes([head[20], head[21]]);
        assert_eq!(
            compression,
            SQUASHFS_LZ4,
            "{}: compression id {compression}",
            root.display()
        );
    }
}
