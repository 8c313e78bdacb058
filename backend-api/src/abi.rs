//! The binary envelope: one `abi_stable` prefix-type root module carrying JSON.
//!
//! Plugin authors use [`export_plugin!`](crate::export_plugin) and never touch this module.
//! The host uses [`PluginModuleRef`] to call a loaded library and [`RawPlugin`] to treat
//! built-ins and libraries alike.
// The StableAbi derive expands to impls inside constants.
#![allow(non_local_definitions)]

use std::panic::{AssertUnwindSafe, catch_unwind};

use abi_stable::library::{CheckTypeLayout, LibHeader, RootModule, RootModuleResult};
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RResult, RStr, RString};
use abi_stable::{StableAbi, declare_root_module_statics};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{
    Backend, BackendPlanRequest, ENVELOPE_VERSION, ErrorClass, MANIFEST_MAGIC, Manifest,
    PluginError, PluginKind, Policy, PolicyInput, PolicyPlanRequest, VmSpec, method,
};

pub use abi_stable::library::LibHeader as PluginLibHeader;

/// The root module every ccvm plugin library exports.
#[repr(C)]
#[derive(Debug, StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    /// The plugin's [`Manifest`] as JSON, or a [`PluginError`] as JSON.
    pub manifest: extern "C" fn() -> RResult<RString, RString>,
    /// `call(method, payload)`: JSON in, JSON out; errors are [`PluginError`] JSON.
    #[sabi(last_prefix_field)]
    pub call: extern "C" fn(RStr<'_>, RStr<'_>) -> RResult<RString, RString>,
}

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "ccvm_plugin";
    const NAME: &'static str = "ccvm_plugin";
    // The envelope version, not the crate version: abi_stable's own rule for 0.x versions
    // would demand plugin >= host, the opposite of ours. API compatibility is checked on
    // the manifest's `api_version` instead.
    const VERSION_STRINGS: VersionStrings = VersionStrings::new(ENVELOPE_VERSION);
}

/// The symbol abi_stable 0.11 looks up in a library; `export_plugin!` exports it.
pub const LIB_HEADER_SYMBOL: &str = "_1as_0lib_1header_0root_bmodule_bloader";

/// A plugin seen as JSON in, JSON out: what both the export macro and the host's
/// built-in registry use, so a built-in and a loaded library answer identically.
pub trait RawPlugin: Send + Sync {
    /// The manifest.
    fn manifest(&self) -> Manifest;
    /// One call of the JSON protocol.
    fn call(&self, method: &str, payload: &str) -> Result<String, PluginError>;
}

/// Adapts a [`Backend`] to the JSON protocol.
#[derive(Debug, Default)]
pub struct BackendAdapter<B>(pub B);

/// Adapts a [`Policy`] to the JSON protocol.
#[derive(Debug, Default)]
pub struct PolicyAdapter<P>(pub P);

fn manifest_for(kind: PluginKind, name: &str, version: &str, description: &str) -> Manifest {
    Manifest {
        magic: MANIFEST_MAGIC.to_owned(),
        kind: kind.as_str().to_owned(),
        name: name.to_owned(),
        version: version.to_owned(),
        api_version: crate::API_VERSION.to_owned(),
        description: description.to_owned(),
    }
}

fn decode<T: DeserializeOwned>(method: &str, payload: &str) -> Result<T, PluginError> {
    serde_json::from_str(payload)
        .map_err(|e| PluginError::protocol(format!("malformed `{method}` payload: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<String, PluginError> {
    serde_json::to_string(value)
        .map_err(|e| PluginError::protocol(format!("cannot encode answer: {e}")))
}

fn unknown_method(method: &str) -> PluginError {
    PluginError::protocol(format!("unknown method `{method}`"))
}

impl<B: Backend> RawPlugin for BackendAdapter<B> {
    fn manifest(&self) -> Manifest {
        manifest_for(PluginKind::Backend, B::NAME, B::VERSION, B::DESCRIPTION)
    }

    fn call(&self, method: &str, payload: &str) -> Result<String, PluginError> {
        match method {
            method::CAPABILITIES => encode(&self.0.capabilities()),
            method::REQUIREMENTS => {
                encode(&self.0.requirements(&decode::<VmSpec>(method, payload)?)?)
            }
            method::PLAN => {
                let req: BackendPlanRequest = decode(method, payload)?;
                encode(&self.0.plan(&req.spec, &req.facts)?)
            }
            other => Err(unknown_method(other)),
        }
    }
}

impl<P: Policy> RawPlugin for PolicyAdapter<P> {
    fn manifest(&self) -> Manifest {
        manifest_for(PluginKind::Policy, P::NAME, P::VERSION, P::DESCRIPTION)
    }

    fn call(&self, method: &str, payload: &str) -> Result<String, PluginError> {
        match method {
            method::REQUIREMENTS => encode(
                &self
                    .0
                    .requirements(&decode::<PolicyInput>(method, payload)?)?,
            ),
            method::PLAN => {
                let req: PolicyPlanRequest = decode(method, payload)?;
                encode(&self.0.plan(&req.input, &req.facts)?)
            }
            other => Err(unknown_method(other)),
        }
    }
}

/// Runs `f`, turning a panic into a [`PluginError`] of class [`ErrorClass::Panic`].
pub fn guarded<T>(f: impl FnOnce() -> Result<T, PluginError>) -> Result<T, PluginError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let detail = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_owned());
            Err(PluginError {
                class: ErrorClass::Panic,
                message: format!("the plugin panicked: {detail}"),
            })
        }
    }
}

fn error_json(error: &PluginError) -> RString {
    // A PluginError always serializes; the fallback keeps the boundary panic-free anyway.
    RString::from(serde_json::to_string(error).unwrap_or_else(|_| {
        r#"{"class":"protocol","message":"unencodable plugin error"}"#.to_owned()
    }))
}

fn to_rresult(result: Result<String, PluginError>) -> RResult<RString, RString> {
    match result {
        Ok(json) => RResult::ROk(RString::from(json)),
        Err(error) => RResult::RErr(error_json(&error)),
    }
}

extern "C" fn manifest_fn<E: RawPlugin + Default>() -> RResult<RString, RString> {
    to_rresult(guarded(|| encode(&E::default().manifest())))
}

extern "C" fn call_fn<E: RawPlugin + Default>(
    method: RStr<'_>,
    payload: RStr<'_>,
) -> RResult<RString, RString> {
    to_rresult(guarded(|| {
        E::default().call(method.as_str(), payload.as_str())
    }))
}

fn root_module<E: RawPlugin + Default + 'static>() -> PluginModuleRef {
    PluginModule {
        manifest: manifest_fn::<E>,
        call: call_fn::<E>,
    }
    .leak_into_prefix()
}

extern "C" fn constructor<E: RawPlugin + Default + 'static>() -> RootModuleResult {
    abi_stable::library::__call_root_module_loader(root_module::<E>)
}

/// The library header [`export_plugin!`](crate::export_plugin) places in a plugin's `cdylib`.
pub const fn lib_header<E: RawPlugin + Default + 'static>() -> LibHeader {
    #[allow(unsafe_code)]
    // SAFETY: `constructor::<E>` returns the `PluginModuleRef` built by `root_module::<E>`,
    // erased by abi_stable's own loader helper, which is what `from_constructor` requires
    // for the module type `PluginModuleRef`.
    unsafe {
        LibHeader::from_constructor::<PluginModuleRef>(constructor::<E>, CheckTypeLayout::Yes)
    }
}

/// Decodes the error half of an envelope call.
pub fn decode_error(json: &str) -> PluginError {
    serde_json::from_str(json).unwrap_or_else(|_| PluginError {
        class: ErrorClass::Protocol,
        message: format!("unreadable error from plugin: {json}"),
    })
}

/// Exports a plugin from a `cdylib` crate.
///
/// ```text
/// #[derive(Default)]
/// pub struct Motd;
/// impl ccvm_plugin_api::Policy for Motd { /* … */ }
/// ccvm_plugin_api::export_plugin!(policy: Motd);
/// ```
///
/// `backend: T` and `policy: T` export a [`Backend`] / [`Policy`]; `raw: T` exports a
/// [`RawPlugin`] as is (for plugins that write their own manifest). Every call is wrapped in
/// `catch_unwind`, so the crate must be built with `panic = "unwind"` (checked at compile time).
#[macro_export]
macro_rules! export_plugin {
    (backend: $ty:ty) => {
        $crate::__export_raw!($crate::abi::BackendAdapter<$ty>);
    };
    (policy: $ty:ty) => {
        $crate::__export_raw!($crate::abi::PolicyAdapter<$ty>);
    };
    (raw: $ty:ty) => {
        $crate::__export_raw!($ty);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_raw {
    ($ty:ty) => {
        #[cfg(panic = "abort")]
        compile_error!(
            "ccvm plugins catch panics at the library boundary: build with panic = \"unwind\""
        );

        #[doc(hidden)]
        #[allow(unsafe_code)]
        // SAFETY: this is the one symbol abi_stable's loader looks up; the header it names is
        // built by `lib_header`, whose layout abi_stable checks on load.
        #[unsafe(export_name = "_1as_0lib_1header_0root_bmodule_bloader")]
        pub static CCVM_PLUGIN_LIB_HEADER: $crate::abi::PluginLibHeader =
            $crate::abi::lib_header::<$ty>();
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exported_symbol_matches_abi_stable() {
        assert_eq!(
            LIB_HEADER_SYMBOL,
            abi_stable::library::ROOT_MODULE_LOADER_NAME
        );
    }

    #[test]
    fn guarded_panic_becomes_error() {
        let result: Result<(), _> = guarded(|| panic!("boom"));
        let error = result.expect_err("a panic is an error");
        assert_eq!(error.class, ErrorClass::Panic);
        assert!(error.message.contains("boom"), "{}", error.message);
    }

    #[test]
    fn decode_error_keeps_class_and_message() {
        let json = error_json(&PluginError::invalid("no tcg"));
        let error = decode_error(json.as_str());
        assert_eq!(error, PluginError::invalid("no tcg"));
    }
}
