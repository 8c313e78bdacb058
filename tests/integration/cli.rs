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
