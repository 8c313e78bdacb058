//! Wire types: the JSON that crosses the plugin boundary.
//!
//! Every struct tolerates unknown fields and every field added after 0.1.0 carries
//! `#[serde(default)]`, so a host and a plugin built one minor version apart still
//! understand each other (see the crate docs for the full rule).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ccvm_guest_protocol::{NetworkAttachment, PlannedShare, SetupStep, ShareTransport};
use serde::{Deserialize, Serialize};

/// What kind of plugin a library is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    /// Boots the VM: turns a [`VmSpec`] into a hypervisor command line.
    Backend,
    /// Contributes seed files, guest setup steps, ssh options, host services, context text.
    Policy,
}

impl PluginKind {
    /// The lower-case word used in messages and in the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Backend => "backend",
            PluginKind::Policy => "policy",
        }
    }
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Hardware acceleration of the guest CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Acceleration {
    Kvm,
    Tcg,
}

impl std::fmt::Display for Acceleration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Acceleration::Kvm => "kvm",
            Acceleration::Tcg => "tcg",
        })
    }
}

/// What a backend can do. Generic code checks a request against this before planning
/// and rejects an impossible combination naming the missing capability (S3.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Guest CPU architecture (`x86_64`, `aarch64`), or `host` when it follows the host's.
    pub guest_arch: String,
    /// Accelerations this backend can run with.
    pub accelerations: Vec<Acceleration>,
    /// Share transports, most preferred first.
    pub share_transports: Vec<ShareTransport>,
    /// Whether the guest gets a network (user-mode, NAT to the host's network).
    pub guest_network: bool,
    /// Whether an extra raw disk can be attached (`vm_disk_gib`, S9).
    pub scratch_disk: bool,
    /// Whether the hypervisor can lock guest memory (`lock_guest_memory`).
    pub lock_guest_memory: bool,
    /// Whether the hypervisor has a seccomp sandbox (`hypervisor_sandbox`).
    pub hypervisor_sandbox: bool,
}

/// Generic description of the machine to boot; built by ccvm from the user's config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    pub memory_mib: u32,
    pub cpus: u32,
    /// Already resolved from `auto` by the host (S4).
    pub acceleration: Acceleration,
    pub kernel: String,
    pub initrd: String,
    /// Read-only root filesystem image (S10.1).
    pub root_image: String,
    /// Kernel command line words that every backend passes (backends add their own).
    pub kernel_cmdline: Vec<String>,
    /// Directories shared into the guest, in mount order.
    pub shares: Vec<ShareSpec>,
    /// `None` = let the backend choose its preferred transport.
    #[serde(default)]
    pub share_transport: Option<ShareTransport>,
    /// Optional extra disk for the encrypted scratch area (S9).
    #[serde(default)]
    pub scratch_disk: Option<DiskSpec>,
    /// TCP port the guest's sshd listens on.
    pub guest_ssh_port: u16,
    /// Port on host loopback that backends with a TCP forward use for ssh.
    pub host_ssh_port: u16,
    /// vsock context id for backends that reach sshd over vsock.
    pub vsock_cid: u32,
    pub hypervisor_sandbox: bool,
    pub lock_guest_memory: bool,
    /// Per-run private directory (sockets, console log); created by the host at launch.
    pub run_dir: String,
}

/// One directory shared into the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareSpec {
    /// Mount tag the guest looks for (`ccvm-project`, `ccvm-seed`, …).
    pub tag: String,
    pub host_path: String,
    /// Where the guest mounts it.
    pub guest_path: String,
    /// Export read-only from the host side (S5.1).
    pub read_only: bool,
}

/// An extra raw disk image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    pub path: String,
    pub size_gib: u64,
}

/// What a plugin needs the host to find out before it can plan (D2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirements {
    /// Program names looked up on `PATH`, or absolute paths checked for being executable.
    #[serde(default)]
    pub programs: Vec<String>,
    /// Host names to resolve (A and AAAA).
    #[serde(default)]
    pub resolve: Vec<String>,
    /// Files to read; `~/` is the user's home. Missing files are reported as absent.
    #[serde(default)]
    pub read_files: Vec<String>,
    /// The user's global git config with includes resolved, plus the excludes file.
    #[serde(default)]
    pub git_global_config: bool,
    /// The host TSC frequency in kHz.
    #[serde(default)]
    pub tsc_khz: bool,
    /// Whether this user can put a helper into its own user, mount, pid and network
    /// namespaces (virtiofsd's `--sandbox=namespace`).
    #[serde(default)]
    pub user_namespaces: bool,
    /// Host environment variables whose presence matters (`DISPLAY` for a clipboard tool).
    /// Only whether each is set and non-empty is reported, never its value.
    #[serde(default)]
    pub variables: Vec<String>,
}

impl Requirements {
    /// Adds everything `other` asks for.
    pub fn merge(&mut self, other: Requirements) {
        fn extend_unique(into: &mut Vec<String>, from: Vec<String>) {
            for item in from {
                if !into.contains(&item) {
                    into.push(item);
                }
            }
        }
        extend_unique(&mut self.programs, other.programs);
        extend_unique(&mut self.resolve, other.resolve);
        extend_unique(&mut self.read_files, other.read_files);
        extend_unique(&mut self.variables, other.variables);
        self.git_global_config |= other.git_global_config;
        self.tsc_khz |= other.tsc_khz;
        self.user_namespaces |= other.user_namespaces;
    }
}

/// What the host found out. Only what some plugin asked for is filled in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFacts {
    /// Host CPU architecture (`x86_64`, `aarch64`).
    pub host_arch: String,
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub home: String,
    /// The project directory (absolute, symlinks resolved).
    pub project_dir: String,
    /// Requested program → absolute path, or `None` when not found.
    #[serde(default)]
    pub programs: BTreeMap<String, Option<String>>,
    /// Requested name → addresses (empty when it did not resolve).
    #[serde(default)]
    pub resolved: BTreeMap<String, Vec<IpAddr>>,
    /// Requested file → what was found.
    #[serde(default)]
    pub files: BTreeMap<String, FileFact>,
    #[serde(default)]
    pub git_global_config: Option<GitConfigFact>,
    #[serde(default)]
    pub tsc_khz: Option<u64>,
    /// Whether a helper can be sandboxed in namespaces; `None` when not asked.
    #[serde(default)]
    pub user_namespaces: Option<NamespaceFact>,
    /// Requested variable → whether it is set and non-empty in ccvm's environment.
    #[serde(default)]
    pub variables: BTreeMap<String, bool>,
}

/// Whether this user can create the namespaces a sandboxed helper needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum NamespaceFact {
    Usable,
    /// Not usable, and why (a disabled sysctl, a security module's restriction…).
    Unusable {
        reason: String,
    },
}

impl HostFacts {
    /// The path of a requested program, if the host found it.
    pub fn program(&self, name: &str) -> Option<&str> {
        self.programs.get(name).and_then(|p| p.as_deref())
    }

    /// Whether a requested environment variable is set and non-empty.
    pub fn variable_set(&self, name: &str) -> bool {
        self.variables.get(name).copied().unwrap_or(false)
    }
}

/// One requested file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum FileFact {
    /// The file exists and is UTF-8 text.
    Text {
        content: String,
    },
    Absent,
    /// It exists but could not be read (permissions, not UTF-8, too large…).
    Unreadable {
        reason: String,
    },
}

/// The user's global git configuration, read by `git` itself so includes are resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitConfigFact {
    /// `(key, value)` in file order; keys as git prints them (section and name lower-case).
    pub entries: Vec<(String, String)>,
    /// Content of `core.excludesFile` (or git's default global ignore file), if readable.
    #[serde(default)]
    pub excludes: Option<String>,
}

/// A process the host runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub program: String,
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// A process started before the hypervisor (virtiofsd, vsock bridge…).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Helper {
    pub name: String,
    pub command: Command,
    /// Unix socket the helper creates; the host waits for it before starting the hypervisor.
    #[serde(default)]
    pub ready_socket: Option<String>,
}

/// Where the guest console goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Console {
    /// Guest device name for `console=` (`ttyS0`, `ttyAMA0`, `hvc0`).
    pub guest_tty: String,
    /// Host file the hypervisor writes the console to.
    pub log_path: String,
}

/// How the host's ssh client reaches the guest's sshd (D4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ControlEndpoint {
    /// A loopback TCP port forwarded by the hypervisor's user-mode network.
    TcpForward { host: String, port: u16 },
    /// A hybrid-vsock Unix socket: connect, send `CONNECT <port>\n`, expect `OK …\n`.
    VsockUnix { socket: String, port: u32 },
}

/// A backend's answer: everything needed to start the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendPlan {
    pub hypervisor: Command,
    #[serde(default)]
    pub helpers: Vec<Helper>,
    pub console: Console,
    pub control: ControlEndpoint,
    /// Everything the backend added to the kernel command line (already in the argv).
    pub kernel_cmdline: Vec<String>,
    pub shares: Vec<PlannedShare>,
    pub network: NetworkAttachment,
    /// Paths the host removes before starting (stale sockets of a killed run).
    #[serde(default)]
    pub remove_before_start: Vec<String>,
    /// Messages for the user (a helper that runs less confined than usual, and why).
    #[serde(default)]
    pub diagnostics: Vec<Diagnostic>,
}

/// What a policy is given: its own settings and facts about the session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyInput {
    /// The policy's settings: built-ins get their typed config section, third-party
    /// policies the `[plugins.<name>]` table of the config file (empty object when absent).
    pub settings: serde_json::Value,
    pub session: SessionInfo,
}

/// Facts about the session every policy may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub backend: String,
    pub writable_cwd: bool,
    pub persist_claude_projects: bool,
    pub scratch_disk: bool,
    pub guest_network: bool,
    /// The shell instead of claude (`--shell`).
    pub shell: bool,
    /// The resolver the guest's network provides (from the backend's plan), if any.
    #[serde(default)]
    pub guest_dns: Option<String>,
    /// The guest's gateway (from the backend's plan), if any. On QEMU user networking it is
    /// the host's own loopback as the guest sees it (`10.0.2.2`).
    #[serde(default)]
    pub guest_gateway: Option<String>,
    /// The per-run private directory (mode 0700, created at launch), where a policy's host
    /// service puts its Unix socket.
    #[serde(default)]
    pub run_dir: Option<String>,
}

/// A policy's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyPlan {
    #[serde(default)]
    pub seed_files: Vec<SeedFile>,
    #[serde(default)]
    pub setup_steps: Vec<SetupStep>,
    /// Extra ssh client options (`-o Key=Value`).
    #[serde(default)]
    pub ssh_options: Vec<SshOption>,
    #[serde(default)]
    pub host_services: Vec<HostService>,
    /// Paragraphs for the "ccvm session" header of the guest CLAUDE.md (S5.6).
    #[serde(default)]
    pub context: Vec<String>,
    #[serde(default)]
    pub diagnostics: Vec<Diagnostic>,
    /// The one reverse forward this policy needs over the ssh session (the clipboard bridge,
    /// S8). ccvm adds it to the ssh client and has sshd permit exactly it; sshd refuses every
    /// other forward (S10.4). At most one policy per session may ask for one.
    #[serde(default)]
    pub remote_forward: Option<RemoteForward>,
}

/// An ssh reverse forward: the guest's sshd listens at `listen`, connections go to `target`
/// on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteForward {
    /// Guest side: `127.0.0.1:PORT` (or `[::1]:PORT`), or an absolute Unix socket path.
    pub listen: String,
    /// Host side: `HOST:PORT` or an absolute Unix socket path (in the private run directory).
    pub target: String,
}

impl RemoteForward {
    /// Checks that `address` is a loopback `host:port` or an absolute socket path made of
    /// plain characters, so it can be written into ssh and sshd configuration as it is.
    pub fn check_address(address: &str) -> Result<(), String> {
        ccvm_guest_protocol::setup::check_forward_address(address)
    }
}

/// A file placed in the read-only seed bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedFile {
    /// Path inside the seed, relative, `/`-separated, no `..`.
    pub path: String,
    pub source: SeedSource,
}

/// Where a seed file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SeedSource {
    /// Content computed by the policy.
    Inline { content: String },
    /// A host file or directory the host copies: symlinks dereferenced, dangling links and
    /// loops skipped with a warning, entries whose file name is in `drop_names` removed.
    /// A missing source is skipped silently.
    CopyFromHost {
        host_path: String,
        #[serde(default)]
        drop_names: Vec<String>,
    },
}

/// One `-o Key=Value` for the ssh client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshOption {
    pub key: String,
    pub value: String,
}

/// A host-side service that lives as long as the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostService {
    pub name: String,
    pub kind: HostServiceKind,
}

/// The host services ccvm knows how to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum HostServiceKind {
    /// Answers image-only clipboard requests on a per-run Unix socket in the run directory
    /// (S8), reading the host clipboard with `tool` (the absolute path of `wl-paste` or
    /// `xclip`).
    ClipboardImages { socket: String, tool: String },
}

/// A message for the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub level: DiagnosticLevel,
    pub message: String,
}

/// How loud a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiagnosticLevel {
    Info,
    Warning,
    /// Why the plan cannot run on this host; only in a plan made for inspection
    /// (`--ccvm-plan`), which then exits 1. A plugin's diagnostics are never errors: a plugin
    /// that cannot plan returns an error instead.
    Error,
}

impl Diagnostic {
    pub fn warning(message: impl Into<String>) -> Self {
        Diagnostic {
            level: DiagnosticLevel::Warning,
            message: message.into(),
        }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Diagnostic {
            level: DiagnosticLevel::Error,
            message: message.into(),
        }
    }

    pub fn info(message: impl Into<String>) -> Self {
        Diagnostic {
            level: DiagnosticLevel::Info,
            message: message.into(),
        }
    }
}
