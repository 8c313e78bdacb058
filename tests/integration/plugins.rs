//! The plugin host through the real binary (S3.1–S3.3, S3.6).

use std::os::unix::fs::PermissionsExt;

use ccvm::config::{Env, RunConfig};
use ccvm::plugins::{Registry, SearchDir, Source};
use ccvm_plugin_api::testing::{example_facts, example_spec};
use ccvm_plugin_api::{BackendPlan, BackendPlanRequest, Capabilities, PluginKind, method};

use ccvm_test_support::world::World;

#[test]
fn builtins_list_four_backends_and_three_policies() {
    let out = World::new()
        .ccvm()
        .arg("--ccvm-plugins")
        .run()
        .expect_code(0);
    for (kind, name) in [
        ("backend", "microvm"),
        ("backend", "q35"),
        ("backend", "virt"),
        ("backend", "cloud-hypervisor"),
        ("policy", "share-staging"),
        ("policy", "egress"),
        ("policy", "clipboard"),
    ] {
        let row = out
            .stdout
            .lines()
            .find(|l| l.split_whitespace().take(2).eq([kind, name]))
            .unwrap_or_else(|| panic!("no row for {kind} {name}:\n{}", out.stdout));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[3], ccvm_plugin_api::API_VERSION, "{row}");
        assert_eq!(cells[4], "built-in", "{row}");
        assert_eq!(cells[5], "active", "{row}");
    }
}

#[test]
fn example_policy_loads_from_a_directory_and_contributes_to_the_plan() {
    let world = World::new();
    let dir = world.plugin_dir("plugins", &["ccvm_example_motd"]);
    world.config("[plugins.motd]\nmessage = \"Staging DB is read-only\"\n");
    let listing = world
        .ccvm()
        .arg("--ccvm-plugins")
        .env("CCVM_PLUGIN_PATH", &dir)
        .run()
        .expect_code(0);
    let row = listing
        .stdout
        .lines()
        .find(|l| l.starts_with("policy") && l.contains(" motd "))
        .unwrap_or_else(|| panic!("motd not listed:\n{}", listing.stdout));
    assert!(
        row.contains(&dir.join("libccvm_example_motd.so").display().to_string()),
        "{row}"
    );
    assert!(row.ends_with("active"), "{row}");

    let plan = world
        .ccvm()
        .arg("--ccvm-plan")
        .env("CCVM_PLUGIN_PATH", &dir)
        .run()
        .expect_code(0)
        .json();
    assert!(
        plan["policies"]
            .as_array()
            .expect("array")
            .iter()
            .any(|p| p["name"] == "motd")
    );
    let seed = plan["seed"]["files"].as_array().expect("seed files");
    let motd = seed
        .iter()
        .find(|f| f["path"] == "motd/motd")
        .expect("motd seed file");
    assert_eq!(motd["source"]["content"], "Staging DB is read-only\n");
    assert!(
        ccvm_test_support::world::plan_steps(&plan)
            .as_array()
            .expect("steps")
            .iter()
            .any(|s| s["step"] == "install-file" && s["guest_path"] == "/etc/motd")
    );
    assert!(ccvm_test_support::world::plan_context(&plan).contains("Staging DB is read-only"));
}

#[test]
fn invalid_settings_for_a_loaded_policy_are_a_config_error() {
    let world = World::new();
    let dir = world.plugin_dir("plugins", &["ccvm_example_motd"]);
    world.config("[plugins.motd]\nmessage = 42\n");
    let out = world
        .ccvm()
        .arg("--ccvm-plan")
        .arg("--ccvm-plugin-dir")
        .arg(&dir)
        .run()
        .expect_code(2);
    assert!(out.error_line().contains("policy `motd`"), "{}", out.stderr);
    assert!(
        out.error_line().contains("message must be a string"),
        "{}",
        out.stderr
    );
}

#[test]
fn future_api_plugin_is_skipped_with_warning_and_refused_by_name() {
    let world = World::new();
    let dir = world.plugin_dir("plugins", &["ccvm_fixture_future_api"]);
    let file = dir
        .join("libccvm_fixture_future_api.so")
        .display()
        .to_string();

    let out = world
        .ccvm()
        .arg("--ccvm-plan")
        .arg("--ccvm-plugin-dir")
        .arg(&dir)
        .run()
        .expect_code(0);
    let warning = out
        .stderr
        .lines()
        .find(|l| l.starts_with("ccvm: warning: skipped plugin"))
        .unwrap_or_else(|| panic!("no warning:\n{}", out.stderr));
    assert!(
        warning.contains(&file) && warning.contains("0.2.0"),
        "{warning}"
    );

    let out = world
        .ccvm()
        .args([
            "--ccvm-plan",
            "--backend",
            "future-api",
            "--ccvm-plugin-dir",
        ])
        .arg(&dir)
        .run()
        .expect_code(2);
    let error = out.error_line();
    assert!(error.contains(&file), "{error}");
    assert!(
        error.contains("built against plugin API 0.2.0, but this ccvm provides 0.1.0"),
        "{error}"
    );
    assert!(error.contains("rebuild the plugin"), "{error}");
}

#[test]
fn wrong_kind_plugin_is_refused_naming_the_kind() {
    let world = World::new();
    let dir = world.plugin_dir("plugins", &["ccvm_fixture_wrong_kind"]);
    let listing = world
        .ccvm()
        .arg("--ccvm-plugins")
        .arg("--ccvm-plugin-dir")
        .arg(&dir)
        .run()
        .expect_code(0);
    assert!(
        listing
            .stdout
            .contains("skipped: it declares plugin kind `firewall`"),
        "{}",
        listing.stdout
    );
    let out = world
        .ccvm()
        .args([
            "--ccvm-plan",
            "--backend",
            "wrong-kind",
            "--ccvm-plugin-dir",
        ])
        .arg(&dir)
        .run()
        .expect_code(2);
    assert!(
        out.error_line().contains("plugin kind `firewall`"),
        "{}",
        out.stderr
    );
}

#[test]
fn policy_asked_for_as_backend_is_refused() {
    let out = World::new()
        .ccvm()
        .args(["--ccvm-plan", "--backend", "egress"])
        .run()
        .expect_code(2);
    assert!(
        out.error_line()
            .contains("`egress` (built-in) is a policy plugin, not a backend")
    );
}

#[test]
fn unknown_backend_lists_the_available_ones() {
    let out = World::new()
        .ccvm()
        .args(["--ccvm-plan", "--backend=bochs"])
        .run()
        .expect_code(2);
    assert_eq!(out.error_line(), "ccvm: error: unknown backend `bochs`");
    assert!(
        out.hint_line()
            .contains("microvm, q35, virt, cloud-hypervisor"),
        "{}",
        out.stderr
    );
}

#[test]
fn panicking_plugin_becomes_an_error_and_ccvm_survives() {
    let world = World::new();
    let dir = world.plugin_dir("plugins", &["ccvm_fixture_panicking"]);
    let out = world
        .ccvm()
        .args(["--ccvm-plan", "--backend", "panicking", "--ccvm-plugin-dir"])
        .arg(&dir)
        .env("RUST_BACKTRACE", "0")
        .run()
        .expect_code(1);
    assert!(
        out.error_line()
            .contains("the plugin panicked: deliberate panic in the fixture's plan"),
        "{}",
        out.stderr
    );
    assert!(out.hint_line().contains("bug in the plugin"));
}

#[test]
fn world_writable_plugin_dir_is_refused() {
    let world = World::new();
    let dir = world.plugin_dir("plugins", &["ccvm_plugin_q35"]);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let out = world
        .ccvm()
        .arg("--ccvm-plugins")
        .arg("--ccvm-plugin-dir")
        .arg(&dir)
        .run()
        .expect_code(2);
    assert!(
        out.error_line().contains("world-writable (mode 0777)"),
        "{}",
        out.stderr
    );
    assert!(
        out.hint_line()
            .contains(&format!("chmod go-w {}", dir.display()))
    );
}

#[test]
fn group_writable_plugin_file_is_skipped() {
    let world = World::new();
    let dir = world.plugin_dir("plugins", &["ccvm_plugin_q35"]);
    let file = dir.join("libccvm_plugin_q35.so");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o664)).expect("chmod");
    let out = world
        .ccvm()
        .arg("--ccvm-plugins")
        .arg("--ccvm-plugin-dir")
        .arg(&dir)
        .run()
        .expect_code(0);
    let row = out
        .stdout
        .lines()
        .find(|l| l.contains(&file.display().to_string()))
        .unwrap_or_else(|| panic!("file not listed:\n{}", out.stdout));
    assert!(row.contains("skipped: it is group-writable"), "{row}");
    assert!(out.stdout.lines().any(|l| l.starts_with("backend")
        && l.contains("q35")
        && l.contains("built-in")
        && l.ends_with("active")));
}

#[test]
fn loaded_backend_shadows_the_builtin_and_plans_identically_through_the_binary() {
    let world = World::new();
    let dir = world.plugin_dir("plugins", &["ccvm_plugin_microvm"]);
    let normalized = |plan: &serde_json::Value| {
        let text = plan["machine"].to_string();
        let run_dir = ccvm_test_support::world::plan_run_dir(plan);
        let port = plan["vm"]["host_ssh_port"].to_string();
        text.replace(run_dir, "RUN").replace(&port, "PORT")
    };
    let loaded = world
        .ccvm()
        .arg("--ccvm-plan")
        .arg("--ccvm-plugin-dir")
        .arg(&dir)
        .run()
        .expect_code(0)
        .json();
    let builtin = world.ccvm().arg("--ccvm-plan").run().expect_code(0).json();
    assert_eq!(
        loaded["backend"]["source"]["path"],
        dir.join("libccvm_plugin_microvm.so").display().to_string()
    );
    assert_eq!(builtin["backend"]["source"]["kind"], "built-in");
    assert_eq!(normalized(&loaded), normalized(&builtin));
}

/// Every backend gives byte-identical answers built in and as a loaded library.
#[test]
fn every_backend_answers_byte_identically_built_in_and_loaded() {
    let world = World::new();
    let libraries = [
        ("microvm", "ccvm_plugin_microvm"),
        ("q35", "ccvm_plugin_q35"),
        ("virt", "ccvm_plugin_virt"),
        ("cloud-hypervisor", "ccvm_plugin_cloud_hypervisor"),
    ];
    let dir = world.plugin_dir("plugins", &libraries.map(|(_, lib)| lib));
    let loaded = Registry::discover(&[SearchDir {
        path: dir,
        from_flag: true,
    }])
    .expect("discover");
    let builtin = Registry::discover(&[]).expect("discover");
    let env = Env::from_pairs([("HOME", "/home/alice")]);
    assert_eq!(RunConfig::defaults(&env).memory_mib, 4096);

    for (name, _) in libraries {
        let from_library = loaded.backend(name).expect("loaded backend");
        let from_binary = builtin.backend(name).expect("built-in backend");
        assert!(matches!(from_library.source, Source::Library(_)), "{name}");
        assert_eq!(from_binary.source, Source::BuiltIn);
        assert_eq!(from_library.kind, PluginKind::Backend);

        let caps = |p: &ccvm::plugins::Plugin| {
            serde_json::to_string(
                &p.call::<Capabilities>(method::CAPABILITIES, &())
                    .expect("caps"),
            )
            .expect("encode")
        };
        assert_eq!(caps(from_library), caps(from_binary), "{name} capabilities");

        let mut spec = example_spec();
        spec.acceleration = ccvm_plugin_api::Acceleration::Kvm;
        spec.shares[1].host_path = "/home/alice/src/project".to_owned();
        let request = BackendPlanRequest {
            spec,
            facts: example_facts(&[
                "qemu-system-x86_64",
                "qemu-system-aarch64",
                "cloud-hypervisor",
                "virtiofsd",
            ]),
        };
        let plan = |p: &ccvm::plugins::Plugin| {
            serde_json::to_string(&p.call::<BackendPlan>(method::PLAN, &request).expect("plan"))
                .expect("encode")
        };
        assert_eq!(plan(from_library), plan(from_binary), "{name} plan");
    }
}
