//! `helios-plugin status --admin URL`: fetches `/plugins` from an admin listener and prints one row
//! per plugin. Plain HTTP/1.1 over a `TcpStream`: the admin listener is loopback or a private
//! address, and this keeps the CLI free of an HTTP client stack.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::PluginView;

/// Why the status could not be fetched; the message names the URL.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("--admin {url}: {detail}")]
    Url { url: String, detail: String },
    #[error("{url}: {detail}")]
    Http { url: String, detail: String },
}

/// `GET <url>/plugins` (with the bearer token, if given) and the parsed views.
pub fn fetch(url: &str, token: Option<&str>) -> Result<Vec<PluginView>, StatusError> {
    let bad = |detail: &str| StatusError::Url { url: url.into(), detail: detail.into() };
    let rest = url.strip_prefix("http://").ok_or_else(|| bad("only http:// URLs are supported"))?;
    let (authority, base) = match rest.split_once('/') {
        Some((a, p)) => (a, format!("/{}", p.trim_end_matches('/'))),
        None => (rest, String::new()),
    };
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    let path = format!("{}/plugins", base.trim_end_matches('/'));
    let http = |detail: String| StatusError::Http { url: format!("http://{authority}{path}"), detail };
    let mut s = TcpStream::connect(authority).map_err(|e| http(format!("cannot connect: {e}")))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {authority}\r\n{auth}Connection: close\r\n\r\n")
        .map_err(|e| http(e.to_string()))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| http(e.to_string()))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| http("not an HTTP response".into()))?;
    let status = head.split(' ').nth(1).unwrap_or("?");
    if status != "200" {
        return Err(http(format!("HTTP {status}: {}", body.trim())));
    }
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.into() };
    serde_json::from_str(&body).map_err(|e| http(format!("not a plugin list: {e}")))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// One row per plugin: name, version, kind, digest (16 hex), signer, hooks, calls, failures, fuel
/// limit, the last reload (its outcome, and the watchdog's error count while it watches), config
/// (redacted values stay redacted).
pub fn table(plugins: &[PluginView]) -> String {
    let header =
        ["NAME", "VERSION", "KIND", "DIGEST", "SIGNER", "HOOKS", "CALLS", "FAILURES", "FUEL", "RELOAD", "CONFIG"];
    let rows: Vec<[String; 11]> = plugins
        .iter()
        .map(|p| {
            let digest = p.digest.as_deref().map(|d| crate::metrics::prefix(d).to_string()).unwrap_or("-".into());
            let hooks: Vec<String> =
                p.hooks.iter().map(|h| format!("{}/{}/{}", h.protocol, h.event, h.phase)).collect();
            let config: Vec<String> = p.config.iter().map(|(k, v)| format!("{k}={v}")).collect();
            [
                p.name.clone(),
                p.version.clone().unwrap_or("-".into()),
                p.kind.clone(),
                digest,
                p.signer.clone().unwrap_or("unsigned".into()),
                if hooks.is_empty() { helios_plugin_schema::abi::EVALUATE.into() } else { hooks.join(",") },
                p.counters.calls.to_string(),
                p.counters.failures.to_string(),
                p.limits.fuel.map(|f| f.to_string()).unwrap_or("off".into()),
                reload_cell(p),
                if config.is_empty() { "-".into() } else { config.join(" ") },
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let cells: Vec<String> = cells.zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for r in &rows {
        line(&mut r.iter().map(String::as_str));
    }
    out
}

/// `rolled_back`, `applied (watched: 2 errors)`, or `-` when the host recorded no reload.
fn reload_cell(p: &PluginView) -> String {
    let outcome = p.last_reload.as_ref().and_then(|r| r["outcome"].as_str());
    let errors = p.watchdog.as_ref().and_then(|w| w["errors"].as_u64());
    match (outcome, errors) {
        (Some(o), Some(n)) => format!("{o} (watched: {n} errors)"),
        (Some(o), None) => o.to_string(),
        (None, Some(n)) => format!("watched: {n} errors"),
        (None, None) => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape helios-proxy's `/plugins` gives a plugin after a rollback and one under watch.
    #[test]
    fn the_table_shows_a_rollback_and_a_watched_reload() {
        let base = serde_json::json!({
            "name": "guardrail", "version": null, "digest": "sha256:0123456789abcdef0123", "signer": null,
            "kind": "hooks", "hooks": [], "config": {},
            "limits": {"fuel": 1000, "deadline_ms": 50, "max_memory_bytes": 1, "max_module_bytes": 1},
            "counters": {"calls": 9, "failures": 5, "instances_created": 1, "instances_recycled": 0},
        });
        let mut rolled = base.clone();
        rolled["last_reload"] =
            serde_json::json!({"outcome": "rolled_back", "from": "sha256:aa", "to": "sha256:bb", "incident": "/x"});
        let mut watched = base.clone();
        watched["name"] = "masker".into();
        watched["last_reload"] = serde_json::json!({"outcome": "applied", "from": "sha256:cc", "to": "sha256:dd"});
        watched["watchdog"] = serde_json::json!({"previous": "sha256:cc", "errors": 2});
        let views: Vec<PluginView> = serde_json::from_value(serde_json::json!([rolled, watched, base])).unwrap();
        let table = table(&views);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].contains("RELOAD"), "{table}");
        assert!(lines[1].starts_with("guardrail") && lines[1].contains("rolled_back"), "{table}");
        assert!(lines[2].starts_with("masker") && lines[2].contains("applied (watched: 2 errors)"), "{table}");
        assert!(!lines[3].contains("rolled_back") && !lines[3].contains("watched"), "{table}");
    }
}
