//! What can go wrong building, listing or removing an image, each with what to do.

use std::path::PathBuf;

/// An image operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("building an image needs `{program}`, which is not installed")]
    MissingTool { program: String, package: String },

    #[error("no static guest agent `ccvm-guest` for {arch} found; looked at {looked}")]
    NoGuestAgent { arch: String, looked: String },

    #[error("{} is not a static 64-bit ELF executable", path.display())]
    NotStatic { path: PathBuf },

    #[error("{} is a guest agent, but not for {arch}", path.display())]
    WrongArch { path: PathBuf, arch: String },

    /// A foreign-architecture image needs the host to run that architecture's programs.
    #[error(
        "building an {arch} image on this {host} host runs {arch} programs (Debian's maintainer \
         scripts) under qemu-user, and {problem}"
    )]
    NoForeignExec {
        arch: String,
        host: String,
        problem: String,
    },

    #[error("as {user}, ccvm cannot build an image: {problem}")]
    NoUnprivilegedBuild { user: String, problem: String },

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
        "the downloaded {package}@{version} ({}) has the digest {got}, but {} {pinned}; \
         nothing of it was run",
        tarball.display(),
        if *from_registry { "the registry lists" } else { "ccvm pins" }
    )]
    Digest {
        package: String,
        version: String,
        tarball: PathBuf,
        got: String,
        pinned: String,
        /// The expected digest is the registry's (a `claude_code_version` ccvm does not pin).
        from_registry: bool,
    },

    #[error(
        "`{value}` is not a Claude Code version ccvm can use (claude_code_version: `latest` or \
         an exact version such as `2.1.330`)"
    )]
    BadClaudeVersion { value: String },

    #[error("the npm registry has no {package}@{requested}: {detail}")]
    Registry {
        package: String,
        requested: String,
        detail: String,
    },

    #[error(
        "npm refused the download of {package}@{version}: its digest is not the one the registry \
         lists ({detail}); nothing of it was run"
    )]
    NpmIntegrity {
        package: String,
        version: String,
        detail: String,
    },

    #[error("the image build was stopped (signal {signal})")]
    Interrupted { signal: i32 },

    #[error("the downloaded {package}@{version} is not that package: {detail}")]
    BadPackage {
        package: String,
        version: String,
        detail: String,
    },

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
            Error::NoGuestAgent { arch, .. } if arch != std::env::consts::ARCH => Some(format!(
                "build it with `scripts/build-guest.sh {arch}` (it needs `rustup target add \
                 {arch}-unknown-linux-gnu` and Debian's gcc-{arch}-linux-gnu and \
                 libc6-dev-{}-cross; scripts/deps.sh --{arch} installs them), or set \
                 CCVM_GUEST_AGENT_{} to its path",
                crate::recipe::debian_arch(arch).unwrap_or("arm64"),
                arch.to_ascii_uppercase()
            )),
            Error::NoGuestAgent { .. } | Error::NotStatic { .. } | Error::WrongArch { .. } => Some(
                "build it with `scripts/build-guest.sh` (or set CCVM_GUEST_AGENT to its path)"
                    .to_owned(),
            ),
            Error::NoForeignExec { arch, .. } => Some(format!(
                "install Debian's qemu-user-static and binfmt-support; where binfmt_misc is not \
                 mounted (a container), as root: `mount -t binfmt_misc binfmt_misc \
                 /proc/sys/fs/binfmt_misc && update-binfmts --enable qemu-{arch}`"
            )),
            Error::NoUnprivilegedBuild { user, .. } => Some(format!(
                "mmdebstrap builds the root as a user other than root in a user namespace: \
                 install Debian's `uidmap` and give {user} subordinate ids, e.g. `sudo usermod \
                 --add-subuids 100000-165535 --add-subgids 100000-165535 {user}`"
            )),
            Error::Step { hint, .. } => Some(hint.clone()),
            Error::BadClaudeVersion { .. } => Some(format!(
                "fix claude_code_version in the config (or CCVM_CLAUDE_CODE_VERSION); without it \
                 ccvm uses {}",
                crate::recipe::CLAUDE_CODE_VERSION
            )),
            Error::Registry { package, .. } => Some(format!(
                "`npm view {package} versions` lists the published versions; check the \
                 registry (npm config get registry) and claude_code_version"
            )),
            Error::UnknownPackage { suite, .. } => Some(format!(
                "check the name at https://packages.debian.org/{suite} and fix or remove it in \
                 extra_packages (or CCVM_EXTRA_PACKAGES)"
            )),
            Error::Digest { .. } | Error::NpmIntegrity { .. } => Some(
                "the registry (or a mirror or proxy in between) served a different package; \
                 check `npm config get registry` and try again"
                    .to_owned(),
            ),
            Error::BadPackage { .. } => Some(
                "nothing of it ran; with a mirror (npm_config_registry) check what it serves, \
                 otherwise report this with the build's logs"
                    .to_owned(),
            ),
            Error::NoTarball { .. } | Error::Kernel { .. } => Some(
                "the package layout may have changed; report this with the build's logs".to_owned(),
            ),
            Error::UnsupportedArch { .. } => Some("images exist for x86_64 and aarch64".to_owned()),
            Error::EmptyRoot { logs, .. } => Some(format!("see the logs in {}", logs.display())),
            Error::NoSuchImage { .. } => {
                Some("`ccvm --ccvm-image list` shows the images".to_owned())
            }
            Error::Interrupted { .. } => Some(
                "nothing of the unfinished build was kept; `ccvm --ccvm-image build` (or the \
                 next `ccvm`) starts it again"
                    .to_owned(),
            ),
            Error::Start { .. } | Error::Io { .. } => None,
        }
    }

    /// Whether the user asked for something that does not exist (exit 2), rather than a
    /// build that failed (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::NoSuchImage { .. })
    }

    /// The signal that stopped the build, for an exit status of 128 + it (130 for Ctrl-C).
    pub fn stop_signal(&self) -> Option<i32> {
        match self {
            Error::Interrupted { signal } => Some(*signal),
            _ => None,
        }
    }
}

pub(crate) fn io(
    what: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io { what, path, source }
}
