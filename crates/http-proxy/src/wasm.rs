//! WASM plugins in the HTTP chain: a module built with the SDK's `#[hook(HttpRequest)]` (and the
//! other `http_*` / `connection_*` hooks of the schema catalogue) runs through the host's
//! `Plugin` (pooled instances, fuel, deadline, memory limits) beside Starlark scripts.

use std::sync::Arc;

use helios_plugin_host::schema::http::{HttpAction, HttpHookInput, HttpHookOutput};
use helios_plugin_host::schema::{Hook, Protocol};
use helios_plugin_host::{Plugin, PluginConfig, Runtime};
use helios_plugin_starlark::catalogue::HookPoint;
use helios_plugin_starlark::{HookContext, PluginEntry, Respond, Verdict};
use serde_json::Value as Json;

use crate::chain::HttpPlugin;

/// A loaded WASM module serving HTTP/connection hooks.
#[derive(Debug)]
pub struct WasmHttpPlugin {
    plugin: Arc<Plugin>,
    entry: PluginEntry,
    hooks: Vec<Hook>,
    points: Vec<HookPoint>,
}

fn protocol_name(p: Protocol) -> Option<&'static str> {
    match p {
        Protocol::Http => Some("http"),
        Protocol::Connection => Some("connection"),
        _ => None,
    }
}

impl WasmHttpPlugin {
    /// Loads `entry.path` (a `.wasm`) with `vars` as the plugin's config (`get_config`). Its
    /// registrations are the HTTP/connection hooks it exports, in catalogue order.
    pub fn load(runtime: &Runtime, entry: &PluginEntry) -> Result<WasmHttpPlugin, String> {
        let name = entry.effective_name();
        let config = entry
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
            .collect();
        let cfg = PluginConfig::new(name.clone()).config_map(config);
        let plugin = runtime.load_file(&entry.path, cfg).map_err(|e| format!("plugin \"{name}\": {e}"))?;
        let mut hooks = Vec::new();
        let mut points = Vec::new();
        for &h in plugin.hooks() {
            let id = h.id();
            if let Some(p) = protocol_name(id.protocol) {
                hooks.push(h);
                points.push(HookPoint::new(p, id.event, id.phase));
            }
        }
        if hooks.is_empty() {
            return Err(format!(
                "plugin \"{name}\": {} exports no HTTP or connection hook (http_on_request, http_on_response, ...)",
                entry.path.display()
            ));
        }
        Ok(WasmHttpPlugin { plugin, entry: entry.clone(), hooks, points })
    }
}

impl HttpPlugin for WasmHttpPlugin {
    fn name(&self) -> &str {
        self.plugin.name()
    }
    fn backend(&self) -> &'static str {
        "wasm"
    }
    fn entry(&self) -> &PluginEntry {
        &self.entry
    }
    fn points(&self) -> Vec<HookPoint> {
        self.points.clone()
    }
    fn call(&self, index: usize, msg: &mut Json, ctx: &HookContext) -> Result<Verdict, String> {
        let hook = self.hooks[index];
        let input = HttpHookInput { msg: std::mem::take(msg), client: ctx.client.clone(), conn_id: ctx.conn_id };
        let bytes = serde_json::to_vec(&input);
        *msg = input.msg;
        let bytes = bytes.map_err(|e| format!("plugin \"{}\": cannot encode msg: {e}", self.name()))?;
        let out: HttpHookOutput = self
            .plugin
            .call_with(hook, &bytes, |b| serde_json::from_slice(b).map_err(|e| format!("{hook} answered {e}")))
            .map_err(|e| e.to_string())?;
        if let Some(m) = out.msg {
            if !m.is_object() {
                return Err(format!("plugin \"{}\" ({hook}): msg must stay a JSON object", self.name()));
            }
            *msg = m;
        }
        Ok(match out.action {
            HttpAction::Continue => Verdict::Continue,
            HttpAction::Drop => Verdict::Drop,
            HttpAction::Respond => {
                let r = out.response.unwrap_or_default();
                Verdict::Respond(Respond { status: r.status, headers: r.headers.into_iter().collect(), body: r.body })
            }
        })
    }
}
