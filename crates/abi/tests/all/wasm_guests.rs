//! Reads real SDK guests (built once by `cargo xtask build-examples`, found through
//! `helios_plugin_test_support`) back with `helios_plugin_artefact::ModuleInfo`, the way `helios-plugin inspect` and the host's loader do:
//! only host imports, the allocator exported once from the SDK rlib, every hook exported, and the
//! `helios.plugin` entries of several hooks concatenated into one declaration.

use helios_plugin_abi::schema::{Hook, abi};
use helios_plugin_artefact::ModuleInfo;

fn module(crate_name: &str) -> (ModuleInfo, usize) {
    let bytes = helios_plugin_test_support::guest(crate_name);
    let path = helios_plugin_test_support::guest_path(crate_name);
    (ModuleInfo::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display())), bytes.len())
}

fn assert_sdk_surface(info: &ModuleInfo) {
    assert!(info.foreign_imports().is_empty(), "imports outside env/chio: {:?}", info.foreign_imports());
    assert!(info.imports.iter().all(|i| i.module == abi::ENV_MODULE || i.module == abi::CHIO_MODULE));
    assert!(info.exports.iter().any(|e| e.name == abi::MEMORY && e.kind == "memory"));
    for f in [abi::ALLOC, abi::DEALLOC, abi::CHIO_ALLOC, abi::CHIO_FREE] {
        assert!(info.exports_func(f), "missing export {f}: {:?}", info.exports);
    }
    assert_eq!(info.sdk.as_deref(), Some(env!("CARGO_PKG_VERSION")));
}

#[test]
fn a_guest_with_a_guard_and_three_hooks_declares_and_exports_all_of_them() {
    let (info, size) = module("guest_misbehave");
    assert_sdk_surface(&info);
    let hooks = vec![Hook::PreQuery, Hook::Route, Hook::PostQuery];
    for h in &hooks {
        assert!(info.exports_func(h.export_name()), "missing export {h}");
    }
    let mut declared = info.declared_hooks.clone();
    declared.sort();
    let mut expected = hooks.clone();
    expected.sort();
    assert_eq!(declared, expected);
    assert_eq!(info.exported_hooks().len(), 3);
    assert!(info.declared_guard && info.is_guard() && info.exports_func(abi::CHIO_DENY_REASON));
    eprintln!("guest_misbehave.wasm: {size} bytes");
}

#[test]
fn the_tool_denylist_guard_is_a_guard_and_serves_no_hook() {
    let (info, size) = module("tool_denylist");
    assert_sdk_surface(&info);
    assert!(info.declared_guard && info.is_guard() && info.exports_func(abi::CHIO_DENY_REASON));
    assert!(info.declared_hooks.is_empty() && info.exported_hooks().is_empty());
    // Only the imports the guard uses are linked in.
    let names: Vec<_> = info.imports.iter().map(|i| format!("{}.{}", i.module, i.name)).collect();
    assert_eq!(names.iter().filter(|n| n.starts_with("chio.")).count(), names.len(), "{names:?}");
    eprintln!("tool_denylist.wasm: {size} bytes");
}

#[test]
fn every_hook_of_the_catalogue_is_exported_and_declared_from_one_crate() {
    let (info, size) = module("guest_every_hook");
    assert_sdk_surface(&info);
    let mut declared = info.declared_hooks.clone();
    declared.sort();
    assert_eq!(declared, Hook::ALL.to_vec());
    assert_eq!(info.exported_hooks(), Hook::ALL.to_vec());
    assert!(!info.declared_guard && !info.is_guard());
    // Twelve hooks, one crate: the module names its crate once, so `sign` needs no flags.
    assert_eq!(info.declared_name.as_deref(), Some("guest-every-hook"));
    assert_eq!(info.declared_version.as_deref(), Some("0.1.0"));
    eprintln!("guest_every_hook.wasm: {size} bytes");
}
