//! The host boundary: which host paths may ever cross into a guest (S5.1, S5.3).
//!
//! Two decisions live here, both made on canonical paths (symlinks resolved):
//! - which project directories may be shared at all ([`check_project_dir`]): never `/`, the
//!   home directory or anything above it, nor a directory holding `~/.claude`, `~/.ssh` or
//!   another secret store, nor one inside a secret store;
//! - where a symlink met while staging `~/.claude` (or a file read for a sanitizer) may lead
//!   ([`LinkRules`]). This is an allowlist: inside the staged items of `~/.claude`, inside
//!   the home directory minus its secret stores, or inside a package store (`/nix/store`,
//!   `/gnu/store`), where dotfile managers put the real files. Everything else — `/proc`,
//!   `/sys`, `/dev`, `/etc`, other users' files, the credential file under any name (by inode) —
//!   is skipped with a warning that names the link.
//!
//! Reads only (stat, canonicalize, a bounded walk of the secret stores for their inodes).

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// Directories under the home directory that hold credentials (S5.3).
pub const SECRET_DIRS: &[&str] = &[
    ".ssh",
    ".gnupg",
    ".aws",
    ".azure",
    ".kube",
    ".docker",
    ".config/gcloud",
    ".config/gh",
    ".config/hub",
    ".local/share/keyrings",
    ".password-store",
    ".terraform.d",
];

/// Files under the home directory that hold credentials.
pub const SECRET_FILES: &[&str] = &[
    ".claude/.credentials.json",
    ".netrc",
    ".git-credentials",
    ".config/git/credentials",
    ".npmrc",
    ".pypirc",
    ".cargo/credentials",
    ".cargo/credentials.toml",
    ".vault-token",
];

/// Claude Code's credential file; never staged under any name (S5.3).
pub const CREDENTIALS_NAME: &str = ".credentials.json";

/// Package stores whose files dotfile managers link to.
const PACKAGE_STORES: &[&str] = &["/nix/store", "/gnu/store"];

/// Kernel and device file systems: nothing under them is a file of the user's.
const KERNEL_TREES: &[&str] = &["/proc", "/sys", "/dev"];

/// Upper bound on the entries the secret-store walk visits (a huge `~/.kube/cache` must not
/// slow every launch down; links into those directories are refused by path regardless).
const SECRET_WALK_LIMIT: usize = 20_000;

fn canonical_or_self(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

/// S5.1: refuses a project directory whose sharing would expose the home directory or a
/// secret store, or let guest setup write over the user's own files. `project` is canonical.
pub fn check_project_dir(project: &Path, home: &Path) -> Result<(), Error> {
    let home = canonical_or_self(home);
    let refuse = |why: String| Error::ProjectDir {
        path: project.to_owned(),
        why,
    };
    if project == Path::new("/") {
        return Err(refuse("is the root directory".to_owned()));
    }
    if home.starts_with(project) {
        return Err(refuse(if home == project {
            "is your home directory".to_owned()
        } else {
            format!("contains your home directory {}", home.display())
        }));
    }
    let claude = std::iter::once(".claude");
    for name in claude.chain(SECRET_DIRS.iter().copied()) {
        let store = home.join(name);
        let Ok(store) = fs::canonicalize(&store) else {
            continue;
        };
        if store.starts_with(project) {
            return Err(refuse(format!(
                "contains {} ({})",
                home.join(name).display(),
                if name == ".claude" {
                    "Claude Code's login and history"
                } else {
                    "a credential store"
                }
            )));
        }
        if name != ".claude" && project.starts_with(&store) {
            return Err(refuse(format!(
                "is inside the credential store {}",
                home.join(name).display()
            )));
        }
    }
    Ok(())
}

/// (device, inode) of a file.
type FileId = (u64, u64);

/// Where links met while staging may lead, and which files never cross whatever their name.
#[derive(Debug, Clone)]
pub struct LinkRules {
    home: PathBuf,
    claude: PathBuf,
    /// Canonical paths inside `~/.claude` that are staged (the enabled items, and files read
    /// for a sanitizer).
    staged: Vec<PathBuf>,
    secret_dirs: Vec<PathBuf>,
    secret_files: Vec<PathBuf>,
    /// Every file in the secret stores plus the credential file: a hard link to one of them
    /// is refused too.
    secret_ids: HashSet<FileId>,
    /// Files ccvm only ever stages sanitized (`~/.claude.json`, settings): never copied raw.
    sanitized_ids: HashSet<FileId>,
}

impl LinkRules {
    /// Rules for a user whose home is `home`; `staged` are the `~/.claude` paths that are
    /// staged, `sanitized` the files that only cross through a sanitizer.
    pub fn new(home: &Path, staged: &[PathBuf], sanitized: &[PathBuf]) -> LinkRules {
        let home = canonical_or_self(home);
        let secret_dirs: Vec<PathBuf> = SECRET_DIRS
            .iter()
            .map(|d| canonical_or_self(&home.join(d)))
            .collect();
        let secret_files: Vec<PathBuf> = SECRET_FILES
            .iter()
            .map(|f| canonical_or_self(&home.join(f)))
            .collect();
        let mut secret_ids = HashSet::new();
        let mut budget = SECRET_WALK_LIMIT;
        for dir in &secret_dirs {
            collect_ids(dir, &mut secret_ids, &mut budget);
        }
        for file in &secret_files {
            if let Ok(meta) = fs::metadata(file) {
                secret_ids.insert((meta.dev(), meta.ino()));
            }
        }
        let sanitized_ids = sanitized
            .iter()
            .filter_map(|f| fs::metadata(f).ok())
            .map(|m| (m.dev(), m.ino()))
            .collect();
        LinkRules {
            claude: canonical_or_self(&home.join(".claude")),
            staged: staged.iter().map(|p| canonical_or_self(p)).collect(),
            home,
            secret_dirs,
            secret_files,
            secret_ids,
            sanitized_ids,
        }
    }

    /// Why a link resolving to the canonical `target` must not be followed, if it must not.
    pub fn refuse_target(&self, target: &Path) -> Option<String> {
        if KERNEL_TREES.iter().any(|t| target.starts_with(t)) {
            return Some("a kernel or device file system".to_owned());
        }
        if target.file_name().is_some_and(|n| n == CREDENTIALS_NAME) {
            return Some("Claude Code's credential file".to_owned());
        }
        if target.starts_with(&self.claude) {
            return if self.staged.iter().any(|s| target.starts_with(s)) {
                None
            } else {
                Some(
                    "a part of ~/.claude that is not staged (history, sessions, \
                     credentials, …)"
                        .to_owned(),
                )
            };
        }
        if self.secret_dirs.iter().any(|d| target.starts_with(d))
            || self.secret_files.iter().any(|f| target == f)
        {
            return Some("a credential store".to_owned());
        }
        if self.home.starts_with(target) {
            return Some("your home directory or a directory above it".to_owned());
        }
        if target.starts_with(&self.home) || PACKAGE_STORES.iter().any(|s| target.starts_with(s)) {
            return None;
        }
        Some("outside your home directory and the package stores".to_owned())
    }

    /// Why the file with `meta` must not be copied as it is, if it must not: it is (a hard
    /// link to) a credential, or a file that only crosses sanitized.
    pub fn refuse_file(&self, meta: &fs::Metadata) -> Option<String> {
        let id = (meta.dev(), meta.ino());
        if self.secret_ids.contains(&id) {
            Some("the same file as a credential".to_owned())
        } else if self.sanitized_ids.contains(&id) {
            Some("a file ccvm only stages sanitized".to_owned())
        } else {
            None
        }
    }
}

fn collect_ids(dir: &Path, ids: &mut HashSet<FileId>, budget: &mut usize) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            collect_ids(&entry.path(), ids, budget);
        } else {
            ids.insert((meta.dev(), meta.ino()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Home {
        dir: tempfile::TempDir,
    }

    impl Home {
        fn new() -> Home {
            let dir = tempfile::tempdir().expect("tempdir");
            for d in [
                ".claude/agents",
                ".claude/projects",
                ".ssh",
                "dotfiles",
                "src/p",
            ] {
                fs::create_dir_all(dir.path().join(d)).expect("mkdir");
            }
            fs::write(dir.path().join(".claude/.credentials.json"), "{}").expect("write");
            fs::write(dir.path().join(".ssh/id_ed25519"), "KEY").expect("write");
            Home { dir }
        }

        fn path(&self, rel: &str) -> PathBuf {
            canonical_or_self(&self.dir.path().join(rel))
        }

        fn rules(&self) -> LinkRules {
            LinkRules::new(
                self.dir.path(),
                &[self.path(".claude/agents")],
                &[self.path(".claude.json")],
            )
        }
    }

    #[test]
    fn project_dir_refuses_root_home_ancestors_and_secret_stores() {
        let home = Home::new();
        let h = home.path("");
        assert!(check_project_dir(&home.path("src/p"), &h).is_ok());
        for (bad, why) in [
            (PathBuf::from("/"), "root directory"),
            (h.clone(), "is your home directory"),
            (h.parent().expect("parent").to_owned(), "contains your home"),
            (home.path(".ssh"), "contains"),
            (home.path(".claude"), "contains"),
        ] {
            let error = check_project_dir(&bad, &h).expect_err("refused");
            assert!(error.to_string().contains(why), "{bad:?}: {error}");
            assert_eq!(error.exit_code(), 2);
        }
        // ~/.ssh linked into a dotfiles project makes that project a secret store's parent.
        fs::remove_dir_all(home.path(".ssh")).expect("rm");
        fs::create_dir(home.path("dotfiles/ssh")).expect("mkdir");
        std::os::unix::fs::symlink(home.path("dotfiles/ssh"), home.dir.path().join(".ssh"))
            .expect("symlink");
        let error = check_project_dir(&home.path("dotfiles"), &h).expect_err("refused");
        assert!(error.to_string().contains(".ssh"), "{error}");
        fs::create_dir(home.path("dotfiles/ssh").join("sub")).expect("mkdir");
        let inside = home.path("dotfiles/ssh/sub");
        let error = check_project_dir(&inside, &h).expect_err("refused");
        assert!(
            error.to_string().contains("inside the credential store"),
            "{error}"
        );
    }

    #[test]
    fn links_may_lead_into_staged_items_home_and_stores_only() {
        let home = Home::new();
        let rules = home.rules();
        assert_eq!(rules.refuse_target(&home.path(".claude/agents")), None);
        assert_eq!(rules.refuse_target(&home.path("dotfiles")), None);
        assert_eq!(
            rules.refuse_target(Path::new("/nix/store/abc-settings.json")),
            None
        );
        for (target, why) in [
            (PathBuf::from("/proc/self/environ"), "kernel"),
            (PathBuf::from("/etc/shadow"), "outside your home"),
            (home.path(".ssh/id_ed25519"), "credential store"),
            (home.path(".claude/.credentials.json"), "credential file"),
            (home.path(".claude/projects"), "not staged"),
            (home.path(".claude"), "not staged"),
            (home.path(""), "home directory"),
            (PathBuf::from("/"), "home directory or a directory above"),
        ] {
            let refused = rules.refuse_target(&target);
            assert!(
                refused.as_deref().is_some_and(|r| r.contains(why)),
                "{target:?}: {refused:?}"
            );
        }
    }

    #[test]
    fn a_hard_link_to_a_credential_is_refused_by_inode() {
        let home = Home::new();
        let alias = home.dir.path().join("dotfiles/innocent.md");
        fs::hard_link(home.path(".claude/.credentials.json"), &alias).expect("link");
        let key_alias = home.dir.path().join("dotfiles/notes.md");
        fs::hard_link(home.path(".ssh/id_ed25519"), &key_alias).expect("link");
        let plain = home.dir.path().join("dotfiles/plain.md");
        fs::write(&plain, "hi").expect("write");
        let rules = home.rules();
        for file in [&alias, &key_alias] {
            let meta = fs::metadata(file).expect("meta");
            assert!(rules.refuse_file(&meta).is_some(), "{}", file.display());
        }
        assert_eq!(
            rules.refuse_file(&fs::metadata(&plain).expect("meta")),
            None
        );
    }
}
