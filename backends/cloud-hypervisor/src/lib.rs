//! The `cloud-hypervisor` backend: KVM only, virtio-fs shares through one virtiofsd per
//! share, sshd reached over a hybrid-vsock Unix socket, console to a log file.
//!
//! cloud-hypervisor has no TCG, no 9p and no user-mode networking: those requests are
//! refused with the missing capability named (S3.5). Pure: never runs anything.
#![forbid(unsafe_code)]

use ccvm_plugin_api::guest::cmdline::{GuestParams, VirtioTransport};
use ccvm_plugin_api::guest::paths::{ROOT_DISK_SERIAL, SCRATCH_DISK_SERIAL};
use ccvm_plugin_api::{
    Acceleration, Backend, BackendPlan, Capabilities, Command, Console, ControlEndpoint,
    Diagnostic, Helper, HostFacts, NamespaceFact, NetworkAttachment, PlannedShare, PluginError,
    Requirements, ShareTransport, VmSpec,
};

/// cloud-hypervisor.
#[derive(Debug, Default)]
pub struct CloudHypervisor;

const PROGRAM: &str = "cloud-hypervisor";

/// Candidate virtio-fs daemons (the Rust virtiofsd), most preferred first.
fn virtiofsd_candidates() -> [&'static str; 2] {
    ["virtiofsd", "/usr/libexec/virtiofsd"]
}

/// virtiofsd's `--sandbox`: its own namespaces where the host lets this user create them,
/// else none with a warning saying why (the same rule as the QEMU backends).
fn virtiofsd_sandbox(facts: &HostFacts) -> (&'static str, Option<Diagnostic>) {
    let reason = match &facts.user_namespaces {
        Some(NamespaceFact::Usable) => return ("--sandbox=namespace", None),
        Some(NamespaceFact::Unusable { reason }) => reason.as_str(),
        None => "the host did not check whether namespaces are usable",
    };
    (
        "--sandbox=none",
        Some(Diagnostic::warning(format!(
            "virtiofsd runs without its namespace sandbox (--sandbox=none): {reason}; it can \
             then reach every file you can, not only the shared directories"
        ))),
    )
}

/// cloud-hypervisor splits option values on `,` with no escape we can rely on, so a path
/// containing one is refused rather than silently cut.
fn no_comma<'a>(what: &str, value: &'a str) -> Result<&'a str, PluginError> {
    if value.contains(',') {
        Err(PluginError::invalid(format!(
            "cloud-hypervisor cannot take {what} `{value}`: it contains a comma; \
             move it to a path without one or use a QEMU backend"
        )))
    } else {
        Ok(value)
    }
}

impl Backend for CloudHypervisor {
    const NAME: &'static str = "cloud-hypervisor";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "cloud-hypervisor (KVM only, virtio-fs, vsock)";

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // Same architecture as the host: cloud-hypervisor never emulates.
            guest_arch: "host".to_owned(),
            accelerations: vec![Acceleration::Kvm],
            share_transports: vec![ShareTransport::VirtioFs],
            guest_network: false,
            scratch_disk: true,
            lock_guest_memory: false,
            hypervisor_sandbox: true,
        }
    }

    fn requirements(&self, spec: &VmSpec) -> Result<Requirements, PluginError> {
        let mut programs = vec![PROGRAM.to_owned()];
        programs.extend(virtiofsd_candidates().map(str::to_owned));
        Ok(Requirements {
            programs,
            user_namespaces: !spec.shares.is_empty(),
            ..Requirements::default()
        })
    }

    fn plan(&self, spec: &VmSpec, facts: &HostFacts) -> Result<BackendPlan, PluginError> {
        if spec.acceleration != Acceleration::Kvm {
            return Err(PluginError::invalid(
                "cloud-hypervisor needs KVM and cannot run with acceleration = \"tcg\"; \
                 use a QEMU backend (microvm, q35, virt) for TCG",
            ));
        }
        if spec.share_transport == Some(ShareTransport::NineP) {
            return Err(PluginError::invalid(
                "cloud-hypervisor has no 9p; use share_transport = \"virtio-fs\"",
            ));
        }
        if spec.lock_guest_memory {
            return Err(PluginError::invalid(
                "cloud-hypervisor cannot lock guest memory; set lock_guest_memory = false",
            ));
        }
        let program = facts.program(PROGRAM).ok_or_else(|| {
            PluginError::failed(
                "`cloud-hypervisor` was not found on PATH; install it from the \
                 cloud-hypervisor project's releases or your distribution",
            )
        })?;
        let virtiofsd = virtiofsd_candidates()
            .iter()
            .find_map(|name| facts.program(name));
        let guest_tty = if facts.host_arch == "aarch64" {
            "ttyAMA0"
        } else {
            "ttyS0"
        };
        let run = spec.run_dir.trim_end_matches('/');
        let api_socket = format!("{run}/cloud-hypervisor.sock");
        let vsock_socket = format!("{run}/vsock.sock");
        let console_log = format!("{run}/console.log");

        let mut kernel_cmdline = vec![format!("console={guest_tty}")];
        kernel_cmdline.extend(
            GuestParams {
                virtio: VirtioTransport::Pci,
                shares: ShareTransport::VirtioFs,
                vsock_port: Some(u32::from(spec.guest_ssh_port)),
            }
            .words(),
        );
        let cmdline: Vec<&str> = spec
            .kernel_cmdline
            .iter()
            .chain(&kernel_cmdline)
            .map(String::as_str)
            .collect();

        let mut args: Vec<String> = vec![
            "--api-socket".into(),
            format!("path={}", no_comma("the run directory", &api_socket)?),
            "--kernel".into(),
            spec.kernel.clone(),
            "--initramfs".into(),
            spec.initrd.clone(),
            "--cmdline".into(),
            cmdline.join(" "),
            "--cpus".into(),
            format!("boot={}", spec.cpus),
            "--memory".into(),
            // virtio-fs needs guest memory the daemons can map.
            format!("size={}M,shared=on", spec.memory_mib),
            "--disk".into(),
            format!(
                "path={},readonly=on,image_type=raw,serial={ROOT_DISK_SERIAL}",
                no_comma("the root image", &spec.root_image)?
            ),
        ];
        if let Some(disk) = &spec.scratch_disk {
            args.push(format!(
                "path={},image_type=raw,serial={SCRATCH_DISK_SERIAL}",
                no_comma("the scratch disk", &disk.path)?
            ));
        }

        let mut helpers = Vec::new();
        let mut shares = Vec::new();
        let mut remove_before_start = vec![api_socket.clone(), vsock_socket.clone()];
        let mut diagnostics = Vec::new();
        if !spec.shares.is_empty() {
            let (sandbox, warning) = virtiofsd_sandbox(facts);
            diagnostics.extend(warning);
            let daemon = virtiofsd.ok_or_else(|| {
                PluginError::failed(
                    "cloud-hypervisor shares directories with virtio-fs, which needs \
                     `virtiofsd` (the Rust daemon) on PATH or in /usr/libexec; install it \
                     (`cargo install virtiofsd` or the `virtiofsd` package)",
                )
            })?;
            args.push("--fs".into());
            for (index, share) in spec.shares.iter().enumerate() {
                let socket = format!("{run}/virtiofs-{index}.sock");
                let mut daemon_args = vec![
                    format!("--socket-path={socket}"),
                    format!("--shared-dir={}", share.host_path),
                    sandbox.to_owned(),
                    "--cache=auto".to_owned(),
                ];
                if share.read_only {
                    daemon_args.push("--readonly".to_owned());
                }
                helpers.push(Helper {
                    name: format!("virtiofsd ({})", share.tag),
                    command: Command {
                        program: daemon.to_owned(),
                        args: daemon_args,
                        ..Command::default()
                    },
                    ready_socket: Some(socket.clone()),
                });
                args.push(format!(
                    "tag={},socket={}",
                    no_comma("a share tag", &share.tag)?,
                    no_comma("the run directory", &socket)?
                ));
                remove_before_start.push(socket);
                shares.push(PlannedShare {
                    tag: share.tag.clone(),
                    host_path: share.host_path.clone(),
                    guest_path: share.guest_path.clone(),
                    read_only: share.read_only,
                    transport: ShareTransport::VirtioFs,
                });
            }
        }
        args.extend([
            "--vsock".into(),
            format!(
                "cid={},socket={}",
                spec.vsock_cid,
                no_comma("the run directory", &vsock_socket)?
            ),
            "--rng".into(),
            "src=/dev/urandom".into(),
            "--serial".into(),
            format!("file={}", no_comma("the run directory", &console_log)?),
            "--console".into(),
            "off".into(),
            "--seccomp".into(),
            spec.hypervisor_sandbox.to_string(),
        ]);

        Ok(BackendPlan {
            hypervisor: Command {
                program: program.to_owned(),
                args,
                ..Command::default()
            },
            helpers,
            console: Console {
                guest_tty: guest_tty.to_owned(),
                log_path: console_log,
            },
            control: ControlEndpoint::VsockUnix {
                socket: vsock_socket,
                port: u32::from(spec.guest_ssh_port),
            },
            kernel_cmdline,
            shares,
            network: NetworkAttachment::None,
            remove_before_start,
            diagnostics,
        })
    }
}

#[cfg(test)]
mod tests {
    use ccvm_plugin_api::testing::{example_facts, example_spec};
    use ccvm_plugin_api::{ErrorClass, ShareSpec};

    use super::*;

    fn kvm_spec() -> VmSpec {
        let mut spec = example_spec();
        spec.acceleration = Acceleration::Kvm;
        spec.shares[1] = ShareSpec {
            host_path: "/home/alice/src/proj".to_owned(),
            guest_path: "/home/alice/src/proj".to_owned(),
            ..spec.shares[1].clone()
        };
        spec
    }

    #[test]
    fn tcg_is_refused_naming_kvm() {
        let error = CloudHypervisor
            .plan(&example_spec(), &example_facts(&[PROGRAM, "virtiofsd"]))
            .expect_err("tcg");
        assert_eq!(error.class, ErrorClass::Invalid);
        assert!(error.message.contains("needs KVM"), "{}", error.message);
    }

    #[test]
    fn ninep_is_refused() {
        let spec = VmSpec {
            share_transport: Some(ShareTransport::NineP),
            ..kvm_spec()
        };
        let error = CloudHypervisor
            .plan(&spec, &example_facts(&[PROGRAM, "virtiofsd"]))
            .expect_err("9p");
        assert!(error.message.contains("no 9p"), "{}", error.message);
    }

    #[test]
    fn kvm_plan_has_serial_file_vsock_raw_disk_and_one_virtiofsd_per_share() {
        let plan = CloudHypervisor
            .plan(&kvm_spec(), &example_facts(&[PROGRAM, "virtiofsd"]))
            .expect("plan");
        let args = plan.hypervisor.args.join(" ");
        assert!(
            args.contains("--serial file=/run/user/1000/ccvm/run-1/console.log --console off"),
            "{args}"
        );
        assert!(args.contains("image_type=raw"), "{args}");
        assert!(args.contains("--memory size=4096M,shared=on"), "{args}");
        assert!(
            args.contains("--vsock cid=3,socket=/run/user/1000/ccvm/run-1/vsock.sock"),
            "{args}"
        );
        assert_eq!(plan.helpers.len(), 2);
        assert!(
            plan.helpers
                .iter()
                .all(|h| h.command.program == "/usr/bin/virtiofsd"
                    && h.command.args.contains(&"--sandbox=namespace".to_owned()))
        );
        let mut facts = example_facts(&[PROGRAM, "virtiofsd"]);
        facts.user_namespaces = None;
        let fallback = CloudHypervisor.plan(&kvm_spec(), &facts).expect("plan");
        assert!(
            fallback.helpers[0]
                .command
                .args
                .contains(&"--sandbox=none".to_owned())
                && fallback.diagnostics[0].message.contains("did not check"),
            "{fallback:?}"
        );
        assert!(matches!(
            plan.control,
            ControlEndpoint::VsockUnix { port: 22, .. }
        ));
        assert_eq!(plan.network, NetworkAttachment::None);
    }

    #[test]
    fn comma_in_project_path_is_refused() {
        let mut spec = kvm_spec();
        spec.run_dir = "/tmp/a,b".to_owned();
        let error = CloudHypervisor
            .plan(&spec, &example_facts(&[PROGRAM, "virtiofsd"]))
            .expect_err("comma");
        assert!(error.message.contains("/tmp/a,b"), "{}", error.message);
    }

    #[test]
    fn aarch64_host_gets_ttyama0() {
        let mut facts = example_facts(&[PROGRAM, "virtiofsd"]);
        facts.host_arch = "aarch64".to_owned();
        let plan = CloudHypervisor.plan(&kvm_spec(), &facts).expect("plan");
        assert_eq!(plan.console.guest_tty, "ttyAMA0");
    }
}
