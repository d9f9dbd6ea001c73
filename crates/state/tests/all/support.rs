//! A real `redis-server` on an ephemeral loopback port, and one store per backend.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use helios_plugin_state::{BackendKind, Caps, RedisKv, SqliteKv, StateConfig, Store, Synchronous, redis::RedisOptions};

/// A `redis-server` owned by a test: its own port and directory, an append-only file, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    fsync: &'static str,
}

impl RedisServer {
    /// Append-only file fsynced once a second (Redis's default trade-off).
    pub fn start() -> RedisServer {
        Self::start_with("everysec")
    }

    /// Append-only file fsynced before every reply, so an acknowledged write survives a kill.
    pub fn start_durable() -> RedisServer {
        Self::start_with("always")
    }

    fn start_with(fsync: &'static str) -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let mut s = RedisServer { child: None, port, dir: tempfile::tempdir().expect("tempdir"), fsync };
        s.restart();
        s
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server (again) on the same port and directory, and waits until it answers.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", self.fsync, "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) is installed");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = redis::Client::open(self.url()).expect("url");
        loop {
            if let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(200))
                && redis::cmd("PING").query::<String>(&mut c).is_ok()
            {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server on port {} did not answer within 20 s", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no shutdown, no final save.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

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
