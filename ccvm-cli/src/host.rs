//! Gathering host facts for the plugins (D2): the only place that looks things up on the
//! host on their behalf. Reads and lookups only; nothing here writes or starts a session.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{IpAddr, ToSocketAddrs};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ccvm_plugin_api::{FileFact, GitConfigFact, HostFacts, NamespaceFact, Requirements};

use crate::boundary::LinkRules;
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
    let passwd_home = passwd.as_ref().map(|p| p.dir.clone());
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
    // `$HOME` and the passwd entry's home may differ (`HOME=/elsewhere ccvm` from the real
    // home): both are protected.
    let mut homes = vec![home.clone()];
    homes.extend(passwd_home.filter(|p| *p != home));
    crate::boundary::check_project_dir(&cwd, &homes)?;
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
    for program in &requirements.programs {
        if facts.programs.contains_key(program) {
            continue;
        }
        let found = find_program(program, env).and_then(|p| p.to_str().map(str::to_owned));
        facts.programs.insert(program.clone(), found);
    }
    let pending: Vec<&String> = requirements
        .resolve
        .iter()
        .filter(|n| !facts.resolved.contains_key(*n))
        .collect();
    facts.resolved.extend(resolve_all(&pending));
    let home = PathBuf::from(&facts.home);
    let pending: Vec<&String> = requirements
        .read_files
        .iter()
        .filter(|f| !facts.files.contains_key(*f))
        .collect();
    if !pending.is_empty() {
        let paths: Vec<PathBuf> = pending.iter().map(|f| expand_home(f, &home)).collect();
        // A requested file may be a link to another requested one, never to a secret (S5.3).
        let rules = LinkRules::new(&home, &paths, &[]);
        for (file, path) in pending.into_iter().zip(&paths) {
            facts.files.insert(file.clone(), read_file(path, &rules));
        }
    }
    if requirements.git_global_config && facts.git_global_config.is_none() {
        facts.git_global_config = git_global_config(&home, env);
    }
    if requirements.tsc_khz && facts.tsc_khz.is_none() {
        facts.tsc_khz = tsc_khz();
    }
    if requirements.user_namespaces && facts.user_namespaces.is_none() {
        facts.user_namespaces = Some(user_namespaces(env));
    }
}

/// A host path a plugin named, `~/` meaning the home directory.
pub fn expand_home(path: &str, home: &Path) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None => PathBuf::from(path),
    }
}

/// The `PATH` entries ccvm looks programs up in (S3.3): absolute ones only, and none inside
/// the current directory (the project, for a session). An empty entry means "the current
/// directory" to a shell and a relative one is relative to it; an absolute entry inside the
/// project is just as common (`.venv/bin` after `source .venv/bin/activate`, direnv's
/// `PATH_add bin`). Any of them would let a project plant a `git`, `ssh` or `qemu-system-*`
/// that ccvm then runs on the host, with the API key in its environment.
pub fn trusted_path_entries(env: &Env) -> Vec<PathBuf> {
    let Some(path) = env.get("PATH") else {
        return Vec::new();
    };
    let cwd = std::env::current_dir().and_then(|d| d.canonicalize()).ok();
    std::env::split_paths(path)
        .filter(|entry| entry.is_absolute())
        .filter(|entry| {
            let canonical = entry.canonicalize().unwrap_or_else(|_| entry.clone());
            cwd.as_ref().is_none_or(|cwd| !canonical.starts_with(cwd))
        })
        .collect()
}

/// [`trusted_path_entries`] as a `PATH` value, for the programs ccvm starts.
pub fn absolute_path_var(env: &Env) -> Option<OsString> {
    std::env::join_paths(trusted_path_entries(env)).ok()
}

/// Whether a program (or its directory) could have been replaced by someone but root or the
/// user: owned by another user, or writable by group or others (S3.3's rule for plugins).
fn untrusted(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let uid = nix::unistd::getuid().as_raw();
    std::fs::metadata(path).map_or(true, |m| {
        (m.uid() != 0 && m.uid() != uid) || m.mode() & 0o022 != 0
    })
}

/// The absolute path of `program`: itself when absolute and executable, else the first
/// executable of that name in the [`trusted_path_entries`] that neither the file nor its
/// directory could have been planted by another user.
pub fn find_program(program: &str, env: &Env) -> Option<PathBuf> {
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.starts_with('/') {
        return executable(Path::new(program)).then(|| PathBuf::from(program));
    }
    if program.contains('/') {
        // `bin/qemu`: relative to the current directory, which ccvm never trusts.
        return None;
    }
    trusted_path_entries(env)
        .into_iter()
        .map(|dir| dir.join(program))
        .find(|candidate| {
            executable(candidate)
                && !untrusted(candidate)
                && candidate
                    .canonicalize()
                    .ok()
                    .and_then(|c| c.parent().map(Path::to_owned))
                    .is_some_and(|dir| !untrusted(&dir))
        })
}

/// [`find_program`], or the error a missing host program is: what to install.
pub fn require_program(program: &str, package: &str, env: &Env) -> Result<PathBuf, Error> {
    find_program(program, env).ok_or_else(|| Error::Host {
        message: format!("`{program}` was not found in the absolute entries of PATH"),
        hint: Some(format!("install the Debian/Ubuntu package `{package}`")),
    })
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

/// Reads a file a plugin asked for, by the same rules as staging (S5.3): a symlink is
/// followed only where [`LinkRules`] allow, a credential is never read whatever its name, and
/// only a regular file is opened for reading (a FIFO or device cannot block or act).
fn read_file(path: &Path, rules: &LinkRules) -> FileFact {
    let unreadable = |reason: String| FileFact::Unreadable { reason };
    let source = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return FileFact::Absent,
        Err(e) => return unreadable(e.to_string()),
        Ok(meta) if meta.file_type().is_symlink() => match std::fs::canonicalize(path) {
            Ok(target) => match rules.refuse_target(&target) {
                None => target,
                Some(why) => {
                    return unreadable(format!(
                        "it links to {}, {why}, which ccvm never reads",
                        target.display()
                    ));
                }
            },
            Err(e) => return unreadable(format!("it is a link that cannot be resolved ({e})")),
        },
        Ok(_) => path.to_owned(),
    };
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(&source)
    {
        Ok(file) => file,
        Err(e) => return unreadable(e.to_string()),
    };
    let meta = match file.metadata() {
        Ok(meta) => meta,
        Err(e) => return unreadable(e.to_string()),
    };
    if !meta.is_file() {
        return unreadable("not a regular file".to_owned());
    }
    if let Some(why) = rules.refuse_file(&meta) {
        return unreadable(format!("it is {why}, which ccvm never reads"));
    }
    if meta.len() > MAX_FILE_BYTES {
        return unreadable(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    let mut bytes = Vec::new();
    if let Err(e) =
        std::io::Read::read_to_end(&mut std::io::Read::take(&file, MAX_FILE_BYTES), &mut bytes)
    {
        return unreadable(e.to_string());
    }
    match String::from_utf8(bytes) {
        Ok(content) => FileFact::Text { content },
        Err(_) => unreadable("not valid UTF-8".to_owned()),
    }
}

/// A file outside the rules of staging (git's excludes file, which git itself names).
fn read_plain_file(path: &Path) -> FileFact {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileFact::Absent,
        Err(e) => FileFact::Unreadable {
            reason: e.to_string(),
        },
        Ok(m) if !m.is_file() || m.len() > MAX_FILE_BYTES => FileFact::Unreadable {
            reason: "not a regular file of at most 16 MiB".to_owned(),
        },
        Ok(_) => match std::fs::read_to_string(path) {
            Ok(content) => FileFact::Text { content },
            Err(e) => FileFact::Unreadable {
                reason: e.to_string(),
            },
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
fn git_global_config(home: &Path, env: &Env) -> Option<GitConfigFact> {
    let git = find_program("git", env)?;
    // From `/` (a project's own `.git/config` must not apply) and with only what git needs.
    let run = |args: &[&str]| {
        Command::new(&git)
            .args(args)
            .current_dir("/")
            .env_clear()
            .envs(
                [
                    "HOME",
                    "XDG_CONFIG_HOME",
                    "GIT_CONFIG_GLOBAL",
                    "GIT_CONFIG_NOSYSTEM",
                    "LANG",
                ]
                .iter()
                .filter_map(|name| env.get(name).map(|value| (*name, value))),
            )
            .env("HOME", home)
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
    let excludes = match read_plain_file(&excludes_path) {
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
fn user_namespaces(env: &Env) -> NamespaceFact {
    let unusable = |reason: String| NamespaceFact::Unusable { reason };
    let Some(unshare) = find_program("unshare", env) else {
        return unusable(
            "`unshare` (util-linux) is not installed, so ccvm cannot check".to_owned(),
        );
    };
    let child = Command::new(&unshare)
        .env_clear()
        .current_dir("/")
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
        Err(e) => return unusable(format!("cannot run {}: {e}", unshare.display())),
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
        Err(e) => unusable(format!("cannot wait for {}: {e}", unshare.display())),
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
        let rules = LinkRules::new(dir.path(), &[], &[]);
        let read_file = |path: &Path| read_file(path, &rules);
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

    /// S5.3 for files read for a sanitizer: `~/.claude.json` linked to the credential file or
    /// to `/proc/self/environ` is reported unreadable (the policy warns), never read.
    #[test]
    fn read_files_follow_links_only_where_staging_may() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path();
        std::fs::create_dir_all(home.join(".claude")).expect("mkdir");
        std::fs::create_dir_all(home.join("dotfiles")).expect("mkdir");
        std::fs::write(home.join(".claude/.credentials.json"), "{\"t\":1}").expect("write");
        std::fs::write(home.join("dotfiles/claude.json"), "{}").expect("write");
        let requested = home.join(".claude.json");
        let rules = LinkRules::new(home, std::slice::from_ref(&requested), &[]);
        for (target, fact_is_text) in [
            (home.join(".claude/.credentials.json"), false),
            (PathBuf::from("/proc/self/environ"), false),
            (home.join("dotfiles/claude.json"), true),
        ] {
            let _ = std::fs::remove_file(&requested);
            std::os::unix::fs::symlink(&target, &requested).expect("symlink");
            let fact = read_file(&requested, &rules);
            assert_eq!(
                matches!(fact, FileFact::Text { .. }),
                fact_is_text,
                "{}: {fact:?}",
                target.display()
            );
        }
    }

    #[test]
    fn absolute_program_must_be_executable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("tool");
        std::fs::write(&file, "#!/bin/sh\n").expect("write");
        let path = file.to_str().expect("utf8");
        let env = Env::from_pairs([]);
        assert_eq!(find_program(path, &env), None);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(find_program(path, &env), Some(file.clone()));
    }

    /// S3.3: only absolute entries survive (the integration test `cli::…planted…` runs the
    /// binary from a project holding planted programs).
    #[test]
    fn absolute_path_var_keeps_only_absolute_entries() {
        let env = Env::from_pairs([("PATH", ":bin:./x:/usr/bin::/bin")]);
        assert_eq!(
            absolute_path_var(&env),
            Some(OsString::from("/usr/bin:/bin"))
        );
        assert_eq!(
            find_program("bin/git", &env),
            None,
            "a relative path is never run"
        );
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
