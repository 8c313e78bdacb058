//! `ccvm-image`: ccvm's guest images (S10, D6) — `ccvm --ccvm-image build|list|remove`.
//!
//! An image is a read-only squashfs root filesystem assembled by `mmdebstrap` from Debian
//! packages, the Debian kernel (pre-extracted to an ELF `vmlinux` when that boots faster),
//! an initramfs holding only `ccvm-guest` as `/init` and the modules needed to mount the
//! root, and the real Claude Code from its npm package at a pinned version (or, for the
//! test suite, a stub). Images live in `$XDG_CACHE_HOME/ccvm/images/<key>/`, where the key is
//! a hash of every input; `<name>-<arch>` is a symlink to the current key. A build happens in
//! a private `.build-*` directory and is published by renames, so an interrupted build never
//! leaves anything a later run would boot.
//!
//! The caller (ccvm) decides *where* (a checked, private images directory), *with what* (the
//! host programs it found on its trusted `PATH`, the environment the build's programs may
//! see, the guest agent) — this crate never looks up programs or reads ccvm's configuration.
//! It must never run downloaded code before checking its pinned digest, nor with the user's
//! environment.
#![forbid(unsafe_code)]

pub mod claude;
pub mod cpio;
mod error;
mod kernel;
mod recipe;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use error::Error;
pub use kernel::{elf_machine, require_static};
pub use recipe::{CLAUDE_CODE_VERSION, Recipe, is_debian_package_name, normalized, sri_sha512};

use crate::error::io;

/// The image name used when none is configured.
pub const DEFAULT_IMAGE: &str = "default";

/// Files of a built image.
pub const KERNEL_FILE: &str = "kernel";
pub const INITRD_FILE: &str = "initrd.img";
pub const ROOT_FILE: &str = "root.img";
pub const MANIFEST_FILE: &str = "manifest.json";
/// A root image smaller than this cannot hold a Debian system: the packing went wrong.
const MIN_ROOT_BYTES: u64 = 16 << 20;

/// The directory a name resolves to (`<images>/<name>-<arch>`), whether or not it exists.
pub fn named_dir(images: &Path, name: &str, arch: &str) -> PathBuf {
    images.join(format!("{name}-{arch}"))
}

/// What the build needs from the host, found and checked by the caller.
#[derive(Debug, Clone)]
pub struct BuildHost {
    /// The images directory: exists, private, checked.
    pub images: PathBuf,
    pub mmdebstrap: PathBuf,
    pub tar2sqfs: PathBuf,
    pub tar: PathBuf,
    pub xz: PathBuf,
    /// `None` for the stub image, which downloads nothing.
    pub npm: Option<PathBuf>,
    /// The static guest agent ([`find_guest_agent`]).
    pub guest_agent: PathBuf,
    /// The whole environment of the build's programs (an allowlist, no secrets).
    pub environment: Vec<(std::ffi::OsString, std::ffi::OsString)>,
}

/// The programs a build runs: (name, Debian package), npm only for the real image and
/// arch-test only for another architecture's.
pub fn tools(stub: bool, arch: &str) -> Vec<(&'static str, &'static str)> {
    let mut tools = vec![
        ("mmdebstrap", "mmdebstrap"),
        ("tar2sqfs", "squashfs-tools-ng"),
        ("tar", "tar"),
        ("xz", "xz-utils"),
    ];
    if !stub {
        tools.push(("npm", "npm"));
    }
    if arch != std::env::consts::ARCH {
        // mmdebstrap's test that the host can run the foreign root's programs.
        tools.push(("arch-test", "arch-test"));
    }
    tools
}

/// What a built image records about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageManifest {
    pub key: String,
    pub name: String,
    pub arch: String,
    pub suite: String,
    pub kernel_flavour: String,
    pub kernel_release: String,
    /// `elf` (pre-extracted vmlinux) or `bzimage`.
    pub kernel_format: String,
    /// `2.1.330` or `stub`.
    pub claude_code: String,
    /// The `claude_code_version` it was built for (`latest`, or the version itself; empty in
    /// images built before the option existed, which carry the pinned release).
    #[serde(default)]
    pub claude_code_requested: String,
    /// The npm tarball's digest the download was checked against (empty for the stub).
    #[serde(default)]
    pub claude_code_integrity: String,
    pub guest_agent_sha256: String,
    pub recipe: Recipe,
    /// Debian package → version, as installed.
    pub packages: BTreeMap<String, String>,
    pub build_seconds: u64,
    pub root_image_bytes: u64,
}

/// Options of `--ccvm-image build`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    pub name: String,
    pub stub: bool,
    pub suite: String,
    pub kernel_flavour: String,
    /// Build even when an image with this key exists.
    pub force: bool,
    /// Debian packages added to the recipe (`extra_packages`), validated by the caller.
    pub extra_packages: Vec<String>,
    /// The guest architecture (`x86_64`, `aarch64`): the host's unless a backend's guest is
    /// another ([`foreign_exec_problem`]).
    pub arch: String,
    /// `claude_code_version`: [`CLAUDE_CODE_VERSION`] (pinned), an exact version or
    /// [`claude::LATEST`], resolved from the registry at build time.
    pub claude_code_version: String,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            name: DEFAULT_IMAGE.to_owned(),
            stub: false,
            suite: recipe::DEFAULT_SUITE.to_owned(),
            kernel_flavour: recipe::DEFAULT_KERNEL_FLAVOUR.to_owned(),
            force: false,
            extra_packages: Vec::new(),
            arch: std::env::consts::ARCH.to_owned(),
            claude_code_version: CLAUDE_CODE_VERSION.to_owned(),
        }
    }
}

fn progress(step: usize, total: usize, text: &str) {
    eprintln!("ccvm: image [{step}/{total}] {text}");
}

/// Runs a build step with no input, its output going to `log`; on failure the error carries
/// the log tail.
fn run_step(command: &mut Command, log: &Path, what: &str, hint: &str) -> Result<(), Error> {
    run_step_fed(command, Stdio::null(), log, what, hint)
}

/// [`run_step`] with `input` as the step's stdin.
fn run_step_fed(
    command: &mut Command,
    input: Stdio,
    log: &Path,
    what: &str,
    hint: &str,
) -> Result<(), Error> {
    use std::os::unix::process::CommandExt;
    interrupted()?;
    let file = fs::File::create(log).map_err(io("cannot create", log))?;
    let mut child = command
        .stdin(input)
        .stdout(file.try_clone().map_err(io("cannot use", log))?)
        .stderr(file)
        // Its own process group: the terminal's Ctrl-C reaches ccvm only, which then stops
        // the whole step (apt and dpkg under mmdebstrap ignore SIGINT) and waits for it.
        .process_group(0)
        .spawn()
        .map_err(|source| Error::Start {
            what: what.to_owned(),
            program: command.get_program().to_string_lossy().into_owned(),
            source,
        })?;
    let status = loop {
        if has_exited(&child) {
            // Whatever the step left running in its group goes with it (its leader is not
            // reaped yet, so the group id is still the step's).
            let _ = nix::sys::signal::killpg(group_of(&child), nix::sys::signal::Signal::SIGKILL);
            break child.wait().map_err(io("cannot wait for", log))?;
        }
        if stop_signal().is_some() {
            stop_step(&mut child);
            interrupted()?;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if status.success() {
        return Ok(());
    }
    let text = fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text
        .lines()
        .rev()
        .take(15)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Err(Error::Step {
        what: what.to_owned(),
        status: status.to_string(),
        log: log.to_owned(),
        tail: tail.join("\n"),
        hint: hint.to_owned(),
    })
}

/// The guest agent binary for `arch`: `explicit` (`CCVM_GUEST_AGENT`, or
/// `CCVM_GUEST_AGENT_AARCH64` for a foreign one), or next to the `ccvm` in `exe_dir`, or in
/// `../lib/ccvm` (as `ccvm-guest` or `ccvm-guest-<arch>`), or the static build of this source
/// tree. A candidate built for another architecture is passed over, and named.
pub fn find_guest_agent(
    explicit: Option<PathBuf>,
    exe_dir: &Path,
    arch: &str,
) -> Result<PathBuf, Error> {
    let mut candidates: Vec<PathBuf> = explicit.into_iter().collect();
    for dir in [exe_dir.to_owned(), exe_dir.join("../lib/ccvm")] {
        candidates.push(dir.join("ccvm-guest"));
        candidates.push(dir.join(format!("ccvm-guest-{arch}")));
    }
    // A development tree: target/debug/ccvm next to target/<arch>-unknown-linux-gnu/release/.
    candidates.push(exe_dir.join(format!("../{arch}-unknown-linux-gnu/release/ccvm-guest")));
    let mut looked = Vec::new();
    for candidate in &candidates {
        match kernel::require_static(candidate, arch) {
            Ok(()) => return Ok(candidate.clone()),
            Err(_) if !candidate.exists() => {
                looked.push(format!("{} (absent)", candidate.display()))
            }
            Err(Error::WrongArch { .. }) => {
                looked.push(format!("{} (not for {arch})", candidate.display()))
            }
            Err(_) => looked.push(format!("{} (not static)", candidate.display())),
        }
    }
    Err(Error::NoGuestAgent {
        arch: arch.to_owned(),
        looked: looked.join(", "),
    })
}

/// Why this host cannot run `arch`'s programs, which building an image for it needs (the
/// root filesystem's maintainer scripts); `None` for the host's own architecture or when
/// binfmt_misc hands them to a qemu-user interpreter that works inside the build's chroot
/// (the `F` flag: opened once, at registration).
/// `binfmt` is `/proc/sys/fs/binfmt_misc` (a parameter for the tests).
pub fn foreign_exec_problem(arch: &str, binfmt: &Path) -> Option<String> {
    if arch == std::env::consts::ARCH {
        return None;
    }
    if !binfmt.join("status").exists() {
        return Some(format!(
            "binfmt_misc is not mounted at {}",
            binfmt.display()
        ));
    }
    let entry = binfmt.join(format!("qemu-{arch}"));
    let Ok(text) = fs::read_to_string(&entry) else {
        return Some(format!(
            "no qemu-user interpreter is registered for {arch} ({} is absent)",
            entry.display()
        ));
    };
    if text.lines().next() != Some("enabled") {
        return Some(format!("{} is disabled", entry.display()));
    }
    let flags = text
        .lines()
        .find_map(|l| l.strip_prefix("flags: "))
        .unwrap_or("");
    if !flags.contains('F') {
        return Some(format!(
            "{} lacks the F flag, so its interpreter is not found inside the build's chroot \
             (use the static interpreter of qemu-user-static)",
            entry.display()
        ));
    }
    None
}

/// Why `user` (uid `uid`) cannot run mmdebstrap's unshare mode, the one a user other than
/// root builds in: no `newuidmap`/`newgidmap` (Debian's `uidmap`) in `bin`, or no line of
/// at least 65536 ids for the user (by name, as mmdebstrap looks it up) in `etc`'s `subuid`
/// or `subgid`. `None` for root (mmdebstrap's root mode) or when both are there. `bin` and
/// `etc` are `/usr/bin` and `/etc` (parameters for the tests).
pub fn unprivileged_build_problem(uid: u32, user: &str, bin: &Path, etc: &Path) -> Option<String> {
    if uid == 0 {
        return None;
    }
    for program in ["newuidmap", "newgidmap"] {
        if !bin.join(program).is_file() {
            return Some(format!("{} is missing", bin.join(program).display()));
        }
    }
    for file in ["subuid", "subgid"] {
        let path = etc.join(file);
        let text = fs::read_to_string(&path).unwrap_or_default();
        // mmdebstrap looks the user up by name and maps a whole range of 65536 ids.
        let count = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split(':');
                (fields.next() == Some(user))
                    .then(|| fields.nth(1)?.trim().parse::<u64>().ok())
                    .flatten()
            })
            .max();
        match count {
            None => return Some(format!("{} has no entry for {user}", path.display())),
            Some(count) if count < SUBORDINATE_IDS => {
                return Some(format!(
                    "{}'s entry for {user} has {count} ids, fewer than the {SUBORDINATE_IDS} \
                     a root filesystem needs",
                    path.display()
                ));
            }
            Some(_) => {}
        }
    }
    None
}

/// The subordinate ids mmdebstrap's user-namespace mode maps.
const SUBORDINATE_IDS: u64 = 65536;

/// [`unprivileged_build_problem`] for the user running ccvm, as an error.
pub fn require_unprivileged_build() -> Result<(), Error> {
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name);
    match unprivileged_build_problem(
        uid.as_raw(),
        &user,
        Path::new("/usr/bin"),
        Path::new("/etc"),
    ) {
        None => Ok(()),
        Some(problem) => Err(Error::NoUnprivilegedBuild { user, problem }),
    }
}

/// [`foreign_exec_problem`] on this host, as an error.
pub fn require_foreign_exec(arch: &str) -> Result<(), Error> {
    match foreign_exec_problem(arch, Path::new("/proc/sys/fs/binfmt_misc")) {
        None => Ok(()),
        Some(problem) => Err(Error::NoForeignExec {
            arch: arch.to_owned(),
            host: std::env::consts::ARCH.to_owned(),
            problem,
        }),
    }
}

fn sha256_file(path: &Path) -> Result<String, Error> {
    let bytes = fs::read(path).map_err(io("cannot read", path))?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

/// Removes `.build-*` directories of builds whose process is gone.
fn remove_stale_builds(images: &Path) {
    let Ok(entries) = fs::read_dir(images) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(".build-")
            .and_then(|rest| rest.rsplit('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether any name link in `images` points at `key`.
fn key_in_use(images: &Path, key: &Path) -> bool {
    fs::read_dir(images)
        .map(|entries| {
            entries
                .flatten()
                .any(|e| fs::read_link(e.path()).is_ok_and(|t| t == key))
        })
        .unwrap_or(false)
}

/// Points `<name>-<arch>` at `key`, atomically; the image it pointed at before is removed
/// when no other name uses it (a rebuilt agent or recipe must not pile up old images).
fn publish_name(images: &Path, link_name: &str, key: &str) -> Result<(), Error> {
    let link = images.join(link_name);
    let previous = fs::read_link(&link).ok();
    let temporary = images.join(format!(".link-{}", std::process::id()));
    let _ = fs::remove_file(&temporary);
    std::os::unix::fs::symlink(key, &temporary).map_err(io("cannot create", &temporary))?;
    fs::rename(&temporary, &link).map_err(io("cannot publish", &link))?;
    if let Some(previous) = previous.filter(|p| p != Path::new(key) && p.components().count() == 1)
        && !key_in_use(images, &previous)
    {
        let _ = fs::remove_dir_all(images.join(&previous));
    }
    Ok(())
}

/// Removes the build directory unless the build succeeded.
struct BuildDir(PathBuf, bool);

impl Drop for BuildDir {
    fn drop(&mut self) {
        if !self.1 {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// The names, in the build directory, of what mmdebstrap uploads into the root.
const AGENT_UPLOAD: &str = "ccvm-guest";
const CLAUDE_UPLOAD: &str = "claude";

/// The unpacked npm package in `dir`: `claude` a regular file (not a link), `package.json` a
/// regular file of at most 64 KiB whose `name` and `version` are `package` and `version`.
fn check_package(dir: &Path, package: &str, version: &str) -> Result<(), Error> {
    let bad = |detail: String| Error::BadPackage {
        package: package.to_owned(),
        version: version.to_owned(),
        detail,
    };
    let regular = |name: &str| match fs::symlink_metadata(dir.join(name)) {
        Ok(meta) if meta.file_type().is_file() => Ok(meta),
        _ => Err(bad(format!("its `{name}` is not a regular file"))),
    };
    regular("claude")?;
    if regular("package.json")?.len() > 64 * 1024 {
        return Err(bad("its package.json is larger than 64 KiB".to_owned()));
    }
    let path = dir.join("package.json");
    let text = fs::read_to_string(&path).map_err(io("cannot read", &path))?;
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    for (field, expected) in [("name", package), ("version", version)] {
        let found = json[field].as_str().unwrap_or("");
        if found != expected {
            return Err(bad(format!(
                "its package.json says {field} {found:?}, not {expected:?}"
            )));
        }
    }
    Ok(())
}

/// The signal (SIGINT, SIGTERM, SIGHUP) that asked a build to stop; 0 for none. Set by the
/// handlers [`build`] installs, for the rest of the process (a session that follows a build
/// installs its own).
static STOP: std::sync::LazyLock<std::sync::Arc<std::sync::atomic::AtomicUsize>> =
    std::sync::LazyLock::new(Default::default);

fn stop_signal() -> Option<i32> {
    match STOP.load(std::sync::atomic::Ordering::SeqCst) {
        0 => None,
        signal => Some(signal as i32),
    }
}

/// An error once the build has been asked to stop.
fn interrupted() -> Result<(), Error> {
    match stop_signal() {
        Some(signal) => Err(Error::Interrupted { signal }),
        None => Ok(()),
    }
}

/// How long a step may take to clean up after SIGTERM (mmdebstrap unmounts and removes its
/// temporary root) before its process group is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// The process group a step leads ([`run_step_fed`] starts each in its own).
fn group_of(child: &std::process::Child) -> nix::unistd::Pid {
    nix::unistd::Pid::from_raw(child.id() as i32)
}

/// Whether the step's leader has exited, without reaping it: until it is reaped its pid, and
/// so its group id, cannot be reused, which makes a `killpg` after this safe.
fn has_exited(child: &std::process::Child) -> bool {
    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
    !matches!(
        waitid(
            Id::Pid(group_of(child)),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT
        ),
        Ok(WaitStatus::StillAlive)
    )
}

/// Ends a step's process group: SIGTERM, then SIGKILL after [`STOP_GRACE`]; waits for it.
fn stop_step(child: &mut std::process::Child) {
    use nix::sys::signal::{Signal, killpg};
    let group = group_of(child);
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline && !has_exited(child) {
        std::thread::sleep(Duration::from_millis(50));
    }
    // The rest of the group (apt, dpkg) goes with its leader, which is reaped only after.
    let _ = killpg(group, Signal::SIGKILL);
    let _ = child.wait();
}

fn install_stop_handlers() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    for signal in [SIGINT, SIGTERM, SIGHUP] {
        // Failing to install leaves the default: the signal ends ccvm as before.
        let _ = signal_hook::flag::register_usize(
            signal,
            std::sync::Arc::clone(&STOP),
            signal as usize,
        );
    }
}

/// `--ccvm-image build`.
/// Ctrl-C (or SIGTERM, SIGHUP) stops the step that is running, waits for it, removes the
/// unfinished build and returns [`Error::Interrupted`].
pub fn build(options: &BuildOptions, host: &BuildHost) -> Result<PathBuf, Error> {
    install_stop_handlers();
    build_image(options, host).map_err(|error| match stop_signal() {
        // A step the signal reached directly (npm) fails in its own words.
        Some(signal) => Error::Interrupted { signal },
        None => error,
    })
}

fn build_image(options: &BuildOptions, host: &BuildHost) -> Result<PathBuf, Error> {
    let started = Instant::now();
    let arch = options.arch.as_str();
    kernel::require_static(&host.guest_agent, arch)?;
    require_foreign_exec(arch)?;
    let BuildHost {
        images,
        mmdebstrap,
        tar2sqfs,
        tar,
        xz,
        npm,
        guest_agent: agent,
        environment,
    } = host;
    if !options.stub && npm.is_none() {
        return Err(Error::MissingTool {
            program: "npm".to_owned(),
            package: "npm".to_owned(),
        });
    }
    // The release first: `latest` becomes a version, which is part of the key.
    let resolved = match npm {
        Some(npm) if !options.stub => Some(claude::resolve(
            &options.claude_code_version,
            arch,
            npm,
            images,
            environment,
        )?),
        _ => None,
    };
    let options = &BuildOptions {
        claude_code_version: resolved.as_ref().map_or_else(
            || options.claude_code_version.clone(),
            |r| r.version.clone(),
        ),
        ..options.clone()
    };
    let recipe = Recipe::new(options, arch)?;
    let agent_sha = sha256_file(agent)?;
    let key = recipe.key(&agent_sha);
    let final_dir = images.join(&key);
    let link_name = format!("{}-{arch}", options.name);
    if final_dir.join(MANIFEST_FILE).is_file() && !options.force {
        publish_name(images, &link_name, &key)?;
        eprintln!(
            "ccvm: image `{}` is up to date ({})",
            options.name,
            final_dir.display()
        );
        return Ok(final_dir);
    }
    require_unprivileged_build()?;
    remove_stale_builds(images);
    let work = images.join(format!(".build-{key}-{}", std::process::id()));
    fs::create_dir_all(&work).map_err(io("cannot create", &work))?;
    let mut guard = BuildDir(work.clone(), false);
    let logs = work.join("logs");
    fs::create_dir_all(&logs).map_err(io("cannot create", &logs))?;
    let total = 5;

    // 1. Claude Code.
    let claude = work.join(CLAUDE_UPLOAD);
    match (&npm, &resolved) {
        (Some(npm), Some(release)) => {
            let version = &release.version;
            progress(
                1,
                total,
                &format!(
                    "downloading Claude Code {version}{} for {arch} from npm (~175 MB)",
                    if release.requested == claude::LATEST {
                        " (latest)"
                    } else {
                        ""
                    }
                ),
            );
            run_step(
                Command::new(npm)
                    .args(["pack", "--loglevel=warn", "--pack-destination"])
                    .arg(&work)
                    .arg(format!("{}@{version}", release.package))
                    // Not the project: its `.npmrc` must not choose the registry.
                    .current_dir(&work)
                    .env_clear()
                    .envs(environment.iter().cloned()),
                &logs.join("npm.log"),
                "downloading Claude Code",
                "check that the npm registry is reachable (npm config get registry)",
            )
            .map_err(|error| {
                // npm's own check against the registry's listed digest.
                let log = fs::read_to_string(logs.join("npm.log")).unwrap_or_default();
                match log
                    .lines()
                    .find(|l| l.contains("integrity checksum failed"))
                {
                    Some(line) if log.contains("EINTEGRITY") => Error::NpmIntegrity {
                        package: release.package.to_owned(),
                        version: version.clone(),
                        detail: line.trim_start_matches("npm error ").trim().to_owned(),
                    },
                    _ => error,
                }
            })?;
            let tarball = fs::read_dir(&work)
                .map_err(io("cannot list", &work))?
                .flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "tgz"))
                .ok_or_else(|| Error::NoTarball { dir: work.clone() })?;
            let got = fs::File::open(&tarball)
                .and_then(recipe::sri_sha512)
                .map_err(io("cannot read", &tarball))?;
            if got != release.integrity {
                return Err(Error::Digest {
                    package: release.package.to_owned(),
                    version: version.clone(),
                    tarball,
                    got,
                    pinned: release.integrity.clone(),
                    from_registry: !release.pinned,
                });
            }
            run_step(
                Command::new(tar)
                    .arg("-xzf")
                    .arg(&tarball)
                    .arg("-C")
                    .arg(&work)
                    .args(["package/claude", "package/package.json"]),
                &logs.join("untar.log"),
                "unpacking Claude Code",
                "the npm package layout may have changed; report this",
            )?;
            // Its files are what they should be before anything follows them: a regular
            // `claude` (not a link to a file of the user's, which the chmod below would open
            // up), a package.json naming the package and version asked for. Nothing downloaded
            // runs on the host (S10.3): the digest and these names are the checks.
            check_package(&work.join("package"), release.package, version)?;
            fs::rename(work.join("package/claude"), &claude).map_err(io("cannot move", &claude))?;
            let _ = fs::remove_file(&tarball);
            let _ = fs::remove_dir_all(work.join("package"));
        }
        _ => {
            progress(1, total, "writing the stub claude (test image)");
            fs::write(&claude, recipe::STUB_CLAUDE).map_err(io("cannot write", &claude))?;
        }
    }
    fs::set_permissions(&claude, fs::Permissions::from_mode(0o755))
        .map_err(io("cannot chmod", &claude))?;
    let foreign = arch != std::env::consts::ARCH;

    // 2. Debian root filesystem.
    progress(
        2,
        total,
        &format!(
            "Debian {} root filesystem with mmdebstrap (usually {})",
            options.suite,
            if foreign {
                "3-5 minutes: its package scripts run under qemu-user"
            } else {
                "1-3 minutes"
            }
        ),
    );
    let root_tar = work.join("root.tar");
    // Uploaded by name from the build directory (mmdebstrap's working directory): the user's
    // paths may hold spaces or quotes, which mmdebstrap's hook parsing would split or drop.
    let agent_copy = work.join(AGENT_UPLOAD);
    fs::copy(agent, &agent_copy).map_err(io("cannot copy", agent))?;
    let mut mm = Command::new(mmdebstrap);
    mm.args(recipe.mmdebstrap_args(Path::new(AGENT_UPLOAD), Path::new(CLAUDE_UPLOAD)))
        .arg(&options.suite)
        .arg(&root_tar)
        .current_dir(&work)
        .env_clear()
        // Debian's package scripts need none of npm's settings (a registry token, say).
        .envs(
            environment
                .iter()
                .filter(|(name, _)| {
                    !name
                        .to_string_lossy()
                        .to_ascii_lowercase()
                        .starts_with("npm_config_")
                })
                .cloned(),
        )
        // The kernel package's hook would build Debian's initramfs, which ccvm replaces with
        // its own (and deletes): minutes of shell under qemu-user for a foreign image.
        .env("INITRD", "No");
    let log = logs.join("mmdebstrap.log");
    run_step(
        &mut mm,
        &log,
        "mmdebstrap",
        "check that Debian's archive (deb.debian.org) is reachable; as a non-root user mmdebstrap \
         needs unprivileged user namespaces and /etc/subuid entries",
    )
    .map_err(|error| {
        // apt's own words for a name it does not know, for one of the user's packages.
        let text = fs::read_to_string(&log).unwrap_or_default();
        recipe
            .extra_packages
            .iter()
            .find(|name| text.contains(&format!("Unable to locate package {name}")))
            .map_or(error, |name| Error::UnknownPackage {
                name: name.clone(),
                suite: options.suite.clone(),
            })
    })?;

    // 3. Kernel, modules and package list out of the tarball.
    progress(3, total, "kernel and initramfs");
    let extracted = work.join("extract");
    fs::create_dir_all(&extracted).map_err(io("cannot create", &extracted))?;
    // `tar -xf root.tar -C extract MEMBERS…`
    let extract = |members: &mut dyn Iterator<Item = String>| {
        let mut command = Command::new(tar);
        command
            .arg("-xf")
            .arg(&root_tar)
            .arg("-C")
            .arg(&extracted)
            .args(members);
        command
    };
    run_step(
        &mut extract(
            &mut [
                "--wildcards",
                "./boot/vmlinuz-*",
                "./usr/lib/modules/*/modules.*",
                "./var/lib/dpkg/status",
            ]
            .into_iter()
            .map(str::to_owned),
        ),
        &logs.join("extract.log"),
        "reading the root filesystem",
        "the kernel package may be missing from the recipe",
    )?;
    let (release, modules) = kernel::initramfs_modules(&extracted)?;
    run_step(
        &mut extract(
            &mut modules
                .iter()
                .map(|m| format!("./usr/lib/modules/{release}/{m}")),
        ),
        &logs.join("extract-modules.log"),
        "extracting kernel modules",
        "the kernel package may lack a module ccvm needs",
    )?;
    let kernel_format = kernel::install_kernel(&extracted, &release, &work.join(KERNEL_FILE), xz)?;
    kernel::write_initramfs(
        &extracted,
        &release,
        &modules,
        agent,
        &work.join(INITRD_FILE),
    )?;
    let packages = kernel::installed_packages(&extracted.join("var/lib/dpkg/status"));

    // 4. Read-only root image.
    progress(4, total, "packing the read-only root image (squashfs, lz4)");
    // lz4, not zstd: under TCG the guest decompresses what it reads at emulated speed, and
    // Claude Code's first start reads ~1/3 of its 363 MB binary. Measured (x86_64 microvm,
    // real Claude Code to its first frame, 4 alternating rounds): zstd 13.2 s, lz4 11.9 s,
    // an uncompressed erofs 11.0 s; the root grows from 338 MB to 536 MB (erofs: 1049 MB).
    let input = fs::File::open(&root_tar).map_err(io("cannot open", &root_tar))?;
    run_step_fed(
        Command::new(tar2sqfs)
            .args(["--compressor", "lz4", "--num-jobs", "2", "--quiet"])
            .arg(work.join(ROOT_FILE)),
        Stdio::from(input),
        &logs.join("tar2sqfs.log"),
        "tar2sqfs",
        "check free disk space under the cache directory",
    )?;
    let root_bytes = fs::metadata(work.join(ROOT_FILE))
        .map(|m| m.len())
        .unwrap_or(0);
    if root_bytes < MIN_ROOT_BYTES {
        return Err(Error::EmptyRoot {
            bytes: root_bytes,
            logs,
        });
    }
    let _ = fs::remove_file(&root_tar);
    let _ = fs::remove_dir_all(&extracted);
    let _ = fs::remove_file(&claude);
    let _ = fs::remove_file(&agent_copy);

    // 5. Manifest, then publish.
    progress(5, total, "publishing");
    let manifest = ImageManifest {
        key: key.clone(),
        name: options.name.clone(),
        arch: arch.to_owned(),
        suite: options.suite.clone(),
        kernel_flavour: options.kernel_flavour.clone(),
        kernel_release: release,
        kernel_format,
        claude_code: resolved
            .as_ref()
            .map_or_else(|| "stub".to_owned(), |r| r.version.clone()),
        claude_code_requested: resolved
            .as_ref()
            .map_or_else(String::new, |r| r.requested.clone()),
        claude_code_integrity: resolved
            .as_ref()
            .map_or_else(String::new, |r| r.integrity.clone()),
        guest_agent_sha256: agent_sha,
        recipe,
        packages,
        build_seconds: started.elapsed().as_secs(),
        root_image_bytes: root_bytes,
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("a manifest always serializes");
    fs::write(work.join(MANIFEST_FILE), json)
        .map_err(io("cannot write", &work.join(MANIFEST_FILE)))?;
    if final_dir.exists() {
        fs::remove_dir_all(&final_dir).map_err(io("cannot replace", &final_dir))?;
    }
    fs::rename(&work, &final_dir).map_err(io("cannot publish", &final_dir))?;
    guard.1 = true;
    publish_name(images, &link_name, &key)?;
    eprintln!(
        "ccvm: image `{}` built in {} s: {}",
        options.name,
        started.elapsed().as_secs(),
        final_dir.display()
    );
    Ok(final_dir)
}

/// `--ccvm-image list`.
pub fn list(images: &Path) -> Result<String, Error> {
    let mut out = String::from("NAME  ARCH  CLAUDE CODE  KERNEL  ROOT SIZE  KEY  EXTRA PACKAGES\n");
    let Ok(entries) = fs::read_dir(images) else {
        out.push_str(&format!("(no images in {})\n", images.display()));
        return Ok(out);
    };
    let mut rows = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(target) = fs::read_link(&path) else {
            continue;
        };
        let Ok(text) = fs::read_to_string(path.join(MANIFEST_FILE)) else {
            continue;
        };
        let Ok(m) = serde_json::from_str::<ImageManifest>(&text) else {
            continue;
        };
        rows.push(format!(
            "{}  {}  {}  {}  {} MB  {}  {}\n",
            m.name,
            m.arch,
            if m.claude_code_requested == claude::LATEST {
                format!("{} (latest)", m.claude_code)
            } else {
                m.claude_code.clone()
            },
            m.kernel_release,
            m.root_image_bytes / 1_000_000,
            target.display(),
            if m.recipe.extra_packages.is_empty() {
                "-".to_owned()
            } else {
                m.recipe.extra_packages.join(",")
            }
        ));
    }
    rows.sort();
    out.extend(rows);
    Ok(out)
}

/// `--ccvm-image remove NAME`: the name link for `arch` and the image it points to.
pub fn remove(images: &Path, name: &str, arch: &str) -> Result<String, Error> {
    let link = named_dir(images, name, arch);
    let target = fs::read_link(&link).map_err(|_| Error::NoSuchImage {
        name: name.to_owned(),
        link: link.clone(),
    })?;
    let dir = images.join(&target);
    fs::remove_file(&link).map_err(io("cannot remove", &link))?;
    // Another name may still use the same key.
    if !key_in_use(images, &target) {
        fs::remove_dir_all(&dir).map_err(io("cannot remove", &dir))?;
    }
    let mut out = Vec::new();
    let _ = writeln!(out, "removed image `{name}` ({})", dir.display());
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn republishing_a_name_removes_the_image_it_replaced_unless_shared() {
        let images = tempfile::tempdir().expect("tempdir");
        for key in ["k1", "k2", "k3"] {
            fs::create_dir(images.path().join(key)).expect("mkdir");
        }
        publish_name(images.path(), "a-x86_64", "k1").expect("publish");
        publish_name(images.path(), "b-x86_64", "k1").expect("publish");
        publish_name(images.path(), "a-x86_64", "k2").expect("publish");
        assert!(images.path().join("k1").is_dir(), "still used by b");
        publish_name(images.path(), "b-x86_64", "k3").expect("publish");
        assert!(!images.path().join("k1").exists(), "unused now");
        assert_eq!(
            fs::read_link(images.path().join("a-x86_64")).expect("link"),
            Path::new("k2")
        );
    }

    #[test]
    fn a_user_other_than_root_needs_uidmap_and_subordinate_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (bin, etc) = (dir.path().join("bin"), dir.path().join("etc"));
        fs::create_dir_all(&bin).expect("mkdir");
        fs::create_dir_all(&etc).expect("mkdir");
        let problem = |uid| unprivileged_build_problem(uid, "dev", &bin, &etc);
        assert_eq!(problem(0), None, "root builds in mmdebstrap's root mode");
        assert_eq!(
            problem(1000),
            Some(format!("{} is missing", bin.join("newuidmap").display()))
        );
        for program in ["newuidmap", "newgidmap"] {
            fs::write(bin.join(program), "").expect("write");
        }
        assert_eq!(
            problem(1000),
            Some(format!(
                "{} has no entry for dev",
                etc.join("subuid").display()
            ))
        );
        fs::write(
            etc.join("subuid"),
            "devops:100000:65536\ndev:165536:65536\n",
        )
        .expect("write");
        // By uid only: mmdebstrap does not find it.
        fs::write(etc.join("subgid"), "1000:165536:65536\n").expect("write");
        assert_eq!(
            problem(1000),
            Some(format!(
                "{} has no entry for dev",
                etc.join("subgid").display()
            ))
        );
        fs::write(etc.join("subgid"), "dev:165536:1000\n").expect("write");
        assert_eq!(
            problem(1000),
            Some(format!(
                "{}'s entry for dev has 1000 ids, fewer than the 65536 a root filesystem needs",
                etc.join("subgid").display()
            ))
        );
        fs::write(etc.join("subgid"), "dev:165536:1000\ndev:300000:65536\n").expect("write");
        assert_eq!(problem(1000), None);
    }

    #[test]
    fn a_foreign_image_needs_an_enabled_binfmt_entry_that_works_in_a_chroot() {
        let foreign = if std::env::consts::ARCH == "aarch64" {
            "x86_64"
        } else {
            "aarch64"
        };
        assert_eq!(
            foreign_exec_problem(std::env::consts::ARCH, Path::new("/nonexistent")),
            None
        );
        let binfmt = tempfile::tempdir().expect("tempdir");
        let problem = |expect: &str| {
            let got = foreign_exec_problem(foreign, binfmt.path()).expect("a problem");
            assert!(got.contains(expect), "{got}");
        };
        problem("not mounted");
        fs::write(binfmt.path().join("status"), "enabled\n").expect("write");
        problem("no qemu-user interpreter is registered");
        let entry = binfmt.path().join(format!("qemu-{foreign}"));
        fs::write(
            &entry,
            "disabled\ninterpreter /usr/libexec/qemu-binfmt/x\nflags: PF\n",
        )
        .expect("write");
        problem("is disabled");
        fs::write(&entry, "enabled\ninterpreter /usr/bin/qemu-x\nflags: P\n").expect("write");
        problem("lacks the F flag");
        fs::write(
            &entry,
            "enabled\ninterpreter /usr/libexec/qemu-binfmt/x\nflags: PF\n",
        )
        .expect("write");
        assert_eq!(foreign_exec_problem(foreign, binfmt.path()), None);
    }

    #[test]
    fn only_builds_whose_process_is_gone_are_cleaned_up() {
        let images = tempfile::tempdir().expect("tempdir");
        let dead = images.path().join(".build-abc-4294967");
        let alive = images
            .path()
            .join(format!(".build-abc-{}", std::process::id()));
        fs::create_dir(&dead).expect("mkdir");
        fs::create_dir(&alive).expect("mkdir");
        remove_stale_builds(images.path());
        assert!(!dead.exists());
        assert!(alive.exists());
    }
}
