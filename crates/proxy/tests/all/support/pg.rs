//! Throw-away PostgreSQL 15 clusters built with Debian's binaries, on free loopback ports.
//!
//! initdb and postgres refuse to run as root, and CI runs as root: then every server command runs as
//! an unprivileged system user ([`PG_OS_USER`], created on first use) through `runuser`. One template
//! data directory (roles and pg_hba already set up) is made once per machine and copied for each
//! cluster, so a test pays for a copy and a start, not for an initdb. A [`PgCluster`] stops its
//! server and removes its files when dropped: no postgres outlives the test that started it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where Debian installs the PostgreSQL 15 server binaries.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// The unprivileged OS user that owns and runs clusters when the tests run as root.
pub const PG_OS_USER: &str = "helios-pg";
/// Superuser role of every cluster (trust from loopback).
pub const SUPERUSER: &str = "postgres";
/// A role that must log in with md5.
pub const MD5_USER: &str = "md5user";
/// A role that must log in with SCRAM-SHA-256.
pub const SCRAM_USER: &str = "scramuser";
/// The password of [`MD5_USER`] and [`SCRAM_USER`].
pub const PASSWORD: &str = "s3cret-pw";

/// Bump when the template's contents change, so an old template on disk is not reused.
const TEMPLATE_VERSION: u32 = 2;

fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        let out = Command::new("id").arg("-u").output().expect("running id -u");
        String::from_utf8_lossy(&out.stdout).trim() == "0"
    })
}

/// Creates [`PG_OS_USER`] if it does not exist yet (only when running as root). Idempotent and safe
/// when several test processes race to create it.
fn ensure_os_user() {
    if !is_root() {
        return;
    }
    let exists = || {
        Command::new("id")
            .args(["-u", PG_OS_USER])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if exists() {
        return;
    }
    let out = Command::new("useradd")
        .args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_OS_USER])
        .output()
        .expect("running useradd");
    assert!(exists(), "could not create OS user {PG_OS_USER}: {}", String::from_utf8_lossy(&out.stderr));
}

fn os_uid_gid() -> Option<(u32, u32)> {
    if !is_root() {
        return None;
    }
    let get = |flag: &str| {
        let out = Command::new("id").args([flag, PG_OS_USER]).output().expect("running id");
        String::from_utf8_lossy(&out.stdout).trim().parse::<u32>().expect("numeric id")
    };
    Some((get("-u"), get("-g")))
}

/// A command that runs a PostgreSQL server binary as [`PG_OS_USER`] when we are root.
fn pg_command(binary: &str) -> Command {
    let path = Path::new(PG_BIN).join(binary);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", PG_OS_USER, "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

fn run_checked(mut cmd: Command, what: &str) -> Output {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn chown_tree(path: &Path) {
    if let Some((uid, gid)) = os_uid_gid() {
        let out = Command::new("chown").arg("-R").arg(format!("{uid}:{gid}")).arg(path).output().expect("chown");
        assert!(out.status.success(), "chown {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port").local_addr().expect("local addr").port()
}

const HBA: &str = "\
local all all trust
host all md5user 127.0.0.1/32 md5
host all scramuser 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 trust
";

const SERVER_CONF: &str = "
# helios-proxy test cluster
listen_addresses = '127.0.0.1'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 60
shared_buffers = 16MB
logging_collector = off
log_min_messages = warning
";

/// The template data directory, created once per machine (per [`TEMPLATE_VERSION`]).
fn template_dir() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        ensure_os_user();
        let root = std::env::temp_dir();
        let final_dir = root.join(format!("helios-proxy-pg15-template-v{TEMPLATE_VERSION}"));
        if final_dir.join("data/PG_VERSION").exists() {
            return final_dir;
        }
        let work = tempfile::Builder::new().prefix("helios-pg-template-").tempdir_in(&root).expect("template temp dir");
        let work = work.keep();
        let data = work.join("data");
        chown_tree(&work);
        let mut initdb = pg_command("initdb");
        initdb.arg("-D").arg(&data).args(["-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C"]);
        run_checked(initdb, "initdb");
        std::fs::write(data.join("pg_hba.conf"), HBA).expect("write pg_hba.conf");
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).expect("read postgresql.conf");
        conf.push_str(SERVER_CONF);
        std::fs::write(data.join("postgresql.conf"), conf).expect("write postgresql.conf");
        chown_tree(&work);
        // Start once to create the roles, then stop.
        let mut c = Cluster { dir: work.clone(), port: free_port(), running: false };
        c.start();
        c.psql_ok(&format!(
            "SET password_encryption = 'md5'; CREATE ROLE {MD5_USER} LOGIN PASSWORD '{PASSWORD}';
             SET password_encryption = 'scram-sha-256'; CREATE ROLE {SCRAM_USER} LOGIN PASSWORD '{PASSWORD}';
             GRANT ALL ON SCHEMA public TO PUBLIC;"
        ));
        // synchronous_commit is off: a fast stop writes the new roles out, an immediate one may not.
        c.stop_mode("fast");
        // Another process may have won the race: then use its template and drop ours.
        if std::fs::rename(&work, &final_dir).is_err() {
            let _ = std::fs::remove_dir_all(&work);
        }
        final_dir
    })
}

/// The part of a cluster that knows how to start and stop its server.
struct Cluster {
    dir: PathBuf,
    port: u16,
    running: bool,
}

impl Cluster {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn start(&mut self) {
        let mut cmd = pg_command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .arg("-o")
            .arg(format!("-p {} -k {}", self.port, self.dir.display()))
            .args(["-w", "-t", "60", "start"])
            .stdout(Stdio::null());
        let out = cmd.stdin(Stdio::null()).output().expect("run pg_ctl start");
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            panic!(
                "pg_ctl start on port {} failed: {}\nserver log:\n{log}",
                self.port,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.running = true;
    }

    fn stop(&mut self) {
        self.stop_mode("immediate");
    }

    /// Stops the server; `fast` writes everything out first, `immediate` acts like a crash.
    fn stop_mode(&mut self, mode: &str) {
        if !self.running {
            return;
        }
        let mut cmd = pg_command("pg_ctl");
        cmd.arg("-D").arg(self.data()).args(["-m", mode, "-w", "-t", "30", "stop"]);
        let _ = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
        self.running = false;
    }

    fn psql_ok(&self, sql: &str) -> String {
        let out = psql_raw(self.port, SUPERUSER, "postgres", sql, &[]);
        assert!(out.status.success(), "psql on port {} failed: {}", self.port, String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Runs `psql` against `127.0.0.1:port` with `sql` as its script (one session), unaligned, tuples
/// only, verbose errors (SQLSTATE shown), without stopping on errors.
pub fn psql_raw(port: u16, user: &str, db: &str, sql: &str, env: &[(&str, &str)]) -> Output {
    use std::io::Write;
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-U", user, "-d", db, "-v", "VERBOSITY=verbose", "-f", "-"])
        .env_remove("PGPASSWORD")
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("psql is installed (apt-get install postgresql-client-15)");
    child.stdin.take().expect("stdin").write_all(sql.as_bytes()).expect("write psql script");
    child.wait_with_output().expect("wait for psql")
}

/// A running throw-away cluster; stopped and removed on drop.
pub struct PgCluster {
    inner: Cluster,
    _tmp: tempfile::TempDir,
}

impl std::fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCluster").field("port", &self.inner.port).finish()
    }
}

impl PgCluster {
    /// Copies the template and starts a server on a free loopback port.
    pub fn start() -> PgCluster {
        let template = template_dir();
        let tmp = tempfile::Builder::new().prefix("helios-pg-").tempdir().expect("cluster temp dir");
        let out =
            Command::new("cp").arg("-a").arg(template.join("data")).arg(tmp.path().join("data")).output().expect("cp");
        assert!(out.status.success(), "copy template: {}", String::from_utf8_lossy(&out.stderr));
        chown_tree(tmp.path());
        let mut inner = Cluster { dir: tmp.path().to_path_buf(), port: 0, running: false };
        // A free port can be taken between our probe and the server's bind: retry a few times.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            inner.port = free_port();
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.start()));
            match res {
                Ok(()) => break,
                Err(e) if Instant::now() > deadline => std::panic::resume_unwind(e),
                Err(_) => continue,
            }
        }
        PgCluster { inner, _tmp: tmp }
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// Runs `sql` as the superuser and returns stdout; panics if psql fails.
    pub fn psql(&self, sql: &str) -> String {
        self.inner.psql_ok(sql)
    }

    /// Turns TLS on with this certificate and key (PEM), readable by the server only.
    pub fn enable_ssl(&self, cert_pem: &[u8], key_pem: &[u8]) {
        let data = self.inner.data();
        std::fs::write(data.join("server.crt"), cert_pem).expect("write server.crt");
        std::fs::write(data.join("server.key"), key_pem).expect("write server.key");
        let out = Command::new("chmod").arg("600").arg(data.join("server.key")).output().expect("chmod");
        assert!(out.status.success());
        chown_tree(&data);
        self.psql("ALTER SYSTEM SET ssl = on; SELECT pg_reload_conf();");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.psql("SHOW ssl;").trim() != "on" {
            assert!(Instant::now() < deadline, "ssl did not turn on");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server immediately (as a crash would), keeping its files.
    pub fn stop(&mut self) {
        self.inner.stop();
    }

    /// Starts the server again on the same port.
    pub fn start_again(&mut self) {
        self.inner.start();
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.inner.stop();
    }
}
