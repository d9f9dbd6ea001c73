//! The corpus and the demo configuration, shared by the tests.

use std::collections::BTreeMap;

use helios_plugin_e2e::{Host, repo_root};
use helios_plugin_host::{OnError, Plugin, PluginConfig};
use helios_plugin_schema::QueryContext;
use std::sync::Arc;

/// One line of `examples/corpus/sql.jsonl`.
#[derive(Debug, Clone)]
pub struct Line {
    pub ctx: QueryContext,
    pub note: String,
}

pub fn corpus() -> Vec<Line> {
    let text =
        std::fs::read_to_string(repo_root().join("examples/corpus/sql.jsonl")).expect("examples/corpus/sql.jsonl");
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("sql.jsonl line {}: {e}", i + 1));
            let attrs: Vec<(String, String)> = v["attributes"]
                .as_object()
                .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect())
                .unwrap_or_default();
            let mut ctx = helios_plugin_e2e::query(
                &format!("corpus-{}", i + 1),
                v["sql"].as_str().unwrap_or_default(),
                v["identity"].as_str(),
                &[],
            );
            ctx.hook_context.attributes = attrs.into_iter().collect();
            ctx.hook_context.database = v["database"].as_str().map(str::to_owned);
            Line { ctx, note: v["note"].as_str().unwrap_or_default().to_owned() }
        })
        .collect()
}

/// One `[[plugins]]` entry of `examples/corpus/proxy.toml`: name, priority, on_error, config.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub priority: i32,
    pub on_error: OnError,
    pub config: BTreeMap<String, String>,
}

pub fn demo_config() -> Vec<Entry> {
    let text =
        std::fs::read_to_string(repo_root().join("examples/corpus/proxy.toml")).expect("examples/corpus/proxy.toml");
    let doc: toml::Table = toml::from_str(&text).expect("proxy.toml parses");
    doc["plugins"]
        .as_array()
        .expect("[[plugins]]")
        .iter()
        .map(|p| Entry {
            name: p["name"].as_str().unwrap().to_owned(),
            priority: p["priority"].as_integer().unwrap() as i32,
            on_error: if p["on_error"].as_str() == Some("abort") { OnError::Abort } else { OnError::Skip },
            config: p["config"]
                .as_table()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect(),
        })
        .collect()
}

/// The demo config of one plugin.
pub fn config_of(name: &str) -> BTreeMap<String, String> {
    demo_config().into_iter().find(|e| e.name == name).unwrap_or_else(|| panic!("no {name} in proxy.toml")).config
}

/// Loads one plugin with its demo config.
pub fn load_demo(host: &Host, name: &str) -> Arc<Plugin> {
    let e = demo_config().into_iter().find(|e| e.name == name).unwrap_or_else(|| panic!("no {name} in proxy.toml"));
    let cfg = PluginConfig::new(&e.name).config_map(e.config).priority(e.priority).on_error(e.on_error);
    host.try_load(name, cfg).unwrap_or_else(|e| panic!("{e}"))
}

/// A lookup over a config map, the shape the plugins' `from_lookup` constructors take.
pub fn lookup(map: &BTreeMap<String, String>) -> impl Fn(&str) -> Option<String> + '_ {
    move |k| map.get(k).cloned()
}
