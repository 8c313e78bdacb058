//! Everything that can end a ccvm invocation early, by domain, and its exit code (S1.4): 2 for
//! input the user can change (command line, configuration, a refused project directory, an
//! impossible backend request), 1 for everything the host or a session did. Every variant
//! carries the path, name or value it is about; [`Error::hint`] says what to do.

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

    /// A plugin answered with something ccvm will not carry out (a relative program, a seed
    /// path outside the seed, an unusable or second ssh forward).
    #[error("{plugin} planned something ccvm will not carry out: {problem}")]
    PluginPlan { plugin: String, problem: String },

    /// The project directory may not be shared (S5.1).
    #[error("ccvm will not share the project directory {}: it {why}", path.display())]
    ProjectDir { path: PathBuf, why: String },

    /// S11.3: no sessions as root.
    #[error(
        "ccvm refuses to run as root: the agent would be root in the VM, and the project share \
         would let it create root-owned or setuid files on the host"
    )]
    Root,

    /// KVM was asked for (or a backend needs it) and is not usable (S4.1).
    #[error("{what}: {reason}")]
    KvmUnusable {
        what: String,
        reason: String,
        fix: String,
    },

    /// A directory ccvm would write keys, seeds or images into is not the user's alone (S6.4).
    #[error("{what} {} {why}", path.display())]
    UnsafeDir {
        what: &'static str,
        path: PathBuf,
        why: String,
    },

    /// Neither `HOME` nor the passwd entry names a home directory.
    #[error("cannot tell your home directory: HOME is unset and there is no passwd entry")]
    NoHome,

    /// A path that cannot cross the plugin boundary (JSON) faithfully.
    #[error("{what} {} is not valid UTF-8, which ccvm cannot share", path.display())]
    NotUtf8 { what: &'static str, path: PathBuf },

    /// A host program is not installed (or only in an untrusted `PATH` entry).
    #[error("`{program}` was not found in the trusted entries of PATH")]
    MissingProgram { program: String, package: String },

    /// A process ccvm needed could not be started or waited for.
    #[error("cannot {action} {program}: {source}")]
    Spawn {
        action: &'static str,
        program: String,
        source: std::io::Error,
    },

    /// A helper (virtiofsd, a vsock bridge) did not come up.
    #[error("{name} {problem}")]
    Helper {
        name: String,
        problem: String,
        log: PathBuf,
    },

    /// `ssh-keygen` could not make the session keys.
    #[error("ssh-keygen could not create the session keys: {detail}")]
    Keys { detail: String },

    /// Staging `~/.claude` would copy more than ccvm allows.
    #[error(
        "staging {} would copy more than {limit_mib} MiB from ~/.claude into the VM",
        item.display()
    )]
    StagingTooLarge { item: PathBuf, limit_mib: u64 },

    /// The scratch disk would live in RAM (S9.1).
    #[error(
        "the scratch disk (vm_disk_gib) would be created in {}, which is on {kind}: a disk in RAM \
         protects nothing and can exhaust the host's memory",
        dir.display()
    )]
    ScratchInRam { dir: PathBuf, kind: &'static str },

    /// The VM did not come up (S11.4): what happened, the console's tail, the hypervisor's.
    #[error("the VM did not boot: {what}{}", boot_details(console, hypervisor))]
    Boot {
        what: String,
        console: String,
        hypervisor: String,
        /// The kept scratch directory under `--ccvm-debug`.
        kept: Option<PathBuf>,
    },

    /// ssh itself failed (exit 255): connection, authentication, host key.
    #[error("the ssh session to the VM failed (ssh exited 255)")]
    SshFailed,

    /// The hybrid-vsock handshake of a vsock backend failed.
    #[error("vsock connection through {}: {problem}", socket.display())]
    Vsock { socket: PathBuf, problem: String },

    /// Building, listing or removing an image (boxed: it carries a build log's tail).
    #[error(transparent)]
    Image(Box<ccvm_image::Error>),

    /// A host I/O operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl From<ccvm_image::Error> for Error {
    fn from(error: ccvm_image::Error) -> Self {
        Error::Image(Box::new(error))
    }
}

fn boot_details(console: &str, hypervisor: &str) -> String {
    let mut text = String::new();
    if !console.trim().is_empty() {
        text.push_str(&format!(
            "\n--- last lines of the guest console ---\n{console}"
        ));
    }
    if !hypervisor.trim().is_empty() {
        text.push_str(&format!("\n--- hypervisor output ---\n{hypervisor}"));
    }
    text
}

impl Error {
    /// Exit status for this error: 2 for configuration / input, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage { .. }
            | Error::Config(_)
            | Error::PluginUnavailable { .. }
            | Error::Unsupported { .. }
            | Error::ProjectDir { .. }
            | Error::ScratchInRam { .. } => 2,
            Error::PluginCall { error, .. } if error.class == ErrorClass::Invalid => 2,
            Error::Image(error) if error.is_usage() => 2,
            Error::Image(error) => error
                .stop_signal()
                .map_or(1, |signal| (128 + signal).clamp(0, 255) as u8),
            _ => 1,
        }
    }

    /// One line telling the user what to do, when there is something to say.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Usage { hint, .. } => hint.clone(),
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
            Error::PluginPlan { .. } => Some(
                "this is a bug in that plugin; report it to its author or remove its library"
                    .to_owned(),
            ),
            Error::ProjectDir { .. } => Some(
                "the VM sees the project read-write; run ccvm from the project's own directory \
                 (e.g. ~/src/my-project), never from your home or a directory holding your \
                 credentials"
                    .to_owned(),
            ),
            Error::Root => Some(
                "run ccvm as an unprivileged user who owns the project (e.g. \
                 `useradd -m dev && chown -R dev <project> && su - dev`)"
                    .to_owned(),
            ),
            Error::UnsafeDir { path, .. } => Some(format!(
                "ccvm only uses directories that are yours alone; remove or fix {} (`chmod 700`, \
                 `chown`), or point ccvm elsewhere (XDG_RUNTIME_DIR, XDG_CACHE_HOME)",
                path.display()
            )),
            Error::KvmUnusable { fix, .. } => Some(fix.clone()),
            Error::NoHome => Some("set HOME to an absolute path".to_owned()),
            Error::NotUtf8 { .. } => {
                Some("run ccvm from a directory whose path is valid UTF-8".to_owned())
            }
            Error::MissingProgram { package, .. } => {
                Some(format!("install the Debian/Ubuntu package `{package}`"))
            }
            Error::Helper { log, .. } => Some(format!("its output is in {}", log.display())),
            Error::StagingTooLarge { .. } => Some(
                "turn that item off in the [share] section of your config, or remove the link \
                 that leads to a large directory"
                    .to_owned(),
            ),
            Error::ScratchInRam { .. } => Some(
                "set scratch_dir (CCVM_SCRATCH_DIR) to a directory on a disk, or \
                 CCVM_SCRATCH_ALLOW_TMPFS=1 if you mean it"
                    .to_owned(),
            ),
            Error::Boot {
                kept: Some(dir), ..
            } => Some(format!("everything is kept in {}", dir.display())),
            Error::Boot { kept: None, .. } => Some(
                "rerun with --ccvm-debug to stream the whole console and keep the scratch \
                 directory"
                    .to_owned(),
            ),
            Error::SshFailed => Some("rerun with --ccvm-debug to see the guest console".to_owned()),
            Error::Image(error) => error.hint(),
            Error::Vsock { .. } => Some(
                "the guest may not be up yet or has no vsock driver; rerun with --ccvm-debug"
                    .to_owned(),
            ),
            Error::Spawn { .. } | Error::Keys { .. } | Error::Io { .. } => None,
        }
    }

    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Error::Usage {
            message: message.into(),
            hint: Some("run `ccvm --ccvm-help` for ccvm's own flags".to_owned()),
        }
    }

    /// The `Io` error of a failed operation on `path`, as a closure for `map_err`.
    pub(crate) fn io(
        what: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.to_owned();
        move |source| Error::Io { what, path, source }
    }
}
