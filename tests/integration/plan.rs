//! `--ccvm-plan` per backend and for the staging contract (S1.6, S3.4, S3.5, S5).

use std::path::Path;

use ccvm_test_support::world::World;

fn args_of(plan: &serde_json::Value) -> Vec<String> {
    plan["machine"]["hypervisor"]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_owned())
        .collect()
}

fn value_after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
    args.windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| w[1].as_str())
        .collect()
}

#[test]
fn microvm_plan_runs_the_qemu_on_path_with_mmio_and_ttys0() {
    let world = World::new();
    let plan = world
        .ccvm()
        .args(["--ccvm-plan", "--backend", "microvm"])
        .env("CCVM_ACCEL", "tcg")
        .run()
        .expect_code(0)
        .json();
    assert_eq!(
        plan["machine"]["hypervisor"]["program"],
        world
            .path("bin")
            .join("qemu-system-x86_64")
            .display()
            .to_string()
    );
    let args = args_of(&plan);
    assert!(value_after(&args, "-machine")[0].starts_with("microvm,"));
    assert_eq!(value_after(&args, "-cpu"), ["max,erms=off,fsrm=off"]);
    let append = value_after(&args, "-append")[0];
    assert!(
        append.contains("console=ttyS0") && append.contains("tsc_early_khz="),
        "{append}"
    );
    assert!(
        value_after(&args, "-device")
            .iter()
            .all(|d| !d.ends_with("-pci") && !d.contains("-pci,"))
    );
    let project = world.path("project").canonicalize().expect("canonical");
    let fsdev = value_after(&args, "-fsdev");
    assert!(
        fsdev
            .iter()
            .any(|f| f.contains(&format!("path={}", project.display()))),
        "{fsdev:?}"
    );
    assert_eq!(plan["acceleration"]["resolved"], "tcg");
}

#[test]
fn q35_plan_uses_virtio_pci() {
    let plan = World::new()
        .ccvm()
        .args(["--ccvm-plan", "--backend", "q35"])
        .env("CCVM_ACCEL", "tcg")
        .run()
        .expect_code(0)
        .json();
    let args = args_of(&plan);
    assert!(value_after(&args, "-machine")[0].starts_with("q35"));
    assert!(value_after(&args, "-device").contains(&"virtio-blk-pci,drive=root,serial=ccvm-root"));
    assert!(!value_after(&args, "-append")[0].contains("tsc_early_khz"));
}

#[test]
fn virt_plan_runs_aarch64_qemu_with_ttyama0_under_tcg() {
    let world = World::new();
    let plan = world
        .ccvm()
        .args(["--ccvm-plan", "--backend", "virt"])
        .run()
        .expect_code(0)
        .json();
    assert_eq!(
        plan["machine"]["hypervisor"]["program"],
        world
            .path("bin")
            .join("qemu-system-aarch64")
            .display()
            .to_string()
    );
    assert_eq!(plan["machine"]["console"]["guest_tty"], "ttyAMA0");
    assert_eq!(plan["acceleration"]["resolved"], "tcg");
    assert!(
        plan["image"]["dir"]
            .as_str()
            .expect("dir")
            .ends_with("default-aarch64")
    );
}

#[test]
fn cloud_hypervisor_with_tcg_is_refused_before_anything_starts() {
    let out = World::new()
        .ccvm()
        .args(["--ccvm-plan", "--backend", "cloud-hypervisor"])
        .env("CCVM_ACCEL", "tcg")
        .run()
        .expect_code(2);
    assert!(
        out.error_line()
            .contains("cannot run with acceleration = \"tcg\": it needs KVM"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty());
}

/// S1.6: `--ccvm-plan` shows any backend's plan anywhere. On a host without usable KVM (these
/// machines) cloud-hypervisor's plan is printed, the reason is an error and the status 1, and
/// the advice never suggests TCG, which that backend cannot use.
#[test]
fn cloud_hypervisor_is_planned_for_reading_even_without_kvm() {
    let out = World::new()
        .ccvm()
        .args(["--ccvm-plan", "--backend", "cloud-hypervisor"])
        .run();
    let plan = out.json();
    assert_eq!(plan["backend"]["name"], "cloud-hypervisor", "{plan:#}");
    assert_eq!(plan["acceleration"]["resolved"], "kvm");
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("ccvm: error: "))
        .collect();
    match out.code {
        1 => {
            assert!(!errors.is_empty(), "{}", out.stderr);
            assert!(
                !out.stderr.contains("acceleration = \"tcg\""),
                "{}",
                out.stderr
            );
        }
        0 => assert!(errors.is_empty(), "{}", out.stderr),
        code => panic!("exit {code}: {}", out.stderr),
    }
}

#[test]
fn cloud_hypervisor_with_9p_is_refused_naming_the_transport() {
    let out = World::new()
        .ccvm()
        .args(["--ccvm-plan", "--backend", "cloud-hypervisor"])
        .env("CCVM_SHARE_TRANSPORT", "9p")
        .run()
        .expect_code(2);
    assert_eq!(
        out.error_line(),
        "ccvm: error: backend `cloud-hypervisor` has no share transport 9p (it supports: virtio-fs)"
    );
}

#[test]
fn read_only_mode_exports_the_project_read_only() {
    let plan = World::new()
        .ccvm()
        .args(["--ccvm-plan", "--read-only-cwd"])
        .run()
        .expect_code(0)
        .json();
    let project = plan["machine"]["shares"]
        .as_array()
        .expect("shares")
        .iter()
        .find(|s| s["tag"] == "ccvm-project")
        .expect("project share")
        .clone();
    assert_eq!(project["read_only"], true);
    let fsdev = value_after(&args_of(&plan), "-fsdev")
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>();
    assert!(
        fsdev.iter().all(|f| f.ends_with("readonly=on")),
        "{fsdev:?}"
    );
    assert!(
        ccvm_test_support::world::plan_context(&plan).contains("discarded when the session ends")
    );
}

#[test]
fn persistence_and_scratch_disk_add_a_share_a_disk_and_say_so() {
    let world = World::new();
    let plan = world
        .ccvm()
        .arg("--ccvm-plan")
        .env("CCVM_PERSIST_PROJECTS", "yes")
        .env("CCVM_VM_DISK_SIZE", "8")
        .run()
        .expect_code(0)
        .json();
    let projects = format!("{}/.claude/projects", world.home().display());
    assert!(
        plan["vm"]["shares"]
            .as_array()
            .expect("shares")
            .iter()
            .any(|s| s["host_path"] == projects.as_str())
    );
    assert_eq!(plan["vm"]["scratch_disk"]["size_gib"], 8);
    let text = ccvm_test_support::world::plan_context(&plan);
    assert!(
        text.contains("persist across sessions") && text.contains("/scratch is an encrypted 8 GiB"),
        "{text}"
    );
}

#[test]
fn claude_home_is_staged_by_allowlist_and_claude_json_is_sanitized() {
    let world = World::new();
    let home = world.home();
    std::fs::create_dir_all(home.join(".claude/commands")).expect("mkdir");
    std::fs::write(home.join(".claude/.credentials.json"), "{\"token\":\"x\"}").expect("write");
    std::fs::write(home.join(".claude/history.jsonl"), "{}").expect("write");
    std::fs::write(
        home.join(".claude.json"),
        r#"{"userID":"u-1","primaryApiKey":"sk-ant-LEAK","mcpServers":{"gh":{"command":"gh","env":{"GH_TOKEN":"ghp_LEAK"}}},
           "projects":{"/p":{"mcpServers":{"db":{"url":"u","headers":{"Authorization":"Bearer LEAK"}}}}}}"#,
    )
    .expect("write");
    let plan = world.ccvm().arg("--ccvm-plan").run().expect_code(0).json();
    let files = plan["seed"]["files"].as_array().expect("files");
    let sources: Vec<String> = files
        .iter()
        .filter_map(|f| f["source"]["host_path"].as_str().map(str::to_owned))
        .collect();
    assert!(
        sources.contains(&format!("{}/.claude/commands", home.display())),
        "{sources:?}"
    );
    for never in [
        ".credentials.json",
        "history.jsonl",
        "projects",
        "sessions",
        "statsig",
        "todos",
    ] {
        assert!(
            sources.iter().all(|s| !Path::new(s).ends_with(never)),
            "{never} staged: {sources:?}"
        );
    }
    let claude_json = files
        .iter()
        .find(|f| f["path"] == "claude.json")
        .expect("claude.json staged")["source"]["content"]
        .as_str()
        .expect("content")
        .to_owned();
    assert!(
        claude_json.contains("u-1") && claude_json.contains("\"gh\""),
        "{claude_json}"
    );
    assert!(!claude_json.contains("LEAK"), "{claude_json}");
    assert!(!plan.to_string().contains("LEAK"));
}

#[test]
fn git_config_is_staged_sanitized() {
    let world = World::new();
    std::fs::write(
        world.home().join(".gitconfig"),
        "[user]\n\tname = Alice\n\tsigningkey = ABC123\n[credential]\n\thelper = store\n\
         [commit]\n\tgpgsign = true\n[core]\n\texcludesfile = ~/.gitignore_global\n",
    )
    .expect("write");
    std::fs::write(world.home().join(".gitignore_global"), "*.swp\n").expect("write");
    let plan = world.ccvm().arg("--ccvm-plan").run().expect_code(0).json();
    let files = plan["seed"]["files"].as_array().expect("files");
    let content = |path: &str| {
        files
            .iter()
            .find(|f| f["path"] == path)
            .unwrap_or_else(|| panic!("{path} not staged (is git installed?)"))["source"]["content"]
            .as_str()
            .expect("content")
            .to_owned()
    };
    let config = content("git/config");
    assert!(config.contains("name = \"Alice\""), "{config}");
    assert!(config.contains("gpgsign = \"false\""), "{config}");
    for gone in ["ABC123", "store", "excludesfile"] {
        assert!(!config.contains(gone), "{gone} in {config}");
    }
    assert_eq!(content("git/ignore"), "*.swp\n");
}

/// S5.4: with `share.settings` on, `settings.json` and `settings.local.json` reach the seed's
/// `claude/` (the guest's `~/.claude`) through the secret classifier: the `env` secrets and
/// the credential helpers are gone, the rest stays, and no settings file is copied verbatim.
#[test]
fn settings_files_are_staged_without_their_secrets() {
    let world = World::new();
    let claude = world.home().join(".claude");
    std::fs::create_dir_all(&claude).expect("mkdir");
    std::fs::write(
        claude.join("settings.json"),
        r#"{"model":"opus","apiKeyHelper":"~/bin/LEAK-helper.sh",
            "awsCredentialExport":"/home/x/LEAK-export.sh",
            "env":{"ANTHROPIC_API_KEY":"sk-ant-api03-LEAKLEAKLEAK","EDITOR":"vim"},
            "permissions":{"allow":["Bash(npm test)"]}}"#,
    )
    .expect("write");
    std::fs::write(
        claude.join("settings.local.json"),
        r#"{"env":{"GITHUB_TOKEN":"ghp_LEAK","DEBUG":"1"}}"#,
    )
    .expect("write");
    let out = world.ccvm().arg("--ccvm-plan").run().expect_code(0);
    let plan = out.json();
    let files = plan["seed"]["files"].as_array().expect("files");
    let inline = |path: &str| -> serde_json::Value {
        let text = files
            .iter()
            .find(|f| f["path"] == path)
            .unwrap_or_else(|| panic!("{path} not staged: {files:?}"))["source"]["content"]
            .as_str()
            .expect("inline content")
            .to_owned();
        serde_json::from_str(&text).expect("valid JSON")
    };
    assert_eq!(
        inline("claude/settings.json"),
        serde_json::json!({"model": "opus", "env": {"EDITOR": "vim"},
                           "permissions": {"allow": ["Bash(npm test)"]}})
    );
    assert_eq!(
        inline("claude/settings.local.json"),
        serde_json::json!({"env": {"DEBUG": "1"}})
    );
    assert!(
        files.iter().all(|f| !f["source"]["host_path"]
            .as_str()
            .is_some_and(|p| p.contains("settings"))),
        "{files:?}"
    );
    assert!(
        !plan.to_string().contains("LEAK"),
        "a secret reached the plan"
    );

    std::fs::write(claude.join("settings.local.json"), "{\"env\":").expect("write");
    let out = world.ccvm().arg("--ccvm-plan").run().expect_code(0);
    assert!(
        out.stderr.contains(&format!(
            "{}/settings.local.json is not valid JSON",
            claude.display()
        )),
        "{}",
        out.stderr
    );
    assert!(
        !out.json()["seed"]["files"]
            .as_array()
            .expect("files")
            .iter()
            .any(|f| f["path"] == "claude/settings.local.json")
    );
}

fn firewall_of(plan: &serde_json::Value) -> &serde_json::Value {
    ccvm_test_support::world::plan_steps(plan)
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["step"] == "firewall")
        .unwrap_or_else(|| {
            panic!(
                "no firewall step: {}",
                ccvm_test_support::world::plan_steps(plan)
            )
        })
}

/// S7.2: an allowlist of addresses boots without any name resolving (here
/// `api.anthropic.com` may not resolve at all), gives the guest no resolver, and an entry
/// that covers the host gateway is warned about in the plan and on stderr, as at launch.
#[test]
fn an_address_allowlist_plans_without_dns_and_warns_about_the_host_gateway() {
    let world = World::new();
    world.config("[egress]\nallowlist = [\"10.0.0.0/8\", \"192.0.2.7\"]\n");
    let out = world.ccvm().arg("--ccvm-plan").run().expect_code(0);
    let plan = out.json();
    let firewall = firewall_of(&plan);
    assert!(firewall["dns_server"].is_null(), "{firewall}");
    let destinations: Vec<&str> = firewall["allow"]
        .as_array()
        .expect("allow")
        .iter()
        .filter_map(|r| r["destination"].as_str())
        .collect();
    assert!(
        destinations.starts_with(&["10.0.0.0/8", "192.0.2.7"]),
        "{destinations:?}"
    );
    let warning = "`10.0.0.0/8` covers 10.0.2.2, the host's own loopback";
    assert!(
        plan["diagnostics"].to_string().contains(warning),
        "{}",
        plan["diagnostics"]
    );
    assert!(
        out.stderr
            .contains(&format!("ccvm: warning: egress allowlist entry {warning}")),
        "{}",
        out.stderr
    );
    let header = ccvm_test_support::world::plan_context(&plan);
    assert!(
        header.contains("no DNS in this VM") || header.contains("No name resolves"),
        "{header}"
    );
}

fn virtiofsd_args(plan: &serde_json::Value) -> Vec<String> {
    let helpers = plan["machine"]["helpers"].as_array().expect("helpers");
    assert!(!helpers.is_empty(), "virtio-fs plans virtiofsd helpers");
    helpers
        .iter()
        .flat_map(|h| h["command"]["args"].as_array().expect("args").clone())
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect()
}

/// virtiofsd runs in its own namespaces (`--sandbox=namespace`) when the host lets this user
/// create them, which ccvm checks on the host (the backend only reads the fact). Where it
/// cannot (here provoked inside a user namespace whose `user.max_user_namespaces` is 0), the
/// plan falls back to `--sandbox=none` and the warning says why.
#[test]
fn virtiofsd_uses_its_namespace_sandbox_and_says_why_when_it_cannot() {
    let world = World::new();
    world.config("share_transport = \"virtio-fs\"\n");
    let run = |ccvm: ccvm_test_support::world::Ccvm| {
        ccvm.args(["--ccvm-plan", "--backend", "q35"])
            .env("CCVM_ACCEL", "tcg")
    };
    let host_allows = std::process::Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--mount",
            "--pid",
            "--net",
            "--fork",
        ])
        .args(["--mount-proc", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !host_allows {
        eprintln!("skipped: this host does not let the test create user namespaces");
        return;
    }
    let plan = run(world.ccvm()).run().expect_code(0).json();
    let args = virtiofsd_args(&plan);
    assert!(args.iter().any(|a| a == "--sandbox=namespace"), "{args:?}");
    assert!(!args.iter().any(|a| a == "--sandbox=none"), "{args:?}");

    let ccvm = run(world.ccvm()).into_command();
    let mut confined = std::process::Command::new("unshare");
    confined
        .args([
            "--user",
            "--map-root-user",
            "--mount",
            "--pid",
            "--fork",
            "--mount-proc",
        ])
        .args([
            "sh",
            "-c",
            "echo 0 > /proc/sys/user/max_user_namespaces && exec \"$@\"",
            "sh",
        ])
        .arg(ccvm.get_program())
        .args(ccvm.get_args())
        .env_clear()
        .envs(ccvm.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .current_dir(ccvm.get_current_dir().expect("the world sets a directory"));
    let out = confined.output().expect("unshare runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
    let args = virtiofsd_args(&plan);
    assert!(args.iter().any(|a| a == "--sandbox=none"), "{args:?}");
    assert!(
        stderr.contains("ccvm: warning: virtiofsd runs without its namespace sandbox")
            && stderr.contains("cannot create user namespaces"),
        "{stderr}"
    );
}

/// S9.1: a scratch disk is never put on tmpfs or ramfs, unless the user insists; either way it
/// is a per-run file in the scratch directory, refused before anything is created.
#[test]
fn a_scratch_disk_on_tmpfs_is_refused_unless_allowed() {
    let world = World::new();
    let shm = tempfile::tempdir_in("/dev/shm").expect("a directory on tmpfs");
    let scratch = shm.path().join("scratch");
    let out = world
        .ccvm()
        .arg("--ccvm-plan")
        .env("CCVM_VM_DISK_SIZE", "4")
        .env("CCVM_SCRATCH_DIR", &scratch)
        .run()
        .expect_code(2);
    assert!(
        out.error_line().contains("which is on tmpfs")
            && out.error_line().contains(&scratch.display().to_string()),
        "{}",
        out.stderr
    );
    assert!(
        out.hint_line().contains("CCVM_SCRATCH_ALLOW_TMPFS=1"),
        "{}",
        out.stderr
    );
    assert!(!scratch.exists(), "nothing is created for a refused disk");

    let plan = world
        .ccvm()
        .arg("--ccvm-plan")
        .env("CCVM_VM_DISK_SIZE", "4")
        .env("CCVM_SCRATCH_DIR", &scratch)
        .env("CCVM_SCRATCH_ALLOW_TMPFS", "1")
        .run()
        .expect_code(0)
        .json();
    let disk = plan["vm"]["scratch_disk"]["path"].as_str().expect("a disk");
    assert!(disk.starts_with(&scratch.display().to_string()), "{disk}");
    let other = world
        .ccvm()
        .arg("--ccvm-plan")
        .env("CCVM_VM_DISK_SIZE", "4")
        .env("CCVM_SCRATCH_DIR", &scratch)
        .env("CCVM_SCRATCH_ALLOW_TMPFS", "1")
        .run()
        .expect_code(0)
        .json();
    assert_ne!(
        other["vm"]["scratch_disk"]["path"], disk,
        "each run has its own disk image"
    );
    let steps = ccvm_test_support::world::plan_steps(&plan);
    assert_eq!(steps[0]["step"], "scratch-disk", "{steps}");
    assert_eq!(steps[0]["mount"], "/scratch");
    assert_eq!(steps[0]["size_gib"], 4);
}

/// `cpus` unset: 4 vCPUs under KVM, under TCG no more than the host's cores (each vCPU is a
/// host thread; on 2 cores 2 vCPUs drew the real Claude Code's first frame as soon as 4 or
/// sooner, bench/RESULTS.md). Set, it is taken as it is, even above the host's cores.
#[test]
fn under_tcg_the_default_vcpus_are_at_most_the_host_cores_and_a_set_value_stands() {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let expected = cores.min(4);
    let world = World::new();
    world.config("acceleration = \"tcg\"\n");
    let plan = world
        .ccvm()
        .args(["--ccvm-plan", "--backend", "microvm"])
        .run()
        .expect_code(0)
        .json();
    assert_eq!(plan["vm"]["cpus"], expected, "{} host cores", cores);
    let args = args_of(&plan);
    let smp = value_after(&args, "-smp");
    assert!(
        smp.len() == 1 && smp[0].starts_with(&expected.to_string()),
        "{smp:?}"
    );

    let set = world
        .ccvm()
        .args(["--ccvm-plan", "--backend", "microvm"])
        .env("CCVM_CPUS", "4")
        .run()
        .expect_code(0)
        .json();
    assert_eq!(set["vm"]["cpus"], 4);
}
