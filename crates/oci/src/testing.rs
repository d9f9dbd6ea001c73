//! A real registry for tests: Debian's `docker-registry` (the CNCF distribution registry) on a
//! loopback port with its storage in a temporary directory, stopped when dropped.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The registry program (`docker-registry` on Debian).
pub const REGISTRY_BIN: &str = "docker-registry";

/// A running registry; killed and its storage removed on drop.
#[derive(Debug)]
pub struct LoopbackRegistry {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    dir: PathBuf,
}

impl LoopbackRegistry {
    /// Starts a registry under `dir` (its config, storage and log go there) and waits until it
    /// answers `GET /v2/`, for at most 30 s.
    pub fn start(dir: &Path) -> std::io::Result<LoopbackRegistry> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage)?;
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                storage.display()
            ),
        )?;
        let log = std::fs::File::create(dir.join("registry.log"))?;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot start {REGISTRY_BIN}: {e}")))?;
        let mut reg = LoopbackRegistry { child, addr, dir: dir.to_path_buf() };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if reg.answers() {
                return Ok(reg);
            }
            if let Some(status) = reg.child.try_wait()? {
                let log = std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
                return Err(std::io::Error::other(format!("{REGISTRY_BIN} exited with {status}: {log}")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(std::io::Error::other(format!("{REGISTRY_BIN} did not answer on {} within 30 s", reg.addr)))
    }

    fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(&self.addr) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = format!("GET /v2/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.addr);
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.1 200")
    }

    /// The registry's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// Stops the registry now (a later pull by tag must then fail).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LoopbackRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}
