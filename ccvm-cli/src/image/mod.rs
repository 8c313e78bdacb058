//! Guest images (S10, D6): `ccvm --ccvm-image build|list|remove`.
//!
//! An image is a read-only squashfs root filesystem assembled by `mmdebstrap` from Debian
//! packages, the Debian kernel (pre-extracted to an ELF `vmlinux` when that boots faster),
//! an initramfs holding only `ccvm-guest` as `/init` and the modules needed to mount the
//! root, and the real Claude Code from its npm package at a pinned version (or, for the
//! test suite, a stub). Images live in `$XDG_CACHE_HOME/ccvm/images/<key>/`, where the key is
//! a hash of every input; `<name>-<arch>` is a symlink to the current key. A build happens in
//! a private `.build-*` directory and is published by renames, so an interrupted build never
//! leaves anything a later run would boot.

pub mod cpio;
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

pub use recipe::{CLAUDE_CODE_VERSION, Recipe};

use crate::config::{Env, cache_dir};
use crate::error::Error;

/// Files of a built image.
pub const KERNEL_FILE: &str = "kernel";
pub const INITRD_FILE: &str = "initrd.img";
pub const ROOT_FILE: &str = "root.img";
pub const MANIFEST_FILE: &str = "manifest.json";
/// A root image smaller than this cannot hold a Debian system: the packing went wrong.
const MIN_ROOT_BYTES: u64 = 16 << 20;

/// Where images live: `<cache>/ccvm/images`. Both ccvm directories, when they exist, must be
/// the user's and not writable by others (S6.4): an image is a kernel and a root file system
/// the VM boots with this session's keys, so nobody else may be able to swap one in. The same
/// holds for a cache in the temp dir (no `HOME`, no passwd entry).
pub fn images_dir(env: &Env) -> Result<PathBuf, Error> {
    let cache = cache_dir(env);
    if cache.starts_with(crate::dirs::temp_dir(env)) {
        crate::dirs::check_if_present(&cache, "the cache directory", false)?;
    }
    let ccvm = cache.join("ccvm");
    crate::dirs::check_if_present(&ccvm, "the cache directory", false)?;
    let images = ccvm.join("images");
    crate::dirs::check_if_present(&images, "the image cache", false)?;
    Ok(images)
}

/// [`images_dir`], created (privately) when missing.
fn create_images_dir(env: &Env) -> Result<PathBuf, Error> {
    let images = images_dir(env)?;
    let cache = cache_dir(env);
    if cache.starts_with(crate::dirs::temp_dir(env)) {
        crate::dirs::ensure(&cache, "the cache directory")?;
    } else {
        fs::create_dir_all(&cache).map_err(io("cannot create", &cache))?;
    }
    crate::dirs::ensure_below(&cache, &images, "the image cache")?;
    Ok(images)
}

/// The directory a name resolves to (`<images>/<name>-<arch>`), whether or not it exists.
pub fn named_dir(env: &Env, name: &str, arch: &str) -> Result<PathBuf, Error> {
    Ok(images_dir(env)?.join(format!("{name}-{arch}")))
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

/// `--ccvm-image` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageCommand {
    Build(BuildOptions),
    List,
    Remove(String),
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
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            name: crate::config::DEFAULT_IMAGE.to_owned(),
            stub: false,
            suite: recipe::DEFAULT_SUITE.to_owned(),
            kernel_flavour: recipe::DEFAULT_KERNEL_FLAVOUR.to_owned(),
            force: false,
        }
    }
}

const IMAGE_USAGE: &str = "usage: ccvm --ccvm-image build [--name NAME] [--stub] [--suite SUITE] \
     [--kernel-flavour FLAVOUR] [--force] | list | remove NAME";

/// Parses the words after `--ccvm-image`.
pub fn parse_command(words: &[String]) -> Result<ImageCommand, Error> {
    let usage = |message: String| Error::Usage {
        message,
        hint: Some(IMAGE_USAGE.to_owned()),
    };
    let mut words = words.iter();
    match words.next().map(String::as_str) {
        Some("build") => {
            let mut options = BuildOptions::default();
            while let Some(word) = words.next() {
                let mut value = |flag: &str| {
                    words
                        .next()
                        .cloned()
                        .ok_or_else(|| usage(format!("--ccvm-image build {flag} needs a value")))
                };
                match word.as_str() {
                    "--stub" => options.stub = true,
                    "--force" => options.force = true,
                    "--name" => options.name = value("--name")?,
                    "--suite" => options.suite = value("--suite")?,
                    "--kernel-flavour" => options.kernel_flavour = value("--kernel-flavour")?,
                    other => {
                        return Err(usage(format!(
                            "--ccvm-image build: unknown option `{other}`"
                        )));
                    }
                }
            }
            Ok(ImageCommand::Build(options))
        }
        Some("list") => Ok(ImageCommand::List),
        Some("remove") => match (words.next(), words.next()) {
            (Some(name), None) => Ok(ImageCommand::Remove(name.clone())),
            _ => Err(usage("--ccvm-image remove takes one image name".to_owned())),
        },
        Some(other) => Err(usage(format!("--ccvm-image: unknown action `{other}`"))),
        None => Err(usage("--ccvm-image needs an action".to_owned())),
    }
}

fn progress(step: usize, total: usize, text: &str) {
    eprintln!("ccvm: image [{step}/{total}] {text}");
}

fn tool(name: &str, package: &str, env: &Env) -> Result<PathBuf, Error> {
    crate::host::find_program(name, env).ok_or_else(|| Error::Host {
        message: format!("building an image needs `{name}`, which is not installed"),
        hint: Some(format!("install the Debian/Ubuntu package `{package}`")),
    })
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io { what, path, source }
}

/// The environment of the build's programs (npm, mmdebstrap, tar…): an allowlist of what they
/// need from the user's (locale, proxies, CA bundles, npm's own `npm_config_*` settings such
/// as a registry mirror), `HOME`, and the trusted `PATH`; no API key, no token variables
/// (S10.3: Debian maintainer scripts and npm see none of the user's secrets).
fn build_environment(env: &Env) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    const KEEP: [&str; 14] = [
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "TZ",
        "TMPDIR",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "all_proxy",
        "NODE_EXTRA_CA_CERTS",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "SOURCE_DATE_EPOCH",
    ];
    env.iter()
        .filter(|(name, _)| {
            let name = name.to_string_lossy();
            KEEP.iter().any(|k| k.eq_ignore_ascii_case(&name))
                || name.starts_with("LC_")
                || name.to_ascii_lowercase().starts_with("npm_config_")
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .chain(crate::host::absolute_path_var(env).map(|p| ("PATH".into(), p)))
        .collect()
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
        .map_err(|e| Error::Host {
            message: format!("{what}: cannot start {:?}: {e}", command.get_program()),
            hint: None,
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
    Err(Error::Host {
        message: format!(
            "{what} failed ({status}); last lines of {}:\n{}",
            log.display(),
            tail.join("\n")
        ),
        hint: Some(hint.to_owned()),
    })
}

/// The guest agent binary: `CCVM_GUEST_AGENT`, or next to `ccvm`, or in `../lib/ccvm`, or the
/// static build of this source tree.
pub fn find_guest_agent(env: &Env, arch: &str) -> Result<PathBuf, Error> {
    let exe = std::env::current_exe().map_err(io("cannot locate", Path::new("ccvm")))?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let mut candidates: Vec<PathBuf> = env.abs_path("CCVM_GUEST_AGENT").into_iter().collect();
    candidates.push(dir.join("ccvm-guest"));
    candidates.push(dir.join("../lib/ccvm/ccvm-guest"));
    // A development tree: target/debug/ccvm next to target/<arch>-unknown-linux-gnu/release/.
    candidates.push(dir.join(format!("../{arch}-unknown-linux-gnu/release/ccvm-guest")));
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
    Err(Error::Host {
        message: format!(
            "no static guest agent `ccvm-guest` found; looked at {}",
            looked.join(", ")
        ),
        hint: Some(
            "build it with `scripts/build-guest.sh` (or set CCVM_GUEST_AGENT to its path)"
                .to_owned(),
        ),
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
pub fn build(options: &BuildOptions, env: &Env) -> Result<PathBuf, Error> {
    let started = Instant::now();
    let arch = std::env::consts::ARCH;
    let recipe = Recipe::new(options, arch)?;
    let mmdebstrap = tool("mmdebstrap", "mmdebstrap", env)?;
    let tar2sqfs = tool("tar2sqfs", "squashfs-tools-ng", env)?;
    let tar = tool("tar", "tar", env)?;
    let xz = tool("xz", "xz-utils", env)?;
    let npm = if options.stub {
        None
    } else {
        Some(tool("npm", "npm", env)?)
    };
    let agent = find_guest_agent(env, arch)?;
    let agent_sha = sha256_file(&agent)?;
    let key = recipe.key(&agent_sha);
    let images = create_images_dir(env)?;
    let final_dir = images.join(&key);
    let link_name = format!("{}-{arch}", options.name);
    if final_dir.join(MANIFEST_FILE).is_file() && !options.force {
        publish_name(&images, &link_name, &key)?;
        eprintln!(
            "ccvm: image `{}` is up to date ({})",
            options.name,
            final_dir.display()
        );
        return Ok(final_dir);
    }
    remove_stale_builds(&images);
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
                    .envs(build_environment(env)),
                &logs.join("npm.log"),
                "downloading Claude Code",
                "check that the npm registry is reachable (npm config get registry)",
            )?;
            let tarball = fs::read_dir(&work)
                .map_err(io("cannot list", &work))?
                .flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "tgz"))
                .ok_or_else(|| Error::Host {
                    message: "npm pack produced no tarball".to_owned(),
                    hint: None,
                })?;
            let got = fs::File::open(&tarball)
                .and_then(recipe::sri_sha512)
                .map_err(io("cannot read", &tarball))?;
            if got != integrity {
                return Err(Error::Host {
                    message: format!(
                        "the downloaded {package}@{CLAUDE_CODE_VERSION} ({}) has the digest \
                         {got}, but ccvm pins {integrity}; nothing of it was run",
                        tarball.display()
                    ),
                    hint: Some(
                        "the registry (or a mirror or proxy in between) served a different \
                         package; check `npm config get registry` and try again"
                            .to_owned(),
                    ),
                });
            }
            run_step(
                Command::new(&tar)
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
                return Err(Error::Host {
                    message: format!(
                        "the downloaded claude reports {printed:?}, expected {CLAUDE_CODE_VERSION}"
                    ),
                    hint: None,
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
    let mut mm = Command::new(&mmdebstrap);
    mm.args(recipe.mmdebstrap_args(&agent, &claude))
        .arg(&options.suite)
        .arg(&root_tar)
        .current_dir(&work)
        .env_clear()
        .envs(build_environment(env));
    run_step(
        &mut mm,
        &logs.join("mmdebstrap.log"),
        "mmdebstrap",
        "check that Debian's archive (deb.debian.org) is reachable; as a non-root user mmdebstrap \
         needs unprivileged user namespaces and /etc/subuid entries",
    )?;

    // 3. Kernel, modules and package list out of the tarball.
    progress(3, total, "kernel and initramfs");
    let extracted = work.join("extract");
    fs::create_dir_all(&extracted).map_err(io("cannot create", &extracted))?;
    // `tar -xf root.tar -C extract MEMBERS…`
    let extract = |members: &mut dyn Iterator<Item = String>| {
        let mut command = Command::new(&tar);
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
    let kernel_format = kernel::install_kernel(&extracted, &release, &work.join(KERNEL_FILE), &xz)?;
    kernel::write_initramfs(
        &extracted,
        &release,
        &modules,
        &agent,
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
        Command::new(&tar2sqfs)
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
        return Err(Error::Host {
            message: format!(
                "the packed root image is only {root_bytes} bytes; the root filesystem was empty"
            ),
            hint: Some(format!("see the logs in {}", logs.display())),
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
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Host {
        message: e.to_string(),
        hint: None,
    })?;
    fs::write(work.join(MANIFEST_FILE), json)
        .map_err(io("cannot write", &work.join(MANIFEST_FILE)))?;
    if final_dir.exists() {
        fs::remove_dir_all(&final_dir).map_err(io("cannot replace", &final_dir))?;
    }
    fs::rename(&work, &final_dir).map_err(io("cannot publish", &final_dir))?;
    guard.1 = true;
    publish_name(&images, &link_name, &key)?;
    eprintln!(
        "ccvm: image `{}` built in {} s: {}",
        options.name,
        started.elapsed().as_secs(),
        final_dir.display()
    );
    Ok(final_dir)
}

/// `--ccvm-image list`.
pub fn list(env: &Env) -> Result<String, Error> {
    let images = images_dir(env)?;
    let mut out = String::from("NAME  ARCH  CLAUDE CODE  KERNEL  ROOT SIZE  KEY\n");
    let Ok(entries) = fs::read_dir(&images) else {
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
            "{}  {}  {}  {}  {} MB  {}\n",
            m.name,
            m.arch,
            m.claude_code,
            m.kernel_release,
            m.root_image_bytes / 1_000_000,
            target.display()
        ));
    }
    rows.sort();
    out.extend(rows);
    Ok(out)
}

/// `--ccvm-image remove NAME`: the name link and the image it points to.
pub fn remove(env: &Env, name: &str) -> Result<String, Error> {
    let link = named_dir(env, name, std::env::consts::ARCH)?;
    let target = fs::read_link(&link).map_err(|_| Error::Usage {
        message: format!("no image named `{name}` (looked for {})", link.display()),
        hint: Some("`ccvm --ccvm-image list` shows the images".to_owned()),
    })?;
    let dir = images_dir(env)?.join(&target);
    fs::remove_file(&link).map_err(io("cannot remove", &link))?;
    // Another name may still use the same key.
    if !key_in_use(&images_dir(env)?, &target) {
        fs::remove_dir_all(&dir).map_err(io("cannot remove", &dir))?;
    }
    let mut out = Vec::new();
    let _ = writeln!(out, "removed image `{name}` ({})", dir.display());
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn build_options_parse_and_bad_ones_are_named() {
        let ImageCommand::Build(options) =
            parse_command(&words("build --stub --name t --suite trixie --force")).expect("parses")
        else {
            panic!("not a build")
        };
        assert!(options.stub && options.force);
        assert_eq!(
            (options.name.as_str(), options.suite.as_str()),
            ("t", "trixie")
        );
        for (bad, needle) in [
            ("build --bogus", "`--bogus`"),
            ("build --name", "--name needs a value"),
            ("frobnicate", "`frobnicate`"),
            ("remove", "one image name"),
            ("", "needs an action"),
        ] {
            let error = parse_command(&words(bad)).expect_err(bad).to_string();
            assert!(error.contains(needle), "{bad:?}: {error}");
        }
    }

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
