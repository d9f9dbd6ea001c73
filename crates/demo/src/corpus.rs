//! Reading the bundled corpus.

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context, Result};
use helios_plugin_schema::GuardRequest;
use serde::Deserialize;

/// One line of `sql.jsonl`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    pub sql: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub identity: Option<String>,
    #[serde(default)]
    pub database: Option<String>,
    /// What the corpus author expects; shown with `--notes`.
    #[serde(default)]
    pub note: String,
}

fn lines<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{}:{}", path.display(), i + 1)))
        .collect()
}

pub fn statements(path: &Path) -> Result<Vec<Statement>> {
    lines(path)
}

pub fn tool_calls(path: &Path) -> Result<Vec<GuardRequest>> {
    lines(path)
}
