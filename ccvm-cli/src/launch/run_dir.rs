//! The run directory (S6.4) and its reaper: the session's private files, removed on every
//! exit path, SIGKILL of ccvm included (S11.1).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT};

use crate::error::Error;

/// The run directory (S6.4). Removed on drop unless kept for debugging; and because a
/// SIGKILLed ccvm runs no destructor, a small `ccvm --ccvm-reap DIR` process holds the read
/// end of a pipe to us and removes the directory when that pipe closes, however we exit.
pub struct RunDir {
    pub path: PathBuf,
    keep: bool,
    reaper: Option<std::process::Child>,
}

impl RunDir {
    /// `scrub`: the API key variable, which the reaper has no use for.
    pub fn create(path: &Path, keep: bool, scrub: &str) -> Result<RunDir, Error> {
        crate::host::dirs::create_run_dir(path)?;
        let reaper = if keep {
            None
        } else {
            let exe = std::env::current_exe().map_err(|source| Error::Io {
                what: "cannot locate",
                path: PathBuf::from("ccvm"),
                source,
            })?;
            let child = Command::new(exe)
                .arg("--ccvm-reap")
                .arg(path)
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
            reaper,
        })
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!(
                "ccvm: debug: kept the scratch directory {}",
                self.path.display()
            );
            return;
        }
        let _ = fs::remove_dir_all(&self.path);
        if let Some(mut reaper) = self.reaper.take() {
            drop(reaper.stdin.take());
            let _ = reaper.wait();
        }
    }
}

/// `--ccvm-reap DIR`: waits for stdin to close, then removes `DIR`, which must be a ccvm run
/// directory (`…/run-<random>` or `…/ccvm-run-<random>`) owned by us.
pub fn reap(dir: &Path) -> u8 {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    // Not killed by the Ctrl-C meant for the session.
    let _ =
        signal_hook::flag::register(SIGINT, Arc::new(std::sync::atomic::AtomicBool::new(false)));
    let _ =
        signal_hook::flag::register(SIGHUP, Arc::new(std::sync::atomic::AtomicBool::new(false)));
    let mut sink = [0u8; 64];
    while std::io::stdin().read(&mut sink).is_ok_and(|n| n > 0) {}
    let is_run_dir = dir.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
        crate::host::dirs::RUN_PREFIXES
            .iter()
            .any(|p| n.starts_with(p))
    });
    let ours = fs::symlink_metadata(dir)
        .is_ok_and(|m| m.is_dir() && m.uid() == nix::unistd::getuid().as_raw());
    if is_run_dir && ours {
        let _ = fs::remove_dir_all(dir);
    }
    0
}
