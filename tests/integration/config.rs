//! Configuration errors through the real binary (S2.1, S1.4): exit 2, one error line that
//! names the file or variable, the key and the expected type, plus a hint.

use ccvm_test_support::world::World;

#[test]
fn wrong_type_in_config_file_names_file_key_and_type() {
    let world = World::new();
    world.config("memory_mib = \"lots\"\n");
    let out = world.ccvm().arg("--ccvm-plan").run().expect_code(2);
    assert_eq!(
        out.error_line(),
        format!(
            "ccvm: error: {}: key `memory_mib`: expected a positive integer, found string \"lots\"",
            world.config_path().display()
        )
    );
    assert!(out.hint_line().contains("fix the value"));
    assert!(out.stdout.is_empty());
}

#[test]
fn unknown_key_in_config_file_is_refused() {
    let world = World::new();
    world.config("[egress]\nallowlist = []\nport = [443]\n");
    let out = world.ccvm().arg("--ccvm-plan").run().expect_code(2);
    assert!(
        out.error_line().ends_with("unknown key `egress.port`"),
        "{}",
        out.stderr
    );
    assert!(out.hint_line().contains("egress.ports"));
}

#[test]
fn bad_boolean_in_environment_names_the_variable() {
    let out = World::new()
        .ccvm()
        .arg("--ccvm-plan")
        .env("CCVM_WRITABLE_CWD", "sometimes")
        .run()
        .expect_code(2);
    assert!(
        out.error_line().contains(
            "environment variable CCVM_WRITABLE_CWD (`writable_cwd`): expected a boolean"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn invalid_allowlist_entry_is_a_config_error() {
    let world = World::new();
    world.config("[egress]\nallowlist = [\"example.org; curl evil\"]\n");
    let out = world.ccvm().arg("--ccvm-plan").run().expect_code(2);
    assert!(
        out.error_line().contains("key `egress.allowlist`"),
        "{}",
        out.stderr
    );
}

#[test]
fn layers_apply_in_order_file_then_env_then_flag() {
    let world = World::new();
    world.config("backend = \"virt\"\ncpus = 2\nmemory_mib = 1024\n");
    let out = world
        .ccvm()
        .args(["--ccvm-plan", "--backend", "q35"])
        .env("CCVM_CPUS", "3")
        .run()
        .expect_code(0);
    let plan = out.json();
    assert_eq!(plan["backend"]["name"], "q35");
    assert_eq!(plan["vm"]["cpus"], 3);
    assert_eq!(plan["vm"]["memory_mib"], 1024);
}
