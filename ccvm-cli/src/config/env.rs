//! The process environment as ccvm reads it: a snapshot taken once, so every layer and
//! every lookup sees the same values (and tests can pass their own).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

/// A snapshot of the process environment.
#[derive(Debug, Clone, Default)]
pub struct Env(BTreeMap<OsString, OsString>);

impl Env {
    /// The current process environment.
    pub fn from_process() -> Self {
        Env(std::env::vars_os().collect())
    }

    /// An environment made of the given pairs (for tests).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Env(pairs
            .into_iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect())
    }

    /// Every variable, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&OsString, &OsString)> {
        self.0.iter()
    }

    pub fn get(&self, name: &str) -> Option<&OsStr> {
        self.0.get(OsStr::new(name)).map(OsString::as_os_str)
    }

    /// A set, non-empty, absolute path variable.
    pub fn abs_path(&self, name: &str) -> Option<PathBuf> {
        self.get(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    }

    /// `$TMPDIR` when it is an absolute path, else `/tmp` (a relative `TMPDIR=.` would put a
    /// run directory, keys included, into the project).
    pub fn temp_dir(&self) -> PathBuf {
        self.abs_path("TMPDIR")
            .unwrap_or_else(|| PathBuf::from("/tmp"))
    }

    /// `$HOME`, when set and absolute.
    pub fn home(&self) -> Option<PathBuf> {
        self.abs_path("HOME")
    }
}
