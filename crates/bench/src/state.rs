//! Section 10: plugin state per backend (memory, SQLite, Redis). One KV read, write and atomic add from
//! a guest, beside the same guest call without a KV operation (the baseline), and the real chain
//! (`pre_query` and `post_query` of the eight first-party plugins, as one statement through
//! helios-proxy runs them) with its KV on each backend.

use anyhow::{Context, Result};
use helios_plugin_host::{Chain, PluginConfig, Runtime, RuntimeConfig};
use helios_plugin_schema::{PostQueryEnvelope, QueryContext, QueryOutcome};
use helios_plugin_state::{BackendKind, StateConfig, Store};
use helios_plugin_test_support::redis::RedisServer;

use crate::{Args, load_real_chain};

/// A guard whose request's first byte picks one KV operation on a fixed key: `g` kv_get, `s` kv_set,
/// `a` kv_add (+1), anything else none.
fn kv_guard() -> String {
    r#"(module
  (import "env" "kv_get" (func $get (param i32 i32 i32 i32) (result i32)))
  (import "env" "kv_set" (func $set (param i32 i32 i32 i32) (result i32)))
  (import "env" "kv_add" (func $add (param i32 i32 i64 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "bench-key")
  (data (i32.const 32) "counter")
  (data (i32.const 64) "a value of about forty bytes, like a tail")
  (func (export "chio_alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "chio_free") (param i32 i32))
  (func (export "evaluate") (param $p i32) (param $l i32) (result i32) (local $op i32)
    (local.set $op (i32.load8_u (local.get $p)))
    (if (i32.eq (local.get $op) (i32.const 103))
      (then (drop (call $get (i32.const 16) (i32.const 9) (i32.const 1024) (i32.const 1024)))))
    (if (i32.eq (local.get $op) (i32.const 115))
      (then (drop (call $set (i32.const 16) (i32.const 9) (i32.const 64) (i32.const 41)))))
    (if (i32.eq (local.get $op) (i32.const 97))
      (then (drop (call $add (i32.const 32) (i32.const 7) (i64.const 1) (i32.const 512)))))
    (i32.const 0)))"#
        .to_owned()
}

/// One row: backend, ns of (no KV, get, set, add) per guest call, ns per statement of the chain.
pub type Row = (String, [f64; 4], f64);

/// A statement the chain admits every time: tenant `ops` has no cost limits in the corpus config,
/// and an agent spending 0 tokens is metered without ever reaching a limit.
fn statement(ctx: &QueryContext) -> (QueryContext, PostQueryEnvelope) {
    let mut ctx = ctx.clone();
    for (k, v) in [("helios.tenant", "ops"), ("helios.agent", "bench"), ("helios.model", "m"), ("helios.tokens", "0")] {
        ctx.hook_context.attributes.insert(k.into(), v.into());
    }
    let env = PostQueryEnvelope {
        query_context: ctx.clone(),
        outcome: QueryOutcome { success: true, elapsed_us: 800, response_bytes: 2_000, ..Default::default() },
    };
    (ctx, env)
}

pub fn state(args: &Args, ctx: &QueryContext) -> Result<Vec<Row>> {
    eprintln!("helios-bench: 10. state backends");
    let dir = tempfile::tempdir()?;
    // Append-only, fsync every second: Redis's default trade-off.
    let redis = RedisServer::try_start();
    let mut backends: Vec<(String, StateConfig)> = vec![
        ("memory".into(), StateConfig::new(BackendKind::Memory)),
        (
            "sqlite (WAL, synchronous = full)".into(),
            StateConfig { path: Some(dir.path().join("state.db")), ..StateConfig::new(BackendKind::Sqlite) },
        ),
    ];
    match &redis {
        Ok(r) => backends.push((
            "redis (loopback, appendfsync everysec)".into(),
            StateConfig { url: Some(r.url()), ..StateConfig::new(BackendKind::Redis) },
        )),
        Err(e) => eprintln!("helios-bench: no Redis row: {e}"),
    }
    let (stmt, env) = statement(ctx);
    let mut rows = Vec::new();
    for (name, cfg) in backends {
        let store = Store::open(&cfg).with_context(|| format!("opening the {name} store"))?;
        let rt = Runtime::new(RuntimeConfig::default().kv(store.backend()))?;
        let p = rt.load(kv_guard().as_bytes(), PluginConfig::new("bench-kv"))?;
        let mut ns = [0f64; 4];
        for (i, op) in [b"n", b"g", b"s", b"a"].iter().enumerate() {
            p.evaluate_json(*op).with_context(|| format!("{name}: KV guard"))?;
            ns[i] = args.timer.ns(|| {
                std::hint::black_box(p.evaluate_json(*op).ok());
            });
        }
        let chain_ns = match load_real_chain(&rt, args.guest_dir.as_deref())? {
            Some(plugins) => {
                let chain = Chain::new(plugins);
                let errors = chain.post_query(&env);
                anyhow::ensure!(errors.is_empty(), "{name}: post_query failed: {errors:?}");
                args.timer.slow().ns(|| {
                    std::hint::black_box(chain.pre_query(&stmt));
                    std::hint::black_box(chain.post_query(&env));
                })
            }
            None => f64::NAN,
        };
        rows.push((name, ns, chain_ns));
    }
    Ok(rows)
}
