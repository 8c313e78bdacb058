//! What a backend attached that the guest must know to use it: the shares and the network.

use serde::{Deserialize, Serialize};

/// How a host directory reaches the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ShareTransport {
    #[serde(rename = "9p")]
    NineP,
    #[serde(rename = "virtio-fs")]
    VirtioFs,
}

impl std::fmt::Display for ShareTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ShareTransport::NineP => "9p",
            ShareTransport::VirtioFs => "virtio-fs",
        })
    }
}

/// A share as the backend attached it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedShare {
    pub tag: String,
    pub host_path: String,
    pub guest_path: String,
    pub read_only: bool,
    pub transport: ShareTransport,
}

/// The guest's network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum NetworkAttachment {
    /// QEMU user-mode networking (slirp): NAT, gateway `10.0.2.2` = host loopback.
    UserMode {
        guest_cidr: String,
        gateway: String,
        dns: String,
        /// The guest's own address with prefix (`10.0.2.15/24`).
        #[serde(default)]
        guest_address: String,
    },
    /// No network device.
    None,
}
