//! Reading what the host says about KVM (S4): the device node, the CPU's virtualization
//! flags, a loaded software-only KVM module. The decision is `plan::accel`'s.

use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

pub const KVM_DEVICE: &str = "/dev/kvm";

/// Kernel modules that provide a `/dev/kvm` that cannot run stock guest kernels.
const SOFTWARE_KVM_MODULES: [&str; 1] = ["kvm_pvm"];

/// State of the KVM device node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    Missing,
    /// Exists but cannot be opened read-write; names the owning group.
    NotWritable {
        group: Option<String>,
    },
    Usable,
}

/// What the host says about KVM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmProbe {
    pub device: Device,
    /// `Some(has vmx/svm)` when `/proc/cpuinfo` lists x86 CPU flags; `None` otherwise.
    pub hardware_virt: Option<bool>,
    /// A loaded software-only KVM module, if any.
    pub software_module: Option<String>,
}

/// Reads the host.
pub fn probe() -> KvmProbe {
    let device = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(KVM_DEVICE)
    {
        Ok(_) => Device::Usable,
        Err(e) if e.kind() == ErrorKind::NotFound => Device::Missing,
        Err(_) => Device::NotWritable {
            group: std::fs::metadata(KVM_DEVICE).ok().and_then(|m| {
                nix::unistd::Group::from_gid(m.gid().into())
                    .ok()
                    .flatten()
                    .map(|g| g.name)
            }),
        },
    };
    let hardware_virt = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|cpuinfo| {
            let flags: Vec<&str> = cpuinfo.lines().filter(|l| l.starts_with("flags")).collect();
            (!flags.is_empty()).then(|| {
                flags
                    .iter()
                    .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
            })
        });
    let software_module = SOFTWARE_KVM_MODULES
        .iter()
        .find(|m| Path::new("/sys/module").join(m).exists())
        .map(|m| (*m).to_owned());
    KvmProbe {
        device,
        hardware_virt,
        software_module,
    }
}
