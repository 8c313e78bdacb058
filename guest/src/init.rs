//! PID 1 (D5): from the initramfs to a running sshd, then reaping until the session ends.
//!
//! Waits only for what it needs: the root disk, the seed share, sshd listening. Any failure
//! is printed on the console with `ccvm-guest: fatal:` and powers the VM off; nothing is
//! silently skipped.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ccvm_guest_protocol::cmdline::{GuestParams, VirtioTransport};
use ccvm_guest_protocol::paths::{
    DONE_FIFO, ROOT_DISK_SERIAL, SCRATCH_DISK_SERIAL, SEED_DIR, SEED_TAG, SESSION_DIR, SSHD_CONFIG,
};
use ccvm_guest_protocol::seed::{ARGV_FILE, MANIFEST_FILE};
use ccvm_guest_protocol::setup::scratch_header_line;
use ccvm_guest_protocol::{NetworkAttachment, PlannedShare, SetupStep, ShareTransport};
use ccvm_guest_protocol::{SeedManifest, SessionMode, markers};
use nix::mount::{MsFlags, mount};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::{modules, setup};

/// How long to wait for sshd.
const SSHD_TIMEOUT: Duration = Duration::from_secs(30);

fn log(message: &str) {
    eprintln!("ccvm-guest: {message}");
}

/// A phase marker for the console, with the guest kernel's uptime (for `--ccvm-debug` and the
/// benchmarks, which time the phases of a boot from the host).
fn mark(marker: &str) {
    let uptime = fs::read_to_string("/proc/uptime").unwrap_or_default();
    let seconds = uptime.split_whitespace().next().unwrap_or("?");
    eprintln!("{marker} (uptime {seconds} s)");
}

fn power_off() -> ! {
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    // Only reachable when not PID 1 (e.g. `ccvm-guest init` run by hand).
    std::process::exit(1)
}

fn fatal(message: &str) -> ! {
    eprintln!("{} {message}", markers::FATAL);
    power_off()
}

fn mount_fs(
    source: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    fs::create_dir_all(target).map_err(|e| format!("cannot create {target}: {e}"))?;
    mount(Some(source), target, Some(fstype), flags, data)
        .map_err(|e| format!("cannot mount {fstype} {source} on {target}: {e}"))
}

fn move_mount(from: &str, to: &str) -> Result<(), String> {
    fs::create_dir_all(to).map_err(|e| format!("cannot create {to}: {e}"))?;
    mount(Some(from), to, None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| format!("cannot move {from} to {to}: {e}"))
}

/// Root image format from its superblock.
fn root_fstype(device: &str) -> Result<&'static str, String> {
    let mut head = [0u8; 1028];
    fs::File::open(device)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| format!("cannot read {device}: {e}"))?;
    if &head[..4] == b"hsqs" {
        Ok("squashfs")
    } else if head[1024..1028] == [0xe2, 0xe1, 0xf5, 0xe0] {
        Ok("erofs")
    } else {
        Err(format!("{device} holds neither squashfs nor erofs"))
    }
}

/// Initramfs → overlay root: tmpfs upper over the read-only image, then switch into it.
fn switch_root(virtio: VirtioTransport) -> Result<(), String> {
    let initramfs_modules = modules::module_dir(Path::new("/"));
    modules::load(
        &initramfs_modules,
        &ccvm_guest_protocol::modules::root_disk(virtio),
    )?;
    let disk = crate::disks::wait_for_disk(ROOT_DISK_SERIAL)?;
    let disk = disk.display().to_string();
    let fstype = root_fstype(&disk)?;
    let mut root_modules = ccvm_guest_protocol::modules::root_filesystem(fstype);
    root_modules.push("overlay");
    modules::load(&initramfs_modules, &root_modules)?;
    mount_fs(
        "tmpfs",
        "/overlay",
        "tmpfs",
        MsFlags::empty(),
        Some("mode=0755"),
    )?;
    for dir in ["/overlay/lower", "/overlay/upper", "/overlay/work"] {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {dir}: {e}"))?;
    }
    mount_fs(&disk, "/overlay/lower", fstype, MsFlags::MS_RDONLY, None)?;
    mount_fs(
        "overlay",
        "/newroot",
        "overlay",
        MsFlags::empty(),
        Some("lowerdir=/overlay/lower,upperdir=/overlay/upper,workdir=/overlay/work"),
    )?;
    for dir in ["dev", "proc", "sys"] {
        move_mount(&format!("/{dir}"), &format!("/newroot/{dir}"))?;
    }
    std::env::set_current_dir("/newroot").map_err(|e| format!("cannot enter /newroot: {e}"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| format!("cannot move the new root to /: {e}"))?;
    nix::unistd::chroot(".").map_err(|e| format!("chroot: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("cannot enter /: {e}"))
}

fn share_mount(
    transport: ShareTransport,
    tag: &str,
    target: &str,
    read_only: bool,
) -> Result<(), String> {
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    match transport {
        ShareTransport::NineP => mount_fs(
            tag,
            target,
            "9p",
            flags,
            Some("trans=virtio,version=9p2000.L,msize=512000,cache=mmap,access=client"),
        ),
        ShareTransport::VirtioFs => mount_fs(tag, target, "virtiofs", flags, None),
    }
}

/// S9.2: sets up the scratch disk if the seed asks for one. A failure is said on the console
/// and leaves the session without `/scratch`; the returned pair swaps the session header's
/// line about the disk for one that says so.
fn scratch_disk(manifest: &SeedManifest) -> Option<(String, String)> {
    let (mount, size_gib) = manifest.setup_steps.iter().find_map(|step| match step {
        SetupStep::ScratchDisk { mount, size_gib } => Some((mount, *size_gib)),
        _ => None,
    })?;
    let started = Instant::now();
    let result = crate::disks::wait_for_disk(SCRATCH_DISK_SERIAL)
        .and_then(|device| crate::scratch::setup(&device, mount, &manifest.user));
    match result {
        Ok(()) => {
            log(&format!(
                "encrypted scratch disk ({size_gib} GiB) mounted at {mount} in {:.2} s",
                started.elapsed().as_secs_f64()
            ));
            None
        }
        Err(why) => {
            log(&format!(
                "scratch disk not set up: {why}; the session runs without {mount}"
            ));
            Some((
                scratch_header_line(size_gib, None),
                scratch_header_line(size_gib, Some(&why)),
            ))
        }
    }
}

/// Defence in depth for S5.1 (the host refuses such a project first): a share at or above
/// the agent's home would put the user's own home files under the guest's setup and session.
fn refuse_shares_over_home(manifest: &SeedManifest) -> Result<(), String> {
    let home = Path::new(&manifest.user.home);
    match manifest
        .shares
        .iter()
        .find(|share| home.starts_with(&share.guest_path))
    {
        Some(share) => Err(format!(
            "the share {} would contain the agent's home {}; refusing to set up a session \
             that could write the host's own files",
            share.guest_path, manifest.user.home
        )),
        None => Ok(()),
    }
}

/// `~/.claude/`: shares below it (`~/.claude/projects`) are mounted once that tmpfs exists.
fn claude_dir(manifest: &SeedManifest) -> String {
    format!("{}/.claude/", manifest.user.home.trim_end_matches('/'))
}

/// The project (read-write, or read-only lower + tmpfs upper, S5.1) and the other shares,
/// those inside `~/.claude` (`inside_claude`) or the rest.
fn mount_shares(manifest: &SeedManifest, inside_claude: bool) -> Result<(), String> {
    let user = &manifest.user;
    let claude = claude_dir(manifest);
    for (index, share) in manifest.shares.iter().enumerate() {
        if share.guest_path.starts_with(&claude) != inside_claude {
            continue;
        }
        if inside_claude {
            fs::create_dir_all(&share.guest_path)
                .map_err(|e| format!("cannot create {}: {e}", share.guest_path))?;
            std::os::unix::fs::chown(&share.guest_path, Some(user.uid), Some(user.gid))
                .map_err(|e| format!("chown {}: {e}", share.guest_path))?;
        }
        if share.read_only && share.guest_path == manifest.project_dir {
            mount_project_overlay(share, index, user.uid, user.gid)?;
        } else {
            share_mount(
                share.transport,
                &share.tag,
                &share.guest_path,
                share.read_only,
            )?;
        }
    }
    Ok(())
}

fn mount_project_overlay(
    share: &PlannedShare,
    index: usize,
    uid: u32,
    gid: u32,
) -> Result<(), String> {
    let base = format!("/run/ccvm/overlay-{index}");
    share_mount(share.transport, &share.tag, &format!("{base}/lower"), true)?;
    mount_fs(
        "tmpfs",
        &format!("{base}/rw"),
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )?;
    for dir in ["upper", "work"] {
        let path = format!("{base}/rw/{dir}");
        fs::create_dir_all(&path).map_err(|e| format!("cannot create {path}: {e}"))?;
        std::os::unix::fs::chown(&path, Some(uid), Some(gid))
            .map_err(|e| format!("chown {path}: {e}"))?;
    }
    mount_fs(
        "overlay",
        &share.guest_path,
        "overlay",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&format!(
            "lowerdir={base}/lower,upperdir={base}/rw/upper,workdir={base}/rw/work"
        )),
    )
}

fn run_checked(program: &str, args: &[&str]) -> Result<(), String> {
    let status = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {}` failed ({status})", args.join(" ")))
    }
}

fn network(network: &NetworkAttachment) -> Result<(), String> {
    run_checked("/usr/sbin/ip", &["link", "set", "lo", "up"])?;
    if let NetworkAttachment::UserMode {
        gateway,
        dns,
        guest_address,
        ..
    } = network
    {
        run_checked("/usr/sbin/ip", &["link", "set", "eth0", "up"])?;
        run_checked(
            "/usr/sbin/ip",
            &["addr", "add", guest_address, "dev", "eth0"],
        )?;
        run_checked("/usr/sbin/ip", &["route", "add", "default", "via", gateway])?;
        // An egress allowlist takes the resolver away again (the Firewall step).
        setup::resolver(Path::new("/"), Some(dns)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// What the forced command needs, copied out of the seed so the seed (which holds the sshd
/// host key) can be unmounted.
fn prepare_session(manifest: &SeedManifest) -> Result<(), String> {
    let write = |name: &str, content: &[u8]| {
        let path = Path::new(SESSION_DIR).join(name);
        fs::write(&path, content)
            .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(0o644)))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    fs::create_dir_all(SESSION_DIR).map_err(|e| format!("cannot create {SESSION_DIR}: {e}"))?;
    let argv = fs::read(Path::new(SEED_DIR).join(ARGV_FILE))
        .map_err(|e| format!("cannot read the seed argv: {e}"))?;
    write("argv", &argv)?;
    write(
        "mode",
        match manifest.mode {
            SessionMode::Claude => b"claude",
            SessionMode::Shell => b"shell",
        },
    )?;
    write("project_dir", manifest.project_dir.as_bytes())?;
    write(
        crate::session::API_KEY_VARIABLE_FILE,
        manifest.api_key_variable.as_bytes(),
    )?;
    let fifo = Path::new(DONE_FIFO);
    nix::unistd::mkfifo(fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| format!("cannot create {DONE_FIFO}: {e}"))?;
    std::os::unix::fs::chown(fifo, Some(manifest.user.uid), Some(manifest.user.gid))
        .map_err(|e| format!("chown {DONE_FIFO}: {e}"))
}

/// Waits until a socket listens on `port`, read from the kernel's socket tables rather than by
/// connecting (a probe connection would make sshd fork and re-exec a child for nothing).
fn wait_listening(port: u16) -> Result<(), String> {
    let deadline = Instant::now() + SSHD_TIMEOUT;
    while !["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .any(|table| fs::read_to_string(table).is_ok_and(|t| listens(&t, port)))
    {
        if Instant::now() > deadline {
            return Err(format!(
                "sshd is not listening on port {port} after {SSHD_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Whether `/proc/net/tcp{,6}` text has a socket in state LISTEN (`0A`) on local `port`.
fn listens(table: &str, port: u16) -> bool {
    let port = format!(":{port:04X}");
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1).unwrap_or("");
        let state = fields.nth(1).unwrap_or("");
        local.ends_with(&port) && state == "0A"
    })
}

fn boot() -> Result<u32, String> {
    mount_fs("proc", "/proc", "proc", MsFlags::empty(), None)?;
    mark(markers::INIT);
    mount_fs("sysfs", "/sys", "sysfs", MsFlags::empty(), None)?;
    mount_fs("devtmpfs", "/dev", "devtmpfs", MsFlags::empty(), None)?;
    let params = GuestParams::parse(&fs::read_to_string("/proc/cmdline").unwrap_or_default());
    let transport = params.shares;
    switch_root(params.virtio)?;

    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount_fs("tmpfs", "/run", "tmpfs", nosuid, Some("mode=0755"))?;
    mount_fs("tmpfs", "/tmp", "tmpfs", nosuid, Some("mode=1777"))?;
    mount_fs(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("gid=5,mode=620,ptmxmode=666"),
    )?;
    mount_fs("tmpfs", "/dev/shm", "tmpfs", nosuid, Some("mode=1777"))?;

    let root_modules = modules::module_dir(Path::new("/"));
    modules::load(
        &root_modules,
        ccvm_guest_protocol::modules::shares(transport),
    )?;
    modules::load(&root_modules, &ccvm_guest_protocol::modules::DEVICES)?;

    share_mount(transport, SEED_TAG, SEED_DIR, true)?;
    let manifest = SeedManifest::parse(
        &fs::read(Path::new(SEED_DIR).join(MANIFEST_FILE))
            .map_err(|e| format!("cannot read the seed manifest: {e}"))?,
    )
    .map_err(|e| e.to_string())?;

    let root = Path::new("/");
    let seed = Path::new(SEED_DIR);
    let _ = nix::unistd::sethostname("ccvm");
    setup::sysctls(Path::new("/proc/sys")).map_err(|e| e.to_string())?;
    setup::lock_root(root).map_err(|e| e.to_string())?;
    setup::add_user(root, &manifest.user).map_err(|e| e.to_string())?;
    // The hostname must resolve (sudo insists); a HostsPins step rewrites this with its pins.
    setup::hosts(root, &[]).map_err(|e| e.to_string())?;
    network(&manifest.network)?;
    refuse_shares_over_home(&manifest)?;

    // Every setup write (the agent's ~/.claude.json, ~/.gitconfig, ~/.claude) happens before
    // any host directory is mounted, so none can land on the host through a share (S5.1).
    // The scratch disk before `~/.claude`, so the session header says what really happened.
    let scratch_fixup = scratch_disk(&manifest);
    let left = setup::apply_steps(root, seed, &manifest).map_err(|e| e.to_string())?;
    for step in left {
        match step {
            SetupStep::ClaudeHome { seed_dir } => {
                let target = format!("{}/.claude", manifest.user.home.trim_end_matches('/'));
                mount_fs(
                    "tmpfs",
                    &target,
                    "tmpfs",
                    nosuid,
                    Some(&format!(
                        "mode=0700,uid={},gid={}",
                        manifest.user.uid, manifest.user.gid
                    )),
                )?;
                let replace = scratch_fixup
                    .as_ref()
                    .map(|(a, b)| (a.as_str(), b.as_str()));
                setup::claude_home(root, seed, seed_dir, &manifest.user, replace)
                    .map_err(|e| e.to_string())?;
            }
            SetupStep::Firewall(rules) => {
                let gateway = match &manifest.network {
                    NetworkAttachment::UserMode { gateway, .. } => Some(gateway.as_str()),
                    NetworkAttachment::None => None,
                };
                crate::firewall::install_or_close(rules, gateway);
                setup::resolver(root, rules.dns_server.as_deref()).map_err(|e| e.to_string())?;
            }
            SetupStep::ScratchDisk { .. } => {}
            other => return Err(format!("unexpected setup step {other:?}")),
        }
    }
    mount_shares(&manifest, false)?;
    // After the `~/.claude` tmpfs, so it does not hide them.
    mount_shares(&manifest, true)?;
    setup::sshd(root, seed, &manifest).map_err(|e| e.to_string())?;
    prepare_session(&manifest)?;
    nix::mount::umount(SEED_DIR).map_err(|e| format!("cannot unmount the seed: {e}"))?;

    let sudo = manifest
        .setup_steps
        .iter()
        .any(|step| matches!(step, SetupStep::AgentSudo { allowed: true }));
    if !sudo {
        root_nosuid()?;
    }

    mark(markers::SSHD);
    let sshd = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f", &format!("/{SSHD_CONFIG}")])
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start sshd: {e}"))?;
    wait_listening(manifest.guest_ssh_port)?;
    eprintln!("{}", markers::READY);
    Ok(sshd.id())
}

/// With sudo off no setuid binary may help the agent (S10.4): the root overlay (which also
/// holds the agent's home) stops honouring setuid and file capabilities. Every other mount
/// the agent can write to is `nosuid` already.
fn root_nosuid() -> Result<(), String> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_NOSUID,
        None::<&str>,
    )
    .map_err(|e| format!("cannot remount / nosuid: {e}"))
}

/// Children of `parent`, from /proc.
fn children_of(parent: u32) -> usize {
    let Ok(entries) = fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ppid …: comm may hold spaces, so split after the last ')'.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|ppid| ppid.parse::<u32>().ok())
                == Some(parent)
        })
        .count()
}

pub fn run() -> i32 {
    let sshd = match boot() {
        Ok(pid) => pid,
        Err(e) => fatal(&e),
    };
    std::thread::spawn(move || {
        // Blocks until the session writes its exit status.
        let mut status = String::new();
        if fs::File::open(DONE_FIFO)
            .and_then(|mut f| f.read_to_string(&mut status))
            .is_ok()
        {
            // Let sshd deliver the exit status and close the connection first.
            let deadline = Instant::now() + Duration::from_secs(5);
            while children_of(sshd) > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            log(&format!("session ended ({}), powering off", status.trim()));
            power_off();
        }
    });
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _))
                if pid.as_raw() as u32 == sshd =>
            {
                fatal("sshd exited");
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::ECHILD) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => fatal(&format!("waitpid: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::listens;

    /// Lines as Linux 6.1 prints them: one socket listening on 2024, one connected from 22.
    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 640 1 0000000095000f7c 100 0 0 10 0
   1: 0100007F:0016 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 641 1 0000000095000f7d 100 0 0 10 0
";

    #[test]
    fn a_port_listens_only_in_state_listen() {
        assert!(listens(TABLE, 2024));
        assert!(
            !listens(TABLE, 22),
            "an established connection is not a listener"
        );
        assert!(!listens(TABLE, 0x7E8 + 1));
        assert!(!listens("", 2024));
    }
}
