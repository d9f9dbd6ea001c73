//! The component build of a `#[chio_guard]` (feature `component`, wasm32 only): wit-bindgen's
//! bindings of `chio:guard/guard@0.2.0` (wit/) and the glue the macro's component expansion calls.
//! Not a public API: the macro refers to it by absolute path.

wit_bindgen::generate!({
    world: "guard",
    path: "../../wit",
    pub_export_macro: true,
    export_macro_name: "export_guard",
    default_bindings_module: "::helios_plugin_abi::component",
    runtime_path: "::helios_plugin_abi::component::__rt",
});

#[doc(hidden)]
pub use wit_bindgen::rt as __rt;

pub use chio::guard::types::{GuardRequest as WitGuardRequest, Verdict as WitVerdict};

/// Runs the guard function `f` on a request of the world: the same `GuardRequest` the core build
/// decodes from JSON (`arguments` parsed from its JSON text), the same verdict.
pub fn run_guard(request: WitGuardRequest, f: impl FnOnce(crate::GuardRequest) -> crate::GuardVerdict) -> WitVerdict {
    crate::__private::init();
    let arguments = match serde_json::from_str(&request.arguments) {
        Ok(v) => v,
        Err(e) => panic!("guard evaluate: arguments are not JSON: {e}"),
    };
    let req = crate::GuardRequest {
        tool_name: request.tool_name,
        server_id: request.server_id,
        agent_id: request.agent_id,
        arguments,
        scopes: request.scopes,
        action_type: request.action_type,
        extracted_path: request.extracted_path,
        extracted_target: request.extracted_target,
        matched_grant_index: request.matched_grant_index.map(u64::from),
        filesystem_roots: request.filesystem_roots,
    };
    match f(req) {
        crate::GuardVerdict::Allow => WitVerdict::Allow,
        crate::GuardVerdict::Deny { reason } => WitVerdict::Deny(reason),
    }
}

/// Expands to its `component` block in a component build, else to its `core` block.
#[doc(hidden)]
#[macro_export]
macro_rules! __helios_guard_exports {
    (core: { $($core:tt)* } component: { $($component:tt)* }) => { $($component)* };
}
