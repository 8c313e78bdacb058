//! Support for tests that boot a real VM: the stub image, skipping with a reason, and running
//! a process with a hard deadline.
//!
//! A VM test needs QEMU, OpenSSH, the static guest agent (`scripts/build-guest.sh`) and the
//! stub image (built on first use with `ccvm --ccvm-image build --stub`, then cached by its
//! key). When something is missing the test prints why and passes without booting, unless
//! `CCVM_REQUIRE_VM_TESTS=1` (set by the README's test command) turns that into a failure.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The unprivileged user VM tests run ccvm as when the test process is root: `nobody`, which
/// every Debian system has (ssh and ssh-keygen refuse a uid without a passwd entry).
pub const TEST_UID: u32 = 65_534;
pub const TEST_USER: &str = "nobody";
/// The name of the stub image.
pub const STUB_IMAGE: &str = "test";

/// Returns `Some(reason)` after printing it when the test must skip; panics instead when VM
/// tests are required.
pub fn skip(reason: &str) -> Option<String> {
    if std::env::var_os("CCVM_REQUIRE_VM_TESTS").is_some_and(|v| v == "1") {
        panic!("VM tests are required (CCVM_REQUIRE_VM_TESTS=1) but cannot run: {reason}");
    }
    eprintln!("skipped: {reason}");
    Some(reason.to_owned())
}

/// The architecture of the `virt` backend's guest, whose images an x86_64 host builds under
/// qemu-user.
pub const AARCH64: &str = "aarch64";

/// Why this host cannot build and boot the test VM for `arch`, if it cannot.
fn missing_tool(arch: &str) -> Option<String> {
    let host = std::env::consts::ARCH;
    if host != "x86_64" {
        return Some(format!(
            "the VM tests run on x86_64 hosts; this host is {host}"
        ));
    }
    let qemu = if arch == AARCH64 {
        ("qemu-system-aarch64", "qemu-system-arm")
    } else {
        ("qemu-system-x86_64", "qemu-system-x86")
    };
    for (program, package) in [
        qemu,
        ("ssh", "openssh-client"),
        ("ssh-keygen", "openssh-client"),
        ("mmdebstrap", "mmdebstrap"),
        ("tar2sqfs", "squashfs-tools-ng"),
    ] {
        if which::which(program).is_err() {
            return Some(format!(
                "`{program}` is not installed (package {package}; scripts/setup.sh installs it)"
            ));
        }
    }
    if let Some(problem) =
        ccvm_image::foreign_exec_problem(arch, Path::new("/proc/sys/fs/binfmt_misc"))
    {
        return Some(format!(
            "an {arch} image cannot be built here: {problem} (scripts/deps.sh --{arch} sets \
             it up)"
        ));
    }
    None
}

/// `Err` with the reason when images for `arch` (and sessions on them) cannot be built here.
pub fn can_build(arch: &str) -> Result<(), String> {
    missing_tool(arch).map_or(Ok(()), Err)
}

/// The shared cache the stub image is built in: `CCVM_TEST_CACHE`, else the user's cache.
fn shared_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("CCVM_TEST_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| Path::new(d).is_absolute()) {
        return PathBuf::from(dir);
    }
    PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache")
}

/// The stub image's directory, built once per machine (cached by its key; an up-to-date
/// image costs one hash of the guest agent). `Err` carries a skip reason.
pub fn stub_image() -> Result<&'static Path, String> {
    static IMAGE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| build_stub(STUB_IMAGE, &[], std::env::consts::ARCH))
        .as_deref()
        .map_err(Clone::clone)
}

/// The aarch64 stub image (for the `virt` backend), built like [`stub_image`] under
/// qemu-user. `Err` carries a skip reason.
pub fn aarch64_stub_image() -> Result<&'static Path, String> {
    static IMAGE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| build_stub(STUB_IMAGE, &[], AARCH64))
        .as_deref()
        .map_err(Clone::clone)
}

/// A stub image named `name` with `extra_packages` added to its recipe, built in the shared
/// cache like [`stub_image`] (each call checks it is up to date). `Err` carries a skip reason.
pub fn stub_image_with(name: &str, extra_packages: &[&str]) -> Result<PathBuf, String> {
    build_stub(name, extra_packages, std::env::consts::ARCH)
}

fn build_stub(name: &str, extra_packages: &[&str], arch: &str) -> Result<PathBuf, String> {
    if let Some(reason) = missing_tool(arch) {
        return Err(reason);
    }
    let cache = shared_cache();
    let output = Command::new(crate::ccvm_binary())
        .args([
            "--ccvm-image",
            "build",
            "--stub",
            "--name",
            name,
            "--arch",
            arch,
        ])
        .env("XDG_CACHE_HOME", &cache)
        // Only the packages asked for here: not the user's config file or environment.
        .env("XDG_CONFIG_HOME", cache.join("ccvm-test-no-config"))
        .env("CCVM_EXTRA_PACKAGES", extra_packages.join(","))
        .stdin(Stdio::null())
        .output()
        .expect("ccvm runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprint!("{stderr}");
    if output.status.success() {
        let link = cache.join("ccvm/images").join(format!("{name}-{arch}"));
        return Ok(std::fs::canonicalize(&link).expect("the image link resolves"));
    }
    if stderr.contains("no static guest agent") {
        let build = if arch == std::env::consts::ARCH {
            "scripts/build-guest.sh".to_owned()
        } else {
            format!("scripts/build-guest.sh {arch}")
        };
        return Err(format!(
            "the static guest agent for {arch} is not built (run {build})"
        ));
    }
    panic!("building the stub image `{name}` for {arch} failed:\n{stderr}");
}

/// The real image (`default`, Claude Code from npm) when it is built in the shared cache.
/// `.ci/run` builds it; elsewhere `ccvm --ccvm-image build` does. `Err` carries a skip reason.
pub fn real_image() -> Result<PathBuf, String> {
    real_image_for(std::env::consts::ARCH)
}

/// [`real_image`] for `arch` (`ccvm --ccvm-image build --arch aarch64` builds the aarch64 one).
pub fn real_image_for(arch: &str) -> Result<PathBuf, String> {
    if let Some(reason) = missing_tool(arch) {
        return Err(reason);
    }
    let link = shared_cache()
        .join("ccvm/images")
        .join(format!("default-{arch}"));
    let build = if arch == std::env::consts::ARCH {
        String::new()
    } else {
        format!(" --arch {arch}")
    };
    match std::fs::canonicalize(&link) {
        Ok(dir) if dir.join("manifest.json").is_file() => Ok(dir),
        _ => Err(format!(
            "the real image for {arch} is not built ({}); build it with `ccvm --ccvm-image \
             build{build}`",
            link.display()
        )),
    }
}

/// [`real_image`], or `None` after printing why not. A missing real image fails the test
/// under `CCVM_REQUIRE_REAL_IMAGE=1` (`.ci/run` builds it), and only then: the README's test
/// command does not build it.
pub fn real_image_or_skip() -> Option<PathBuf> {
    real_image_or_skip_for(std::env::consts::ARCH)
}

/// [`real_image_or_skip`] for `arch`.
pub fn real_image_or_skip_for(arch: &str) -> Option<PathBuf> {
    match real_image_for(arch) {
        Ok(image) => Some(image),
        Err(reason) => {
            if std::env::var_os("CCVM_REQUIRE_REAL_IMAGE").is_some_and(|v| v == "1") {
                panic!("the real-image test is required but cannot run: {reason}");
            }
            eprintln!("skipped: {reason}");
            None
        }
    }
}

/// A VM world booting the stub image under TCG with `config` appended to its config file;
/// `populate` fills its home and project before they are handed to the test user. `None`
/// (after printing why) when VM tests cannot run here.
pub fn stub_world(
    config: &str,
    populate: impl FnOnce(&crate::world::World),
) -> Option<crate::world::World> {
    let image = match stub_image() {
        Ok(image) => image,
        Err(reason) => {
            skip(&reason);
            return None;
        }
    };
    Some(image_world(
        image,
        &format!("acceleration = \"tcg\"\n{config}"),
        populate,
    ))
}

/// A VM world booting `image` (installed as the stub image) with `config` in its config file;
/// `populate` runs before the world is handed to the test user.
pub fn image_world(
    image: &Path,
    config: &str,
    populate: impl FnOnce(&crate::world::World),
) -> crate::world::World {
    let world = crate::world::World::for_vm();
    populate(&world);
    world.config(&format!("image = \"{STUB_IMAGE}\"\n{config}"));
    install_stub_image(image, &world.path("cache"));
    world.hand_over();
    world
}

/// Makes the stub image visible as `test` in `cache` (a world's `XDG_CACHE_HOME`) through
/// hard links (copies across file systems), so the world never touches the shared cache.
pub fn install_stub_image(image: &Path, cache: &Path) {
    install_image(image, cache, STUB_IMAGE);
}

/// [`install_stub_image`] under any name, for the architecture its manifest records.
pub fn install_image(image: &Path, cache: &Path, name: &str) {
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(image.join("manifest.json")).expect("the image has a manifest"),
    )
    .expect("the manifest is JSON");
    let arch = manifest["arch"]
        .as_str()
        .expect("the manifest names its arch");
    let images = cache.join("ccvm/images");
    let key = image.file_name().expect("the image dir has a name");
    let dir = images.join(key);
    std::fs::create_dir_all(&dir).expect("mkdir");
    for file in ["kernel", "initrd.img", "root.img", "manifest.json"] {
        let (from, to) = (image.join(file), dir.join(file));
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).expect("copy an image file");
        }
    }
    std::os::unix::fs::symlink(key, images.join(format!("{name}-{arch}"))).expect("symlink");
}

/// The scratch directory `ccvm --ccvm-debug` says it kept.
pub fn kept_scratch_dir(stderr: &str) -> PathBuf {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("ccvm: debug: kept the scratch directory "))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("ccvm named no kept scratch directory:\n{stderr}"))
}

/// Waits for `child` at most `limit`, killing it when the limit passes; returns its output
/// and whether it finished in time. The pipes are drained while waiting, so a chatty child
/// (`--ccvm-debug` streams the console) cannot block on a full pipe.
pub fn output_within(mut child: Child, limit: Duration) -> (Output, bool) {
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    let mut in_time = true;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            in_time = false;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = child.wait().expect("wait");
    let output = Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    };
    (output, in_time)
}

/// The real Claude Code binary of the real image, extracted once per image into `target/`
/// (`rdsquashfs`, from squashfs-tools-ng), for host-side checks of its behaviour. `None`
/// after printing why (a failure under `CCVM_REQUIRE_REAL_IMAGE=1`).
pub fn real_claude_binary() -> Option<PathBuf> {
    let image = real_image_or_skip()?;
    let key = image.file_name().expect("the image dir has a name");
    let out = crate::target_tmp().join("real-claude").join(key);
    let binary = out.join("claude");
    if binary.is_file() {
        return Some(binary);
    }
    if which::which("rdsquashfs").is_err() {
        let reason = "`rdsquashfs` is not installed (package squashfs-tools-ng)";
        if std::env::var_os("CCVM_REQUIRE_REAL_IMAGE").is_some_and(|v| v == "1") {
            panic!("the real-image test is required but cannot run: {reason}");
        }
        eprintln!("skipped: {reason}");
        return None;
    }
    std::fs::create_dir_all(&out).expect("mkdir");
    let partial = out.join(format!("claude.{}", std::process::id()));
    let file = std::fs::File::create(&partial).expect("create");
    let status = Command::new("rdsquashfs")
        .args(["-c", "/usr/local/bin/claude"])
        .arg(image.join("root.img"))
        .stdout(file)
        .status()
        .expect("rdsquashfs runs");
    assert!(status.success(), "rdsquashfs could not extract claude");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::rename(&partial, &binary).expect("rename");
    Some(binary)
}

/// Runs the real Claude Code on the host with nothing of the user's: an empty environment
/// (but a throwaway `HOME`) and no network use intended. Returns its stdout.
pub fn run_real_claude(binary: &Path, args: &[&str]) -> String {
    let home = tempfile::tempdir().expect("tempdir");
    let output = Command::new(binary)
        .args(args)
        .env_clear()
        .env("HOME", home.path())
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null())
        .output()
        .expect("the real claude runs");
    String::from_utf8(output.stdout).expect("UTF-8 help")
}

/// The uid a session's agent has in the guest: the host user's, which is [`TEST_UID`] when the
/// tests run as root (ccvm then runs as that user).
pub fn session_uid() -> u32 {
    let uid = nix::unistd::getuid();
    if uid.is_root() {
        TEST_UID
    } else {
        uid.as_raw()
    }
}
