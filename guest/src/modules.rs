//! Loading kernel modules with their dependencies from `modules.dep`, without kmod.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::kmod::{ModuleInitFlags, finit_module};

/// `modules.dep`: module name → (path, dependency paths), paths relative to the module dir.
#[derive(Debug, Default)]
pub struct DepTable {
    entries: BTreeMap<String, (String, Vec<String>)>,
}

/// `kernel/fs/9p/9p.ko` → `9p`; `-` and `_` are the same in module names.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

impl DepTable {
    pub fn parse(text: &str) -> DepTable {
        let mut entries = BTreeMap::new();
        for line in text.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let deps = deps.split_whitespace().map(str::to_owned).collect();
            entries.insert(module_name(path), (path.to_owned(), deps));
        }
        DepTable { entries }
    }

    /// Paths to load for `names`, dependencies first, each once. Unknown names are returned
    /// separately (built into the kernel, or absent).
    pub fn load_order(&self, names: &[&str]) -> (Vec<String>, Vec<String>) {
        let mut order: Vec<String> = Vec::new();
        let mut unknown = Vec::new();
        for name in names {
            let key = name.replace('-', "_");
            match self.entries.get(&key) {
                Some((path, deps)) => {
                    // modules.dep lists the full closure, deepest last: load in reverse.
                    for dep in deps.iter().rev().chain(std::iter::once(path)) {
                        if !order.contains(dep) {
                            order.push(dep.clone());
                        }
                    }
                }
                None => unknown.push((*name).to_owned()),
            }
        }
        (order, unknown)
    }
}

/// The module directory of the running kernel under `root`.
pub fn module_dir(root: &Path) -> PathBuf {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    root.join("lib/modules").join(release)
}

/// Loads `names` (and dependencies) from `dir`. Modules already loaded or built in are fine.
pub fn load(dir: &Path, names: &[&str]) -> Result<(), String> {
    let dep = std::fs::read_to_string(dir.join("modules.dep"))
        .map_err(|e| format!("cannot read {}/modules.dep: {e}", dir.display()))?;
    let builtin = std::fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
    let builtin: Vec<String> = builtin.lines().map(module_name).collect();
    let (order, unknown) = DepTable::parse(&dep).load_order(names);
    if let Some(missing) = unknown
        .iter()
        .find(|n| !builtin.contains(&n.replace('-', "_")))
    {
        return Err(format!(
            "kernel module {missing} is neither in modules.dep nor built in"
        ));
    }
    for path in order {
        let file =
            File::open(dir.join(&path)).map_err(|e| format!("cannot open module {path}: {e}"))?;
        match finit_module(&file, c"", ModuleInitFlags::empty()) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(format!("cannot load module {path}: {e}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/netfs/netfs.ko kernel/fs/fscache/fscache.ko
kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko
kernel/net/9p/9pnet.ko:
kernel/drivers/block/virtio_blk.ko:
kernel/fs/netfs/netfs.ko: kernel/fs/fscache/fscache.ko
kernel/fs/fscache/fscache.ko:
";

    #[test]
    fn dependencies_load_first_and_once() {
        let (order, unknown) =
            DepTable::parse(DEP).load_order(&["9pnet_virtio", "9p", "virtio_blk", "virtio-pci"]);
        assert_eq!(
            order,
            [
                "kernel/net/9p/9pnet.ko",
                "kernel/net/9p/9pnet_virtio.ko",
                "kernel/fs/fscache/fscache.ko",
                "kernel/fs/netfs/netfs.ko",
                "kernel/fs/9p/9p.ko",
                "kernel/drivers/block/virtio_blk.ko",
            ]
        );
        assert_eq!(unknown, ["virtio-pci"]);
    }

    #[test]
    fn names_normalise_dashes_and_compression_suffixes() {
        assert_eq!(
            module_name("kernel/drivers/virtio/virtio_mmio.ko.xz"),
            "virtio_mmio"
        );
        assert_eq!(module_name("a/dm-crypt.ko"), "dm_crypt");
    }
}
