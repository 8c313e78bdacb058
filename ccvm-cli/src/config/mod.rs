//! Configuration layering (S2): built-in defaults → `/etc/ccvm/config.toml` →
//! `$XDG_CONFIG_HOME/ccvm/config.toml` → `CCVM_*` environment variables → flags.
//!
//! One table, `options::OPTIONS`, declares every option once: its key, its environment variable,
//! what it expects and how it is applied. Files, the environment and the error messages all
//! read from it. Unknown keys and wrong types are errors naming the file (or variable), the
//! key and the expected type; nothing is ever silently ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ccvm_plugin_api::{Acceleration, ShareTransport};
use ccvm_policy_egress::AgentSudo;
use ccvm_policy_share_staging::ShareSettings;
use serde::Serialize;

mod env;
mod error;
mod options;

pub use env::Env;
pub use error::{ConfigError, Origin};
pub use options::documented_options;
use options::{Ctx, OPTIONS, Raw, apply_table};

/// Default guest RAM.
pub const DEFAULT_MEMORY_MIB: u32 = 4096;
/// Default vCPUs under KVM, and the most by default under TCG (see [`default_cpus`]).
pub const DEFAULT_CPUS: u32 = 4;

/// vCPUs when `cpus` is not set: [`DEFAULT_CPUS`] under KVM; under TCG, where every vCPU is a
/// host thread emulating a CPU, no more than the host has cores. Measured on a 2-core host
/// with the real Claude Code to its first frame (the benchmark, 5 alternating runs each, two
/// runs): 2 vCPUs 9.27 s / 11.5 s against 4 vCPUs 10.3 s / 11.3 s (1 vCPU: 10.8 s / 12.1 s):
/// never clearly slower, once 10 % faster, and two fewer busy host threads.
pub fn default_cpus(tcg: bool, host_cores: usize) -> u32 {
    if tcg {
        DEFAULT_CPUS.min(u32::try_from(host_cores.max(1)).unwrap_or(u32::MAX))
    } else {
        DEFAULT_CPUS
    }
}
/// Default API key variable.
pub const DEFAULT_API_KEY_VARIABLE: &str = "ANTHROPIC_API_KEY";
/// Default image name.
pub const DEFAULT_IMAGE: &str = "default";
/// System-wide config file.
pub const SYSTEM_CONFIG: &str = "/etc/ccvm/config.toml";

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
    /// `None` = not set: [`default_cpus`] for the resolved acceleration.
    pub cpus: Option<u32>,
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
    /// Debian packages added to the image recipe, sorted and unique.
    pub extra_packages: Vec<String>,
    /// The Claude Code release the image carries: the pinned one, an exact version or
    /// `latest` (checked).
    pub claude_code_version: String,
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
            cpus: None,
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
            extra_packages: Vec::new(),
            claude_code_version: ccvm_image::CLAUDE_CODE_VERSION.to_owned(),
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
            env.temp_dir()
                .join(format!("ccvm-cache-{}", nix::unistd::getuid()))
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

/// The command line's layer: ccvm's own flags, the top of S2.1's order (`--ccvm-debug` and
/// `--shell` exist only here).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlagLayer {
    pub shell: bool,
    pub debug: bool,
    /// `Some(true)` for `--writable-cwd`, `Some(false)` for `--read-only-cwd` (last wins).
    pub writable_cwd: Option<bool>,
    pub backend: Option<String>,
    /// `--ccvm-plugin-dir`, in order.
    pub plugin_dirs: Vec<PathBuf>,
}

/// Applies command-line flags, the top layer.
pub fn apply_flags(config: &mut RunConfig, flags: &FlagLayer) {
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
pub fn load(env: &Env, flags: &FlagLayer) -> Result<RunConfig, ConfigError> {
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
        assert_eq!(config.cpus, None, "4, or the host's cores under TCG");
        assert_eq!(default_cpus(false, 2), 4);
        assert_eq!(default_cpus(true, 2), 2);
        assert_eq!(default_cpus(true, 64), 4);
        assert_eq!(default_cpus(true, 0), 1);
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

    /// `extra_packages`: a TOML list or a comma-separated variable, sorted and unique; a name
    /// Debian would not accept is an error naming it, before anything runs.
    #[test]
    fn extra_packages_from_the_file_or_the_environment_are_checked() {
        let config =
            file_config("extra_packages = [\"python3\", \"build-essential\"]\n").expect("valid");
        assert_eq!(config.extra_packages, ["build-essential", "python3"]);
        let mut config = RunConfig::defaults(&env(&[]));
        apply_env(
            &mut config,
            &env(&[("CCVM_EXTRA_PACKAGES", "nodejs, python3,,nodejs")]),
        )
        .expect("valid");
        assert_eq!(config.extra_packages, ["nodejs", "python3"]);
        let error = file_config("extra_packages = [\"python3\", \"rm -rf\"]\n").expect_err("bad");
        assert!(error.to_string().contains("`rm -rf`"), "{error}");
        assert!(error.to_string().contains("extra_packages"), "{error}");
        let mut config = RunConfig::defaults(&env(&[]));
        let error =
            apply_env(&mut config, &env(&[("CCVM_EXTRA_PACKAGES", "Python3")])).expect_err("bad");
        assert!(error.to_string().contains("CCVM_EXTRA_PACKAGES"), "{error}");
        assert!(error.to_string().contains("`Python3`"), "{error}");
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

    /// S9.1: `CCVM_VM_DISK_SIZE` takes a size in GiB or one of the original's words for off.
    #[test]
    fn disk_size_takes_gib_or_the_words_for_off_and_refuses_others() {
        for (text, want) in [
            ("8", 8),
            ("0", 0),
            ("off", 0),
            ("no", 0),
            ("FALSE", 0),
            (" 16 ", 16),
        ] {
            let mut config = RunConfig::defaults(&env(&[]));
            apply_env(&mut config, &env(&[("CCVM_VM_DISK_SIZE", text)])).expect(text);
            assert_eq!(config.vm_disk_gib, want, "{text:?}");
        }
        for bad in ["-1", "8G", "yes", "1.5"] {
            let mut config = RunConfig::defaults(&env(&[]));
            let error = apply_env(&mut config, &env(&[("CCVM_VM_DISK_SIZE", bad)])).expect_err(bad);
            assert!(error.to_string().contains("CCVM_VM_DISK_SIZE"), "{error}");
        }
        let (_dir, path) = with_file("vm_disk_gib = \"off\"\n");
        let mut config = RunConfig::defaults(&env(&[]));
        apply_file(&mut config, &path, &env(&[])).expect("off in a file");
        assert_eq!(config.vm_disk_gib, 0);
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
        assert_eq!(config.cpus, Some(2), "an empty variable counts as unset");
        apply_flags(
            &mut config,
            &FlagLayer {
                backend: Some("microvm".into()),
                writable_cwd: Some(false),
                ..FlagLayer::default()
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
