//! TLS with clients: certificates made by the test (openssl CLI), psql and psycopg with
//! `sslmode=verify-full`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use helios_proxy::NoHooks;

use crate::support::pg::{self, PgCluster};
use crate::support::proxy::{TestProxy, config_text};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl is installed");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA (`<name>-ca.pem`) and a server certificate for localhost/127.0.0.1 signed by it.
fn make_certs(dir: &Path, name: &str) {
    let ca_key = format!("{name}-ca.key");
    let ca = format!("{name}-ca.pem");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &ca_key,
            "-out",
            &ca,
            "-days",
            "2",
            "-subj",
            &format!("/CN={name} test CA"),
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

#[test]
fn psql_and_psycopg_connect_with_verify_full_and_a_wrong_ca_is_refused() {
    let db = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path(), "right");
    let other = tempfile::tempdir().unwrap();
    make_certs(other.path(), "wrong");
    let listener = format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        dir.path().join("server.pem").display(),
        dir.path().join("server.key").display()
    );
    let cfg = config_text(&[("primary", db.port(), "primary")], "")
        .replace("listen = \"127.0.0.1:0\"\n", &format!("listen = \"127.0.0.1:0\"\n{listener}"));
    let proxy = TestProxy::start(&cfg, Arc::new(NoHooks));
    let ca = dir.path().join("right-ca.pem").display().to_string();

    let out = pg::psql_raw(
        proxy.port(),
        pg::SUPERUSER,
        "postgres",
        "\\conninfo\nSELECT 'over tls';\n",
        &[("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", &ca)],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("SSL connection") && stdout.contains("over tls"), "{stdout}");

    let wrong = other.path().join("wrong-ca.pem").display().to_string();
    let out = pg::psql_raw(
        proxy.port(),
        pg::SUPERUSER,
        "postgres",
        "SELECT 1;",
        &[("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", &wrong)],
    );
    assert!(!out.status.success(), "a certificate from another CA must not verify");

    let script = format!(
        "import psycopg\nc = psycopg.connect('host=127.0.0.1 port={} user={} dbname=postgres sslmode=verify-full sslrootcert={ca}')\nprint(c.pgconn.ssl_in_use, c.execute('SELECT 41 + 1').fetchone()[0])\n",
        proxy.port(),
        pg::SUPERUSER
    );
    let py = Command::new(crate::drivers::python()).args(["-c", &script]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&py.stdout).trim(), "True 42", "{}", String::from_utf8_lossy(&py.stderr));

    // Without TLS configured the proxy declines, and sslmode=require fails as against such a server.
    let plain = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], ""), Arc::new(NoHooks));
    let out = pg::psql_raw(plain.port(), pg::SUPERUSER, "postgres", "SELECT 1;", &[("PGSSLMODE", "require")]);
    assert!(!out.status.success());
}

#[test]
fn a_missing_certificate_stops_the_proxy_at_start_naming_the_file() {
    let cfg = config_text(&[("primary", 1, "primary")], "").replace(
        "listen = \"127.0.0.1:0\"\n",
        "listen = \"127.0.0.1:0\"\ntls_cert_file = \"/nonexistent/cert.pem\"\ntls_key_file = \"/nonexistent/key.pem\"\n",
    );
    let config = helios_proxy::ProxyConfig::from_toml(&cfg, "test-proxy.toml").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let err = rt.block_on(helios_proxy::Proxy::bind(config, Arc::new(NoHooks))).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/cert.pem") && err.contains("tls_cert_file"), "{err}");
}

/// A proxy config whose only node has `tls_lines`.
fn node_tls_config(port: u16, tls_lines: &str) -> String {
    config_text(&[("primary", port, "primary")], "")
        .replace("role = \"primary\"\n", &format!("role = \"primary\"\n{tls_lines}"))
}

#[test]
fn upstream_tls_verify_full_reaches_a_tls_node_and_require_refuses_a_plain_one() {
    let db = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path(), "node");
    db.enable_ssl(
        &std::fs::read(dir.path().join("server.pem")).unwrap(),
        &std::fs::read(dir.path().join("server.key")).unwrap(),
    );
    let ca = dir.path().join("node-ca.pem").display().to_string();
    let ssl_in_use = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid();";

    let verified = TestProxy::start(
        &node_tls_config(db.port(), &format!("tls = \"verify-full\"\ntls_ca_file = \"{ca}\"\n")),
        Arc::new(NoHooks),
    );
    let out = pg::psql_raw(verified.port(), pg::SUPERUSER, "postgres", ssl_in_use, &[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t", "{}", String::from_utf8_lossy(&out.stderr));

    // The same node checked against another CA: refused, naming the node.
    let other = tempfile::tempdir().unwrap();
    make_certs(other.path(), "other");
    let wrong = other.path().join("other-ca.pem").display().to_string();
    let mistrusted = TestProxy::start(
        &node_tls_config(db.port(), &format!("tls = \"verify-full\"\ntls_ca_file = \"{wrong}\"\n")),
        Arc::new(NoHooks),
    );
    let out = pg::psql_raw(mistrusted.port(), pg::SUPERUSER, "postgres", "SELECT 1;", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("node \"primary\"") && err.contains("TLS"), "{err}");

    // A node without TLS: require refuses, prefer falls back to plain.
    let plain = PgCluster::start();
    let required = TestProxy::start(&node_tls_config(plain.port(), "tls = \"require\"\n"), Arc::new(NoHooks));
    let out = pg::psql_raw(required.port(), pg::SUPERUSER, "postgres", "SELECT 1;", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("does not offer TLS"), "{err}");
    let preferred = TestProxy::start(&node_tls_config(plain.port(), "tls = \"prefer\"\n"), Arc::new(NoHooks));
    let out = pg::psql_raw(preferred.port(), pg::SUPERUSER, "postgres", ssl_in_use, &[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "f");
}

/// SCRAM-SHA-256-PLUS (tls-server-end-point) with psql `channel_binding=require` through a TLS
/// listener, and with a TLS node offering it upstream.
#[test]
fn scram_channel_binding_with_clients_and_nodes_over_tls() {
    let db = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path(), "cb");
    db.enable_ssl(
        &std::fs::read(dir.path().join("server.pem")).unwrap(),
        &std::fs::read(dir.path().join("server.key")).unwrap(),
    );
    let ca = dir.path().join("cb-ca.pem").display().to_string();
    let users = format!("[[users]]\nname = \"{}\"\npassword = \"{}\"\n", pg::SCRAM_USER, pg::PASSWORD);
    let listener = format!(
        "listen = \"127.0.0.1:0\"\nauth = \"scram-sha-256\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        dir.path().join("server.pem").display(),
        dir.path().join("server.key").display()
    );
    let cfg = node_tls_config(db.port(), &format!("tls = \"verify-full\"\ntls_ca_file = \"{ca}\"\n"))
        .replace("listen = \"127.0.0.1:0\"\n", &listener);
    let proxy = TestProxy::start(&(users + &cfg), Arc::new(NoHooks));
    let env = [
        ("PGSSLMODE", "verify-full"),
        ("PGSSLROOTCERT", ca.as_str()),
        ("PGCHANNELBINDING", "require"),
        ("PGPASSWORD", pg::PASSWORD),
    ];
    let sql = "SELECT current_user || ' ' || ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid();";
    let out = pg::psql_raw(proxy.port(), pg::SCRAM_USER, "postgres", sql, &env);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{} true", pg::SCRAM_USER),
        "client bound to the proxy's certificate, proxy bound to the node's: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wrong = pg::psql_raw(
        proxy.port(),
        pg::SCRAM_USER,
        "postgres",
        "SELECT 1;",
        &[env[0], env[1], env[2], ("PGPASSWORD", "wrong")],
    );
    assert!(!wrong.status.success(), "a wrong password still fails with channel binding");
}
