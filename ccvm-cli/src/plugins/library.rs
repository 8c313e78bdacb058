//! Loading a plugin shared library through the abi_stable envelope (D1).
//!
//! Libraries are loaded once, before anything else runs, and never unloaded. Loading a
//! library runs its initialisers, which is why the directory and file permission checks in
//! the parent module come first.

use std::path::Path;

use abi_stable::library::lib_header_from_path;
use abi_stable::std_types::{RResult, RStr};
use ccvm_plugin_api::abi::{PluginModuleRef, RawPlugin, decode_error};
use ccvm_plugin_api::{ErrorClass, Manifest, PluginError};

/// A loaded library seen through the JSON protocol.
pub struct LibraryPlugin {
    module: PluginModuleRef,
    manifest: Manifest,
}

impl std::fmt::Debug for LibraryPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibraryPlugin")
            .field("manifest", &self.manifest)
            .finish_non_exhaustive()
    }
}

impl RawPlugin for LibraryPlugin {
    fn manifest(&self) -> Manifest {
        self.manifest.clone()
    }

    fn call(&self, method: &str, payload: &str) -> Result<String, PluginError> {
        match (self.module.call())(RStr::from_str(method), RStr::from_str(payload)) {
            RResult::ROk(json) => Ok(json.into_string()),
            RResult::RErr(json) => Err(decode_error(json.as_str())),
        }
    }
}

/// The first line of an abi_stable error: its layout reports run to many lines.
fn first_line(error: &dyn std::fmt::Display) -> String {
    let text = error.to_string();
    text.lines().next().unwrap_or_default().trim().to_owned()
}

/// Loads `path` and reads its manifest. The manifest is *not* checked here.
pub fn load(path: &Path) -> Result<LibraryPlugin, String> {
    let header = lib_header_from_path(path)
        .map_err(|e| format!("it is not a ccvm plugin library ({})", first_line(&e)))?;
    let module = header.init_root_module::<PluginModuleRef>().map_err(|e| {
        format!(
            "its binary interface does not match this ccvm's ({}); rebuild it against \
                 ccvm-plugin-api {}",
            first_line(&e),
            ccvm_plugin_api::API_VERSION
        )
    })?;
    let manifest = match (module.manifest())() {
        RResult::ROk(json) => serde_json::from_str::<Manifest>(json.as_str())
            .map_err(|e| format!("its manifest is malformed ({e})"))?,
        RResult::RErr(json) => {
            let error = decode_error(json.as_str());
            return Err(match error.class {
                ErrorClass::Panic => format!("it panicked while describing itself ({error})"),
                _ => format!("it failed to describe itself ({error})"),
            });
        }
    };
    Ok(LibraryPlugin { module, manifest })
}
