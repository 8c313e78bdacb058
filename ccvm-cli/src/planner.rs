//! From configuration, plugins and host facts to a [`LaunchPlan`]: plain data that
//! `--ccvm-plan` prints and the launcher will carry out.
//!
//! Reads and lookups only: nothing here creates the run directory, writes the seed or starts
//! a process. Generic code asks the backend's capabilities; it never branches on a backend's
//! name or on the host architecture (S3.4).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use ccvm_plugin_api::seed::{self, GuestUser, SEED_VERSION, SeedManifest, SessionMode};
use ccvm_plugin_api::{
    Acceleration, BackendPlan, BackendPlanRequest, Capabilities, Command, ControlEndpoint,
    Diagnostic, DiskSpec, HostFacts, HostService, PolicyInput, PolicyPlan, PolicyPlanRequest,
    RemoteForward, Requirements, SeedFile, SessionInfo, SetupStep, ShareSpec, VmSpec, method,
};
use ccvm_policy_clipboard::ClipboardSettings;
use ccvm_policy_egress::EgressSettings;
use serde::Serialize;

use crate::accel::{self, KvmProbe};
use crate::config::{AccelMode, ContextMd, Env, RunConfig};
use crate::error::Error;
use crate::host;
use crate::plugins::{Plugin, Registry, Source};

/// Port the guest's sshd listens on.
pub const GUEST_SSH_PORT: u16 = 22;
/// Mount tags of the project and the optional `~/.claude/projects` share.
pub const PROJECT_TAG: &str = "ccvm-project";
pub const PROJECTS_TAG: &str = "ccvm-claude-projects";
/// Host key alias: the pinned key is recorded under this name, not under a port.
pub const HOST_KEY_ALIAS: &str = "ccvm-guest";

/// Kernel command line words every backend gets.
const GENERIC_CMDLINE: [&str; 2] = ["quiet", "panic=-1"];

/// ccvm's built-in text for the end of the guest CLAUDE.md (`context_md` default).
const BUILTIN_CONTEXT: &str = "\
You are working inside a disposable VM. Tools you install, files outside the project and \
anything in /tmp vanish when the session ends. Prefer the project's own scripts and pinned \
dependencies so that what works here also works on the user's machine.";

/// A plugin as the plan names it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginRef {
    pub name: String,
    pub version: String,
    pub source: Source,
}

impl From<&Plugin> for PluginRef {
    fn from(plugin: &Plugin) -> Self {
        PluginRef {
            name: plugin.manifest.name.clone(),
            version: plugin.manifest.version.clone(),
            source: plugin.source.clone(),
        }
    }
}

/// The acceleration decision.
#[derive(Debug, Clone, Serialize)]
pub struct AccelPlan {
    pub requested: AccelMode,
    pub resolved: Acceleration,
    /// Why `auto` fell back to TCG.
    pub reason: Option<String>,
}

/// The guest image to boot.
#[derive(Debug, Clone, Serialize)]
pub struct ImagePlan {
    pub name: String,
    pub dir: String,
    pub present: bool,
}

/// One forwarded argument: text when it is UTF-8, hex bytes otherwise (the seed file
/// carries the exact bytes either way).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ArgRepr {
    Text(String),
    Bytes { non_utf8_hex: String },
}

impl From<&OsString> for ArgRepr {
    fn from(arg: &OsString) -> Self {
        match arg.to_str() {
            Some(text) => ArgRepr::Text(text.to_owned()),
            None => ArgRepr::Bytes {
                non_utf8_hex: arg.as_bytes().iter().map(|b| format!("{b:02x}")).collect(),
            },
        }
    }
}

/// What runs in the guest.
#[derive(Debug, Clone, Serialize)]
pub struct SessionPlan {
    /// `claude` or `shell`.
    pub mode: &'static str,
    pub argv: Vec<ArgRepr>,
    pub project_dir: String,
    /// The variable whose value the ssh session passes (never the value itself).
    pub api_key_variable: String,
    pub api_key_set: bool,
}

/// The seed bundle.
#[derive(Debug, Clone, Serialize)]
pub struct SeedPlan {
    pub dir: String,
    /// `seed.json`, exactly as the guest will read it.
    pub manifest: SeedManifest,
    pub files: Vec<SeedFile>,
}

/// Everything one launch will do.
#[derive(Debug, Clone, Serialize)]
pub struct LaunchPlan {
    pub ccvm_version: &'static str,
    pub plugin_api_version: &'static str,
    pub backend: PluginRef,
    pub policies: Vec<PluginRef>,
    pub acceleration: AccelPlan,
    pub image: ImagePlan,
    pub run_dir: String,
    pub vm: VmSpec,
    pub capabilities: Capabilities,
    pub machine: BackendPlan,
    pub session: SessionPlan,
    pub seed: SeedPlan,
    pub setup_steps: Vec<SetupStep>,
    /// Host files the policies had read for them (they cross only sanitized, never copied).
    pub host_reads: Vec<String>,
    pub ssh: Command,
    pub host_services: Vec<HostService>,
    /// Appended to the guest `~/.claude/CLAUDE.md` (also a seed file).
    pub claude_md_append: String,
    pub diagnostics: Vec<Diagnostic>,
    pub config: RunConfig,
}

/// A loopback port that is free right now, for the ssh forward.
fn free_loopback_port() -> Result<u16, Error> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| Error::Io {
            what: "cannot reserve a loopback port on",
            path: PathBuf::from("127.0.0.1"),
            source,
        })
}

fn check_capabilities(
    config: &RunConfig,
    backend: &str,
    caps: &Capabilities,
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<(), Error> {
    let missing = |what: String, hint: &str| Error::Unsupported {
        message: format!("backend `{backend}` {what}"),
        hint: hint.to_owned(),
    };
    if let Some(transport) = config.share_transport
        && !caps.share_transports.contains(&transport)
    {
        let supported: Vec<String> = caps
            .share_transports
            .iter()
            .map(ToString::to_string)
            .collect();
        return Err(missing(
            format!(
                "has no share transport {transport} (it supports: {})",
                supported.join(", ")
            ),
            "set share_transport to one it supports, or \"auto\"",
        ));
    }
    if config.vm_disk_gib > 0 && !caps.scratch_disk {
        return Err(missing(
            "cannot attach a scratch disk".to_owned(),
            "set vm_disk_gib = 0",
        ));
    }
    if config.lock_guest_memory && !caps.lock_guest_memory {
        return Err(missing(
            "cannot lock guest memory".to_owned(),
            "set lock_guest_memory = false",
        ));
    }
    if config.lock_guest_memory {
        let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK)
            .ok()
            .and_then(|(soft, _)| (soft != nix::sys::resource::RLIM_INFINITY).then_some(soft));
        if let Some(warning) = memlock_warning(limit, config.memory_mib) {
            diagnostics.push(Diagnostic::warning(warning));
        }
    }
    if config.hypervisor_sandbox && !caps.hypervisor_sandbox {
        diagnostics.push(Diagnostic::warning(format!(
            "backend `{backend}` has no hypervisor sandbox; hypervisor_sandbox has no effect"
        )));
    }
    Ok(())
}

/// The up-front warning for `lock_guest_memory` when `RLIMIT_MEMLOCK` (soft, in bytes; `None`
/// = unlimited) cannot hold the guest's memory: QEMU would fail at start otherwise.
pub fn memlock_warning(limit: Option<u64>, memory_mib: u32) -> Option<String> {
    let needed = u64::from(memory_mib) << 20;
    let limit = limit?;
    (limit < needed).then(|| {
        format!(
            "lock_guest_memory needs RLIMIT_MEMLOCK of at least {memory_mib} MiB, but it is {} MiB; \
             raise it (`ulimit -l unlimited`, or memlock in /etc/security/limits.conf) or the \
             hypervisor will fail to start",
            limit >> 20
        )
    })
}

fn policy_settings(name: &str, config: &RunConfig) -> Result<serde_json::Value, Error> {
    let value = match name {
        "share-staging" => serde_json::to_value(config.share),
        "egress" => serde_json::to_value(EgressSettings {
            allowlist: config.egress_allowlist.clone(),
            ports: config.egress_ports.clone(),
            agent_sudo: config.agent_sudo,
        }),
        "clipboard" => serde_json::to_value(ClipboardSettings {
            images: config.clipboard_images,
        }),
        other => Ok(config
            .plugin_settings
            .get(other)
            .cloned()
            .unwrap_or_else(|| serde_json::json!({}))),
    };
    value.map_err(|e| Error::Host {
        message: format!("cannot encode settings for policy `{name}`: {e}"),
        hint: None,
    })
}

fn session_header(config: &RunConfig, policies: &[PolicyPlan]) -> String {
    let mut lines = vec!["# ccvm session".to_owned(), String::new()];
    lines.push(if config.writable_cwd {
        "- Project edits are live: every change you make in the project directory lands on the \
         user's machine immediately."
            .to_owned()
    } else {
        "- The project is read-only on the host: your edits live in a temporary overlay and are \
         discarded when the session ends. Tell the user which changes to keep, as a patch or \
         commands."
            .to_owned()
    });
    lines.push(if config.persist_claude_projects {
        "- Conversation history and memory persist across sessions (`claude --resume` works)."
            .to_owned()
    } else {
        "- Conversation history and memory do not persist: this VM is discarded at exit. Put \
         knowledge worth keeping in the codebase (for example the project's CLAUDE.md or docs)."
            .to_owned()
    });
    lines.push(if config.vm_disk_gib > 0 {
        format!(
            "- /scratch is an encrypted {} GiB scratch disk for large temporary files; it is \
             erased at exit.",
            config.vm_disk_gib
        )
    } else {
        "- There is no /scratch disk; large temporary files go to RAM (/tmp).".to_owned()
    });
    for paragraph in policies.iter().flat_map(|p| &p.context) {
        lines.push(format!("- {paragraph}"));
    }
    lines.join("\n") + "\n"
}

fn context_text(config: &RunConfig) -> Result<Option<String>, Error> {
    match &config.context_md {
        ContextMd::Builtin => Ok(Some(BUILTIN_CONTEXT.to_owned())),
        ContextMd::Disabled => Ok(None),
        ContextMd::File(path) => std::fs::read_to_string(path).map(Some).map_err(|source| {
            Error::Config(crate::config::ConfigError::ContextFile {
                path: path.clone(),
                source,
            })
        }),
    }
}

/// The one reverse forward the policies ask for (S8, S10.4): sshd can permit exactly one, so
/// two are a conflict, and an address that is not plain is a broken plugin.
fn remote_forward<'a>(
    policies: &[&Plugin],
    plans: &'a [PolicyPlan],
) -> Result<Option<&'a RemoteForward>, Error> {
    let asking: Vec<(&str, &RemoteForward)> = policies
        .iter()
        .zip(plans)
        .filter_map(|(policy, plan)| plan.remote_forward.as_ref().map(|f| (policy.name(), f)))
        .collect();
    let names: Vec<&str> = asking.iter().map(|(name, _)| *name).collect();
    if asking.len() > 1 {
        return Err(Error::Host {
            message: format!(
                "the policies {} each ask for an ssh reverse forward, but sshd permits exactly one",
                names.join(", ")
            ),
            hint: Some("disable all but one of them".to_owned()),
        });
    }
    let Some((name, forward)) = asking.first() else {
        return Ok(None);
    };
    for address in [&forward.listen, &forward.target] {
        RemoteForward::check_address(address).map_err(|e| Error::Host {
            message: format!("policy `{name}` asks for an unusable ssh reverse forward: {e}"),
            hint: Some(
                "this is a bug in that policy plugin; remove it from the plugin directory"
                    .to_owned(),
            ),
        })?;
    }
    Ok(Some(forward))
}

fn ssh_command(
    facts: &HostFacts,
    run_dir: &Path,
    control: &ControlEndpoint,
    api_key_variable: &str,
    policies: &[PolicyPlan],
    forward: Option<&RemoteForward>,
) -> Command {
    let run = run_dir.display();
    let mut args: Vec<String> = vec!["-F".into(), "none".into(), "-tt".into()];
    let mut option = |key: &str, value: String| {
        args.push("-o".into());
        args.push(format!("{key}={value}"));
    };
    option("StrictHostKeyChecking", "yes".into());
    option("HostKeyAlias", HOST_KEY_ALIAS.into());
    option("UserKnownHostsFile", format!("{run}/known_hosts"));
    option("GlobalKnownHostsFile", "/dev/null".into());
    option("IdentitiesOnly", "yes".into());
    option("IdentityFile", format!("{run}/id_ed25519"));
    option("IdentityAgent", "none".into());
    // Public-key authentication only (S10.4): never a password or keyboard prompt, even if
    // the guest offered one.
    option("PreferredAuthentications", "publickey".into());
    option("PubkeyAuthentication", "yes".into());
    option("PasswordAuthentication", "no".into());
    option("KbdInteractiveAuthentication", "no".into());
    option("HostbasedAuthentication", "no".into());
    option("GSSAPIAuthentication", "no".into());
    option("BatchMode", "yes".into());
    option("ForwardAgent", "no".into());
    option("ForwardX11", "no".into());
    option("ForwardX11Trusted", "no".into());
    option("Tunnel", "no".into());
    option("PermitLocalCommand", "no".into());
    match forward {
        None => option("ClearAllForwardings", "yes".into()),
        Some(forward) => {
            option(
                "RemoteForward",
                format!("{} {}", forward.listen, forward.target),
            );
            option("ExitOnForwardFailure", "yes".into());
        }
    }
    option("ControlMaster", "no".into());
    option("ControlPath", "none".into());
    option("UpdateHostKeys", "no".into());
    option("LogLevel", "ERROR".into());
    option("SendEnv", api_key_variable.into());
    let destination = match control {
        ControlEndpoint::TcpForward { host, port } => {
            option("Port", port.to_string());
            host.clone()
        }
        ControlEndpoint::VsockUnix { socket, port } => {
            let exe = std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "ccvm".to_owned());
            option(
                "ProxyCommand",
                format!("{exe} --ccvm-vsock-proxy {socket} {port}"),
            );
            HOST_KEY_ALIAS.to_owned()
        }
    };
    // ssh keeps the first value of most options, so the ones above win over a policy's;
    // forwards, though, add up, and the only one sshd permits is `forward`.
    let adds_a_forward = |key: &str| {
        ["LocalForward", "RemoteForward", "DynamicForward"]
            .iter()
            .any(|k| k.eq_ignore_ascii_case(key))
    };
    for extra in policies.iter().flat_map(|p| &p.ssh_options) {
        if !adds_a_forward(&extra.key) {
            option(&extra.key, extra.value.clone());
        }
    }
    args.push(format!("{}@{destination}", facts.user));
    Command {
        program: "ssh".to_owned(),
        args,
        ..Command::default()
    }
}

/// Plans one launch. `probe` is asked about KVM only when KVM is a candidate.
pub fn plan(
    config: &RunConfig,
    registry: &Registry,
    env: &Env,
    forwarded: &[OsString],
    probe: impl FnOnce() -> KvmProbe,
) -> Result<LaunchPlan, Error> {
    let mut diagnostics: Vec<Diagnostic> = registry
        .warnings()
        .into_iter()
        .map(Diagnostic::warning)
        .collect();
    let backend = registry.backend(&config.backend)?;
    let caps: Capabilities = backend.call(method::CAPABILITIES, &())?;
    let mut facts = host::base_facts(env)?;

    // Impossible requests are configuration errors; report them before asking the host.
    check_capabilities(config, backend.name(), &caps, &mut diagnostics)?;
    let resolved = accel::resolve(
        config.acceleration,
        backend.name(),
        &caps,
        &facts.host_arch,
        probe,
    )?;
    if let Some(warning) = &resolved.warning {
        diagnostics.push(Diagnostic::warning(warning.clone()));
    }

    let run_dir = crate::dirs::run_dir_candidate(env)?;
    let run = host::utf8(&run_dir, "the run directory")?;
    let guest_arch = if caps.guest_arch == "host" {
        facts.host_arch.clone()
    } else {
        caps.guest_arch.clone()
    };
    let image_dir = crate::image::named_dir(env, &config.image, &guest_arch)?;
    crate::boundary::check_project_holds_none_of(
        Path::new(&facts.project_dir),
        &[
            (
                "the run directory",
                run_dir.parent().unwrap_or(Path::new("/")),
            ),
            ("the image cache", &crate::image::images_dir(env)?),
        ],
    )?;
    let image = ImagePlan {
        name: config.image.clone(),
        dir: host::utf8(&image_dir, "the image directory")?,
        present: image_dir.join(crate::image::MANIFEST_FILE).is_file(),
    };
    if !image.present {
        diagnostics.push(Diagnostic::info(format!(
            "guest image `{}` for {guest_arch} is not built yet ({})",
            image.name, image.dir
        )));
    }

    let mut shares = vec![
        ShareSpec {
            tag: seed::SEED_TAG.to_owned(),
            host_path: format!("{run}/seed"),
            guest_path: seed::SEED_GUEST_DIR.to_owned(),
            read_only: true,
        },
        ShareSpec {
            tag: PROJECT_TAG.to_owned(),
            host_path: facts.project_dir.clone(),
            guest_path: facts.project_dir.clone(),
            read_only: !config.writable_cwd,
        },
    ];
    if config.persist_claude_projects {
        let projects = format!("{}/.claude/projects", facts.home.trim_end_matches('/'));
        shares.push(ShareSpec {
            tag: PROJECTS_TAG.to_owned(),
            host_path: projects.clone(),
            guest_path: projects,
            read_only: false,
        });
    }
    let scratch_disk = (config.vm_disk_gib > 0)
        .then(|| {
            host::utf8(
                &config
                    .scratch_dir
                    .join(format!("disk-{}.img", std::process::id())),
                "the scratch disk path",
            )
            .map(|path| DiskSpec {
                path,
                size_gib: config.vm_disk_gib,
            })
        })
        .transpose()?;
    let spec = VmSpec {
        memory_mib: config.memory_mib,
        cpus: config.cpus,
        acceleration: resolved.acceleration,
        kernel: format!("{}/{}", image.dir, crate::image::KERNEL_FILE),
        initrd: format!("{}/{}", image.dir, crate::image::INITRD_FILE),
        root_image: format!("{}/{}", image.dir, crate::image::ROOT_FILE),
        kernel_cmdline: GENERIC_CMDLINE.map(str::to_owned).to_vec(),
        shares,
        share_transport: config.share_transport,
        scratch_disk,
        guest_ssh_port: GUEST_SSH_PORT,
        host_ssh_port: free_loopback_port()?,
        vsock_cid: 3 + std::process::id() % 0xffff,
        hypervisor_sandbox: config.hypervisor_sandbox,
        lock_guest_memory: config.lock_guest_memory,
        run_dir: run.clone(),
    };

    let requirements: Requirements = backend.call(method::REQUIREMENTS, &spec)?;
    host::gather(&mut facts, &requirements, env);
    let machine: BackendPlan = backend.call(
        method::PLAN,
        &BackendPlanRequest {
            spec: spec.clone(),
            facts: facts.clone(),
        },
    )?;
    diagnostics.extend(machine.diagnostics.iter().cloned());

    let session = SessionInfo {
        backend: backend.name().to_owned(),
        writable_cwd: config.writable_cwd,
        persist_claude_projects: config.persist_claude_projects,
        scratch_disk: config.vm_disk_gib > 0,
        guest_network: caps.guest_network,
        shell: config.shell,
        guest_dns: match &machine.network {
            ccvm_plugin_api::NetworkAttachment::UserMode { dns, .. } => Some(dns.clone()),
            ccvm_plugin_api::NetworkAttachment::None => None,
        },
        guest_gateway: match &machine.network {
            ccvm_plugin_api::NetworkAttachment::UserMode { gateway, .. } => Some(gateway.clone()),
            ccvm_plugin_api::NetworkAttachment::None => None,
        },
    };
    let policies: Vec<&Plugin> = registry.policies().collect();
    let mut inputs = Vec::new();
    let mut host_reads: Vec<String> = Vec::new();
    for policy in &policies {
        let input = PolicyInput {
            settings: policy_settings(policy.name(), config)?,
            session: session.clone(),
        };
        let requirements: Requirements = policy.call(method::REQUIREMENTS, &input)?;
        host::gather(&mut facts, &requirements, env);
        host_reads.extend(requirements.read_files.iter().map(|f| {
            host::expand_home(f, Path::new(&facts.home))
                .display()
                .to_string()
        }));
        inputs.push(input);
    }
    let mut policy_plans = Vec::new();
    for (policy, input) in policies.iter().zip(inputs) {
        let plan: PolicyPlan = policy.call(
            method::PLAN,
            &PolicyPlanRequest {
                input,
                facts: facts.clone(),
            },
        )?;
        policy_plans.push(plan);
    }
    for name in config.plugin_settings.keys() {
        if !policies.iter().any(|p| p.name() == name) {
            diagnostics.push(Diagnostic::warning(format!(
                "the config has a [plugins.{name}] table but no policy named `{name}` is installed"
            )));
        }
    }

    let mut claude_md_append = session_header(config, &policy_plans);
    if let Some(text) = context_text(config)? {
        claude_md_append.push('\n');
        claude_md_append.push_str(text.trim_end());
        claude_md_append.push('\n');
    }
    let mut seed_files: Vec<SeedFile> = policy_plans
        .iter()
        .flat_map(|p| p.seed_files.iter().cloned())
        .collect();
    seed_files.push(SeedFile {
        path: seed::CONTEXT_FILE.to_owned(),
        source: ccvm_plugin_api::SeedSource::Inline {
            content: claude_md_append.clone(),
        },
    });
    let api_key_set = env
        .get(&config.api_key_variable)
        .is_some_and(|v| !v.is_empty());
    if !api_key_set {
        diagnostics.push(Diagnostic::info(format!(
            "{} is not set: claude will start unauthenticated and ask you to log in",
            config.api_key_variable
        )));
    }
    let forward = remote_forward(&policies, &policy_plans)?;
    let ssh = ssh_command(
        &facts,
        &run_dir,
        &machine.control,
        &config.api_key_variable,
        &policy_plans,
        forward,
    );
    diagnostics.extend(
        policy_plans
            .iter()
            .flat_map(|p| p.diagnostics.iter().cloned()),
    );

    let mut setup_steps: Vec<SetupStep> = policy_plans
        .iter()
        .flat_map(|p| p.setup_steps.iter().cloned())
        // sshd's permitted forward comes from the one `remote_forward` alone.
        .filter(|step| !matches!(step, SetupStep::SshdPermitListen { .. }))
        .collect();
    if let Some(forward) = forward {
        setup_steps.push(SetupStep::SshdPermitListen {
            listen: forward.listen.clone(),
        });
    }
    let manifest = SeedManifest {
        version: SEED_VERSION,
        user: GuestUser {
            name: facts.user.clone(),
            uid: facts.uid,
            gid: facts.gid,
            home: facts.home.clone(),
        },
        project_dir: facts.project_dir.clone(),
        mode: if config.shell {
            SessionMode::Shell
        } else {
            SessionMode::Claude
        },
        shares: machine
            .shares
            .iter()
            .filter(|s| s.tag != seed::SEED_TAG)
            .cloned()
            .collect(),
        writable_cwd: config.writable_cwd,
        api_key_variable: config.api_key_variable.clone(),
        guest_ssh_port: spec.guest_ssh_port,
        network: machine.network.clone(),
        setup_steps: setup_steps.clone(),
    };

    Ok(LaunchPlan {
        ccvm_version: env!("CARGO_PKG_VERSION"),
        plugin_api_version: ccvm_plugin_api::API_VERSION,
        backend: PluginRef::from(backend),
        policies: policies.iter().map(|p| PluginRef::from(*p)).collect(),
        acceleration: AccelPlan {
            requested: config.acceleration,
            resolved: resolved.acceleration,
            reason: resolved.warning,
        },
        image,
        run_dir: run.clone(),
        vm: spec,
        capabilities: caps,
        machine,
        session: SessionPlan {
            mode: if config.shell { "shell" } else { "claude" },
            argv: forwarded.iter().map(ArgRepr::from).collect(),
            project_dir: facts.project_dir.clone(),
            api_key_variable: config.api_key_variable.clone(),
            api_key_set,
        },
        seed: SeedPlan {
            dir: format!("{run}/seed"),
            manifest,
            files: seed_files,
        },
        setup_steps,
        host_reads,
        ssh,
        host_services: policy_plans
            .iter()
            .flat_map(|p| p.host_services.iter().cloned())
            .collect(),
        claude_md_append,
        diagnostics,
        config: config.clone(),
    })
}

#[cfg(test)]
mod tests {
    use ccvm_plugin_api::SshOption;

    use super::*;

    fn ssh_options(forward: Option<&RemoteForward>, policy: PolicyPlan) -> Vec<String> {
        let control = ControlEndpoint::TcpForward {
            host: "127.0.0.1".to_owned(),
            port: 40022,
        };
        let facts = ccvm_plugin_api::testing::example_facts(&[]);
        let ssh = ssh_command(
            &facts,
            Path::new("/run/user/1000/ccvm/run-1"),
            &control,
            "ANTHROPIC_API_KEY",
            &[policy],
            forward,
        );
        ssh.args
            .windows(2)
            .filter(|w| w[0] == "-o")
            .map(|w| w[1].clone())
            .collect()
    }

    /// S6.2, S10.4: the client authenticates with its key only, never prompts, forwards
    /// nothing, and a policy cannot add a forward through its ssh options.
    #[test]
    fn ssh_uses_public_keys_only_and_forwards_nothing() {
        let policy = PolicyPlan {
            ssh_options: vec![
                SshOption {
                    key: "LocalForward".to_owned(),
                    value: "8080 127.0.0.1:80".to_owned(),
                },
                SshOption {
                    key: "ServerAliveInterval".to_owned(),
                    value: "30".to_owned(),
                },
            ],
            ..PolicyPlan::default()
        };
        let options = ssh_options(None, policy);
        for expected in [
            "PreferredAuthentications=publickey",
            "PasswordAuthentication=no",
            "KbdInteractiveAuthentication=no",
            "HostbasedAuthentication=no",
            "GSSAPIAuthentication=no",
            "BatchMode=yes",
            "ForwardAgent=no",
            "ForwardX11=no",
            "ClearAllForwardings=yes",
            "StrictHostKeyChecking=yes",
            "ServerAliveInterval=30",
        ] {
            assert!(
                options.iter().any(|o| o == expected),
                "{expected}: {options:?}"
            );
        }
        assert!(
            !options.iter().any(|o| o.contains("Forward=")),
            "{options:?}"
        );
    }

    #[test]
    fn the_one_remote_forward_reaches_ssh() {
        let forward = RemoteForward {
            listen: "127.0.0.1:7070".to_owned(),
            target: "/run/user/1000/ccvm/run-1/clip.sock".to_owned(),
        };
        let options = ssh_options(Some(&forward), PolicyPlan::default());
        assert!(
            options
                .iter()
                .any(|o| o == "RemoteForward=127.0.0.1:7070 /run/user/1000/ccvm/run-1/clip.sock"),
            "{options:?}"
        );
        assert!(options.iter().any(|o| o == "ExitOnForwardFailure=yes"));
        assert!(!options.iter().any(|o| o.starts_with("ClearAllForwardings")));
    }

    #[test]
    fn memlock_warning_only_when_the_limit_is_below_guest_memory() {
        assert_eq!(memlock_warning(None, 4096), None, "unlimited");
        assert_eq!(memlock_warning(Some(8 << 30), 4096), None);
        let warning = memlock_warning(Some(8 << 20), 4096).expect("8 MiB < 4096 MiB");
        assert!(
            warning.contains("at least 4096 MiB, but it is 8 MiB"),
            "{warning}"
        );
        assert!(warning.contains("ulimit -l"), "{warning}");
    }
}
