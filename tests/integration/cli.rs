//! The command line itself (S1.1, S1.3, S1.4).

use std::os::unix::ffi::OsStringExt;

use crate::harness::World;

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
        "--plugin-dir DIR",
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
    assert_eq!(plan["session"]["mode"], "shell");
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
    let run_dir = out.json()["run_dir"].as_str().expect("run_dir").to_owned();
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
        .env("CCVM_ALLOW_ROOT", "1")
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
        .env("CCVM_ALLOW_ROOT", "1")
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
    let out = world
        .ccvm()
        .args(["--ccvm-doctor", "192.0.2.1:22"])
        .env("CCVM_ALLOW_ROOT", "1")
        .run();
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

#[test]
fn a_session_as_root_is_refused_unless_allowed() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped: the root refusal (S11.3) needs the tests to run as root");
        return;
    }
    let world = World::new();
    let out = world
        .ccvm()
        .args(["--shell", "-c", "true"])
        .run()
        .expect_code(1);
    assert!(
        out.error_line().contains("refuses to run as root"),
        "{}",
        out.stderr
    );
    assert!(
        out.hint_line().contains("CCVM_ALLOW_ROOT=1"),
        "{}",
        out.stderr
    );
    assert!(
        !world.path("runtime/ccvm").exists(),
        "nothing may be started"
    );
}
