//! The run's private files (S6.4, S9.1) and their reaper: the run directory and the scratch
//! disk image, removed on every exit path, SIGKILL of ccvm included (S11.1).

use std::fs;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT};

use crate::error::Error;

/// The run directory and, when one is configured, the scratch disk image. Both are removed on
/// drop (the directory is kept for `--ccvm-debug`); and because a SIGKILLed ccvm runs no
/// destructor, a small `ccvm --ccvm-reap DIR DISK` process holds the read end of a pipe to us
/// and removes them when that pipe closes, however we exit.
pub struct RunDir {
    pub path: PathBuf,
    keep: bool,
    disk: Option<PathBuf>,
    reaper: Option<std::process::Child>,
}

/// What the reaper is told to leave alone.
const NOTHING: &str = "-";

impl RunDir {
    /// Creates the run directory; `disk` is where the scratch disk will be created (the
    /// reaper knows it from the start). `scrub`: the API key variable, which the reaper has no
    /// use for.
    pub fn create(
        path: &Path,
        keep: bool,
        disk: Option<&Path>,
        scrub: &str,
    ) -> Result<RunDir, Error> {
        crate::host::dirs::create_run_dir(path)?;
        let reaper = if keep && disk.is_none() {
            None
        } else {
            let exe = std::env::current_exe().map_err(|source| Error::Io {
                what: "cannot locate",
                path: PathBuf::from("ccvm"),
                source,
            })?;
            let dir_arg = if keep { Path::new(NOTHING) } else { path };
            let child = Command::new(exe)
                .arg("--ccvm-reap")
                .arg(dir_arg)
                .arg(disk.unwrap_or(Path::new(NOTHING)))
                .env_remove(scrub)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .map_err(|source| Error::Spawn {
                    action: "start",
                    program: "the scratch-directory reaper".to_owned(),
                    source,
                })?;
            Some(child)
        };
        Ok(RunDir {
            path: path.to_owned(),
            keep,
            disk: disk.map(Path::to_owned),
            reaper,
        })
    }

    /// Creates the scratch disk image (S9.1): a sparse raw file of exactly `size_gib`, new
    /// (never an existing file), readable by the user alone, in a private `scratch_dir`.
    pub fn create_disk(&self, size_gib: u64) -> Result<(), Error> {
        let Some(disk) = &self.disk else {
            return Ok(());
        };
        let dir = disk.parent().unwrap_or(Path::new("/"));
        if let Some(parent) = dir.parent() {
            fs::create_dir_all(parent).map_err(Error::io("cannot create", parent))?;
        }
        crate::host::dirs::ensure(dir, "the scratch directory")?;
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(disk)
            .map_err(Error::io("cannot create the scratch disk", disk))?;
        file.set_len(size_gib << 30)
            .map_err(Error::io("cannot size the scratch disk", disk))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if let Some(disk) = &self.disk {
            let _ = fs::remove_file(disk);
        }
        if self.keep {
            eprintln!(
                "ccvm: debug: kept the scratch directory {}",
                self.path.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
        if let Some(mut reaper) = self.reaper.take() {
            drop(reaper.stdin.take());
            let _ = reaper.wait();
        }
    }
}

/// Whether `path` is something of ours the reaper may remove: named as ccvm names it, not a
/// link, of the right kind, owned by us.
fn reapable(path: &Path, names: &dyn Fn(&str) -> bool, directory: bool) -> bool {
    let named = path.file_name().and_then(|n| n.to_str()).is_some_and(names);
    let ours = fs::symlink_metadata(path).is_ok_and(|m| {
        let kind = if directory { m.is_dir() } else { m.is_file() };
        kind && m.uid() == nix::unistd::getuid().as_raw()
    });
    named && ours
}

/// `--ccvm-reap DIR DISK`: waits for stdin to close, then removes `DIR`, which must be a ccvm
/// run directory (`…/run-<random>` or `…/ccvm-run-<random>`) owned by us, and `DISK`, which
/// must be a scratch disk image (`disk-….img`) owned by us; `-` for either means none.
pub fn reap(dir: &Path, disk: &Path) -> u8 {
    use std::io::Read;
    // Not killed by the Ctrl-C meant for the session.
    let _ =
        signal_hook::flag::register(SIGINT, Arc::new(std::sync::atomic::AtomicBool::new(false)));
    let _ =
        signal_hook::flag::register(SIGHUP, Arc::new(std::sync::atomic::AtomicBool::new(false)));
    let mut sink = [0u8; 64];
    while std::io::stdin().read(&mut sink).is_ok_and(|n| n > 0) {}
    let run_dir_name = |n: &str| {
        crate::host::dirs::RUN_PREFIXES
            .iter()
            .any(|p| n.starts_with(p))
    };
    if reapable(dir, &run_dir_name, true) {
        let _ = fs::remove_dir_all(dir);
    }
    let disk_name = |n: &str| n.starts_with("disk-") && n.ends_with(".img");
    if reapable(disk, &disk_name, false) {
        let _ = fs::remove_file(disk);
    }
    0
}
