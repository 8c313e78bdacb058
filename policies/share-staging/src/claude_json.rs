//! Sanitizing the home-root `~/.claude.json` (S5.4).
//!
//! Removes, wherever they occur: `env` and `headers` of every MCP server definition (top
//! level and inside per-project entries), `primaryApiKey`, and every key whose name marks it
//! as a token, secret, password or API key. Structure, `userID` and server names stay.

use serde_json::Value;

/// Whether an object key names a secret. Compared case-insensitively with `_`, `-` and `.`
/// removed, so `api_key`, `apiKey` and `API-KEY` all match.
pub fn is_secret_key(key: &str) -> bool {
    let normalized: String = key
        .chars()
        .filter(|c| !matches!(c, '_' | '-' | '.'))
        .flat_map(char::to_lowercase)
        .collect();
    [
        "token",
        "secret",
        "password",
        "passwd",
        "apikey",
        "credential",
        "privatekey",
    ]
    .iter()
    .any(|marker| normalized.contains(marker))
}

/// Sanitizes a parsed document in place.
pub fn sanitize(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|key, _| !is_secret_key(key));
            if let Some(Value::Object(servers)) = map.get_mut("mcpServers") {
                for server in servers.values_mut() {
                    if let Value::Object(definition) = server {
                        definition.remove("env");
                        definition.remove("headers");
                    }
                }
            }
            for child in map.values_mut() {
                sanitize(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(sanitize),
        _ => {}
    }
}

/// Parses, sanitizes and re-serializes (pretty) a `.claude.json`.
pub fn sanitize_text(text: &str) -> Result<String, serde_json::Error> {
    let mut value: Value = serde_json::from_str(text)?;
    sanitize(&mut value);
    serde_json::to_string_pretty(&value)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn mcp_env_and_headers_removed_at_top_level_and_per_project() {
        let mut doc = json!({
            "userID": "abc",
            "mcpServers": {
                "github": {"command": "gh-mcp", "env": {"GITHUB_TOKEN": "ghp_x"}, "headers": {"Authorization": "Bearer y"}}
            },
            "projects": {
                "/home/alice/p": {
                    "mcpServers": {"db": {"url": "http://x", "headers": {"X-Key": "z"}, "env": {"PW": "q"}}},
                    "allowedTools": ["Bash"]
                }
            }
        });
        sanitize(&mut doc);
        assert_eq!(
            doc,
            json!({
                "userID": "abc",
                "mcpServers": {"github": {"command": "gh-mcp"}},
                "projects": {"/home/alice/p": {"mcpServers": {"db": {"url": "http://x"}}, "allowedTools": ["Bash"]}}
            })
        );
    }

    #[test]
    fn secret_named_keys_removed_anywhere() {
        let mut doc = json!({
            "primaryApiKey": "sk-ant",
            "oauthAccount": {"emailAddress": "a@b", "accessToken": "t", "refresh_token": "r"},
            "list": [{"client_secret": "s", "keep": 1}],
            "DB_PASSWORD": "p",
            "numStartups": 3
        });
        sanitize(&mut doc);
        assert_eq!(
            doc,
            json!({
                "oauthAccount": {"emailAddress": "a@b"},
                "list": [{"keep": 1}],
                "numStartups": 3
            })
        );
    }

    #[test]
    fn secret_key_matching_ignores_case_and_separators() {
        for key in [
            "apiKey",
            "API_KEY",
            "x-api-key",
            "githubToken",
            "Password",
            "privateKey",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in ["userID", "mcpServers", "theme", "hasCompletedOnboarding"] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    #[test]
    fn invalid_json_is_an_error() {
        assert!(sanitize_text("{\"a\":").is_err());
    }
}
