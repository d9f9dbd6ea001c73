//! The demo's live part: when PostgreSQL is installed, two throw-away clusters (a main one and a
//! "vector" one), helios-proxy in front of them with four of the signed plugins, and a scripted
//! psql session through it that shows a block, a rewrite, a route and the audit records.
//!
//! initdb and postgres refuse to run as root: as root, every server command runs as the
//! unprivileged system user [`PG_OS_USER`] (created on first use, as the proxy's tests do) through
//! `runuser`. The clusters live in their own temporary directories and are stopped and removed when
//! the demo ends, also on an error.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use helios_plugin_host::{Level, MemoryLogSink, Runtime, RuntimeConfig};

use crate::report;
use crate::sign::Signed;

/// The unprivileged OS user that owns and runs the clusters when the demo runs as root.
pub const PG_OS_USER: &str = "helios-pg";
/// The plugins of the live part, each with its demo config (the artefacts signed in step 1).
const PLUGINS: [(&str, &str, &str); 4] = [
    (
        "llm-guardrail",
        "pre_query",
        // The psql session is not AI traffic (no AI marker), so the guardrail judges every statement.
        r#"{ apply_to_all = "true", large_tables = "events" }"#,
    ),
    (
        "column-mask",
        "pre_query",
        r#"{ rules = '[{"table": "users", "column": "ssn", "mask_function": "mask_ssn", "unmask_role": "compliance_officer"}]', table_columns = '{"users": ["id", "name", "ssn"]}' }"#,
    ),
    ("pgvector-router", "route", r#"{ vector_node = "pg-vector-1" }"#),
    (
        "audit-chain",
        "post_query",
        r#"{ genesis = "0000000000000000000000000000000000000000000000000000000000000000" }"#,
    ),
];

/// What each cluster holds.
const MAIN_SCHEMA: &str = "\
CREATE TABLE users (id int PRIMARY KEY, name text, ssn text);
INSERT INTO users VALUES (1, 'Ada', '123-45-6789'), (2, 'Grace', '987-65-4321');
CREATE TABLE orders (id int PRIMARY KEY, tenant_id text, total numeric);
INSERT INTO orders VALUES (1, 'acme', 10), (2, 'acme', 20), (3, 'globex', 30);
CREATE FUNCTION mask_ssn(text) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT 'XXX-XX-' || right($1, 4) $$;
";
const VECTOR_SCHEMA: &str = "\
CREATE TABLE items (id int PRIMARY KEY, name text, embedding point);
INSERT INTO items VALUES (1, 'near', point(1, 1)), (2, 'nearer', point(0.5, 0.5)), (3, 'far', point(9, 9));
";

/// The psql script: each step says what the proxy does with it.
const SCRIPT: &str = "\
\\echo '-- 1. a block: llm-guardrail refuses a DELETE without WHERE (SQLSTATE 42000); the table is untouched'
DELETE FROM orders;
SELECT count(*) AS orders_left FROM orders;
\\echo '-- 2. a rewrite: column-mask rewrites ssn to mask_ssn(ssn) for a role without unmask rights'
SELECT id, name, ssn FROM users ORDER BY id;
\\echo '-- 3. a route: pgvector-router sends a top-K distance search to node pg-vector-1 (another cluster)'
SELECT current_setting('cluster_name') AS served_by, name FROM items ORDER BY embedding <-> point(0, 0) LIMIT 2;
SELECT current_setting('cluster_name') AS served_by, count(*) AS users FROM users;
";

/// Where PostgreSQL's server binaries are: the newest `/usr/lib/postgresql/N/bin` with initdb
/// (Debian), else `pg_config --bindir`. None when PostgreSQL or psql is not installed.
fn find_postgres() -> Option<PathBuf> {
    Command::new("psql").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().ok()?;
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").exists())
        .collect();
    debian.sort();
    if let Some((_, bin)) = debian.pop() {
        return Some(bin);
    }
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    bin.join("initdb").exists().then_some(bin)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Runs `cmd`, failing with its output when it does not succeed.
fn run(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("{what}: cannot run"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The OS user the server runs as: ourselves, or [`PG_OS_USER`] (created if missing) as root.
struct OsUser {
    runuser: bool,
}

impl OsUser {
    fn get() -> Result<OsUser> {
        if !is_root() {
            return Ok(OsUser { runuser: false });
        }
        let exists = || Command::new("id").args(["-u", PG_OS_USER]).output().is_ok_and(|o| o.status.success());
        if !exists() {
            let mut add = Command::new("useradd");
            add.args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_OS_USER]);
            let added = run(add, &format!("creating the unprivileged OS user {PG_OS_USER}"));
            if !exists() {
                added?;
            }
        }
        Ok(OsUser { runuser: true })
    }

    fn command(&self, bin: &Path, program: &str) -> Command {
        if self.runuser {
            let mut c = Command::new("runuser");
            c.args(["-u", PG_OS_USER, "--"]).arg(bin.join(program));
            c
        } else {
            Command::new(bin.join(program))
        }
    }

    fn own(&self, path: &Path) -> Result<()> {
        if self.runuser {
            let mut c = Command::new("chown");
            c.arg("-R").arg(format!("{PG_OS_USER}:")).arg(path);
            run(c, &format!("chown {}", path.display()))?;
        }
        Ok(())
    }
}

/// A running throw-away cluster, stopped and removed on drop.
struct Cluster {
    name: &'static str,
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    runuser: bool,
}

impl Cluster {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Copies `template` (an initdb'd data directory) and starts it on a free loopback port.
    fn start(name: &'static str, bin: &Path, user: &OsUser, template: &Path) -> Result<Cluster> {
        let dir = tempfile::Builder::new().prefix("helios-demo-pg-").tempdir()?;
        let mut cp = Command::new("cp");
        cp.arg("-a").arg(template).arg(dir.path().join("data"));
        run(cp, "copying the template cluster")?;
        let c = Cluster { name, bin: bin.to_path_buf(), dir, port: free_port()?, runuser: user.runuser };
        let conf = format!(
            "\nport = {}\ncluster_name = '{name}'\nunix_socket_directories = '{}'\n",
            c.port,
            c.dir.path().display()
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(c.data().join("postgresql.conf"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, conf.as_bytes()))
            .context("writing postgresql.conf")?;
        user.own(c.dir.path())?;
        let mut start = user.command(bin, "pg_ctl");
        start.arg("-D").arg(c.data()).arg("-l").arg(c.dir.path().join("server.log")).args(["-w", "-t", "60", "start"]);
        run(start, &format!("starting cluster {name}"))?;
        Ok(c)
    }

    fn psql(&self, sql: &str) -> Result<String> {
        let mut c = Command::new("psql");
        c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-p"])
            .arg(self.port.to_string())
            .args(["-c", sql]);
        run(c, &format!("psql on cluster {}", self.name))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut stop = if self.runuser {
            let mut c = Command::new("runuser");
            c.args(["-u", PG_OS_USER, "--"]).arg(self.bin.join("pg_ctl"));
            c
        } else {
            Command::new(self.bin.join("pg_ctl"))
        };
        let _ = stop.arg("-D").arg(self.data()).args(["-m", "immediate", "-w", "stop"]).output();
    }
}

/// One initdb'd data directory the clusters are copied from.
fn template(bin: &Path, user: &OsUser) -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix("helios-demo-initdb-").tempdir()?;
    user.own(dir.path())?;
    let data = dir.path().join("data");
    let mut initdb = user.command(bin, "initdb");
    initdb.arg("-D").arg(&data).args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C"]);
    run(initdb, "initdb")?;
    let conf = "\nlisten_addresses = '127.0.0.1'\nfsync = off\nsynchronous_commit = off\nmax_connections = 20\nshared_buffers = 16MB\n";
    std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, conf.as_bytes()))
        .context("writing postgresql.conf")?;
    Ok(dir)
}

/// The proxy.toml of the live part: two nodes and the four plugins, from the signed artefacts.
fn proxy_toml(signed: &Signed, main: &Cluster, vector: &Cluster) -> Result<String> {
    let mut s = String::from("module_cache = \"off\"\n\n[[listeners]]\nlisten = \"127.0.0.1:0\"\n");
    for (name, c, role) in [("pg-main", main, "primary"), ("pg-vector-1", vector, "standby")] {
        s.push_str(&format!(
            "\n[[nodes]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {}\nrole = \"{role}\"\n",
            c.port
        ));
    }
    for (i, (name, hook, config)) in PLUGINS.iter().enumerate() {
        let a = signed.artefacts.iter().find(|a| a.name == *name).with_context(|| format!("{name} was not packed"))?;
        s.push_str(&format!(
            "\n[[plugins]]\nname = \"{name}\"\nsource = {:?}\nverify_with = {:?}\nhooks = [\"{hook}\"]\non_error = \"abort\"\npriority = {}\nconfig = {config}\n",
            a.path.display().to_string(),
            signed.trust_dir.display().to_string(),
            (i + 1) * 10
        ));
    }
    Ok(s)
}

/// Runs the live part, or says why it is skipped. Errors only when PostgreSQL is there but fails.
pub fn run_live(signed: &Signed, work: &Path) -> Result<()> {
    let Some(bin) = find_postgres() else {
        println!("  PostgreSQL is not installed (no psql, or no initdb under /usr/lib/postgresql/*/bin or");
        println!("  `pg_config --bindir`): skipping the live part; everything above ran without a database.");
        return Ok(());
    };
    let user = OsUser::get()?;
    if user.runuser {
        println!("  running as root: the clusters run as the unprivileged OS user {PG_OS_USER} (runuser)");
    }
    let template = template(&bin, &user)?;
    let main = Cluster::start("demo-main", &bin, &user, &template.path().join("data"))?;
    let vector = Cluster::start("demo-vector", &bin, &user, &template.path().join("data"))?;
    main.psql(MAIN_SCHEMA)?;
    vector.psql(VECTOR_SCHEMA)?;
    println!(
        "  clusters  demo-main on 127.0.0.1:{} (users, orders), demo-vector on 127.0.0.1:{} (items)",
        main.port, vector.port
    );

    let toml_path = work.join("proxy-live.toml");
    std::fs::write(&toml_path, proxy_toml(signed, &main, &vector)?)?;
    let origin = toml_path.display().to_string();
    let config = helios_proxy::ProxyConfig::load(&toml_path)?;
    let logs = MemoryLogSink::new();
    let runtime = Runtime::new(RuntimeConfig::default().log_sink(logs.clone()))?;
    let chain = helios_proxy::plugins::load_chain_with(&config, &origin, &runtime)?;
    let names: Vec<String> = chain.plugins().iter().map(|p| p.name().to_owned()).collect();
    let hooks: Arc<dyn helios_proxy::StatementHooks> = Arc::new(chain);

    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let proxy = std::thread::spawn(move || -> Result<()> {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        rt.block_on(async move {
            let proxy = helios_proxy::Proxy::bind(config, hooks).await?;
            let _ = port_tx.send(proxy.local_addrs()[0].port());
            proxy
                .serve(async move {
                    let _ = stop_rx.await;
                })
                .await;
            Ok(())
        })
    });
    let Ok(port) = port_rx.recv_timeout(Duration::from_secs(60)) else {
        return match proxy.join() {
            Ok(Err(e)) => Err(e.context("helios-proxy did not start")),
            _ => bail!("helios-proxy did not start"),
        };
    };
    println!("  proxy     helios-proxy on 127.0.0.1:{port}, plugins: {}", names.join(", "));
    println!("\n  $ psql -h 127.0.0.1 -p {port} -U postgres   (the script, echoed; errors inline)\n");
    let shell = format!("psql -X -a -h 127.0.0.1 -p {port} -U postgres -d postgres -v VERBOSITY=default 2>&1");
    let out = Command::new("sh")
        .args(["-c", &shell])
        .env("PGAPPNAME", "helios-demo")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("piped stdin").write_all(SCRIPT.as_bytes())?;
            child.wait_with_output()
        })
        .context("running psql")?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("  {line}");
    }
    let _ = stop_tx.send(());
    let _ = proxy.join();

    let records: Vec<String> = logs
        .lines()
        .into_iter()
        .filter(|(p, l, m)| p == "audit-chain" && *l == Level::Info && m.starts_with(audit_chain::chain::LOG_PREFIX))
        .map(|(_, _, m)| m[audit_chain::chain::LOG_PREFIX.len()..].to_owned())
        .collect();
    println!("\n  audit-chain wrote {} records for this session; the last one:", records.len());
    if let Some(last) = records.last() {
        println!("  {}", report::clip(last, 400));
    }
    match audit_chain::verify::verify_chain(&records.join("\n")) {
        Ok(n) => println!("  verify_chain: {n} records, every link intact (what `helios-plugin audit verify` checks)"),
        Err(e) => println!("  verify_chain: {e}"),
    }
    Ok(())
}
