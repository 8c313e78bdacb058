//! From configuration, plugins and host facts to a [`LaunchPlan`]: plain data that
//! `--ccvm-plan` prints and the launcher carries out.
//!
//! [`plan`] is a short chain of named steps, each a function of data: the configuration, the
//! plugins, the host's facts and this run's identity come in as [`PlanInputs`] (gathered by
//! [`inputs`]), and the only questions asked of the host on the way go through [`HostAccess`]
//! (the facts a plugin requires, KVM, whether an image is built), so every step can be tested
//! with fakes. Nothing here creates a file or starts a process. Generic code asks the
//! backend's capabilities; it never branches on a backend's name or on the host architecture
//! (S3.4).

pub mod accel;
pub mod inputs;
mod machine;
mod policies;
mod services;
mod session;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use ccvm_plugin_api::seed::SeedManifest;
use ccvm_plugin_api::{
    Acceleration, BackendPlan, Capabilities, Command, Diagnostic, HostFacts, HostService,
    Requirements, SeedFile, VmSpec,
};
use serde::Serialize;

pub use self::inputs::{LiveHost, plan_here, plan_to_inspect};
pub use self::machine::memlock_warning;
use crate::config::{AccelMode, RunConfig};
use crate::error::Error;
use crate::host::KvmProbe;
use crate::plugins::{Plugin, Registry, Source};

/// Host key alias: the pinned key is recorded under this name, not under a port.
pub const HOST_KEY_ALIAS: &str = "ccvm-guest";

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
    /// The guest's architecture (the image is built for it).
    pub arch: String,
    pub dir: String,
    /// Built, and with exactly the configured `extra_packages`.
    pub present: bool,
    /// The configured `extra_packages` the image must have.
    pub extra_packages: Vec<String>,
    /// The configured `claude_code_version` the image must carry.
    pub claude_code_version: String,
    /// Days since the image was built (`None`: not built, or unknown).
    pub age_days: Option<u64>,
}

impl ImagePlan {
    /// What the configuration asks of the image beyond the defaults, for messages:
    /// ` with extra_packages a, b and Claude Code latest`, or nothing.
    pub fn wanted(&self) -> String {
        let mut parts = Vec::new();
        if !self.extra_packages.is_empty() {
            parts.push(format!("extra_packages {}", self.extra_packages.join(", ")));
        }
        if self.claude_code_version != ccvm_image::CLAUDE_CODE_VERSION {
            parts.push(format!("Claude Code {}", self.claude_code_version));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" with {}", parts.join(" and "))
        }
    }
}

/// One forwarded argument: text when it is UTF-8, hex bytes otherwise. Either way it is
/// exact: the launcher writes [`ArgRepr::to_os_string`] into the seed (S1.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

impl ArgRepr {
    /// The argument's bytes.
    pub fn to_os_string(&self) -> OsString {
        match self {
            ArgRepr::Text(text) => OsString::from(text),
            ArgRepr::Bytes { non_utf8_hex } => OsString::from_vec(
                (0..non_utf8_hex.len())
                    .step_by(2)
                    .filter_map(|i| u8::from_str_radix(non_utf8_hex.get(i..i + 2)?, 16).ok())
                    .collect(),
            ),
        }
    }
}

/// How the launcher runs the session (what runs is the seed manifest's `mode`).
#[derive(Debug, Clone, Serialize)]
pub struct SessionPlan {
    pub argv: Vec<ArgRepr>,
    pub api_key_set: bool,
    /// `--ccvm-debug`: stream the console, keep the scratch directory.
    pub debug: bool,
    /// The `ssh-keygen` that makes this run's keys (absolute; `None` when not installed).
    pub ssh_keygen: Option<String>,
    /// `CCVM_TIMINGS`: where the launcher writes when each phase was reached.
    pub timings_file: Option<PathBuf>,
    /// The environment of a host service's tool (the display variables, for the clipboard
    /// responder's `xclip` / `wl-paste`); empty when no service is planned.
    pub service_env: BTreeMap<String, String>,
}

/// The seed bundle.
#[derive(Debug, Clone, Serialize)]
pub struct SeedPlan {
    pub dir: String,
    /// `seed.json`, exactly as the guest will read it (setup steps, project, user…).
    pub manifest: SeedManifest,
    pub files: Vec<SeedFile>,
}

/// Everything one launch will do; each fact once.
#[derive(Debug, Clone, Serialize)]
pub struct LaunchPlan {
    pub ccvm_version: &'static str,
    pub plugin_api_version: &'static str,
    pub backend: PluginRef,
    pub policies: Vec<PluginRef>,
    pub acceleration: AccelPlan,
    pub image: ImagePlan,
    /// The machine as ccvm asked the backend for it (the run directory included).
    pub vm: VmSpec,
    pub capabilities: Capabilities,
    pub machine: BackendPlan,
    pub session: SessionPlan,
    pub seed: SeedPlan,
    /// Host files the policies had read for them (they cross only sanitized, never copied).
    pub host_reads: Vec<String>,
    pub ssh: Command,
    pub host_services: Vec<HostService>,
    pub diagnostics: Vec<Diagnostic>,
}

impl LaunchPlan {
    /// The per-run private directory (S6.4).
    pub fn run_dir(&self) -> &Path {
        Path::new(&self.vm.run_dir)
    }

    /// The forwarded argv, exactly.
    pub fn argv(&self) -> Vec<OsString> {
        self.session
            .argv
            .iter()
            .map(ArgRepr::to_os_string)
            .collect()
    }
}

/// What identifies this run on the host: where its private files go, which ports and ids it
/// uses. Chosen outside the planner (random names, a free port), so a plan can be made for
/// any identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunIdentity {
    pub run_dir: PathBuf,
    pub host_ssh_port: u16,
    pub vsock_cid: u32,
    /// Where the scratch disk image goes when one is configured.
    pub scratch_disk: PathBuf,
}

/// Everything the planner needs that is not a plugin's question.
#[derive(Debug)]
pub struct PlanInputs<'a> {
    pub config: &'a RunConfig,
    pub registry: &'a Registry,
    pub argv: &'a [OsString],
    /// The facts every run has (user, home, project); plugins' requirements add to them.
    pub facts: HostFacts,
    pub identity: RunIdentity,
    pub images_dir: PathBuf,
    pub api_key_set: bool,
    /// The `context_md` text, read already (`None`: disabled).
    pub context_text: Option<String>,
    /// `RLIMIT_MEMLOCK` (soft, bytes; `None` = unlimited).
    pub memlock_limit: Option<u64>,
    pub ssh: Option<PathBuf>,
    pub ssh_keygen: Option<PathBuf>,
    pub timings_file: Option<PathBuf>,
    /// The display variables a clipboard tool needs ([`crate::host::display_environment`]).
    pub display_env: BTreeMap<String, String>,
    /// A plan to be read, not run (`--ccvm-plan`): an unusable KVM becomes an error
    /// diagnostic in the plan instead of a refusal.
    pub inspect: bool,
}

/// An image older than this is worth refreshing (security updates).
const STALE_IMAGE_DAYS: u64 = 30;

/// The questions the planner asks the host on the way.
pub trait HostAccess {
    /// Fills in what a plugin `requirements` asks for.
    fn gather(&mut self, facts: &mut HostFacts, requirements: &Requirements);
    /// What the host says about KVM (asked only when KVM is a candidate).
    fn probe_kvm(&mut self) -> KvmProbe;
    /// The image built in `dir`, if there is one.
    fn built_image(&self, dir: &Path) -> Option<BuiltImage>;
}

/// What the host knows of a built image (from its manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// The `extra_packages` it was built with.
    pub extra_packages: Vec<String>,
    /// The Claude Code it carries (`stub` in test images) and the `claude_code_version` it
    /// was built for (empty in images from before that option: the pinned release).
    pub claude_code: String,
    pub claude_code_requested: String,
    /// Days since it was built (`None` when the host cannot tell).
    pub age_days: Option<u64>,
}

/// The machine half of a plan: the backend, its answer, the acceleration and the image.
struct MachineHalf<'r> {
    backend: &'r Plugin,
    caps: Capabilities,
    accel: AccelPlan,
    image: ImagePlan,
    spec: VmSpec,
    machine: BackendPlan,
}

/// The session half: what the policies planned, the ssh command and the seed.
struct SessionHalf {
    planned: policies::Planned,
    ssh: Command,
    seed: SeedPlan,
    services: Vec<HostService>,
}

/// Plans one launch: the machine, then the session, then the plan that holds both.
pub fn plan(inputs: PlanInputs<'_>, host: &mut dyn HostAccess) -> Result<LaunchPlan, Error> {
    let mut diagnostics: Vec<Diagnostic> = inputs
        .registry
        .warnings()
        .into_iter()
        .map(Diagnostic::warning)
        .collect();
    let mut facts = inputs.facts.clone();
    let machine = plan_machine_half(&inputs, &mut facts, host, &mut diagnostics)?;
    let session = plan_session_half(&inputs, &mut facts, &machine, host, &mut diagnostics)?;
    Ok(assemble(inputs, machine, session, diagnostics))
}

fn plan_machine_half<'r>(
    inputs: &PlanInputs<'r>,
    facts: &mut HostFacts,
    host: &mut dyn HostAccess,
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<MachineHalf<'r>, Error> {
    let config = inputs.config;
    let backend = inputs.registry.backend(&config.backend)?;
    let caps: Capabilities = backend.call(ccvm_plugin_api::method::CAPABILITIES, &())?;
    // Impossible requests are configuration errors; report them before asking the host.
    machine::check_capabilities(
        config,
        backend.name(),
        &caps,
        inputs.memlock_limit,
        diagnostics,
    )?;
    let resolved = match accel::resolve(
        config.acceleration,
        backend.name(),
        &caps,
        &facts.host_arch,
        || host.probe_kvm(),
    ) {
        // A plan made to be read (`--ccvm-plan`) shows what the backend would run, with the
        // reason it cannot run here, so any backend can be inspected anywhere.
        Err(error @ Error::KvmUnusable { .. }) if inputs.inspect => {
            diagnostics.push(Diagnostic::error(format!(
                "{error}; fix: {}",
                error.hint().unwrap_or_default()
            )));
            accel::Resolved {
                acceleration: ccvm_plugin_api::Acceleration::Kvm,
                warning: None,
            }
        }
        resolved => resolved?,
    };
    diagnostics.extend(resolved.warning.clone().map(Diagnostic::warning));
    let image = machine::locate_image(config, &caps, facts, &inputs.images_dir, &*host)?;
    if let Some(days) = image
        .age_days
        .filter(|d| *d > STALE_IMAGE_DAYS && image.present)
    {
        diagnostics.push(Diagnostic::warning(format!(
            "the guest image `{}` was built {days} days ago; `ccvm --ccvm-image build --refresh` \
             rebuilds it from current Debian packages (security updates)",
            image.name
        )));
    }
    if !image.present {
        diagnostics.push(Diagnostic::info(format!(
            "guest image `{}` for {} is not built yet{} ({})",
            image.name,
            image.arch,
            image.wanted(),
            image.dir
        )));
    }
    let spec = machine::vm_spec(
        config,
        resolved.acceleration,
        &image,
        facts,
        &inputs.identity,
    )?;
    let planned = machine::plan_machine(
        backend,
        &spec,
        facts,
        host,
        inputs.inspect.then_some(&mut *diagnostics),
    )?;
    diagnostics.extend(planned.diagnostics.iter().cloned());
    Ok(MachineHalf {
        backend,
        caps,
        accel: AccelPlan {
            requested: config.acceleration,
            resolved: resolved.acceleration,
            reason: resolved.warning,
        },
        image,
        spec,
        machine: planned,
    })
}

fn plan_session_half(
    inputs: &PlanInputs<'_>,
    facts: &mut HostFacts,
    half: &MachineHalf<'_>,
    host: &mut dyn HostAccess,
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<SessionHalf, Error> {
    let config = inputs.config;
    let session = policies::session_info(
        config,
        half.backend.name(),
        &half.caps,
        &half.machine,
        &half.spec.run_dir,
    );
    let planned = policies::plan_policies(inputs.registry, config, &session, facts, host)?;
    diagnostics.extend(planned.diagnostics.iter().cloned());
    if !inputs.api_key_set {
        diagnostics.push(Diagnostic::info(format!(
            "{} is not set: claude will start unauthenticated and ask you to log in",
            config.api_key_variable
        )));
    }
    let forward = policies::remote_forward(&planned.names, &planned.plans)?;
    let ssh = session::ssh_command(
        inputs.ssh.as_deref(),
        facts,
        &inputs.identity.run_dir,
        &half.machine.control,
        &config.api_key_variable,
        &planned.plans,
        forward,
    );
    let context = session::claude_md(config, &planned.plans, inputs.context_text.as_deref());
    let seed = SeedPlan {
        dir: format!("{}/seed", half.spec.run_dir),
        manifest: session::seed_manifest(
            config,
            facts,
            &half.spec,
            &half.machine,
            &planned.plans,
            forward,
        ),
        files: session::seed_files(&planned.plans, context),
    };
    let services = services::checked(
        planned
            .plans
            .iter()
            .flat_map(|p| p.host_services.iter().cloned())
            .collect(),
        &inputs.identity.run_dir,
        facts,
    )?;
    Ok(SessionHalf {
        planned,
        ssh,
        seed,
        services,
    })
}

fn assemble(
    inputs: PlanInputs<'_>,
    machine: MachineHalf<'_>,
    session: SessionHalf,
    diagnostics: Vec<Diagnostic>,
) -> LaunchPlan {
    let SessionHalf {
        planned,
        ssh,
        seed,
        services,
    } = session;
    // The display variables reach the launcher only for a tool that needs them.
    let service_env = if services.is_empty() {
        BTreeMap::new()
    } else {
        inputs.display_env
    };
    LaunchPlan {
        ccvm_version: env!("CARGO_PKG_VERSION"),
        plugin_api_version: ccvm_plugin_api::API_VERSION,
        backend: PluginRef::from(machine.backend),
        policies: planned.refs,
        acceleration: machine.accel,
        image: machine.image,
        vm: machine.spec,
        capabilities: machine.caps,
        host_services: services,
        machine: machine.machine,
        session: SessionPlan {
            argv: inputs.argv.iter().map(ArgRepr::from).collect(),
            api_key_set: inputs.api_key_set,
            debug: inputs.config.debug,
            ssh_keygen: inputs.ssh_keygen.map(|p| p.display().to_string()),
            timings_file: inputs.timings_file,
            service_env,
        },
        seed,
        host_reads: planned.host_reads,
        ssh,
        diagnostics,
    }
}

#[cfg(test)]
mod tests;
