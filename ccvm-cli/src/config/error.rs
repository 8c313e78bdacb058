//! Configuration errors: each names the file or variable, the key and what was expected.

use std::fmt;
use std::path::PathBuf;

use super::options::OPTIONS;

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    Env(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Env(name) => write!(f, "environment variable {name}"),
        }
    }
}

/// A configuration error; every variant names where the bad input is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: invalid TOML: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("{}: unknown key `{key}`", path.display())]
    UnknownKey { path: PathBuf, key: String },
    #[error("cannot read the context_md file {}: {source}", path.display())]
    ContextFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", describe_invalid(origin, key, problem))]
    Invalid {
        origin: Origin,
        key: String,
        problem: String,
    },
}

fn describe_invalid(origin: &Origin, key: &str, problem: &str) -> String {
    match origin {
        Origin::File(path) => format!("{}: key `{key}`: {problem}", path.display()),
        Origin::Env(name) => format!("environment variable {name} (`{key}`): {problem}"),
    }
}

impl ConfigError {
    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            ConfigError::Read { .. } => "make the file readable or remove it".to_owned(),
            ConfigError::ContextFile { .. } => {
                "point context_md (CCVM_CLAUDE_MD) at a readable file, or set it to \"\" to disable it"
                    .to_owned()
            }
            ConfigError::Syntax { .. } => "fix the TOML syntax at the position shown".to_owned(),
            ConfigError::UnknownKey { .. } => format!(
                "valid keys: {} (see `ccvm --ccvm-help`)",
                OPTIONS
                    .iter()
                    .filter(|o| !o.env_only)
                    .map(|o| o.key)
                    .chain(["plugins.<name>"])
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ConfigError::Invalid {
                origin: Origin::Env(name),
                ..
            } => format!("set {name} to a valid value or unset it"),
            ConfigError::Invalid { .. } => "fix the value in that file".to_owned(),
        }
    }
}
