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
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use error::Error;
pub use kernel::require_static;
pub use recipe::{CLAUDE_CODE_VERSION, Recipe, is_debian_package_name, normalized};

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

/// The programs a build runs: (name, Debian package), npm only for the real image.
pub fn tools(stub: bool) -> Vec<(&'static str, &'static str)> {
    let mut tools = vec![
        ("mmdebstrap", "mmdebstrap"),
        ("tar2sqfs", "squashfs-tools-ng"),
        ("tar", "tar"),
        ("xz", "xz-utils"),
    ];
    if !stub {
        tools.push(("npm", "npm"));
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
    let file = fs::File::create(log).map_err(io("cannot create", log))?;
    let status = command
        .stdin(input)
        .stdout(file.try_clone().map_err(io("cannot use", log))?)
        .stderr(file)
        .status()
        .map_err(|source| Error::Start {
            what: what.to_owned(),
            program: command.get_program().to_string_lossy().into_owned(),
            source,
        })?;
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

/// The guest agent binary: `explicit` (`CCVM_GUEST_AGENT`), or next to the `ccvm` in
/// `exe_dir`, or in `../lib/ccvm`, or the static build of this source tree.
pub fn find_guest_agent(
    explicit: Option<PathBuf>,
    exe_dir: &Path,
    arch: &str,
) -> Result<PathBuf, Error> {
    let mut candidates: Vec<PathBuf> = explicit.into_iter().collect();
    candidates.push(exe_dir.join("ccvm-guest"));
    candidates.push(exe_dir.join("../lib/ccvm/ccvm-guest"));
    // A development tree: target/debug/ccvm next to target/<arch>-unknown-linux-gnu/release/.
    candidates.push(exe_dir.join(format!("../{arch}-unknown-linux-gnu/release/ccvm-guest")));
    let mut looked = Vec::new();
    for candidate in &candidates {
        match kernel::require_static(candidate) {
            Ok(()) => return Ok(candidate.clone()),
            Err(_) if !candidate.exists() => {
                looked.push(format!("{} (absent)", candidate.display()))
            }
            Err(_) => looked.push(format!("{} (not static)", candidate.display())),
        }
    }
    Err(Error::NoGuestAgent {
        looked: looked.join(", "),
    })
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

/// `--ccvm-image build`.
pub fn build(options: &BuildOptions, host: &BuildHost) -> Result<PathBuf, Error> {
    let started = Instant::now();
    let arch = std::env::consts::ARCH;
    let recipe = Recipe::new(options, arch)?;
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
    remove_stale_builds(images);
    let work = images.join(format!(".build-{key}-{}", std::process::id()));
    fs::create_dir_all(&work).map_err(io("cannot create", &work))?;
    let mut guard = BuildDir(work.clone(), false);
    let logs = work.join("logs");
    fs::create_dir_all(&logs).map_err(io("cannot create", &logs))?;
    let total = 5;

    // 1. Claude Code.
    let claude = work.join("claude");
    match &npm {
        Some(npm) => {
            progress(
                1,
                total,
                &format!("downloading Claude Code {CLAUDE_CODE_VERSION} from npm (~175 MB)"),
            );
            let (package, integrity) = recipe::claude_package(arch)?;
            run_step(
                Command::new(npm)
                    .args(["pack", "--silent", "--pack-destination"])
                    .arg(&work)
                    .arg(format!("{package}@{CLAUDE_CODE_VERSION}"))
                    // Not the project: its `.npmrc` must not choose the registry.
                    .current_dir(&work)
                    .env_clear()
                    .envs(environment.iter().cloned()),
                &logs.join("npm.log"),
                "downloading Claude Code",
                "check that the npm registry is reachable (npm config get registry)",
            )?;
            let tarball = fs::read_dir(&work)
                .map_err(io("cannot list", &work))?
                .flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "tgz"))
                .ok_or_else(|| Error::NoTarball { dir: work.clone() })?;
            let got = fs::File::open(&tarball)
                .and_then(recipe::sri_sha512)
                .map_err(io("cannot read", &tarball))?;
            if got != integrity {
                return Err(Error::Digest {
                    package: package.to_owned(),
                    version: CLAUDE_CODE_VERSION.to_owned(),
                    tarball,
                    got,
                    pinned: integrity.to_owned(),
                });
            }
            run_step(
                Command::new(tar)
                    .arg("-xzf")
                    .arg(&tarball)
                    .arg("-C")
                    .arg(&work)
                    .arg("package/claude"),
                &logs.join("untar.log"),
                "unpacking Claude Code",
                "the npm package layout may have changed; report this",
            )?;
            fs::rename(work.join("package/claude"), &claude).map_err(io("cannot move", &claude))?;
            let _ = fs::remove_file(&tarball);
            let _ = fs::remove_dir_all(work.join("package"));
            // The first run of downloaded code: with nothing of the user's (no API key, no
            // tokens, a throwaway home), S10.3.
            let scratch_home = work.join("check-home");
            fs::create_dir_all(&scratch_home).map_err(io("cannot create", &scratch_home))?;
            let version = Command::new(&claude)
                .arg("--version")
                .env_clear()
                .env("HOME", &scratch_home)
                .env("PATH", "/usr/bin:/bin")
                .stdin(Stdio::null())
                .output()
                .map_err(io("cannot run", &claude))?;
            let printed = String::from_utf8_lossy(&version.stdout);
            if !printed.starts_with(CLAUDE_CODE_VERSION) {
                return Err(Error::WrongVersion {
                    printed: printed.into_owned(),
                    expected: CLAUDE_CODE_VERSION.to_owned(),
                });
            }
        }
        None => {
            progress(1, total, "writing the stub claude (test image)");
            fs::write(&claude, recipe::STUB_CLAUDE).map_err(io("cannot write", &claude))?;
        }
    }
    fs::set_permissions(&claude, fs::Permissions::from_mode(0o755))
        .map_err(io("cannot chmod", &claude))?;

    // 2. Debian root filesystem.
    progress(
        2,
        total,
        &format!(
            "Debian {} root filesystem with mmdebstrap (usually 1-3 minutes)",
            options.suite
        ),
    );
    let root_tar = work.join("root.tar");
    let mut mm = Command::new(mmdebstrap);
    mm.args(recipe.mmdebstrap_args(agent, &claude))
        .arg(&options.suite)
        .arg(&root_tar)
        .current_dir(&work)
        .env_clear()
        .envs(environment.iter().cloned());
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
    progress(
        4,
        total,
        "packing the read-only root image (squashfs, zstd)",
    );
    let input = fs::File::open(&root_tar).map_err(io("cannot open", &root_tar))?;
    run_step_fed(
        Command::new(tar2sqfs)
            .args(["--compressor", "zstd", "--num-jobs", "2", "--quiet"])
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
        claude_code: if options.stub {
            "stub".to_owned()
        } else {
            CLAUDE_CODE_VERSION.to_owned()
        },
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
            m.claude_code,
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

/// `--ccvm-image remove NAME`: the name link and the image it points to.
pub fn remove(images: &Path, name: &str) -> Result<String, Error> {
    let link = named_dir(images, name, std::env::consts::ARCH);
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
