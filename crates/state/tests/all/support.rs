//! A real `redis-server` on an ephemeral loopback port (helios-plugin-test-support's), and one store
//! per backend.

use std::{path::PathBuf, time::Duration};

use helios_plugin_state::{BackendKind, Caps, RedisKv, SqliteKv, StateConfig, Store, Synchronous, redis::RedisOptions};
pub use helios_plugin_test_support::redis::RedisServer;

/// A temp dir with a SQLite path in it.
pub fn sqlite_path() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    (dir, path)
}

/// Short timeouts so failure tests run quickly.
pub fn redis_options() -> RedisOptions {
    RedisOptions {
        timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(500),
        ..Default::default()
    }
}

/// One store per backend with `caps`, and what keeps them alive.
pub struct Backends {
    pub stores: Vec<(&'static str, Store)>,
    _dir: tempfile::TempDir,
    _redis: RedisServer,
}

pub fn backends(caps: Caps) -> Backends {
    let (dir, path) = sqlite_path();
    let redis = RedisServer::start();
    let mem = Store::open(&StateConfig {
        max_keys: Some(caps.max_keys),
        max_total_bytes: Some(caps.max_bytes),
        ..StateConfig::new(BackendKind::Memory)
    })
    .expect("memory");
    let sqlite = Store::Sqlite(SqliteKv::open(&path, caps, Synchronous::Full).expect("sqlite").into());
    let rkv = Store::Redis(RedisKv::connect(&redis.url(), caps, redis_options()).expect("redis").into());
    Backends { stores: vec![("memory", mem), ("sqlite", sqlite), ("redis", rkv)], _dir: dir, _redis: redis }
}
