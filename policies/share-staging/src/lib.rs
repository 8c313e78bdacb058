//! The `share-staging` policy: decides what of the user's `~/.claude` and git configuration
//! crosses into the guest (S5.3–S5.5), by construction from an allowlist.
//!
//! Pure: it names host paths for the host to copy and sanitizes file contents the host read
//! for it. It must never name `.credentials.json`, `projects/`, `sessions/`, history or any
//! other item that is not on the allowlist. Files that can hold secrets (`settings.json`,
//! `settings.local.json`, `~/.claude.json`, the git config) are never copied as they are: the
//! host reads them for the policy, which stages them through the one secret classifier
//! ([`secrets`]).
#![forbid(unsafe_code)]

pub mod claude_json;
pub mod gitconfig;
pub mod secrets;
pub mod settings;

use ccvm_plugin_api::{
    Diagnostic, FileFact, GuestOwner, HostFacts, PluginError, Policy, PolicyInput, PolicyPlan,
    Requirements, SeedFile, SeedSource, SetupStep,
};
use serde::{Deserialize, Serialize};

/// Which items to stage; the `[share]` section of the user's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareSettings {
    pub settings: bool,
    pub claude_md: bool,
    pub keybindings: bool,
    pub commands: bool,
    pub agents: bool,
    pub skills: bool,
    pub output_styles: bool,
    pub plugins: bool,
    pub config: bool,
    pub git_config: bool,
}

impl Default for ShareSettings {
    /// The defaults of S2.2: everything but `plugins/` and `config/`.
    fn default() -> Self {
        ShareSettings {
            settings: true,
            claude_md: true,
            keybindings: true,
            commands: true,
            agents: true,
            skills: true,
            output_styles: true,
            plugins: false,
            config: false,
            git_config: true,
        }
    }
}

/// A file name no staged directory may carry into the guest (defence in depth, S5.3).
pub const CREDENTIALS_FILE: &str = ".credentials.json";

/// Seed directory that becomes the guest's `~/.claude`.
pub const SEED_CLAUDE_DIR: &str = "claude";

impl ShareSettings {
    /// The `~/.claude` entries the host copies: the allowlist, filtered by the settings. The
    /// settings files are not among them: they are staged sanitized ([`SETTINGS_FILES`]).
    pub fn claude_items(&self) -> Vec<&'static str> {
        [
            (self.claude_md, "CLAUDE.md"),
            (self.keybindings, "keybindings.json"),
            (self.commands, "commands"),
            (self.agents, "agents"),
            (self.skills, "skills"),
            (self.output_styles, "output-styles"),
            (self.plugins, "plugins"),
            (self.config, "config"),
        ]
        .into_iter()
        .filter_map(|(on, item)| on.then_some(item))
        .collect()
    }
}

const CLAUDE_JSON: &str = "~/.claude.json";

/// The settings files staged (sanitized, S5.4) when `share.settings` is on, as the host reads
/// them (`~/` = home) and where they go in the seed's `claude/` (the guest's `~/.claude`).
pub const SETTINGS_FILES: [(&str, &str); 2] = [
    ("~/.claude/settings.json", "settings.json"),
    ("~/.claude/settings.local.json", "settings.local.json"),
];

/// The policy.
#[derive(Debug, Default)]
pub struct ShareStaging;

fn settings(input: &PolicyInput) -> Result<ShareSettings, PluginError> {
    serde_json::from_value(input.settings.clone())
        .map_err(|e| PluginError::invalid(format!("share settings: {e}")))
}

impl Policy for ShareStaging {
    const NAME: &'static str = "share-staging";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "stages an allowlist of ~/.claude and a sanitized git config into the guest";

    fn requirements(&self, input: &PolicyInput) -> Result<Requirements, PluginError> {
        let settings = settings(input)?;
        let mut requirements = Requirements::default();
        if settings.settings {
            requirements.read_files.push(CLAUDE_JSON.to_owned());
            requirements
                .read_files
                .extend(SETTINGS_FILES.iter().map(|(host, _)| (*host).to_owned()));
        }
        requirements.git_global_config = settings.git_config;
        Ok(requirements)
    }

    fn plan(&self, input: &PolicyInput, facts: &HostFacts) -> Result<PolicyPlan, PluginError> {
        let settings = settings(input)?;
        let mut plan = PolicyPlan::default();
        let home = facts.home.trim_end_matches('/');

        for item in settings.claude_items() {
            plan.seed_files.push(SeedFile {
                path: format!("{SEED_CLAUDE_DIR}/{item}"),
                source: SeedSource::CopyFromHost {
                    host_path: format!("{home}/.claude/{item}"),
                    drop_names: vec![CREDENTIALS_FILE.to_owned()],
                },
            });
        }
        plan.setup_steps.push(SetupStep::ClaudeHome {
            seed_dir: SEED_CLAUDE_DIR.to_owned(),
        });

        if settings.settings {
            stage_settings(&mut plan, &settings, facts);
            match facts.files.get(CLAUDE_JSON) {
                Some(FileFact::Text { content }) => match claude_json::sanitize_text(content) {
                    Ok(clean) => {
                        install(&mut plan, "claude.json", clean, "~/.claude.json", 0o600);
                    }
                    Err(e) => plan
                        .diagnostics
                        .push(not_valid_json(home, ".claude.json", &e)),
                },
                Some(FileFact::Unreadable { reason }) => {
                    plan.diagnostics
                        .push(unreadable(home, ".claude.json", reason));
                }
                Some(FileFact::Absent) | None => {}
            }
        }

        if settings.git_config
            && let Some(git) = &facts.git_global_config
        {
            let clean = gitconfig::sanitize(&git.entries);
            install(
                &mut plan,
                "git/config",
                gitconfig::render(&clean),
                "~/.gitconfig",
                0o644,
            );
            if let Some(excludes) = &git.excludes {
                install(
                    &mut plan,
                    "git/ignore",
                    excludes.clone(),
                    "~/.config/git/ignore",
                    0o644,
                );
            }
        }
        Ok(plan)
    }
}

fn not_valid_json(home: &str, file: &str, error: &serde_json::Error) -> Diagnostic {
    Diagnostic::warning(format!(
        "{home}/{file} is not valid JSON ({error}); it was not staged"
    ))
}

fn unreadable(home: &str, file: &str, reason: &str) -> Diagnostic {
    Diagnostic::warning(format!(
        "{home}/{file} could not be read ({reason}); it was not staged"
    ))
}

/// `settings.json` and `settings.local.json`, sanitized, into the seed's `claude/` (S5.4).
fn stage_settings(plan: &mut PolicyPlan, share: &ShareSettings, facts: &HostFacts) {
    let home = facts.home.trim_end_matches('/');
    let mut present = vec![facts.project_dir.clone()];
    present.extend(
        share
            .claude_items()
            .iter()
            .map(|item| format!("{home}/.claude/{item}")),
    );
    let paths = settings::GuestPaths {
        home: home.to_owned(),
        present,
    };
    for (host, name) in SETTINGS_FILES {
        let file = format!(".claude/{name}");
        match facts.files.get(host) {
            Some(FileFact::Text { content }) => match settings::sanitize_text(content, &paths) {
                Ok((clean, removed)) => {
                    for command in removed {
                        plan.diagnostics.push(Diagnostic::info(format!(
                            "{home}/{file}: `{command}` runs a path only the host has; it \
                             was left out of the guest's copy"
                        )));
                    }
                    plan.seed_files.push(SeedFile {
                        path: format!("{SEED_CLAUDE_DIR}/{name}"),
                        source: SeedSource::Inline { content: clean },
                    });
                }
                Err(e) => plan.diagnostics.push(not_valid_json(home, &file, &e)),
            },
            Some(FileFact::Unreadable { reason }) => {
                plan.diagnostics.push(unreadable(home, &file, reason));
            }
            Some(FileFact::Absent) | None => {}
        }
    }
}

fn install(plan: &mut PolicyPlan, seed_path: &str, content: String, guest_path: &str, mode: u32) {
    plan.seed_files.push(SeedFile {
        path: seed_path.to_owned(),
        source: SeedSource::Inline { content },
    });
    plan.setup_steps.push(SetupStep::InstallFile {
        seed_path: seed_path.to_owned(),
        guest_path: guest_path.to_owned(),
        owner: GuestOwner::Agent,
        mode,
    });
}

#[cfg(test)]
mod tests {
    use ccvm_plugin_api::GitConfigFact;
    use ccvm_plugin_api::testing::{example_facts, example_policy_input};

    use super::*;

    fn input(settings: ShareSettings) -> PolicyInput {
        example_policy_input(serde_json::to_value(settings).expect("settings encode"))
    }

    fn copied_items(plan: &PolicyPlan) -> Vec<&str> {
        plan.seed_files
            .iter()
            .filter_map(|f| match &f.source {
                SeedSource::CopyFromHost { host_path, .. } => Some(host_path.as_str()),
                SeedSource::Inline { .. } => None,
            })
            .collect()
    }

    #[test]
    fn defaults_stage_the_allowlist_and_nothing_else() {
        let plan = ShareStaging
            .plan(&input(ShareSettings::default()), &example_facts(&[]))
            .expect("plan");
        assert_eq!(
            copied_items(&plan),
            [
                "/home/alice/.claude/CLAUDE.md",
                "/home/alice/.claude/keybindings.json",
                "/home/alice/.claude/commands",
                "/home/alice/.claude/agents",
                "/home/alice/.claude/skills",
                "/home/alice/.claude/output-styles",
            ]
        );
        for file in &plan.seed_files {
            if let SeedSource::CopyFromHost { drop_names, .. } = &file.source {
                assert_eq!(drop_names, &[CREDENTIALS_FILE.to_owned()]);
            }
        }
    }

    fn inline<'a>(plan: &'a PolicyPlan, path: &str) -> Option<&'a str> {
        plan.seed_files.iter().find_map(|f| match &f.source {
            SeedSource::Inline { content } if f.path == path => Some(content.as_str()),
            _ => None,
        })
    }

    /// S5.4: both settings files are read by the host and staged through the classifier into
    /// the guest's `~/.claude`, never copied as they are; an invalid one is left out with a
    /// warning that names it.
    #[test]
    fn settings_files_are_staged_sanitized_and_invalid_ones_warn() {
        let requirements = ShareStaging
            .requirements(&input(ShareSettings::default()))
            .expect("requirements");
        for (host, _) in SETTINGS_FILES {
            assert!(requirements.read_files.contains(&host.to_owned()), "{host}");
        }
        let mut facts = example_facts(&[]);
        facts.files.insert(
            "~/.claude/settings.json".to_owned(),
            FileFact::Text {
                content: r#"{"model":"opus","apiKeyHelper":"~/bin/key.sh",
                    "env":{"GITHUB_TOKEN":"ghp_LEAK","EDITOR":"vim"}}"#
                    .to_owned(),
            },
        );
        facts.files.insert(
            "~/.claude/settings.local.json".to_owned(),
            FileFact::Text {
                content: "{\"env\":".to_owned(),
            },
        );
        let plan = ShareStaging
            .plan(&input(ShareSettings::default()), &facts)
            .expect("plan");
        let settings = inline(&plan, "claude/settings.json").expect("settings.json staged");
        let parsed: serde_json::Value = serde_json::from_str(settings).expect("valid JSON");
        assert_eq!(
            parsed,
            serde_json::json!({"model": "opus", "env": {"EDITOR": "vim"}})
        );
        assert!(inline(&plan, "claude/settings.local.json").is_none());
        assert!(
            plan.diagnostics
                .iter()
                .any(|d| d.level == ccvm_plugin_api::DiagnosticLevel::Warning
                    && d.message
                        .contains("/home/alice/.claude/settings.local.json is not valid JSON")),
            "{:?}",
            plan.diagnostics
        );
        assert!(
            !copied_items(&plan).iter().any(|p| p.contains("settings")),
            "settings are never copied verbatim: {:?}",
            copied_items(&plan)
        );
    }

    #[test]
    fn everything_off_stages_no_claude_item() {
        let off = ShareSettings {
            settings: false,
            claude_md: false,
            keybindings: false,
            commands: false,
            agents: false,
            skills: false,
            output_styles: false,
            plugins: false,
            config: false,
            git_config: false,
        };
        let requirements = ShareStaging
            .requirements(&input(off))
            .expect("requirements");
        assert!(requirements.read_files.is_empty());
        assert!(!requirements.git_global_config);
        let plan = ShareStaging
            .plan(&input(off), &example_facts(&[]))
            .expect("plan");
        assert!(plan.seed_files.is_empty());
    }

    #[test]
    fn plugins_and_config_are_opt_in() {
        let on = ShareSettings {
            plugins: true,
            config: true,
            ..ShareSettings::default()
        };
        let items = on.claude_items();
        assert!(items.contains(&"plugins") && items.contains(&"config"));
        assert!(!ShareSettings::default().claude_items().contains(&"plugins"));
    }

    #[test]
    fn invalid_claude_json_is_not_staged_and_warns() {
        let mut facts = example_facts(&[]);
        facts.files.insert(
            CLAUDE_JSON.to_owned(),
            FileFact::Text {
                content: "{not json".to_owned(),
            },
        );
        let plan = ShareStaging
            .plan(&input(ShareSettings::default()), &facts)
            .expect("plan");
        assert!(plan.seed_files.iter().all(|f| f.path != "claude.json"));
        assert!(plan.diagnostics[0].message.contains("not valid JSON"));
    }

    #[test]
    fn claude_json_and_git_config_are_staged_sanitized() {
        let mut facts = example_facts(&[]);
        facts.files.insert(
            CLAUDE_JSON.to_owned(),
            FileFact::Text {
                content: r#"{"userID":"u1","primaryApiKey":"sk-ant-xyz"}"#.to_owned(),
            },
        );
        facts.git_global_config = Some(GitConfigFact {
            entries: vec![
                ("user.name".to_owned(), "Alice".to_owned()),
                ("credential.helper".to_owned(), "store".to_owned()),
            ],
            excludes: Some("*.swp\n".to_owned()),
        });
        let plan = ShareStaging
            .plan(&input(ShareSettings::default()), &facts)
            .expect("plan");
        let inline = |path: &str| {
            plan.seed_files.iter().find_map(|f| match &f.source {
                SeedSource::Inline { content } if f.path == path => Some(content.clone()),
                _ => None,
            })
        };
        let claude = inline("claude.json").expect("claude.json staged");
        assert!(
            claude.contains("u1") && !claude.contains("sk-ant-xyz"),
            "{claude}"
        );
        let git = inline("git/config").expect("git config staged");
        assert!(git.contains("Alice") && !git.contains("store"), "{git}");
        assert_eq!(inline("git/ignore").as_deref(), Some("*.swp\n"));
    }
}
