//! The machine: what the backend can do, which image boots, the `VmSpec` ccvm asks for, and
//! the backend's plan for it.

use std::path::Path;

use ccvm_plugin_api::guest::paths::{PROJECT_TAG, PROJECTS_TAG, SEED_DIR, SEED_TAG, SSH_PORT};
use ccvm_plugin_api::{
    Acceleration, BackendPlan, BackendPlanRequest, Capabilities, Diagnostic, DiskSpec, HostFacts,
    Requirements, ShareSpec, VmSpec, method,
};

use super::{BuiltImage, HostAccess, ImagePlan, RunIdentity};
use crate::config::RunConfig;
use crate::error::Error;
use crate::host::utf8;
use crate::plugins::Plugin;

/// Kernel command line words every backend gets. `init_on_alloc=0`: Debian zeroes every page
/// on allocation by default, which under TCG costs seconds of a boot that touches gigabytes
/// (freed pages of this single-user, ephemeral guest hold only its own data).
/// `cryptomgr.notests`: the crypto self-tests, run at each algorithm's first use, are a
/// build check, not a runtime one.
const GENERIC_CMDLINE: [&str; 4] = ["quiet", "panic=-1", "init_on_alloc=0", "cryptomgr.notests"];

/// S3.5: a request the backend cannot serve is refused naming what is missing; a setting it
/// ignores is warned about.
pub fn check_capabilities(
    config: &RunConfig,
    backend: &str,
    caps: &Capabilities,
    memlock_limit: Option<u64>,
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
    if config.lock_guest_memory
        && let Some(warning) = memlock_warning(memlock_limit, config.memory_mib)
    {
        diagnostics.push(Diagnostic::warning(warning));
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

/// Whether `built` carries the Claude Code `wanted` names: that version, or one resolved for
/// `latest` (a newer release comes with `--ccvm-image build --refresh`, not on its own). A
/// test image's stub stands in for any.
fn carries_the_configured_claude(built: &BuiltImage, wanted: &str) -> bool {
    built.claude_code == "stub"
        || if wanted == ccvm_image::claude::LATEST {
            built.claude_code_requested == wanted
        } else {
            built.claude_code == wanted
        }
}

/// The configured image for the backend's guest architecture, and whether it is built.
pub fn locate_image(
    config: &RunConfig,
    caps: &Capabilities,
    facts: &HostFacts,
    images_dir: &Path,
    host: &dyn HostAccess,
) -> Result<ImagePlan, Error> {
    let arch = if caps.guest_arch == "host" {
        facts.host_arch.clone()
    } else {
        caps.guest_arch.clone()
    };
    let dir = ccvm_image::named_dir(images_dir, &config.image, &arch);
    let built = host.built_image(&dir);
    Ok(ImagePlan {
        name: config.image.clone(),
        present: built.as_ref().is_some_and(|b| {
            b.extra_packages == config.extra_packages
                && carries_the_configured_claude(b, &config.claude_code_version)
        }),
        extra_packages: config.extra_packages.clone(),
        claude_code_version: config.claude_code_version.clone(),
        age_days: built.and_then(|b| b.age_days),
        dir: utf8(&dir, "the image directory")?,
        arch,
    })
}

/// The directories shared into the guest, in mount order: the seed, the project, and
/// `~/.claude/projects` when it persists.
fn shares(config: &RunConfig, facts: &HostFacts, run: &str) -> Vec<ShareSpec> {
    let mut shares = vec![
        ShareSpec {
            tag: SEED_TAG.to_owned(),
            host_path: format!("{run}/seed"),
            guest_path: SEED_DIR.to_owned(),
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
    shares
}

/// The machine ccvm asks the backend for.
pub fn vm_spec(
    config: &RunConfig,
    acceleration: Acceleration,
    image: &ImagePlan,
    facts: &HostFacts,
    identity: &RunIdentity,
) -> Result<VmSpec, Error> {
    let run = utf8(&identity.run_dir, "the run directory")?;
    let scratch_disk = (config.vm_disk_gib > 0)
        .then(|| {
            utf8(&identity.scratch_disk, "the scratch disk path").map(|path| DiskSpec {
                path,
                size_gib: config.vm_disk_gib,
            })
        })
        .transpose()?;
    Ok(VmSpec {
        memory_mib: config.memory_mib,
        cpus: config.cpus.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            crate::config::default_cpus(acceleration == Acceleration::Tcg, cores)
        }),
        acceleration,
        kernel: format!("{}/{}", image.dir, ccvm_image::KERNEL_FILE),
        initrd: format!("{}/{}", image.dir, ccvm_image::INITRD_FILE),
        root_image: format!("{}/{}", image.dir, ccvm_image::ROOT_FILE),
        kernel_cmdline: GENERIC_CMDLINE.map(str::to_owned).to_vec(),
        shares: shares(config, facts, &run),
        share_transport: config.share_transport,
        scratch_disk,
        guest_ssh_port: SSH_PORT,
        host_ssh_port: identity.host_ssh_port,
        vsock_cid: identity.vsock_cid,
        hypervisor_sandbox: config.hypervisor_sandbox,
        lock_guest_memory: config.lock_guest_memory,
        run_dir: run,
    })
}

/// The backend's two phases: what it needs to know, then its plan.
pub fn plan_machine(
    backend: &Plugin,
    spec: &VmSpec,
    facts: &mut HostFacts,
    host: &mut dyn HostAccess,
    inspect: Option<&mut Vec<Diagnostic>>,
) -> Result<BackendPlan, Error> {
    let requirements: Requirements = backend.call(method::REQUIREMENTS, spec)?;
    host.gather(facts, &requirements);
    let request = |facts: &HostFacts| BackendPlanRequest {
        spec: spec.clone(),
        facts: facts.clone(),
    };
    let planned = backend.call(method::PLAN, &request(facts));
    // A plan to be read that failed for a program this host lacks is made again with the
    // programs named by their bare names, and the failure becomes its error diagnostic.
    let (Err(error), Some(diagnostics)) = (&planned, inspect) else {
        return planned;
    };
    let mut named = facts.clone();
    let mut missing = false;
    for (name, path) in &mut named.programs {
        if path.is_none() && requirements.programs.contains(name) {
            *path = Some(name.clone());
            missing = true;
        }
    }
    if !missing {
        return planned;
    }
    diagnostics.push(Diagnostic::error(error.to_string()));
    backend.call(method::PLAN, &request(&named))
}

#[cfg(test)]
mod claude_tests {
    use super::*;

    fn built(claude_code: &str, requested: &str) -> BuiltImage {
        BuiltImage {
            extra_packages: Vec::new(),
            claude_code: claude_code.to_owned(),
            claude_code_requested: requested.to_owned(),
            age_days: None,
        }
    }

    /// A pinned or exact version needs that version; `latest` needs an image built for
    /// `latest` (whichever release that was), not one that happens to carry some version.
    #[test]
    fn an_image_matches_the_configured_claude_code_version() {
        let pinned = ccvm_image::CLAUDE_CODE_VERSION;
        // An image from before the option: the pinned release, nothing requested.
        assert!(carries_the_configured_claude(&built(pinned, ""), pinned));
        assert!(!carries_the_configured_claude(&built(pinned, ""), "latest"));
        assert!(!carries_the_configured_claude(
            &built(pinned, pinned),
            "2.1.334"
        ));
        assert!(carries_the_configured_claude(
            &built("2.1.334", "latest"),
            "latest"
        ));
        assert!(carries_the_configured_claude(
            &built("2.1.334", "2.1.334"),
            "2.1.334"
        ));
        assert!(!carries_the_configured_claude(
            &built("2.1.334", "latest"),
            pinned
        ));
        assert!(carries_the_configured_claude(&built("stub", ""), "latest"));
    }
}
