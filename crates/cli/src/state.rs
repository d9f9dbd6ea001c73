//! `helios-plugin state dump|get|delete --plugin NAME`: an operator's view of a plugin's KV state,
//! offline on a SQLite file or online on a Redis server, through the same backends the host uses.
//!
//! The store comes from `--config proxy.toml` (its `[state]` table), `--sqlite FILE` or `--redis URL`.
//! Exit 0 done, 1 the key is missing (`get`), 2 the store cannot be opened or fails.

use std::{io::Write, path::PathBuf};

use anyhow::{Context, Result, bail};
use helios_plugin_state::{BackendKind, StateConfig, Store};

#[derive(Debug, clap::Args)]
pub struct StateArgs {
    #[command(subcommand)]
    pub command: StateCommand,
}

#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct StoreArgs {
    /// A proxy.toml whose `[state]` table names the store.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// A SQLite state file.
    #[arg(long)]
    pub sqlite: Option<PathBuf>,
    /// A Redis server: redis://[user:password@]host:port[/db].
    #[arg(long)]
    pub redis: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum StateCommand {
    /// Print every key of a plugin, one `key<TAB>value` per line (non-printable bytes escaped as \xNN).
    Dump {
        #[arg(long)]
        plugin: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Print one value, raw, to stdout. Exit 1 if the key is missing.
    Get {
        #[arg(long)]
        plugin: String,
        key: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove one key (a missing key is not an error).
    Delete {
        #[arg(long)]
        plugin: String,
        key: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the plugins that hold state (SQLite and Redis).
    Plugins {
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// `[state]` out of a proxy.toml; the rest of the file is the proxy's business.
#[derive(serde::Deserialize)]
struct ProxyToml {
    #[serde(default)]
    state: StateConfig,
}

fn config(args: &StoreArgs) -> Result<StateConfig> {
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let t: ProxyToml = toml::from_str(&text).with_context(|| format!("{}: [state]", path.display()))?;
        if t.state.backend == BackendKind::Memory {
            bail!("{}: [state] backend is \"memory\": its state lives only inside the running proxy", path.display());
        }
        return Ok(t.state);
    }
    if let Some(path) = &args.sqlite {
        if !path.exists() {
            bail!("{}: no such state file", path.display());
        }
        return Ok(StateConfig { path: Some(path.clone()), ..StateConfig::new(BackendKind::Sqlite) });
    }
    match &args.redis {
        Some(url) => Ok(StateConfig { url: Some(url.clone()), ..StateConfig::new(BackendKind::Redis) }),
        None => bail!("name the store with --config, --sqlite or --redis"),
    }
}

fn escaped(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

pub fn run(args: StateArgs) -> Result<i32> {
    let store_args = match &args.command {
        StateCommand::Dump { store, .. }
        | StateCommand::Get { store, .. }
        | StateCommand::Delete { store, .. }
        | StateCommand::Plugins { store } => store,
    };
    let store = match config(store_args).and_then(|c| Store::open(&c).map_err(anyhow::Error::from)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(2);
        }
    };
    let result = match args.command {
        StateCommand::Dump { plugin, .. } => store.entries(&plugin).map(|entries| {
            let mut out = std::io::stdout().lock();
            for (k, v) in &entries {
                let _ = writeln!(out, "{}\t{}", escaped(k), escaped(v));
            }
            eprintln!("{plugin}: {} keys in {}", entries.len(), store.describe());
            0
        }),
        StateCommand::Get { plugin, key, .. } => store.get(&plugin, key.as_bytes()).map(|v| match v {
            Some(v) => {
                let _ = std::io::stdout().lock().write_all(&v);
                0
            }
            None => {
                eprintln!("{plugin}: no key {key:?}");
                1
            }
        }),
        StateCommand::Delete { plugin, key, .. } => store.delete(&plugin, key.as_bytes()).map(|()| {
            eprintln!("{plugin}: deleted {key:?}");
            0
        }),
        StateCommand::Plugins { .. } => store.namespaces().map(|names| {
            for n in names {
                println!("{n}");
            }
            0
        }),
    };
    match result {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(2)
        }
    }
}
