//! The plugins linked into the `ccvm` binary. Backends are behind cargo features so a
//! distribution can ship them as separate libraries instead; policies are always linked.

use std::sync::Arc;

use ccvm_plugin_api::abi::{PolicyAdapter, RawPlugin};

/// Every built-in plugin, backends first.
// One push per entry because the backends are feature-gated.
#[allow(unused_mut, clippy::vec_init_then_push)]
pub fn all() -> Vec<Arc<dyn RawPlugin>> {
    let mut plugins: Vec<Arc<dyn RawPlugin>> = Vec::new();
    #[cfg(feature = "backend-microvm")]
    plugins.push(Arc::new(ccvm_plugin_api::abi::BackendAdapter(
        ccvm_backend_microvm::Microvm,
    )));
    #[cfg(feature = "backend-q35")]
    plugins.push(Arc::new(ccvm_plugin_api::abi::BackendAdapter(
        ccvm_backend_q35::Q35,
    )));
    #[cfg(feature = "backend-virt")]
    plugins.push(Arc::new(ccvm_plugin_api::abi::BackendAdapter(
        ccvm_backend_virt::Virt,
    )));
    #[cfg(feature = "backend-cloud-hypervisor")]
    plugins.push(Arc::new(ccvm_plugin_api::abi::BackendAdapter(
        ccvm_backend_cloud_hypervisor::CloudHypervisor,
    )));
    plugins.push(Arc::new(PolicyAdapter(
        ccvm_policy_share_staging::ShareStaging,
    )));
    plugins.push(Arc::new(PolicyAdapter(ccvm_policy_egress::Egress)));
    plugins.push(Arc::new(PolicyAdapter(ccvm_policy_clipboard::Clipboard)));
    plugins
}
