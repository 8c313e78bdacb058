//! Kernel modules the guest agent loads, so the image builder knows what the initramfs must
//! carry (the rest load from the root image once it is mounted).

use crate::cmdline::VirtioTransport;
use crate::machine::ShareTransport;

/// Root image formats the guest agent recognises (by superblock) and mounts.
pub const ROOT_FILESYSTEMS: [&str; 2] = ["squashfs", "erofs"];

/// Every module the initramfs must hold: either virtio transport, the block driver, every
/// root filesystem and the overlay (plus their dependencies, which the builder adds).
pub const INITRAMFS: [&str; 7] = [
    "virtio_mmio",
    "virtio_pci",
    "virtio_blk",
    "squashfs",
    "erofs",
    "crc32c_generic",
    "overlay",
];

/// What mounting a root filesystem of type `fstype` needs, in load order. Debian's erofs
/// depends on `libcrc32c`, which asks the crypto API for a crc32c at load time; without
/// modprobe in the initramfs nothing would load one, so the generic one comes first.
pub fn root_filesystem(fstype: &str) -> Vec<&str> {
    match fstype {
        "erofs" => vec!["crc32c_generic", "erofs"],
        other => vec![other],
    }
}

/// What reaches the root disk with this transport.
pub fn root_disk(virtio: VirtioTransport) -> [&'static str; 2] {
    [virtio.module(), "virtio_blk"]
}

/// The share transport's modules, loaded from the root image.
pub fn shares(transport: ShareTransport) -> &'static [&'static str] {
    match transport {
        ShareTransport::NineP => &["9pnet_virtio", "9p"],
        ShareTransport::VirtioFs => &["virtiofs"],
    }
}

/// The encrypted scratch disk: device-mapper crypt, its cipher mode and the file system.
pub const SCRATCH: [&str; 3] = ["dm_crypt", "xts", "ext4"];
/// Faster implementations the scratch disk uses when the kernel has them (an x86 AES-NI
/// cipher, a crc32c for ext4's checksums); absent ones are skipped.
pub const SCRATCH_OPTIONAL: [&str; 3] = ["aesni_intel", "crc32c_intel", "crc32c_generic"];

/// The network and entropy devices, loaded from the root image.
pub const DEVICES: [&str; 2] = ["virtio_net", "virtio_rng"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initramfs_holds_everything_needed_before_the_root_is_mounted() {
        for virtio in [VirtioTransport::Mmio, VirtioTransport::Pci] {
            for module in root_disk(virtio) {
                assert!(INITRAMFS.contains(&module), "{module}");
            }
        }
        for fs in ROOT_FILESYSTEMS {
            for module in root_filesystem(fs) {
                assert!(INITRAMFS.contains(&module), "{fs}: {module}");
            }
        }
        assert!(INITRAMFS.contains(&"overlay"));
    }
}
