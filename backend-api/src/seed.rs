//! The seed: the per-run, read-only bundle the host hands the guest.
//!
//! The host writes `seed.json` (a [`SeedManifest`]) and the files it names into the seed
//! directory; the guest agent reads them before sshd starts. Layout, relative to the seed
//! root: `seed.json`, [`ARGV_FILE`], [`HOST_KEY_FILE`], [`AUTHORIZED_KEYS_FILE`],
//! [`CONTEXT_FILE`], and whatever the policies staged (`claude/…`, `git/config`, …).

use serde::{Deserialize, Serialize};

use crate::{NetworkAttachment, PlannedShare, SetupStep};

/// The seed share's mount tag.
pub const SEED_TAG: &str = "ccvm-seed";
/// Where the guest mounts the seed (read-only, unmounted again before sshd starts).
pub const SEED_GUEST_DIR: &str = "/run/ccvm/seed";
/// Current seed format version; the guest refuses a seed it does not know.
pub const SEED_VERSION: u32 = 1;
/// The manifest file.
pub const MANIFEST_FILE: &str = "seed.json";
/// NUL-separated argv for claude or the shell (S1.2).
pub const ARGV_FILE: &str = "argv";
/// The per-run sshd host private key (OpenSSH format).
pub const HOST_KEY_FILE: &str = "ssh/host_ed25519";
/// The per-run client public key, the only key sshd accepts.
pub const AUTHORIZED_KEYS_FILE: &str = "ssh/authorized_keys";
/// Appended to the guest `~/.claude/CLAUDE.md` (S5.6).
pub const CONTEXT_FILE: &str = "ccvm-session.md";
/// Printed on the console once sshd listens.
pub const READY_MARKER: &str = "ccvm-guest: ready";
/// Printed on the console as soon as the guest agent runs as init (then the kernel's uptime).
pub const INIT_MARKER: &str = "ccvm-guest: init started";
/// Printed on the console when the guest is set up and sshd is being started.
pub const SSHD_MARKER: &str = "ccvm-guest: starting sshd";

/// What runs at the end of the ssh session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionMode {
    Claude,
    Shell,
}

/// The agent's account: the host user's name and ids, so files it creates in the project
/// are owned by the host user (S5.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Same path as on the host, so absolute paths in configs line up.
    pub home: String,
}

/// `seed.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedManifest {
    pub version: u32,
    pub user: GuestUser,
    pub project_dir: String,
    pub mode: SessionMode,
    /// Directories to mount besides the seed itself, as the backend attached them, in order.
    pub shares: Vec<PlannedShare>,
    /// Project read-write (edits reach the host) or read-only + tmpfs overlay.
    pub writable_cwd: bool,
    /// The one environment variable sshd accepts from the client.
    pub api_key_variable: String,
    pub guest_ssh_port: u16,
    pub network: NetworkAttachment,
    pub setup_steps: Vec<SetupStep>,
}
