//! A host with a few plugins and an admin listener, and a minimal HTTP/1.1 client.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};

use helios_plugin_admin::{AdminConfig, AdminControl, AdminServer, Metrics, PluginMeta, PluginView};
use helios_plugin_host::schema::Hook;
use helios_plugin_host::{Plugin, PluginConfig, Runtime, RuntimeConfig};

/// Allows every call.
pub const ALLOW: &str = r#"(module (memory (export "memory") 1)
    (func (export "evaluate") (param i32 i32) (result i32) (i32.const 0)))"#;
/// Denies every call.
pub const DENY: &str = r#"(module (memory (export "memory") 1)
    (func (export "evaluate") (param i32 i32) (result i32) (i32.const 1)))"#;
/// Traps on every call.
pub const TRAP: &str = r#"(module (memory (export "memory") 1)
    (func (export "evaluate") (param i32 i32) (result i32) unreachable))"#;
/// Allows every call after two `chio.log` lines and one `chio.get_config` lookup.
pub const CHATTY: &str = r#"(module
    (import "chio" "log" (func $log (param i32 i32 i32)))
    (import "chio" "get_config" (func $cfg (param i32 i32 i32 i32) (result i32)))
    (memory (export "memory") 1)
    (data (i32.const 100) "evaluating")
    (data (i32.const 200) "mode")
    (func (export "evaluate") (param i32 i32) (result i32)
      (call $log (i32.const 2) (i32.const 100) (i32.const 10))
      (drop (call $cfg (i32.const 200) (i32.const 4) (i32.const 300) (i32.const 64)))
      (call $log (i32.const 1) (i32.const 100) (i32.const 10))
      (i32.const 0)))"#;
/// A pre_query hook that blocks every statement.
pub const BLOCKER: &str = r#"(module (memory (export "memory") 1)
    (data (i32.const 1024) "{\"kind\":\"block\",\"reason\":\"no\"}")
    (func (export "alloc") (param i32) (result i32) (i32.const 4096))
    (func (export "pre_query") (param i32 i32) (result i64) (i64.const 0x000004000000001e)))"#;

/// Lists plugins and counts reload requests.
#[derive(Debug, Default)]
pub struct Control {
    pub plugins: Vec<(Arc<Plugin>, PluginMeta)>,
    pub reloads: Mutex<u32>,
}

impl AdminControl for Control {
    fn plugins(&self) -> serde_json::Value {
        let views: Vec<PluginView> = self.plugins.iter().map(|(p, m)| PluginView::of(p, m)).collect();
        serde_json::to_value(views).unwrap()
    }
    fn reload(&self) -> Result<serde_json::Value, String> {
        *self.reloads.lock().unwrap() += 1;
        Ok(serde_json::json!({"reloaded": true}))
    }
}

pub struct Host {
    pub runtime: Runtime,
    pub metrics: Arc<Metrics>,
    pub rt: tokio::runtime::Runtime,
}

impl Host {
    pub fn new(cap: usize) -> Host {
        let metrics = Arc::new(Metrics::new(cap));
        let runtime = Runtime::new(RuntimeConfig::default().observer(metrics.clone())).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        Host { runtime, metrics, rt }
    }

    pub fn guard(&self, name: &str, wat: &str) -> Arc<Plugin> {
        self.runtime.load(wat.as_bytes(), PluginConfig::new(name)).unwrap()
    }

    pub fn hook(&self, name: &str, wat: &str, config: BTreeMap<String, String>) -> Arc<Plugin> {
        self.runtime.load(wat.as_bytes(), PluginConfig::new(name).hooks([Hook::PreQuery]).config_map(config)).unwrap()
    }

    /// Starts the admin listener on `cfg` (port 0 = any) and returns its address.
    pub fn admin(&self, cfg: AdminConfig, control: Arc<dyn AdminControl>) -> Result<SocketAddr, String> {
        let metrics = self.metrics.clone();
        self.rt.block_on(async move { AdminServer::spawn(&cfg, metrics, control).await }).map_err(|e| e.to_string())
    }
}

/// The digest of a WAT module as the host computes it (SHA-256 of the binary).
pub fn digest(p: &Plugin) -> String {
    p.module_info().unwrap().sha256.clone()
}

/// One HTTP/1.1 request; returns (status, body).
pub fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.into() };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
