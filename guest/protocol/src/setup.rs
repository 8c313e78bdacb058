//! The steps the guest agent performs as root before sshd starts, as the policies plan them.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::firewall::FirewallRules;

/// A step the guest agent performs as root before sshd starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum SetupStep {
    /// Copy a seed directory into the agent's fresh tmpfs `~/.claude`.
    ClaudeHome { seed_dir: String },
    /// Install a seed file at a guest path; a `guest_path` starting with `~/` is relative to
    /// the agent's home directory.
    InstallFile {
        seed_path: String,
        guest_path: String,
        owner: GuestOwner,
        mode: u32,
    },
    /// Default-deny egress filter (S7.2).
    Firewall(FirewallRules),
    /// Pinned name → address entries for a root-owned `/etc/hosts`.
    HostsPins { pins: Vec<(String, IpAddr)> },
    /// Whether the agent gets passwordless sudo.
    AgentSudo { allowed: bool },
    /// sshd permits exactly one reverse forward, listening at `listen` in the guest; without
    /// this step it permits no forwarding at all (S10.4). ccvm adds it from a policy's
    /// `PolicyPlan::remote_forward` (plugin API), at most one per session.
    SshdPermitListen { listen: String },
    /// An encrypted, ephemeral scratch disk (S9.2): the disk whose serial is
    /// [`crate::paths::SCRATCH_DISK_SERIAL`] gets LUKS2 with a key from the guest's own entropy
    /// (never written anywhere, never sent to the host), ext4, and is mounted at `mount` for
    /// the agent. If any of it fails, the session starts without it and says so.
    ScratchDisk { mount: String, size_gib: u64 },
}

/// Who owns an installed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GuestOwner {
    Root,
    Agent,
}

/// The session header's line about the scratch disk (S5.6): what the host writes when it
/// plans one (`failure: None`), and what the guest puts in its place when setting the disk up
/// failed, so the header only ever describes a `/scratch` that is really mounted.
pub fn scratch_header_line(size_gib: u64, failure: Option<&str>) -> String {
    match failure {
        None => format!(
            "- /scratch is an encrypted {size_gib} GiB scratch disk for large temporary files; \
             its key exists only in this VM's memory, so everything on it is gone when the \
             session ends."
        ),
        Some(why) => format!(
            "- A /scratch disk was asked for but could not be set up ({why}); there is no \
             /scratch, and large temporary files go to RAM (/tmp)."
        ),
    }
}

/// Checks that a forward address is a loopback `host:port` or an absolute socket path made of
/// plain characters, so it can be written into ssh and sshd configuration as it is.
pub fn check_forward_address(address: &str) -> Result<(), String> {
    let plain = !address.is_empty()
        && address
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:[]".contains(c));
    if !plain {
        return Err(format!(
            "`{address}` may only contain letters, digits and . _ - / : [ ]"
        ));
    }
    if address.starts_with('/') {
        return Ok(());
    }
    let port = address.rsplit_once(':').map(|(_, port)| port);
    match port.and_then(|p| p.parse::<u16>().ok()) {
        Some(p) if p > 0 => Ok(()),
        _ => Err(format!(
            "`{address}` is neither an absolute socket path nor HOST:PORT"
        )),
    }
}
