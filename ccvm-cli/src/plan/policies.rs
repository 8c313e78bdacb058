//! The policies: what each is told about the session, their two phases, and the one ssh
//! forward they may ask for.

use std::path::Path;

use ccvm_plugin_api::{
    BackendPlan, Capabilities, Diagnostic, HostFacts, NetworkAttachment, PolicyInput, PolicyPlan,
    PolicyPlanRequest, RemoteForward, Requirements, SessionInfo, method,
};
use ccvm_policy_clipboard::ClipboardSettings;
use ccvm_policy_egress::EgressSettings;

use super::{HostAccess, PluginRef};
use crate::config::RunConfig;
use crate::error::Error;
use crate::host::expand_home;
use crate::plugins::Registry;

/// What every policy may know about the session.
pub fn session_info(
    config: &RunConfig,
    backend: &str,
    caps: &Capabilities,
    machine: &BackendPlan,
    run_dir: &str,
) -> SessionInfo {
    let (guest_dns, guest_gateway) = match &machine.network {
        NetworkAttachment::UserMode { dns, gateway, .. } => {
            (Some(dns.clone()), Some(gateway.clone()))
        }
        NetworkAttachment::None => (None, None),
    };
    SessionInfo {
        backend: backend.to_owned(),
        writable_cwd: config.writable_cwd,
        persist_claude_projects: config.persist_claude_projects,
        scratch_disk: config.vm_disk_gib > 0,
        guest_network: caps.guest_network,
        shell: config.shell,
        guest_dns,
        guest_gateway,
        run_dir: Some(run_dir.to_owned()),
    }
}

/// A policy's settings: the built-ins get their typed config section, a third-party policy
/// its `[plugins.<name>]` table (an empty object when there is none).
fn policy_settings(name: &str, config: &RunConfig) -> serde_json::Value {
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
    value.expect("plain settings structs always serialize")
}

/// The policies' answers, in registry order.
#[derive(Debug, Default)]
pub struct Planned {
    pub names: Vec<String>,
    pub refs: Vec<PluginRef>,
    pub plans: Vec<PolicyPlan>,
    /// Host files the policies had read for them (absolute).
    pub host_reads: Vec<String>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Every policy's requirements (gathered for all before any plans, so a policy sees the
/// facts of them all), then every policy's plan.
pub fn plan_policies(
    registry: &Registry,
    config: &RunConfig,
    session: &SessionInfo,
    facts: &mut HostFacts,
    host: &mut dyn HostAccess,
) -> Result<Planned, Error> {
    let mut planned = Planned::default();
    let mut inputs = Vec::new();
    for policy in registry.policies() {
        let input = PolicyInput {
            settings: policy_settings(policy.name(), config),
            session: session.clone(),
        };
        let requirements: Requirements = policy.call(method::REQUIREMENTS, &input)?;
        host.gather(facts, &requirements);
        let home = Path::new(&facts.home).to_owned();
        planned.host_reads.extend(
            requirements
                .read_files
                .iter()
                .map(|f| expand_home(f, &home).display().to_string()),
        );
        inputs.push((policy, input));
    }
    for (policy, input) in inputs {
        let plan: PolicyPlan = policy.call(
            method::PLAN,
            &PolicyPlanRequest {
                input,
                facts: facts.clone(),
            },
        )?;
        planned.diagnostics.extend(plan.diagnostics.iter().cloned());
        planned.names.push(policy.name().to_owned());
        planned.refs.push(PluginRef::from(policy));
        planned.plans.push(plan);
    }
    for name in config.plugin_settings.keys() {
        if !planned.names.contains(name) {
            planned.diagnostics.push(Diagnostic::warning(format!(
                "the config has a [plugins.{name}] table but no policy named `{name}` is installed"
            )));
        }
    }
    Ok(planned)
}

/// The one reverse forward the policies ask for (S8, S10.4): sshd can permit exactly one, so
/// two are a conflict, and an address that is not plain is a broken plugin.
pub fn remote_forward<'a>(
    names: &[String],
    plans: &'a [PolicyPlan],
) -> Result<Option<&'a RemoteForward>, Error> {
    let asking: Vec<(&str, &RemoteForward)> = names
        .iter()
        .zip(plans)
        .filter_map(|(name, plan)| plan.remote_forward.as_ref().map(|f| (name.as_str(), f)))
        .collect();
    if asking.len() > 1 {
        let names: Vec<&str> = asking.iter().map(|(name, _)| *name).collect();
        return Err(Error::PluginPlan {
            plugin: format!("the policies {}", names.join(", ")),
            problem: "each asks for an ssh reverse forward, but sshd permits exactly one \
                      (disable all but one of them)"
                .to_owned(),
        });
    }
    let Some((name, forward)) = asking.first() else {
        return Ok(None);
    };
    for address in [&forward.listen, &forward.target] {
        RemoteForward::check_address(address).map_err(|e| Error::PluginPlan {
            plugin: format!("policy `{name}`"),
            problem: format!("an unusable ssh reverse forward: {e}"),
        })?;
    }
    Ok(Some(forward))
}
