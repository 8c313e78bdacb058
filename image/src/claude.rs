//! Which Claude Code an image carries (S10.2): the release ccvm pins, with the registry's
//! digest compiled in, or one the user asks for (`claude_code_version = "latest"` or an exact
//! version), resolved from the npm registry at build time together with the registry's
//! digest, which the download is then checked against before anything in it runs.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::Error;
use crate::recipe::{CLAUDE_CODE_VERSION, claude_package};

/// The `claude_code_version` that follows the registry's `latest` tag.
pub const LATEST: &str = "latest";

/// Whether `value` is a `claude_code_version` ccvm accepts: `latest`, or an exact version
/// (`2.1.330`, `2.2.0-beta.1`) — never a range, a tag other than `latest`, a URL or a path,
/// each of which npm would also accept and which could name another package.
pub fn is_claude_code_version(value: &str) -> bool {
    if value == LATEST {
        return true;
    }
    let (core, pre) = match value.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (value, None),
    };
    let numbers: Vec<&str> = core.split('.').collect();
    numbers.len() == 3
        && numbers
            .iter()
            .all(|n| !n.is_empty() && n.len() <= 9 && n.bytes().all(|b| b.is_ascii_digit()))
        && pre.is_none_or(|p| {
            !p.is_empty()
                && p.split('.').all(|part| {
                    !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        })
}

/// A Claude Code release, resolved: the version, its npm package and the digest its tarball
/// must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// What was asked for: a version or `latest`.
    pub requested: String,
    pub version: String,
    pub package: &'static str,
    /// `sha512-…` (npm's SRI form).
    pub integrity: String,
    /// Whether the digest is ccvm's own pin (else the registry's word at build time).
    pub pinned: bool,
}

/// Resolves `requested` for `arch`: the pinned release needs no network; anything else asks
/// the registry (`npm view PACKAGE@REQUESTED version dist.integrity --json`) with `npm`,
/// run in `dir` with `environment` only (not the project: its `.npmrc` must not choose the
/// registry).
pub fn resolve(
    requested: &str,
    arch: &str,
    npm: &Path,
    dir: &Path,
    environment: &[(std::ffi::OsString, std::ffi::OsString)],
) -> Result<Resolved, Error> {
    let (package, pinned_integrity) = claude_package(arch)?;
    if requested == CLAUDE_CODE_VERSION {
        return Ok(Resolved {
            requested: requested.to_owned(),
            version: CLAUDE_CODE_VERSION.to_owned(),
            package,
            integrity: pinned_integrity.to_owned(),
            pinned: true,
        });
    }
    if !is_claude_code_version(requested) {
        return Err(Error::BadClaudeVersion {
            value: requested.to_owned(),
        });
    }
    let output = Command::new(npm)
        .args(["view", "--json"])
        .arg(format!("{package}@{requested}"))
        .args(["version", "dist.integrity"])
        .current_dir(dir)
        .env_clear()
        .envs(environment.iter().cloned())
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Start {
            what: "asking the npm registry for Claude Code".to_owned(),
            program: npm.display().to_string(),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let answer = parse_view(&stdout);
    match answer {
        Ok((version, integrity)) if output.status.success() => {
            if requested != LATEST && version != requested {
                return Err(Error::Registry {
                    package: package.to_owned(),
                    requested: requested.to_owned(),
                    detail: format!("the registry answered for version {version}"),
                });
            }
            Ok(Resolved {
                requested: requested.to_owned(),
                version,
                package,
                integrity,
                pinned: false,
            })
        }
        Ok(_) | Err(_) => {
            let detail = match answer {
                Err(detail) => detail,
                Ok(_) => String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            };
            Err(Error::Registry {
                package: package.to_owned(),
                requested: requested.to_owned(),
                detail,
            })
        }
    }
}

/// The version and digest out of `npm view --json … version dist.integrity`, or what npm
/// said instead (its `error.summary`, e.g. "No match found for version 9.9.9").
pub fn parse_view(stdout: &str) -> Result<(String, String), String> {
    let value: serde_json::Value = serde_json::from_str(stdout.trim())
        .map_err(|_| format!("npm printed no JSON answer: {:?}", stdout.trim()))?;
    if let Some(summary) = value.pointer("/error/summary").and_then(|s| s.as_str()) {
        return Err(summary.to_owned());
    }
    let field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    let (Some(version), Some(integrity)) = (field("version"), field("dist.integrity")) else {
        return Err(format!(
            "the registry's answer has no version and sha512 integrity: {}",
            stdout.trim()
        ));
    };
    if !is_claude_code_version(&version) || version == LATEST {
        return Err(format!("the registry answered an odd version {version:?}"));
    }
    if !integrity.starts_with("sha512-") {
        return Err(format!(
            "the registry lists no sha512 digest for {version} (only {integrity})"
        ));
    }
    Ok((version, integrity))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_latest_or_exact() {
        for good in ["latest", "2.1.330", "2.2.0-beta.1", "10.0.0-rc-2"] {
            assert!(is_claude_code_version(good), "{good}");
        }
        for bad in [
            "",
            "next",
            "^2.1.0",
            "2.1",
            "2.1.x",
            "2.1.330 ",
            "2.1.330-",
            "1.2.3-a..b",
            "file:../x",
            "https://example.com/x.tgz",
            "2.1.330\n",
            "../../etc",
        ] {
            assert!(!is_claude_code_version(bad), "{bad:?}");
        }
    }

    /// The exact shapes the real npm 11 printed for this package (2026-12-02).
    #[test]
    fn the_registry_answer_and_its_errors_are_read() {
        let answer = r#"{
  "version": "2.1.334",
  "dist.integrity": "sha512-yTE0god52MSUmvLiIasNaY2H3ZRaeP5Utdke0WhmmrZA4QrekCh8ZvzYCDRaYSBNFCwbsAOtz4i7cWrbQH5EHw=="
}"#;
        assert_eq!(
            parse_view(answer).expect("an answer"),
            (
                "2.1.334".to_owned(),
                "sha512-yTE0god52MSUmvLiIasNaY2H3ZRaeP5Utdke0WhmmrZA4QrekCh8ZvzYCDRaYSBNFCwbsAOtz4i7cWrbQH5EHw==".to_owned()
            )
        );
        let missing = r#"{
  "error": {
    "code": "E404",
    "summary": "No match found for version 9.9.9",
    "detail": "The requested resource could not be found."
  }
}"#;
        assert_eq!(
            parse_view(missing).expect_err("an error"),
            "No match found for version 9.9.9"
        );
        let sha1 = r#"{"version": "2.1.1", "dist.integrity": "sha1-abc"}"#;
        assert!(parse_view(sha1).expect_err("sha1").contains("no sha512"));
        assert!(parse_view("").is_err());
    }
}
