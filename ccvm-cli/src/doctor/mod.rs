//! `ccvm --ccvm-doctor`: every prerequisite of a session and of an image build, each with
//! what was found and, when something is wrong, the fix; with destinations, whether a session
//! could reach each through the egress filter and why not. Reads only; changes nothing.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::Path;

use ccvm_plugin_api::{NetworkAttachment, SetupStep};

use crate::config::{Env, RunConfig};
use crate::error::Error;
use crate::plan::{self, accel};
use crate::{host, plugins};

pub mod reach;

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    /// Works, with a caveat or only for some setups.
    Warn,
    /// A session with this configuration cannot start.
    Fail,
    /// A destination the egress filter would block (the session itself can start).
    Denied,
}

struct Report {
    lines: Vec<(Level, String, String)>,
}

impl Report {
    fn add(&mut self, level: Level, what: &str, detail: String) {
        self.lines.push((level, what.to_owned(), detail));
    }

    fn program(&mut self, env: &Env, name: &str, package: &str, why: &str, required: bool) {
        match host::find_program(name, env).ok_or(()) {
            Ok(path) => self.add(Level::Ok, name, format!("{} ({why})", path.display())),
            Err(_) => self.add(
                if required { Level::Fail } else { Level::Warn },
                name,
                format!("not found ({why}); fix: install the Debian/Ubuntu package `{package}`"),
            ),
        }
    }
}

/// Runs every check, then explains each destination; the text and whether a session can
/// start.
pub fn run(
    config: &RunConfig,
    env: &Env,
    destinations: &[OsString],
) -> Result<(String, bool), Error> {
    let destinations = destinations
        .iter()
        .filter(|d| d.as_os_str() != "--")
        .map(|d| {
            let text = d.to_str().ok_or_else(|| {
                Error::usage(format!(
                    "--ccvm-doctor: the destination {d:?} is not valid UTF-8"
                ))
            })?;
            reach::parse(text).map_err(|e| Error::usage(format!("--ccvm-doctor: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut report = Report { lines: Vec::new() };
    let dirs = plugins::search_dirs(config, env);
    let registry = plugins::Registry::discover(&dirs)?;
    for warning in registry.warnings() {
        report.add(Level::Warn, "plugins", warning);
    }
    // The backend itself says what its machine needs (S3.4): plan a session and report the
    // programs it would run, or why it cannot.
    let planned = plan::plan_here(config, &registry, env, &[]);
    match &planned {
        Ok(plan) => {
            report.add(
                Level::Ok,
                "backend",
                format!(
                    "`{}` {} ({})",
                    plan.backend.name, plan.backend.version, plan.backend.source
                ),
            );
            let helpers = plan.machine.helpers.iter().map(|h| &h.command);
            for command in std::iter::once(&plan.machine.hypervisor).chain(helpers) {
                let name = Path::new(&command.program)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                report.add(
                    Level::Ok,
                    &name,
                    format!("{} (backend `{}`)", command.program, plan.backend.name),
                );
            }
        }
        Err(e) => report.add(
            Level::Fail,
            "backend",
            format!(
                "`{}` cannot start a session: {e}; fix: {}",
                config.backend,
                e.hint().unwrap_or_default()
            ),
        ),
    }

    if let Err(e) = host::refuse_root() {
        report.add(
            Level::Fail,
            "user",
            format!("{e}; fix: {}", e.hint().unwrap_or_default()),
        );
    }

    report.program(env, "ssh", "openssh-client", "the session channel", true);
    report.program(env, "ssh-keygen", "openssh-client", "per-run keys", true);
    report.program(
        env,
        "virtiofsd",
        "virtiofsd (or `cargo install virtiofsd`)",
        "only for share_transport = \"virtio-fs\"",
        false,
    );

    let probe = host::probe_kvm();
    match accel::kvm_problem(&probe) {
        None => report.add(Level::Ok, "acceleration", "KVM is usable".to_owned()),
        Some(problem) => report.add(
            Level::Warn,
            "acceleration",
            format!(
                "KVM is not usable: {}; sessions run under TCG (slower); fix: {}",
                problem.reason,
                accel::or_tcg(&problem.fix)
            ),
        ),
    }

    // The image for the backend's guest, which may be another architecture's (`virt`).
    let arch = planned
        .as_ref()
        .map_or(std::env::consts::ARCH, |p| p.image.arch.as_str());
    let dir = ccvm_image::named_dir(&host::images::images_dir(env)?, &config.image, arch);
    if arch != std::env::consts::ARCH {
        let problem = match ccvm_image::require_foreign_exec(arch) {
            Err(e) => Some((e.to_string(), e.hint())),
            Ok(()) => host::images::guest_agent(env, arch)
                .err()
                .map(|e| (e.to_string(), e.hint())),
        };
        match problem {
            None => report.add(
                Level::Ok,
                "foreign image",
                format!(
                    "{arch} images can be built on this {} host (qemu-user through binfmt_misc, \
                     an {arch} guest agent)",
                    std::env::consts::ARCH
                ),
            ),
            Some((problem, hint)) => report.add(
                Level::Warn,
                "foreign image",
                format!("{problem}; fix: {}", hint.unwrap_or_default()),
            ),
        }
    }
    match std::fs::read_to_string(dir.join(ccvm_image::MANIFEST_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<ccvm_image::ImageManifest>(&t).ok())
    {
        Some(m) => report.add(
            Level::Ok,
            "guest image",
            format!(
                "`{}` for {arch}: Claude Code {}, kernel {} ({})",
                config.image,
                m.claude_code,
                m.kernel_release,
                dir.display()
            ),
        ),
        None => report.add(
            Level::Warn,
            "guest image",
            format!(
                "`{}` for {arch} is not built ({}); ccvm builds it on first use, or now with \
                 `ccvm --ccvm-image build{}`",
                config.image,
                dir.display(),
                if arch == std::env::consts::ARCH {
                    String::new()
                } else {
                    format!(" --arch {arch}")
                }
            ),
        ),
    }
    // What a build of this image needs (arch-test for another architecture's), as the build
    // itself checks it.
    for (name, package) in ccvm_image::tools(false, arch) {
        report.program(env, name, package, "building images", false);
    }
    if let Err(e) = ccvm_image::require_unprivileged_build() {
        report.add(
            Level::Warn,
            "image build",
            format!("{e}; fix: {}", e.hint().unwrap_or_default()),
        );
    }
    match host::images::guest_agent(env, arch) {
        Ok(path) => report.add(
            Level::Ok,
            "guest agent",
            format!("{} (building images)", path.display()),
        ),
        Err(e) => report.add(
            Level::Warn,
            "guest agent",
            format!("{e}; fix: {}", e.hint().unwrap_or_default()),
        ),
    }

    // S6.4: where this run's keys and seed would go, checked as a launch checks it.
    match host::dirs::run_dir_candidate(env) {
        Ok(dir) => report.add(
            Level::Ok,
            "run directory",
            format!(
                "{} (private, random name per run{})",
                dir.parent().unwrap_or(Path::new("/")).display(),
                if env.abs_path("XDG_RUNTIME_DIR").is_some() {
                    ""
                } else {
                    "; XDG_RUNTIME_DIR is unset"
                }
            ),
        ),
        Err(e) => report.add(
            Level::Fail,
            "run directory",
            format!("{e}; fix: {}", e.hint().unwrap_or_default()),
        ),
    }
    match clipboard(config.clipboard_images, env) {
        Ok(detail) => report.add(Level::Ok, "clipboard", detail),
        Err(detail) => report.add(Level::Warn, "clipboard", detail),
    }
    report.add(
        Level::Ok,
        "host-run files",
        if config.writable_cwd {
            "the project is writable, so the agent can change files your host runs later \
             (.git/hooks, .git/config, .envrc, .claude/settings.json, .vscode/tasks.json, …); \
             ccvm names every such change when the session ends. Use --read-only-cwd to rule \
             it out"
                .to_owned()
        } else {
            "the project is read-only: nothing the agent writes reaches the host".to_owned()
        },
    );

    if let Ok(plan) = &planned {
        egress_line(&mut report, plan);
    }
    if !destinations.is_empty() {
        explain_destinations(&mut report, planned.as_ref().ok(), &destinations, env);
    }

    let mut out = String::new();
    let mut ready = true;
    for (level, what, detail) in &report.lines {
        let tag = match level {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
            Level::Denied => "deny",
        };
        ready &= *level != Level::Fail;
        out.push_str(&format!("{tag}  {what:<14} {detail}\n"));
    }
    out.push_str(if ready {
        "ccvm can start a session here.\n"
    } else {
        "ccvm cannot start a session here until every FAIL line is fixed.\n"
    });
    Ok((out, ready))
}

/// The planned egress filter: open, or locked; a warning instead of "ok" when an entry opens
/// the host's loopback through the guest's gateway (S7.2).
fn egress_line(report: &mut Report, plan: &plan::LaunchPlan) {
    let Some(rules) = firewall(plan) else {
        report.add(
            Level::Ok,
            "egress",
            "open: egress.allowlist is empty".to_owned(),
        );
        return;
    };
    let locked = format!(
        "locked to an allowlist ({} address rules, no DNS in the guest); names are resolved on \
         this host now, as a launch would",
        rules.allow.len()
    );
    let gateway = match &plan.seed.manifest.network {
        NetworkAttachment::UserMode { gateway, .. } => Some(gateway.as_str()),
        NetworkAttachment::None => None,
    };
    match gateway.and_then(|g| ccvm_policy_egress::gateway_warning(&rules.allow, g)) {
        Some(warning) => report.add(Level::Warn, "egress", format!("{locked}; but {warning}")),
        None => report.add(Level::Ok, "egress", locked),
    }
}

fn firewall(plan: &plan::LaunchPlan) -> Option<&ccvm_plugin_api::FirewallRules> {
    plan.seed
        .manifest
        .setup_steps
        .iter()
        .find_map(|step| match step {
            SetupStep::Firewall(rules) => Some(rules),
            _ => None,
        })
}

/// One line per destination: reachable or denied, and why, from the filter the plan holds.
fn explain_destinations(
    report: &mut Report,
    plan: Option<&plan::LaunchPlan>,
    destinations: &[reach::Destination],
    env: &Env,
) {
    let Some(plan) = plan else {
        for destination in destinations {
            report.add(
                Level::Warn,
                &destination.text,
                "cannot tell: no session can be planned (see the backend line)".to_owned(),
            );
        }
        return;
    };
    let rules = firewall(plan);
    let guest_network = !matches!(plan.seed.manifest.network, NetworkAttachment::None);
    let config_file = crate::config::config_files(env)
        .last()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let names: Vec<&String> = destinations
        .iter()
        .filter(|d| d.host.parse::<IpAddr>().is_err())
        .map(|d| &d.host)
        .collect();
    let resolved = host::resolve_all(&names);
    for destination in destinations {
        let addresses = match destination.host.parse::<IpAddr>() {
            Ok(address) => vec![address],
            Err(_) => resolved.get(&destination.host).cloned().unwrap_or_default(),
        };
        let verdict = reach::explain(destination, &addresses, rules, guest_network, &config_file);
        report.add(
            if verdict.reachable {
                Level::Ok
            } else {
                Level::Denied
            },
            &destination.text,
            verdict.explanation,
        );
    }
}

/// The clipboard line: `Ok` with the tool the bridge would use, `Err` with why image paste
/// will not work.
fn clipboard(images: bool, env: &Env) -> Result<String, String> {
    if !images {
        return Ok(
            "image paste is off (clipboard.images = false or CCVM_CLIPBOARD_IMAGES=0)".to_owned(),
        );
    }
    let mut facts = ccvm_plugin_api::HostFacts::default();
    crate::host::gather(
        &mut facts,
        &ccvm_policy_clipboard::bridge_requirements(),
        env,
    );
    match ccvm_policy_clipboard::host_tool(&facts) {
        Ok(tool) => Ok(format!(
            "{} ({} is set): Ctrl+V in the VM pastes images from this clipboard ({} only; \
             never text)",
            tool.path,
            tool.display_variable,
            ccvm_plugin_api::clipboard::IMAGE_TYPES.join(", ")
        )),
        Err(why) => Err(format!("image paste into the VM will not work: {why}")),
    }
}
