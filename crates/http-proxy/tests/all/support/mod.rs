//! Test support: a real upstream on loopback, plugin files, a proxy in-process or as a process.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use sha2::Digest;

/// Starts the echo upstream: every path answers a JSON description of the request it got;
/// `/user` answers a JSON document with password fields; `/big?n=N` answers N bytes.
pub async fn upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move { Ok::<_, hyper::Error>(echo(req).await) });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

async fn echo(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let json_resp = |v: Value| {
        Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(v.to_string())))
            .unwrap()
    };
    match parts.uri.path() {
        "/user" => json_resp(json!({"name": "ann", "password": "hunter2", "sessions": [{"id": 1, "password": "x"}]})),
        "/big" => {
            let n: usize =
                parts.uri.query().and_then(|q| q.strip_prefix("n=")).and_then(|n| n.parse().ok()).unwrap_or(0);
            Response::builder()
                .header("content-type", "text/plain")
                .body(Full::new(Bytes::from(vec![b'a'; n])))
                .unwrap()
        }
        _ => {
            let mut headers = serde_json::Map::new();
            for (k, v) in &parts.headers {
                headers.insert(k.as_str().to_string(), Value::from(v.to_str().unwrap_or("?")));
            }
            json_resp(json!({
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "query": parts.uri.query().unwrap_or(""),
                "version": format!("{:?}", parts.version),
                "headers": headers,
                "body_len": body.len(),
                "body_sha256": hex::encode(sha2::Sha256::digest(&body)),
                "body": String::from_utf8_lossy(&body[..body.len().min(4096)]),
            }))
        }
    }
}

/// Writes `files` into a fresh directory and a proxy.json there whose `plugins` is `plugins`.
#[derive(Debug)]
pub struct Setup {
    pub dir: tempfile::TempDir,
}

impl Setup {
    pub fn new(files: &[(&str, &str)]) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        Setup { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes proxy.json with `extra` merged over defaults and returns its path.
    pub fn config(&self, upstream: SocketAddr, plugins: Value, extra: Value) -> PathBuf {
        let mut c = json!({"listen": "127.0.0.1:0", "upstream": format!("http://{upstream}"), "plugins": plugins});
        if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                c.insert(k.clone(), v.clone());
            }
        }
        let p = self.path("proxy.json");
        std::fs::write(&p, serde_json::to_string_pretty(&c).unwrap()).unwrap();
        p
    }

    /// The repository's examples/http-scripts copied in.
    pub fn with_examples() -> Setup {
        let s = Setup::new(&[]);
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/http-scripts");
        for e in std::fs::read_dir(&src).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), s.path(&e.file_name().to_string_lossy())).unwrap();
        }
        s
    }
}

/// Starts the proxy in this process from a config file.
pub async fn start(config: &Path) -> helios_http_proxy::Running {
    let cfg = helios_http_proxy::Config::load(config).unwrap();
    let services = helios_http_proxy::services(&cfg).unwrap();
    let chain = Arc::new(helios_http_proxy::build_chain(&cfg, &services).unwrap());
    helios_http_proxy::start(cfg, chain).await.unwrap()
}

/// The proxy binary as a child process; killed on drop.
#[derive(Debug)]
pub struct ProxyProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub mcp: Option<String>,
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_helios-http-proxy")
}

/// Runs the binary and waits for its "listening on" line (and "mcp listening" if configured).
pub fn spawn(config: &Path, want_mcp: bool) -> ProxyProcess {
    let mut child =
        Command::new(bin()).arg("--config").arg(config).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("proxy printed nothing").unwrap();
    let addr = first.strip_prefix("listening on ").expect(&first).parse().unwrap();
    let mcp = if want_mcp {
        let l = lines.next().unwrap().unwrap();
        Some(l.strip_prefix("mcp listening on ").expect(&l).to_string())
    } else {
        None
    };
    ProxyProcess { child, addr, mcp }
}

/// Runs curl with `args`; returns (exit code, stdout).
pub async fn curl(args: &[&str]) -> (i32, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out =
            Command::new("curl").args(["-sS", "--max-time", "20"]).args(&args).output().expect("curl is installed");
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .await
    .unwrap()
}

/// Runs a Python script (httpx / mcp clients); returns stdout, panicking with stderr on failure.
pub async fn python(script: &str, args: &[String]) -> String {
    let script = script.to_string();
    let args = args.to_vec();
    tokio::task::spawn_blocking(move || {
        let out = Command::new("python3").arg("-c").arg(&script).args(&args).output().expect("python3 is installed");
        assert!(
            out.status.success(),
            "python failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .unwrap()
}

/// Splits curl `-i` output into (status, headers lower-cased, body).
pub fn parse_http(out: &str) -> (u16, Vec<(String, String)>, String) {
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((out, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

pub fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}
