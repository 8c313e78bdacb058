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
    ".minikube",
    ".docker",
    ".oci",
    ".pki",
    ".password-store",
    ".terraform.d",
    ".vagrant.d",
    ".gem",
    ".m2",
    ".gradle",
    ".fly",
    ".mozilla",
    ".thunderbird",
    ".config/gcloud",
    ".config/gh",
    ".config/hub",
    ".config/glab-cli",
    ".config/github-copilot",
    ".config/containers",
    ".config/sops",
    ".config/op",
    ".config/rclone",
    ".config/doctl",
    ".config/configstore",
    ".config/Bitwarden CLI",
    ".config/keybase",
    ".config/google-chrome",
    ".config/chromium",
    ".local/share/keyrings",
    ".local/share/password-store",
];

/// Files under the home directory that hold credentials or a record of what was typed.
pub const SECRET_FILES: &[&str] = &[
    ".claude/.credentials.json",
    ".netrc",
    ".git-credentials",
    ".config/git/credentials",
    ".npmrc",
    ".yarnrc.yml",
    ".pypirc",
    ".pgpass",
    ".my.cnf",
    ".s3cfg",
    ".boto",
    ".terraformrc",
    ".vault-token",
    ".cargo/credentials",
    ".cargo/credentials.toml",
    ".bash_history",
    ".zsh_history",
    ".histfile",
    ".python_history",
    ".node_repl_history",
    ".psql_history",
    ".mysql_history",
    ".sqlite_history",
    ".rediscli_history",
    ".lesshst",
    ".viminfo",
    ".local/share/fish/fish_history",
];

/// Names that mark a secret wherever they appear in a path, so that a dotfiles repository
/// mirroring the home (`~/dotfiles/ssh/.ssh/id_ed25519`, GNU stow's layout) is refused like
/// the home itself: the first component of every [`SECRET_DIRS`] entry and these file names.
const SECRET_NAMES: &[&str] = &[
    "id_rsa",
    "id_dsa",
    "id_ecdsa",
    "id_ed25519",
    "id_ecdsa_sk",
    "id_ed25519_sk",
    ".credentials.json",
    "credentials",
    "credentials.json",
    "credentials.toml",
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
pub fn check_project_dir(project: &Path, homes: &[PathBuf]) -> Result<(), Error> {
    let refuse = |why: String| Error::ProjectDir {
        path: project.to_owned(),
        why,
    };
    if project == Path::new("/") {
        return Err(refuse("is the root directory".to_owned()));
    }
    if let Some(tree) = KERNEL_TREES
        .iter()
        .chain(&["/run", "/etc", "/boot"])
        .find(|t| project.starts_with(t))
    {
        return Err(refuse(format!("is inside {tree}, a system directory")));
    }
    let id = |path: &Path| fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    let project_id = id(project);
    for home in homes {
        let home = canonical_or_self(home);
        if home.starts_with(project) {
            return Err(refuse(if home == project {
                "is your home directory".to_owned()
            } else {
                format!("contains your home directory {}", home.display())
            }));
        }
        // The same directory under another name (a bind mount of the home or of `/home`).
        if project_id.is_some() && home.ancestors().any(|a| id(a) == project_id) {
            return Err(refuse(format!(
                "is your home directory {} (or a directory above it) under another name",
                home.display()
            )));
        }
        let stores = std::iter::once(".claude")
            .chain(SECRET_DIRS.iter().copied())
            .map(|name| (name, true))
            .chain(
                SECRET_FILES
                    .iter()
                    .chain(&[".claude.json", ".gitconfig", ".config/git"])
                    .map(|name| (*name, false)),
            );
        for (name, dir) in stores {
            let Ok(store) = fs::canonicalize(home.join(name)) else {
                continue;
            };
            if store.starts_with(project) {
                return Err(refuse(format!(
                    "contains {} ({})",
                    home.join(name).display(),
                    match name {
                        ".claude" => "Claude Code's login and history",
                        ".claude.json" | ".gitconfig" | ".config/git" => {
                            "configuration ccvm only stages sanitized"
                        }
                        _ => "credentials",
                    }
                )));
            }
            if dir && name != ".claude" && project.starts_with(&store) {
                return Err(refuse(format!(
                    "is inside the credential store {}",
                    home.join(name).display()
                )));
            }
        }
    }
    Ok(())
}

/// Refuses a project that holds a directory ccvm keeps private (the run directory's parent,
/// the image cache): the agent could read the session keys or replace the next VM's kernel.
pub fn check_project_holds_none_of(project: &Path, private: &[(&str, &Path)]) -> Result<(), Error> {
    for (what, dir) in private {
        let dir = canonical_or_self(dir);
        if dir.starts_with(project) {
            return Err(Error::ProjectDir {
                path: project.to_owned(),
                why: format!("contains {what} {}", dir.display()),
            });
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
        let mut secret_dirs: Vec<PathBuf> = SECRET_DIRS
            .iter()
            .map(|d| canonical_or_self(&home.join(d)))
            .collect();
        let mut secret_files: Vec<PathBuf> = SECRET_FILES
            .iter()
            .map(|f| canonical_or_self(&home.join(f)))
            .collect();
        let mut secret_ids = HashSet::new();
        let mut budget = SECRET_WALK_LIMIT;
        let mut linked = Vec::new();
        for dir in &secret_dirs {
            collect_ids(dir, &mut secret_ids, &mut linked, &mut budget);
        }
        // A store whose files are links into a dotfiles repository: those files are
        // secrets by path too.
        for target in linked {
            if target.is_dir() {
                secret_dirs.push(target);
            } else {
                secret_files.push(target);
            }
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
        if let Ok(below) = target.strip_prefix(&self.home)
            && names_a_secret(below)
        {
            return Some("named like a credential store or key".to_owned());
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

/// Whether a path (below some home-like directory) names a secret store or key anywhere in it:
/// a component like `id_ed25519` or `.netrc`, or a run of components like `.ssh` or
/// `.config/gh`.
fn names_a_secret(path: &Path) -> bool {
    let names: Vec<String> = path
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let has_run = |pattern: &str| {
        let parts: Vec<&str> = pattern.split('/').collect();
        names
            .windows(parts.len())
            .any(|w| w.iter().zip(&parts).all(|(a, b)| a == b))
    };
    names.iter().any(|n| SECRET_NAMES.contains(&n.as_str()))
        || SECRET_DIRS.iter().any(|d| has_run(d))
        || SECRET_FILES.iter().any(|f| has_run(f))
}

/// The identities of the files in a secret store (links followed), and the canonical targets
/// of links in it.
fn collect_ids(
    dir: &Path,
    ids: &mut HashSet<FileId>,
    linked: &mut Vec<PathBuf>,
    budget: &mut usize,
) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_symlink())
            && let Ok(target) = fs::canonicalize(&path)
        {
            linked.push(target);
            if let Ok(meta) = fs::metadata(&path)
                && meta.is_file()
            {
                ids.insert((meta.dev(), meta.ino()));
            }
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            collect_ids(&path, ids, linked, budget);
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
        assert!(check_project_dir(&home.path("src/p"), std::slice::from_ref(&h)).is_ok());
        for (bad, why) in [
            (PathBuf::from("/"), "root directory"),
            (h.clone(), "is your home directory"),
            (h.parent().expect("parent").to_owned(), "contains your home"),
            (home.path(".ssh"), "contains"),
            (home.path(".claude"), "contains"),
        ] {
            let error = check_project_dir(&bad, std::slice::from_ref(&h)).expect_err("refused");
            assert!(error.to_string().contains(why), "{bad:?}: {error}");
            assert_eq!(error.exit_code(), 2);
        }
        // ~/.ssh linked into a dotfiles project makes that project a secret store's parent.
        fs::remove_dir_all(home.path(".ssh")).expect("rm");
        fs::create_dir(home.path("dotfiles/ssh")).expect("mkdir");
        std::os::unix::fs::symlink(home.path("dotfiles/ssh"), home.dir.path().join(".ssh"))
            .expect("symlink");
        let error = check_project_dir(&home.path("dotfiles"), std::slice::from_ref(&h))
            .expect_err("refused");
        assert!(error.to_string().contains(".ssh"), "{error}");
        fs::create_dir(home.path("dotfiles/ssh").join("sub")).expect("mkdir");
        let inside = home.path("dotfiles/ssh/sub");
        let error = check_project_dir(&inside, std::slice::from_ref(&h)).expect_err("refused");
        assert!(
            error.to_string().contains("inside the credential store"),
            "{error}"
        );
    }

    /// The review's holes: system trees, the real targets of files that only cross sanitized
    /// (a dotfiles project holding the real `~/.gitconfig`), the passwd home besides `$HOME`,
    /// and private directories inside the project.
    #[test]
    fn project_dir_refuses_system_trees_sanitized_targets_and_private_dirs() {
        let home = Home::new();
        let h = home.path("");
        for tree in ["/proc", "/proc/1", "/sys", "/dev/shm", "/run", "/etc"] {
            let error =
                check_project_dir(Path::new(tree), std::slice::from_ref(&h)).expect_err("refused");
            assert!(
                error.to_string().contains("a system directory"),
                "{tree}: {error}"
            );
        }
        fs::write(home.path("dotfiles").join("gitconfig"), "[user]\n").expect("write");
        std::os::unix::fs::symlink(
            home.path("dotfiles/gitconfig"),
            home.dir.path().join(".gitconfig"),
        )
        .expect("symlink");
        let error = check_project_dir(&home.path("dotfiles"), std::slice::from_ref(&h))
            .expect_err("refused");
        assert!(error.to_string().contains(".gitconfig"), "{error}");

        let elsewhere = tempfile::tempdir().expect("tempdir");
        let error = check_project_dir(&h, &[elsewhere.path().to_owned(), h.clone()])
            .expect_err("the passwd home is protected too");
        assert!(
            error.to_string().contains("is your home directory"),
            "{error}"
        );

        let project = home.path("src/p");
        fs::create_dir_all(project.join(".cache/ccvm/images")).expect("mkdir");
        let error = check_project_holds_none_of(
            &project,
            &[("the image cache", &project.join(".cache/ccvm/images"))],
        )
        .expect_err("refused");
        assert!(
            error.to_string().contains("contains the image cache"),
            "{error}"
        );
    }

    /// GNU stow's layout: `~/.ssh/id_ed25519 -> ../dotfiles/ssh/.ssh/id_ed25519`. A link from
    /// `~/.claude` to the key's real place is refused, by its canonical path, its name and
    /// its inode; so is any other path that names a key store.
    #[test]
    fn keys_behind_dotfile_links_are_refused_wherever_they_really_live() {
        let home = Home::new();
        let stow = home.dir.path().join("dotfiles/ssh/.ssh");
        fs::create_dir_all(&stow).expect("mkdir");
        fs::write(stow.join("work_key"), "PRIVATE").expect("write");
        std::os::unix::fs::symlink(stow.join("work_key"), home.dir.path().join(".ssh/work_key"))
            .expect("symlink");
        fs::create_dir_all(home.dir.path().join("notes")).expect("mkdir");
        fs::write(home.dir.path().join("notes/work_key.md"), "x").expect("write");
        let rules = home.rules();
        let real = home.path("dotfiles/ssh/.ssh/work_key");
        assert!(rules.refuse_target(&real).is_some(), "by its real path");
        assert!(
            rules
                .refuse_file(&fs::metadata(&real).expect("meta"))
                .is_some(),
            "by inode"
        );
        for named in [
            "dotfiles/aws/.aws/config",
            "backup/.config/gh/hosts.yml",
            "x/id_ed25519",
        ] {
            assert!(
                rules
                    .refuse_target(&home.path("").join(named))
                    .is_some_and(|why| why.contains("named like")),
                "{named}"
            );
        }
        assert_eq!(rules.refuse_target(&home.path("notes/work_key.md")), None);
        assert_eq!(
            rules.refuse_target(&home.path("").join("dotfiles/claude/agents/a.md")),
            None,
            "an ordinary dotfiles file"
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
