//! Gathering host facts for the plugins (D2): the only place that looks things up on the
//! host on their behalf. Reads and lookups only; nothing here writes or starts a session.

use std::collections::BTreeMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use ccvm_plugin_api::{HostFacts, Requirements};

pub mod boundary;
pub mod dirs;
mod files;
pub mod images;
mod kvm;
mod probes;
mod programs;

pub use kvm::{Device, KVM_DEVICE, KvmProbe, probe as probe_kvm};
pub use programs::{absolute_path_var, find_program, require_program, trusted_path_entries};

use crate::config::Env;
use crate::error::Error;
use boundary::LinkRules;

/// How long all name resolutions of one launch may take together.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The facts every run has, before any plugin asks for more.
pub fn base_facts(env: &Env) -> Result<HostFacts, Error> {
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    let passwd = nix::unistd::User::from_uid(uid).ok().flatten();
    let passwd_home = passwd.as_ref().map(|p| p.dir.clone());
    let home = env
        .home()
        .or_else(|| passwd.as_ref().map(|p| p.dir.clone()))
        .ok_or(Error::NoHome)?;
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
    boundary::check_project_dir(&cwd, &homes)?;
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

/// S11.3: as root, the agent would be root in the VM and the project share would let it
/// create root-owned or setuid files on the host. There is deliberately no override.
pub fn refuse_root() -> Result<(), Error> {
    if nix::unistd::getuid().is_root() {
        return Err(Error::Root);
    }
    Ok(())
}

/// Paths cross the plugin boundary as UTF-8 JSON; a path that is not UTF-8 cannot be
/// shared faithfully, so it is refused by name.
pub fn utf8(path: &Path, what: &'static str) -> Result<String, Error> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::NotUtf8 {
            what,
            path: path.to_owned(),
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
            facts
                .files
                .insert(file.clone(), files::read_file(path, &rules));
        }
    }
    if requirements.git_global_config && facts.git_global_config.is_none() {
        facts.git_global_config = files::git_global_config(&home, env);
    }
    if requirements.tsc_khz && facts.tsc_khz.is_none() {
        facts.tsc_khz = probes::tsc_khz();
    }
    if requirements.user_namespaces && facts.user_namespaces.is_none() {
        facts.user_namespaces = Some(probes::user_namespaces(env));
    }
    // Presence only: a plugin learns whether `DISPLAY` is set, never what it holds.
    for name in &requirements.variables {
        let set = env.get(name).is_some_and(|v| !v.is_empty());
        facts.variables.insert(name.clone(), set);
    }
}

/// The variables a host clipboard tool gets, and nothing else: what it needs to find the
/// display and be let in (S8).
pub const DISPLAY_VARIABLES: [&str; 4] = [
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "XAUTHORITY",
    "XDG_RUNTIME_DIR",
];

/// The [`DISPLAY_VARIABLES`] set (non-empty, UTF-8) in `env`. Without `XAUTHORITY`, xclip's
/// X library would look in `$HOME/.Xauthority`; that file is named explicitly instead of
/// passing `HOME`.
pub fn display_environment(env: &Env) -> BTreeMap<String, String> {
    let mut vars: BTreeMap<String, String> = DISPLAY_VARIABLES
        .iter()
        .filter_map(|name| {
            let value = env.get(name)?.to_str().filter(|v| !v.is_empty())?;
            Some(((*name).to_owned(), value.to_owned()))
        })
        .collect();
    if !vars.contains_key("XAUTHORITY")
        && let Some(home) = env.home().and_then(|h| h.to_str().map(str::to_owned))
    {
        vars.insert("XAUTHORITY".to_owned(), format!("{home}/.Xauthority"));
    }
    vars
}

/// A host path a plugin named, `~/` meaning the home directory.
pub fn expand_home(path: &str, home: &Path) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None => PathBuf::from(path),
    }
}

/// Resolves names in parallel, bounded by `RESOLVE_TIMEOUT` (5 s) in total; a name that has not
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

#[cfg(test)]
mod tests {
    use super::*;

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
