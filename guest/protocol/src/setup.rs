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
}

/// Who owns an installed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GuestOwner {
    Root,
    Agent,
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
