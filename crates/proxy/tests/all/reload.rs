//! SIGHUP reloads proxy.toml in the helios-proxy binary: a good file replaces nodes (and the rest)
//! for new sessions, a bad one is logged and the running configuration stays, a changed listener
//! is reported as needing a restart.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::pg::{self, PgCluster};

struct Running {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn hup(&self) {
        let ok = Command::new("kill").args(["-HUP", &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
    }
}

fn config(listen_port: u16, node_port: u16) -> String {
    format!(
        "[[listeners]]\nlisten = \"127.0.0.1:{listen_port}\"\n[[nodes]]\nname = \"primary\"\nhost = \"127.0.0.1\"\nport = {node_port}\nrole = \"primary\"\n"
    )
}

fn server_port(proxy_port: u16) -> Option<String> {
    let out = pg::psql_raw(proxy_port, pg::SUPERUSER, "postgres", "SELECT inet_server_port();", &[]);
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sighup_reloads_a_good_file_and_keeps_running_on_a_bad_one() {
    let a = PgCluster::start();
    let b = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    let listen = pg::free_port();
    std::fs::write(&path, config(listen, a.port())).unwrap();
    let log = dir.path().join("proxy.log");
    let child = Command::new(env!("CARGO_BIN_EXE_helios-proxy"))
        .arg("--config")
        .arg(&path)
        .env("HELIOS_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start helios-proxy");
    let p = Running { child, log };
    wait_for("the proxy serves node a", || server_port(listen) == Some(a.port().to_string()));
    // A session open across the reload keeps its node; new sessions get the new one.
    let mut held = crate::support::raw::RawClient::connect(listen, pg::SUPERUSER);

    std::fs::write(&path, config(listen, b.port())).unwrap();
    p.hup();
    wait_for("new sessions reach node b", || server_port(listen) == Some(b.port().to_string()));
    held.query("SELECT inet_server_port()");
    let msgs = held.read_until_ready();
    let row = msgs.iter().find(|m| m.0 == b'D').expect("a row");
    assert!(row.1.ends_with(a.port().to_string().as_bytes()), "the open session stays on a: {row:?}");

    std::fs::write(&path, "this is [not toml").unwrap();
    p.hup();
    wait_for("the bad file is logged", || p.log().contains("reload failed"));
    let log = p.log();
    let line = log.lines().find(|l| l.contains("reload failed")).unwrap_or_default();
    assert!(
        line.contains("proxy.toml") && line.contains("TOML"),
        "the error line names the file and the error: {line}"
    );
    assert_eq!(server_port(listen), Some(b.port().to_string()), "the running configuration stays");

    let other = pg::free_port();
    std::fs::write(&path, config(other, b.port())).unwrap();
    p.hup();
    wait_for("the listener change is reported", || p.log().contains("after a restart"));
    assert!(p.log().contains(&format!("127.0.0.1:{other}")), "{}", p.log());
    assert_eq!(server_port(listen), Some(b.port().to_string()), "the bound listener keeps serving");
}
