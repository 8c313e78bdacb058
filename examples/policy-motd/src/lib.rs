//! An example third-party ccvm policy, built against `ccvm-plugin-api` alone.
//!
//! It puts a message of the day into the guest's `/etc/motd` and tells the agent about it.
//! Configure it in `~/.config/ccvm/config.toml`:
//!
//! ```toml
//! [plugins.motd]
//! message = "Remember: the staging database is read-only."
//! ```
//!
//! Build it with `cargo build -p ccvm-example-policy-motd` and copy
//! `target/debug/libccvm_example_motd.so` into `~/.local/lib/ccvm/plugins/`.

use ccvm_plugin_api::{
    GuestOwner, HostFacts, PluginError, Policy, PolicyInput, PolicyPlan, Requirements, SeedFile,
    SeedSource, SetupStep,
};

/// The policy. Plugins are constructed with `Default` for every call.
#[derive(Debug, Default)]
pub struct Motd;

const DEFAULT_MESSAGE: &str = "Welcome to your ccvm session.";

fn message(input: &PolicyInput) -> Result<String, PluginError> {
    match input.settings.get("message") {
        None => Ok(DEFAULT_MESSAGE.to_owned()),
        Some(value) => value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| PluginError::invalid("[plugins.motd] message must be a string")),
    }
}

impl Policy for Motd {
    const NAME: &'static str = "motd";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "example: a message of the day in the guest";

    fn requirements(&self, input: &PolicyInput) -> Result<Requirements, PluginError> {
        message(input)?;
        Ok(Requirements::default())
    }

    fn plan(&self, input: &PolicyInput, _facts: &HostFacts) -> Result<PolicyPlan, PluginError> {
        let message = message(input)?;
        Ok(PolicyPlan {
            seed_files: vec![SeedFile {
                path: "motd/motd".to_owned(),
                source: SeedSource::Inline {
                    content: format!("{message}\n"),
                },
            }],
            setup_steps: vec![SetupStep::InstallFile {
                seed_path: "motd/motd".to_owned(),
                guest_path: "/etc/motd".to_owned(),
                owner: GuestOwner::Root,
                mode: 0o644,
            }],
            context: vec![format!("The user's message of the day: {message}")],
            ..PolicyPlan::default()
        })
    }
}

ccvm_plugin_api::export_plugin!(policy: Motd);

#[cfg(test)]
mod tests {
    use ccvm_plugin_api::serde_json::json;
    use ccvm_plugin_api::testing::{example_facts, example_policy_input};

    use super::*;

    #[test]
    fn message_lands_in_seed_setup_and_context() {
        let input = example_policy_input(json!({"message": "hi"}));
        let plan = Motd.plan(&input, &example_facts(&[])).expect("plan");
        assert_eq!(
            plan.seed_files[0].source,
            SeedSource::Inline {
                content: "hi\n".to_owned()
            }
        );
        assert!(plan.context[0].ends_with("hi"));
    }

    #[test]
    fn non_string_message_is_invalid() {
        let input = example_policy_input(json!({"message": 3}));
        assert!(Motd.requirements(&input).is_err());
    }
}
