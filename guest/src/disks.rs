//! Finding the VM's disks by their virtio serial (`ccvm-root`, `ccvm-scratch`, set by the
//! backend): the order in which the kernel probes them, and so their names, is not fixed.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a disk may take to appear.
const DEVICE_TIMEOUT: Duration = Duration::from_secs(20);

/// The block device whose virtio serial is `serial` (`/sys/block/vdX/serial`).
pub fn disk_by_serial(sys_block: &Path, serial: &str) -> Option<PathBuf> {
    let mut names: Vec<String> = fs::read_dir(sys_block)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.into_iter().find_map(|name| {
        let found = fs::read_to_string(sys_block.join(&name).join("serial")).ok()?;
        (found.trim() == serial).then(|| PathBuf::from("/dev").join(name))
    })
}

/// Waits for the disk with `serial` to appear.
pub fn wait_for_disk(serial: &str) -> Result<PathBuf, String> {
    let deadline = Instant::now() + DEVICE_TIMEOUT;
    loop {
        if let Some(device) = disk_by_serial(Path::new("/sys/block"), serial)
            && device.exists()
        {
            return Ok(device);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no disk with serial {serial} within {DEVICE_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_are_found_by_serial_not_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, serial) in [("vda", "ccvm-scratch\n"), ("vdb", "ccvm-root")] {
            fs::create_dir_all(dir.path().join(name)).expect("mkdir");
            fs::write(dir.path().join(name).join("serial"), serial).expect("write");
        }
        fs::create_dir_all(dir.path().join("loop0")).expect("mkdir");
        assert_eq!(
            disk_by_serial(dir.path(), "ccvm-scratch"),
            Some(PathBuf::from("/dev/vda"))
        );
        assert_eq!(
            disk_by_serial(dir.path(), "ccvm-root"),
            Some(PathBuf::from("/dev/vdb"))
        );
        assert_eq!(disk_by_serial(dir.path(), "other"), None);
    }
}
