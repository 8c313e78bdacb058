//! Sanitizing the home-root `~/.claude.json` (S5.4).
//!
//! Removes, wherever they occur: `env` and `headers` of every MCP server definition (top
//! level and inside per-project entries), then everything the shared classifier
//! ([`crate::secrets`]) flags: `primaryApiKey` and every key whose name marks a token, secret,
//! password, API key or credential; helper commands that print credentials (an MCP server's
//! `headersHelper`); secret values anywhere (a server `url` keeps everything but its userinfo
//! and secret query parameters; `args` lose a secret flag and its value). Structure, `userID`,
//! onboarding state, per-project trust and server names stay.

use serde_json::Value;

pub use crate::secrets::is_secret_key;

/// Drops `env` and `headers` of every MCP server definition, wherever `mcpServers` nests:
/// both hold credentials by design, whatever their names.
fn strip_server_credentials(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(servers)) = map.get_mut("mcpServers") {
                for server in servers.values_mut() {
                    if let Value::Object(definition) = server {
                        definition.remove("env");
                        definition.remove("headers");
                    }
                }
            }
            map.values_mut().for_each(strip_server_credentials);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_server_credentials),
        _ => {}
    }
}

/// Sanitizes a parsed document in place.
pub fn sanitize(value: &mut Value) {
    strip_server_credentials(value);
    crate::secrets::scrub_json(value);
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

    /// S5.4: credentials in MCP server URLs, token arguments and header helpers go wherever
    /// the server is defined; the servers, their names and per-project trust stay.
    #[test]
    fn mcp_url_credentials_token_args_and_header_helpers_go_everywhere() {
        let mut doc = json!({
            "userID": "d3b07384d113edec49eaa6238ad5ff00d3b07384d113edec49eaa6238ad5ff00",
            "hasCompletedOnboarding": true,
            "mcpServers": {
                "remote": {"type": "http", "url": "https://alice:pw@mcp.example.org/mcp?api_key=k1&region=eu",
                           "headersHelper": "/home/alice/bin/mcp-headers.sh"},
                "hook": {"type": "sse", "url": "https://hooks.example.org/ghp_0123456789abcdefghijABCDEFGHIJ012345"}
            },
            "projects": {"/home/alice/p": {
                "hasTrustDialogAccepted": true,
                "mcpServers": {"gh": {"command": "npx",
                    "args": ["-y", "@modelcontextprotocol/server-github", "--token", "t0k3n", "--api-key=k2"]}}
            }}
        });
        sanitize(&mut doc);
        assert_eq!(
            doc,
            json!({
                "userID": "d3b07384d113edec49eaa6238ad5ff00d3b07384d113edec49eaa6238ad5ff00",
                "hasCompletedOnboarding": true,
                "mcpServers": {
                    "remote": {"type": "http", "url": "https://mcp.example.org/mcp?region=eu"},
                    "hook": {"type": "sse"}
                },
                "projects": {"/home/alice/p": {
                    "hasTrustDialogAccepted": true,
                    "mcpServers": {"gh": {"command": "npx",
                        "args": ["-y", "@modelcontextprotocol/server-github"]}}
                }}
            })
        );
    }

    #[test]
    fn invalid_json_is_an_error() {
        assert!(sanitize_text("{\"a\":").is_err());
    }
}
