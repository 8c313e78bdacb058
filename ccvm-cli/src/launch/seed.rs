//! Writing the seed (S5, S6.2): the per-run bundle the guest agent reads before sshd starts.
//!
//! Everything here writes only inside the run directory ccvm created for this session; the
//! user's files are read, never changed. The API key is never written: it travels in the
//! ssh session's environment only (S6.2).

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use ccvm_plugin_api::seed::{
    ARGV_FILE, AUTHORIZED_KEYS_FILE, HOST_KEY_FILE, MANIFEST_FILE, SeedManifest,
};
use ccvm_plugin_api::{SeedFile, SeedSource};

use crate::error::Error;
use crate::host::boundary::LinkRules;
use crate::plan::HOST_KEY_ALIAS;

/// The client key, relative to the run directory.
pub const CLIENT_KEY_FILE: &str = "id_ed25519";
/// The pinned guest host key, relative to the run directory.
pub const KNOWN_HOSTS_FILE: &str = "known_hosts";

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io { what, path, source }
}

/// argv as the seed carries it: every argument's bytes followed by a NUL (S1.2). Arguments
/// cannot contain NUL, so this is exact.
pub fn encode_argv(args: &[OsString]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for arg in args {
        bytes.extend_from_slice(arg.as_bytes());
        bytes.push(0);
    }
    bytes
}

/// A seed path from a plugin: relative, `/`-separated, no `..`, not empty.
fn checked_relative(path: &str) -> Result<PathBuf, Error> {
    let candidate = Path::new(path);
    let clean = !path.is_empty()
        && candidate
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    if clean {
        Ok(candidate.to_owned())
    } else {
        Err(Error::PluginPlan {
            plugin: "a policy".to_owned(),
            problem: format!("the seed path `{path}`, which is not a plain relative path"),
        })
    }
}

/// Creates `path` with mode 0700 (and, when `parents`, any missing parents the same way).
pub fn private_dir(path: &Path, parents: bool) -> Result<(), Error> {
    fs::DirBuilder::new()
        .recursive(parents)
        .mode(0o700)
        .create(path)
        .map_err(io("cannot create", path))
}

fn create_private_file(path: &Path, content: &[u8], mode: u32) -> Result<(), Error> {
    if let Some(parent) = path.parent() {
        private_dir(parent, true)?;
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io("cannot create", path))?;
    std::io::Write::write_all(&mut file, content).map_err(io("cannot write", path))
}

/// The most a seed may copy from the host: a `~/.claude` item linked to a huge tree must
/// fail clearly rather than fill the run directory (which is often RAM).
const MAX_STAGED_BYTES: u64 = 256 << 20;

/// Copies host trees into the seed by the S5.3 rules: symlinks are dereferenced when
/// [`LinkRules`] allow where they lead (and skipped with a warning naming them otherwise),
/// dangling links, loops and special files are skipped with a warning, and no file that is a
/// credential (by name or inode) is copied.
struct Stager<'a> {
    rules: &'a LinkRules,
    ancestors: HashSet<(u64, u64)>,
    warnings: Vec<String>,
    bytes: u64,
}

impl Stager<'_> {
    fn skip(&mut self, from: &Path, why: impl std::fmt::Display) {
        self.warnings
            .push(format!("{} {why}; not staged", from.display()));
    }

    /// Copies `from` (file or directory, maybe a link) to `to`, leaving out `drop_names`.
    fn copy(&mut self, from: &Path, to: &Path, drop_names: &[String]) -> Result<(), Error> {
        let link = match fs::symlink_metadata(from) {
            Ok(meta) => meta.file_type().is_symlink(),
            // A staged item the user does not have.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                self.skip(from, format!("cannot be read ({e})"));
                return Ok(());
            }
        };
        // Every entry is judged by where it really is: a link by its target, and an entry
        // below a linked directory (`agents/cfg/gh/hosts.yml` with `cfg -> ~/.config`) by
        // its canonical path.
        let source = match fs::canonicalize(from) {
            Ok(target) => target,
            Err(e) if link && e.kind() == std::io::ErrorKind::NotFound => {
                self.skip(from, "is a dangling symlink");
                return Ok(());
            }
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                self.skip(from, "is a symlink loop");
                return Ok(());
            }
            Err(e) => {
                self.skip(from, format!("cannot be resolved ({e})"));
                return Ok(());
            }
        };
        if let Some(why) = self.rules.refuse_target(&source) {
            if link {
                self.skip(from, format!("links to {}, {why}", source.display()));
            } else {
                self.skip(from, format!("is {}, {why}", source.display()));
            }
            return Ok(());
        }
        // No link is followed from here on (the source is canonical), and a FIFO or device
        // cannot block or act on open: it is only looked at, then skipped.
        let file = match fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
            .open(&source)
        {
            Ok(file) => file,
            Err(e) => {
                self.skip(from, format!("cannot be opened ({e})"));
                return Ok(());
            }
        };
        // A directory on the way may have been swapped for a link since it was checked: what
        // was opened must be what was judged.
        let opened = fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()));
        if opened.as_deref().ok() != Some(source.as_path()) {
            self.skip(from, "changed while it was being staged");
            return Ok(());
        }
        let meta = file.metadata().map_err(io("cannot inspect", &source))?;
        if meta.is_dir() {
            self.copy_dir(from, &source, to, &meta, drop_names)
        } else if meta.is_file() {
            if let Some(why) = self.rules.refuse_file(&meta) {
                self.skip(from, format!("is {why}"));
                return Ok(());
            }
            self.bytes += meta.len();
            if self.bytes > MAX_STAGED_BYTES {
                return Err(Error::StagingTooLarge {
                    item: from.to_owned(),
                    limit_mib: MAX_STAGED_BYTES >> 20,
                });
            }
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(&file, meta.len()), &mut content)
                .map_err(io("cannot read", from))?;
            // Executable bits survive (hooks, scripts); the guest makes everything agent-owned.
            let mode = if meta.mode() & 0o111 != 0 {
                0o700
            } else {
                0o600
            };
            create_private_file(to, &content, mode)
        } else {
            self.skip(from, "is not a regular file or directory");
            Ok(())
        }
    }

    fn copy_dir(
        &mut self,
        from: &Path,
        source: &Path,
        to: &Path,
        meta: &fs::Metadata,
        drop_names: &[String],
    ) -> Result<(), Error> {
        let id = (meta.dev(), meta.ino());
        if !self.ancestors.insert(id) {
            self.skip(from, "loops back to a parent directory");
            return Ok(());
        }
        private_dir(to, false)?;
        let mut entries: Vec<_> = fs::read_dir(source)
            .map_err(io("cannot list", from))?
            .collect::<Result<_, _>>()
            .map_err(io("cannot list", from))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            if drop_names.iter().any(|d| d.as_bytes() == name.as_bytes()) {
                continue;
            }
            self.copy(&from.join(&name), &to.join(&name), drop_names)?;
        }
        self.ancestors.remove(&id);
        Ok(())
    }
}

/// The staging rules for a plan's seed: links may lead into the items it copies from
/// `~/.claude`, and never to a file it only stages sanitized (`sanitized`, absolute).
pub fn link_rules(home: &Path, files: &[SeedFile], sanitized: &[String]) -> LinkRules {
    let staged: Vec<PathBuf> = files
        .iter()
        .filter_map(|f| match &f.source {
            SeedSource::CopyFromHost { host_path, .. } => Some(PathBuf::from(host_path)),
            SeedSource::Inline { .. } => None,
        })
        .collect();
    let sanitized: Vec<PathBuf> = sanitized.iter().map(PathBuf::from).collect();
    LinkRules::new(home, &staged, &sanitized)
}

/// Writes the seed into `dir` (which must not exist yet): the manifest, the argv, and every
/// policy seed file. Returns warnings about host files that could not be staged.
pub fn write(
    dir: &Path,
    manifest: &SeedManifest,
    argv: &[OsString],
    files: &[SeedFile],
    rules: &LinkRules,
) -> Result<Vec<String>, Error> {
    private_dir(dir, false)?;
    let mut stager = Stager {
        rules,
        ancestors: HashSet::new(),
        warnings: Vec::new(),
        bytes: 0,
    };
    for file in files {
        let target = dir.join(checked_relative(&file.path)?);
        match &file.source {
            SeedSource::Inline { content } => {
                create_private_file(&target, content.as_bytes(), 0o600)?;
            }
            SeedSource::CopyFromHost {
                host_path,
                drop_names,
            } => {
                if let Some(parent) = target.parent() {
                    private_dir(parent, true)?;
                }
                stager.copy(Path::new(host_path), &target, drop_names)?;
            }
        }
    }
    create_private_file(&dir.join(ARGV_FILE), &encode_argv(argv), 0o600)?;
    let json = serde_json::to_vec_pretty(manifest).expect("a seed manifest always serializes");
    create_private_file(&dir.join(MANIFEST_FILE), &json, 0o600)?;
    Ok(stager.warnings)
}

fn keygen(ssh_keygen: &Path, key: &Path, comment: &str) -> Result<String, Error> {
    // It needs nothing of the user's environment (and so gets none of its secrets).
    let output = Command::new(ssh_keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(key)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            action: "run",
            program: ssh_keygen.display().to_string(),
            source,
        })?;
    if !output.status.success() {
        return Err(Error::Keys {
            detail: format!(
                "{}: {}",
                key.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    let public = key.with_extension("pub");
    let text = fs::read_to_string(&public).map_err(io("cannot read", &public))?;
    fs::remove_file(&public).map_err(io("cannot remove", &public))?;
    Ok(text)
}

/// Fresh ed25519 keys for one session (S6.2): the guest's host key goes into the seed and its
/// public half into `run_dir/known_hosts` (pinned under [`HOST_KEY_ALIAS`]); the client key
/// stays in `run_dir` and its public half becomes the seed's only authorized key.
pub fn generate_keys(ssh_keygen: &Path, run_dir: &Path, seed_dir: &Path) -> Result<(), Error> {
    let host_key = seed_dir.join(HOST_KEY_FILE);
    if let Some(parent) = host_key.parent() {
        private_dir(parent, true)?;
    }
    let host_public = keygen(ssh_keygen, &host_key, "ccvm-guest-host")?;
    let mut fields = host_public.split_whitespace();
    let (Some(kind), Some(body)) = (fields.next(), fields.next()) else {
        return Err(Error::Keys {
            detail: format!("an unreadable public key: {host_public:?}"),
        });
    };
    create_private_file(
        &run_dir.join(KNOWN_HOSTS_FILE),
        format!("{HOST_KEY_ALIAS} {kind} {body}\n").as_bytes(),
        0o600,
    )?;
    let client_public = keygen(ssh_keygen, &run_dir.join(CLIENT_KEY_FILE), "ccvm-client")?;
    create_private_file(
        &seed_dir.join(AUTHORIZED_KEYS_FILE),
        client_public.as_bytes(),
        0o600,
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStringExt;
    use std::os::unix::fs::PermissionsExt;

    use ccvm_plugin_api::NetworkAttachment;
    use ccvm_plugin_api::seed::{GuestUser, SEED_VERSION, SessionMode};

    use super::*;

    fn manifest() -> SeedManifest {
        SeedManifest {
            version: SEED_VERSION,
            user: GuestUser {
                name: "dev".into(),
                uid: 1000,
                gid: 1000,
                home: "/home/dev".into(),
            },
            project_dir: "/home/dev/p".into(),
            mode: SessionMode::Claude,
            shares: Vec::new(),
            writable_cwd: true,
            api_key_variable: "ANTHROPIC_API_KEY".into(),
            guest_ssh_port: 22,
            network: NetworkAttachment::None,
            setup_steps: Vec::new(),
        }
    }

    #[test]
    fn argv_encoding_terminates_every_argument() {
        let args = [
            OsString::from("a b"),
            OsString::new(),
            OsString::from_vec(vec![0xff, b'\n']),
        ];
        assert_eq!(encode_argv(&args), b"a b\0\0\xff\n\0");
    }

    #[test]
    fn seed_paths_must_stay_inside_the_seed() {
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./a"] {
            assert!(checked_relative(bad).is_err(), "{bad:?} accepted");
        }
        assert!(checked_relative("claude/settings.json").is_ok());
    }

    fn agents_item(home: &Path) -> SeedFile {
        SeedFile {
            path: "claude/agents".into(),
            source: SeedSource::CopyFromHost {
                host_path: home.join(".claude/agents").display().to_string(),
                drop_names: vec![".credentials.json".into()],
            },
        }
    }

    fn rules(home: &Path) -> LinkRules {
        LinkRules::new(
            home,
            &[home.join(".claude/agents")],
            &[home.join(".claude.json")],
        )
    }

    #[test]
    fn copy_follows_links_drops_names_and_survives_loops_and_dangling_links() {
        let host = tempfile::tempdir().expect("tempdir");
        let home = host.path();
        let claude = home.join(".claude");
        fs::create_dir_all(claude.join("agents/nested")).expect("mkdir");
        fs::create_dir_all(home.join("dotfiles/looping")).expect("mkdir");
        fs::write(claude.join("agents/a.md"), "agent").expect("write");
        fs::write(claude.join("agents/.credentials.json"), "secret").expect("write");
        fs::write(claude.join("agents/nested/.credentials.json"), "secret").expect("write");
        fs::write(home.join("dotfiles/real-settings.json"), "{}").expect("write");
        std::os::unix::fs::symlink(
            home.join("dotfiles/real-settings.json"),
            claude.join("agents/linked.json"),
        )
        .expect("symlink");
        std::os::unix::fs::symlink("/nonexistent/target", claude.join("agents/dangling"))
            .expect("symlink");
        std::os::unix::fs::symlink(home.join("dotfiles"), claude.join("agents/dotfiles"))
            .expect("symlink");
        std::os::unix::fs::symlink(home.join("dotfiles"), home.join("dotfiles/looping/up"))
            .expect("symlink");

        let seed = host.path().join("seed");
        let files = vec![
            agents_item(home),
            SeedFile {
                path: "claude/missing".into(),
                source: SeedSource::CopyFromHost {
                    host_path: claude.join("missing").display().to_string(),
                    drop_names: Vec::new(),
                },
            },
            SeedFile {
                path: "ccvm-session.md".into(),
                source: SeedSource::Inline {
                    content: "# ccvm session\n".into(),
                },
            },
        ];
        let args = [OsString::from("--help")];
        let warnings =
            write(&seed, &manifest(), &args, &files, &rules(home)).expect("seed written");

        let staged = seed.join("claude/agents");
        assert_eq!(
            fs::read_to_string(staged.join("a.md")).expect("a.md"),
            "agent"
        );
        let linked = staged.join("linked.json");
        assert!(
            fs::symlink_metadata(&linked)
                .expect("linked")
                .file_type()
                .is_file(),
            "links are dereferenced"
        );
        assert!(staged.join("dotfiles/real-settings.json").is_file());
        assert!(!staged.join(".credentials.json").exists());
        assert!(!staged.join("nested/.credentials.json").exists());
        assert!(!staged.join("dangling").exists());
        assert!(
            !seed.join("claude/missing").exists(),
            "a missing source is skipped"
        );
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings.iter().any(|w| w.contains("dangling")));
        assert!(warnings.iter().any(|w| w.contains("loops back")));
        assert_eq!(fs::read(seed.join("argv")).expect("argv"), b"--help\0");
        let parsed: SeedManifest =
            serde_json::from_slice(&fs::read(seed.join("seed.json")).expect("seed.json"))
                .expect("parses");
        assert_eq!(parsed, manifest());
        let mode = fs::metadata(&seed).expect("seed").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // A second write into the same directory is refused rather than mixing two seeds.
        assert!(write(&seed, &manifest(), &args, &files, &rules(home)).is_err());
    }

    /// S5.3: a link in `~/.claude` never carries a secret store into the seed, whatever its
    /// name; each one skipped is one warning naming it.
    #[test]
    fn links_to_secret_stores_kernel_files_and_credentials_are_skipped_by_name() {
        let host = tempfile::tempdir().expect("tempdir");
        let home = host.path();
        let agents = home.join(".claude/agents");
        fs::create_dir_all(&agents).expect("mkdir");
        fs::create_dir_all(home.join(".ssh")).expect("mkdir");
        fs::create_dir_all(home.join(".aws")).expect("mkdir");
        fs::create_dir_all(home.join("notes")).expect("mkdir");
        fs::write(home.join(".ssh/id_ed25519"), "PRIVATE KEY").expect("write");
        fs::write(home.join(".aws/credentials"), "aws_secret").expect("write");
        fs::write(home.join(".claude/.credentials.json"), "oauth").expect("write");
        fs::write(home.join(".claude/history.jsonl"), "history").expect("write");
        fs::write(home.join(".claude.json"), "{\"primaryApiKey\":\"k\"}").expect("write");
        fs::write(home.join("notes/ok.md"), "fine").expect("write");
        fs::hard_link(home.join(".ssh/id_ed25519"), home.join("notes/innocent.md"))
            .expect("hard link");
        let link = |name: &str, target: &Path| {
            std::os::unix::fs::symlink(target, agents.join(name)).expect("symlink");
        };
        link("key.md", &home.join(".ssh/id_ed25519"));
        link("ssh", &home.join(".ssh"));
        link("aws.md", &home.join(".aws/credentials"));
        link("login.md", &home.join(".claude/.credentials.json"));
        link("history.md", &home.join(".claude/history.jsonl"));
        link("config.md", &home.join(".claude.json"));
        link("environ.md", Path::new("/proc/self/environ"));
        link("shadow.md", Path::new("/etc/passwd"));
        link("home", home);
        link("notes", &home.join("notes"));
        // Below a linked directory, entries are judged by where they really are.
        fs::create_dir_all(home.join(".config/gh")).expect("mkdir");
        fs::write(home.join(".config/gh/hosts.yml"), "oauth_token: gho_x").expect("write");
        link("cfg", &home.join(".config"));
        let seed = host.path().join("seed");
        let warnings = write(&seed, &manifest(), &[], &[agents_item(home)], &rules(home))
            .expect("seed written");

        let mut staged: Vec<String> = walk(&seed.join("claude"))
            .iter()
            .map(|p| {
                p.strip_prefix(&seed)
                    .expect("in seed")
                    .display()
                    .to_string()
            })
            .collect();
        staged.sort();
        assert_eq!(staged, ["claude/agents/notes/ok.md"], "{warnings:?}");
        let all_content: Vec<u8> = walk(&seed)
            .iter()
            .flat_map(|p| fs::read(p).expect("read"))
            .collect();
        let text = String::from_utf8_lossy(&all_content);
        for secret in [
            "PRIVATE KEY",
            "aws_secret",
            "oauth",
            "gho_x",
            "history",
            "primaryApiKey",
        ] {
            assert!(!text.contains(secret), "{secret} reached the seed");
        }
        for name in [
            "key.md",
            "ssh",
            "aws.md",
            "login.md",
            "history.md",
            "config.md",
            "environ.md",
            "shadow.md",
            "home",
            "notes/innocent.md",
            "cfg/gh",
        ] {
            let named = agents.join(name).display().to_string();
            assert_eq!(
                warnings
                    .iter()
                    .filter(|w| w.starts_with(&format!("{named} ")))
                    .count(),
                1,
                "one warning for {name}: {warnings:?}"
            );
        }
        assert_eq!(warnings.len(), 11, "{warnings:?}");
    }

    #[test]
    fn a_fifo_in_claude_is_skipped_without_blocking() {
        let host = tempfile::tempdir().expect("tempdir");
        let agents = host.path().join(".claude/agents");
        fs::create_dir_all(&agents).expect("mkdir");
        nix::unistd::mkfifo(&agents.join("pipe"), nix::sys::stat::Mode::S_IRWXU).expect("fifo");
        let seed = host.path().join("seed");
        let warnings = write(
            &seed,
            &manifest(),
            &[],
            &[agents_item(host.path())],
            &rules(host.path()),
        )
        .expect("seed written");
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("pipe is not a regular file")),
            "{warnings:?}"
        );
    }

    #[test]
    fn keys_pin_the_host_key_and_authorize_only_the_client() {
        let Ok(ssh_keygen) = which::which("ssh-keygen") else {
            eprintln!("skipped: ssh-keygen is not installed (package openssh-client)");
            return;
        };
        let run = tempfile::tempdir().expect("tempdir");
        let seed = run.path().join("seed");
        fs::create_dir(&seed).expect("mkdir");
        generate_keys(&ssh_keygen, run.path(), &seed).expect("keys");
        let known = fs::read_to_string(run.path().join(KNOWN_HOSTS_FILE)).expect("known_hosts");
        assert!(known.starts_with("ccvm-guest ssh-ed25519 "), "{known}");
        let authorized = fs::read_to_string(seed.join(AUTHORIZED_KEYS_FILE)).expect("authorized");
        assert!(authorized.starts_with("ssh-ed25519 "));
        assert!(
            fs::read_to_string(seed.join(HOST_KEY_FILE))
                .expect("host key")
                .contains("PRIVATE KEY")
        );
        assert!(run.path().join(CLIENT_KEY_FILE).is_file());
        // The client's private key never enters the seed.
        let in_seed = walk(&seed);
        assert!(
            in_seed.iter().all(|p| !p.ends_with(CLIENT_KEY_FILE)),
            "{in_seed:?}"
        );
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).expect("list").flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
        out
    }
}
