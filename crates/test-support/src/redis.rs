//! A real `redis-server` (Debian package `redis-server`) on an ephemeral loopback port, owned by a
//! test or a benchmark: its own directory, an append-only file, killed (SIGKILL) on drop. One copy
//! for crates/state's and crates/proxy's tests and the bench's state section.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a started server has to answer `PING`.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// A `redis-server` child process; see the module doc.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    /// The loopback port it listens on (kept across [`RedisServer::restart`]).
    pub port: u16,
    /// Its working directory (the append-only file lives here).
    pub dir: tempfile::TempDir,
    fsync: &'static str,
}

impl RedisServer {
    /// Append-only file fsynced once a second (Redis's default trade-off). Panics, failing the
    /// test, when the server cannot be started.
    pub fn start() -> RedisServer {
        Self::try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Append-only file fsynced before every reply, so an acknowledged write survives a kill.
    /// Panics, failing the test, when the server cannot be started.
    pub fn start_durable() -> RedisServer {
        Self::try_start_with("always").unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`RedisServer::start`], or an error saying why not (e.g. redis-server is not installed).
    pub fn try_start() -> Result<RedisServer, String> {
        Self::try_start_with("everysec")
    }

    fn try_start_with(fsync: &'static str) -> Result<RedisServer, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free loopback port for redis-server: {e}"))?
            .port();
        let dir = tempfile::tempdir().map_err(|e| format!("no temporary directory for redis-server: {e}"))?;
        let mut s = RedisServer { child: None, port, dir, fsync };
        s.try_restart()?;
        Ok(s)
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server (again) on the same port and directory; returns once it answers `PING`.
    /// Panics, failing the test, when it does not.
    pub fn restart(&mut self) {
        self.try_restart().unwrap_or_else(|e| panic!("{e}"));
    }

    fn try_restart(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", self.fsync, "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server (Debian package redis-server): {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let pong = Command::new("redis-cli")
                .args(["-p", &self.port.to_string(), "ping"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG");
            if pong {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!("redis-server on port {} did not answer within {READY_WITHIN:?}", self.port));
            }
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
