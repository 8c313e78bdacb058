//! The encrypted scratch disk (S9) in a real guest: `/scratch` is a LUKS2 dm-crypt mount the
//! agent can write; what it writes does not appear in the host's image file (the image's own
//! LUKS header does: the control that the right file was read); the image is gone after a
//! normal exit and after SIGKILL of ccvm; a disk that cannot be set up leaves the session
//! running without `/scratch` and the session header says so.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ccvm_plugin_api::SetupStep;
use ccvm_test_support::vm;
use ccvm_test_support::world::World;

/// A session must finish well within this, boot included.
const SESSION_LIMIT: Duration = Duration::from_secs(300);
/// A line the agent writes many times to its scratch disk.
const MARKER: &str = "CCVM-SCRATCH-MARKER-3f9a1c";

/// The scratch disk images in a world's scratch directory (`$XDG_CACHE_HOME/ccvm`).
fn disk_images(world: &World) -> Vec<PathBuf> {
    std::fs::read_dir(world.path("cache/ccvm"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("disk-") && n.ends_with(".img"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `needle` occurs anywhere in the file (read in chunks; the file is sparse).
fn file_contains(path: &Path, needle: &[u8]) -> bool {
    let mut file = std::fs::File::open(path).expect("open the image");
    let mut carry: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut chunk).expect("read the image");
        if n == 0 {
            return false;
        }
        carry.extend_from_slice(&chunk[..n]);
        if carry.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
        let keep = carry.len().saturating_sub(needle.len());
        carry.drain(..keep);
    }
}

fn waits_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// S9.1, S9.2: the agent writes to an encrypted `/scratch`; the host image never holds the
/// plaintext while the session runs, and is gone once it ends.
#[test]
fn scratch_is_an_encrypted_disk_the_agent_writes_and_the_host_image_goes_away() {
    let Some(world) = vm::stub_world("vm_disk_gib = 1\n", |_| {}) else {
        return;
    };
    let script = format!(
        r#"
set -e
echo "check: mount=$(awk '$2 == "/scratch" {{ print $1 " " $3 " " $4 }}' /proc/mounts)"
name=$(basename "$(awk '$2 == "/scratch" {{ print $1 }}' /proc/mounts)")
for d in /sys/block/dm-*; do
    [ "$(cat "$d/dm/name")" = "$name" ] && echo "check: dm-uuid=$(cut -c1-11 "$d/dm/uuid")"
done
echo "check: owner=$(stat -c %u /scratch)"
for i in $(seq 1 20000); do echo "{MARKER} $i"; done > /scratch/marker.txt
sync
echo "check: written=$(wc -l < /scratch/marker.txt)"
for i in $(seq 1 600); do [ -e continue ] && break; sleep 0.1; done
echo "check: header=$(grep -c 'encrypted 1 GiB scratch disk' "$HOME/.claude/CLAUDE.md")"
exit 0
"#
    );
    let mut child = world.ccvm().args(["--shell", "-c", &script]).spawn_quiet();
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line.trim_end_matches('\r').to_owned());
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + SESSION_LIMIT;
    while !lines
        .iter()
        .any(|l: &String| l.starts_with("check: written="))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => {
                let _ = child.kill();
                let output = child.wait_with_output().expect("wait");
                panic!(
                    "the session did not write its marker: {lines:?}\nstderr:\n{}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
    }
    // While the session runs: the host's image holds LUKS, not the agent's data.
    let images = disk_images(&world);
    assert_eq!(images.len(), 1, "one scratch image per run: {images:?}");
    let image = &images[0];
    let size = std::fs::metadata(image).expect("image").len();
    assert_eq!(size, 1 << 30, "exactly the configured size");
    assert!(
        file_contains(image, b"LUKS\xba\xbe"),
        "the control: the image carries a LUKS header"
    );
    assert!(
        !file_contains(image, MARKER.as_bytes()),
        "the agent's data reached the host image in plaintext"
    );
    std::fs::write(world.path("project/continue"), "").expect("signal the guest");
    let (output, in_time) = vm::output_within(child, SESSION_LIMIT);
    assert!(in_time, "the session did not end");
    // The rest of the session's output, which the reader thread has (it ends at EOF).
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) {
        lines.push(line);
    }
    let value = |key: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("check: {key}=")))
            .unwrap_or_else(|| panic!("no {key} in {lines:?}"))
            .to_owned()
    };
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mount = value("mount");
    assert!(
        mount.starts_with("/dev/mapper/") && mount.contains(" ext4 ") && mount.contains("nosuid"),
        "{mount}"
    );
    assert_eq!(value("dm-uuid"), "CRYPT-LUKS2");
    assert_eq!(value("owner"), vm::session_uid().to_string());
    assert_eq!(value("written"), "20000");
    assert_eq!(value("header"), "1");
    assert!(
        disk_images(&world).is_empty(),
        "the scratch image outlived the session"
    );
}

/// S9.1, S11.1: SIGKILL of ccvm takes the scratch image with it (the reaper removes it).
#[test]
fn sigkill_of_ccvm_removes_the_scratch_image() {
    let Some(world) = vm::stub_world("vm_disk_gib = 2\n", |_| {}) else {
        return;
    };
    let mut child = world
        .ccvm()
        .args(["--shell", "-c", "sleep 600"])
        .env("CCVM_TIMINGS", world.path("home/timings.json"))
        .spawn_quiet();
    let consoles = || -> Vec<PathBuf> {
        std::fs::read_dir(world.path("runtime/ccvm"))
            .map(|e| e.flatten().map(|e| e.path().join("console.log")).collect())
            .unwrap_or_default()
    };
    let mounted = waits_until(SESSION_LIMIT, || {
        consoles()
            .iter()
            .any(|c| std::fs::read_to_string(c).is_ok_and(|t| t.contains("ccvm-guest: ready")))
    });
    assert!(mounted, "the guest never became ready");
    assert_eq!(
        disk_images(&world).len(),
        1,
        "the image exists while running"
    );
    child.kill().expect("SIGKILL ccvm");
    let _ = child.wait();
    assert!(
        waits_until(Duration::from_secs(15), || disk_images(&world).is_empty()),
        "the scratch image survived SIGKILL: {:?}",
        disk_images(&world)
    );
}

/// S9.2: when the disk cannot be set up (here: the seed asks for one the machine does not
/// have), the session still starts, without `/scratch`, and the console and the session
/// header say so.
#[test]
fn a_scratch_disk_that_cannot_be_set_up_leaves_the_session_running_and_says_so() {
    let Some(world) = vm::stub_world("", |_| {}) else {
        return;
    };
    let script = r#"
if [ -d /scratch ] && awk '$2 == "/scratch"' /proc/mounts | grep -q .; then echo "check: scratch=mounted"; else echo "check: scratch=absent"; fi
echo "check: header=$(grep -c 'could not be set up' "$HOME/.claude/CLAUDE.md")"
echo "check: promise=$(grep -c 'encrypted 3 GiB' "$HOME/.claude/CLAUDE.md")"
"#;
    let session = crate::boot::boot_session(&world, "microvm", script, |manifest, files| {
        manifest.setup_steps.insert(
            0,
            SetupStep::ScratchDisk {
                mount: "/scratch".to_owned(),
                size_gib: 3,
            },
        );
        // The header the host would have written for a planned 3 GiB disk.
        for file in files.iter_mut() {
            if let ccvm_plugin_api::SeedSource::Inline { content } = &mut file.source
                && file.path == "ccvm-session.md"
            {
                *content = content.replace(
                    "- There is no /scratch disk; large temporary files go to RAM (/tmp).",
                    &ccvm_plugin_api::guest::setup::scratch_header_line(3, None),
                );
            }
        }
    });
    assert_eq!(session.value("scratch"), "absent");
    assert_eq!(session.value("header"), "1", "{:?}", session.lines);
    assert_eq!(
        session.value("promise"),
        "0",
        "the header still promised /scratch"
    );
    assert!(
        session.console.contains("scratch disk not set up"),
        "{}",
        session.console
    );
}
