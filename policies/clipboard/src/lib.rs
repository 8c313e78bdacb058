//! The `clipboard` policy: the image-only paste bridge (S8).
//!
//! This version only decides whether the bridge can work on this host (a host clipboard
//! tool, `wl-paste` or `xclip`, is present and `clipboard.images` is on) and reports it; the
//! bridge itself (host service, reverse forward, guest stand-ins) comes with its own issue.
//! With no tool the bridge is silently inert (S8.3). Pure: never touches the clipboard.
#![forbid(unsafe_code)]

use ccvm_plugin_api::{
    Diagnostic, HostFacts, PluginError, Policy, PolicyInput, PolicyPlan, Requirements,
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

/// The policy.
#[derive(Debug, Default)]
pub struct Clipboard;

fn settings(input: &PolicyInput) -> Result<ClipboardSettings, PluginError> {
    serde_json::from_value(input.settings.clone())
        .map_err(|e| PluginError::invalid(format!("clipboard settings: {e}")))
}

/// The host tool the bridge would use, if any.
pub fn host_tool(facts: &HostFacts) -> Option<&'static str> {
    HOST_TOOLS
        .into_iter()
        .find(|tool| facts.program(tool).is_some())
}

impl Policy for Clipboard {
    const NAME: &'static str = "clipboard";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "image-only clipboard paste bridge (detection only so far)";

    fn requirements(&self, input: &PolicyInput) -> Result<Requirements, PluginError> {
        Ok(Requirements {
            programs: if settings(input)?.images {
                HOST_TOOLS.map(str::to_owned).to_vec()
            } else {
                Vec::new()
            },
            ..Requirements::default()
        })
    }

    fn plan(&self, input: &PolicyInput, facts: &HostFacts) -> Result<PolicyPlan, PluginError> {
        let mut plan = PolicyPlan::default();
        if settings(input)?.images
            && let Some(tool) = host_tool(facts)
        {
            plan.diagnostics.push(Diagnostic::info(format!(
                "clipboard: host tool `{tool}` found; image paste into the guest is not \
                 available in this version yet"
            )));
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use ccvm_plugin_api::testing::{example_facts, example_policy_input};

    use super::*;

    #[test]
    fn no_host_tool_is_silently_inert() {
        let input = example_policy_input(serde_json::json!({"images": true}));
        let plan = Clipboard.plan(&input, &example_facts(&[])).expect("plan");
        assert_eq!(plan, PolicyPlan::default());
    }

    #[test]
    fn wl_paste_preferred_over_xclip() {
        assert_eq!(
            host_tool(&example_facts(&["xclip", "wl-paste"])),
            Some("wl-paste")
        );
        assert_eq!(host_tool(&example_facts(&["xclip"])), Some("xclip"));
    }

    #[test]
    fn images_off_asks_for_nothing() {
        let input = example_policy_input(serde_json::json!({"images": false}));
        assert!(
            Clipboard
                .requirements(&input)
                .expect("req")
                .programs
                .is_empty()
        );
    }
}
