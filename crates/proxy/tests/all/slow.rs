//! Slow plugins cannot stall the proxy: hooks that no deadline bounds run off the async workers
//! (bounded ones only after a slow call, see `session::HookCost`), bounded by `plugin_workers`; a statement that cannot get a worker within `plugin_wait_timeout_ms` is
//! refused with an error naming both.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::{NoTls, error::SqlState};

use crate::extended::connect;
use crate::support::pg::PgCluster;
use crate::support::proxy::{ScriptedHooks, TestProxy, config_text};

fn spinning_hooks() -> Arc<ScriptedHooks> {
    Arc::new(ScriptedHooks { spin: vec![("helios_spin".into(), Duration::from_secs(4))], ..Default::default() })
}

#[test]
fn a_spinning_plugin_beside_twenty_sessions_leaves_their_latency_and_cancel_alone() {
    let db = PgCluster::start();
    let toml = "pool_size = 30\n";
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], toml), spinning_hooks());
    // The proxy runs on 2 async workers: before the fix a spinning hook held one of them.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    rt.block_on(async {
        let port = proxy.port();
        let spinner = connect(port).await;
        let mut clients = Vec::new();
        for _ in 0..20 {
            clients.push(Arc::new(connect(port).await));
        }
        let before = round(&clients).await;
        let spin = tokio::spawn(async move {
            let t = Instant::now();
            spinner.simple_query("SELECT 'helios_spin'").await.unwrap();
            t.elapsed()
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let during = round(&clients).await;
        // Cancel still works while the plugin spins.
        let busy = connect(port).await;
        let token = busy.cancel_token();
        let sleeper = tokio::spawn(async move { busy.simple_query("SELECT pg_sleep(20)").await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        token.cancel_query(NoTls).await.unwrap();
        let err = sleeper.await.unwrap().expect_err("cancelled");
        assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED));
        let cancel_took = t.elapsed();
        let spun = spin.await.unwrap();
        eprintln!("max per-statement latency of 20 sessions: {before:?} before, {during:?} while a plugin spun {spun:?}; cancel {cancel_took:?}");
        assert!(spun >= Duration::from_secs(4), "the plugin did spin ({spun:?})");
        assert!(during < Duration::from_millis(500), "sessions stalled behind a spinning plugin: {during:?} (before {before:?})");
        assert!(cancel_took < Duration::from_secs(2), "cancel took {cancel_took:?}");
    });
}

/// The worst per-statement latency of `clients`, each running 5 statements, all at once.
async fn round(clients: &[Arc<tokio_postgres::Client>]) -> Duration {
    let tasks: Vec<_> = clients
        .iter()
        .cloned()
        .map(|c| {
            tokio::spawn(async move {
                let mut worst = Duration::ZERO;
                for _ in 0..5 {
                    let t = Instant::now();
                    c.simple_query("SELECT 1").await.unwrap();
                    worst = worst.max(t.elapsed());
                }
                worst
            })
        })
        .collect();
    let mut worst = Duration::ZERO;
    for t in tasks {
        worst = worst.max(t.await.unwrap());
    }
    worst
}

#[test]
fn saturated_plugin_workers_refuse_a_statement_after_the_wait_naming_the_limit() {
    let db = PgCluster::start();
    let toml = "plugin_workers = 1\nplugin_wait_timeout_ms = 300\n";
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], toml), spinning_hooks());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let spinner = connect(proxy.port()).await;
        let other = connect(proxy.port()).await;
        let spin = tokio::spawn(async move { spinner.simple_query("SELECT 'helios_spin'").await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        let err = other.simple_query("SELECT 2").await.expect_err("no plugin worker free");
        let dbe = err.as_db_error().expect("an ErrorResponse");
        assert_eq!(dbe.code().code(), "53000", "{dbe:?}");
        assert!(
            dbe.message().contains("plugin_workers") && dbe.message().contains("plugin_wait_timeout_ms"),
            "{dbe:?}"
        );
        assert!(t.elapsed() < Duration::from_secs(3));
        spin.await.unwrap().unwrap();
        let n: i32 = other.query_one("SELECT 3", &[]).await.expect("served once the worker is free").get(0);
        assert_eq!(n, 3);
    });
}
