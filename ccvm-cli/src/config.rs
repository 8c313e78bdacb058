//! Configuration layering (S2): built-in defaults → `/etc/ccvm/config.toml` →
//! `$XDG_CONFIG_HOME/ccvm/config.toml` → `CCVM_*` environment variables → flags.
//!
//! One table, [`OPTIONS`], declares every option once: its key, its environment variable,
//! what it expects and how it is applied. Files, the environment and the error messages all
//! read from it. Unknown keys and wrong types are errors naming the file (or variable), the
//! key and the expected type; nothing is ever silently ignored.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};

use ccvm_plugin_api::{Acceleration, ShareTransport};
use ccvm_policy_egress::AgentSudo;
use ccvm_policy_share_staging::ShareSettings;
use serde::Serialize;

use crate::args::Flags;

/// Default guest RAM.
pub const DEFAULT_MEMORY_MIB: u32 = 4096;
/// Default vCPUs.
pub const DEFAULT_CPUS: u32 = 4;
/// Default API key variable.
pub const DEFAULT_API_KEY_VARIABLE: &str = "ANTHROPIC_API_KEY";
/// Default image name.
pub const DEFAULT_IMAGE: &str = "default";
/// System-wide config file.
pub const SYSTEM_CONFIG: &str = "/etc/ccvm/config.toml";

/// A snapshot of the process environment.
#[derive(Debug, Clone, Default)]
pub struct Env(BTreeMap<OsString, OsString>);

impl Env {
    /// The current process environment.
    pub fn from_process() -> Self {
        Env(std::env::vars_os().collect())
    }

    /// An environment made of the given pairs (for tests).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Env(pairs
            .into_iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect())
    }

    /// Every variable, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&OsString, &OsString)> {
        self.0.iter()
    }

    pub fn get(&self, name: &str) -> Option<&OsStr> {
        self.0.get(OsStr::new(name)).map(OsString::as_os_str)
    }

    /// A set, non-empty, absolute path variable.
    pub fn abs_path(&self, name: &str) -> Option<PathBuf> {
        self.get(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    }

    /// `$HOME`, when set and absolute.
    pub fn home(&self) -> Option<PathBuf> {
        self.abs_path("HOME")
    }
}

/// `acceleration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccelMode {
    Auto,
    Kvm,
    Tcg,
}

impl AccelMode {
    /// The acceleration a non-auto mode forces.
    pub fn forced(self) -> Option<Acceleration> {
        match self {
            AccelMode::Auto => None,
            AccelMode::Kvm => Some(Acceleration::Kvm),
            AccelMode::Tcg => Some(Acceleration::Tcg),
        }
    }
}

/// `context_md`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "path")]
pub enum ContextMd {
    /// ccvm's built-in text.
    Builtin,
    /// Empty string: no extra text.
    Disabled,
    /// Text read from this file at launch.
    File(PathBuf),
}

/// The effective configuration of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunConfig {
    pub backend: String,
    pub writable_cwd: bool,
    pub memory_mib: u32,
    pub cpus: u32,
    pub acceleration: AccelMode,
    /// `None` = the backend's preferred transport.
    pub share_transport: Option<ShareTransport>,
    pub share: ShareSettings,
    pub persist_claude_projects: bool,
    pub api_key_variable: String,
    pub context_md: ContextMd,
    pub egress_allowlist: Vec<String>,
    pub egress_ports: Vec<u16>,
    pub agent_sudo: AgentSudo,
    pub clipboard_images: bool,
    pub vm_disk_gib: u64,
    pub scratch_dir: PathBuf,
    pub lock_guest_memory: bool,
    pub hypervisor_sandbox: bool,
    pub image: String,
    /// `--ccvm-plugin-dir`, in order.
    pub plugin_dirs_flag: Vec<PathBuf>,
    /// `CCVM_PLUGIN_PATH`, in order.
    pub plugin_dirs_env: Vec<PathBuf>,
    /// `plugin_dirs` from the config files.
    pub plugin_dirs_config: Vec<PathBuf>,
    /// `[plugins.<name>]` tables, handed to the policy of that name.
    pub plugin_settings: BTreeMap<String, serde_json::Value>,
    pub shell: bool,
    pub debug: bool,
}

/// The backend used when none is configured: the one whose guest matches this host.
pub fn default_backend() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "virt",
        _ => "microvm",
    }
}

impl RunConfig {
    /// Built-in defaults (S2.2).
    pub fn defaults(env: &Env) -> Self {
        RunConfig {
            backend: default_backend().to_owned(),
            writable_cwd: true,
            memory_mib: DEFAULT_MEMORY_MIB,
            cpus: DEFAULT_CPUS,
            acceleration: AccelMode::Auto,
            share_transport: None,
            share: ShareSettings::default(),
            persist_claude_projects: false,
            api_key_variable: DEFAULT_API_KEY_VARIABLE.to_owned(),
            context_md: ContextMd::Builtin,
            egress_allowlist: Vec::new(),
            egress_ports: ccvm_policy_egress::DEFAULT_PORTS.to_vec(),
            agent_sudo: AgentSudo::Auto,
            clipboard_images: true,
            vm_disk_gib: 0,
            scratch_dir: cache_dir(env).join("ccvm"),
            lock_guest_memory: false,
            hypervisor_sandbox: true,
            image: DEFAULT_IMAGE.to_owned(),
            plugin_dirs_flag: Vec::new(),
            plugin_dirs_env: Vec::new(),
            plugin_dirs_config: Vec::new(),
            plugin_settings: BTreeMap::new(),
            shell: false,
            debug: false,
        }
    }
}

/// `$XDG_CACHE_HOME`, else `~/.cache`, else a per-user directory in the temp dir.
pub fn cache_dir(env: &Env) -> PathBuf {
    env.abs_path("XDG_CACHE_HOME")
        .or_else(|| env.home().map(|h| h.join(".cache")))
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|user| user.dir.join(".cache"))
        })
        .unwrap_or_else(|| {
            crate::dirs::temp_dir(env).join(format!("ccvm-cache-{}", nix::unistd::getuid()))
        })
}

/// The config files, lowest layer first.
pub fn config_files(env: &Env) -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from(SYSTEM_CONFIG)];
    if let Some(dir) = env
        .abs_path("XDG_CONFIG_HOME")
        .or_else(|| env.home().map(|h| h.join(".config")))
    {
        files.push(dir.join("ccvm").join("config.toml"));
    }
    files
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    Env(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Env(name) => write!(f, "environment variable {name}"),
        }
    }
}

/// A configuration error; every variant names where the bad input is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: invalid TOML: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("{}: unknown key `{key}`", path.display())]
    UnknownKey { path: PathBuf, key: String },
    #[error("cannot read the context_md file {}: {source}", path.display())]
    ContextFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", describe_invalid(origin, key, problem))]
    Invalid {
        origin: Origin,
        key: String,
        problem: String,
    },
}

fn describe_invalid(origin: &Origin, key: &str, problem: &str) -> String {
    match origin {
        Origin::File(path) => format!("{}: key `{key}`: {problem}", path.display()),
        Origin::Env(name) => format!("environment variable {name} (`{key}`): {problem}"),
    }
}

impl ConfigError {
    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            ConfigError::Read { .. } => "make the file readable or remove it".to_owned(),
            ConfigError::ContextFile { .. } => {
                "point context_md (CCVM_CLAUDE_MD) at a readable file, or set it to \"\" to disable it"
                    .to_owned()
            }
            ConfigError::Syntax { .. } => "fix the TOML syntax at the position shown".to_owned(),
            ConfigError::UnknownKey { .. } => format!(
                "valid keys: {} (see `ccvm --ccvm-help`)",
                OPTIONS
                    .iter()
                    .filter(|o| !o.env_only)
                    .map(|o| o.key)
                    .chain(["plugins.<name>"])
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ConfigError::Invalid {
                origin: Origin::Env(name),
                ..
            } => format!("set {name} to a valid value or unset it"),
            ConfigError::Invalid { .. } => "fix the value in that file".to_owned(),
        }
    }
}

/// A raw value before typing.
#[derive(Debug, Clone, Copy)]
enum Raw<'a> {
    Toml(&'a toml::Value),
    Env(&'a str),
}

impl Raw<'_> {
    fn found(&self) -> String {
        match self {
            Raw::Env(text) => format!("{text:?}"),
            Raw::Toml(toml::Value::String(s)) => format!("string {s:?}"),
            Raw::Toml(toml::Value::Integer(i)) => format!("integer {i}"),
            Raw::Toml(toml::Value::Float(x)) => format!("float {x}"),
            Raw::Toml(toml::Value::Boolean(b)) => format!("boolean {b}"),
            Raw::Toml(toml::Value::Datetime(d)) => format!("datetime {d}"),
            Raw::Toml(toml::Value::Array(_)) => "an array".to_owned(),
            Raw::Toml(toml::Value::Table(_)) => "a table".to_owned(),
        }
    }

    fn expected(&self, what: &str) -> String {
        format!("expected {what}, found {}", self.found())
    }
}

fn boolean(raw: Raw<'_>) -> Result<bool, String> {
    match raw {
        Raw::Toml(toml::Value::Boolean(b)) => Ok(*b),
        Raw::Env(text) => match text.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" => Ok(true),
            "0" | "false" | "no" => Ok(false),
            _ => Err(raw.expected("a boolean (1/true/yes or 0/false/no)")),
        },
        Raw::Toml(_) => Err(raw.expected("a boolean (true or false)")),
    }
}

fn positive_u32(raw: Raw<'_>) -> Result<u32, String> {
    let value = match raw {
        Raw::Toml(toml::Value::Integer(i)) => u32::try_from(*i).ok(),
        Raw::Env(text) => text.trim().parse::<u32>().ok(),
        Raw::Toml(_) => None,
    };
    value
        .filter(|v| *v > 0)
        .ok_or_else(|| raw.expected("a positive integer"))
}

fn non_negative_u64(raw: Raw<'_>) -> Result<u64, String> {
    let value = match raw {
        Raw::Toml(toml::Value::Integer(i)) => u64::try_from(*i).ok(),
        Raw::Env(text) => text.trim().parse::<u64>().ok(),
        Raw::Toml(_) => None,
    };
    value.ok_or_else(|| raw.expected("a non-negative integer"))
}

fn string(raw: Raw<'_>) -> Result<String, String> {
    match raw {
        Raw::Toml(toml::Value::String(s)) => Ok(s.clone()),
        Raw::Env(text) => Ok(text.to_owned()),
        Raw::Toml(_) => Err(raw.expected("a string")),
    }
}

fn string_list(raw: Raw<'_>) -> Result<Vec<String>, String> {
    match raw {
        Raw::Toml(toml::Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                toml::Value::String(s) => Ok(s.clone()),
                other => Err(format!(
                    "expected an array of strings, found an element {}",
                    Raw::Toml(other).found()
                )),
            })
            .collect(),
        Raw::Env(text) => Ok(text
            .split(':')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()),
        Raw::Toml(_) => Err(raw.expected("an array of strings")),
    }
}

fn one_of<T: Copy>(raw: Raw<'_>, choices: &[(&str, T)]) -> Result<T, String> {
    let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
    let text = match raw {
        Raw::Toml(toml::Value::String(s)) => s.as_str(),
        Raw::Env(text) => text,
        Raw::Toml(_) => return Err(raw.expected(&format!("one of {}", names.join(", ")))),
    };
    choices
        .iter()
        .find(|(name, _)| *name == text)
        .map(|(_, value)| *value)
        .ok_or_else(|| raw.expected(&format!("one of {}", names.join(", "))))
}

fn absolute_path(raw: Raw<'_>, home: Option<&Path>) -> Result<PathBuf, String> {
    let text = string(raw)?;
    let path = match (text.strip_prefix("~/"), home) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(&text),
    };
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(raw.expected("an absolute path or one starting with ~/"))
    }
}

fn path_list(raw: Raw<'_>, home: Option<&Path>) -> Result<Vec<PathBuf>, String> {
    string_list(raw)?
        .into_iter()
        .map(|item| {
            let s = toml::Value::String(item);
            absolute_path(Raw::Toml(&s), home)
        })
        .collect()
}

/// Context passed to every setter.
struct Ctx<'a> {
    home: Option<&'a Path>,
}

type Apply = fn(&mut RunConfig, Raw<'_>, &Ctx<'_>) -> Result<(), String>;

/// One configuration option.
struct OptionDef {
    /// Dotted key in the config file.
    key: &'static str,
    env: Option<&'static str>,
    /// Only settable from the environment (the mass toggle).
    env_only: bool,
    /// For `--ccvm-help`.
    help: &'static str,
    apply: Apply,
}

/// A boolean option stored at `$field` of the config (`share.skills`, `writable_cwd`…).
macro_rules! bool_option {
    ($key:literal, $env:literal, $($field:ident).+, $help:literal) => {
        OptionDef {
            key: $key,
            env: Some($env),
            env_only: false,
            help: $help,
            apply: |c, r, _| {
                c.$($field).+ = boolean(r)?;
                Ok(())
            },
        }
    };
}

/// Every option, in the order environment variables are applied (the mass toggle comes
/// before the per-item share variables, so they win over it).
const OPTIONS: &[OptionDef] = &[
    OptionDef {
        key: "backend",
        env: Some("CCVM_BACKEND"),
        env_only: false,
        help: "backend plugin that boots the VM (microvm on x86_64, virt on aarch64)",
        apply: |c, r, _| {
            let name = string(r)?;
            if name.is_empty() {
                return Err(r.expected("a backend name"));
            }
            c.backend = name;
            Ok(())
        },
    },
    bool_option!(
        "writable_cwd",
        "CCVM_WRITABLE_CWD",
        writable_cwd,
        "true: project edits land on the host live; false: read-only, edits discarded (true)"
    ),
    OptionDef {
        key: "memory_mib",
        env: Some("CCVM_MEMORY"),
        env_only: false,
        help: "guest RAM in MiB (4096)",
        apply: |c, r, _| {
            c.memory_mib = positive_u32(r)?;
            Ok(())
        },
    },
    OptionDef {
        key: "cpus",
        env: Some("CCVM_CPUS"),
        env_only: false,
        help: "vCPUs (4)",
        apply: |c, r, _| {
            c.cpus = positive_u32(r)?;
            Ok(())
        },
    },
    OptionDef {
        key: "acceleration",
        env: Some("CCVM_ACCEL"),
        env_only: false,
        help: "auto, kvm or tcg (auto: KVM when genuinely usable, else TCG with a warning)",
        apply: |c, r, _| {
            c.acceleration = one_of(
                r,
                &[
                    ("auto", AccelMode::Auto),
                    ("kvm", AccelMode::Kvm),
                    ("tcg", AccelMode::Tcg),
                ],
            )?;
            Ok(())
        },
    },
    OptionDef {
        key: "share_transport",
        env: Some("CCVM_SHARE_TRANSPORT"),
        env_only: false,
        help: "auto, 9p or virtio-fs: how directories reach the guest (auto: the backend's choice)",
        apply: |c, r, _| {
            c.share_transport = one_of(
                r,
                &[
                    ("auto", None),
                    ("9p", Some(ShareTransport::NineP)),
                    ("virtio-fs", Some(ShareTransport::VirtioFs)),
                ],
            )?;
            Ok(())
        },
    },
    OptionDef {
        key: "share.all_claude_items",
        env: Some("CCVM_SHARE_CLAUDE_CONFIG"),
        env_only: true,
        help: "set all nine ~/.claude share items at once; per-item variables win",
        apply: |c, r, _| {
            let on = boolean(r)?;
            let s = &mut c.share;
            for field in [
                &mut s.settings,
                &mut s.claude_md,
                &mut s.keybindings,
                &mut s.commands,
                &mut s.agents,
                &mut s.skills,
                &mut s.output_styles,
                &mut s.plugins,
                &mut s.config,
            ] {
                *field = on;
            }
            Ok(())
        },
    },
    bool_option!(
        "share.settings",
        "CCVM_SHARE_SETTINGS",
        share.settings,
        "stage settings.json, settings.local.json and ~/.claude.json, secrets removed (true)"
    ),
    bool_option!(
        "share.claude_md",
        "CCVM_SHARE_CLAUDEMD",
        share.claude_md,
        "stage ~/.claude/CLAUDE.md (true)"
    ),
    bool_option!(
        "share.keybindings",
        "CCVM_SHARE_KEYBINDINGS",
        share.keybindings,
        "stage keybindings.json (true)"
    ),
    bool_option!(
        "share.commands",
        "CCVM_SHARE_COMMANDS",
        share.commands,
        "stage commands/ (true)"
    ),
    bool_option!(
        "share.agents",
        "CCVM_SHARE_AGENTS",
        share.agents,
        "stage agents/ (true)"
    ),
    bool_option!(
        "share.skills",
        "CCVM_SHARE_SKILLS",
        share.skills,
        "stage skills/ (true)"
    ),
    bool_option!(
        "share.output_styles",
        "CCVM_SHARE_OUTPUTSTYLES",
        share.output_styles,
        "stage output-styles/ (true)"
    ),
    bool_option!(
        "share.plugins",
        "CCVM_SHARE_PLUGINS",
        share.plugins,
        "stage plugins/ (false)"
    ),
    bool_option!(
        "share.config",
        "CCVM_SHARE_CONFIG",
        share.config,
        "stage config/ (false)"
    ),
    bool_option!(
        "share.git_config",
        "CCVM_SHARE_GIT_CONFIG",
        share.git_config,
        "stage a sanitized global git config (true)"
    ),
    bool_option!(
        "persist_claude_projects",
        "CCVM_PERSIST_PROJECTS",
        persist_claude_projects,
        "share ~/.claude/projects read-write so history and memory survive (false)"
    ),
    OptionDef {
        key: "api_key_variable",
        env: None,
        env_only: false,
        help: "host variable whose value reaches the guest over ssh (ANTHROPIC_API_KEY)",
        apply: |c, r, _| {
            let name = string(r)?;
            let mut chars = name.chars();
            let ok = chars
                .next()
                .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
                && chars.all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
            if !ok {
                return Err(r.expected("an environment variable name ([A-Za-z_][A-Za-z0-9_]*)"));
            }
            c.api_key_variable = name;
            Ok(())
        },
    },
    OptionDef {
        key: "context_md",
        env: Some("CCVM_CLAUDE_MD"),
        env_only: false,
        help: "markdown file appended to the guest CLAUDE.md; empty string disables",
        apply: |c, r, ctx| {
            c.context_md = if string(r)?.is_empty() {
                ContextMd::Disabled
            } else {
                ContextMd::File(absolute_path(r, ctx.home)?)
            };
            Ok(())
        },
    },
    OptionDef {
        key: "egress.allowlist",
        env: None,
        env_only: false,
        help: "hosts / IPs / CIDRs the guest may reach; empty = open egress ([])",
        apply: |c, r, _| {
            let entries = string_list(r)?;
            ccvm_policy_egress::parse_allowlist(&entries)?;
            c.egress_allowlist = entries;
            Ok(())
        },
    },
    OptionDef {
        key: "egress.ports",
        env: None,
        env_only: false,
        help: "TCP ports the allowlist permits ([443])",
        apply: |c, r, _| {
            let Raw::Toml(toml::Value::Array(items)) = r else {
                return Err(r.expected("an array of port numbers"));
            };
            c.egress_ports = items
                .iter()
                .map(|item| match item {
                    toml::Value::Integer(p) => u16::try_from(*p)
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| format!("expected ports 1-65535, found {p}")),
                    other => Err(format!(
                        "expected an array of port numbers, found an element {}",
                        Raw::Toml(other).found()
                    )),
                })
                .collect::<Result<_, _>>()?;
            Ok(())
        },
    },
    OptionDef {
        key: "agent_sudo",
        env: None,
        env_only: false,
        help: "auto (root unless an allowlist is set), true or false",
        apply: |c, r, _| {
            c.agent_sudo = match r {
                Raw::Toml(toml::Value::Boolean(true)) => AgentSudo::On,
                Raw::Toml(toml::Value::Boolean(false)) => AgentSudo::Off,
                _ => one_of(r, &[("auto", AgentSudo::Auto)])
                    .map_err(|_| r.expected("\"auto\", true or false"))?,
            };
            Ok(())
        },
    },
    bool_option!(
        "clipboard.images",
        "CCVM_CLIPBOARD_IMAGES",
        clipboard_images,
        "image-only paste bridge (true)"
    ),
    OptionDef {
        key: "vm_disk_gib",
        env: Some("CCVM_VM_DISK_SIZE"),
        env_only: false,
        help: ">0 attaches an encrypted ephemeral scratch disk at /scratch (0)",
        apply: |c, r, _| {
            c.vm_disk_gib = non_negative_u64(r)?;
            Ok(())
        },
    },
    OptionDef {
        key: "scratch_dir",
        env: Some("CCVM_SCRATCH_DIR"),
        env_only: false,
        help: "where the scratch disk image lives ($XDG_CACHE_HOME/ccvm)",
        apply: |c, r, ctx| {
            c.scratch_dir = absolute_path(r, ctx.home)?;
            Ok(())
        },
    },
    bool_option!(
        "lock_guest_memory",
        "CCVM_MLOCK",
        lock_guest_memory,
        "mlock guest RAM (false)"
    ),
    bool_option!(
        "hypervisor_sandbox",
        "CCVM_QEMU_SANDBOX",
        hypervisor_sandbox,
        "run the hypervisor under its seccomp sandbox (true)"
    ),
    OptionDef {
        key: "image",
        env: Some("CCVM_IMAGE"),
        env_only: false,
        help: "guest image to boot (default)",
        apply: |c, r, _| {
            let name = string(r)?;
            if name.is_empty()
                || name.starts_with('.')
                || !name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-'))
            {
                return Err(r.expected("an image name ([A-Za-z0-9._-], not starting with .)"));
            }
            c.image = name;
            Ok(())
        },
    },
    OptionDef {
        key: "plugin_dirs",
        env: Some("CCVM_PLUGIN_PATH"),
        env_only: false,
        help: "extra plugin directories (CCVM_PLUGIN_PATH: colon-separated)",
        apply: |c, r, ctx| {
            let dirs = path_list(r, ctx.home)?;
            match r {
                Raw::Env(_) => c.plugin_dirs_env = dirs,
                Raw::Toml(_) => c.plugin_dirs_config = dirs,
            }
            Ok(())
        },
    },
];

/// Sections whose keys are options (`[share]`, `[egress]`, `[clipboard]`).
const SECTIONS: [&str; 3] = ["share", "egress", "clipboard"];

/// `(key, env, help)` of every option, for `--ccvm-help`.
pub fn documented_options()
-> impl Iterator<Item = (&'static str, Option<&'static str>, &'static str)> {
    OPTIONS.iter().map(|o| (o.key, o.env, o.help))
}

fn apply_table(
    config: &mut RunConfig,
    path: &Path,
    table: &toml::Table,
    prefix: &str,
    ctx: &Ctx<'_>,
) -> Result<(), ConfigError> {
    for (name, value) in table {
        let key = format!("{prefix}{name}");
        let invalid = |problem: String| ConfigError::Invalid {
            origin: Origin::File(path.to_owned()),
            key: key.clone(),
            problem,
        };
        if prefix.is_empty() && name == "plugins" {
            let toml::Value::Table(plugins) = value else {
                return Err(invalid(
                    Raw::Toml(value).expected("a table of [plugins.<name>] tables"),
                ));
            };
            for (plugin, settings) in plugins {
                if !settings.is_table() {
                    return Err(ConfigError::Invalid {
                        origin: Origin::File(path.to_owned()),
                        key: format!("plugins.{plugin}"),
                        problem: Raw::Toml(settings).expected("a table"),
                    });
                }
                let json = serde_json::to_value(settings).map_err(|e| invalid(e.to_string()))?;
                config.plugin_settings.insert(plugin.clone(), json);
            }
            continue;
        }
        if let Some(option) = OPTIONS.iter().find(|o| o.key == key && !o.env_only) {
            (option.apply)(config, Raw::Toml(value), ctx).map_err(invalid)?;
        } else if prefix.is_empty() && SECTIONS.contains(&name.as_str()) {
            let toml::Value::Table(section) = value else {
                return Err(invalid(Raw::Toml(value).expected("a table")));
            };
            apply_table(config, path, section, &format!("{name}."), ctx)?;
        } else {
            return Err(ConfigError::UnknownKey {
                path: path.to_owned(),
                key,
            });
        }
    }
    Ok(())
}

/// Applies one config file; a missing file is not an error.
pub fn apply_file(config: &mut RunConfig, path: &Path, env: &Env) -> Result<(), ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim().to_owned(),
        })?;
    let home = env.home();
    apply_table(
        config,
        path,
        &table,
        "",
        &Ctx {
            home: home.as_deref(),
        },
    )
}

/// Applies the `CCVM_*` variables. An empty variable counts as unset, except
/// `CCVM_CLAUDE_MD`, where the empty string means "no context text" (S2.2).
pub fn apply_env(config: &mut RunConfig, env: &Env) -> Result<(), ConfigError> {
    let home = env.home();
    let ctx = Ctx {
        home: home.as_deref(),
    };
    for option in OPTIONS {
        let Some(name) = option.env else { continue };
        let Some(value) = env.get(name) else { continue };
        let Some(text) = value.to_str() else {
            return Err(ConfigError::Invalid {
                origin: Origin::Env(name),
                key: option.key.to_owned(),
                problem: "the value is not valid UTF-8".to_owned(),
            });
        };
        if text.is_empty() && name != "CCVM_CLAUDE_MD" {
            continue;
        }
        (option.apply)(config, Raw::Env(text), &ctx).map_err(|problem| ConfigError::Invalid {
            origin: Origin::Env(name),
            key: option.key.to_owned(),
            problem,
        })?;
    }
    Ok(())
}

/// Applies command-line flags, the top layer.
pub fn apply_flags(config: &mut RunConfig, flags: &Flags) {
    if let Some(backend) = &flags.backend {
        config.backend = backend.clone();
    }
    if let Some(writable) = flags.writable_cwd {
        config.writable_cwd = writable;
    }
    config.plugin_dirs_flag = flags.plugin_dirs.clone();
    config.shell = flags.shell;
    config.debug = flags.debug;
}

/// All layers, in order.
pub fn load(env: &Env, flags: &Flags) -> Result<RunConfig, ConfigError> {
    let mut config = RunConfig::defaults(env);
    for file in config_files(env) {
        apply_file(&mut config, &file, env)?;
    }
    apply_env(&mut config, env)?;
    apply_flags(&mut config, flags);
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        let mut all = vec![("HOME", "/home/alice")];
        all.extend_from_slice(pairs);
        Env::from_pairs(all)
    }

    fn with_file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).expect("write config");
        (dir, path)
    }

    fn file_config(text: &str) -> Result<RunConfig, ConfigError> {
        let (_dir, path) = with_file(text);
        let env = env(&[]);
        let mut config = RunConfig::defaults(&env);
        apply_file(&mut config, &path, &env).map(|()| config)
    }

    #[test]
    fn defaults_match_the_spec_table() {
        let config = RunConfig::defaults(&env(&[]));
        assert_eq!(config.memory_mib, 4096);
        assert_eq!(config.cpus, 4);
        assert!(config.writable_cwd && config.hypervisor_sandbox && config.clipboard_images);
        assert_eq!(config.acceleration, AccelMode::Auto);
        assert_eq!(config.api_key_variable, "ANTHROPIC_API_KEY");
        assert_eq!(config.egress_ports, [443]);
        assert_eq!(config.scratch_dir, PathBuf::from("/home/alice/.cache/ccvm"));
        assert!(config.share.settings && !config.share.plugins && !config.share.config);
    }

    #[test]
    fn file_values_and_sections_apply() {
        let config = file_config(
            "memory_mib = 2048\nacceleration = \"tcg\"\n[share]\nplugins = true\n\
             [egress]\nallowlist = [\"example.org\", \"10.0.0.0/8\"]\nports = [443, 8443]\n\
             [plugins.motd]\nmessage = \"hi\"\n",
        )
        .expect("valid");
        assert_eq!(config.memory_mib, 2048);
        assert_eq!(config.acceleration, AccelMode::Tcg);
        assert!(config.share.plugins);
        assert_eq!(config.egress_allowlist, ["example.org", "10.0.0.0/8"]);
        assert_eq!(config.egress_ports, [443, 8443]);
        assert_eq!(
            config.plugin_settings["motd"],
            serde_json::json!({"message": "hi"})
        );
    }

    #[test]
    fn wrong_type_names_file_key_and_expected_type() {
        let (_dir, path) = with_file("memory_mib = \"lots\"\n");
        let env = env(&[]);
        let mut config = RunConfig::defaults(&env);
        let error = apply_file(&mut config, &path, &env).expect_err("invalid");
        let message = error.to_string();
        assert!(
            message.starts_with(&path.display().to_string()),
            "{message}"
        );
        assert!(message.contains("`memory_mib`"), "{message}");
        assert!(
            message.contains("expected a positive integer, found string \"lots\""),
            "{message}"
        );
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let error = file_config("[share]\nsettingz = true\n").expect_err("unknown");
        assert!(
            error.to_string().ends_with("unknown key `share.settingz`"),
            "{error}"
        );
        assert!(error.hint().contains("share.settings"));
    }

    #[test]
    fn bad_allowlist_entry_is_a_config_error() {
        let error = file_config("[egress]\nallowlist = [\"evil;rm -rf\"]\n").expect_err("bad");
        assert!(error.to_string().contains("egress.allowlist"), "{error}");
    }

    #[test]
    fn syntax_error_names_the_file() {
        let error = file_config("memory_mib = = 3\n").expect_err("syntax");
        assert!(matches!(error, ConfigError::Syntax { .. }), "{error}");
    }

    #[test]
    fn env_booleans_accept_the_six_spellings_and_reject_others() {
        for (text, want) in [
            ("1", true),
            ("yes", true),
            ("TRUE", true),
            ("0", false),
            ("no", false),
            ("false", false),
        ] {
            let mut config = RunConfig::defaults(&env(&[]));
            apply_env(&mut config, &env(&[("CCVM_MLOCK", text)])).expect("valid");
            assert_eq!(config.lock_guest_memory, want, "{text}");
        }
        let mut config = RunConfig::defaults(&env(&[]));
        let error = apply_env(&mut config, &env(&[("CCVM_MLOCK", "maybe")])).expect_err("bad");
        assert!(error.to_string().contains("CCVM_MLOCK"), "{error}");
        assert!(error.to_string().contains("\"maybe\""), "{error}");
    }

    #[test]
    fn per_item_share_variables_win_over_the_mass_toggle() {
        let mut config = RunConfig::defaults(&env(&[]));
        apply_env(
            &mut config,
            &env(&[
                ("CCVM_SHARE_CLAUDE_CONFIG", "0"),
                ("CCVM_SHARE_SKILLS", "1"),
            ]),
        )
        .expect("valid");
        assert!(!config.share.settings && !config.share.commands);
        assert!(config.share.skills);
    }

    #[test]
    fn env_beats_file_and_flags_beat_env() {
        let (_dir, path) = with_file("backend = \"q35\"\ncpus = 2\n");
        let env = env(&[("CCVM_BACKEND", "virt"), ("CCVM_CPUS", "")]);
        let mut config = RunConfig::defaults(&env);
        apply_file(&mut config, &path, &env).expect("file");
        apply_env(&mut config, &env).expect("env");
        assert_eq!(config.backend, "virt");
        assert_eq!(config.cpus, 2, "an empty variable counts as unset");
        apply_flags(
            &mut config,
            &Flags {
                backend: Some("microvm".into()),
                writable_cwd: Some(false),
                ..Flags::default()
            },
        );
        assert_eq!(config.backend, "microvm");
        assert!(!config.writable_cwd);
    }

    #[test]
    fn empty_claude_md_variable_disables_context() {
        let mut config = RunConfig::defaults(&env(&[]));
        apply_env(&mut config, &env(&[("CCVM_CLAUDE_MD", "")])).expect("valid");
        assert_eq!(config.context_md, ContextMd::Disabled);
        apply_env(&mut config, &env(&[("CCVM_CLAUDE_MD", "~/ctx.md")])).expect("valid");
        assert_eq!(
            config.context_md,
            ContextMd::File("/home/alice/ctx.md".into())
        );
    }

    #[test]
    fn config_files_follow_xdg() {
        assert_eq!(
            config_files(&env(&[("XDG_CONFIG_HOME", "/cfg")])),
            [
                PathBuf::from("/etc/ccvm/config.toml"),
                PathBuf::from("/cfg/ccvm/config.toml")
            ]
        );
        assert_eq!(
            config_files(&env(&[]))[1],
            PathBuf::from("/home/alice/.config/ccvm/config.toml")
        );
    }
}
