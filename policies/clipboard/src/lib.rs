//! The `clipboard` policy: the image-only paste bridge (S8), planned as data.
//!
//! When `clipboard.images` is on and the host has a clipboard tool that can reach a display
//! (`wl-paste` with `WAYLAND_DISPLAY`, else `xclip` with `DISPLAY`), the plan holds three
//! things: a host service (ccvm's responder on a Unix socket in the private run directory,
//! reading the host clipboard with that tool), the one reverse forward from the guest's
//! loopback ([`ccvm_plugin_api::clipboard::GUEST_LISTEN`], where the guest's `xclip` and
//! `wl-paste` stand-ins connect) to that socket, and an info line saying so. With no usable
//! tool the bridge is silently inert (S8.3): no service, no forward, and the stand-ins fail
//! like a clipboard without an image.
//!
//! Pure: never touches the clipboard, never decides what crosses (the responder and the
//! shared contract in `ccvm_plugin_api::clipboard` do).
#![forbid(unsafe_code)]

use ccvm_plugin_api::{
    Diagnostic, HostFacts, HostService, HostServiceKind, PluginError, Policy, PolicyInput,
    PolicyPlan, RemoteForward, Requirements, clipboard,
};
use serde::{Deserialize, Serialize};

/// The `[clipboard]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClipboardSettings {
    pub images: bool,
}

impl Default for ClipboardSettings {
    fn default() -> Self {
        ClipboardSettings { images: true }
    }
}

/// Host tools that can read an image from the clipboard, most preferred first.
pub const HOST_TOOLS: [&str; 2] = ["wl-paste", "xclip"];

/// The variables that say which display, and so which tool, can reach a clipboard.
pub const DISPLAY_VARIABLES: [&str; 2] = ["WAYLAND_DISPLAY", "DISPLAY"];

/// The responder's socket, in the run directory.
pub const SOCKET_NAME: &str = "clipboard.sock";

/// The host service's name in the plan.
pub const SERVICE_NAME: &str = "clipboard-images";

/// The policy.
#[derive(Debug, Default)]
pub struct Clipboard;

fn settings(input: &PolicyInput) -> Result<ClipboardSettings, PluginError> {
    serde_json::from_value(input.settings.clone())
        .map_err(|e| PluginError::invalid(format!("clipboard settings: {e}")))
}

/// The tool the bridge uses: its name, its absolute path and the variable that lets it reach
/// a display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTool<'a> {
    pub name: &'static str,
    pub path: &'a str,
    pub display_variable: &'static str,
}

/// Why the bridge is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoBridge {
    /// Neither `wl-paste` nor `xclip` was found in the trusted `PATH` entries.
    NoTool,
    /// A tool was found, but not the display it needs: `wl-paste` without `WAYLAND_DISPLAY`,
    /// `xclip` without `DISPLAY` (a console or ssh login, no desktop).
    NoDisplay { found: Vec<&'static str> },
}

impl std::fmt::Display for NoBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoBridge::NoTool => f.write_str(
                "neither `wl-paste` (package wl-clipboard) nor `xclip` (package xclip) was \
                 found; install the one for your desktop (Wayland: wl-clipboard, X11: xclip)",
            ),
            NoBridge::NoDisplay { found } => write!(
                f,
                "found {} but no display to read a clipboard from: `wl-paste` needs \
                 WAYLAND_DISPLAY, `xclip` needs DISPLAY, and neither is usable here (run ccvm \
                 from a terminal of your desktop session)",
                found
                    .iter()
                    .map(|t| format!("`{t}`"))
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        }
    }
}

/// The host tool the bridge uses (`wl-paste` with `WAYLAND_DISPLAY`, then `xclip` with
/// `DISPLAY`), or why there is none. A tool without its display could read no clipboard,
/// so it opens no forward.
pub fn host_tool(facts: &HostFacts) -> Result<HostTool<'_>, NoBridge> {
    let candidates = [("wl-paste", "WAYLAND_DISPLAY"), ("xclip", "DISPLAY")];
    for (name, variable) in candidates {
        if let Some(path) = facts.program(name)
            && facts.variable_set(variable)
        {
            return Ok(HostTool {
                name,
                path,
                display_variable: variable,
            });
        }
    }
    let found: Vec<&'static str> = HOST_TOOLS
        .into_iter()
        .filter(|tool| facts.program(tool).is_some())
        .collect();
    if found.is_empty() {
        Err(NoBridge::NoTool)
    } else {
        Err(NoBridge::NoDisplay { found })
    }
}

/// What the policy asks the host for when the bridge is on.
pub fn bridge_requirements() -> Requirements {
    Requirements {
        programs: HOST_TOOLS.map(str::to_owned).to_vec(),
        variables: DISPLAY_VARIABLES.map(str::to_owned).to_vec(),
        ..Requirements::default()
    }
}

impl Policy for Clipboard {
    const NAME: &'static str = "clipboard";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "image-only clipboard paste bridge";

    fn requirements(&self, input: &PolicyInput) -> Result<Requirements, PluginError> {
        Ok(if settings(input)?.images {
            bridge_requirements()
        } else {
            Requirements::default()
        })
    }

    fn plan(&self, input: &PolicyInput, facts: &HostFacts) -> Result<PolicyPlan, PluginError> {
        let mut plan = PolicyPlan::default();
        if !settings(input)?.images {
            return Ok(plan);
        }
        // An old host that names no run directory gets no bridge rather than a guessed path.
        let (Ok(tool), Some(run_dir)) = (host_tool(facts), &input.session.run_dir) else {
            return Ok(plan);
        };
        let socket = format!("{}/{SOCKET_NAME}", run_dir.trim_end_matches('/'));
        plan.host_services.push(HostService {
            name: SERVICE_NAME.to_owned(),
            kind: HostServiceKind::ClipboardImages {
                socket: socket.clone(),
                tool: tool.path.to_owned(),
            },
        });
        plan.remote_forward = Some(RemoteForward {
            listen: clipboard::GUEST_LISTEN.to_owned(),
            target: socket,
        });
        plan.diagnostics.push(Diagnostic::info(format!(
            "clipboard: images pasted in the VM come from the host clipboard through `{}` \
             ({} is set); only {} cross, never text",
            tool.path,
            tool.display_variable,
            clipboard::IMAGE_TYPES.join(", ")
        )));
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use ccvm_plugin_api::testing::{example_facts, example_policy_input};

    use super::*;

    fn facts(programs: &[&str], variables: &[&str]) -> HostFacts {
        let mut facts = example_facts(programs);
        for name in DISPLAY_VARIABLES {
            facts
                .variables
                .insert(name.to_owned(), variables.contains(&name));
        }
        facts
    }

    fn plan(images: bool, facts: &HostFacts) -> PolicyPlan {
        let input = example_policy_input(serde_json::json!({ "images": images }));
        Clipboard.plan(&input, facts).expect("plan")
    }

    #[test]
    fn no_host_tool_is_silently_inert() {
        assert_eq!(
            plan(true, &facts(&[], &["DISPLAY", "WAYLAND_DISPLAY"])),
            PolicyPlan::default()
        );
    }

    #[test]
    fn xclip_with_display_plans_the_service_and_the_one_forward() {
        let plan = plan(true, &facts(&["xclip"], &["DISPLAY"]));
        let socket = "/run/user/1000/ccvm/run-1/clipboard.sock";
        assert_eq!(
            plan.host_services,
            [HostService {
                name: SERVICE_NAME.to_owned(),
                kind: HostServiceKind::ClipboardImages {
                    socket: socket.to_owned(),
                    tool: "/usr/bin/xclip".to_owned(),
                },
            }]
        );
        assert_eq!(
            plan.remote_forward,
            Some(RemoteForward {
                listen: "127.0.0.1:39721".to_owned(),
                target: socket.to_owned(),
            })
        );
        for address in [&clipboard::GUEST_LISTEN.to_owned(), &socket.to_owned()] {
            RemoteForward::check_address(address).expect("a plain address");
        }
        assert!(plan.setup_steps.is_empty() && plan.ssh_options.is_empty());
    }

    #[test]
    fn tool_follows_the_display_variable() {
        let both = ["xclip", "wl-paste"];
        let tool = |vars: &[&str]| {
            let facts = facts(&both, vars);
            host_tool(&facts).map(|t| t.name)
        };
        assert_eq!(tool(&["WAYLAND_DISPLAY", "DISPLAY"]), Ok("wl-paste"));
        assert_eq!(tool(&["WAYLAND_DISPLAY"]), Ok("wl-paste"));
        // An X11 session on a machine that also has wl-clipboard installed.
        assert_eq!(tool(&["DISPLAY"]), Ok("xclip"));
        assert_eq!(
            tool(&[]),
            Err(NoBridge::NoDisplay {
                found: vec!["wl-paste", "xclip"]
            })
        );
        // Wayland with XWayland but only xclip installed.
        assert_eq!(
            host_tool(&facts(&["xclip"], &["WAYLAND_DISPLAY", "DISPLAY"])).map(|t| t.name),
            Ok("xclip")
        );
        assert_eq!(
            host_tool(&facts(&["wl-paste"], &["DISPLAY"])),
            Err(NoBridge::NoDisplay {
                found: vec!["wl-paste"]
            })
        );
    }

    #[test]
    fn tool_without_its_display_opens_no_forward() {
        assert_eq!(
            plan(true, &facts(&["xclip", "wl-paste"], &[])),
            PolicyPlan::default()
        );
    }

    #[test]
    fn images_off_asks_for_nothing_and_plans_nothing() {
        let input = example_policy_input(serde_json::json!({"images": false}));
        assert_eq!(
            Clipboard.requirements(&input).expect("req"),
            Requirements::default()
        );
        assert_eq!(
            plan(false, &facts(&["xclip"], &["DISPLAY"])),
            PolicyPlan::default()
        );
    }

    #[test]
    fn images_on_asks_for_the_tools_and_the_display_variables() {
        let input = example_policy_input(serde_json::json!({"images": true}));
        let requirements = Clipboard.requirements(&input).expect("req");
        assert_eq!(requirements.programs, ["wl-paste", "xclip"]);
        assert_eq!(requirements.variables, ["WAYLAND_DISPLAY", "DISPLAY"]);
    }

    #[test]
    fn no_run_directory_plans_no_bridge() {
        let mut input = example_policy_input(serde_json::json!({"images": true}));
        input.session.run_dir = None;
        let plan = Clipboard
            .plan(&input, &facts(&["xclip"], &["DISPLAY"]))
            .expect("plan");
        assert_eq!(plan, PolicyPlan::default());
    }
}
