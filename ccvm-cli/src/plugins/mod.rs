//! The plugin host: finds, checks and loads backends and policies (S3.2, S3.3), and calls
//! them through one JSON protocol whether they are built in or loaded from a library.

mod builtin;
mod library;
pub mod manifest;

use std::collections::BTreeSet;
use std::fmt;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ccvm_plugin_api::abi::{RawPlugin, guarded};
use ccvm_plugin_api::{API_VERSION, ErrorClass, Manifest, PluginError, PluginKind};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{Env, RunConfig};
use crate::error::Error;

/// The system plugin directory, chosen at build time (`CCVM_SYSTEM_PLUGIN_DIR`).
pub const SYSTEM_PLUGIN_DIR: &str = match option_env!("CCVM_SYSTEM_PLUGIN_DIR") {
    Some(dir) => dir,
    None => "/usr/lib/ccvm/plugins",
};

/// Where a plugin came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "path")]
pub enum Source {
    BuiltIn,
    Library(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::BuiltIn => f.write_str("built-in"),
            Source::Library(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A usable plugin.
pub struct Plugin {
    pub manifest: Manifest,
    pub kind: PluginKind,
    pub source: Source,
    raw: Arc<dyn RawPlugin>,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("manifest", &self.manifest)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// One typed call; a panic, a plugin error or a malformed answer becomes an [`Error`]
    /// naming the plugin and where it came from.
    pub fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        payload: &impl Serialize,
    ) -> Result<T, Error> {
        let payload = serde_json::to_string(payload).map_err(|e| {
            self.call_error(PluginError {
                class: ErrorClass::Protocol,
                message: format!("cannot encode the `{method}` request: {e}"),
            })
        })?;
        let answer = guarded(|| self.raw.call(method, &payload)).map_err(|e| self.call_error(e))?;
        serde_json::from_str(&answer).map_err(|e| {
            self.call_error(PluginError {
                class: ErrorClass::Protocol,
                message: format!("malformed answer to `{method}`: {e}"),
            })
        })
    }

    fn call_error(&self, error: PluginError) -> Error {
        Error::PluginCall {
            kind: self.kind.as_str(),
            name: self.manifest.name.clone(),
            source_desc: self.source.to_string(),
            error,
        }
    }
}

/// What happened to one candidate, for `--ccvm-plugins` and for errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "state", content = "detail")]
pub enum Status {
    Active,
    /// An earlier directory (or a library, for a built-in) already provides this kind+name.
    Shadowed(String),
    /// Not loaded; the reason and the fix.
    Refused(String),
}

/// One candidate plugin.
#[derive(Debug, Clone, Serialize)]
pub struct Found {
    pub kind: Option<String>,
    pub name: Option<String>,
    pub version: Option<String>,
    pub api_version: Option<String>,
    pub source: Source,
    pub status: Status,
}

/// One directory of the search order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchDir {
    pub path: PathBuf,
    /// Named with `--ccvm-plugin-dir`: problems with it are errors, not warnings.
    pub from_flag: bool,
}

/// The S3.3 order: `--ccvm-plugin-dir`, `CCVM_PLUGIN_PATH`, the config's `plugin_dirs`,
/// `~/.local/lib/ccvm/plugins`, `/usr/local/lib/ccvm/plugins`, the system directory.
/// Built-ins come after all of these.
pub fn search_dirs(config: &RunConfig, env: &Env) -> Vec<SearchDir> {
    let mut dirs: Vec<SearchDir> = config
        .plugin_dirs_flag
        .iter()
        .map(|p| SearchDir {
            path: p.clone(),
            from_flag: true,
        })
        .collect();
    let others = config
        .plugin_dirs_env
        .iter()
        .chain(&config.plugin_dirs_config)
        .cloned()
        .chain(env.home().map(|h| h.join(".local/lib/ccvm/plugins")))
        .chain([
            PathBuf::from("/usr/local/lib/ccvm/plugins"),
            PathBuf::from(SYSTEM_PLUGIN_DIR),
        ]);
    for path in others {
        dirs.push(SearchDir {
            path,
            from_flag: false,
        });
    }
    let mut seen = BTreeSet::new();
    dirs.retain(|d| seen.insert(d.path.clone()));
    dirs
}

/// Why a file or directory may not be trusted to hold code, if it may not.
pub fn insecurity(metadata: &Metadata, uid: u32) -> Option<String> {
    insecurity_of(metadata.mode(), metadata.uid(), uid)
}

/// The rule itself: not group- or world-writable, owned by root or by `uid`.
fn insecurity_of(mode: u32, owner: u32, uid: u32) -> Option<String> {
    let mode = mode & 0o7777;
    if mode & 0o002 != 0 {
        Some(format!("it is world-writable (mode {mode:04o})"))
    } else if mode & 0o020 != 0 {
        Some(format!("it is group-writable (mode {mode:04o})"))
    } else if owner != 0 && owner != uid {
        Some(format!("it is owned by uid {owner}, neither root nor you"))
    } else {
        None
    }
}

const TRUST_FIX: &str = "loading a library runs its code, so ccvm only loads plugins from \
                         directories and files that only you or root can write";

/// All plugins found, and which are in use.
#[derive(Debug)]
pub struct Registry {
    pub active: Vec<Plugin>,
    pub found: Vec<Found>,
    /// Directory-level problems (insecure or missing non-flag directories).
    pub dir_notes: Vec<(PathBuf, String)>,
}

impl Registry {
    /// Searches `dirs`, then adds the built-ins.
    pub fn discover(dirs: &[SearchDir]) -> Result<Registry, Error> {
        let uid = nix::unistd::getuid().as_raw();
        let mut registry = Registry {
            active: Vec::new(),
            found: Vec::new(),
            dir_notes: Vec::new(),
        };
        for dir in dirs {
            let metadata = match std::fs::metadata(&dir.path) {
                Ok(m) if m.is_dir() => m,
                Ok(_) | Err(_) if dir.from_flag => {
                    return Err(Error::PluginUnavailable {
                        message: format!(
                            "--ccvm-plugin-dir {}: not an existing directory",
                            dir.path.display()
                        ),
                        hint: "pass a directory that holds ccvm plugin libraries (*.so)".to_owned(),
                    });
                }
                Ok(_) => {
                    registry
                        .dir_notes
                        .push((dir.path.clone(), "not a directory".to_owned()));
                    continue;
                }
                Err(_) => continue,
            };
            if let Some(why) = insecurity(&metadata, uid) {
                if dir.from_flag {
                    return Err(Error::PluginUnavailable {
                        message: format!("refusing plugin directory {}: {why}", dir.path.display()),
                        hint: format!("{TRUST_FIX}: run `chmod go-w {}`", dir.path.display()),
                    });
                }
                registry
                    .dir_notes
                    .push((dir.path.clone(), format!("refused: {why}")));
                continue;
            }
            registry.scan_dir(&dir.path, uid);
        }
        for raw in builtin::all() {
            let manifest = raw.manifest();
            let kind = manifest::check(&manifest, API_VERSION)
                .expect("built-in plugins are built against this API and named validly");
            registry.add(manifest, kind, Source::BuiltIn, raw);
        }
        Ok(registry)
    }

    fn scan_dir(&mut self, dir: &Path, uid: u32) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            self.dir_notes
                .push((dir.to_owned(), "cannot be listed".to_owned()));
            return;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|ext| ext == "so"))
            .collect();
        files.sort();
        for path in files {
            let refused = |reason: String, manifest: Option<&Manifest>| Found {
                kind: manifest.map(|m| m.kind.clone()),
                name: manifest.map(|m| m.name.clone()),
                version: manifest.map(|m| m.version.clone()),
                api_version: manifest.map(|m| m.api_version.clone()),
                source: Source::Library(path.clone()),
                status: Status::Refused(reason),
            };
            match std::fs::metadata(&path) {
                Ok(m) => {
                    if let Some(why) = insecurity(&m, uid) {
                        self.found
                            .push(refused(format!("{why}; {TRUST_FIX}"), None));
                        continue;
                    }
                }
                Err(e) => {
                    self.found
                        .push(refused(format!("cannot be read ({e})"), None));
                    continue;
                }
            }
            let plugin = match library::load(&path) {
                Ok(plugin) => plugin,
                Err(reason) => {
                    self.found.push(refused(reason, None));
                    continue;
                }
            };
            let manifest = plugin.manifest();
            match manifest::check(&manifest, API_VERSION) {
                Ok(kind) => self.add(
                    manifest,
                    kind,
                    Source::Library(path.clone()),
                    Arc::new(plugin),
                ),
                Err(problem) => self.found.push(refused(
                    format!("{problem}; {}", problem.fix()),
                    Some(&manifest),
                )),
            }
        }
    }

    fn add(
        &mut self,
        manifest: Manifest,
        kind: PluginKind,
        source: Source,
        raw: Arc<dyn RawPlugin>,
    ) {
        let shadow = self
            .active
            .iter()
            .find(|p| p.kind == kind && p.manifest.name == manifest.name)
            .map(|p| p.source.to_string());
        self.found.push(Found {
            kind: Some(manifest.kind.clone()),
            name: Some(manifest.name.clone()),
            version: Some(manifest.version.clone()),
            api_version: Some(manifest.api_version.clone()),
            source: source.clone(),
            status: match &shadow {
                Some(by) => Status::Shadowed(format!("shadowed by {by}")),
                None => Status::Active,
            },
        });
        if shadow.is_none() {
            self.active.push(Plugin {
                manifest,
                kind,
                source,
                raw,
            });
        }
    }

    /// The backend called `name`, or an error saying exactly why it cannot be used.
    pub fn backend(&self, name: &str) -> Result<&Plugin, Error> {
        if let Some(plugin) = self
            .active
            .iter()
            .find(|p| p.kind == PluginKind::Backend && p.name() == name)
        {
            return Ok(plugin);
        }
        if let Some(found) = self
            .found
            .iter()
            .find(|f| f.name.as_deref() == Some(name) && matches!(f.status, Status::Refused(_)))
        {
            let Status::Refused(reason) = &found.status else {
                unreachable!("filtered on Refused above");
            };
            return Err(Error::PluginUnavailable {
                message: format!(
                    "backend `{name}` ({}) cannot be used: {reason}",
                    found.source
                ),
                hint: "see `ccvm --ccvm-plugins` for every plugin found and its status".to_owned(),
            });
        }
        if let Some(policy) = self.active.iter().find(|p| p.name() == name) {
            return Err(Error::PluginUnavailable {
                message: format!(
                    "`{name}` ({}) is a {} plugin, not a backend",
                    policy.source, policy.kind
                ),
                hint: format!("choose one of the backends: {}", self.backend_names()),
            });
        }
        Err(Error::PluginUnavailable {
            message: format!("unknown backend `{name}`"),
            hint: format!(
                "available backends: {}; see `ccvm --ccvm-plugins`",
                self.backend_names()
            ),
        })
    }

    fn backend_names(&self) -> String {
        self.active
            .iter()
            .filter(|p| p.kind == PluginKind::Backend)
            .map(|p| p.name().to_owned())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Every active backend, libraries before built-ins.
    pub fn backends(&self) -> impl Iterator<Item = &Plugin> {
        self.active.iter().filter(|p| p.kind == PluginKind::Backend)
    }

    /// Every active policy, libraries before built-ins.
    pub fn policies(&self) -> impl Iterator<Item = &Plugin> {
        self.active.iter().filter(|p| p.kind == PluginKind::Policy)
    }

    /// One warning per refused library and problematic directory, for ordinary runs.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings: Vec<String> = self
            .dir_notes
            .iter()
            .map(|(dir, note)| format!("plugin directory {}: {note}", dir.display()))
            .collect();
        for found in &self.found {
            if let Status::Refused(reason) = &found.status {
                warnings.push(format!("skipped plugin {}: {reason}", found.source));
            }
        }
        warnings
    }

    /// The `--ccvm-plugins` table.
    pub fn render_table(&self, dirs: &[SearchDir]) -> String {
        let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
        let rows: Vec<[String; 6]> = self
            .found
            .iter()
            .map(|f| {
                [
                    dash(&f.kind),
                    dash(&f.name),
                    dash(&f.version),
                    dash(&f.api_version),
                    f.source.to_string(),
                    match &f.status {
                        Status::Active => "active".to_owned(),
                        Status::Shadowed(by) => by.clone(),
                        Status::Refused(reason) => format!("skipped: {reason}"),
                    },
                ]
            })
            .collect();
        let header = ["KIND", "NAME", "VERSION", "API", "SOURCE", "STATUS"].map(str::to_owned);
        let mut widths = [0usize; 5];
        for row in std::iter::once(&header).chain(&rows) {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = format!(
            "ccvm {}, plugin API {API_VERSION}\n\n",
            env!("CARGO_PKG_VERSION")
        );
        for row in std::iter::once(&header).chain(&rows) {
            for (cell, width) in row.iter().zip(widths) {
                out.push_str(&format!("{cell:<width$}  "));
            }
            out.push_str(&row[5]);
            out.push('\n');
        }
        out.push_str("\nsearch order (first hit per kind and name wins):\n");
        for dir in dirs {
            let note = self
                .dir_notes
                .iter()
                .find(|(p, _)| *p == dir.path)
                .map(|(_, n)| n.clone())
                .unwrap_or_else(|| {
                    if dir.path.is_dir() {
                        "searched".to_owned()
                    } else {
                        "absent".to_owned()
                    }
                });
            out.push_str(&format!("  {}  ({note})\n", dir.path.display()));
        }
        out.push_str("  built-in\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn dir_with_mode(mode: u32) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).expect("chmod");
        dir
    }

    #[test]
    fn world_and_group_writable_are_insecure_private_is_fine() {
        let uid = nix::unistd::getuid().as_raw();
        let meta = |d: &tempfile::TempDir| std::fs::metadata(d.path()).expect("stat");
        assert!(
            insecurity(&meta(&dir_with_mode(0o777)), uid)
                .expect("insecure")
                .contains("world-writable")
        );
        assert!(
            insecurity(&meta(&dir_with_mode(0o770)), uid)
                .expect("insecure")
                .contains("group-writable")
        );
        assert_eq!(insecurity(&meta(&dir_with_mode(0o755)), uid), None);
    }

    #[test]
    fn owner_must_be_root_or_the_user() {
        assert!(
            insecurity_of(0o755, 1234, 1000)
                .expect("foreign")
                .contains("uid 1234, neither root nor you")
        );
        assert_eq!(insecurity_of(0o755, 0, 1000), None);
        assert_eq!(insecurity_of(0o700, 1000, 1000), None);
        assert!(
            insecurity_of(0o1777, 0, 1000)
                .expect("sticky too")
                .contains("world-writable")
        );
    }

    #[test]
    fn flag_directory_that_is_world_writable_is_an_error() {
        let dir = dir_with_mode(0o777);
        let error = Registry::discover(&[SearchDir {
            path: dir.path().to_owned(),
            from_flag: true,
        }])
        .expect_err("refused");
        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().contains("world-writable"), "{error}");
        assert!(error.hint().expect("hint").contains("chmod go-w"));
    }

    #[test]
    fn non_flag_world_writable_directory_is_a_warning() {
        let dir = dir_with_mode(0o777);
        let registry = Registry::discover(&[SearchDir {
            path: dir.path().to_owned(),
            from_flag: false,
        }])
        .expect("discovers");
        assert!(registry.warnings()[0].contains("world-writable"));
    }

    #[test]
    fn non_library_so_file_is_refused_with_reason() {
        let dir = dir_with_mode(0o755);
        std::fs::write(dir.path().join("libjunk.so"), b"not an ELF").expect("write");
        let registry = Registry::discover(&[SearchDir {
            path: dir.path().to_owned(),
            from_flag: true,
        }])
        .expect("discovers");
        let junk = registry
            .found
            .iter()
            .find(|f| f.source != Source::BuiltIn)
            .expect("junk listed");
        assert!(
            matches!(&junk.status, Status::Refused(r) if r.contains("not a ccvm plugin")),
            "{junk:?}"
        );
    }

    #[test]
    fn builtins_provide_four_backends_and_three_policies() {
        let registry = Registry::discover(&[]).expect("discovers");
        let names = |kind| {
            registry
                .active
                .iter()
                .filter(|p| p.kind == kind)
                .map(|p| p.name().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(PluginKind::Backend),
            ["microvm", "q35", "virt", "cloud-hypervisor"]
        );
        assert_eq!(
            names(PluginKind::Policy),
            ["share-staging", "egress", "clipboard"]
        );
    }

    #[test]
    fn asking_for_a_policy_or_unknown_name_as_backend_explains() {
        let registry = Registry::discover(&[]).expect("discovers");
        let error = registry.backend("egress").expect_err("policy");
        assert!(
            error
                .to_string()
                .contains("is a policy plugin, not a backend"),
            "{error}"
        );
        let error = registry.backend("bochs").expect_err("unknown");
        assert!(
            error.to_string().contains("unknown backend `bochs`"),
            "{error}"
        );
        assert!(error.hint().expect("hint").contains("microvm"));
    }

    #[test]
    fn search_order_follows_the_spec() {
        let env = Env::from_pairs([("HOME", "/home/alice")]);
        let mut config = RunConfig::defaults(&env);
        config.plugin_dirs_flag = vec!["/flag".into()];
        config.plugin_dirs_env = vec!["/env".into()];
        config.plugin_dirs_config = vec!["/conf".into()];
        let dirs: Vec<PathBuf> = search_dirs(&config, &env)
            .into_iter()
            .map(|d| d.path)
            .collect();
        assert_eq!(
            dirs,
            [
                PathBuf::from("/flag"),
                "/env".into(),
                "/conf".into(),
                "/home/alice/.local/lib/ccvm/plugins".into(),
                "/usr/local/lib/ccvm/plugins".into(),
                SYSTEM_PLUGIN_DIR.into(),
            ]
        );
    }
}
