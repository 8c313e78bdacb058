//! The `Virt` backend as a shared library that ccvm loads from its plugin directories
//! (what a distribution ships as a separate package). All logic lives in `ccvm_backend_virt`;
//! this crate only exports it.

ccvm_plugin_api::export_plugin!(backend: ccvm_backend_virt::Virt);
