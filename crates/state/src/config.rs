//! The `[state]` table of `proxy.toml`.
//!
//! ```toml
//! [state]
//! backend = "sqlite"            # "memory" (default) | "sqlite" | "redis"
//! path = "/var/lib/helios/state.db"
//! synchronous = "full"          # sqlite: "full" (default) | "normal"
//! # url = "redis://127.0.0.1:6379/0"
//! # pool_size = 16              # redis: connections kept (default 16)
//! # connect_timeout_ms = 1000   # redis (default 1000)
//! # timeout_ms = 1000           # redis: per command (default 1000)
//! # key_prefix = "helios"       # redis: keys are <prefix>:{<namespace hex>}:kv (default "helios")
//! # max_keys = 1024             # per plugin, every backend
//! # max_total_bytes = 67108864  # per plugin, every backend
//! ```
//!
//! Unknown fields and settings of another backend are errors: a typo must not silently fall back.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::{Caps, StateError, redis::RedisOptions, sqlite::Synchronous};

/// Which store keeps plugin state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// In the process; lost on restart, not shared between replicas (default).
    #[default]
    Memory,
    /// A SQLite file: survives restarts of this host.
    Sqlite,
    /// A Redis server: survives restarts and is shared by every replica pointing at it.
    Redis,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Memory => "memory",
            BackendKind::Sqlite => "sqlite",
            BackendKind::Redis => "redis",
        }
    }
}

/// The `[state]` table. Denies unknown fields: a misspelt setting must be an error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    #[serde(default)]
    pub backend: BackendKind,
    /// sqlite: the database file (its directory must exist).
    pub path: Option<PathBuf>,
    /// sqlite: `"full"` (default) or `"normal"`.
    pub synchronous: Option<Synchronous>,
    /// redis: `redis://[user:password@]host:port[/db]`.
    pub url: Option<String>,
    /// redis: connections kept open. Default: 16.
    pub pool_size: Option<usize>,
    /// redis: connecting. Default: 1000 ms.
    pub connect_timeout_ms: Option<u64>,
    /// redis: each command's read and write. Default: 1000 ms.
    pub timeout_ms: Option<u64>,
    /// redis: key prefix, so several fleets can share one server. Default: `"helios"`.
    pub key_prefix: Option<String>,
    /// Keys per plugin. Default: 1024.
    pub max_keys: Option<usize>,
    /// Bytes (keys + values) per plugin. Default: 64 MiB.
    pub max_total_bytes: Option<usize>,
}

impl StateConfig {
    /// A config for `backend` with every other setting at its default.
    pub fn new(backend: BackendKind) -> Self {
        StateConfig { backend, ..Default::default() }
    }

    /// Refuses settings that belong to another backend and missing required ones.
    pub fn validate(&self) -> Result<(), StateError> {
        let b = self.backend.name();
        let misplaced = |field: &str| StateError::Config(format!("`{field}` is not a setting of backend \"{b}\""));
        let sqlite_only = [("path", self.path.is_some()), ("synchronous", self.synchronous.is_some())];
        let redis_only = [
            ("url", self.url.is_some()),
            ("pool_size", self.pool_size.is_some()),
            ("connect_timeout_ms", self.connect_timeout_ms.is_some()),
            ("timeout_ms", self.timeout_ms.is_some()),
            ("key_prefix", self.key_prefix.is_some()),
        ];
        let foreign: Vec<_> = match self.backend {
            BackendKind::Memory => sqlite_only.iter().chain(&redis_only).collect(),
            BackendKind::Sqlite => redis_only.iter().collect(),
            BackendKind::Redis => sqlite_only.iter().collect(),
        };
        if let Some((field, _)) = foreign.into_iter().find(|(_, set)| *set) {
            return Err(misplaced(field));
        }
        match self.backend {
            BackendKind::Sqlite if self.path.is_none() => {
                Err(StateError::Config("backend \"sqlite\" needs `path` (the database file)".into()))
            }
            BackendKind::Redis if self.url.is_none() => {
                Err(StateError::Config("backend \"redis\" needs `url` (redis://host:port/db)".into()))
            }
            BackendKind::Redis if self.pool_size == Some(0) => {
                Err(StateError::Config("`pool_size` must be at least 1".into()))
            }
            _ => Ok(()),
        }
    }

    /// The per-plugin caps, defaults filled in.
    pub fn caps(&self) -> Caps {
        let d = Caps::default();
        Caps {
            max_value_bytes: d.max_value_bytes,
            max_keys: self.max_keys.unwrap_or(d.max_keys),
            max_bytes: self.max_total_bytes.unwrap_or(d.max_bytes),
        }
    }

    pub(crate) fn redis_options(&self) -> RedisOptions {
        let d = RedisOptions::default();
        RedisOptions {
            pool_size: self.pool_size.unwrap_or(d.pool_size),
            connect_timeout: self.connect_timeout_ms.map(Duration::from_millis).unwrap_or(d.connect_timeout),
            timeout: self.timeout_ms.map(Duration::from_millis).unwrap_or(d.timeout),
            key_prefix: self.key_prefix.clone().unwrap_or(d.key_prefix),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<StateConfig, String> {
        let cfg: StateConfig = toml::from_str(s).map_err(|e| e.to_string())?;
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }

    #[test]
    fn each_backend_parses_with_its_settings() {
        assert_eq!(parse("").unwrap().backend, BackendKind::Memory);
        let s = parse("backend = \"sqlite\"\npath = \"/tmp/s.db\"\nsynchronous = \"normal\"").unwrap();
        assert_eq!((s.backend, s.synchronous), (BackendKind::Sqlite, Some(Synchronous::Normal)));
        let r = parse("backend = \"redis\"\nurl = \"redis://127.0.0.1:1/\"\ntimeout_ms = 50\nmax_keys = 7").unwrap();
        assert_eq!(r.redis_options().timeout, Duration::from_millis(50));
        assert_eq!(r.caps().max_keys, 7);
    }

    #[test]
    fn typos_missing_and_misplaced_settings_are_errors_naming_the_field() {
        assert!(parse("backend = \"sqlit\"").unwrap_err().contains("unknown variant `sqlit`"));
        assert!(parse("backend = \"sqlite\"\npaht = \"x\"").unwrap_err().contains("unknown field `paht`"));
        assert!(parse("backend = \"sqlite\"").unwrap_err().contains("needs `path`"));
        assert!(parse("backend = \"redis\"").unwrap_err().contains("needs `url`"));
        let e = parse("backend = \"sqlite\"\npath = \"x\"\nurl = \"redis://h/\"").unwrap_err();
        assert!(e.contains("`url` is not a setting of backend \"sqlite\""), "{e}");
        let e = parse("path = \"x\"").unwrap_err();
        assert!(e.contains("`path` is not a setting of backend \"memory\""), "{e}");
    }
}
