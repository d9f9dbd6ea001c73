//! The cluster harness itself: clusters start, answer, and leave no server behind.

use crate::support::pg::{self, PgCluster};

#[test]
fn two_clusters_run_side_by_side_and_stop_on_drop() {
    let a = PgCluster::start();
    let b = PgCluster::start();
    assert_ne!(a.port(), b.port());
    assert_eq!(a.psql("SELECT inet_server_port();").trim(), a.port().to_string());
    assert_eq!(b.psql("SELECT inet_server_port();").trim(), b.port().to_string());
    let port = a.port();
    drop(a);
    let out = pg::psql_raw(port, pg::SUPERUSER, "postgres", "SELECT 1;", &[]);
    assert!(!out.status.success(), "server on port {port} still answers after drop");
}

#[test]
fn md5_and_scram_roles_need_their_password() {
    let c = PgCluster::start();
    for user in [pg::MD5_USER, pg::SCRAM_USER] {
        let denied = pg::psql_raw(c.port(), user, "postgres", "SELECT 1;", &[("PGPASSWORD", "wrong")]);
        assert!(!denied.status.success(), "{user} logged in with a wrong password");
        let ok = pg::psql_raw(c.port(), user, "postgres", "SELECT current_user;", &[("PGPASSWORD", pg::PASSWORD)]);
        assert!(ok.status.success(), "{user}: {}", String::from_utf8_lossy(&ok.stderr));
        assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), user);
    }
}
