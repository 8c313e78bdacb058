//! Guest hardening in a real guest (S10.4): the `fs.protected_*` and Yama sysctls; with sudo
//! off, a root overlay that honours no setuid bit, so `sudo`, `su` and a setuid-root copy of a
//! program all leave the agent unprivileged (the control: with `agent_sudo = true` the same
//! copy and sudo do give root); and an sshd that refuses every forward a client asks for but
//! the one a policy permits (the control: that one works in the same session).

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use ccvm_plugin_api::{GuestOwner, SeedFile, SeedSource, SetupStep};

use crate::boot::{self, Session};
use ccvm_test_support::vm;

/// Where the tampered seed installs a setuid-root copy of `id`.
const SUID_ID: &str = "/usr/local/bin/ccvm-suid-id";

const PRIVILEGE_SCRIPT: &str = r#"
echo "check: root-options=$(awk '$2 == "/" { print $4 }' /proc/mounts)"
if sudo -n true 2>/dev/null; then echo "check: sudo=yes"; else echo "check: sudo=no"; fi
if su -c true root </dev/null 2>/dev/null; then echo "check: su=yes"; else echo "check: su=no"; fi
echo "check: suid-file=$(stat -c '%a %U' /usr/local/bin/ccvm-suid-id)"
echo "check: suid-euid=$(/usr/local/bin/ccvm-suid-id -u)"
echo "check: uid=$(id -u)"
for k in fs/protected_symlinks fs/protected_hardlinks fs/protected_regular fs/protected_fifos kernel/yama/ptrace_scope; do
    echo "check: sysctl $k=$(cat /proc/sys/$k 2>/dev/null || echo absent)"
done
"#;

/// Boots with a setuid-root copy of the host's `id` installed by the guest agent (no
/// configuration can do that, so the test adds it to the seed).
fn privilege_session(config: &str) -> Option<Session> {
    // Staging copies only from the home (S5.3), so the host's `id` is put there first.
    let world = vm::stub_world(config, |world| {
        std::fs::create_dir_all(world.home().join("tools")).expect("mkdir");
        std::fs::copy("/usr/bin/id", world.home().join("tools/id")).expect("copy id");
    })?;
    let id = world.home().join("tools/id").display().to_string();
    Some(boot::boot_session(
        &world,
        "microvm",
        PRIVILEGE_SCRIPT,
        |manifest, files| {
            files.push(SeedFile {
                path: "test/suid-id".to_owned(),
                source: SeedSource::CopyFromHost {
                    host_path: id,
                    drop_names: Vec::new(),
                },
            });
            manifest.setup_steps.push(SetupStep::InstallFile {
                seed_path: "test/suid-id".to_owned(),
                guest_path: SUID_ID.to_owned(),
                owner: GuestOwner::Root,
                mode: 0o4755,
            });
        },
    ))
}

/// S10.4: with sudo off nothing gives the agent root: sudo and su fail, and a real
/// setuid-root binary runs with the agent's own uid because `/` is `nosuid`. The hardening
/// sysctls are set.
#[test]
fn without_sudo_no_setuid_binary_gives_root_and_the_sysctls_are_set() {
    let Some(session) = privilege_session("agent_sudo = false\n") else {
        return;
    };
    let uid = session.value("uid").to_owned();
    assert!(
        session
            .value("root-options")
            .split(',')
            .any(|o| o == "nosuid"),
        "{}",
        session.value("root-options")
    );
    assert_eq!(session.value("sudo"), "no");
    assert_eq!(session.value("su"), "no");
    assert_eq!(
        session.value("suid-file"),
        "4755 root",
        "the copy is setuid root"
    );
    assert_eq!(session.value("suid-euid"), uid, "setuid is not honoured");
    for (key, value) in [
        ("fs/protected_symlinks", "1"),
        ("fs/protected_hardlinks", "1"),
        ("fs/protected_regular", "2"),
        ("fs/protected_fifos", "2"),
        ("kernel/yama/ptrace_scope", "1"),
    ] {
        assert_eq!(session.value(&format!("sysctl {key}")), value, "{key}");
    }
}

/// The control: the same setuid copy does give root when `/` is not `nosuid` (sudo on), so
/// the test above fails for the right reason.
#[test]
fn with_sudo_the_same_setuid_copy_and_sudo_give_root() {
    let Some(session) = privilege_session("agent_sudo = true\n") else {
        return;
    };
    assert!(
        !session
            .value("root-options")
            .split(',')
            .any(|o| o == "nosuid"),
        "{}",
        session.value("root-options")
    );
    assert_eq!(session.value("sudo"), "yes");
    assert_eq!(session.value("suid-euid"), "0");
    assert_ne!(session.value("uid"), "0");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A host service answering `open` once per connection.
fn tcp_service() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = std::io::Write::write_all(&mut stream, b"open\n");
        }
    });
    port
}

/// What a connection to the ssh client's local forward gets: the guest sshd's banner if the
/// forward were allowed, nothing when sshd refuses it.
fn probe_local_forward(port: u16) -> std::thread::JoinHandle<Option<String>> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(240);
        while Instant::now() < deadline {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
                let mut text = String::new();
                let _ = stream.read_to_string(&mut text);
                return Some(text);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    })
}

const FORWARD_SCRIPT: &str = r#"
probe() { for i in 1 2 3 4 5; do r=$(timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 && head -c4 <&3" 2>/dev/null); [ -n "$r" ] && break; sleep 1; done; echo "check: $2=${r:-closed}"; }
probe "$PERMITTED" permitted
probe "$OTHER" other
sleep 3
echo "check: done=yes"
"#;

/// S10.4: sshd refuses a client's local (`-L`) and remote (`-R`) forwards, except exactly the
/// one remote forward a policy asks for (the clipboard bridge's shape), which works: the same
/// session shows a permitted and a refused `-R` side by side. The client here is made to ask
/// (ccvm's own client clears every forward and is checked in the plan).
#[test]
fn sshd_refuses_every_forward_but_the_one_a_policy_permits() {
    let Some(world) = vm::stub_world("", |_| {}) else {
        return;
    };
    let service = tcp_service();
    let (permitted, other, local) = (free_port(), free_port(), free_port());
    let script = format!("PERMITTED={permitted}; OTHER={other}\n{FORWARD_SCRIPT}");
    let local_probe = probe_local_forward(local);
    let session = boot::boot_session_with(
        &world,
        "microvm",
        &script,
        |manifest, _| {
            manifest.setup_steps.push(SetupStep::SshdPermitListen {
                listen: format!("127.0.0.1:{permitted}"),
            });
        },
        |args| {
            // ccvm's client clears all forwards and logs errors only; this one asks for three
            // and reports the refusals.
            let clear = args
                .iter()
                .position(|a| a == "ClearAllForwardings=yes")
                .expect("ccvm's client clears all forwards");
            args.drain(clear - 1..=clear);
            for arg in args.iter_mut() {
                if arg == "LogLevel=ERROR" {
                    *arg = "LogLevel=INFO".to_owned();
                }
            }
            let destination = args.pop().expect("the destination comes last");
            args.extend([
                "-R".to_owned(),
                format!("127.0.0.1:{permitted}:127.0.0.1:{service}"),
                "-R".to_owned(),
                format!("127.0.0.1:{other}:127.0.0.1:{service}"),
                "-L".to_owned(),
                format!("127.0.0.1:{local}:127.0.0.1:22"),
                destination,
            ]);
        },
    );
    assert_eq!(session.value("done"), "yes");
    assert_eq!(
        session.value("permitted"),
        "open",
        "the permitted forward works"
    );
    assert_eq!(session.value("other"), "closed", "{}", session.ssh_stderr);
    assert!(
        session.ssh_stderr.contains(&format!(
            "remote port forwarding failed for listen port {other}"
        )),
        "{}",
        session.ssh_stderr
    );
    let through_local = local_probe.join().expect("probe thread");
    let through_local = through_local.expect("the ssh client listened for the local forward");
    assert!(
        !through_local.contains("SSH-"),
        "the local forward reached the guest's sshd: {through_local:?}"
    );
    assert!(
        session.ssh_stderr.contains("administratively prohibited"),
        "{}",
        session.ssh_stderr
    );
}

/// virtiofsd processes of `world` and the user namespace each runs in.
fn virtiofsd_namespaces(world: &ccvm_test_support::world::World) -> Vec<String> {
    let marker = world.root.path().display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains("virtiofsd")
            && text.contains(&marker)
            && let Ok(ns) = std::fs::read_link(entry.path().join("ns/user"))
        {
            found.push(format!("{} {text}", ns.display()));
        }
    }
    found
}

/// virtiofsd runs in its namespace sandbox for the unprivileged user ccvm runs as (`nobody`
/// when the tests run as root; the boot tests cover virtiofsd started as root) and still
/// serves a writable project: the guest's file lands on the host, owned by the host user.
#[test]
fn virtiofsd_in_its_namespace_sandbox_serves_the_writable_project() {
    if which::which("virtiofsd").is_err() {
        vm::skip(
            "virtiofsd (the Rust daemon) is not installed: `cargo install --locked virtiofsd`",
        );
        return;
    }
    let Some(world) = vm::stub_world(
        "share_transport = \"virtio-fs\"\nwritable_cwd = true\n",
        |_| {},
    ) else {
        return;
    };
    let own_namespace = std::fs::read_link("/proc/self/ns/user").expect("own user namespace");
    let mut child = world
        .ccvm()
        .args([
            "--shell",
            "-c",
            "echo from-guest > sandboxed.txt && sleep 4 && echo wrote",
        ])
        .spawn_quiet();
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut seen = Vec::new();
    while child.try_wait().expect("try_wait").is_none() && Instant::now() < deadline {
        let now = virtiofsd_namespaces(&world);
        if !now.is_empty() {
            seen = now;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (output, in_time) = vm::output_within(child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(in_time && output.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("wrote"));
    assert!(
        !stderr.contains("without its namespace sandbox"),
        "{stderr}"
    );
    assert!(!seen.is_empty(), "no virtiofsd was seen running");
    assert!(
        seen.iter()
            .any(|p| !p.starts_with(&own_namespace.display().to_string())),
        "every virtiofsd ran in the test's own user namespace: {seen:?}"
    );
    let written = world.path("project/sandboxed.txt");
    assert_eq!(
        std::fs::read_to_string(&written).expect("the guest's file is on the host"),
        "from-guest\n"
    );
    let expected_uid = if nix::unistd::getuid().is_root() {
        vm::TEST_UID
    } else {
        nix::unistd::getuid().as_raw()
    };
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&written).expect("metadata")),
        expected_uid,
        "owned by the host user"
    );
}
