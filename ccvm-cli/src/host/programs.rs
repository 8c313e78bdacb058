//! Finding host programs (S3.3): only in the trusted entries of `PATH`, only files nobody but
//! root or the user could have planted.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::config::Env;
use crate::error::Error;

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
    find_program(program, env).ok_or_else(|| Error::MissingProgram {
        program: program.to_owned(),
        package: package.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
