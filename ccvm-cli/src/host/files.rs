//! Host files read for the plugins: the ones they name (by the staging rules of S5.3) and the
//! global git configuration (read by git itself, so includes are resolved).

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ccvm_plugin_api::{FileFact, GitConfigFact};

use super::boundary::LinkRules;
use super::programs::find_program;
use crate::config::Env;

/// Larger files are reported unreadable rather than read into memory.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Reads a file a plugin asked for, by the same rules as staging (S5.3): a symlink is
/// followed only where [`LinkRules`] allow, a credential is never read whatever its name, and
/// only a regular file is opened for reading (a FIFO or device cannot block or act).
pub fn read_file(path: &Path, rules: &LinkRules) -> FileFact {
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
pub fn git_global_config(home: &Path, env: &Env) -> Option<GitConfigFact> {
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
}
