//! The `microvm` backend: QEMU's minimal x86_64 machine, virtio-mmio devices, `ttyS0`.
//!
//! Fastest QEMU boot. Under TCG the kernel gets `tsc_early_khz=<host TSC kHz>`: microvm has
//! no HPET or PM timer, and without a known TSC frequency about one boot in five hangs in
//! calibration. Pure: never runs anything.
#![forbid(unsafe_code)]

use ccvm_plugin_api::{
    Acceleration, Backend, BackendPlan, Capabilities, HostFacts, PluginError, Requirements, VmSpec,
};
use ccvm_qemu_common::{Flavor, Transport};

/// QEMU microvm.
#[derive(Debug, Default)]
pub struct Microvm;

/// `tsc_khz`: the host TSC frequency to hand the kernel (TCG only).
fn flavor(tsc_khz: Option<u64>) -> Flavor {
    let mut kernel_cmdline = vec!["reboot=t".to_owned()];
    if let Some(khz) = tsc_khz {
        kernel_cmdline.push(format!("tsc_early_khz={khz}"));
    }
    Flavor {
        program: "qemu-system-x86_64",
        package: "qemu-system-x86",
        machine: "microvm",
        machine_props: vec![
            ("x-option-roms", "off".to_owned()),
            ("isa-serial", "on".to_owned()),
            ("rtc", "on".to_owned()),
        ],
        transport: Transport::Mmio,
        guest_arch: "x86_64",
        guest_tty: "ttyS0",
        kernel_cmdline,
    }
}

impl Backend for Microvm {
    const NAME: &'static str = "microvm";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "QEMU microvm (x86_64, virtio-mmio, fastest boot)";

    fn capabilities(&self) -> Capabilities {
        ccvm_qemu_common::capabilities(&flavor(None))
    }

    fn requirements(&self, spec: &VmSpec) -> Result<Requirements, PluginError> {
        let needs_tsc = spec.acceleration == Acceleration::Tcg;
        Ok(ccvm_qemu_common::requirements(
            &flavor(None),
            spec,
            needs_tsc,
        ))
    }

    fn plan(&self, spec: &VmSpec, facts: &HostFacts) -> Result<BackendPlan, PluginError> {
        let tsc_khz = match spec.acceleration {
            Acceleration::Tcg => facts.tsc_khz,
            Acceleration::Kvm => None,
        };
        ccvm_qemu_common::plan(&flavor(tsc_khz), spec, facts)
    }
}

#[cfg(test)]
mod tests {
    use ccvm_plugin_api::testing::{example_facts, example_spec};
    use ccvm_plugin_api::{ControlEndpoint, ShareTransport};

    use super::*;

    fn argv_after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn tcg_plan_uses_mmio_ttys0_and_tsc_khz() {
        let spec = example_spec();
        let plan = Microvm
            .plan(&spec, &example_facts(&["qemu-system-x86_64"]))
            .expect("plan");
        let args = &plan.hypervisor.args;
        assert_eq!(plan.hypervisor.program, "/usr/bin/qemu-system-x86_64");
        assert!(argv_after(args, "-machine")[0].starts_with("microvm,"));
        assert_eq!(argv_after(args, "-cpu"), ["max,erms=off,fsrm=off"]);
        assert_eq!(argv_after(args, "-accel"), ["tcg"]);
        let append = argv_after(args, "-append")[0];
        assert!(append.contains("console=ttyS0"), "{append}");
        assert!(append.contains("tsc_early_khz=2095076"), "{append}");
        assert!(append.starts_with("panic=-1 quiet "), "{append}");
        let devices = argv_after(args, "-device");
        assert!(
            devices.contains(&"virtio-blk-device,drive=root,serial=ccvm-root"),
            "{devices:?}"
        );
        assert!(devices.iter().all(|d| !d.contains("-pci")), "{devices:?}");
        assert_eq!(plan.console.guest_tty, "ttyS0");
    }

    #[test]
    fn kvm_plan_uses_cpu_host_without_tsc_hint() {
        let spec = VmSpec {
            acceleration: Acceleration::Kvm,
            ..example_spec()
        };
        let plan = Microvm
            .plan(&spec, &example_facts(&["qemu-system-x86_64"]))
            .expect("plan");
        assert_eq!(argv_after(&plan.hypervisor.args, "-cpu"), ["host"]);
        assert!(
            !plan
                .kernel_cmdline
                .iter()
                .any(|w| w.starts_with("tsc_early_khz"))
        );
    }

    #[test]
    fn project_path_with_comma_is_escaped_in_fsdev() {
        let plan = Microvm
            .plan(&example_spec(), &example_facts(&["qemu-system-x86_64"]))
            .expect("plan");
        let fsdevs = argv_after(&plan.hypervisor.args, "-fsdev");
        assert!(
            fsdevs
                .iter()
                .any(|f| f.contains("path=/home/alice/src/my,,project,")),
            "{fsdevs:?}"
        );
        assert!(
            fsdevs[0].ends_with(",readonly=on"),
            "seed is read-only: {fsdevs:?}"
        );
        assert_eq!(
            plan.control,
            ControlEndpoint::TcpForward {
                host: "127.0.0.1".to_owned(),
                port: 40022
            }
        );
    }

    #[test]
    fn virtio_fs_adds_memfd_backend_and_modern_mmio() {
        let spec = VmSpec {
            share_transport: Some(ShareTransport::VirtioFs),
            ..example_spec()
        };
        let plan = Microvm
            .plan(&spec, &example_facts(&["qemu-system-x86_64", "virtiofsd"]))
            .expect("plan");
        let args = &plan.hypervisor.args;
        assert!(argv_after(args, "-machine")[0].contains("memory-backend=mem"));
        assert_eq!(
            argv_after(args, "-global"),
            ["virtio-mmio.force-legacy=false"]
        );
        assert_eq!(plan.helpers.len(), 2);
        assert!(
            plan.helpers[0]
                .command
                .args
                .contains(&"--readonly".to_owned())
        );
        assert!(
            !plan.helpers[1]
                .command
                .args
                .contains(&"--readonly".to_owned())
        );
    }

    /// virtiofsd runs in its namespace sandbox when the host can create the namespaces, and
    /// says why when it falls back to none.
    #[test]
    fn virtiofsd_is_sandboxed_in_namespaces_when_the_host_allows_it() {
        let spec = VmSpec {
            share_transport: Some(ShareTransport::VirtioFs),
            ..example_spec()
        };
        let requirements = Microvm.requirements(&spec).expect("requirements");
        assert!(requirements.user_namespaces);
        let mut facts = example_facts(&["qemu-system-x86_64", "virtiofsd"]);
        let plan = Microvm.plan(&spec, &facts).expect("plan");
        assert!(
            plan.helpers
                .iter()
                .all(|h| h.command.args.contains(&"--sandbox=namespace".to_owned())),
            "{:?}",
            plan.helpers
        );
        assert!(plan.diagnostics.is_empty(), "{:?}", plan.diagnostics);

        facts.user_namespaces = Some(ccvm_plugin_api::NamespaceFact::Unusable {
            reason: "user.max_user_namespaces is 0".to_owned(),
        });
        let plan = Microvm.plan(&spec, &facts).expect("plan");
        assert!(
            plan.helpers
                .iter()
                .all(|h| h.command.args.contains(&"--sandbox=none".to_owned()))
        );
        assert_eq!(plan.diagnostics.len(), 1, "{:?}", plan.diagnostics);
        assert!(
            plan.diagnostics[0]
                .message
                .contains("--sandbox=none): user.max_user_namespaces is 0"),
            "{}",
            plan.diagnostics[0].message
        );
        let nine_p = Microvm.requirements(&example_spec()).expect("requirements");
        assert!(!nine_p.user_namespaces, "9p needs no virtiofsd");
    }

    #[test]
    fn missing_qemu_names_the_package() {
        let error = Microvm
            .plan(&example_spec(), &example_facts(&[]))
            .expect_err("no qemu");
        assert!(
            error.message.contains("qemu-system-x86"),
            "{}",
            error.message
        );
    }
}
