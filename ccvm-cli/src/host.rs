//! Gathering host facts for the plugins (D2): the only place that looks things up on the
//! host on their behalf. Reads and lookups only; nothing here writes or starts a session.

use std::collections::BTreeMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ccvm_plugin_api::{FileFact, GitConfigFact, HostFacts, NamespaceFact, Requirements};

use crate::config::Env;
use crate::error::Error;

/// How long all name resolutions of one launch may take together.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Larger files are reported unreadable rather than read into memory.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// The facts every run has, before any plugin asks for more.
pub fn base_facts(env: &Env) -> Result<HostFacts, Error> {
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    let passwd = nix::unistd::User::from_uid(uid).ok().flatten();
    let home = env
        .home()
        .or_else(|| passwd.as_ref().map(|p| p.dir.clone()))
        .ok_or_else(|| Error::Host {
            message: "cannot tell your home directory: HOME is unset and there is no passwd entry"
                .to_owned(),
            hint: Some("set HOME to an absolute path".to_owned()),
        })?;
    let user = passwd
        .map(|p| p.name)
        .or_else(|| env.get("USER").and_then(|u| u.to_str()).map(str::to_owned))
        .unwrap_or_else(|| format!("uid{uid}"));
    let cwd = std::env::current_dir()
        .and_then(|d| d.canonicalize())
        .map_err(|source| Error::Io {
            what: "cannot resolve the project directory",
            path: PathBuf::from("."),
            source,
        })?;
    Ok(HostFacts {
        host_arch: std::env::consts::ARCH.to_owned(),
        uid: uid.as_raw(),
        gid: gid.as_raw(),
        user,
        home: utf8(&home, "your home directory")?,
        project_dir: utf8(&cwd, "the project directory")?,
        ..HostFacts::default()
    })
}

/// Paths cross the plugin boundary as UTF-8 JSON; a path that is not UTF-8 cannot be
/// shared faithfully, so it is refused by name.
pub fn utf8(path: &Path, what: &str) -> Result<String, Error> {
    path.to_str().map(str::to_owned).ok_or_else(|| Error::Host {
        message: format!(
            "{what} {} is not valid UTF-8, which ccvm cannot share",
            path.display()
        ),
        hint: Some("run ccvm from a directory whose path is valid UTF-8".to_owned()),
    })
}

/// Fills in what `requirements` asks for.
pub fn gather(facts: &mut HostFacts, requirements: &Requirements, env: &Env) {
    let path_var = env.get("PATH").map(|p| p.to_owned());
    for program in &requirements.programs {
        if facts.programs.contains_key(program) {
            continue;
        }
        let found = find_program(program, path_var.as_deref());
        facts.programs.insert(program.clone(), found);
    }
    let pending: Vec<&String> = requirements
        .resolve
        .iter()
        .filter(|n| !facts.resolved.contains_key(*n))
        .collect();
    facts.resolved.extend(resolve_all(&pending));
    let home = PathBuf::from(&facts.home);
    for file in &requirements.read_files {
        if !facts.files.contains_key(file) {
            facts
                .files
                .insert(file.clone(), read_file(&expand_home(file, &home)));
        }
    }
    if requirements.git_global_config && facts.git_global_config.is_none() {
        facts.git_global_config = git_global_config(path_var.as_deref(), &home, env);
    }
    if requirements.tsc_khz && facts.tsc_khz.is_none() {
        facts.tsc_khz = tsc_khz();
    }
    if requirements.user_namespaces && facts.user_namespaces.is_none() {
        facts.user_namespaces = Some(user_namespaces(path_var.as_deref()));
    }
}

fn expand_home(path: &str, home: &Path) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None => PathBuf::from(path),
    }
}

fn find_program(program: &str, path_var: Option<&std::ffi::OsStr>) -> Option<String> {
    if program.starts_with('/') {
        let executable = std::fs::metadata(program)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        return executable.then(|| program.to_owned());
    }
    let cwd = std::env::current_dir().ok()?;
    which::which_in(program, path_var, cwd)
        .ok()
        .and_then(|p| p.to_str().map(str::to_owned))
}

/// Resolves names in parallel, bounded by [`RESOLVE_TIMEOUT`] in total; a name that has not
/// answered by then counts as unresolved.
pub fn resolve_all(names: &[&String]) -> BTreeMap<String, Vec<IpAddr>> {
    let (tx, rx) = mpsc::channel();
    for name in names {
        let name = (*name).clone();
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut addresses: Vec<IpAddr> = (name.as_str(), 0)
                .to_socket_addrs()
                .map(|it| it.map(|a| a.ip()).collect())
                .unwrap_or_default();
            addresses.sort();
            addresses.dedup();
            // The receiver may have given up; nothing to do then.
            let _ = tx.send((name, addresses));
        });
    }
    drop(tx);
    let deadline = std::time::Instant::now() + RESOLVE_TIMEOUT;
    let mut resolved: BTreeMap<String, Vec<IpAddr>> =
        names.iter().map(|n| ((*n).clone(), Vec::new())).collect();
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok((name, addresses)) => {
                resolved.insert(name, addresses);
            }
            Err(_) => break,
        }
    }
    resolved
}

fn read_file(path: &Path) -> FileFact {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return FileFact::Absent,
        Err(e) => {
            return FileFact::Unreadable {
                reason: e.to_string(),
            };
        }
        Ok(m) if m.len() > MAX_FILE_BYTES => {
            return FileFact::Unreadable {
                reason: format!("larger than {MAX_FILE_BYTES} bytes"),
            };
        }
        Ok(_) => {}
    }
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(content) => FileFact::Text { content },
            Err(_) => FileFact::Unreadable {
                reason: "not valid UTF-8".to_owned(),
            },
        },
        Err(e) => FileFact::Unreadable {
            reason: e.to_string(),
        },
    }
}

/// Parses `git config --null --list` output: records `key\nvalue\0`.
fn parse_git_list(output: &[u8]) -> Vec<(String, String)> {
    output
        .split(|b| *b == 0)
        .filter(|record| !record.is_empty())
        .map(|record| {
            let text = String::from_utf8_lossy(record);
            match text.split_once('\n') {
                Some((key, value)) => (key.to_owned(), value.to_owned()),
                // A key without `=` in the file is a boolean true.
                None => (text.into_owned(), "true".to_owned()),
            }
        })
        .collect()
}

/// The global git config as git itself reads it (includes resolved), plus the global
/// excludes file's content. `None` when git is not installed.
fn git_global_config(
    path_var: Option<&std::ffi::OsStr>,
    home: &Path,
    env: &Env,
) -> Option<GitConfigFact> {
    let git = find_program("git", path_var)?;
    let run = |args: &[&str]| {
        Command::new(&git)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()
    };
    // Exit status 1 with no output just means "no global config".
    let entries = run(&["config", "--global", "--includes", "--null", "--list"])
        .map(|out| parse_git_list(&out.stdout))
        .unwrap_or_default();
    let excludes_path = run(&["config", "--global", "--path", "--get", "core.excludesFile"])
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim_end()))
        .unwrap_or_else(|| {
            env.abs_path("XDG_CONFIG_HOME")
                .unwrap_or_else(|| home.join(".config"))
                .join("git/ignore")
        });
    let excludes = match read_file(&excludes_path) {
        FileFact::Text { content } => Some(content),
        FileFact::Absent | FileFact::Unreadable { .. } => None,
    };
    Some(GitConfigFact { entries, excludes })
}

/// The host TSC frequency: the kernel's own value when it exports one, else the boot CPU's
/// nominal MHz from `/proc/cpuinfo`.
fn tsc_khz() -> Option<u64> {
    if let Ok(text) = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/tsc_freq_khz")
        && let Ok(khz) = text.trim().parse()
    {
        return Some(khz);
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = cpuinfo
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    // Truncation is intended: a kHz value is what the kernel parameter takes.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some((mhz * 1000.0).round() as u64)
}

/// How long the namespace probe may take before it counts as failed.
const NAMESPACE_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether this user can create the namespaces virtiofsd's `--sandbox=namespace` needs
/// (user, mount, pid, network, and mount a proc there), asked of util-linux's `unshare` in a
/// child process: creating namespaces in ccvm itself would change ccvm. The probe is the real
/// operation, so a restriction by a sysctl (`user.max_user_namespaces=0`,
/// `kernel.unprivileged_userns_clone=0`) or a security module (AppArmor's
/// `apparmor_restrict_unprivileged_userns`) shows up as it would for virtiofsd.
fn user_namespaces(path_var: Option<&std::ffi::OsStr>) -> NamespaceFact {
    let unusable = |reason: String| NamespaceFact::Unusable { reason };
    let Some(unshare) = find_program("unshare", path_var) else {
        return unusable(
            "`unshare` (util-linux) is not installed, so ccvm cannot check".to_owned(),
        );
    };
    let child = Command::new(&unshare)
        .args([
            "--user",
            "--map-root-user",
            "--mount",
            "--pid",
            "--net",
            "--fork",
            "--mount-proc",
            "true",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => return unusable(format!("cannot run {unshare}: {e}")),
    };
    let deadline = std::time::Instant::now() + NAMESPACE_PROBE_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            _ => {
                // Our own child, killed by handle.
                let _ = child.kill();
                let _ = child.wait();
                return unusable(format!(
                    "`unshare` did not finish within {NAMESPACE_PROBE_TIMEOUT:?}"
                ));
            }
        }
    }
    match child.wait_with_output() {
        Ok(out) if out.status.success() => NamespaceFact::Usable,
        Ok(out) => unusable(format!(
            "this user cannot create user namespaces here ({}: {})",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => unusable(format!("cannot wait for {unshare}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_list_records_split_on_nul_and_first_newline() {
        let parsed = parse_git_list(b"user.name\nAlice\0alias.x\n!a\nb\0core.bare\0");
        assert_eq!(
            parsed,
            [
                ("user.name".to_owned(), "Alice".to_owned()),
                ("alias.x".to_owned(), "!a\nb".to_owned()),
                ("core.bare".to_owned(), "true".to_owned()),
            ]
        );
    }

    #[test]
    fn read_file_distinguishes_absent_text_and_binary() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read_file(&dir.path().join("nope")), FileFact::Absent);
        let text = dir.path().join("t");
        std::fs::write(&text, "hi").expect("write");
        assert_eq!(
            read_file(&text),
            FileFact::Text {
                content: "hi".into()
            }
        );
        let binary = dir.path().join("b");
        std::fs::write(&binary, [0xff, 0xfe]).expect("write");
        assert!(matches!(read_file(&binary), FileFact::Unreadable { .. }));
    }

    #[test]
    fn absolute_program_must_be_executable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("tool");
        std::fs::write(&file, "#!/bin/sh\n").expect("write");
        let path = file.to_str().expect("utf8");
        assert_eq!(find_program(path, None), None);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(find_program(path, None).as_deref(), Some(path));
    }

    #[test]
    fn loopback_name_resolves_within_the_deadline() {
        let name = "localhost".to_owned();
        let resolved = resolve_all(&[&name]);
        assert!(
            resolved["localhost"].iter().any(IpAddr::is_loopback),
            "{resolved:?}"
        );
    }
}
