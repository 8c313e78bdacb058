//! The `virt` backend: an aarch64 guest on QEMU's `virt` machine, virtio-pci, `ttyAMA0`.
//!
//! Runs with KVM on an aarch64 host, or anywhere under TCG (slowly). Pure: never runs
//! anything.
#![forbid(unsafe_code)]

use ccvm_plugin_api::{
    Backend, BackendPlan, Capabilities, HostFacts, PluginError, Requirements, VmSpec,
};
use ccvm_qemu_common::{Flavor, Transport};

/// QEMU virt (aarch64).
#[derive(Debug, Default)]
pub struct Virt;

fn flavor() -> Flavor {
    Flavor {
        program: "qemu-system-aarch64",
        package: "qemu-system-arm",
        machine: "virt",
        machine_props: vec![("gic-version", "max".to_owned())],
        transport: Transport::Pci,
        guest_arch: "aarch64",
        guest_tty: "ttyAMA0",
        kernel_cmdline: Vec::new(),
    }
}

impl Backend for Virt {
    const NAME: &'static str = "virt";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "QEMU virt (aarch64 guest, virtio-pci)";

    fn capabilities(&self) -> Capabilities {
        ccvm_qemu_common::capabilities(&flavor())
    }

    fn requirements(&self, spec: &VmSpec) -> Result<Requirements, PluginError> {
        Ok(ccvm_qemu_common::requirements(&flavor(), spec, false))
    }

    fn plan(&self, spec: &VmSpec, facts: &HostFacts) -> Result<BackendPlan, PluginError> {
        ccvm_qemu_common::plan(&flavor(), spec, facts)
    }
}

#[cfg(test)]
mod tests {
    use ccvm_plugin_api::testing::{example_facts, example_spec};

    use super::*;

    #[test]
    fn plan_runs_aarch64_qemu_with_ttyama0() {
        let plan = Virt
            .plan(&example_spec(), &example_facts(&["qemu-system-aarch64"]))
            .expect("plan");
        assert_eq!(plan.hypervisor.program, "/usr/bin/qemu-system-aarch64");
        let args = plan.hypervisor.args.join(" ");
        assert!(args.contains("-machine virt,gic-version=max"), "{args}");
        assert!(args.contains("console=ttyAMA0"), "{args}");
        assert!(args.contains("-cpu max,sve=off,pauth-impdef=on"), "{args}");
        assert_eq!(Virt.capabilities().guest_arch, "aarch64");
    }
}
