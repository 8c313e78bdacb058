//! The options table (S2.2): every option once, with its key, its environment variable, its
//! help text and how a raw value is checked and applied. Files, the environment, `--ccvm-help`
//! and the error messages all read it.

use std::path::{Path, PathBuf};

use ccvm_plugin_api::ShareTransport;
use ccvm_policy_egress::AgentSudo;

use super::error::{ConfigError, Origin};
use super::{AccelMode, ContextMd, RunConfig};

/// A raw value before typing.
#[derive(Debug, Clone, Copy)]
pub(super) enum Raw<'a> {
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

/// A disk size in GiB: a non-negative integer, or one of the words that mean "no disk"
/// (`0`, `off`, `no`, `false`: the spellings the original accepted, S9.1).
fn disk_gib(raw: Raw<'_>) -> Result<u64, String> {
    let off = |text: &str| {
        matches!(
            text.trim().to_ascii_lowercase().as_str(),
            "off" | "no" | "false"
        )
    };
    let value = match raw {
        Raw::Toml(toml::Value::Integer(i)) => u64::try_from(*i).ok(),
        Raw::Toml(toml::Value::Boolean(false)) => Some(0),
        Raw::Toml(toml::Value::String(text)) if off(text) => Some(0),
        Raw::Env(text) if off(text) => Some(0),
        Raw::Env(text) => text.trim().parse::<u64>().ok(),
        Raw::Toml(_) => None,
    };
    value.ok_or_else(|| raw.expected("a size in GiB (a non-negative integer), or 0/off/no/false"))
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
pub(super) struct Ctx<'a> {
    pub(super) home: Option<&'a Path>,
}

type Apply = fn(&mut RunConfig, Raw<'_>, &Ctx<'_>) -> Result<(), String>;

/// One configuration option.
pub(super) struct OptionDef {
    /// Dotted key in the config file.
    pub(super) key: &'static str,
    pub(super) env: Option<&'static str>,
    /// Only settable from the environment (the mass toggle).
    pub(super) env_only: bool,
    /// For `--ccvm-help`.
    pub(super) help: &'static str,
    pub(super) apply: Apply,
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
pub(super) const OPTIONS: &[OptionDef] = &[
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
        help: "vCPUs (4; under TCG at most the host's cores)",
        apply: |c, r, _| {
            c.cpus = Some(positive_u32(r)?);
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
        help: "GiB of an encrypted, ephemeral scratch disk at /scratch; 0/off/no/false: none (0)",
        apply: |c, r, _| {
            c.vm_disk_gib = disk_gib(r)?;
            Ok(())
        },
    },
    OptionDef {
        key: "scratch_dir",
        env: Some("CCVM_SCRATCH_DIR"),
        env_only: false,
        help: "where the scratch disk image lives, on a disk-backed file system \
               ($XDG_CACHE_HOME/ccvm; tmpfs is refused unless CCVM_SCRATCH_ALLOW_TMPFS=1)",
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
        key: "extra_packages",
        env: Some("CCVM_EXTRA_PACKAGES"),
        env_only: false,
        help: "Debian packages added to the guest image, e.g. [\"python3\", \"nodejs\"]; a change \
               builds a new image on first use ([]; CCVM_EXTRA_PACKAGES: comma-separated)",
        apply: |c, r, _| {
            let names = match r {
                Raw::Env(text) => text
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
                Raw::Toml(_) => string_list(r)?,
            };
            if let Some(bad) = names
                .iter()
                .find(|n| !ccvm_image::is_debian_package_name(n))
            {
                return Err(format!(
                    "`{bad}` is not a Debian package name (lower-case letters, digits, `+`, `-`, \
                     `.`; at least two characters)"
                ));
            }
            c.extra_packages = ccvm_image::normalized(&names);
            Ok(())
        },
    },
    OptionDef {
        key: "claude_code_version",
        env: Some("CCVM_CLAUDE_CODE_VERSION"),
        env_only: false,
        help: "the Claude Code release in the guest image: ccvm's pinned one, an exact version, \
               or \"latest\" (resolved from the npm registry when the image is built; \
               `--ccvm-image build --refresh` takes a newer one); a change builds a new image on \
               first use",
        apply: |c, r, _| {
            let value = string(r)?;
            if !ccvm_image::claude::is_claude_code_version(&value) {
                return Err(r.expected("\"latest\" or an exact version such as \"2.1.330\""));
            }
            c.claude_code_version = value;
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

pub(super) fn apply_table(
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
