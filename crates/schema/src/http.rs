//! The JSON a WASM plugin exchanges on the HTTP host's hooks (yorishiro's `http` and `connection`
//! protocols), the same hook points a Starlark script reaches with `register_hook`.
//!
//! The guest gets the message as a JSON object (the same dict a script sees as `msg`) and answers
//! an action, optionally with the message as it left it; a message it does not return is unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What the host sends to an `http_*` or `connection_*` hook.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpHookInput {
    /// Requests: `method`, `url`, `path`, `query`, `version`, `headers` (lower-case names; a
    /// repeated header is a list), `body` (None past the cap), `body_streamed`, `client`.
    /// Responses: `status`, `headers`, `body`, `body_streamed`, `request`.
    /// Connection events: `client`, `conn_id` (and `requests` on disconnect).
    pub msg: Value,
    /// The client's address.
    pub client: String,
    /// The connection's number, unique per host process.
    pub conn_id: u64,
}

/// What a hook asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpAction {
    /// Go on.
    #[default]
    Continue,
    /// Close without answering (on `on_connect`: refuse the connection).
    Drop,
    /// Answer with [`HttpHookOutput::response`].
    Respond,
}

/// A response made by the plugin.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

/// What an `http_*` or `connection_*` hook answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpHookOutput {
    pub action: HttpAction,
    /// The message as the plugin leaves it (what later plugins see); absent means unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msg: Option<Value>,
    /// The answer, with `action: respond`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<HttpResponse>,
}

impl HttpHookOutput {
    /// Continue with `msg` as changed.
    pub fn continue_with(msg: Value) -> HttpHookOutput {
        HttpHookOutput { action: HttpAction::Continue, msg: Some(msg), response: None }
    }
    /// Answer with `status` and `body`.
    pub fn respond(status: u16, body: impl Into<String>) -> HttpHookOutput {
        HttpHookOutput {
            action: HttpAction::Respond,
            msg: None,
            response: Some(HttpResponse { status, headers: BTreeMap::new(), body: body.into() }),
        }
    }
}
