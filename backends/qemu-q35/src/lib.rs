//! The `q35` backend: QEMU's PC machine (x86_64), virtio-pci devices, `ttyS0`.
//!
//! Slower to boot than microvm but the most conventional machine, for kernels or hosts
//! where microvm misbehaves. Pure: never runs anything.
#![forbid(unsafe_code)]

use ccvm_plugin_api::{
    Backend, BackendPlan, Capabilities, HostFacts, PluginError, Requirements, VmSpec,
};
use ccvm_qemu_common::{Flavor, Transport};

/// QEMU q35.
#[derive(Debug, Default)]
pub struct Q35;

fn flavor() -> Flavor {
    Flavor {
        program: "qemu-system-x86_64",
        package: "qemu-system-x86",
        machine: "q35",
        machine_props: vec![("vmport", "off".to_owned())],
        transport: Transport::Pci,
        guest_arch: "x86_64",
        guest_tty: "ttyS0",
        kernel_cmdline: Vec::new(),
    }
}

impl Backend for Q35 {
    const NAME: &'static str = "q35";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "QEMU q35 (x86_64, virtio-pci)";

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
    fn plan_uses_pci_devices_and_ttys0_without_tsc_hint() {
        let plan = Q35
            .plan(&example_spec(), &example_facts(&["qemu-system-x86_64"]))
            .expect("plan");
        let args = plan.hypervisor.args.join(" ");
        assert!(args.contains("-machine q35,vmport=off"), "{args}");
        assert!(args.contains("virtio-blk-pci,drive=root"), "{args}");
        assert!(
            args.contains("virtio-9p-pci,fsdev=fs1,mount_tag=ccvm-project"),
            "{args}"
        );
        assert!(!args.contains("-device,"), "{args}");
        assert!(!args.contains("tsc_early_khz"), "{args}");
        assert!(plan.kernel_cmdline.contains(&"console=ttyS0".to_owned()));
    }
}
