//! The planner shared by the QEMU backends.

use ccvm_plugin_api::guest::cmdline::{GuestParams, VirtioTransport};
use ccvm_plugin_api::guest::paths::{ROOT_DISK_SERIAL, SCRATCH_DISK_SERIAL};
use ccvm_plugin_api::{
    Acceleration, BackendPlan, Capabilities, Command, Console, ControlEndpoint, Diagnostic, Helper,
    HostFacts, NamespaceFact, NetworkAttachment, PlannedShare, PluginError, Requirements,
    ShareTransport, VmSpec,
};

use crate::argv::{Argv, Opts};

/// How virtio devices are attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// virtio-mmio (`*-device`), as on QEMU microvm.
    Mmio,
    /// virtio-pci (`*-pci`).
    Pci,
}

impl Transport {
    fn device(self, base: &str) -> String {
        match self {
            Transport::Mmio => format!("{base}-device"),
            Transport::Pci => format!("{base}-pci"),
        }
    }

    fn virtio(self) -> VirtioTransport {
        match self {
            Transport::Mmio => VirtioTransport::Mmio,
            Transport::Pci => VirtioTransport::Pci,
        }
    }
}

/// Everything that differs between the QEMU backends.
#[derive(Debug, Clone)]
pub struct Flavor {
    /// Program name looked up on PATH (`qemu-system-x86_64`).
    pub program: &'static str,
    /// Debian/Ubuntu package that provides `program`, for the error message.
    pub package: &'static str,
    /// `-machine` type.
    pub machine: &'static str,
    /// Extra `-machine` properties.
    pub machine_props: Vec<(&'static str, String)>,
    pub transport: Transport,
    /// Guest architecture (`x86_64`, `aarch64`).
    pub guest_arch: &'static str,
    /// Console device inside the guest (`ttyS0`, `ttyAMA0`).
    pub guest_tty: &'static str,
    /// The backend's own kernel command line words (besides `console=`).
    pub kernel_cmdline: Vec<String>,
}

/// Candidate virtio-fs daemons, most preferred first: the Rust virtiofsd, which runs
/// unprivileged (the C one shipped with QEMU 7 needs root).
pub fn virtiofsd_candidates() -> Vec<String> {
    vec!["virtiofsd".to_owned(), "/usr/libexec/virtiofsd".to_owned()]
}

/// virtiofsd's `--sandbox`: its own user, mount, pid and network namespaces, with the shared
/// directory as its root, where the host lets this user create them; else none, with a
/// warning that says why (the daemon then sees the whole host file system as the user does).
pub fn virtiofsd_sandbox(facts: &HostFacts) -> (&'static str, Option<Diagnostic>) {
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

/// What every QEMU backend can do.
pub fn capabilities(flavor: &Flavor) -> Capabilities {
    Capabilities {
        guest_arch: flavor.guest_arch.to_owned(),
        accelerations: vec![Acceleration::Kvm, Acceleration::Tcg],
        // 9p first: no helper process, works unprivileged, exports read-only.
        share_transports: vec![ShareTransport::NineP, ShareTransport::VirtioFs],
        guest_network: true,
        scratch_disk: true,
        lock_guest_memory: true,
        hypervisor_sandbox: true,
    }
}

fn transport_for(spec: &VmSpec) -> ShareTransport {
    spec.share_transport.unwrap_or(ShareTransport::NineP)
}

/// What the host must look up for `spec`.
pub fn requirements(flavor: &Flavor, spec: &VmSpec, needs_tsc: bool) -> Requirements {
    let mut programs = vec![flavor.program.to_owned()];
    if transport_for(spec) == ShareTransport::VirtioFs && !spec.shares.is_empty() {
        programs.extend(virtiofsd_candidates());
    }
    let virtio_fs = transport_for(spec) == ShareTransport::VirtioFs && !spec.shares.is_empty();
    Requirements {
        programs,
        tsc_khz: needs_tsc,
        user_namespaces: virtio_fs,
        ..Requirements::default()
    }
}

fn find_virtiofsd(facts: &HostFacts) -> Option<&str> {
    virtiofsd_candidates()
        .iter()
        .find_map(|name| facts.program(name))
}

/// The complete launch for `spec` on this flavour.
pub fn plan(flavor: &Flavor, spec: &VmSpec, facts: &HostFacts) -> Result<BackendPlan, PluginError> {
    let program = facts.program(flavor.program).ok_or_else(|| {
        PluginError::failed(format!(
            "`{}` was not found on PATH; install it (Debian/Ubuntu package `{}`)",
            flavor.program, flavor.package
        ))
    })?;
    let transport = flavor.transport;
    let share_transport = transport_for(spec);
    let virtio_fs = share_transport == ShareTransport::VirtioFs && !spec.shares.is_empty();
    let virtiofsd = if virtio_fs {
        Some(find_virtiofsd(facts).ok_or_else(|| {
            PluginError::failed(
                "share transport virtio-fs needs `virtiofsd` (the Rust daemon) on PATH or in \
                 /usr/libexec; install it (`cargo install virtiofsd` or the `virtiofsd` \
                 package) or set share_transport = \"9p\"",
            )
        })?)
    } else {
        None
    };

    let run = spec.run_dir.trim_end_matches('/');
    let console_log = format!("{run}/console.log");
    let mut argv = Argv::new();

    let mut machine = Opts::new(flavor.machine);
    for (key, value) in &flavor.machine_props {
        machine = machine.set(key, value);
    }
    if virtio_fs {
        // vhost-user devices need guest RAM the daemon can map.
        machine = machine.set("memory-backend", "mem");
        argv.opts(
            "-object",
            Opts::new("memory-backend-memfd")
                .set("id", "mem")
                .set("size", format!("{}M", spec.memory_mib))
                .set("share", "on"),
        );
        if transport == Transport::Mmio {
            // Without this the mount succeeds and then all I/O hangs (MACHINE.md).
            argv.value("-global", "virtio-mmio.force-legacy=false");
        }
    }
    argv.opts("-machine", machine);
    argv.value("-accel", spec.acceleration);
    argv.value(
        "-cpu",
        match spec.acceleration {
            Acceleration::Kvm => "host",
            // TCG emulates `rep movsb` a byte at a time; without ERMS/FSRM the guest kernel
            // copies (page cache, squashfs, user copies) with wider moves, which TCG runs far
            // faster (bench/RESULTS.md).
            Acceleration::Tcg if flavor.guest_arch == "x86_64" => "max,erms=off,fsrm=off",
            // With SVE (QEMU 7.2's `max` has it) the real arm64 Claude Code crashes with a
            // segfault as its interface starts; pointer authentication with QEMU's own
            // algorithm instead of the architected QARMA, which TCG computes slowly. Still
            // `max` with features off (S4.3), as for x86_64.
            Acceleration::Tcg if flavor.guest_arch == "aarch64" => "max,sve=off,pauth-impdef=on",
            Acceleration::Tcg => "max",
        },
    );
    argv.value("-m", format!("{}M", spec.memory_mib));
    argv.value("-smp", spec.cpus);
    argv.flag("-nodefaults")
        .flag("-no-user-config")
        .flag("-no-reboot");
    argv.value("-display", "none");
    argv.opts(
        "-chardev",
        Opts::new("file")
            .set("id", "console")
            .set("path", &console_log),
    );
    argv.value("-serial", "chardev:console");
    if spec.hypervisor_sandbox {
        argv.opts(
            "-sandbox",
            Opts::new("on")
                .set("obsolete", "deny")
                .set("elevateprivileges", "deny")
                .set("spawn", "deny")
                .set("resourcecontrol", "deny"),
        );
    }
    if spec.lock_guest_memory {
        argv.opts("-overcommit", Opts::new("mem-lock=on"));
    }

    let mut kernel_cmdline = vec![format!("console={}", flavor.guest_tty)];
    kernel_cmdline.extend(
        GuestParams {
            virtio: transport.virtio(),
            shares: share_transport,
            vsock_port: None,
        }
        .words(),
    );
    kernel_cmdline.extend(flavor.kernel_cmdline.iter().cloned());
    let append: Vec<&str> = spec
        .kernel_cmdline
        .iter()
        .chain(kernel_cmdline.iter())
        .map(String::as_str)
        .collect();
    argv.value("-kernel", &spec.kernel);
    argv.value("-initrd", &spec.initrd);
    argv.value("-append", append.join(" "));

    argv.opts(
        "-drive",
        Opts::new("if=none")
            .set("id", "root")
            .set("format", "raw")
            .set("read-only", "on")
            .set("file", &spec.root_image),
    );
    argv.opts(
        "-device",
        Opts::new(&transport.device("virtio-blk"))
            .set("drive", "root")
            .set("serial", ROOT_DISK_SERIAL),
    );
    if let Some(disk) = &spec.scratch_disk {
        argv.opts(
            "-drive",
            Opts::new("if=none")
                .set("id", "scratch")
                .set("format", "raw")
                .set("discard", "unmap")
                .set("file", &disk.path),
        );
        argv.opts(
            "-device",
            Opts::new(&transport.device("virtio-blk"))
                .set("drive", "scratch")
                .set("serial", SCRATCH_DISK_SERIAL),
        );
    }

    argv.opts(
        "-object",
        Opts::new("rng-random")
            .set("id", "rng")
            .set("filename", "/dev/urandom"),
    );
    argv.opts(
        "-device",
        Opts::new(&transport.device("virtio-rng")).set("rng", "rng"),
    );

    argv.opts(
        "-netdev",
        Opts::new("user").set("id", "net").set(
            "hostfwd",
            format!(
                "tcp:127.0.0.1:{}-:{}",
                spec.host_ssh_port, spec.guest_ssh_port
            ),
        ),
    );
    argv.opts(
        "-device",
        Opts::new(&transport.device("virtio-net")).set("netdev", "net"),
    );

    let mut helpers = Vec::new();
    let mut remove_before_start = Vec::new();
    let mut shares = Vec::new();
    let mut diagnostics = Vec::new();
    let (sandbox, warning) = virtiofsd_sandbox(facts);
    if virtio_fs {
        diagnostics.extend(warning);
    }
    for (index, share) in spec.shares.iter().enumerate() {
        match (share_transport, virtiofsd) {
            (ShareTransport::VirtioFs, Some(daemon)) => {
                let socket = format!("{run}/virtiofs-{index}.sock");
                let mut args = vec![
                    format!("--socket-path={socket}"),
                    format!("--shared-dir={}", share.host_path),
                    sandbox.to_owned(),
                    "--cache=auto".to_owned(),
                ];
                if share.read_only {
                    args.push("--readonly".to_owned());
                }
                helpers.push(Helper {
                    name: format!("virtiofsd ({})", share.tag),
                    command: Command {
                        program: daemon.to_owned(),
                        args,
                        ..Command::default()
                    },
                    ready_socket: Some(socket.clone()),
                });
                remove_before_start.push(socket.clone());
                argv.opts(
                    "-chardev",
                    Opts::new("socket")
                        .set("id", format!("vfs{index}"))
                        .set("path", &socket),
                );
                argv.opts(
                    "-device",
                    Opts::new(&transport.device("vhost-user-fs"))
                        .set("chardev", format!("vfs{index}"))
                        .set("tag", &share.tag),
                );
            }
            _ => {
                let mut fsdev = Opts::new("local")
                    .set("id", format!("fs{index}"))
                    .set("path", &share.host_path)
                    // `none`: files are created as the user running QEMU (S5.2).
                    .set("security_model", "none")
                    .set("multidevs", "remap");
                if share.read_only {
                    fsdev = fsdev.set("readonly", "on");
                }
                argv.opts("-fsdev", fsdev);
                argv.opts(
                    "-device",
                    Opts::new(&transport.device("virtio-9p"))
                        .set("fsdev", format!("fs{index}"))
                        .set("mount_tag", &share.tag),
                );
            }
        }
        shares.push(PlannedShare {
            tag: share.tag.clone(),
            host_path: share.host_path.clone(),
            guest_path: share.guest_path.clone(),
            read_only: share.read_only,
            transport: share_transport,
        });
    }

    Ok(BackendPlan {
        hypervisor: Command {
            program: program.to_owned(),
            args: argv.into_vec(),
            ..Command::default()
        },
        helpers,
        console: Console {
            guest_tty: flavor.guest_tty.to_owned(),
            log_path: console_log,
        },
        control: ControlEndpoint::TcpForward {
            host: "127.0.0.1".to_owned(),
            port: spec.host_ssh_port,
        },
        kernel_cmdline,
        shares,
        network: NetworkAttachment::UserMode {
            guest_cidr: "10.0.2.0/24".to_owned(),
            gateway: "10.0.2.2".to_owned(),
            dns: "10.0.2.3".to_owned(),
            guest_address: "10.0.2.15/24".to_owned(),
        },
        remove_before_start,
        diagnostics,
    })
}
