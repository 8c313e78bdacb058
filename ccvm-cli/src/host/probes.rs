//! Probes of what this host can do for a plugin: the TSC frequency, user namespaces.

use std::process::{Command, Stdio};
use std::time::Duration;

use ccvm_plugin_api::NamespaceFact;

use super::programs::find_program;
use crate::config::Env;

/// How long the namespace probe may take before it counts as failed.
const NAMESPACE_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether this user can create the namespaces virtiofsd's `--sandbox=namespace` needs
/// (user, mount, pid, network, and mount a proc there), asked of util-linux's `unshare` in a
/// child process: creating namespaces in ccvm itself would change ccvm. The probe is the real
/// operation, so a restriction by a sysctl (`user.max_user_namespaces=0`,
/// `kernel.unprivileged_userns_clone=0`) or a security module (AppArmor's
/// `apparmor_restrict_unprivileged_userns`) shows up as it would for virtiofsd.
pub fn user_namespaces(env: &Env) -> NamespaceFact {
    let unusable = |reason: String| NamespaceFact::Unusable { reason };
    let Some(unshare) = find_program("unshare", env) else {
        return unusable(
            "`unshare` (util-linux) is not installed, so ccvm cannot check".to_owned(),
        );
    };
    let child = Command::new(&unshare)
        .env_clear()
        .current_dir("/")
        .args([
            "--user",
            "--map-root-user",
            "--mount",
            "--pid",
            "--net",
            "--fork",
            "--mount-proc",
            "true",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => return unusable(format!("cannot run {}: {e}", unshare.display())),
    };
    let deadline = std::time::Instant::now() + NAMESPACE_PROBE_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            _ => {
                // Our own child, killed by handle.
                let _ = child.kill();
                let _ = child.wait();
                return unusable(format!(
                    "`unshare` did not finish within {NAMESPACE_PROBE_TIMEOUT:?}"
                ));
            }
        }
    }
    match child.wait_with_output() {
        Ok(out) if out.status.success() => NamespaceFact::Usable,
        Ok(out) => unusable(format!(
            "this user cannot create user namespaces here ({}: {})",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => unusable(format!("cannot wait for {}: {e}", unshare.display())),
    }
}

/// The host TSC frequency: the kernel's own value when it exports one, else the boot CPU's
/// nominal MHz from `/proc/cpuinfo`.
pub fn tsc_khz() -> Option<u64> {
    if let Ok(text) = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/tsc_freq_khz")
        && let Ok(khz) = text.trim().parse()
    {
        return Some(khz);
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = cpuinfo
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    // Truncation is intended: a kHz value is what the kernel parameter takes.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some((mhz * 1000.0).round() as u64)
}
