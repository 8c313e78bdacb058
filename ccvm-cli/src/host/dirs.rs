//! Directories ccvm creates or reuses, and the checks that make them safe to use (S6.4).
//!
//! A directory ccvm writes keys, seeds or images into must be the user's own: another local
//! user who could create it first, swap its contents or point it elsewhere with a symlink
//! could read the session keys or hand the guest a seed of their own. So every such directory
//! is either created here (mode 0700, atomically, with a random name where the location is
//! shared) or, when it already exists, checked: a real directory (not a symlink), owned by
//! the user, not writable by anyone else. A foreign or loose one is an error that names it.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::Error;

/// What is wrong with a directory ccvm would use.
fn problem(path: &Path, private: bool) -> Option<String> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) => return Some(format!("cannot be inspected ({e})")),
    };
    if meta.file_type().is_symlink() {
        return Some("is a symbolic link".to_owned());
    }
    if !meta.is_dir() {
        return Some("is not a directory".to_owned());
    }
    let uid = nix::unistd::getuid().as_raw();
    if meta.uid() != uid {
        return Some(format!(
            "is owned by uid {}, not by you (uid {uid})",
            meta.uid()
        ));
    }
    let loose = if private { 0o077 } else { 0o022 };
    if meta.mode() & loose != 0 {
        return Some(format!(
            "has mode {:04o}; it must not be {} by other users",
            meta.mode() & 0o7777,
            if private { "accessible" } else { "writable" }
        ));
    }
    None
}

fn refused(path: &Path, what: &'static str, why: String) -> Error {
    Error::UnsafeDir {
        what,
        path: path.to_owned(),
        why,
    }
}

/// Checks an existing directory: ours, not a symlink, not writable by others (`private`: not
/// accessible by others at all).
pub fn check(path: &Path, what: &'static str, private: bool) -> Result<(), Error> {
    match problem(path, private) {
        None => Ok(()),
        Some(why) => Err(refused(path, what, why)),
    }
}

/// Checks `path` when it exists; a missing directory is fine (it will be created).
pub fn check_if_present(path: &Path, what: &'static str, private: bool) -> Result<(), Error> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    check(path, what, private)
}

/// Creates `path` (mode 0700) or reuses it after [`check`]. Its parent must exist.
pub fn ensure(path: &Path, what: &'static str) -> Result<(), Error> {
    match fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => check(path, what, false),
        Err(source) => Err(Error::Io {
            what: "cannot create",
            path: path.to_owned(),
            source,
        }),
    }
}

/// [`ensure`] for `path` and each of its missing parents below `base`, which must exist.
pub fn ensure_below(base: &Path, path: &Path, what: &'static str) -> Result<(), Error> {
    let relative = path
        .strip_prefix(base)
        .expect("ensure_below is only called with a path below its base");
    let mut current = base.to_owned();
    for component in relative.components() {
        current.push(component);
        ensure(&current, what)?;
    }
    Ok(())
}

/// The RAM-backed file system `dir` (or its nearest existing parent) is on, if it is on one:
/// a scratch disk there would be neither a disk nor bounded by it (S9.1).
pub fn ram_backed(dir: &Path) -> Option<&'static str> {
    use nix::sys::statfs::{FsType, TMPFS_MAGIC, statfs};
    // linux/magic.h; nix names no RAMFS_MAGIC.
    const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);
    let existing = dir.ancestors().find(|a| a.exists())?;
    let kind = statfs(existing).ok()?.filesystem_type();
    if kind == TMPFS_MAGIC {
        Some("tmpfs")
    } else if kind == RAMFS_MAGIC {
        Some("ramfs")
    } else {
        None
    }
}

/// A name nobody can guess: 16 hex digits from the kernel's random source.
fn random_suffix() -> Result<String, Error> {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| Error::Io {
            what: "cannot read random bytes from",
            path: PathBuf::from("/dev/urandom"),
            source,
        })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The prefix of every run directory's name (the reaper removes nothing else).
pub const RUN_PREFIXES: [&str; 2] = ["run-", "ccvm-run-"];

/// Where this run's private directory will be (S6.4): `$XDG_RUNTIME_DIR/ccvm/run-<random>`
/// when the runtime directory is set (it must be the user's and private), otherwise
/// `<temp dir>/ccvm-run-<random>`. Only checks and names it; [`create_run_dir`] makes it.
/// The name is random, so nobody can prepare it, and creating it fails if it exists.
pub fn run_dir_candidate(env: &crate::config::Env) -> Result<PathBuf, Error> {
    let suffix = random_suffix()?;
    if let Some(runtime) = env.abs_path("XDG_RUNTIME_DIR") {
        check(&runtime, "XDG_RUNTIME_DIR", true)?;
        let base = runtime.join("ccvm");
        check_if_present(&base, "the run directory's parent", true)?;
        return Ok(base.join(format!("{}{suffix}", RUN_PREFIXES[0])));
    }
    let temp = env.temp_dir();
    let meta = fs::metadata(&temp).map_err(|source| Error::Io {
        what: "cannot use the temporary directory",
        path: temp.clone(),
        source,
    })?;
    // Anyone who may write a non-sticky directory may rename or delete our entry in it, and
    // the owner of a sticky one may too.
    let uid = nix::unistd::getuid().as_raw();
    if meta.uid() != 0 && meta.uid() != uid {
        return Err(refused(
            &temp,
            "the temporary directory",
            format!("is owned by uid {}, neither root nor you", meta.uid()),
        ));
    }
    let shared_unsafely = meta.mode() & 0o022 != 0 && meta.mode() & 0o1000 == 0;
    if shared_unsafely {
        return Err(refused(
            &temp,
            "the temporary directory",
            "is writable by others without the sticky bit".to_owned(),
        ));
    }
    Ok(temp.join(format!("{}{suffix}", RUN_PREFIXES[1])))
}

/// Creates the run directory [`run_dir_candidate`] named: its parent (when it is ccvm's own
/// `…/ccvm`) is created private or checked, then the directory itself with mode 0700 and
/// without reusing anything that exists.
pub fn create_run_dir(path: &Path) -> Result<(), Error> {
    if let Some(parent) = path.parent()
        && parent.file_name().is_some_and(|n| n == "ccvm")
    {
        match fs::DirBuilder::new().mode(0o700).create(parent) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                check(parent, "the run directory's parent", true)?;
            }
            Err(source) => {
                return Err(Error::Io {
                    what: "cannot create",
                    path: parent.to_owned(),
                    source,
                });
            }
        }
    }
    fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(|source| Error::Io {
            what: "cannot create the run directory",
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_loose_or_linked_directory_is_refused_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let loose = dir.path().join("loose");
        fs::create_dir(&loose).expect("mkdir");
        fs::set_permissions(&loose, fs::Permissions::from_mode(0o777)).expect("chmod");
        let error = ensure(&loose, "the run directory").expect_err("loose");
        assert!(error.to_string().contains("has mode 0777"), "{error}");
        assert!(error.to_string().contains(&loose.display().to_string()));

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).expect("symlink");
        let error = ensure(&link, "the run directory").expect_err("link");
        assert!(error.to_string().contains("symbolic link"), "{error}");

        fs::set_permissions(&loose, fs::Permissions::from_mode(0o750)).expect("chmod");
        assert!(check(&loose, "x", false).is_ok());
        assert!(
            check(&loose, "x", true).is_err(),
            "private means no group access"
        );
    }

    #[test]
    fn run_dir_needs_a_private_runtime_dir_and_is_created_fresh() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runtime = dir.path().join("runtime");
        fs::create_dir(&runtime).expect("mkdir");
        fs::set_permissions(&runtime, fs::Permissions::from_mode(0o755)).expect("chmod");
        let env =
            crate::config::Env::from_pairs([("XDG_RUNTIME_DIR", runtime.to_str().expect("utf8"))]);
        let error = run_dir_candidate(&env).expect_err("0755 runtime dir");
        assert!(error.to_string().contains("XDG_RUNTIME_DIR"), "{error}");

        fs::set_permissions(&runtime, fs::Permissions::from_mode(0o700)).expect("chmod");
        let a = run_dir_candidate(&env).expect("candidate");
        let b = run_dir_candidate(&env).expect("candidate");
        assert_ne!(a, b, "names are random");
        assert!(!a.exists(), "naming creates nothing");
        create_run_dir(&a).expect("created");
        assert!(
            create_run_dir(&a).is_err(),
            "an existing directory is never reused"
        );
        let mode = fs::metadata(&a).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);

        // Another user's (here: a loosened) `ccvm` directory is refused, not used.
        let parent = a.parent().expect("parent");
        fs::set_permissions(parent, fs::Permissions::from_mode(0o777)).expect("chmod");
        assert!(run_dir_candidate(&env).is_err());
        assert!(create_run_dir(&b).is_err());
    }

    #[test]
    fn ensure_below_creates_each_missing_level_privately() {
        let dir = tempfile::tempdir().expect("tempdir");
        let deep = dir.path().join("ccvm/images");
        ensure_below(dir.path(), &deep, "the image cache").expect("created");
        for level in [dir.path().join("ccvm"), deep] {
            let mode = fs::metadata(&level).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", level.display());
        }
    }
}
