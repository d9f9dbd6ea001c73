//! http-header-wasm: a WASM plugin on the HTTP host's hooks, written with the SDK's `#[hook]`
//! macro. It runs in the same chain as Starlark scripts, in config order:
//!
//! * `http_on_request` (http/on_request/pre_pipeline): sets the header named by config `header`
//!   (default `x-wasm`) to config `value` (default `added-by-wasm`), and appends `wasm` to a
//!   comma-separated `x-order` header, so a test can see where in the chain it ran;
//! * `http_on_response` (http/on_response/pre_pipeline): sets `x-wasm-seen-status` to the
//!   upstream's status.

use helios_plugin_abi::schema::http::{HttpHookInput, HttpHookOutput};
use helios_plugin_abi::*;
use serde_json::Value;

fn set_header(msg: &mut Value, name: &str, value: String) {
    if let Some(h) = msg.get_mut("headers").and_then(Value::as_object_mut) {
        h.insert(name.to_string(), Value::from(value));
    }
}

/// Adds the configured header and marks its place in `x-order`.
#[hook(HttpRequest)]
pub fn http_on_request(input: HttpHookInput) -> HttpHookOutput {
    let mut msg = input.msg;
    let name = get_config("header").unwrap_or_else(|| "x-wasm".into());
    let value = get_config("value").unwrap_or_else(|| "added-by-wasm".into());
    set_header(&mut msg, &name, value);
    let order = msg.pointer("/headers/x-order").and_then(Value::as_str).map(|o| format!("{o},wasm"));
    set_header(&mut msg, "x-order", order.unwrap_or_else(|| "wasm".into()));
    HttpHookOutput::continue_with(msg)
}

/// Reports the upstream's status in a response header.
#[hook(HttpResponse)]
pub fn http_on_response(input: HttpHookInput) -> HttpHookOutput {
    let mut msg = input.msg;
    let status = msg.get("status").and_then(Value::as_u64).unwrap_or(0);
    set_header(&mut msg, "x-wasm-seen-status", status.to_string());
    HttpHookOutput::continue_with(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn adds_the_header_and_its_order_mark() {
        testing::reset();
        let out = http_on_request(HttpHookInput { msg: json!({"headers": {"x-order": "a"}}), ..Default::default() });
        let msg = out.msg.unwrap();
        assert_eq!(msg["headers"]["x-wasm"], "added-by-wasm");
        assert_eq!(msg["headers"]["x-order"], "a,wasm");
        let out = http_on_response(HttpHookInput { msg: json!({"status": 201, "headers": {}}), ..Default::default() });
        assert_eq!(out.msg.unwrap()["headers"]["x-wasm-seen-status"], "201");
    }
}
