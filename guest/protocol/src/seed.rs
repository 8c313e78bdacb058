//! The seed: the per-run, read-only bundle the host hands the guest.
//!
//! The host writes `seed.json` (a [`SeedManifest`]) and the files it names into the seed
//! directory; the guest agent reads them before sshd starts. Layout, relative to the seed
//! root: `seed.json`, [`ARGV_FILE`], [`HOST_KEY_FILE`], [`AUTHORIZED_KEYS_FILE`],
//! [`CONTEXT_FILE`], and whatever the policies staged (`claude/…`, `git/config`, …).

use serde::{Deserialize, Serialize};

use crate::machine::{NetworkAttachment, PlannedShare};
use crate::setup::SetupStep;

/// Current seed format version; the guest refuses a seed it does not know, and says that the
/// image (which carries the guest agent) is older or newer than ccvm.
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

/// Why a seed manifest cannot be used.
#[derive(Debug)]
pub enum SeedError {
    /// Written by a ccvm whose seed format this guest agent does not speak.
    Version { found: u32 },
    /// Not a manifest at all.
    Malformed(serde_json::Error),
}

impl std::fmt::Display for SeedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SeedError::Version { found } => write!(
                f,
                "the seed has format version {found}, this guest agent speaks {SEED_VERSION}: \
                 the image is older or newer than ccvm; rebuild it with `ccvm --ccvm-image build`"
            ),
            SeedError::Malformed(e) => write!(f, "the seed manifest is malformed: {e}"),
        }
    }
}

impl std::error::Error for SeedError {}

impl SeedManifest {
    /// Parses `seed.json`, looking at its version first: a manifest from another ccvm
    /// version is reported as such (rebuild the image), not as a parse error of whatever
    /// field changed.
    pub fn parse(bytes: &[u8]) -> Result<SeedManifest, SeedError> {
        #[derive(Deserialize)]
        struct Header {
            version: u32,
        }
        let header: Header = serde_json::from_slice(bytes).map_err(SeedError::Malformed)?;
        if header.version != SEED_VERSION {
            return Err(SeedError::Version {
                found: header.version,
            });
        }
        serde_json::from_slice(bytes).map_err(SeedError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_version_says_rebuild_the_image_even_when_its_fields_differ() {
        let future = br#"{"version": 2, "user": "a new shape"}"#;
        let error = SeedManifest::parse(future).expect_err("version 2");
        assert!(matches!(error, SeedError::Version { found: 2 }), "{error}");
        assert!(error.to_string().contains("rebuild it"), "{error}");
        let error = SeedManifest::parse(b"{\"version\": 1}").expect_err("fields missing");
        assert!(matches!(error, SeedError::Malformed(_)), "{error}");
    }
}
