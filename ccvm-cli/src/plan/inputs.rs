//! The planner's inputs from the real host: the base facts, this run's identity, the image
//! cache, what the configuration names on disk; and [`LiveHost`], which answers the
//! planner's questions on the way (a plugin's requirements, KVM, a built image).
//!
//! Reads and lookups only: nothing is created here (the run directory is only named).

use std::ffi::OsString;
use std::path::Path;

use ccvm_plugin_api::{HostFacts, Requirements};

use super::session::BUILTIN_CONTEXT;
use super::{BuiltImage, HostAccess, LaunchPlan, PlanInputs, RunIdentity, plan};
use crate::config::{ConfigError, ContextMd, Env, RunConfig};
use crate::error::Error;
use crate::host::{self, KvmProbe, boundary, dirs, images};
use crate::plugins::Registry;

/// The real host, for [`HostAccess`].
#[derive(Debug)]
pub struct LiveHost<'a> {
    pub env: &'a Env,
}

impl HostAccess for LiveHost<'_> {
    fn gather(&mut self, facts: &mut HostFacts, requirements: &Requirements) {
        host::gather(facts, requirements, self.env);
    }

    fn probe_kvm(&mut self) -> KvmProbe {
        host::probe_kvm()
    }

    fn built_image(&self, dir: &Path) -> Option<BuiltImage> {
        let path = dir.join(ccvm_image::MANIFEST_FILE);
        let file = std::fs::File::open(&path).ok()?;
        let built = file.metadata().and_then(|m| m.modified()).ok();
        let manifest: ccvm_image::ImageManifest = serde_json::from_reader(file).ok()?;
        Some(BuiltImage {
            extra_packages: manifest.recipe.extra_packages,
            claude_code: manifest.claude_code,
            claude_code_requested: manifest.claude_code_requested,
            age_days: built
                .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
                .map(|age| age.as_secs() / 86_400),
        })
    }
}

/// A loopback port that is free right now, for the ssh forward.
fn free_loopback_port() -> Result<u16, Error> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(Error::io(
            "cannot reserve a loopback port on",
            Path::new("127.0.0.1"),
        ))
}

/// This run's identity: a random private run directory (named, not created), a free port,
/// a vsock id and a scratch disk path that no concurrent run shares (S11.2).
pub fn run_identity(config: &RunConfig, env: &Env) -> Result<RunIdentity, Error> {
    let run_dir = dirs::run_dir_candidate(env)?;
    let name = run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(RunIdentity {
        scratch_disk: config.scratch_dir.join(format!("disk-{name}.img")),
        run_dir,
        host_ssh_port: free_loopback_port()?,
        vsock_cid: 3 + std::process::id() % 0xffff,
    })
}

/// The `context_md` text (S5.6).
fn context_text(config: &RunConfig) -> Result<Option<String>, Error> {
    match &config.context_md {
        ContextMd::Builtin => Ok(Some(BUILTIN_CONTEXT.to_owned())),
        ContextMd::Disabled => Ok(None),
        ContextMd::File(path) => std::fs::read_to_string(path).map(Some).map_err(|source| {
            Error::Config(ConfigError::ContextFile {
                path: path.clone(),
                source,
            })
        }),
    }
}

fn memlock_limit() -> Option<u64> {
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit};
    getrlimit(Resource::RLIMIT_MEMLOCK)
        .ok()
        .and_then(|(soft, _)| (soft != RLIM_INFINITY).then_some(soft))
}

/// Gathers every input of [`plan`] from this host.
pub fn gather<'a>(
    config: &'a RunConfig,
    registry: &'a Registry,
    env: &Env,
    argv: &'a [OsString],
) -> Result<PlanInputs<'a>, Error> {
    let facts = host::base_facts(env)?;
    if config.vm_disk_gib > 0
        && env.get("CCVM_SCRATCH_ALLOW_TMPFS").is_none_or(|v| v != "1")
        && let Some(kind) = dirs::ram_backed(&config.scratch_dir)
    {
        return Err(Error::ScratchInRam {
            dir: config.scratch_dir.clone(),
            kind,
        });
    }
    let identity = run_identity(config, env)?;
    let images_dir = images::images_dir(env)?;
    boundary::check_project_holds_none_of(
        Path::new(&facts.project_dir),
        &[
            (
                "the run directory",
                identity.run_dir.parent().unwrap_or(Path::new("/")),
            ),
            ("the image cache", &images_dir),
        ],
    )?;
    Ok(PlanInputs {
        config,
        registry,
        argv,
        facts,
        identity,
        images_dir,
        api_key_set: env
            .get(&config.api_key_variable)
            .is_some_and(|v| !v.is_empty()),
        context_text: context_text(config)?,
        memlock_limit: memlock_limit(),
        ssh: host::find_program("ssh", env),
        ssh_keygen: host::find_program("ssh-keygen", env),
        timings_file: env.abs_path("CCVM_TIMINGS"),
        display_env: host::display_environment(env),
        inspect: false,
    })
}

/// Plans a launch on this host, as `--ccvm-plan`, the doctor and a session do.
pub fn plan_here(
    config: &RunConfig,
    registry: &Registry,
    env: &Env,
    argv: &[OsString],
) -> Result<LaunchPlan, Error> {
    let inputs = gather(config, registry, env, argv)?;
    plan(inputs, &mut LiveHost { env })
}

/// [`plan_here`] for `--ccvm-plan`: a backend that needs a KVM this host cannot give still
/// gets its plan, with the reason as an error diagnostic.
pub fn plan_to_inspect(
    config: &RunConfig,
    registry: &Registry,
    env: &Env,
    argv: &[OsString],
) -> Result<LaunchPlan, Error> {
    let inputs = PlanInputs {
        inspect: true,
        ..gather(config, registry, env, argv)?
    };
    plan(inputs, &mut LiveHost { env })
}
