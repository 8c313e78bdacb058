//! Paths inside the guest that both sides name.

/// The seed share's mount tag.
pub const SEED_TAG: &str = "ccvm-seed";
/// Mount tag of the project share.
pub const PROJECT_TAG: &str = "ccvm-project";
/// Mount tag of the optional `~/.claude/projects` share.
pub const PROJECTS_TAG: &str = "ccvm-claude-projects";
/// Where the guest mounts the seed (read-only, unmounted again before sshd starts).
pub const SEED_DIR: &str = "/run/ccvm/seed";
/// Where PID 1 leaves what the session needs (root-owned, world-readable).
pub const SESSION_DIR: &str = "/run/ccvm/session";
/// The FIFO PID 1 listens on; the session writes its exit status there.
pub const DONE_FIFO: &str = "/run/ccvm/session-done";
/// The guest agent in the image (also sshd's forced command and the clipboard stand-ins).
pub const GUEST_AGENT: &str = "/usr/local/bin/ccvm-guest";
/// The agent's login shell.
pub const AGENT_SHELL: &str = "/bin/bash";
/// sshd's per-run files, relative to the root (root-owned).
pub const SSHD_CONFIG: &str = "etc/ssh/ccvm_sshd_config";
pub const SSHD_HOST_KEY: &str = "etc/ssh/ccvm_host_ed25519";
pub const SSHD_AUTHORIZED_KEYS: &str = "etc/ssh/ccvm_authorized_keys";
/// The virtio-blk serial of the read-only root image: the guest finds its disks by serial,
/// not by the order they were probed in.
pub const ROOT_DISK_SERIAL: &str = "ccvm-root";
/// The virtio-blk serial of the scratch disk (S9).
pub const SCRATCH_DISK_SERIAL: &str = "ccvm-scratch";
/// Where the scratch disk is mounted for the agent.
pub const SCRATCH_MOUNT: &str = "/scratch";

/// Port the guest's sshd listens on.
pub const SSH_PORT: u16 = 22;
