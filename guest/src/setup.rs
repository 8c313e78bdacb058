//! Applying the seed to a root filesystem. Every function takes the root (and the seed
//! directory) as a path so it can be tested against a temporary tree; PID 1 passes `/`.
//! Mounting is PID 1's job (`init.rs`); these only create, copy and write files.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};

use ccvm_guest_protocol::paths::{
    AGENT_SHELL, GUEST_AGENT, SSHD_AUTHORIZED_KEYS, SSHD_CONFIG, SSHD_HOST_KEY,
};
use ccvm_guest_protocol::seed::{AUTHORIZED_KEYS_FILE, CONTEXT_FILE, HOST_KEY_FILE};
use ccvm_guest_protocol::{GuestOwner, GuestUser, SeedManifest, SetupStep};

/// A setup failure, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {detail}")]
pub struct SetupError {
    pub what: String,
    pub detail: String,
}

pub type Result<T> = std::result::Result<T, SetupError>;

fn err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SetupError {
    let what = what.into();
    move |e| SetupError {
        what,
        detail: e.to_string(),
    }
}

/// `root` + an absolute guest path.
pub fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// A guest path where `~/` means the agent's home.
pub fn guest_path(user: &GuestUser, path: &str) -> String {
    match path.strip_prefix("~/") {
        Some(rest) => format!("{}/{rest}", user.home.trim_end_matches('/')),
        None => path.to_owned(),
    }
}

fn write(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(err(format!("creating {}", parent.display())))?;
    }
    fs::write(path, content).map_err(err(format!("writing {}", path.display())))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(err(format!("setting the mode of {}", path.display())))
}

fn chown_to(path: &Path, uid: u32, gid: u32) -> Result<()> {
    chown(path, Some(uid), Some(gid))
        .map_err(err(format!("changing the owner of {}", path.display())))
}

/// Replaces the line of `file` whose first `:`-field is `name` (or appends it).
fn upsert_line(file: &Path, name: &str, uid_field: Option<&str>, line: &str) -> Result<()> {
    let text = fs::read_to_string(file).unwrap_or_default();
    let mut out = String::new();
    for existing in text.lines() {
        let mut fields = existing.split(':');
        let same_name = fields.next() == Some(name);
        let same_id = uid_field.is_some() && fields.nth(1) == uid_field;
        if !same_name && !same_id {
            out.push_str(existing);
            out.push('\n');
        }
    }
    out.push_str(line);
    out.push('\n');
    let mode = fs::metadata(file)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    write(file, out.as_bytes(), mode)
}

/// The agent account with the host user's name and ids; no password (`*`: key login only),
/// bash as shell, a home directory it owns. An existing entry with that name or uid is
/// replaced.
pub fn add_user(root: &Path, user: &GuestUser) -> Result<()> {
    let uid = user.uid.to_string();
    let gid = user.gid.to_string();
    upsert_line(
        &root.join("etc/passwd"),
        &user.name,
        Some(&uid),
        &format!(
            "{}:x:{uid}:{gid}:ccvm agent:{}:{AGENT_SHELL}",
            user.name, user.home
        ),
    )?;
    upsert_line(
        &root.join("etc/group"),
        &user.name,
        Some(&gid),
        &format!("{}:x:{gid}:", user.name),
    )?;
    upsert_line(
        &root.join("etc/shadow"),
        &user.name,
        None,
        &format!("{}:*:19000:0:99999:7:::", user.name),
    )?;
    let home = under(root, &user.home);
    fs::create_dir_all(&home).map_err(err(format!("creating {}", home.display())))?;
    fs::set_permissions(&home, fs::Permissions::from_mode(0o755)).map_err(err("home mode"))?;
    chown_to(&home, user.uid, user.gid)
}

/// Root gets no password at all (S10.4): `*` in the shadow file.
pub fn lock_root(root: &Path) -> Result<()> {
    upsert_line(
        &root.join("etc/shadow"),
        "root",
        None,
        "root:*:19000:0:99999:7:::",
    )
}

/// The one reverse-forward listen address the seed permits, if any (checked, so it can be
/// written into sshd's configuration as it is).
fn permitted_listen(manifest: &SeedManifest) -> Result<Option<&str>> {
    let mut listens = manifest.setup_steps.iter().filter_map(|step| match step {
        SetupStep::SshdPermitListen { listen } => Some(listen.as_str()),
        _ => None,
    });
    let first = listens.next();
    if listens.next().is_some() {
        return Err(SetupError {
            what: "configuring sshd forwarding".to_owned(),
            detail: "the seed permits more than one forward; sshd permits exactly one".to_owned(),
        });
    }
    if let Some(listen) = first {
        ccvm_guest_protocol::setup::check_forward_address(listen).map_err(|detail| SetupError {
            what: "configuring sshd forwarding".to_owned(),
            detail,
        })?;
    }
    Ok(first)
}

/// sshd's forwarding policy (S10.4): nothing at all, or exactly the one reverse forward a
/// policy asked for (TCP on a guest loopback port, or a Unix socket). Local forwards
/// (`-L`, `PermitOpen none`), agent and X11 forwarding and tunnels are never allowed.
fn forwarding(permit: Option<&str>) -> String {
    let mut text = String::from(
        "AllowAgentForwarding no\nX11Forwarding no\nPermitTunnel no\nGatewayPorts no\n\
         PermitOpen none\n",
    );
    match permit {
        None => text.push_str(
            "DisableForwarding yes\nAllowTcpForwarding no\nAllowStreamLocalForwarding no\n\
             PermitListen none\n",
        ),
        Some(path) if path.starts_with('/') => {
            // PermitListen covers TCP only; a socket forward is limited by being the only
            // kind allowed, and the client that may ask is ccvm's alone (one key).
            text.push_str(
                "AllowTcpForwarding no\nAllowStreamLocalForwarding remote\nPermitListen none\n",
            );
        }
        Some(address) => {
            let _ = writeln!(
                text,
                "AllowTcpForwarding remote\nAllowStreamLocalForwarding no\nPermitListen {address}"
            );
        }
    }
    text
}

/// sshd's configuration, host key and the one authorized key (S6.2, S6.3, S10.4).
pub fn sshd(root: &Path, seed: &Path, manifest: &SeedManifest) -> Result<()> {
    let key = fs::read(seed.join(HOST_KEY_FILE)).map_err(err("reading the seed's host key"))?;
    write(&root.join(SSHD_HOST_KEY), &key, 0o600)?;
    let authorized = fs::read(seed.join(AUTHORIZED_KEYS_FILE))
        .map_err(err("reading the seed's authorized key"))?;
    write(&root.join(SSHD_AUTHORIZED_KEYS), &authorized, 0o644)?;
    let config = format!(
        "\
# Written by ccvm-guest for this session only.
Port {port}
ListenAddress 0.0.0.0
HostKey /{SSHD_HOST_KEY}
AuthorizedKeysFile /{SSHD_AUTHORIZED_KEYS}
AllowUsers {user}
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
HostbasedAuthentication no
PermitRootLogin no
PermitEmptyPasswords no
UsePAM no
StrictModes yes
AcceptEnv {api_key} TERM LANG LC_*
PermitUserEnvironment no
PermitUserRC no
{forwarding}PermitTTY yes
PrintMotd no
PrintLastLog no
ForceCommand {GUEST_AGENT} session
",
        port = manifest.guest_ssh_port,
        user = manifest.user.name,
        api_key = manifest.api_key_variable,
        forwarding = forwarding(permitted_listen(manifest)?),
    );
    write(&root.join(SSHD_CONFIG), config.as_bytes(), 0o644)?;
    fs::create_dir_all(root.join("run/sshd")).map_err(err("creating /run/sshd"))?;
    fs::set_permissions(root.join("run/sshd"), fs::Permissions::from_mode(0o755))
        .map_err(err("mode of /run/sshd"))?;
    // OpenSSH warns on every login without it.
    write(&root.join("var/log/lastlog"), b"", 0o644)
}

fn copy_tree(from: &Path, to: &Path, uid: u32, gid: u32) -> Result<()> {
    fs::create_dir_all(to).map_err(err(format!("creating {}", to.display())))?;
    chown_to(to, uid, gid)?;
    for entry in fs::read_dir(from).map_err(err(format!("listing {}", from.display())))? {
        let entry = entry.map_err(err(format!("listing {}", from.display())))?;
        let name = entry.file_name();
        if name == ".credentials.json" {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        let meta = fs::metadata(&src).map_err(err(format!("reading {}", src.display())))?;
        if meta.is_dir() {
            copy_tree(&src, &dst, uid, gid)?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(0o755))
                .map_err(err("dir mode"))?;
        } else {
            fs::copy(&src, &dst).map_err(err(format!("copying {}", src.display())))?;
            // Staged files are the agent's to change (S5.3), whatever mode the host had.
            let mode = (meta.permissions().mode() & 0o755) | 0o600;
            fs::set_permissions(&dst, fs::Permissions::from_mode(mode))
                .map_err(err("file mode"))?;
            chown_to(&dst, uid, gid)?;
        }
    }
    Ok(())
}

/// Fills the agent's (already mounted, empty) `~/.claude` from the seed, then appends the
/// session header to its CLAUDE.md (S5.3, S5.6).
/// `replace` swaps one line of the session header for another (the scratch disk's line when
/// setting the disk up failed).
pub fn claude_home(
    root: &Path,
    seed: &Path,
    seed_dir: &str,
    user: &GuestUser,
    replace: Option<(&str, &str)>,
) -> Result<()> {
    let target = under(root, &user.home).join(".claude");
    let source = seed.join(seed_dir);
    if source.is_dir() {
        copy_tree(&source, &target, user.uid, user.gid)?;
    } else {
        fs::create_dir_all(&target).map_err(err("creating ~/.claude"))?;
        chown_to(&target, user.uid, user.gid)?;
    }
    fs::set_permissions(&target, fs::Permissions::from_mode(0o700))
        .map_err(err("mode of ~/.claude"))?;
    let mut context = fs::read_to_string(seed.join(CONTEXT_FILE)).unwrap_or_default();
    if let Some((from, to)) = replace {
        context = context.replace(from, to);
    }
    if !context.is_empty() {
        let claude_md = target.join("CLAUDE.md");
        let mut text = fs::read_to_string(&claude_md).unwrap_or_default();
        if !text.is_empty() && !text.ends_with("\n\n") {
            text.push_str(if text.ends_with('\n') { "\n" } else { "\n\n" });
        }
        text.push_str(&context);
        write(&claude_md, text.as_bytes(), 0o644)?;
        chown_to(&claude_md, user.uid, user.gid)?;
    }
    Ok(())
}

/// Installs one seed file (`InstallFile`).
pub fn install_file(
    root: &Path,
    seed: &Path,
    user: &GuestUser,
    seed_path: &str,
    guest: &str,
    owner: GuestOwner,
    mode: u32,
) -> Result<()> {
    let content =
        fs::read(seed.join(seed_path)).map_err(err(format!("reading seed file {seed_path}")))?;
    let target = under(root, &guest_path(user, guest));
    write(&target, &content, mode)?;
    if owner == GuestOwner::Agent {
        // Directories created on the way inside the home belong to the agent too.
        let home = under(root, &user.home);
        let mut dir = target.parent();
        while let Some(d) = dir.filter(|d| d.starts_with(&home) && *d != home) {
            chown_to(d, user.uid, user.gid)?;
            dir = d.parent();
        }
        chown_to(&target, user.uid, user.gid)?;
    }
    Ok(())
}

/// Passwordless sudo for the agent, or none (S7.3).
pub fn agent_sudo(root: &Path, user: &GuestUser, allowed: bool) -> Result<()> {
    let file = root.join("etc/sudoers.d/ccvm-agent");
    if allowed {
        write(
            &file,
            format!("{} ALL=(ALL:ALL) NOPASSWD: ALL\n", user.name).as_bytes(),
            0o440,
        )
    } else {
        match fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(err("removing sudoers entry")(e))
            }
            _ => Ok(()),
        }
    }
}

/// Resolver pins in a root-owned `/etc/hosts`.
pub fn hosts(root: &Path, pins: &[(String, std::net::IpAddr)]) -> Result<()> {
    let mut text = String::from("127.0.0.1\tlocalhost ccvm\n::1\tlocalhost ip6-localhost\n");
    for (name, address) in pins {
        let _ = writeln!(text, "{address}\t{name}");
    }
    write(&root.join("etc/hosts"), text.as_bytes(), 0o644)
}

/// The resolver configuration: the network's resolver, or none at all (S7.2: under an
/// allowlist the allowed names are pinned in `/etc/hosts` and a resolver would only be a
/// tunnel). With no `nameserver` line a lookup goes to the guest's own loopback, where nothing
/// answers, so it fails at once instead of hanging on the filter.
pub fn resolver(root: &Path, dns: Option<&str>) -> Result<()> {
    let text = match dns {
        Some(dns) => format!("nameserver {dns}\n"),
        None => "# ccvm: no DNS in this session (egress allowlist); the allowed names are \
                 pinned in /etc/hosts\noptions attempts:1 timeout:1\n"
            .to_owned(),
    };
    write(&root.join("etc/resolv.conf"), text.as_bytes(), 0o644)
}

/// Hardening sysctls (S10.4), written under `proc_sys` (`/proc/sys` in the guest). Every one
/// must take effect, or the boot fails.
pub const SYSCTLS: [(&str, &str); 10] = [
    ("kernel/kptr_restrict", "2"),
    ("kernel/dmesg_restrict", "1"),
    ("kernel/unprivileged_bpf_disabled", "1"),
    ("net/core/bpf_jit_harden", "2"),
    ("net/ipv4/conf/all/rp_filter", "1"),
    ("kernel/kexec_load_disabled", "1"),
    // Links and files in sticky world-writable directories (/tmp) cannot be used to redirect
    // a more privileged process to the agent's choice of file.
    ("fs/protected_symlinks", "1"),
    ("fs/protected_hardlinks", "1"),
    ("fs/protected_regular", "2"),
    ("fs/protected_fifos", "2"),
];

/// Hardening sysctls that only some kernels have (a security module may be left out of a
/// user's kernel): set when present, skipped silently when the file does not exist.
pub const OPTIONAL_SYSCTLS: [(&str, &str); 1] = [
    // Only a process's own descendants can be traced (no reading another process's memory).
    ("kernel/yama/ptrace_scope", "1"),
];

pub fn sysctls(proc_sys: &Path) -> Result<()> {
    for (key, value) in SYSCTLS {
        fs::write(proc_sys.join(key), value).map_err(err(format!("setting sysctl {key}")))?;
    }
    for (key, value) in OPTIONAL_SYSCTLS {
        match fs::write(proc_sys.join(key), value) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => other.map_err(err(format!("setting sysctl {key}")))?,
        }
    }
    Ok(())
}

/// Applies the seed's setup steps that are plain file work. Returns the steps PID 1 must
/// handle itself (mounts, firewall).
pub fn apply_steps<'a>(
    root: &Path,
    seed: &Path,
    manifest: &'a SeedManifest,
) -> Result<Vec<&'a SetupStep>> {
    let mut left = Vec::new();
    for step in &manifest.setup_steps {
        match step {
            SetupStep::InstallFile {
                seed_path,
                guest_path,
                owner,
                mode,
            } => install_file(
                root,
                seed,
                &manifest.user,
                seed_path,
                guest_path,
                *owner,
                *mode,
            )?,
            SetupStep::AgentSudo { allowed } => agent_sudo(root, &manifest.user, *allowed)?,
            SetupStep::HostsPins { pins } => hosts(root, pins)?,
            // sshd's configuration reads it (`sshd`).
            SetupStep::SshdPermitListen { .. } => {}
            SetupStep::ClaudeHome { .. }
            | SetupStep::Firewall(_)
            | SetupStep::ScratchDisk { .. } => left.push(step),
        }
    }
    Ok(left)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use ccvm_guest_protocol::NetworkAttachment;
    use ccvm_guest_protocol::seed::{SEED_VERSION, SessionMode};

    use super::*;

    fn me() -> GuestUser {
        GuestUser {
            name: "alice".to_owned(),
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            home: "/home/alice".to_owned(),
        }
    }

    fn root_with_etc() -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(root.path().join("etc")).expect("mkdir");
        fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\nold:x:1000:1000::/home/old:/bin/sh\n",
        )
        .expect("passwd");
        fs::write(root.path().join("etc/group"), "root:x:0:\n").expect("group");
        fs::write(
            root.path().join("etc/shadow"),
            "root:$6$hash:19000:0:99999:7:::\n",
        )
        .expect("shadow");
        root
    }

    fn manifest(steps: Vec<SetupStep>) -> SeedManifest {
        SeedManifest {
            version: SEED_VERSION,
            user: me(),
            project_dir: "/home/alice/p".to_owned(),
            mode: SessionMode::Claude,
            shares: Vec::new(),
            writable_cwd: true,
            api_key_variable: "ANTHROPIC_API_KEY".to_owned(),
            guest_ssh_port: 22,
            network: NetworkAttachment::None,
            setup_steps: steps,
        }
    }

    #[test]
    fn add_user_replaces_same_uid_and_has_key_only_login() {
        let root = root_with_etc();
        let mut user = me();
        user.uid = 1000;
        user.gid = 1000;
        // chown to 1000 needs root; the passwd lines are what this test is about.
        let _ = add_user(root.path(), &user);
        let passwd = fs::read_to_string(root.path().join("etc/passwd")).expect("read");
        assert!(
            passwd.contains("alice:x:1000:1000:ccvm agent:/home/alice:/bin/bash"),
            "{passwd}"
        );
        assert!(!passwd.contains("old:"), "same uid replaced: {passwd}");
        let shadow = fs::read_to_string(root.path().join("etc/shadow")).expect("read");
        assert!(shadow.contains("alice:*:"), "{shadow}");
    }

    #[test]
    fn root_gets_no_password() {
        let root = root_with_etc();
        lock_root(root.path()).expect("lock");
        let shadow = fs::read_to_string(root.path().join("etc/shadow")).expect("read");
        assert_eq!(shadow, "root:*:19000:0:99999:7:::\n");
    }

    #[test]
    fn sshd_config_forces_the_session_and_accepts_one_secret_variable() {
        let root = root_with_etc();
        let seed = tempfile::tempdir().expect("seed");
        write(&seed.path().join(HOST_KEY_FILE), b"PRIVATE", 0o600).expect("key");
        write(
            &seed.path().join(AUTHORIZED_KEYS_FILE),
            b"ssh-ed25519 AAAA",
            0o644,
        )
        .expect("pub");
        sshd(root.path(), seed.path(), &manifest(Vec::new())).expect("sshd");
        let config = fs::read_to_string(root.path().join(SSHD_CONFIG)).expect("config");
        for line in [
            "ForceCommand /usr/local/bin/ccvm-guest session",
            "PasswordAuthentication no",
            "PermitRootLogin no",
            "AllowUsers alice",
            "AcceptEnv ANTHROPIC_API_KEY TERM LANG LC_*",
            "AllowAgentForwarding no",
            "X11Forwarding no",
            // S10.4: no forwarding of any kind unless a policy asks for one.
            "DisableForwarding yes",
            "AllowTcpForwarding no",
            "AllowStreamLocalForwarding no",
            "PermitTunnel no",
            "PermitOpen none",
            "PermitListen none",
            "AuthenticationMethods publickey",
        ] {
            assert!(
                config.lines().any(|l| l == line),
                "missing {line:?}:\n{config}"
            );
        }
        let key = fs::metadata(root.path().join(SSHD_HOST_KEY)).expect("key");
        assert_eq!(key.permissions().mode() & 0o777, 0o600);
    }

    fn sshd_config_for(steps: Vec<SetupStep>) -> Result<String> {
        let root = root_with_etc();
        let seed = tempfile::tempdir().expect("seed");
        write(&seed.path().join(HOST_KEY_FILE), b"PRIVATE", 0o600).expect("key");
        write(
            &seed.path().join(AUTHORIZED_KEYS_FILE),
            b"ssh-ed25519 A",
            0o644,
        )
        .expect("pub");
        sshd(root.path(), seed.path(), &manifest(steps))?;
        Ok(fs::read_to_string(root.path().join(SSHD_CONFIG)).expect("config"))
    }

    /// S10.4: a policy's one reverse forward is permitted at exactly its listen address;
    /// local forwards stay refused; a second forward or an unsafe address is refused.
    #[test]
    fn sshd_permits_exactly_the_one_forward_a_policy_asks_for() {
        let permit = |listen: &str| SetupStep::SshdPermitListen {
            listen: listen.to_owned(),
        };
        let config = sshd_config_for(vec![permit("127.0.0.1:7070")]).expect("sshd");
        for line in [
            "AllowTcpForwarding remote",
            "PermitListen 127.0.0.1:7070",
            "PermitOpen none",
            "AllowStreamLocalForwarding no",
            "AllowAgentForwarding no",
        ] {
            assert!(
                config.lines().any(|l| l == line),
                "missing {line:?}:\n{config}"
            );
        }
        assert!(!config.contains("DisableForwarding"), "{config}");
        let socket = sshd_config_for(vec![permit("/run/ccvm/clip.sock")]).expect("sshd");
        assert!(
            socket
                .lines()
                .any(|l| l == "AllowStreamLocalForwarding remote")
                && socket.lines().any(|l| l == "AllowTcpForwarding no"),
            "{socket}"
        );
        assert!(sshd_config_for(vec![permit("1:1"), permit("2:2")]).is_err());
        for bad in [
            "127.0.0.1:22\nPermitOpen any",
            "127.0.0.1 7070",
            "",
            "localhost",
        ] {
            assert!(sshd_config_for(vec![permit(bad)]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_resolver_is_the_network_s_or_none_at_all() {
        let root = root_with_etc();
        resolver(root.path(), Some("10.0.2.3")).expect("resolver");
        assert_eq!(
            fs::read_to_string(root.path().join("etc/resolv.conf")).expect("read"),
            "nameserver 10.0.2.3\n"
        );
        resolver(root.path(), None).expect("no resolver");
        let text = fs::read_to_string(root.path().join("etc/resolv.conf")).expect("read");
        assert!(!text.contains("nameserver"), "{text}");
    }

    #[test]
    fn claude_home_copies_staged_items_drops_credentials_and_appends_header() {
        let root = root_with_etc();
        let seed = tempfile::tempdir().expect("seed");
        write(&seed.path().join("claude/CLAUDE.md"), b"# mine\n", 0o444).expect("md");
        write(&seed.path().join("claude/commands/x.md"), b"cmd", 0o444).expect("cmd");
        write(
            &seed.path().join("claude/commands/.credentials.json"),
            b"{}",
            0o600,
        )
        .expect("creds");
        write(&seed.path().join(CONTEXT_FILE), b"# ccvm session\n", 0o644).expect("ctx");
        let user = me();
        claude_home(root.path(), seed.path(), "claude", &user, None).expect("claude home");
        let home = root.path().join("home/alice/.claude");
        assert_eq!(
            fs::read_to_string(home.join("CLAUDE.md")).expect("md"),
            "# mine\n\n# ccvm session\n"
        );
        assert!(home.join("commands/x.md").is_file());
        assert!(!home.join("commands/.credentials.json").exists());
        let meta = fs::metadata(home.join("commands/x.md")).expect("meta");
        assert_eq!(meta.uid(), user.uid);
        assert!(
            meta.permissions().mode() & 0o200 != 0,
            "staged files are writable"
        );
    }

    #[test]
    fn steps_install_files_sudo_and_hosts_and_leave_the_rest() {
        let root = root_with_etc();
        let seed = tempfile::tempdir().expect("seed");
        write(&seed.path().join("git/config"), b"[user]\n", 0o644).expect("git");
        let steps = vec![
            SetupStep::InstallFile {
                seed_path: "git/config".to_owned(),
                guest_path: "~/.config/git/config".to_owned(),
                owner: GuestOwner::Agent,
                mode: 0o644,
            },
            SetupStep::AgentSudo { allowed: true },
            SetupStep::HostsPins {
                pins: vec![("api.example".to_owned(), "192.0.2.1".parse().expect("ip"))],
            },
            SetupStep::ClaudeHome {
                seed_dir: "claude".to_owned(),
            },
        ];
        let manifest = manifest(steps);
        let left = apply_steps(root.path(), seed.path(), &manifest).expect("apply");
        assert_eq!(left.len(), 1);
        assert_eq!(
            fs::read(root.path().join("home/alice/.config/git/config")).expect("git"),
            b"[user]\n"
        );
        let sudoers =
            fs::read_to_string(root.path().join("etc/sudoers.d/ccvm-agent")).expect("sudo");
        assert_eq!(sudoers, "alice ALL=(ALL:ALL) NOPASSWD: ALL\n");
        assert!(
            fs::read_to_string(root.path().join("etc/hosts"))
                .expect("hosts")
                .contains("192.0.2.1\tapi.example")
        );
        agent_sudo(root.path(), &manifest.user, false).expect("revoke");
        assert!(!root.path().join("etc/sudoers.d/ccvm-agent").exists());
    }

    #[test]
    fn sysctls_are_written_under_proc_sys() {
        let dir = tempfile::tempdir().expect("dir");
        for (key, _) in SYSCTLS {
            fs::create_dir_all(dir.path().join(key).parent().expect("parent")).expect("mkdir");
        }
        // No kernel/yama here: an optional sysctl the kernel lacks is skipped.
        sysctls(dir.path()).expect("sysctls");
        assert!(!dir.path().join("kernel/yama").exists());
        assert_eq!(
            fs::read_to_string(dir.path().join("kernel/kptr_restrict")).expect("read"),
            "2"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("fs/protected_regular")).expect("read"),
            "2"
        );
        fs::create_dir_all(dir.path().join("kernel/yama")).expect("mkdir");
        sysctls(dir.path()).expect("sysctls");
        assert_eq!(
            fs::read_to_string(dir.path().join("kernel/yama/ptrace_scope")).expect("read"),
            "1"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("kernel/kexec_load_disabled")).expect("read"),
            "1"
        );
    }
}
