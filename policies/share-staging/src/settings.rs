//! Sanitizing `~/.claude/settings.json` and `~/.claude/settings.local.json` (S5.4).
//!
//! Both go through the shared classifier ([`crate::secrets`]): `env` entries whose name or
//! value is a secret (`ANTHROPIC_API_KEY`, `GITHUB_TOKEN`, `AWS_SECRET_ACCESS_KEY`, a
//! `DATABASE_URL` with a password…) are removed, and so is every helper command that prints
//! credentials (`apiKeyHelper`, `awsAuthRefresh`, `awsCredentialExport`, `gcpAuthRefresh`,
//! `otelHeadersHelper`, `proxyAuthHelper`, …): they are host programs whose output is a secret.
//! On top of that, hooks and status lines that run a host path the guest does not have (a
//! script in the home directory outside the project and outside the staged `~/.claude` items,
//! or a package-store path) are removed, since they could only fail there. Everything else
//! (model, permissions, hooks that run project scripts or guest programs, theme…) stays.

use serde_json::Value;

/// Where host paths are still valid in the guest.
#[derive(Debug, Clone)]
pub struct GuestPaths {
    /// The user's home directory (the guest has the same path, but only what is staged).
    pub home: String,
    /// Absolute directories the guest shares or stages at the same path (the project, the
    /// staged `~/.claude` items).
    pub present: Vec<String>,
}

impl GuestPaths {
    fn expand(&self, word: &str) -> Option<String> {
        let home = self.home.trim_end_matches('/');
        for prefix in ["~/", "$HOME/", "${HOME}/"] {
            if let Some(rest) = word.strip_prefix(prefix) {
                return Some(format!("{home}/{rest}"));
            }
        }
        word.starts_with('/').then(|| word.to_owned())
    }

    /// Whether a command word names a path that exists on the host only.
    fn is_host_only(&self, word: &str) -> bool {
        let Some(path) = self.expand(word) else {
            return false;
        };
        if path.starts_with("/nix/store/") {
            return true;
        }
        let home = format!("{}/", self.home.trim_end_matches('/'));
        let inside = |dir: &String| {
            let dir = dir.trim_end_matches('/');
            path == dir || path.starts_with(&format!("{dir}/"))
        };
        path.starts_with(&home) && !self.present.iter().any(inside)
    }

    /// Whether a command runs something only the host has.
    fn runs_host_path(&self, command: &str) -> bool {
        command
            .split(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ';' | '&' | '|'))
            .any(|word| self.is_host_only(word))
    }
}

/// Settings whose value is `{ "type": "command", "command": "…" }`.
const COMMAND_SETTINGS: &[&str] = &["statusLine", "subagentStatusLine", "fileSuggestion"];

fn command_of(value: &Value) -> Option<&str> {
    value.get("command").and_then(Value::as_str)
}

/// Removes hooks and command settings that run a host path; returns the commands removed.
fn prune_host_commands(settings: &mut Value, paths: &GuestPaths) -> Vec<String> {
    let mut removed = Vec::new();
    let Value::Object(map) = settings else {
        return removed;
    };
    for key in COMMAND_SETTINGS {
        if let Some(command) = map.get(*key).and_then(command_of)
            && paths.runs_host_path(command)
        {
            removed.push(command.to_owned());
            map.remove(*key);
        }
    }
    if let Some(Value::Object(events)) = map.get_mut("hooks") {
        for groups in events.values_mut() {
            let Value::Array(groups) = groups else {
                continue;
            };
            for group in groups.iter_mut() {
                if let Some(Value::Array(hooks)) = group.get_mut("hooks") {
                    hooks.retain(|hook| match command_of(hook) {
                        Some(command) if paths.runs_host_path(command) => {
                            removed.push(command.to_owned());
                            false
                        }
                        _ => true,
                    });
                }
            }
            groups.retain(|group| {
                !group
                    .get("hooks")
                    .and_then(Value::as_array)
                    .is_some_and(Vec::is_empty)
            });
        }
        events.retain(|_, groups| !groups.as_array().is_some_and(Vec::is_empty));
    }
    removed
}

/// Sanitizes a parsed settings document in place; returns the host-path commands removed.
pub fn sanitize(value: &mut Value, paths: &GuestPaths) -> Vec<String> {
    crate::secrets::scrub_json(value);
    prune_host_commands(value, paths)
}

/// Parses, sanitizes and re-serializes (pretty) a settings file.
pub fn sanitize_text(
    text: &str,
    paths: &GuestPaths,
) -> Result<(String, Vec<String>), serde_json::Error> {
    let mut value: Value = serde_json::from_str(text)?;
    let removed = sanitize(&mut value, paths);
    Ok((serde_json::to_string_pretty(&value)?, removed))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn paths() -> GuestPaths {
        GuestPaths {
            home: "/home/alice".to_owned(),
            present: vec![
                "/home/alice/src/p".to_owned(),
                "/home/alice/.claude/commands".to_owned(),
            ],
        }
    }

    /// S5.4: `env` secrets and credential helpers go; model, permissions, other env and
    /// hooks that work in the guest stay.
    #[test]
    fn env_secrets_and_credential_helpers_go_structure_stays() {
        let mut settings = json!({
            "model": "opus",
            "apiKeyHelper": "/home/alice/bin/anthropic-key.sh",
            "awsAuthRefresh": "aws sso login --profile work",
            "awsCredentialExport": "/home/alice/bin/aws-creds.sh",
            "gcpAuthRefresh": "gcloud auth application-default login",
            "otelHeadersHelper": "/home/alice/bin/otel-headers.sh",
            "proxyAuthHelper": "/home/alice/bin/proxy-auth.sh",
            "env": {
                "ANTHROPIC_API_KEY": "sk-ant-api03-xxxxxxxxxxxx",
                "GITHUB_TOKEN": "ghp_0123456789abcdefghijABCDEFGHIJ012345",
                "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
                "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "DATABASE_URL": "postgres://app:s3cr3t@db.internal/app",
                "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer abcdefghijkl",
                "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "8192",
                "AWS_PROFILE": "work",
                "ANTHROPIC_BASE_URL": "https://gateway.example.org"
            },
            "permissions": {"allow": ["Bash(npm run test:*)"], "deny": ["Read(./.env)"]},
            "hooks": {"PostToolUse": [{"matcher": "Edit", "hooks": [
                {"type": "command", "command": "\"$CLAUDE_PROJECT_DIR\"/scripts/fmt.sh"}
            ]}]}
        });
        let removed = sanitize(&mut settings, &paths());
        assert!(removed.is_empty(), "{removed:?}");
        assert_eq!(
            settings,
            json!({
                "model": "opus",
                "env": {
                    "DATABASE_URL": "postgres://db.internal/app",
                    "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "8192",
                    "AWS_PROFILE": "work",
                    "ANTHROPIC_BASE_URL": "https://gateway.example.org"
                },
                "permissions": {"allow": ["Bash(npm run test:*)"], "deny": ["Read(./.env)"]},
                "hooks": {"PostToolUse": [{"matcher": "Edit", "hooks": [
                    {"type": "command", "command": "\"$CLAUDE_PROJECT_DIR\"/scripts/fmt.sh"}
                ]}]}
            })
        );
    }

    /// Hooks and status lines that run host-only paths are removed (they could only fail in
    /// the guest); project scripts, staged items and guest programs stay.
    #[test]
    fn host_path_hooks_and_status_line_are_removed() {
        let mut settings = json!({
            "statusLine": {"type": "command", "command": "~/.claude/statusline.sh"},
            "hooks": {
                "Stop": [{"hooks": [{"type": "command", "command": "/home/alice/bin/notify.sh done"}]}],
                "PreToolUse": [{"matcher": "Bash", "hooks": [
                    {"type": "command", "command": "bash /nix/store/abc-guard/bin/guard"},
                    {"type": "command", "command": "/home/alice/src/p/scripts/check.sh"},
                    {"type": "command", "command": "~/.claude/commands/lint.sh"},
                    {"type": "command", "command": "jq -r .tool_input.command >> /tmp/log"}
                ]}]
            }
        });
        let removed = sanitize(&mut settings, &paths());
        assert_eq!(
            removed,
            [
                "~/.claude/statusline.sh",
                "bash /nix/store/abc-guard/bin/guard",
                "/home/alice/bin/notify.sh done",
            ]
        );
        assert_eq!(
            settings,
            json!({"hooks": {"PreToolUse": [{"matcher": "Bash", "hooks": [
                {"type": "command", "command": "/home/alice/src/p/scripts/check.sh"},
                {"type": "command", "command": "~/.claude/commands/lint.sh"},
                {"type": "command", "command": "jq -r .tool_input.command >> /tmp/log"}
            ]}]}})
        );
    }

    #[test]
    fn invalid_settings_are_an_error() {
        assert!(sanitize_text("{\"model\":", &paths()).is_err());
    }
}
