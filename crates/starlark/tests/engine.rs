//! The Starlark engine through its public API: real scripts on disk, real budgets.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use helios_plugin_starlark::*;
use serde_json::{Value, json};

fn write(dir: &Path, name: &str, src: &str) -> PluginEntry {
    let path = dir.join(name);
    std::fs::write(&path, src).unwrap();
    PluginEntry::new(path)
}

fn services() -> Services {
    Services::new(HostHooks::http_proxy())
}

fn load(dir: &Path, name: &str, src: &str) -> Result<ScriptPlugin, ScriptError> {
    ScriptPlugin::load(&write(dir, name, src), &services())
}

fn request() -> Value {
    json!({"method": "GET", "path": "/x", "query": "", "headers": {"host": "a"}, "body": "", "body_streamed": false})
}

#[test]
fn registrations_keep_order_and_default_phases() {
    let dir = tempfile::tempdir().unwrap();
    let p = load(
        dir.path(),
        "order.star",
        r#"
def a(msg, ctx): pass
def b(msg, ctx): pass
def c(msg, ctx): pass
register_hook("http", "on_response", a, phase = "post_pipeline")
register_hook("http", "on_request", b)
register_hook("connection", "on_connect", c)
"#,
    )
    .unwrap();
    let got: Vec<String> = p.registrations().iter().map(|r| r.point.to_string()).collect();
    assert_eq!(got, ["http/on_response/post_pipeline", "http/on_request/pre_pipeline", "connection/on_connect/none"]);
    assert_eq!(p.name(), "order");
}

#[test]
fn load_errors_name_the_plugin_and_the_hook() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "register_hook(\"connection\", \"on_connect\", lambda m, c: None, phase = \"pre_pipeline\")",
            "takes no phase=",
        ),
        ("register_hook(\"http\", \"on_request\", lambda m, c: None, phase = \"none\")", "not \"none\""),
        ("register_hook(\"http\", \"on_recieve\", lambda m, c: None)", "unknown hook http/on_recieve"),
        ("register_hook(\"ws\", \"on_message\", lambda m, c: None)", "ws/on_message is never fired by this host"),
        ("register_hook(\"http\", \"on_request\", 42)", "must be a function"),
        ("x = 1", "registers no hook"),
        ("load(\"other.star\", \"x\")", "other.star"),
        ("def f(:", "bad.star"),
    ];
    for (src, want) in cases {
        let err = load(dir.path(), "bad.star", src).unwrap_err();
        assert_eq!(err.plugin, "bad");
        let text = err.to_string();
        assert!(text.contains(want) && text.contains("\"bad\""), "{src}: {text}");
    }
    let err = ScriptPlugin::load(&PluginEntry::new(dir.path().join("missing.star")), &services()).unwrap_err();
    assert!(err.to_string().contains("cannot read") && err.to_string().contains("missing.star"), "{err}");
}

#[test]
fn no_filesystem_network_or_environment() {
    let dir = tempfile::tempdir().unwrap();
    for src in ["open(\"/etc/passwd\")", "x = os.environ", "x = http.get(\"http://x\")", "x = getenv(\"HOME\")"] {
        let err = load(dir.path(), "io.star", src).unwrap_err().to_string();
        assert!(err.contains("not found") || err.contains("Variable"), "{src}: {err}");
    }
}

#[test]
fn msg_mutations_come_back_and_actions_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut entry = write(
        dir.path(),
        "m.star",
        r#"
def on_req(msg, ctx):
    msg["headers"]["x-added"] = config["v"]
    msg["path"] = "/rewritten"
    if msg["method"] == "DELETE":
        return action.DROP
    if msg["method"] == "POST":
        return action.respond(status = 201, headers = {"x-made": "yes"}, body = "made here")
    return "CONTINUE"
register_hook("http", "on_request", on_req)
"#,
    );
    entry.vars.insert("v".into(), json!("value"));
    let p = ScriptPlugin::load(&entry, &services()).unwrap();
    let ctx = HookContext::default();
    let mut msg = request();
    assert_eq!(p.call(0, &mut msg, &ctx).unwrap(), Verdict::Continue);
    assert_eq!(msg["headers"]["x-added"], "value");
    assert_eq!(msg["path"], "/rewritten");
    msg["method"] = json!("DELETE");
    assert_eq!(p.call(0, &mut msg, &ctx).unwrap(), Verdict::Drop);
    msg["method"] = json!("POST");
    match p.call(0, &mut msg, &ctx).unwrap() {
        Verdict::Respond(r) => {
            assert_eq!((r.status, r.body.as_str()), (201, "made here"));
            assert_eq!(r.headers, vec![("x-made".to_string(), "yes".to_string())]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn config_vars_are_frozen() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = write(
        dir.path(),
        "f.star",
        "config[\"token\"] = \"mine\"\nregister_hook(\"http\", \"on_request\", lambda m, c: None)",
    );
    e.vars.insert("token".into(), json!("t"));
    let err = ScriptPlugin::load(&e, &services()).unwrap_err().to_string();
    assert!(err.contains("mmutable") || err.contains("frozen"), "{err}");

    let mut e = write(
        dir.path(),
        "g.star",
        "def h(m, c):\n    config[\"token\"] = \"x\"\nregister_hook(\"http\", \"on_request\", h)",
    );
    e.vars.insert("token".into(), json!("t"));
    let p = ScriptPlugin::load(&e, &services()).unwrap();
    let err = p.call(0, &mut request(), &HookContext::default()).unwrap_err();
    assert_eq!(err.cause, Cause::Runtime, "{err}");
}

fn budget_case(src: &str, max_steps: u64) -> (ScriptError, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let mut e = write(dir.path(), "loop.star", src);
    e.max_steps = max_steps;
    let p = ScriptPlugin::load(&e, &services()).unwrap();
    let t = Instant::now();
    let err = p.call(0, &mut request(), &HookContext::default()).unwrap_err();
    let took = t.elapsed();
    // The plugin (and the host) are intact: a well-behaved call on the same plugin still works.
    let mut m = request();
    m["method"] = json!("HEAD");
    assert_eq!(p.call(0, &mut m, &HookContext::default()).unwrap(), Verdict::Continue);
    (err, took)
}

#[test]
fn step_budget_stops_an_infinite_loop() {
    let src = r#"
def h(msg, ctx):
    if msg["method"] == "HEAD":
        return None
    n = 0
    for i in range(2000000000):
        n += i
register_hook("http", "on_request", h)
"#;
    // The default budget (max_steps = 0 means 1,000,000).
    let (err, took) = budget_case(src, 0);
    eprintln!("1,000,000 steps stopped after {took:?}");
    assert_eq!(err.cause, Cause::Steps, "{err}");
    assert!(err.to_string().contains("1000000"), "{err}");
    assert!(took < CALL_DEADLINE, "took {took:?}");
    let (err, took) = budget_case(src, 5_000);
    assert!(err.to_string().contains("step budget of 5000"), "{err}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[test]
fn deep_recursion_is_stopped() {
    let src = r#"
def down(n):
    return down(n + 1) + 1
def h(msg, ctx):
    if msg["method"] == "HEAD":
        return None
    down(0)
register_hook("http", "on_request", h)
"#;
    let (err, took) = budget_case(src, 0);
    assert!(matches!(err.cause, Cause::Stack | Cause::Runtime), "{err:?}");
    assert!(err.to_string().to_lowercase().contains("recursion") || err.to_string().contains("stack"), "{err}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn huge_string_build_is_stopped_within_bounded_memory() {
    let src = r#"
def h(msg, ctx):
    if msg["method"] == "HEAD":
        return None
    s = "x" * 1024
    for i in range(64):
        s = s + s
    msg["body"] = s
register_hook("http", "on_request", h)
"#;
    let before = rss_kib();
    let (err, took) = budget_case(src, 0);
    assert_eq!(err.cause, Cause::Memory, "{err}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let grew = rss_kib().saturating_sub(before);
    // The heap cap is 64 MiB; one doubling past it is the most a single statement adds.
    assert!(grew < 400 * 1024, "RSS grew by {grew} KiB");
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn failures_are_runtime_errors_with_the_hook_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = load(
        dir.path(),
        "boom.star",
        "def h(m, c):\n    fail(\"boom here\")\nregister_hook(\"http\", \"on_response\", h)",
    )
    .unwrap();
    let err = p.call(0, &mut request(), &HookContext::default()).unwrap_err();
    assert_eq!(err.cause, Cause::Runtime);
    let text = err.to_string();
    assert!(
        text.contains("boom here") && text.contains("http/on_response/pre_pipeline") && text.contains("\"boom\""),
        "{text}"
    );

    let p = load(dir.path(), "ret.star", "register_hook(\"http\", \"on_request\", lambda m, c: 42)").unwrap();
    let err = p.call(0, &mut request(), &HookContext::default()).unwrap_err();
    assert_eq!(err.cause, Cause::BadResult, "{err}");

    let p = load(
        dir.path(),
        "late.star",
        "def h(m, c):\n    register_hook(\"http\", \"on_request\", h)\nregister_hook(\"http\", \"on_request\", h)",
    )
    .unwrap();
    let err = p.call(0, &mut request(), &HookContext::default()).unwrap_err();
    assert!(err.to_string().contains("only allowed at a script's top level"), "{err}");
}

const COUNTER: &str = r#"
def h(msg, ctx):
    n = state.incr("n")
    msg["headers"]["n"] = str(n)
register_hook("http", "on_request", h)
"#;

fn count_once(p: &ScriptPlugin) -> String {
    let mut m = request();
    p.call(0, &mut m, &HookContext::default()).unwrap();
    m["headers"]["n"].as_str().unwrap().to_string()
}

#[test]
fn state_is_isolated_per_plugin_and_survives_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let s = services();
    let a = ScriptPlugin::load(&write(dir.path(), "a.star", COUNTER), &s).unwrap();
    let b = ScriptPlugin::load(&write(dir.path(), "b.star", COUNTER), &s).unwrap();
    assert_eq!(count_once(&a), "1");
    assert_eq!(count_once(&a), "2");
    assert_eq!(count_once(&b), "1", "b must not see a's state");
    drop(a);
    let a = ScriptPlugin::load(&write(dir.path(), "a.star", COUNTER), &s).unwrap();
    assert_eq!(count_once(&a), "3", "a reload keeps the volatile state");
    let fresh = ScriptPlugin::load(&write(dir.path(), "a.star", COUNTER), &services()).unwrap();
    assert_eq!(count_once(&fresh), "1", "a new registry (a restart) starts empty");
}

#[test]
fn store_persists_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    let src = r#"
def h(msg, ctx):
    seen = store.get("seen", [])
    seen.append(msg["path"])
    store.set("seen", seen)
    msg["headers"]["seen"] = ",".join(seen)
register_hook("http", "on_request", h)
"#;
    let entry = write(dir.path(), "persist.star", src);
    let run = |path: &str| {
        let mut s = services();
        s.store = Some(Arc::new(SqliteStore::open(&db).unwrap()));
        let p = ScriptPlugin::load(&entry, &s).unwrap();
        let mut m = request();
        m["path"] = json!(path);
        p.call(0, &mut m, &HookContext::default()).unwrap();
        m["headers"]["seen"].as_str().unwrap().to_string()
    };
    assert_eq!(run("/one"), "/one");
    assert_eq!(run("/two"), "/one,/two", "a second process (new store handle) sees the first one's data");
}

#[test]
fn transaction_and_stream_state_are_the_hosts_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let p = load(
        dir.path(),
        "scopes.star",
        r#"
def h(msg, ctx):
    ctx.transaction_state.set("t", ctx.transaction_state.get("t", 0) + 1)
    ctx.stream_state.set("s", ctx.stream_state.get("s", 0) + 1)
    msg["headers"]["keys"] = ",".join(ctx.stream_state.keys())
register_hook("http", "on_request", h)
"#,
    )
    .unwrap();
    let stream = Scope::new();
    for _ in 0..3 {
        let ctx = HookContext { stream_state: stream.clone(), ..HookContext::default() };
        p.call(0, &mut request(), &ctx).unwrap();
        assert_eq!(ctx.transaction_state.get("t"), Some(json!(1)));
    }
    assert_eq!(stream.get("s"), Some(json!(3)));
}

#[test]
fn crypto_module_matches_known_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let p = load(
        dir.path(),
        "c.star",
        r#"
def h(msg, ctx):
    msg["headers"]["sha"] = crypto.sha256_hex("abc")
    msg["headers"]["mac"] = crypto.hmac_sha256_hex("key", "The quick brown fox jumps over the lazy dog")
    msg["headers"]["b64"] = crypto.base64_encode("hi there")
    msg["headers"]["back"] = crypto.base64_decode("aGkgdGhlcmU=")
register_hook("http", "on_request", h)
"#,
    )
    .unwrap();
    let mut m = request();
    p.call(0, &mut m, &HookContext::default()).unwrap();
    let h = &m["headers"];
    assert_eq!(h["sha"], "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_eq!(h["mac"], "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8");
    assert_eq!((h["b64"].as_str(), h["back"].as_str()), (Some("aGkgdGhlcmU="), Some("hi there")));
}

/// A script is a plugin of the host: loaded with `Runtime::load_backend`, called through
/// `Plugin`, its failures counted by the host and its policy the host's.
#[test]
fn a_script_is_a_host_plugin_through_the_backend_trait() {
    use helios_plugin_host::schema::Hook;
    use helios_plugin_host::schema::http::{HttpAction, HttpHookInput, HttpHookOutput};
    use helios_plugin_host::{Chain, FailureKind, HttpOutcome, Runtime, RuntimeConfig};

    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let load_host = |name: &str, src: &str, on_error: &str| {
        let mut entry = write(dir.path(), name, src);
        entry.on_error = if on_error == "abort" { OnError::Abort } else { OnError::Skip };
        let backend = ScriptBackend::new(Arc::new(ScriptPlugin::load(&entry, &services()).unwrap())).unwrap();
        let cfg = backend.plugin_config();
        rt.load_backend(Box::new(backend), cfg).unwrap()
    };
    let tagger = load_host(
        "tagger.star",
        r#"
def one(msg, ctx):
    msg["headers"]["x-tag"] = "one"
    ctx.transaction_state.set("seen", True)
def two(msg, ctx):
    msg["headers"]["x-tag"] += ",two"
def resp(msg, ctx):
    if msg["status"] == 404:
        return action.respond(status=410, body="gone")
register_hook("http", "on_request", one)
register_hook("http", "on_request", two)
register_hook("http", "on_response", resp, phase="post_pipeline")
"#,
        "skip",
    );
    assert_eq!(tagger.hooks(), [Hook::HttpRequest, Hook::HttpResponsePost]);
    assert!(tagger.module_info().is_none(), "not a wasm module");

    // Both registrations of on_request run in one call, in registration order; the scopes the
    // host hands over are the ones the script writes.
    let input = serde_json::to_vec(&HttpHookInput { msg: request(), client: "1.2.3.4:5".into(), conn_id: 7 }).unwrap();
    let ctx = HookContext::default();
    let out: HttpHookOutput = tagger
        .call_with_host(Hook::HttpRequest, &input, &ctx, |b| serde_json::from_slice(b).map_err(|e| e.to_string()))
        .unwrap();
    assert_eq!(out.action, HttpAction::Continue);
    assert_eq!(out.msg.unwrap()["headers"]["x-tag"], "one,two");
    assert_eq!(ctx.transaction_state.get("seen"), Some(json!(true)));
    let resp = serde_json::to_vec(&HttpHookInput { msg: json!({"status": 404, "headers": {}}), ..Default::default() })
        .unwrap();
    let out: HttpHookOutput =
        serde_json::from_slice(&tagger.call_json(Hook::HttpResponsePost, &resp).unwrap()).unwrap();
    assert_eq!((out.action, out.response.unwrap().status), (HttpAction::Respond, 410));
    // A hook it did not register is not served, as for a wasm module.
    let e = tagger.call_json(Hook::HttpResponse, &resp).unwrap_err();
    assert!(matches!(e.kind, FailureKind::NotServed { .. }), "{e}");

    // A failing script: the host counts it and applies its policy in a chain.
    let failing = load_host(
        "failing.star",
        "def h(msg, ctx):\n    fail(\"no\")\nregister_hook(\"http\", \"on_request\", h)\n",
        "abort",
    );
    let spinning = load_host(
        "spin.star",
        "def h(msg, ctx):\n    for i in range(100000000):\n        pass\nregister_hook(\"http\", \"on_request\", h)\n",
        "skip",
    );
    let chain = Chain::new(vec![tagger.clone(), spinning.clone(), failing.clone()]);
    let mut input = HttpHookInput { msg: request(), ..Default::default() };
    match chain.http(Hook::HttpRequest, &mut input, &HookContext::default()) {
        HttpOutcome::Abort { error } => {
            assert_eq!(&*error.plugin, "failing");
            assert!(error.to_string().contains("no"), "{error}");
        }
        other => panic!("expected the abort plugin to stop the chain, got {other:?}"),
    }
    assert_eq!(input.msg["headers"]["x-tag"], "one,two", "the tagger's change reached the later plugins");
    let st = spinning.stats();
    assert_eq!((st.calls, st.failures), (1, 1), "the step budget stopped the loop; skipped");
    assert_eq!(failing.stats().failures, 1);
}
