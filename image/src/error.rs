//! What can go wrong building, listing or removing an image, each with what to do.

use std::path::PathBuf;

/// An image operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("building an image needs `{program}`, which is not installed")]
    MissingTool { program: String, package: String },

    #[error("no static guest agent `ccvm-guest` found; looked at {looked}")]
    NoGuestAgent { looked: String },

    #[error("{} is not a static 64-bit ELF executable", path.display())]
    NotStatic { path: PathBuf },

    #[error("{what}: cannot start {program}: {source}")]
    Start {
        what: String,
        program: String,
        source: std::io::Error,
    },

    #[error("{what} failed ({status}); last lines of {}:\n{tail}", log.display())]
    Step {
        what: String,
        status: String,
        log: PathBuf,
        tail: String,
        hint: String,
    },

    #[error(
        "the downloaded {package}@{version} ({}) has the digest {got}, but ccvm pins {pinned}; \
         nothing of it was run",
        tarball.display()
    )]
    Digest {
        package: String,
        version: String,
        tarball: PathBuf,
        got: String,
        pinned: String,
    },

    #[error("the downloaded claude reports {printed:?}, expected {expected}")]
    WrongVersion { printed: String, expected: String },

    #[error("npm pack produced no tarball in {}", dir.display())]
    NoTarball { dir: PathBuf },

    #[error("ccvm cannot build images for {arch}")]
    UnsupportedArch { arch: String },

    #[error("the kernel in the image is unusable: {detail}")]
    Kernel { detail: String },

    #[error("the packed root image is only {bytes} bytes; the root filesystem was empty")]
    EmptyRoot { bytes: u64, logs: PathBuf },

    #[error("the Debian package `{name}` in extra_packages does not exist in {suite}")]
    UnknownPackage { name: String, suite: String },

    #[error("no image named `{name}` (looked for {})", link.display())]
    NoSuchImage { name: String, link: PathBuf },

    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Error {
    /// One line telling the user what to do.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::MissingTool { package, .. } => {
                Some(format!("install the Debian/Ubuntu package `{package}`"))
            }
            Error::NoGuestAgent { .. } | Error::NotStatic { .. } => Some(
                "build it with `scripts/build-guest.sh` (or set CCVM_GUEST_AGENT to its path)"
                    .to_owned(),
            ),
            Error::Step { hint, .. } => Some(hint.clone()),
            Error::UnknownPackage { suite, .. } => Some(format!(
                "check the name at https://packages.debian.org/{suite} and fix or remove it in \
                 extra_packages (or CCVM_EXTRA_PACKAGES)"
            )),
            Error::Digest { .. } => Some(
                "the registry (or a mirror or proxy in between) served a different package; \
                 check `npm config get registry` and try again"
                    .to_owned(),
            ),
            Error::NoTarball { .. } | Error::WrongVersion { .. } | Error::Kernel { .. } => Some(
                "the package layout may have changed; report this with the build's logs".to_owned(),
            ),
            Error::UnsupportedArch { .. } => Some("images exist for x86_64 and aarch64".to_owned()),
            Error::EmptyRoot { logs, .. } => Some(format!("see the logs in {}", logs.display())),
            Error::NoSuchImage { .. } => {
                Some("`ccvm --ccvm-image list` shows the images".to_owned())
            }
            Error::Start { .. } | Error::Io { .. } => None,
        }
    }

    /// Whether the user asked for something that does not exist (exit 2), rather than a
    /// build that failed (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::NoSuchImage { .. })
    }
}

pub(crate) fn io(
    what: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io { what, path, source }
}
