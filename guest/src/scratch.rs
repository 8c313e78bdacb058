//! The encrypted scratch disk (S9.2): LUKS2 on the disk whose serial says it is the scratch
//! disk, with a key read from the guest's own entropy into RAM at each boot (never written to
//! any file, never sent to the host, dropped once the mapping is open), ext4 on the mapping,
//! mounted `nosuid,nodev` at `/scratch` for the agent. A failure anywhere leaves the session
//! running without `/scratch`; the caller says so on the console and in the session header.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use ccvm_guest_protocol::GuestUser;
use nix::mount::{MsFlags, mount};

use crate::modules;

/// The device-mapper name of the opened disk.
const MAPPING: &str = "ccvm-scratch";
/// Random bytes of the key: a 512-bit key for aes-xts-plain64.
const KEY_BYTES: usize = 64;

/// Runs `cryptsetup` with the key on its standard input (never in an argument or a file).
fn cryptsetup(args: &[&str], key: &[u8]) -> Result<(), String> {
    let mut child = Command::new("/usr/sbin/cryptsetup")
        .args(args)
        // No udev in this guest: libdevmapper makes the /dev/mapper node itself.
        .env("DM_DISABLE_UDEV", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run cryptsetup: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(key)
            .map_err(|e| format!("cannot hand cryptsetup the key: {e}"))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("cryptsetup: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`cryptsetup {}` failed: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program}` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Sets the disk up and mounts it at `mount_point`, owned by the agent.
pub fn setup(device: &Path, mount_point: &str, user: &GuestUser) -> Result<(), String> {
    let module_dir = modules::module_dir(Path::new("/"));
    modules::load(&module_dir, &ccvm_guest_protocol::modules::SCRATCH)?;
    for optional in ccvm_guest_protocol::modules::SCRATCH_OPTIONAL {
        // Absent on other kernels and architectures; the generic code is built in.
        let _ = modules::load(&module_dir, &[optional]);
    }
    let mut key = vec![0u8; KEY_BYTES];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .map_err(|e| format!("cannot read the guest's entropy: {e}"))?;
    let device = device.display().to_string();
    // The key is random and used once, so a key-stretching function protects nothing here:
    // pbkdf2 at its minimum keeps luksFormat from spending seconds of emulated CPU on it.
    let formatted = cryptsetup(
        &[
            "luksFormat",
            "--batch-mode",
            "--type",
            "luks2",
            "--cipher",
            "aes-xts-plain64",
            "--key-size",
            "512",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            // One keyslot, no room for more: the smallest header LUKS2 allows for a 512-bit
            // key (256 KiB of keyslot area) is written in a third of the default's time.
            "--luks2-metadata-size",
            "16k",
            "--luks2-keyslots-size",
            "256k",
            "--key-file",
            "-",
            &device,
        ],
        &key,
    )
    .and_then(|()| {
        cryptsetup(
            &[
                "open",
                "--type",
                "luks2",
                "--key-file",
                "-",
                &device,
                MAPPING,
            ],
            &key,
        )
    });
    // The key lives nowhere once the mapping holds it.
    key.iter_mut().for_each(|b| *b = 0);
    drop(key);
    formatted?;
    let mapped = format!("/dev/mapper/{MAPPING}");
    run(
        "/usr/sbin/mkfs.ext4",
        &[
            "-q",
            "-F",
            "-m",
            "0",
            // No journal: nothing on this disk outlives a crash anyway.
            "-O",
            "^has_journal",
            "-E",
            "lazy_itable_init=1,nodiscard",
            &mapped,
        ],
    )?;
    fs::create_dir_all(mount_point).map_err(|e| format!("cannot create {mount_point}: {e}"))?;
    mount(
        Some(mapped.as_str()),
        mount_point,
        Some("ext4"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|e| format!("cannot mount {mapped} on {mount_point}: {e}"))?;
    std::os::unix::fs::chown(mount_point, Some(user.uid), Some(user.gid))
        .map_err(|e| format!("cannot give {mount_point} to the agent: {e}"))?;
    let lost = Path::new(mount_point).join("lost+found");
    let _ = fs::remove_dir(lost);
    Ok(())
}
