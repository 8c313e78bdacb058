//! The session: the guest CLAUDE.md's header (S5.6), the ssh command (S6.2), the seed
//! manifest and files.

use std::path::Path;

use ccvm_plugin_api::guest::paths::{SCRATCH_MOUNT, SEED_TAG};
use ccvm_plugin_api::guest::setup::scratch_header_line;
use ccvm_plugin_api::seed::{CONTEXT_FILE, GuestUser, SEED_VERSION, SeedManifest, SessionMode};
use ccvm_plugin_api::{
    BackendPlan, Command, ControlEndpoint, HostFacts, PolicyPlan, RemoteForward, SeedFile,
    SeedSource, SetupStep, VmSpec,
};

use super::HOST_KEY_ALIAS;
use crate::config::RunConfig;

/// ccvm's built-in text for the end of the guest CLAUDE.md (`context_md` default).
pub const BUILTIN_CONTEXT: &str = "\
You are working inside a disposable VM. Tools you install, files outside the project and \
anything in /tmp vanish when the session ends. Prefer the project's own scripts and pinned \
dependencies so that what works here also works on the user's machine.";

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
    // The guest swaps this line for one that says so if it cannot set the disk up (S9.2).
    lines.push(if config.vm_disk_gib > 0 {
        scratch_header_line(config.vm_disk_gib, None)
    } else {
        "- There is no /scratch disk; large temporary files go to RAM (/tmp).".to_owned()
    });
    for paragraph in policies.iter().flat_map(|p| &p.context) {
        lines.push(format!("- {paragraph}"));
    }
    lines.join("\n") + "\n"
}

/// What is appended to the guest `~/.claude/CLAUDE.md`: the session header, then the
/// context text (S5.6).
pub fn claude_md(config: &RunConfig, policies: &[PolicyPlan], context: Option<&str>) -> String {
    let mut text = session_header(config, policies);
    if let Some(context) = context {
        text.push('\n');
        text.push_str(context.trim_end());
        text.push('\n');
    }
    text
}

/// The policies' seed files, then the CLAUDE.md addition.
pub fn seed_files(policies: &[PolicyPlan], claude_md: String) -> Vec<SeedFile> {
    policies
        .iter()
        .flat_map(|p| p.seed_files.iter().cloned())
        .chain([SeedFile {
            path: CONTEXT_FILE.to_owned(),
            source: SeedSource::Inline { content: claude_md },
        }])
        .collect()
}

/// `seed.json`: the agent's account, the project, the shares as attached, and every setup
/// step, with sshd's one permitted forward from `forward` alone.
pub fn seed_manifest(
    config: &RunConfig,
    facts: &HostFacts,
    spec: &VmSpec,
    machine: &BackendPlan,
    policies: &[PolicyPlan],
    forward: Option<&RemoteForward>,
) -> SeedManifest {
    // The scratch disk first: the guest sets it up before writing the session header.
    let scratch = spec
        .scratch_disk
        .as_ref()
        .map(|disk| SetupStep::ScratchDisk {
            mount: SCRATCH_MOUNT.to_owned(),
            size_gib: disk.size_gib,
        });
    // sshd's permitted forward comes from the one `remote_forward` alone, the scratch disk
    // from ccvm's own plan alone: a policy cannot ask for either as a step.
    let from_policies = policies
        .iter()
        .flat_map(|p| p.setup_steps.iter().cloned())
        .filter(|step| {
            !matches!(
                step,
                SetupStep::SshdPermitListen { .. } | SetupStep::ScratchDisk { .. }
            )
        });
    let mut setup_steps: Vec<SetupStep> = scratch.into_iter().chain(from_policies).collect();
    setup_steps.extend(forward.map(|forward| SetupStep::SshdPermitListen {
        listen: forward.listen.clone(),
    }));
    SeedManifest {
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
            .filter(|s| s.tag != SEED_TAG)
            .cloned()
            .collect(),
        writable_cwd: config.writable_cwd,
        api_key_variable: config.api_key_variable.clone(),
        guest_ssh_port: spec.guest_ssh_port,
        network: machine.network.clone(),
        setup_steps,
    }
}

pub fn ssh_command(
    program: Option<&Path>,
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
    // The default's first choice (sntrup761x25519) costs the emulated guest ~0.4 s per
    // session; ssh runs over a loopback forward into a VM it keyed a moment ago.
    option("KexAlgorithms", "curve25519-sha256".into());
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
        // Found on the trusted PATH by the host; the launcher refuses a bare name.
        program: program.map_or_else(|| "ssh".to_owned(), |p| p.display().to_string()),
        args,
        ..Command::default()
    }
}
