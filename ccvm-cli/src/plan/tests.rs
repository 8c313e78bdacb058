//! Unit tests of the planner's steps.
use std::path::Path;

use ccvm_plugin_api::{ControlEndpoint, PolicyPlan, RemoteForward, SshOption};

use super::memlock_warning;
use super::session::ssh_command;

fn ssh_options(forward: Option<&RemoteForward>, policy: PolicyPlan) -> Vec<String> {
    let control = ControlEndpoint::TcpForward {
        host: "127.0.0.1".to_owned(),
        port: 40022,
    };
    let facts = ccvm_plugin_api::testing::example_facts(&[]);
    let ssh = ssh_command(
        Some(Path::new("/usr/bin/ssh")),
        &facts,
        Path::new("/run/user/1000/ccvm/run-1"),
        &control,
        "ANTHROPIC_API_KEY",
        &[policy],
        forward,
    );
    ssh.args
        .windows(2)
        .filter(|w| w[0] == "-o")
        .map(|w| w[1].clone())
        .collect()
}

/// S6.2, S10.4: the client authenticates with its key only, never prompts, forwards
/// nothing, and a policy cannot add a forward through its ssh options.
#[test]
fn ssh_uses_public_keys_only_and_forwards_nothing() {
    let policy = PolicyPlan {
        ssh_options: vec![
            SshOption {
                key: "LocalForward".to_owned(),
                value: "8080 127.0.0.1:80".to_owned(),
            },
            SshOption {
                key: "ServerAliveInterval".to_owned(),
                value: "30".to_owned(),
            },
        ],
        ..PolicyPlan::default()
    };
    let options = ssh_options(None, policy);
    for expected in [
        "PreferredAuthentications=publickey",
        "PasswordAuthentication=no",
        "KbdInteractiveAuthentication=no",
        "HostbasedAuthentication=no",
        "GSSAPIAuthentication=no",
        "BatchMode=yes",
        "ForwardAgent=no",
        "ForwardX11=no",
        "ClearAllForwardings=yes",
        "StrictHostKeyChecking=yes",
        "KexAlgorithms=curve25519-sha256",
        "ServerAliveInterval=30",
    ] {
        assert!(
            options.iter().any(|o| o == expected),
            "{expected}: {options:?}"
        );
    }
    assert!(
        !options.iter().any(|o| o.contains("Forward=")),
        "{options:?}"
    );
}

#[test]
fn the_one_remote_forward_reaches_ssh() {
    let forward = RemoteForward {
        listen: "127.0.0.1:7070".to_owned(),
        target: "/run/user/1000/ccvm/run-1/clip.sock".to_owned(),
    };
    let options = ssh_options(Some(&forward), PolicyPlan::default());
    assert!(
        options
            .iter()
            .any(|o| o == "RemoteForward=127.0.0.1:7070 /run/user/1000/ccvm/run-1/clip.sock"),
        "{options:?}"
    );
    assert!(options.iter().any(|o| o == "ExitOnForwardFailure=yes"));
    assert!(!options.iter().any(|o| o.starts_with("ClearAllForwardings")));
}

/// S9.3: a backend that cannot attach a scratch disk refuses one before anything starts,
/// naming the option; with the capability the same configuration passes.
#[cfg(feature = "backend-microvm")]
#[test]
fn a_backend_without_scratch_disks_refuses_one() {
    use ccvm_plugin_api::Backend as _;
    let env = crate::config::Env::from_pairs([]);
    let config = crate::config::load(&env, &crate::config::FlagLayer::default()).expect("defaults");
    let config = crate::config::RunConfig {
        vm_disk_gib: 8,
        ..config
    };
    let mut caps = ccvm_backend_microvm::Microvm.capabilities();
    let mut diagnostics = Vec::new();
    super::machine::check_capabilities(&config, "microvm", &caps, None, &mut diagnostics)
        .expect("microvm attaches scratch disks");
    caps.scratch_disk = false;
    let error =
        super::machine::check_capabilities(&config, "third-party", &caps, None, &mut diagnostics)
            .expect_err("refused");
    assert!(
        error
            .to_string()
            .contains("backend `third-party` cannot attach a scratch disk"),
        "{error}"
    );
    assert_eq!(error.hint().as_deref(), Some("set vm_disk_gib = 0"));
}

#[test]
fn memlock_warning_only_when_the_limit_is_below_guest_memory() {
    assert_eq!(memlock_warning(None, 4096), None, "unlimited");
    assert_eq!(memlock_warning(Some(8 << 30), 4096), None);
    let warning = memlock_warning(Some(8 << 20), 4096).expect("8 MiB < 4096 MiB");
    assert!(
        warning.contains("at least 4096 MiB, but it is 8 MiB"),
        "{warning}"
    );
    assert!(warning.contains("ulimit -l"), "{warning}");
}

mod whole_plan {
    use std::collections::BTreeMap;
    use std::ffi::OsString;
    use std::path::{Path, PathBuf};

    use ccvm_plugin_api::{FileFact, HostFacts, Requirements};

    use crate::config::{Env, FlagLayer, RunConfig};
    use crate::host::{Device, KvmProbe};
    use crate::plan::{HostAccess, PlanInputs, RunIdentity, plan};
    use crate::plugins::Registry;

    /// A host that answers from fixed data: every program under `/opt/fake/bin`, no files,
    /// no KVM, the image built.
    struct FakeHost {
        asked: Vec<Requirements>,
    }

    impl HostAccess for FakeHost {
        fn gather(&mut self, facts: &mut HostFacts, requirements: &Requirements) {
            for program in &requirements.programs {
                facts
                    .programs
                    .insert(program.clone(), Some(format!("/opt/fake/bin/{program}")));
            }
            for file in &requirements.read_files {
                facts.files.insert(file.clone(), FileFact::Absent);
            }
            if requirements.tsc_khz {
                facts.tsc_khz = Some(1_000_000);
            }
            self.asked.push(requirements.clone());
        }

        fn probe_kvm(&mut self) -> KvmProbe {
            KvmProbe {
                device: Device::Missing,
                hardware_virt: Some(false),
                software_module: None,
            }
        }

        fn built_image(&self, _dir: &Path) -> Option<crate::plan::BuiltImage> {
            Some(crate::plan::BuiltImage {
                extra_packages: Vec::new(),
                claude_code: ccvm_image::CLAUDE_CODE_VERSION.to_owned(),
                claude_code_requested: String::new(),
                age_days: Some(3),
            })
        }
    }

    /// The planner needs nothing from the host but its inputs and the fake's answers: the
    /// run's identity reaches every path that names it, as given.
    #[test]
    fn a_plan_is_made_from_its_inputs_and_the_hosts_answers_alone() {
        let env = Env::from_pairs([]);
        let config = crate::config::load(&env, &FlagLayer::default()).expect("defaults");
        let config = RunConfig {
            acceleration: crate::config::AccelMode::Auto,
            ..config
        };
        let registry = Registry::discover(&[]).expect("built-ins");
        let argv = [OsString::from("-p"), OsString::from("hi")];
        let identity = RunIdentity {
            run_dir: PathBuf::from("/run/user/1000/ccvm/run-0123456789abcdef"),
            host_ssh_port: 40_022,
            vsock_cid: 7,
            scratch_disk: PathBuf::from("/cache/disk-run-x.img"),
        };
        let inputs = PlanInputs {
            config: &config,
            registry: &registry,
            argv: &argv,
            facts: ccvm_plugin_api::testing::example_facts(&[]),
            identity: identity.clone(),
            images_dir: PathBuf::from("/cache/ccvm/images"),
            api_key_set: true,
            context_text: Some("be kind".to_owned()),
            memlock_limit: None,
            ssh: Some(PathBuf::from("/opt/fake/bin/ssh")),
            ssh_keygen: Some(PathBuf::from("/opt/fake/bin/ssh-keygen")),
            timings_file: None,
            display_env: BTreeMap::from([("DISPLAY".to_owned(), ":0".to_owned())]),
            inspect: false,
        };
        let mut host = FakeHost { asked: Vec::new() };
        let plan = plan(inputs, &mut host).expect("plans");

        let run = "/run/user/1000/ccvm/run-0123456789abcdef";
        assert_eq!(plan.run_dir(), Path::new(run));
        assert_eq!(plan.seed.dir, format!("{run}/seed"));
        assert_eq!(
            plan.machine.hypervisor.program,
            "/opt/fake/bin/qemu-system-x86_64"
        );
        assert_eq!(
            plan.acceleration.resolved,
            ccvm_plugin_api::Acceleration::Tcg
        );
        assert_eq!(plan.image.dir, "/cache/ccvm/images/default-x86_64");
        assert_eq!(plan.ssh.program, "/opt/fake/bin/ssh");
        assert!(
            plan.ssh
                .args
                .iter()
                .any(|a| a == &format!("IdentityFile={run}/id_ed25519")),
            "{:?}",
            plan.ssh.args
        );
        assert!(plan.ssh.args.iter().any(|a| a == "Port=40022"));
        assert_eq!(plan.argv(), argv);
        assert_eq!(plan.seed.manifest.project_dir, "/home/alice/src/my,project");
        let context = plan
            .seed
            .files
            .iter()
            .find(|f| f.path == "ccvm-session.md")
            .expect("the CLAUDE.md addition");
        assert!(
            matches!(&context.source, ccvm_plugin_api::SeedSource::Inline { content }
                if content.starts_with("# ccvm session") && content.ends_with("be kind\n")),
            "{context:?}"
        );
        assert!(
            host.asked
                .iter()
                .any(|r| r.programs.iter().any(|p| p == "qemu-system-x86_64")),
            "the backend's requirements went through the host"
        );
    }

    /// S1.6 (issue 19): a backend that needs KVM, on a host without it, still gets its plan
    /// when the plan is only to be read, with the reason as an error diagnostic whose advice
    /// never suggests TCG; a plan to be run is refused.
    #[cfg(feature = "backend-cloud-hypervisor")]
    #[test]
    fn a_kvm_only_backend_is_planned_for_reading_with_the_reason_and_refused_for_running() {
        let env = Env::from_pairs([]);
        let config = crate::config::load(&env, &FlagLayer::default()).expect("defaults");
        let config = RunConfig {
            acceleration: crate::config::AccelMode::Auto,
            backend: "cloud-hypervisor".to_owned(),
            ..config
        };
        let registry = Registry::discover(&[]).expect("built-ins");
        let inputs = |inspect| PlanInputs {
            config: &config,
            registry: &registry,
            argv: &[],
            facts: ccvm_plugin_api::testing::example_facts(&[]),
            identity: RunIdentity {
                run_dir: PathBuf::from("/run/user/1000/ccvm/run-1"),
                host_ssh_port: 40_022,
                vsock_cid: 7,
                scratch_disk: PathBuf::from("/cache/disk-run-x.img"),
            },
            images_dir: PathBuf::from("/cache/ccvm/images"),
            api_key_set: true,
            context_text: None,
            memlock_limit: None,
            ssh: Some(PathBuf::from("/opt/fake/bin/ssh")),
            ssh_keygen: Some(PathBuf::from("/opt/fake/bin/ssh-keygen")),
            timings_file: None,
            display_env: BTreeMap::new(),
            inspect,
        };
        let error = plan(inputs(false), &mut FakeHost { asked: Vec::new() })
            .expect_err("no KVM, no session");
        assert!(error.to_string().contains("needs KVM"), "{error}");
        let hint = error.hint().unwrap_or_default();
        assert!(!hint.contains("tcg"), "{hint}");

        let plan = plan(inputs(true), &mut FakeHost { asked: Vec::new() }).expect("a plan");
        assert_eq!(
            plan.acceleration.resolved,
            ccvm_plugin_api::Acceleration::Kvm
        );
        assert_eq!(
            plan.machine.hypervisor.program,
            "/opt/fake/bin/cloud-hypervisor"
        );
        let errors: Vec<&str> = plan
            .diagnostics
            .iter()
            .filter(|d| d.level == ccvm_plugin_api::DiagnosticLevel::Error)
            .map(|d| d.message.as_str())
            .collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("needs KVM"), "{errors:?}");
        assert!(!errors[0].contains("tcg"), "{errors:?}");
    }
}
