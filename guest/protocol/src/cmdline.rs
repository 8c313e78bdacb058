//! The `ccvm.*` words of the kernel command line: what a backend tells the guest agent
//! about its machine before the seed can be read (the seed itself arrives over the share
//! transport named here).

use std::fmt;

use crate::machine::ShareTransport;

/// How virtio devices are attached: memory-mapped (`microvm`, `virt`) or PCI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtioTransport {
    Mmio,
    Pci,
}

impl VirtioTransport {
    fn word(self) -> &'static str {
        match self {
            VirtioTransport::Mmio => "mmio",
            VirtioTransport::Pci => "pci",
        }
    }

    /// The kernel module that drives this transport.
    pub fn module(self) -> &'static str {
        match self {
            VirtioTransport::Mmio => "virtio_mmio",
            VirtioTransport::Pci => "virtio_pci",
        }
    }
}

/// What the guest agent reads from `/proc/cmdline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestParams {
    pub virtio: VirtioTransport,
    pub shares: ShareTransport,
    /// The vsock port the host's ssh reaches sshd on, for backends without a network
    /// (cloud-hypervisor); `None` = sshd listens on the network only.
    pub vsock_port: Option<u32>,
}

const VIRTIO_KEY: &str = "ccvm.virtio=";
const SHARES_KEY: &str = "ccvm.shares=";
const VSOCK_PORT_KEY: &str = "ccvm.vsock_port=";

impl GuestParams {
    /// The words a backend appends to the kernel command line.
    pub fn words(&self) -> Vec<String> {
        let mut words = vec![
            format!("{VIRTIO_KEY}{}", self.virtio.word()),
            format!("{SHARES_KEY}{}", self.shares),
        ];
        words.extend(
            self.vsock_port
                .map(|port| format!("{VSOCK_PORT_KEY}{port}")),
        );
        words
    }

    /// Reads them back; a missing or unknown word keeps the default (PCI, 9p).
    pub fn parse(cmdline: &str) -> GuestParams {
        let mut params = GuestParams {
            virtio: VirtioTransport::Pci,
            shares: ShareTransport::NineP,
            vsock_port: None,
        };
        for word in cmdline.split_whitespace() {
            if let Some(value) = word.strip_prefix(VIRTIO_KEY) {
                params.virtio = match value {
                    "mmio" => VirtioTransport::Mmio,
                    _ => VirtioTransport::Pci,
                };
            } else if let Some(value) = word.strip_prefix(SHARES_KEY) {
                params.shares = match value {
                    "virtio-fs" => ShareTransport::VirtioFs,
                    _ => ShareTransport::NineP,
                };
            } else if let Some(value) = word.strip_prefix(VSOCK_PORT_KEY) {
                params.vsock_port = value.parse().ok();
            }
        }
        params
    }
}

impl fmt::Display for GuestParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.words().join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_among_other_kernel_words() {
        let params = GuestParams {
            virtio: VirtioTransport::Mmio,
            shares: ShareTransport::VirtioFs,
            vsock_port: Some(22),
        };
        let cmdline = format!("quiet console=ttyS0 {params} tsc_early_khz=1");
        assert_eq!(GuestParams::parse(&cmdline), params);
        assert_eq!(
            params.words(),
            [
                "ccvm.virtio=mmio",
                "ccvm.shares=virtio-fs",
                "ccvm.vsock_port=22"
            ]
        );
    }

    #[test]
    fn absent_words_mean_pci_and_9p() {
        let params = GuestParams::parse("quiet");
        assert_eq!(params.virtio, VirtioTransport::Pci);
        assert_eq!(params.shares, ShareTransport::NineP);
    }
}
