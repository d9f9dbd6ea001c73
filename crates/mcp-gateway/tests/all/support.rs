//! Guards on disk, upstream servers, and gateways for the tests.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use helios_plugin_artefact::{keys, signing};
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation};
use rmcp::service::{RoleClient, RunningService, ServiceExt};
use rmcp::transport::{ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess};

pub const GATEWAY: &str = env!("CARGO_BIN_EXE_helios-mcp-gateway");

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// chio's ABI spoken by hand: denies requests containing config `deny_substring`.
pub fn wat_guard() -> Vec<u8> {
    wat::parse_file(repo_root().join("examples/wat-guard/guard.wat")).expect("examples/wat-guard/guard.wat compiles")
}

/// A guard whose `evaluate` traps on every call.
pub fn trapping_guard() -> Vec<u8> {
    wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "evaluate") (param i32 i32) (result i32) unreachable))"#,
    )
    .unwrap()
}

/// `bytes` with a custom section appended: the same behaviour under a different digest.
pub fn with_marker(mut bytes: Vec<u8>, marker: &str) -> Vec<u8> {
    let name = b"marker";
    let payload_len = 1 + name.len() + marker.len();
    assert!(payload_len < 128 && name.len() < 128);
    bytes.push(0);
    bytes.push(payload_len as u8);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(marker.as_bytes());
    bytes
}

/// How a guard on disk is signed.
pub enum Signing<'a> {
    Unsigned,
    /// A sidecar by this key; the manifest pins it.
    Pinned(&'a ed25519_dalek::SigningKey),
    /// A sidecar by this key; the gateway's trust root must hold it.
    TrustRoot(&'a ed25519_dalek::SigningKey),
}

/// Writes `dir/<name>/guard-manifest.yaml` and `dir/<name>/wasm/<name>.wasm` (the manifest sits one
/// directory above the module, so the loader has to walk up), and the sidecar if signed. Returns
/// the module's path, as `wasm_guards[].path` names it.
pub fn write_guard(dir: &Path, name: &str, wasm: &[u8], config: &[(&str, &str)], sign: Signing<'_>) -> PathBuf {
    let root = dir.join(name);
    std::fs::create_dir_all(root.join("wasm")).unwrap();
    let wasm_path = root.join("wasm").join(format!("{}.wasm", name.replace('-', "_")));
    let mut manifest = format!(
        "name: {name}\nversion: \"1.0.0\"\nabi_version: \"1\"\nwasm_path: wasm/{}\nwasm_sha256: \"{}\"\n",
        wasm_path.file_name().unwrap().to_string_lossy(),
        signing::sha256_hex(wasm)
    );
    if !config.is_empty() {
        manifest.push_str("config:\n");
        for (k, v) in config {
            manifest.push_str(&format!("  {k}: {v:?}\n"));
        }
    }
    let key = match sign {
        Signing::Unsigned => {
            manifest.push_str("allow_unsigned: true\n");
            None
        }
        Signing::Pinned(k) => {
            manifest.push_str(&format!("signer_public_key: \"{}\"\n", keys::public_key_hex(&k.verifying_key())));
            Some(k)
        }
        Signing::TrustRoot(k) => Some(k),
    };
    // Module and sidecar first, manifest last: a watcher sees a consistent set once it changes.
    std::fs::write(&wasm_path, wasm).unwrap();
    if let Some(k) = key {
        let sidecar = signing::sign_module(k, wasm, name, "1.0.0");
        std::fs::write(format!("{}.sig", wasm_path.display()), signing::sidecar_bytes(&sidecar)).unwrap();
    }
    std::fs::write(root.join("guard-manifest.yaml"), manifest).unwrap();
    wasm_path
}

/// The upstream fixture over stdio, as a config `upstreams[]` entry.
pub fn stdio_upstream(id: &str, seen: &Path) -> String {
    format!(
        "  - id: {id}\n    command: python3\n    args: [{:?}, stdio]\n    env: {{ SEEN_LOG: {:?}, SERVER_NAME: {id} }}\n",
        fixtures().join("upstream_server.py").display().to_string(),
        seen.display().to_string()
    )
}

/// Tool calls the upstream saw, as (tool, arguments).
pub fn seen(path: &Path) -> Vec<(String, serde_json::Value)> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["tool"].as_str().unwrap().to_string(), v["arguments"].clone())
        })
        .collect()
}

pub type Agent = RunningService<RoleClient, ClientConfig>;

fn agent_info(name: &str) -> ClientConfig {
    ClientConfig::new(ClientCapabilities::default(), Implementation::new(name, "1.0"))
}

/// An agent (rmcp's client) that starts the gateway as its stdio server.
pub async fn stdio_agent(config: &Path, name: &str) -> Agent {
    let cmd = tokio::process::Command::new(GATEWAY).configure(|c| {
        c.arg("--config").arg(config).env("HELIOS_LOG", "info,rmcp=warn");
    });
    let transport = TokioChildProcess::new(cmd).expect("start the gateway");
    tokio::time::timeout(Duration::from_secs(60), agent_info(name).serve(transport))
        .await
        .expect("the gateway answers the handshake within 60 s")
        .expect("MCP handshake with the gateway")
}

/// A gateway serving streamable HTTP; killed on drop.
pub struct HttpGateway {
    pub child: Child,
    pub url: String,
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl HttpGateway {
    pub fn start(config: &Path) -> HttpGateway {
        let mut child = Command::new(GATEWAY)
            .arg("--config")
            .arg(config)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("HELIOS_LOG", "info,rmcp=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the gateway");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = loop {
            let line = lines.next().and_then(Result::ok).unwrap_or_else(|| {
                panic!("the gateway exited before listening: {}", stderr.lock().unwrap());
            });
            stderr.lock().unwrap().push_str(&line);
            stderr.lock().unwrap().push('\n');
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.trim().to_string();
            }
            assert!(Instant::now() < deadline, "the gateway did not listen within 60 s");
        };
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        HttpGateway { child, url, stderr }
    }

    pub async fn agent(&self, name: &str) -> Agent {
        let transport = StreamableHttpClientTransport::from_uri(self.url.as_str());
        agent_info(name).serve(transport).await.expect("MCP handshake over HTTP")
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for HttpGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Calls a tool; returns (is_error, text).
pub async fn call(agent: &Agent, tool: &str, args: serde_json::Value) -> (bool, String) {
    let mut params = CallToolRequestParams::new(tool.to_string());
    params.arguments = args.as_object().cloned();
    let r: CallToolResult = tokio::time::timeout(Duration::from_secs(60), agent.call_tool(params))
        .await
        .unwrap_or_else(|_| panic!("tools/call {tool} answered within 60 s"))
        .unwrap_or_else(|e| panic!("tools/call {tool}: {e}"));
    (r.is_error == Some(true), text(&r))
}

pub fn text(r: &CallToolResult) -> String {
    r.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect::<Vec<_>>().join("")
}

/// A free port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The upstream fixture over streamable HTTP; killed on drop.
pub struct HttpUpstream {
    child: Child,
    pub url: String,
}

impl HttpUpstream {
    pub fn start(seen: &Path) -> HttpUpstream {
        let port = free_port();
        let child = Command::new("python3")
            .arg(fixtures().join("upstream_server.py"))
            .arg("http")
            .arg(port.to_string())
            .env("SEEN_LOG", seen)
            .env("SERVER_NAME", "web")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs the upstream fixture");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the HTTP upstream did not listen on {port} within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        HttpUpstream { child, url: format!("http://127.0.0.1:{port}/mcp") }
    }
}

impl Drop for HttpUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the Python SDK agent; returns its JSON lines.
pub fn python_agent(args: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new("python3")
        .arg(fixtures().join("agent.py"))
        .args(args)
        .env("HELIOS_LOG", "warn")
        .output()
        .expect("python3 runs the agent fixture");
    assert!(
        out.status.success(),
        "python agent failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}
