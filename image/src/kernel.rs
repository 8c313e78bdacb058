//! Kernel, initramfs and package facts, taken from the extracted root filesystem.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ccvm_guest_protocol::modules::INITRAMFS as INITRAMFS_MODULES;

use crate::cpio::{Kind, Writer};
use crate::error::{Error, io};

fn kernel(detail: String) -> Error {
    Error::Kernel { detail }
}

/// The ELF machine number (`e_machine`) of an architecture ccvm builds images for.
pub fn elf_machine(arch: &str) -> Option<u64> {
    match arch {
        "x86_64" => Some(0x3e),
        "aarch64" => Some(0xb7),
        _ => None,
    }
}

/// Refuses a guest agent that is not a static 64-bit little-endian ELF executable for `arch`:
/// it runs as PID 1 before any library exists, on that architecture's kernel.
pub fn require_static(path: &Path, arch: &str) -> Result<(), Error> {
    let bytes = fs::read(path).map_err(io("cannot read", path))?;
    let field = |at: usize, len: usize| -> Option<u64> {
        let slice = bytes.get(at..at + len)?;
        Some(
            slice
                .iter()
                .rev()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
        )
    };
    let is_elf64 = bytes.starts_with(b"\x7fELF\x02\x01");
    let (Some(machine), Some(phoff), Some(phentsize), Some(phnum)) = (
        field(0x12, 2),
        field(0x20, 8),
        field(0x36, 2),
        field(0x38, 2),
    ) else {
        return Err(Error::NotStatic {
            path: path.to_owned(),
        });
    };
    let interpreter = (0..phnum).any(|i| {
        usize::try_from(phoff + i * phentsize)
            .ok()
            .and_then(|at| field(at, 4))
            == Some(3)
    });
    if !is_elf64 || interpreter {
        return Err(Error::NotStatic {
            path: path.to_owned(),
        });
    }
    if elf_machine(arch) != Some(machine) {
        return Err(Error::WrongArch {
            path: path.to_owned(),
            arch: arch.to_owned(),
        });
    }
    Ok(())
}

/// The kernel release found in the root filesystem and the initramfs module files
/// (relative to its module directory), dependencies included.
pub fn initramfs_modules(root: &Path) -> Result<(String, Vec<String>), Error> {
    let modules = root.join("usr/lib/modules");
    let release = fs::read_dir(&modules)
        .map_err(|e| {
            kernel(format!(
                "the image has no kernel modules ({}: {e})",
                modules.display()
            ))
        })?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .ok_or_else(|| kernel("the image has no kernel".to_owned()))?;
    let dir = modules.join(&release);
    let dep = fs::read_to_string(dir.join("modules.dep"))
        .map_err(|e| kernel(format!("modules.dep: {e}")))?;
    let table: BTreeMap<String, Vec<String>> = dep
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(path, deps)| {
            let mut files = vec![path.to_owned()];
            files.extend(deps.split_whitespace().map(str::to_owned));
            (path.to_owned(), files)
        })
        .collect();
    let builtin = fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
    let mut wanted = BTreeSet::new();
    for name in INITRAMFS_MODULES {
        let file = format!("/{name}.ko");
        match table.keys().find(|path| path.ends_with(&file)) {
            Some(path) => wanted.extend(table[path].iter().cloned()),
            None if builtin.lines().any(|l| l.ends_with(&file)) => {}
            None => return Err(kernel(format!("kernel {release} has no module {name}"))),
        }
    }
    Ok((release, wanted.into_iter().collect()))
}

/// Installs the kernel: the ELF `vmlinux` unpacked from an XZ bzImage when possible (it
/// boots faster under TCG), else the bzImage itself. Returns the format.
pub fn install_kernel(root: &Path, release: &str, dest: &Path, xz: &Path) -> Result<String, Error> {
    let image = root.join(format!("boot/vmlinuz-{release}"));
    let bytes = fs::read(&image).map_err(io("cannot read", &image))?;
    let magic = b"\xfd7zXZ\x00";
    if let Some(start) = bytes.windows(magic.len()).position(|w| w == magic) {
        let mut child = Command::new(xz)
            .args(["-dc", "--single-stream"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| Error::Start {
                what: "unpacking the kernel".to_owned(),
                program: xz.display().to_string(),
                source,
            })?;
        let mut stdin = child.stdin.take().expect("stdin was piped");
        let tail = bytes[start..].to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&tail));
        let output = child
            .wait_with_output()
            .map_err(io("cannot wait for", xz))?;
        let _ = writer.join();
        if output.stdout.starts_with(b"\x7fELF") {
            fs::write(dest, &output.stdout).map_err(io("cannot write", dest))?;
            return Ok("elf".to_owned());
        }
    }
    fs::write(dest, &bytes).map_err(io("cannot write", dest))?;
    // arm64's vmlinuz is a gzip-compressed `Image`, which QEMU unpacks itself.
    Ok(if bytes.starts_with(b"\x1f\x8b") {
        "image-gz"
    } else {
        "bzimage"
    }
    .to_owned())
}

/// Writes the initramfs: `/init` (the agent), `/dev/console`, and the modules.
pub fn write_initramfs(
    root: &Path,
    release: &str,
    modules: &[String],
    agent: &Path,
    dest: &Path,
) -> Result<(), Error> {
    let module_dir = root.join("usr/lib/modules").join(release);
    let mut cpio = Writer::new(Vec::new());
    let fail = |e: std::io::Error| io("cannot write the initramfs", dest)(e);
    let mut dirs: BTreeSet<String> = [
        "dev",
        "proc",
        "sys",
        "newroot",
        "overlay",
        "lib",
        "lib/modules",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let base = format!("lib/modules/{release}");
    for module in modules {
        let mut path = PathBuf::from(&base).join(module);
        while path.pop() && !path.as_os_str().is_empty() {
            dirs.insert(path.display().to_string());
        }
    }
    for dir in &dirs {
        cpio.entry(dir, Kind::Dir, 0o755, &[]).map_err(fail)?;
    }
    cpio.entry("dev/console", Kind::CharDevice(5, 1), 0o600, &[])
        .map_err(fail)?;
    let agent_bytes = fs::read(agent).map_err(io("cannot read", agent))?;
    cpio.entry("init", Kind::File, 0o755, &agent_bytes)
        .map_err(fail)?;
    let dep = fs::read_to_string(module_dir.join("modules.dep"))
        .map_err(|e| kernel(format!("modules.dep: {e}")))?;
    let subset: String = dep
        .lines()
        .filter(|line| {
            line.split_once(':')
                .is_some_and(|(path, _)| modules.iter().any(|m| m == path))
        })
        .map(|line| format!("{line}\n"))
        .collect();
    cpio.entry(
        &format!("{base}/modules.dep"),
        Kind::File,
        0o644,
        subset.as_bytes(),
    )
    .map_err(fail)?;
    let builtin = fs::read(module_dir.join("modules.builtin")).unwrap_or_default();
    cpio.entry(
        &format!("{base}/modules.builtin"),
        Kind::File,
        0o644,
        &builtin,
    )
    .map_err(fail)?;
    for module in modules {
        let data = fs::read(module_dir.join(module))
            .map_err(io("cannot read the module", &module_dir.join(module)))?;
        cpio.entry(&format!("{base}/{module}"), Kind::File, 0o644, &data)
            .map_err(fail)?;
    }
    let bytes = cpio.finish().map_err(fail)?;
    fs::write(dest, bytes).map_err(io("cannot write", dest))
}

/// Installed packages and versions from dpkg's status file.
pub fn installed_packages(status: &Path) -> BTreeMap<String, String> {
    let text = fs::read_to_string(status).unwrap_or_default();
    text.split("\n\n")
        .filter(|stanza| stanza.lines().any(|l| l == "Status: install ok installed"))
        .filter_map(|stanza| {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
            };
            Some((field("Package:")?, field("Version:")?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamically_linked_binaries_are_refused() {
        let arch = std::env::consts::ARCH;
        let error = require_static(Path::new("/bin/sh"), arch).expect_err("/bin/sh is dynamic");
        assert!(error.to_string().contains("not a static"), "{error}");
        let dir = tempfile::tempdir().expect("tempdir");
        let text = dir.path().join("script");
        fs::write(&text, "#!/bin/sh\n").expect("write");
        assert!(require_static(&text, arch).is_err());
    }

    /// A static executable whose header says `machine`: a 64-byte ELF header, no program
    /// headers.
    fn elf_for(machine: u16) -> Vec<u8> {
        let mut bytes = vec![0u8; 64];
        bytes[..6].copy_from_slice(b"\x7fELF\x02\x01");
        bytes[0x12..0x14].copy_from_slice(&machine.to_le_bytes());
        bytes
    }

    #[test]
    fn an_agent_for_another_architecture_is_refused_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let arm = dir.path().join("arm");
        fs::write(&arm, elf_for(0xb7)).expect("write");
        require_static(&arm, "aarch64").expect("an aarch64 agent for an aarch64 image");
        let error = require_static(&arm, "x86_64").expect_err("not for x86_64");
        assert!(error.to_string().contains("not for x86_64"), "{error}");
        let x86 = dir.path().join("x86");
        fs::write(&x86, elf_for(0x3e)).expect("write");
        require_static(&x86, "x86_64").expect("x86_64");
        assert!(require_static(&x86, "aarch64").is_err());
    }

    #[test]
    fn module_closure_comes_from_modules_dep() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("usr/lib/modules/6.1.0-9-amd64");
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(
            dir.join("modules.dep"),
            "kernel/drivers/virtio/virtio_mmio.ko:\nkernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko\n\
             kernel/drivers/virtio/virtio_pci_modern_dev.ko:\nkernel/drivers/block/virtio_blk.ko:\n\
             kernel/fs/squashfs/squashfs.ko:\nkernel/fs/erofs/erofs.ko: kernel/lib/libcrc32c.ko\n\
             kernel/lib/libcrc32c.ko:\nkernel/crypto/crc32c_generic.ko:\nkernel/fs/overlayfs/overlay.ko:\n\
             kernel/fs/9p/9p.ko:\n",
        )
        .expect("dep");
        let (release, modules) = initramfs_modules(root.path()).expect("modules");
        assert_eq!(release, "6.1.0-9-amd64");
        assert!(modules.contains(&"kernel/drivers/virtio/virtio_pci_modern_dev.ko".to_owned()));
        assert!(!modules.iter().any(|m| m.contains("9p")));
        assert!(modules.contains(&"kernel/crypto/crc32c_generic.ko".to_owned()));
        assert_eq!(modules.len(), 9);
    }

    #[test]
    fn dpkg_status_gives_installed_versions_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = dir.path().join("status");
        fs::write(
            &status,
            "Package: git\nStatus: install ok installed\nVersion: 1:2.39.5-0+deb12u2\n\n\
             Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n",
        )
        .expect("write");
        let packages = installed_packages(&status);
        assert_eq!(packages.len(), 1);
        assert_eq!(packages["git"], "1:2.39.5-0+deb12u2");
    }
}
