//! The command line itself (S1.1, S1.3, S1.4).

use std::os::unix::ffi::OsStringExt;

use ccvm_test_support::world::World;

#[test]
fn version_prints_name_and_version_and_creates_no_file() {
    let world = World::new();
    let before = world.tree();
    let out = world.ccvm().arg("--ccvm-version").run().expect_code(0);
    assert_eq!(out.stdout, format!("ccvm {}\n", env!("CARGO_PKG_VERSION")));
    assert_eq!(world.tree(), before);
}

#[test]
fn help_documents_flags_variables_and_config_files_and_creates_no_file() {
    let world = World::new();
    let before = world.tree();
    let out = world.ccvm().arg("--ccvm-help").run().expect_code(0);
    for needle in [
        "--shell",
        "--backend NAME",
        "--ccvm-plugin-dir DIR",
        "--read-only-cwd",
        "--ccvm-plan",
        "--ccvm-plugins",
        "CCVM_MEMORY",
        "CCVM_SHARE_CLAUDE_CONFIG",
        "CCVM_PLUGIN_PATH",
        "/etc/ccvm/config.toml",
        "$XDG_CONFIG_HOME/ccvm/config.toml",
        "[plugins.<name>]",
    ] {
        assert!(out.stdout.contains(needle), "help lacks {needle:?}");
    }
    assert_eq!(world.tree(), before);
}

#[test]
fn unknown_ccvm_flag_is_a_usage_error_not_forwarded() {
    let out = World::new()
        .ccvm()
        .arg("--ccvm-frobnicate")
        .run()
        .expect_code(2);
    assert!(
        out.error_line()
            .contains("unknown ccvm flag `--ccvm-frobnicate`")
    );
    assert!(out.hint_line().contains("--ccvm-help"));
}

#[test]
fn plan_forwards_argv_verbatim_and_consumes_ccvm_flags() {
    let world = World::new();
    let out = world
        .ccvm()
        .args([
            "-p",
            "two words",
            "--ccvm-plan",
            "it's \"q\"",
            "*.rs",
            "--shell",
        ])
        .args(["a\nb", "--backend=q35", "--", "--shell"])
        .arg(std::ffi::OsString::from_vec(b"caf\xe9".to_vec()))
        .run()
        .expect_code(0);
    let plan = out.json();
    assert_eq!(plan["backend"]["name"], "q35");
    assert_eq!(plan["seed"]["manifest"]["mode"], "shell");
    assert_eq!(
        plan["session"]["argv"],
        serde_json::json!([
            "-p",
            "two words",
            "it's \"q\"",
            "*.rs",
            "a\nb",
            "--",
            "--shell",
            {"non_utf8_hex": "636166e9"}
        ])
    );
}

#[test]
fn plan_boots_nothing_and_writes_nothing() {
    let world = World::new();
    let before = world.tree();
    let out = world.ccvm().arg("--ccvm-plan").run().expect_code(0);
    let run_dir = out.json()["vm"]["run_dir"]
        .as_str()
        .expect("run_dir")
        .to_owned();
    assert!(
        run_dir.starts_with(&world.path("runtime").display().to_string()),
        "{run_dir}"
    );
    assert!(!std::path::Path::new(&run_dir).exists());
    assert_eq!(world.tree(), before);
    assert!(
        !out.stderr.contains("fake "),
        "a fake program ran:\n{}",
        out.stderr
    );
}

#[test]
fn api_key_value_never_appears_in_the_plan() {
    let world = World::new();
    let secret = "sk-ant-test-0123456789-SECRET";
    let out = world
        .ccvm()
        .arg("--ccvm-plan")
        .env("ANTHROPIC_API_KEY", secret)
        .run()
        .expect_code(0);
    assert!(!out.stdout.contains(secret));
    assert!(!out.stderr.contains(secret));
    let plan = out.json();
    assert_eq!(plan["session"]["api_key_set"], true);
    let ssh = plan["ssh"]["args"].to_string();
    assert!(ssh.contains("SendEnv=ANTHROPIC_API_KEY"), "{ssh}");
}

#[test]
fn doctor_names_each_missing_prerequisite_with_a_fix_and_changes_nothing() {
    let world = World::new();
    let before = world.tree();
    // Only the fake programs on PATH: QEMU is "there", ssh and the image tools are not.
    let out = world
        .ccvm()
        .arg("--ccvm-doctor")
        .env("PATH", world.path("bin"))
        .run();
    assert_eq!(
        out.code, 1,
        "ssh is missing, so no session can start:\n{}",
        out.stdout
    );
    let line = |what: &str| doctor_line(&out.stdout, what);
    assert!(
        line("qemu-system-x86_64").starts_with("ok"),
        "{}",
        out.stdout
    );
    assert!(line("ssh").starts_with("FAIL") && line("ssh").contains("`openssh-client`"));
    assert!(
        line("mmdebstrap").starts_with("warn")
            && line("mmdebstrap").contains("package `mmdebstrap`")
    );
    assert!(
        line("guest").contains("not built") && line("guest").contains("ccvm --ccvm-image build")
    );
    assert!(out.stdout.ends_with("until every FAIL line is fixed.\n"));
    assert_eq!(world.tree(), before, "the doctor wrote something");
}

/// `--ccvm-doctor DESTINATION…` explains, from the filter the egress policy plans, whether a
/// session could reach each destination and what to change if not (S7).
#[test]
fn doctor_explains_which_destinations_the_allowlist_blocks_and_the_fix() {
    let world = World::new();
    world.config("[egress]\nallowlist = [\"localhost\", \"10.0.2.2\"]\nports = [8080]\n");
    let before = world.tree();
    let out = world
        .ccvm()
        .args([
            "--ccvm-doctor",
            "10.0.2.2:8080",
            "10.0.2.2:22",
            "http://localhost:8080/health",
            "192.0.2.1",
        ])
        .run();
    let line = |what: &str| doctor_line(&out.stdout, what);
    assert!(
        line("egress").contains("locked to an allowlist"),
        "{}",
        out.stdout
    );
    // S7.2: listing the gateway opens the host's loopback; the doctor says so instead of "ok".
    assert!(
        line("egress").starts_with("warn")
            && line("egress").contains("`10.0.2.2` covers 10.0.2.2, the host's own loopback"),
        "{}",
        out.stdout
    );
    assert!(line("10.0.2.2:8080").starts_with("ok"), "{}", out.stdout);
    let port = line("10.0.2.2:22");
    assert!(port.starts_with("deny"), "{port}");
    assert!(
        port.contains("only for TCP ports 8080")
            && port.contains("add 22 to `ports`")
            && port.contains(&world.config_path().display().to_string()),
        "{port}"
    );
    let name = line("http://localhost:8080/health");
    assert!(name.starts_with("ok") && name.contains("pinned"), "{name}");
    let unlisted = line("192.0.2.1");
    assert!(
        unlisted.starts_with("deny") && unlisted.contains("add \"192.0.2.1\" to `allowlist`"),
        "{unlisted}"
    );
    assert_eq!(world.tree(), before, "the doctor wrote something");

    world.config("");
    let out = world.ccvm().args(["--ccvm-doctor", "192.0.2.1:22"]).run();
    let open = doctor_line(&out.stdout, "192.0.2.1:22");
    assert!(
        open.starts_with("ok") && open.contains("egress is open"),
        "{open}"
    );

    let out = world
        .ccvm()
        .args(["--ccvm-doctor", "ftp://example.org"])
        .run()
        .expect_code(2);
    assert!(
        out.error_line()
            .contains("`ftp://example.org` has the unknown scheme"),
        "{}",
        out.stderr
    );
}

/// The `--ccvm-doctor` line about `what` (its second column).
fn doctor_line(stdout: &str, what: &str) -> String {
    stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(what))
        .unwrap_or_else(|| panic!("no {what} line:\n{stdout}"))
        .to_owned()
}

/// S11.3: a session as root is refused, and there is no escape hatch: a passthrough share
/// would let the guest (whose agent would be root) plant root-owned or setuid files in the
/// project, and sshd refuses root logins anyway. `CCVM_ALLOW_ROOT=1` changes nothing.
#[test]
fn a_session_as_root_is_refused_without_an_escape_hatch() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped: the root refusal (S11.3) needs the tests to run as root");
        return;
    }
    let world = World::new();
    for allow in [None, Some("1")] {
        let mut ccvm = world.ccvm().args(["--shell", "-c", "true"]);
        if let Some(value) = allow {
            ccvm = ccvm.env("CCVM_ALLOW_ROOT", value);
        }
        let out = ccvm.run().expect_code(1);
        assert!(
            out.error_line().contains("refuses to run as root"),
            "{}",
            out.stderr
        );
        assert!(
            out.hint_line().contains("as an unprivileged user"),
            "{}",
            out.stderr
        );
        assert!(!out.stderr.contains("CCVM_ALLOW_ROOT"), "{}", out.stderr);
        assert!(
            !world.path("runtime/ccvm").exists(),
            "nothing may be started"
        );
    }
}

/// S5.1: `cd ~ && ccvm` (and `/`, an ancestor of the home, a directory holding `~/.claude` or
/// `~/.ssh` through a link) is refused with exit 2 before anything is created or run.
#[test]
fn a_project_that_is_or_holds_the_home_or_a_secret_store_is_refused() {
    let world = World::new();
    std::fs::create_dir_all(world.home().join(".claude")).expect("mkdir");
    std::fs::create_dir_all(world.home().join("dotfiles/ssh")).expect("mkdir");
    std::os::unix::fs::symlink(world.home().join("dotfiles/ssh"), world.home().join(".ssh"))
        .expect("symlink");
    world.hand_over();
    let before = world.tree();
    for (dir, why) in [
        (world.home(), "it is your home directory"),
        (
            world.root.path().to_owned(),
            "it contains your home directory",
        ),
        (std::path::PathBuf::from("/"), "it is the root directory"),
        (world.home().join("dotfiles"), "it contains"),
        (world.home().join(".claude"), "it contains"),
    ] {
        for action in [&["--ccvm-plan"][..], &["--shell", "-c", "true"]] {
            let out = world
                .ccvm()
                .unprivileged()
                .current_dir(&dir)
                .args(action)
                .run()
                .expect_code(2);
            let error = out.error_line();
            assert!(
                error.contains(&format!("project directory {}", dir.display()))
                    && error.contains(why),
                "{}: {error}",
                dir.display()
            );
            assert!(out.hint_line().contains("project's own directory"));
        }
    }
    assert_eq!(world.tree(), before, "a refused launch created something");
}

/// S3.3: an empty, relative or in-project `PATH` entry (`PATH=:/usr/bin`, an activated
/// `.venv/bin`) never makes ccvm run a program planted in the project, not even for
/// `--ccvm-plan`.
#[test]
fn programs_planted_in_the_project_never_run_through_an_empty_path_entry() {
    let world = World::new();
    let marker = world.path("planted-ran");
    let venv = world.path("project/.venv/bin");
    std::fs::create_dir_all(&venv).expect("mkdir");
    for (dir, program) in ["git", "qemu-system-x86_64", "ssh", "ssh-keygen"]
        .iter()
        .flat_map(|p| [(world.path("project"), *p), (venv.clone(), *p)])
    {
        let path = dir.join(program);
        std::fs::write(
            &path,
            format!("#!/bin/sh\necho {program} >> {}\n", marker.display()),
        )
        .expect("write");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
    }
    // `source .venv/bin/activate` puts an absolute entry inside the project first.
    let activated = format!("{}:/usr/bin:/bin", venv.display());
    for path in [
        ":/usr/bin:/bin",
        ".:/usr/bin:/bin",
        "/usr/bin::/bin",
        activated.as_str(),
    ] {
        let out = world.ccvm().arg("--ccvm-plan").env("PATH", path).run();
        let hypervisor = if out.code == 0 {
            out.json()["machine"]["hypervisor"]["program"]
                .as_str()
                .expect("program")
                .to_owned()
        } else {
            String::new()
        };
        assert!(
            !hypervisor.starts_with(&world.path("project").display().to_string()),
            "PATH={path}: planned {hypervisor}"
        );
    }
    assert!(
        !marker.exists(),
        "a planted program ran: {:?}",
        std::fs::read_to_string(&marker)
    );
}

/// S6.4: a runtime directory others may enter, or a `ccvm` directory in it that someone else
/// prepared, is refused with its name; nothing is written into it.
#[test]
fn a_loose_or_foreign_run_directory_is_refused_naming_it() {
    use std::os::unix::fs::PermissionsExt;
    let world = World::new();
    let runtime = world.path("runtime");
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = world.ccvm().arg("--ccvm-plan").run().expect_code(1);
    assert!(
        out.error_line()
            .contains(&format!("XDG_RUNTIME_DIR {}", runtime.display()))
            && out.error_line().contains("mode 0755"),
        "{}",
        out.stderr
    );
    let doctor = world.ccvm().arg("--ccvm-doctor").run();
    let line = doctor_line(&doctor.stdout, "run");
    assert!(
        line.starts_with("FAIL") && line.contains("mode 0755"),
        "{}",
        doctor.stdout
    );
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let doctor = world.ccvm().arg("--ccvm-doctor").run();
    let line = doctor_line(&doctor.stdout, "run");
    assert!(
        line.starts_with("ok") && line.contains(&runtime.join("ccvm").display().to_string()),
        "{}",
        doctor.stdout
    );
    let prepared = runtime.join("ccvm");
    std::fs::create_dir(&prepared).expect("mkdir");
    world.hand_over();
    std::fs::set_permissions(&prepared, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let out = world
        .ccvm()
        .unprivileged()
        .args(["--shell", "-c", "true"])
        .run()
        .expect_code(1);
    assert!(
        out.error_line().contains(&prepared.display().to_string()),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_dir(&prepared).expect("read").count(),
        0,
        "ccvm wrote into a directory it refused"
    );
}

/// S6.4: without `XDG_RUNTIME_DIR` the run directory is a fresh, randomly named one in the
/// temp dir, never a predictable path another user could create first.
#[test]
fn without_a_runtime_dir_the_run_directory_is_random_and_fresh() {
    let world = World::new();
    let tmp = world.path("tmp");
    std::fs::create_dir(&tmp).expect("mkdir");
    let plan = |_: u8| {
        world
            .ccvm()
            .arg("--ccvm-plan")
            .env_remove("XDG_RUNTIME_DIR")
            .env("TMPDIR", &tmp)
            .run()
            .expect_code(0)
            .json()["vm"]["run_dir"]
            .as_str()
            .expect("run_dir")
            .to_owned()
    };
    let (a, b) = (plan(0), plan(1));
    assert_ne!(a, b, "the run directory's name must not be predictable");
    let name = std::path::Path::new(&a).file_name().expect("name");
    assert!(
        a.starts_with(&tmp.display().to_string())
            && name.to_string_lossy().starts_with("ccvm-run-")
            && name.len() == "ccvm-run-".len() + 16,
        "{a}"
    );
}
