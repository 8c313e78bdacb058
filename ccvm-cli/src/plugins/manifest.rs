//! Checking a plugin's manifest before any other call (S3.2).

use ccvm_plugin_api::{MANIFEST_MAGIC, Manifest, PluginKind};

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestProblem {
    #[error("it is not a ccvm plugin (manifest magic is {0:?})")]
    NotCcvm(String),
    #[error("it declares plugin kind `{0}`; this ccvm knows `backend` and `policy`")]
    UnknownKind(String),
    #[error(
        "its name {0:?} is not valid (lower-case letters, digits and -, starting with a letter or digit)"
    )]
    BadName(String),
    #[error("its plugin API version {0:?} is not a semantic version")]
    BadVersion(String),
    #[error(
        "it was built against plugin API {plugin}, but this ccvm provides {host}; a plugin \
         must be built against a version compatible with the host (same major, same minor \
         while 0.x, not newer)"
    )]
    Incompatible { plugin: String, host: String },
}

impl ManifestProblem {
    /// What the user can do.
    pub fn fix(&self) -> String {
        match self {
            ManifestProblem::Incompatible { plugin, host } => format!(
                "rebuild the plugin against ccvm-plugin-api {host}, or install a ccvm that \
                 provides plugin API {plugin}"
            ),
            _ => "remove the file from the plugin directory or replace it with a ccvm plugin"
                .to_owned(),
        }
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Whether a plugin built against `plugin_api` may be loaded by a host providing `host_api`:
/// the caret rule (same major, same minor while 0.x, host not older).
pub fn api_compatible(plugin_api: &str, host_api: &str) -> Result<bool, ManifestProblem> {
    let plugin = semver::Version::parse(plugin_api)
        .map_err(|_| ManifestProblem::BadVersion(plugin_api.to_owned()))?;
    let host = semver::Version::parse(host_api)
        .map_err(|_| ManifestProblem::BadVersion(host_api.to_owned()))?;
    let requirement = semver::VersionReq {
        comparators: vec![semver::Comparator {
            op: semver::Op::Caret,
            major: plugin.major,
            minor: Some(plugin.minor),
            patch: Some(plugin.patch),
            pre: plugin.pre.clone(),
        }],
    };
    Ok(requirement.matches(&host))
}

/// Checks everything the host relies on and returns the kind.
pub fn check(manifest: &Manifest, host_api: &str) -> Result<PluginKind, ManifestProblem> {
    if manifest.magic != MANIFEST_MAGIC {
        return Err(ManifestProblem::NotCcvm(manifest.magic.clone()));
    }
    let kind = match manifest.kind.as_str() {
        "backend" => PluginKind::Backend,
        "policy" => PluginKind::Policy,
        other => return Err(ManifestProblem::UnknownKind(other.to_owned())),
    };
    if !valid_name(&manifest.name) {
        return Err(ManifestProblem::BadName(manifest.name.clone()));
    }
    if !api_compatible(&manifest.api_version, host_api)? {
        return Err(ManifestProblem::Incompatible {
            plugin: manifest.api_version.clone(),
            host: host_api.to_owned(),
        });
    }
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(kind: &str, name: &str, api: &str) -> Manifest {
        Manifest {
            magic: MANIFEST_MAGIC.to_owned(),
            kind: kind.to_owned(),
            name: name.to_owned(),
            version: "1.0.0".to_owned(),
            api_version: api.to_owned(),
            description: String::new(),
        }
    }

    #[test]
    fn caret_rule() {
        let ok = |p, h| api_compatible(p, h).expect("versions parse");
        assert!(ok("0.1.0", "0.1.0"));
        assert!(ok("0.1.0", "0.1.7"), "older plugin, newer host: fine");
        assert!(!ok("0.1.7", "0.1.0"), "plugin newer than host");
        assert!(!ok("0.2.0", "0.1.9"), "different minor while 0.x");
        assert!(!ok("0.1.0", "0.2.0"));
        assert!(ok("1.2.0", "1.5.3"));
        assert!(!ok("1.2.0", "2.0.0"));
        assert!(!ok("1.6.0", "1.5.3"));
    }

    #[test]
    fn good_manifest_gives_kind() {
        assert_eq!(
            check(&manifest("backend", "microvm", "0.1.0"), "0.1.0"),
            Ok(PluginKind::Backend)
        );
        assert_eq!(
            check(&manifest("policy", "egress-2", "0.1.0"), "0.1.3"),
            Ok(PluginKind::Policy)
        );
    }

    #[test]
    fn each_problem_is_named() {
        let mut m = manifest("backend", "x", "0.1.0");
        m.magic = "other".into();
        assert!(matches!(
            check(&m, "0.1.0"),
            Err(ManifestProblem::NotCcvm(_))
        ));
        assert!(matches!(
            check(&manifest("firewall", "x", "0.1.0"), "0.1.0"),
            Err(ManifestProblem::UnknownKind(_))
        ));
        assert!(matches!(
            check(&manifest("backend", "Bad Name", "0.1.0"), "0.1.0"),
            Err(ManifestProblem::BadName(_))
        ));
        assert!(matches!(
            check(&manifest("backend", "x", "one"), "0.1.0"),
            Err(ManifestProblem::BadVersion(_))
        ));
        let problem = check(&manifest("backend", "x", "0.2.0"), "0.1.0").expect_err("incompatible");
        assert!(problem.to_string().contains("0.2.0") && problem.to_string().contains("0.1.0"));
        assert!(problem.fix().contains("rebuild"));
    }
}
