//! One chain mixing WASM and Starlark plugins in config order, through curl and a real upstream;
//! both backends are plugins of the host (one policy, one set of counters); `.wasm` plugins are
//! verified (signature, blocklist) before they load. Needs the guests built
//! (`cargo xtask build-examples`; `cargo xtask test` does it first).

use std::path::{Path, PathBuf};

use crate::support::*;
use serde_json::{Value, json};

/// Signs `module` (copied to `dir/name`) with a fresh key trusted in `dir/trusted`, as
/// `helios-plugin sign` does: a `<name>.sig` sidecar binding the bytes to `http-header-wasm` 1.0.0.
fn signed_copy(dir: &Path, name: &str) -> PathBuf {
    use helios_plugin_artefact::{keys, signing};
    let key = keys::generate_signing_key().unwrap();
    std::fs::create_dir_all(dir.join("trusted")).unwrap();
    std::fs::write(dir.join("trusted/ops.pub"), keys::public_key_base64(&key.verifying_key())).unwrap();
    let wasm = std::fs::read(wasm_module()).unwrap();
    let dest = dir.join(name);
    std::fs::write(&dest, &wasm).unwrap();
    let sidecar = signing::sign_module(&key, &wasm, "http-header-wasm", "1.0.0");
    std::fs::write(dir.join(format!("{name}.sig")), signing::sidecar_bytes(&sidecar)).unwrap();
    dest
}

fn build(config: &Path) -> Result<helios_http_proxy::Chain, String> {
    let cfg = helios_http_proxy::Config::load(config)?;
    let services = helios_http_proxy::services(&cfg).unwrap();
    helios_http_proxy::build_chain(&cfg, &services)
}

fn wasm_module() -> PathBuf {
    let p = helios_plugin_test_support::guest_path("http-header-wasm");
    assert!(p.exists(), "{} is missing: run `cargo xtask build-examples` first", p.display());
    p
}

const FIRST: &str = r#"
def h(msg, ctx):
    msg["headers"]["x-order"] = "star1"
register_hook("http", "on_request", h)
"#;
const LAST: &str = r#"
def h(msg, ctx):
    # Sees what the WASM plugin before it wrote.
    msg["headers"]["x-order"] = msg["headers"]["x-order"] + ",star2(" + msg["headers"]["x-tenant"] + ")"
def resp(msg, ctx):
    msg["headers"]["x-star-saw"] = msg["headers"].get("x-wasm-seen-status", "nothing")
register_hook("http", "on_request", h)
register_hook("http", "on_response", resp)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_and_starlark_in_one_chain_in_config_order() {
    let up = upstream().await;
    let s = Setup::new(&[("first.star", FIRST), ("last.star", LAST)]);
    signed_copy(&s.path(""), "header.wasm");
    let plugins = json!([
        {"path": "first.star"},
        {"path": "header.wasm", "vars": {"header": "x-tenant", "value": "acme"}},
        {"path": "last.star"}
    ]);
    let proxy = start(&s.config(up, plugins, json!({"verify_with": "trusted"}))).await;
    let (_, out) = curl(&["-i", &format!("http://{}/mixed", proxy.addr)]).await;
    let (status, headers, body) = parse_http(&out);
    assert_eq!(status, 200, "{out}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["headers"]["x-order"], "star1,wasm,star2(acme)");
    assert_eq!(seen["headers"]["x-tenant"], "acme");
    // Response hooks: WASM first (config order), then the script sees its header.
    assert_eq!(header(&headers, "x-wasm-seen-status"), Some("200"));
    assert_eq!(header(&headers, "x-star-saw"), Some("200"));

    let doc = helios_http_proxy::mcp::introspect(&proxy.chain);
    let backends: Vec<&str> =
        doc["plugins"].as_array().unwrap().iter().map(|p| p["backend"].as_str().unwrap()).collect();
    assert_eq!(backends, ["starlark", "wasm", "starlark"]);
    // The module's name is the one its signature binds.
    assert_eq!(doc["plugins"][1]["name"], "http-header-wasm");
    // Every member is a plugin of the host, in config order, counted by the host.
    let host: Vec<(String, u64, u64)> = proxy
        .chain
        .host_chain()
        .plugins()
        .iter()
        .map(|p| (p.name().to_string(), p.stats().calls, p.stats().failures))
        .collect();
    assert_eq!(
        host,
        [("first".into(), 1, 0), ("http-header-wasm".into(), 2, 0), ("last".into(), 2, 0)],
        "calls per hook fired (first: on_request; the others: on_request and on_response)"
    );
    assert_eq!(
        doc["plugins"][1]["registrations"],
        json!([
            {"protocol": "http", "event": "on_request", "phase": "pre_pipeline"},
            {"protocol": "http", "event": "on_response", "phase": "pre_pipeline"}
        ])
    );
    proxy.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasm_module_without_http_hooks_is_refused_naming_it() {
    let up = upstream().await;
    let s = Setup::new(&[]);
    std::fs::copy(helios_plugin_test_support::guest_path("tool-denylist"), s.path("guard.wasm")).unwrap();
    let err = build(&s.config(up, json!([{"path": "guard.wasm", "unsigned": true}]), json!({}))).unwrap_err();
    assert!(err.contains("\"guard\"") && err.contains("serves no HTTP or connection hook"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_plugins_are_verified_before_they_load() {
    let up = upstream().await;
    let s = Setup::new(&[]);
    let dir = s.path("");
    signed_copy(&dir, "header.wasm");
    let entry = json!([{"path": "header.wasm"}]);

    // Signed and trusted: loads under the signed name.
    let chain = build(&s.config(up, entry.clone(), json!({"verify_with": "trusted"}))).unwrap();
    assert_eq!(chain.members()[0].plugin().name(), "http-header-wasm");

    // No trust root and no explicit `unsigned`: refused, naming the plugin and the fix.
    let err = build(&s.config(up, entry.clone(), json!({}))).unwrap_err();
    assert!(err.contains("plugin \"header\"") && err.contains("no trust root"), "{err}");

    // Signed by a key that is not trusted: refused.
    let other = helios_plugin_artefact::keys::generate_signing_key().unwrap();
    std::fs::create_dir_all(dir.join("others")).unwrap();
    std::fs::write(dir.join("others/x.pub"), helios_plugin_artefact::keys::public_key_base64(&other.verifying_key()))
        .unwrap();
    let err = build(&s.config(up, entry.clone(), json!({"verify_with": "others"}))).unwrap_err();
    assert!(err.contains("plugin \"header\""), "{err}");

    // One byte changed after signing: refused before anything is compiled.
    let mut bytes = std::fs::read(dir.join("header.wasm")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(dir.join("tampered.wasm"), &bytes).unwrap();
    std::fs::copy(dir.join("header.wasm.sig"), dir.join("tampered.wasm.sig")).unwrap();
    let err = build(&s.config(up, json!([{"path": "tampered.wasm"}]), json!({"verify_with": "trusted"}))).unwrap_err();
    assert!(err.contains("plugin \"tampered\""), "{err}");

    // A blocklisted digest: refused even though the signature is good.
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(std::fs::read(dir.join("header.wasm")).unwrap()));
    std::fs::write(dir.join("blocked.json"), json!({"digests": [format!("sha256:{digest}")]}).to_string()).unwrap();
    let err = build(&s.config(up, entry.clone(), json!({"verify_with": "trusted", "blocklist": "blocked.json"})))
        .unwrap_err();
    assert!(err.to_lowercase().contains("blocklist"), "{err}");

    // `name` must be the signed one.
    let err = build(&s.config(up, json!([{"path": "header.wasm", "name": "mine"}]), json!({"verify_with": "trusted"})))
        .unwrap_err();
    assert!(err.contains("\"mine\"") && err.contains("http-header-wasm"), "{err}");

    // Development: `unsigned: true` loads the module as is (listen is on loopback here)...
    let chain = build(&s.config(up, json!([{"path": "tampered.wasm", "unsigned": true}]), json!({}))).unwrap();
    assert_eq!(chain.members()[0].backend(), "wasm");
    // ...and is refused outright on any other listen address.
    let err = build(&s.config(up, json!([{"path": "header.wasm", "unsigned": true}]), json!({"listen": "0.0.0.0:0"})))
        .unwrap_err();
    assert!(err.contains("unsigned") && err.contains("loopback") && err.contains("0.0.0.0:0"), "{err}");
    // It means nothing for a script.
    std::fs::write(dir.join("s.star"), FIRST).unwrap();
    let err = build(&s.config(up, json!([{"path": "s.star", "unsigned": true}]), json!({}))).unwrap_err();
    assert!(err.contains(".wasm plugins only"), "{err}");
}

const SPIN: &str = r#"
def h(msg, ctx):
    n = 0
    for i in range(1000000000):
        n += i
register_hook("http", "on_request", h)
"#;

const SPIN_DEEP: &str = r#"
def f(n):
    return f(n + 1)
def h(msg, ctx):
    f(0)
register_hook("http", "on_request", h)
"#;

const SPIN_BIG: &str = r#"
def h(msg, ctx):
    s = "x"
    for i in range(100):
        s = s + s
register_hook("http", "on_request", h)
"#;

const MARK: &str = r#"
def h(msg, ctx):
    msg["headers"]["x-after"] = "ran"
register_hook("http", "on_request", h)
"#;

/// A runaway script is stopped by its budget inside the host; the request goes on (skip), the
/// failures are the host's, and the proxy keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_scripts_are_stopped_through_the_host_and_it_keeps_serving() {
    let up = upstream().await;
    let s = Setup::new(&[("loop.star", SPIN), ("deep.star", SPIN_DEEP), ("big.star", SPIN_BIG), ("mark.star", MARK)]);
    let plugins = json!([
        {"path": "loop.star", "max_steps": 100000},
        {"path": "deep.star"},
        {"path": "big.star"},
        {"path": "mark.star"}
    ]);
    let proxy = start(&s.config(up, plugins, json!({}))).await;
    for _ in 0..2 {
        let t = std::time::Instant::now();
        let (code, out) = curl(&[&format!("http://{}/spin", proxy.addr)]).await;
        assert_eq!(code, 0, "{out}");
        let seen: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(seen["headers"]["x-after"], "ran", "the plugin after the runaways still ran");
        assert!(t.elapsed() < std::time::Duration::from_secs(15), "{:?}", t.elapsed());
    }
    let host = proxy.chain.host_chain();
    for name in ["loop", "deep", "big"] {
        let st = host.get(name).unwrap().stats();
        assert_eq!((st.calls, st.failures), (2, 2), "{name}");
    }
    assert_eq!(host.get("mark").unwrap().stats().failures, 0);
    proxy.stop();
}
