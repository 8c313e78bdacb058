//! The stable plugin interface of ccvm.
//!
//! A ccvm plugin is either a **backend** (one hypervisor / machine type: turns a [`VmSpec`]
//! into the exact hypervisor command line) or a **policy** (egress, clipboard, share staging,
//! or anything a third party writes: contributes seed files, guest setup steps, ssh options,
//! host services and context text). Both are *pure*: they never spawn, resolve, read the host
//! filesystem or touch the network. They speak in two phases:
//!
//! 1. `requirements(input)` → [`Requirements`]: programs, names to resolve, files to read;
//! 2. the host gathers those [`HostFacts`];
//! 3. `plan(input, facts)` → [`BackendPlan`] / [`PolicyPlan`], plain data that
//!    `ccvm --ccvm-plan` prints and the launcher carries out.
//!
//! Write a plugin by implementing [`Backend`] or [`Policy`] and exporting it from a
//! `cdylib` crate with [`export_plugin!`]; the same type can also be linked into `ccvm`
//! as a built-in. This crate is all a plugin needs to depend on.
//!
//! # Compatibility rule
//!
//! Every plugin declares the [`API_VERSION`] it was built against. `ccvm` loads it only when
//! that version is *caret-compatible* with its own: same major version (same minor while the
//! major is 0) and the host's version is not older than the plugin's. A plugin built against
//! 0.1.0 therefore loads into a ccvm providing 0.1.7, but not into 0.1.0-era hosts if it was
//! built against 0.1.7, and never into 0.2.x. Within a compatible range the interface only
//! grows: wire types accept unknown fields, new fields carry `#[serde(default)]`, new methods
//! get a default answer in the host. Anything else bumps the minor (0.x) or major version.
//!
//! Below the JSON sits an `abi_stable` envelope (one prefix-type root module, two functions:
//! `manifest` and `call`). Its layout is checked when a library is loaded; it changes only
//! with a new envelope version, [`ENVELOPE_VERSION`].
//!
//! This crate does no I/O.

#[cfg(feature = "abi")]
pub mod abi;
pub mod testing;
mod wire;

pub use wire::*;

/// The whole guest contract (kernel command-line keys, markers, guest paths, modules).
pub use ccvm_guest_protocol as guest;
/// The host↔guest contract the plans are made of (setup steps, shares, network, the seed),
/// re-exported so a plugin depends on this crate alone.
pub use ccvm_guest_protocol::{
    AllowRule, FirewallRules, GuestOwner, NetworkAttachment, PlannedShare, SetupStep,
    ShareTransport, clipboard, seed,
};

/// Re-exported so plugins can read their `settings` without depending on it themselves.
pub use serde_json;

use serde::{Deserialize, Serialize};

/// The plugin API version this crate defines (see the compatibility rule above).
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Version of the binary envelope below the JSON (abi_stable root module layout).
pub const ENVELOPE_VERSION: &str = "1.0.0";

/// The magic string every manifest carries, so ccvm can tell its plugins from other libraries.
pub const MANIFEST_MAGIC: &str = "ccvm-plugin";

/// What a plugin says about itself; checked by the host before any other call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_MAGIC`].
    pub magic: String,
    /// `backend` or `policy`; a string so that an unknown kind is reported, not misparsed.
    pub kind: String,
    /// Lower-case name users type (`microvm`, `egress`): `[a-z0-9][a-z0-9-]*`.
    pub name: String,
    /// The plugin's own version.
    pub version: String,
    /// The [`API_VERSION`] the plugin was built against.
    pub api_version: String,
    #[serde(default)]
    pub description: String,
}

/// How a plugin call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorClass {
    /// The request cannot be satisfied as configured (bad setting, missing capability):
    /// the user fixes their configuration.
    Invalid,
    /// Something the plugin needed is missing or failed at run time.
    Failed,
    /// The plugin panicked; the panic was caught at the boundary.
    Panic,
    /// The host and plugin did not understand each other (malformed JSON, unknown method).
    Protocol,
}

/// An error returned by a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginError {
    pub class: ErrorClass,
    pub message: String,
}

impl PluginError {
    /// The user's request cannot be satisfied; the message says what to change.
    pub fn invalid(message: impl Into<String>) -> Self {
        PluginError {
            class: ErrorClass::Invalid,
            message: message.into(),
        }
    }

    /// Something failed at run time.
    pub fn failed(message: impl Into<String>) -> Self {
        PluginError {
            class: ErrorClass::Failed,
            message: message.into(),
        }
    }

    #[cfg(feature = "abi")]
    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        PluginError {
            class: ErrorClass::Protocol,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PluginError {}

/// A backend: one hypervisor and machine type.
pub trait Backend: Default + Send + Sync + 'static {
    /// The name users pass to `--backend`.
    const NAME: &'static str;
    /// The plugin's own version.
    const VERSION: &'static str;
    const DESCRIPTION: &'static str;

    /// What this backend can do; asked before planning.
    fn capabilities(&self) -> Capabilities;

    /// What the host must find out before [`Backend::plan`].
    fn requirements(&self, spec: &VmSpec) -> Result<Requirements, PluginError>;

    /// The exact processes to start for `spec`.
    fn plan(&self, spec: &VmSpec, facts: &HostFacts) -> Result<BackendPlan, PluginError>;
}

/// A policy: contributes to what the guest receives and how the session runs.
pub trait Policy: Default + Send + Sync + 'static {
    /// The name shown in `ccvm --ccvm-plugins` and used for `[plugins.<name>]` settings.
    const NAME: &'static str;
    const VERSION: &'static str;
    const DESCRIPTION: &'static str;

    /// What the host must find out before [`Policy::plan`].
    fn requirements(&self, input: &PolicyInput) -> Result<Requirements, PluginError>;

    /// This policy's contribution to the launch.
    fn plan(&self, input: &PolicyInput, facts: &HostFacts) -> Result<PolicyPlan, PluginError>;
}

/// Payload of the `plan` call of a backend.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackendPlanRequest {
    pub spec: VmSpec,
    pub facts: HostFacts,
}

/// Payload of the `plan` call of a policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyPlanRequest {
    pub input: PolicyInput,
    pub facts: HostFacts,
}

/// Method names of the JSON protocol.
pub mod method {
    pub const CAPABILITIES: &str = "capabilities";
    pub const REQUIREMENTS: &str = "requirements";
    pub const PLAN: &str = "plan";
}
