//! Error classes and their exit codes (S1.4).

use std::path::PathBuf;

use ccvm_plugin_api::{ErrorClass, PluginError};

use crate::config::ConfigError;

/// Everything that can end a ccvm invocation early.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command line.
    #[error("{message}")]
    Usage {
        message: String,
        hint: Option<String>,
    },

    /// Bad configuration (file, environment, flag).
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// A plugin was asked for that cannot be used (unknown, wrong kind, incompatible, refused).
    #[error("{message}")]
    PluginUnavailable { message: String, hint: String },

    /// The request is impossible with this backend (missing capability, S3.5).
    #[error("{message}")]
    Unsupported { message: String, hint: String },

    /// A plugin call failed.
    #[error("{kind} `{name}` ({source_desc}): {error}")]
    PluginCall {
        kind: &'static str,
        name: String,
        source_desc: String,
        error: PluginError,
    },

    /// The host cannot provide something the run needs.
    #[error("{message}")]
    Host {
        message: String,
        hint: Option<String>,
    },

    /// The project directory may not be shared (S5.1).
    #[error("ccvm will not share the project directory {}: it {why}", path.display())]
    ProjectDir { path: PathBuf, why: String },

    /// A host I/O operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Error {
    /// Exit status for this error: 2 for configuration / input, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage { .. }
            | Error::Config(_)
            | Error::PluginUnavailable { .. }
            | Error::Unsupported { .. }
            | Error::ProjectDir { .. } => 2,
            Error::PluginCall { error, .. } if error.class == ErrorClass::Invalid => 2,
            Error::PluginCall { .. } | Error::Host { .. } | Error::Io { .. } => 1,
        }
    }

    /// One line telling the user what to do, when there is something to say.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Usage { hint, .. } | Error::Host { hint, .. } => hint.clone(),
            Error::Config(error) => Some(error.hint()),
            Error::PluginUnavailable { hint, .. } | Error::Unsupported { hint, .. } => {
                Some(hint.clone())
            }
            Error::PluginCall { error, .. } => match error.class {
                ErrorClass::Invalid => Some("change the setting named above".to_owned()),
                ErrorClass::Panic | ErrorClass::Protocol => Some(
                    "this is a bug in the plugin; report it to its author or remove its library"
                        .to_owned(),
                ),
                ErrorClass::Failed => None,
            },
            Error::ProjectDir { .. } => Some(
                "the VM sees the project read-write; run ccvm from the project's own directory \
                 (e.g. ~/src/my-project), never from your home or a directory holding your \
                 credentials"
                    .to_owned(),
            ),
            Error::Io { .. } => None,
        }
    }

    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Error::Usage {
            message: message.into(),
            hint: Some("run `ccvm --ccvm-help` for ccvm's own flags".to_owned()),
        }
    }
}
