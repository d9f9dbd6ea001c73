//! Building the `GuardRequest` a guard sees from an MCP `tools/call`.
//!
//! The host extracts what the arguments show, so every guard does not re-implement it:
//!
//! | arguments hold | `action_type` | extracted |
//! |---|---|---|
//! | `path`, `file`, `file_path`, `filename`, `filepath`, `directory`, `dir` (a string) | `file_delete` if the tool name says delete/remove/rm/unlink, `file_write` if it says write/create/edit/save/append/move/put, else `file_access` | `extracted_path` |
//! | `url`, `uri`, `endpoint` (a string) | `network` | `extracted_target` = the URL's host |
//! | `host`, `hostname` (a string) | `network` | `extracted_target` = that value |
//! | `command`, `cmd` (a string) | `command_exec` | — |
//!
//! The first rule that matches sets `action_type`; a path and a target can both be extracted.

use helios_plugin_schema::GuardRequest;
use serde_json::{Map, Value};

const PATH_KEYS: &[&str] = &["path", "file", "file_path", "filepath", "filename", "directory", "dir"];
const URL_KEYS: &[&str] = &["url", "uri", "endpoint"];
const HOST_KEYS: &[&str] = &["host", "hostname"];
const COMMAND_KEYS: &[&str] = &["command", "cmd"];

/// Who is calling and through which upstream.
#[derive(Debug, Clone, Default)]
pub struct CallSite<'a> {
    /// The upstream's tool name (without the gateway's prefix).
    pub tool: &'a str,
    pub server_id: &'a str,
    pub agent_id: &'a str,
    pub scopes: &'a [String],
}

/// The request a guard evaluates for one tool call.
pub fn guard_request(site: &CallSite<'_>, arguments: Option<&Map<String, Value>>) -> GuardRequest {
    let mut req = GuardRequest {
        tool_name: site.tool.to_string(),
        server_id: site.server_id.to_string(),
        agent_id: site.agent_id.to_string(),
        arguments: arguments.map(|a| Value::Object(a.clone())).unwrap_or(Value::Object(Map::new())),
        scopes: site.scopes.to_vec(),
        ..Default::default()
    };
    let Some(args) = arguments else { return req };
    let string = |keys: &[&str]| keys.iter().find_map(|k| args.get(*k).and_then(Value::as_str)).map(str::to_string);
    if let Some(path) = string(PATH_KEYS) {
        req.action_type = Some(file_action(site.tool).to_string());
        req.extracted_path = Some(path);
    }
    if let Some(url) = string(URL_KEYS) {
        req.action_type.get_or_insert_with(|| "network".into());
        req.extracted_target = Some(url_host(&url).unwrap_or(&url).to_string());
    } else if let Some(host) = string(HOST_KEYS) {
        req.action_type.get_or_insert_with(|| "network".into());
        req.extracted_target = Some(host);
    }
    if string(COMMAND_KEYS).is_some() {
        req.action_type.get_or_insert_with(|| "command_exec".into());
    }
    req
}

fn file_action(tool: &str) -> &'static str {
    let t = tool.to_ascii_lowercase();
    let words: Vec<&str> = t.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect();
    let has = |list: &[&str]| words.iter().any(|w| list.contains(w));
    if has(&["delete", "remove", "rm", "unlink", "rmdir"]) {
        "file_delete"
    } else if has(&["write", "create", "edit", "save", "append", "move", "put", "mkdir"]) {
        "file_write"
    } else {
        "file_access"
    }
}

/// `https://user@docs.example.com:443/x?y` → `docs.example.com`.
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
    let host =
        if let Some(v6) = host_port.strip_prefix('[') { v6.split(']').next()? } else { host_port.split(':').next()? };
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(tool: &str, args: Value) -> GuardRequest {
        let site = CallSite { tool, server_id: "fs", agent_id: "coder", scopes: &[] };
        guard_request(&site, args.as_object())
    }

    #[test]
    fn file_arguments_give_a_path_and_an_action_from_the_tool_name() {
        let r = req("read_file", json!({"path": "/workspace/a.rs"}));
        assert_eq!(
            (r.action_type.as_deref(), r.extracted_path.as_deref()),
            (Some("file_access"), Some("/workspace/a.rs"))
        );
        assert_eq!(req("write_file", json!({"path": "x"})).action_type.as_deref(), Some("file_write"));
        assert_eq!(req("rm", json!({"file": "/"})).action_type.as_deref(), Some("file_delete"));
        assert_eq!(req("delete-file", json!({"path": "/"})).action_type.as_deref(), Some("file_delete"));
        assert_eq!(
            req("farm", json!({"path": "/"})).action_type.as_deref(),
            Some("file_access"),
            "words, not substrings"
        );
    }

    #[test]
    fn urls_give_their_host_as_the_target() {
        let r = req("http_get", json!({"url": "https://user@docs.example.com:8443/refunds?x=1"}));
        assert_eq!(
            (r.action_type.as_deref(), r.extracted_target.as_deref()),
            (Some("network"), Some("docs.example.com"))
        );
        let r = req("curl", json!({"url": "http://[::1]:80/"}));
        assert_eq!(r.extracted_target.as_deref(), Some("::1"));
        let r = req("ping", json!({"host": "10.0.0.1"}));
        assert_eq!(r.extracted_target.as_deref(), Some("10.0.0.1"));
    }

    #[test]
    fn nothing_is_invented_when_the_arguments_do_not_show_it() {
        let r = req("calculator", json!({"expression": "1+1"}));
        assert_eq!((r.action_type, r.extracted_path, r.extracted_target), (None, None, None));
        let r = req("read_file", json!({"path": 3}));
        assert_eq!(r.extracted_path, None, "only strings are paths");
        let site = CallSite { tool: "t", server_id: "s", agent_id: "a", scopes: &["fs:read".to_string()] };
        let r = guard_request(&site, None);
        assert_eq!((r.arguments, r.scopes), (json!({}), vec!["fs:read".to_string()]));
        assert_eq!(req("shell_exec", json!({"command": "ls"})).action_type.as_deref(), Some("command_exec"));
    }
}
