//! The `Egress` policy as a shared library that ccvm loads from its plugin directories.
//! All logic lives in `ccvm_policy_egress`; this crate only exports it.

ccvm_plugin_api::export_plugin!(policy: ccvm_policy_egress::Egress);
