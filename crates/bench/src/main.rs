//! helios-bench: measures the helios-plugin host against the same logic as native Rust and under
//! Extism, and prints one markdown report (also written, with the raw numbers as JSON, under
//! target/bench/). Run it through `cargo xtask bench`, which builds the guests and the Extism side
//! first; run alone it reports Extism as "not run".
//!
//! usage: helios-bench [--extism <extism.json>] [--stack-dir <dir with 64 KiB-stack guests>]
//!                     [--cycles <create/call/destroy cycles>] [--only <section 1-6, 9, 10>]... [--quick]
//!                     [--guest-dir <dir with the first-party plugins' .wasm, e.g. another build profile>]
//!
//! Sections 7, 8 and 11 run only when named with `--only` (loops for a profiler).

mod measure;
mod report;
mod state;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use helios_plugin_abi::testing;
use helios_plugin_host::{Chain, InstanceMode, OnError, Plugin, PluginConfig, Runtime, RuntimeConfig};
use helios_plugin_schema::{GuardRequest, GuardVerdict, PreQueryResult, QueryContext, hooks::spec::PreQuery};
use serde_json::{Value, json};

use measure::{Timer, rss_kib};
use report::Report;

const WORKLOADS: &str = include_str!("../workloads.json");

/// The eight first-party plugins, as examples/corpus/proxy.toml names them.
const PROXY_TOML: &str = "examples/corpus/proxy.toml";

/// The statements the chain rows draw from.
const CORPUS: &str = "examples/corpus/sql.jsonl";

struct Args {
    extism: Option<PathBuf>,
    stack_dir: Option<PathBuf>,
    cycles: u64,
    timer: Timer,
    /// Sections to run (1-6, 9, 10; 7, 8 and 11 only when named); empty = all but 7, 8 and 11.
    only: Vec<u32>,
    /// Where the first-party plugins' modules are read from instead of proxy.toml's sources (to
    /// compare guest build profiles).
    guest_dir: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        extism: None,
        stack_dir: None,
        cycles: 1_000_000,
        timer: Timer::default(),
        only: Vec::new(),
        guest_dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--extism" => args.extism = Some(it.next().context("--extism needs a path")?.into()),
            "--stack-dir" => args.stack_dir = Some(it.next().context("--stack-dir needs a path")?.into()),
            "--guest-dir" => args.guest_dir = Some(it.next().context("--guest-dir needs a path")?.into()),
            "--cycles" => args.cycles = it.next().context("--cycles needs a number")?.parse().context("--cycles")?,
            "--only" => args.only.push(
                it.next().context("--only needs a section number")?.parse().context("--only: a section number 1-11")?,
            ),
            "--quick" => {
                args.timer = Timer::quick();
                args.cycles = args.cycles.min(50_000);
            }
            other => bail!(
                "unknown argument {other:?} (expected --extism, --stack-dir, --cycles, --only, --quick, --guest-dir)"
            ),
        }
    }
    Ok(args)
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap_or_else(|_| PathBuf::from("."))
}

fn guest_dir() -> PathBuf {
    helios_plugin_test_support::guest_dir()
}

fn read_guest(file: &str) -> Result<Vec<u8>> {
    let path = guest_dir().join(file);
    std::fs::read(&path).with_context(|| format!("cannot read {} (run `cargo xtask build-examples`)", path.display()))
}

fn config_of(workload: &Value) -> BTreeMap<String, String> {
    workload["config"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect())
        .unwrap_or_default()
}

fn set_native_config(config: &BTreeMap<String, String>) {
    testing::reset();
    for (k, v) in config {
        testing::set_config(k, v);
    }
}

/// A pre_query plugin that does nothing but answer `{"kind":"continue"}`: the host's own cost.
fn light_plugin_wat() -> String {
    let answer = r#"{"kind":"continue"}"#;
    format!(
        r#"(module
  (memory (export "{memory}") 1)
  (global $next (mut i32) (i32.const 4096))
  (data (i32.const 1024) "{data}")
  (func (export "{alloc}") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $n)))
    (if (i32.gt_u (global.get $next) (i32.const 60000)) (then (global.set $next (i32.const 4096)) (local.set $p (i32.const 4096))))
    (local.get $p))
  (func (export "{dealloc}") (param i32 i32))
  (func (export "{hook}") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const {len}))))"#,
        memory = helios_plugin_schema::abi::MEMORY,
        alloc = helios_plugin_schema::abi::ALLOC,
        dealloc = helios_plugin_schema::abi::DEALLOC,
        hook = helios_plugin_schema::Hook::PreQuery.export_name(),
        data = answer.replace('"', "\\\""),
        len = answer.len(),
    )
}

/// One `[[plugins]]` entry of proxy.toml, read directly (no trust root is needed to benchmark).
struct Entry {
    name: String,
    source: PathBuf,
    cfg: PluginConfig,
}

/// A budget no benchmark run reaches: a tenant or agent that ran out would turn every later
/// statement of the corpus into an early refusal and the chain rows into a measure of refusals.
const BENCH_BUDGET: &str = "1000000000000000";

/// proxy.toml's plugins with the budgets of cost-governor and token-budget raised to
/// [`BENCH_BUDGET`] (their per-statement work is unchanged: they still charge every statement).
fn bench_entries() -> Result<Vec<Entry>> {
    let mut entries = proxy_entries()?;
    for e in &mut entries {
        let (keys, overrides): (&[&str], &str) = match e.name.as_str() {
            "cost-governor" => (&["budget_minute", "budget_hour", "budget_day"], "tenant_budgets"),
            "token-budget" => (&["budget_minute", "budget_day"], "budgets"),
            _ => continue,
        };
        for key in keys {
            e.cfg = e.cfg.clone().config(*key, BENCH_BUDGET);
        }
        e.cfg = e.cfg.clone().config(overrides, "{}");
    }
    Ok(entries)
}

fn proxy_entries() -> Result<Vec<Entry>> {
    let path = root().join(PROXY_TOML);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let doc: toml::Table = text.parse().with_context(|| format!("{} is not TOML", path.display()))?;
    let mut out = Vec::new();
    for p in doc.get("plugins").and_then(|v| v.as_array()).context("proxy.toml: no [[plugins]]")? {
        let name = p.get("name").and_then(|v| v.as_str()).context("proxy.toml: a plugin without a name")?.to_owned();
        // Relative sources resolve from the config file's directory, as the host does.
        let base = path.parent().map(Path::to_path_buf).unwrap_or_else(root);
        let source =
            base.join(p.get("source").and_then(|v| v.as_str()).context("proxy.toml: a plugin without a source")?);
        let mut cfg = PluginConfig::new(name.clone());
        if let Some(t) = p.get("config").and_then(|v| v.as_table()) {
            cfg = cfg.config_map(
                t.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())))
                    .collect(),
            );
        }
        if let Some(pr) = p.get("priority").and_then(|v| v.as_integer()) {
            cfg = cfg.priority(pr as i32);
        }
        if let Some(o) = p.get("on_error").and_then(|v| v.as_str()) {
            cfg = cfg.on_error(if o == "abort" { OnError::Abort } else { OnError::Skip });
        }
        out.push(Entry { name, source, cfg });
    }
    Ok(out)
}

/// `entries` with their modules read from `guest_dir` (same file names) when one is given.
fn in_guest_dir(mut entries: Vec<Entry>, guest_dir: Option<&Path>) -> Result<Vec<Entry>> {
    if let Some(dir) = guest_dir {
        for e in &mut entries {
            e.source = dir.join(e.source.file_name().context("a plugin source without a file name")?);
        }
    }
    Ok(entries)
}

fn load_real_chain(rt: &Runtime, guest_dir: Option<&Path>) -> Result<Option<Vec<Arc<Plugin>>>> {
    let entries = in_guest_dir(bench_entries()?, guest_dir)?;
    if entries.iter().any(|e| !e.source.exists()) {
        return Ok(None);
    }
    let mut plugins = Vec::new();
    for e in entries {
        plugins.push(rt.load_file(&e.source, e.cfg).with_context(|| format!("loading {}", e.name))?);
    }
    Ok(Some(plugins))
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("helios-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args = parse_args()?;
    let workloads: Value = serde_json::from_str(WORKLOADS).context("workloads.json")?;
    let mut report = Report::new();
    report.machine();
    let extism: Value = match &args.extism {
        Some(p) => match std::fs::read(p) {
            Ok(b) => serde_json::from_slice(&b)
                .unwrap_or_else(|e| json!({ "error": format!("{}: not JSON: {e}", p.display()) })),
            Err(e) => json!({ "error": format!("cannot read {}: {e}", p.display()) }),
        },
        None => json!({ "error": "not run (run `cargo xtask bench`)" }),
    };
    let on = |n: u32| args.only.is_empty() || args.only.contains(&n);
    if on(1) {
        per_call(&args, &workloads, &extism, &mut report)?;
    }
    if on(2) {
        chains(&args, &mut report)?;
    }
    if on(3) {
        input_size(&args, &workloads, &mut report)?;
    }
    if on(4) {
        load(&args, &mut report)?;
    }
    if on(5) {
        instantiation(&args, &workloads, &mut report)?;
    }
    if on(6) {
        memory(&args, &workloads, &mut report)?;
    }
    if on(9) {
        component(&args, &workloads, &mut report)?;
    }
    if on(10) {
        let ctx: QueryContext = serde_json::from_value(workloads["llm_guardrail"]["input"].clone())?;
        let rows = state::state(&args, &ctx)?;
        report.state(&rows);
    }
    // Not part of a full run: `--only 8` loads the first-party plugins warm from a module cache
    // (kept under target/bench/profile-cache) as section 4 does (signed artefacts, the loader's
    // `build_entries`), 20 rounds, for a profiler.
    if args.only.contains(&8) {
        let cache = root().join("target/bench/profile-cache");
        let dir = tempfile::tempdir()?;
        let config = signed_proxy_toml(dir.path(), &in_guest_dir(proxy_entries()?, args.guest_dir.as_deref())?)?;
        for round in 0..20 {
            let t = Instant::now();
            let rt = Runtime::new(RuntimeConfig::default().module_cache_dir(&cache))?;
            helios_plugin_loader::PluginsConfig::load(&config)?.build_entries(&rt)?;
            eprintln!("helios-bench: warm load round {round}: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
        }
    }
    // Not part of a full run: `--only 11` loops pooled guard calls (one warm instance), for a
    // profiler.
    if args.only.contains(&11) {
        let w = &workloads["tool_denylist"];
        let req: GuardRequest = serde_json::from_value(w["input"].clone())?;
        let rt = Runtime::new(RuntimeConfig::default())?;
        let p = rt.load(&read_guest("tool_denylist.wasm")?, PluginConfig::new("pooled").config_map(config_of(w)))?;
        let t = Instant::now();
        for _ in 0..args.cycles {
            std::hint::black_box(p.evaluate(&req));
        }
        eprintln!(
            "helios-bench: {} pooled calls, {:.2} µs each",
            args.cycles,
            t.elapsed().as_secs_f64() * 1e6 / args.cycles as f64
        );
    }
    // Not part of a full run: `--only 7` loops fresh-instance guard calls, for a profiler.
    if args.only.contains(&7) {
        let w = &workloads["tool_denylist"];
        let req: GuardRequest = serde_json::from_value(w["input"].clone())?;
        let rt = Runtime::new(RuntimeConfig::default())?;
        let p = rt.load(
            &read_guest("tool_denylist.wasm")?,
            PluginConfig::new("fresh").config_map(config_of(w)).mode(InstanceMode::Fresh),
        )?;
        let t = Instant::now();
        for _ in 0..args.cycles {
            std::hint::black_box(p.evaluate(&req));
        }
        eprintln!(
            "helios-bench: {} fresh calls, {:.2} µs each",
            args.cycles,
            t.elapsed().as_secs_f64() * 1e6 / args.cycles as f64
        );
    }
    report.finish()?;
    Ok(())
}

// ---- 1. per call ----------------------------------------------------------------------------------

fn per_call(args: &Args, workloads: &Value, extism: &Value, report: &mut Report) -> Result<()> {
    eprintln!("helios-bench: 1. per call");
    let t = &args.timer;
    let rt = Runtime::new(RuntimeConfig::default())?;
    let mut rows = Vec::new();

    // tool-denylist guard
    let w = &workloads["tool_denylist"];
    let config = config_of(w);
    let req: GuardRequest = serde_json::from_value(w["input"].clone())?;
    set_native_config(&config);
    let native_answer = tool_denylist::evaluate(&req);
    let native = t.ns(|| {
        let j = serde_json::to_vec(&req).expect("encode");
        let r: GuardRequest = serde_json::from_slice(&j).expect("decode");
        let v = tool_denylist::evaluate(&r);
        let o = serde_json::to_vec(&v).expect("encode");
        std::hint::black_box(serde_json::from_slice::<GuardVerdict>(&o).expect("decode"));
    });
    let wasm = read_guest("tool_denylist.wasm")?;
    let pooled_p = rt.load(&wasm, PluginConfig::new("tool-denylist").config_map(config.clone()))?;
    let fresh_p =
        rt.load(&wasm, PluginConfig::new("tool-denylist-fresh").config_map(config.clone()).mode(InstanceMode::Fresh))?;
    let same = pooled_p.evaluate(&req) == native_answer && fresh_p.evaluate(&req) == native_answer;
    let pooled = t.ns(|| {
        std::hint::black_box(pooled_p.evaluate(&req));
    });
    let fresh = t.ns(|| {
        std::hint::black_box(fresh_p.evaluate(&req));
    });
    rows.push((
        "tool-denylist guard (`evaluate`)",
        native,
        pooled,
        fresh,
        extism_number(extism, "tool_denylist", &native_answer)?,
        same,
    ));

    // llm-guardrail hook
    let w = &workloads["llm_guardrail"];
    let config = config_of(w);
    let ctx: QueryContext = serde_json::from_value(w["input"].clone())?;
    set_native_config(&config);
    let native_answer = llm_guardrail::guard(&ctx);
    let native = t.ns(|| {
        let j = serde_json::to_vec(&ctx).expect("encode");
        let c: QueryContext = serde_json::from_slice(&j).expect("decode");
        let r = llm_guardrail::guard(&c);
        let o = serde_json::to_vec(&r).expect("encode");
        std::hint::black_box(serde_json::from_slice::<PreQueryResult>(&o).expect("decode"));
    });
    let wasm = read_guest("llm_guardrail.wasm")?;
    let pooled_p = rt.load(&wasm, PluginConfig::new("llm-guardrail").config_map(config.clone()))?;
    let fresh_p =
        rt.load(&wasm, PluginConfig::new("llm-guardrail-fresh").config_map(config.clone()).mode(InstanceMode::Fresh))?;
    let same = pooled_p.call::<PreQuery>(&ctx).ok().as_ref() == Some(&native_answer)
        && fresh_p.call::<PreQuery>(&ctx).ok().as_ref() == Some(&native_answer);
    let pooled = t.ns(|| {
        std::hint::black_box(pooled_p.call::<PreQuery>(&ctx).expect("llm-guardrail call"));
    });
    let fresh = t.ns(|| {
        std::hint::black_box(fresh_p.call::<PreQuery>(&ctx).expect("llm-guardrail call"));
    });
    rows.push((
        "llm-guardrail `pre_query` hook",
        native,
        pooled,
        fresh,
        extism_number(extism, "llm_guardrail", &native_answer)?,
        same,
    ));

    report.per_call(&rows, extism);
    Ok(())
}

// ---- 9. component guard ------------------------------------------------------------------------------

/// The same `#[chio_guard]` source (tool-denylist) as a core module and as a component
/// (`chio:guard/guard@0.2.0`), pooled, per call, beside native; same runtime, same request.
fn component(args: &Args, workloads: &Value, report: &mut Report) -> Result<()> {
    eprintln!("helios-bench: 9. component guard");
    let t = &args.timer;
    let rt = Runtime::new(RuntimeConfig::default())?;
    let w = &workloads["tool_denylist"];
    let config = config_of(w);
    let req: GuardRequest = serde_json::from_value(w["input"].clone())?;
    set_native_config(&config);
    let native_answer = tool_denylist::evaluate(&req);
    let native = t.ns(|| {
        let j = serde_json::to_vec(&req).expect("encode");
        let r: GuardRequest = serde_json::from_slice(&j).expect("decode");
        let v = tool_denylist::evaluate(&r);
        let o = serde_json::to_vec(&v).expect("encode");
        std::hint::black_box(serde_json::from_slice::<GuardVerdict>(&o).expect("decode"));
    });
    let core_p = rt.load(&read_guest("tool_denylist.wasm")?, PluginConfig::new("core").config_map(config.clone()))?;
    let comp_p = rt.load(
        &read_guest("tool_denylist.component.wasm")?,
        PluginConfig::new("component")
            .config_map(config.clone())
            .wit_world(helios_plugin_schema::manifest::GUARD_WIT_WORLD),
    )?;
    let same = core_p.evaluate(&req) == native_answer && comp_p.evaluate(&req) == native_answer;
    let core = t.ns(|| {
        std::hint::black_box(core_p.evaluate(&req));
    });
    let comp = t.ns(|| {
        std::hint::black_box(comp_p.evaluate(&req));
    });
    report.component(native, core, comp, same);
    Ok(())
}

/// Extism's median ns per call for `key`, or the reason there is none. Its answer must be ours.
fn extism_number<T: serde::Serialize>(extism: &Value, key: &str, expected: &T) -> Result<Result<(f64, f64), String>> {
    if let Some(e) = extism["error"].as_str() {
        return Ok(Err(e.to_owned()));
    }
    let r = &extism[key];
    if let Some(e) = r["error"].as_str() {
        return Ok(Err(e.to_owned()));
    }
    let (Some(call), Some(fresh)) = (r["per_call_ns"].as_f64(), r["fresh_ns"].as_f64()) else {
        return Ok(Err(format!("no {key} numbers in the Extism output")));
    };
    if r["output"] != serde_json::to_value(expected)? {
        return Ok(Err(format!(
            "Extism answered {} where native answered {}",
            r["output"],
            serde_json::to_value(expected)?
        )));
    }
    Ok(Ok((call, fresh)))
}

// ---- 2. chains ------------------------------------------------------------------------------------

fn chains(args: &Args, report: &mut Report) -> Result<()> {
    eprintln!("helios-bench: 2. chains");
    let rt = Runtime::new(RuntimeConfig::default())?;
    let light = light_plugin_wat();
    let ctx: QueryContext =
        serde_json::from_value(serde_json::from_str::<Value>(WORKLOADS)?["llm_guardrail"]["input"].clone())?;
    let mut rows = Vec::new();
    for n in [1usize, 8, 32] {
        let plugins = (0..n)
            .map(|i| rt.load(light.as_bytes(), PluginConfig::new(format!("light-{i}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let chain = Chain::new(plugins);
        let out = chain.pre_query(&ctx);
        if out.result != PreQueryResult::Continue || !out.skipped.is_empty() {
            bail!("the light chain of {n} did not continue: {out:?}");
        }
        let ns = args.timer.ns(|| {
            std::hint::black_box(chain.pre_query(&ctx));
        });
        rows.push((format!("{n} × light plugin (answers `continue`)"), n, ns, String::new()));
    }
    match load_real_chain(&rt, args.guest_dir.as_deref())? {
        Some(plugins) => corpus_rows(args, plugins, &mut rows)?,
        None => rows.push((
            "the 8 first-party plugins".into(),
            0,
            f64::NAN,
            "not built (run `cargo xtask build-examples`)".into(),
        )),
    }
    report.chains(&rows);
    Ok(())
}

/// The corpus statements (examples/corpus/sql.jsonl) as a host builds their context: the line's
/// identity, database and attributes; no facts, no request id yet.
fn corpus() -> Result<Vec<QueryContext>> {
    let path = root().join(CORPUS);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).with_context(|| format!("{}:{}: not JSON", path.display(), n + 1))?;
        let mut ctx = QueryContext { query: v["sql"].as_str().unwrap_or_default().to_owned(), ..Default::default() };
        ctx.hook_context.identity = v["identity"].as_str().map(str::to_owned);
        ctx.hook_context.database = v["database"].as_str().map(str::to_owned);
        if let Some(o) = v["attributes"].as_object() {
            for (k, a) in o {
                ctx.hook_context.attributes.insert(k.clone(), a.as_str().unwrap_or_default().to_owned());
            }
        }
        out.push(ctx);
    }
    Ok(out)
}

/// The real chain over the corpus mix, each statement with a request id of its own (ai-classifier
/// keeps per-request state): as helios-proxy runs it (facts from PostgreSQL's parser through its
/// text-keyed cache, filled into the context per statement, then the chain) and as a host that
/// sends no facts runs it (the guests extract their own); each plugin's mean call in the first;
/// and the host's own pg_query extraction of one statement.
fn corpus_rows(args: &Args, plugins: Vec<Arc<Plugin>>, rows: &mut Vec<(String, usize, f64, String)>) -> Result<()> {
    use helios_plugin_facts::cache::FactsCache;
    let serving = plugins.iter().filter(|p| p.serves(helios_plugin_schema::Hook::PreQuery)).count();
    let chain = Chain::new(plugins);
    let corpus = corpus()?;
    let n = corpus.len();
    let cache = FactsCache::new(4096);
    let mut id = 0u64;
    // What helios-proxy does per statement before and in `pre_query` (crates/proxy: query_context).
    let mut with_facts = |base: &QueryContext, id: u64| {
        let facts = cache.get(&base.query);
        let mut c = base.clone();
        c.normalized = facts.normalized.clone();
        c.tables = facts.tables();
        c.is_read_only = facts.is_read_only;
        c.facts = Some((*facts).clone());
        c.hook_context.request_id = format!("bench-{id}");
        c
    };
    // What each statement decides (first pass), to tell a representative run from one where the
    // plugins' state (budgets, findings) changed the decisions.
    let decide = |ctxs: &mut dyn FnMut(&QueryContext, u64) -> QueryContext, id: &mut u64| {
        let mut continued = 0usize;
        let mut every = 0usize;
        for base in &corpus {
            *id += 1;
            let c = ctxs(base, *id);
            let mut called = 0;
            let out = chain.pre_query_observed(&c, &mut |_, _, _| called += 1);
            continued += matches!(out.result, PreQueryResult::Continue | PreQueryResult::Rewrite { .. }) as usize;
            every += (called == serving) as usize;
        }
        (continued, every)
    };
    let before = decide(&mut with_facts, &mut id);
    let host = args.timer.ns(|| {
        for base in &corpus {
            id += 1;
            let c = with_facts(base, id);
            std::hint::black_box(chain.pre_query(&c));
        }
    }) / n as f64;
    let after = decide(&mut with_facts, &mut id);
    let mut plain = |base: &QueryContext, id: u64| {
        let mut c = base.clone();
        c.hook_context.request_id = format!("bench-{id}");
        c
    };
    let guest = args.timer.ns(|| {
        for base in &corpus {
            id += 1;
            let c = plain(base, id);
            std::hint::black_box(chain.pre_query(&c));
        }
    }) / n as f64;
    let guest_decisions = decide(&mut plain, &mut id);
    let same = if before == after && after == guest_decisions {
        format!("{} of {n} continue, {} through every plugin (same in every pass)", before.0, before.1)
    } else {
        format!(
            "**decisions changed between passes**: continue/every plugin {before:?} first, {after:?} after the host-facts run, {guest_decisions:?} without facts"
        )
    };
    rows.push((
        format!("the 8 first-party plugins ({serving} serve `pre_query`), corpus mix, host facts (helios-proxy)"),
        serving,
        host,
        format!("per statement over {n} corpus lines, unique request ids, facts through the text cache; {same}"),
    ));
    rows.push((
        format!("the 8 first-party plugins ({serving} serve `pre_query`), corpus mix, no facts (guests extract)"),
        serving,
        guest,
        "what a host that sends no facts (HeliosProxy) costs; unique request ids".into(),
    ));
    // Where the time goes: each plugin's mean call over one pass, as helios-proxy runs the chain.
    let mut per: BTreeMap<String, (Duration, u32)> = BTreeMap::new();
    for _ in 0..5 {
        for base in &corpus {
            id += 1;
            let c = with_facts(base, id);
            chain.pre_query_observed(&c, &mut |p, d, _| {
                let e = per.entry(p.name().to_owned()).or_default();
                e.0 += d;
                e.1 += 1;
            });
        }
    }
    for (name, (total, calls)) in per {
        rows.push((
            format!("… of which `{name}`"),
            1,
            total.as_nanos() as f64 / calls as f64,
            format!("mean of {calls} calls over the corpus mix (host facts)"),
        ));
    }
    let queries: Vec<&str> = corpus.iter().map(|c| c.query.as_str()).collect();
    let extract = args.timer.ns(|| {
        for q in &queries {
            std::hint::black_box(helios_plugin_facts::pg::extract(q));
        }
    }) / n as f64;
    rows.push((
        "… host: pg_query facts of one corpus statement, uncached".into(),
        0,
        extract,
        "native; helios-proxy pays it once per distinct text (LRU), a hit is in the host-facts row".into(),
    ));
    Ok(())
}

// ---- 3. input size --------------------------------------------------------------------------------

/// A valid, allowed statement of about `bytes` bytes: a long IN list on a small table.
fn sql_of_size(bytes: usize) -> String {
    let head = "SELECT id, name, email FROM users WHERE tenant_id = 42 AND id IN (";
    let mut s = String::with_capacity(bytes + 16);
    s.push_str(head);
    let mut i = 1u64;
    while s.len() + 10 < bytes {
        if i > 1 {
            s.push_str(", ");
        }
        s.push_str(&i.to_string());
        i += 1;
    }
    if i == 1 {
        s.push('1');
    }
    s.push(')');
    s
}

fn input_size(args: &Args, workloads: &Value, report: &mut Report) -> Result<()> {
    eprintln!("helios-bench: 3. input size");
    let w = &workloads["llm_guardrail"];
    let config = config_of(w);
    let base: QueryContext = serde_json::from_value(w["input"].clone())?;
    let rt = Runtime::new(RuntimeConfig::default())?;
    let wasm = read_guest("llm_guardrail.wasm")?;
    // Large statements need more than the default budgets; the recycle threshold is raised so the
    // number is the per-byte cost of the call, not of re-instantiating after a memory-heavy call.
    let p = rt.load(
        &wasm,
        PluginConfig::new("llm-guardrail")
            .config_map(config.clone())
            .fuel(None)
            .deadline(Duration::from_secs(30))
            .max_memory_bytes(helios_plugin_host::DEFAULT_MAX_PLUGIN_MEMORY_BYTES)
            .recycle_memory_bytes(helios_plugin_host::DEFAULT_MAX_PLUGIN_MEMORY_BYTES),
    )?;
    set_native_config(&config);
    let mut rows = Vec::new();
    for size in [100usize, 10_000, 1_000_000] {
        let mut ctx = base.clone();
        ctx.query = sql_of_size(size);
        let bytes = serde_json::to_vec(&ctx)?.len();
        let expected = llm_guardrail::guard(&ctx);
        let got = p.call::<PreQuery>(&ctx).with_context(|| format!("llm-guardrail on {size} bytes"))?;
        if got != expected || expected != PreQueryResult::Continue {
            bail!("llm-guardrail on {size} bytes: native {expected:?}, wasm {got:?} (expected both `continue`)");
        }
        let timer = if size >= 1_000_000 { args.timer.slow() } else { args.timer.clone() };
        let native = timer.ns(|| {
            let j = serde_json::to_vec(&ctx).expect("encode");
            let c: QueryContext = serde_json::from_slice(&j).expect("decode");
            std::hint::black_box(llm_guardrail::guard(&c));
        });
        let ours = timer.ns(|| {
            std::hint::black_box(p.call::<PreQuery>(&ctx).expect("call"));
        });
        rows.push((ctx.query.len(), bytes, native, ours));
    }
    report.input_size(&rows);
    Ok(())
}

// ---- 4. load --------------------------------------------------------------------------------------

/// Packs `entries` as signed artefacts into `dir` (a throw-away key, trusted by `dir/trusted`) and
/// writes `dir/proxy.toml`: the corpus's entries (hooks, priorities, config), each pointing at its
/// artefact — what helios-proxy reads, verifies and loads through the loader.
fn signed_proxy_toml(dir: &Path, entries: &[Entry]) -> Result<PathBuf> {
    use helios_plugin_artefact::{PackOptions, PackSigning};
    let key = helios_plugin_artefact::keys::generate_signing_key()?;
    std::fs::create_dir_all(dir.join("trusted"))?;
    std::fs::write(
        dir.join("trusted/bench-throwaway.pub"),
        helios_plugin_artefact::keys::public_key_base64(&key.verifying_key()),
    )?;
    for e in entries {
        let wasm = std::fs::read(&e.source)?;
        let mut po = PackOptions::new(e.name.clone(), "0.1.0");
        po.signing = PackSigning::Key(Box::new(key.clone()));
        let packed = helios_plugin_artefact::pack(wasm, po).with_context(|| format!("packing {}", e.name))?;
        helios_plugin_artefact::save_artefact(&packed.artefact, &dir.join(format!("{}.tar.gz", e.name)))?;
    }
    let corpus = root().join(PROXY_TOML);
    let mut doc: toml::Table = std::fs::read_to_string(&corpus)?.parse()?;
    for p in doc.get_mut("plugins").and_then(|v| v.as_array_mut()).context("proxy.toml: no [[plugins]]")? {
        let t = p.as_table_mut().context("proxy.toml: a plugin that is not a table")?;
        let name = t.get("name").and_then(|v| v.as_str()).context("proxy.toml: a plugin without a name")?.to_owned();
        t.insert("source".into(), format!("{name}.tar.gz").into());
        t.insert("verify_with".into(), "trusted".into());
    }
    let config = dir.join("proxy.toml");
    std::fs::write(&config, toml::to_string(&doc)?)?;
    Ok(config)
}

fn load(args: &Args, report: &mut Report) -> Result<()> {
    eprintln!("helios-bench: 4. load");
    use helios_plugin_loader::PluginsConfig;
    let entries = in_guest_dir(proxy_entries()?, args.guest_dir.as_deref())?;
    if entries.iter().any(|e| !e.source.exists()) {
        report.load_missing();
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let config = signed_proxy_toml(dir.path(), &entries)?;
    let time_load = |rc: RuntimeConfig| -> Result<(f64, f64, f64)> {
        let t0 = Instant::now();
        let rt = Runtime::new(rc)?;
        let t1 = Instant::now();
        // `build_entries` is exactly these two steps; timed apart to show where the time goes.
        let plugins = PluginsConfig::load(&config)?;
        let verified = plugins.verify()?;
        let t2 = Instant::now();
        let loaded = plugins.load_entries(&rt, &verified)?;
        let t3 = Instant::now();
        if loaded.len() != entries.len() {
            bail!("loaded {} plugins of {}", loaded.len(), entries.len());
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Ok((ms(t1 - t0), ms(t2 - t1), ms(t3 - t2)))
    };
    let median = |mut v: Vec<(f64, f64, f64)>| {
        v.sort_by(|a, b| (a.1 + a.2).total_cmp(&(b.1 + b.2)));
        v[v.len() / 2]
    };
    let cold = median((0..3).map(|_| time_load(RuntimeConfig::default())).collect::<Result<Vec<_>>>()?);
    let cache = dir.path().join("module-cache");
    time_load(RuntimeConfig::default().module_cache_dir(&cache))?; // fills the cache
    let warm = median(
        (0..7).map(|_| time_load(RuntimeConfig::default().module_cache_dir(&cache))).collect::<Result<Vec<_>>>()?,
    );
    let sizes: u64 = entries.iter().filter_map(|e| std::fs::metadata(&e.source).ok()).map(|m| m.len()).sum();
    report.load(entries.len(), sizes, cold, warm);
    Ok(())
}

// ---- 5. instantiation and limits ------------------------------------------------------------------

fn instantiation(args: &Args, workloads: &Value, report: &mut Report) -> Result<()> {
    eprintln!("helios-bench: 5. instantiation and limits");
    let w = &workloads["tool_denylist"];
    let config = config_of(w);
    let req: GuardRequest = serde_json::from_value(w["input"].clone())?;
    let wasm = read_guest("tool_denylist.wasm")?;
    let small_stack = args.stack_dir.as_ref().and_then(|d| std::fs::read(d.join("tool_denylist.wasm")).ok());
    let d = RuntimeConfig::default;
    let mut variants: Vec<(String, RuntimeConfig, &[u8])> = vec![
        ("defaults (pooling, CoW, keep 64 KiB resident, fuel, epoch)".into(), d(), &wasm),
        ("pooling allocator off (on-demand mmap)".into(), d().pooling(false), &wasm),
        ("memory_init_cow off".into(), d().memory_init_cow(false), &wasm),
        ("linear_memory_keep_resident 0".into(), d().linear_memory_keep_resident(0), &wasm),
        ("linear_memory_keep_resident 256 KiB".into(), d().linear_memory_keep_resident(256 << 10), &wasm),
        ("linear_memory_keep_resident 1 MiB".into(), d().linear_memory_keep_resident(1 << 20), &wasm),
        ("fuel off".into(), d().fuel(false), &wasm),
        ("epoch deadline off".into(), d().epoch_interruption(false), &wasm),
        ("fuel and epoch off".into(), d().fuel(false).epoch_interruption(false), &wasm),
    ];
    if let Some(s) = &small_stack {
        variants.push(("64 KiB guest stack (`-zstack-size=65536`)".into(), d(), s));
        variants.push(("64 KiB guest stack, keep_resident 0".into(), d().linear_memory_keep_resident(0), s));
        variants.push((
            "64 KiB guest stack, keep_resident 256 KiB".into(),
            d().linear_memory_keep_resident(256 << 10),
            s,
        ));
        variants.push((
            "64 KiB guest stack, keep_resident 256 KiB, epoch off".into(),
            d().linear_memory_keep_resident(256 << 10).epoch_interruption(false),
            s,
        ));
    }
    let mut rows = Vec::new();
    for (name, rc, bytes) in variants {
        let rt = Runtime::new(rc)?;
        let pooled = rt.load(bytes, PluginConfig::new("tool-denylist").config_map(config.clone()))?;
        let fresh = rt.load(
            bytes,
            PluginConfig::new("tool-denylist-fresh").config_map(config.clone()).mode(InstanceMode::Fresh),
        )?;
        if !pooled.evaluate(&req).is_allow() || !fresh.evaluate(&req).is_allow() {
            bail!("{name}: tool-denylist did not allow the benchmark request");
        }
        let p = args.timer.ns(|| {
            std::hint::black_box(pooled.evaluate(&req));
        });
        let f = args.timer.ns(|| {
            std::hint::black_box(fresh.evaluate(&req));
        });
        let initial_pages = initial_memory_pages(bytes);
        rows.push((name, p, f, initial_pages));
    }
    report.instantiation(&rows, small_stack.is_some());
    Ok(())
}

/// The module's initial memory size in 64 KiB pages (what each fresh instance maps).
fn initial_memory_pages(wasm: &[u8]) -> u64 {
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        if let Ok(wasmparser::Payload::MemorySection(reader)) = payload {
            return reader.into_iter().flatten().next().map(|m| m.initial).unwrap_or(0);
        }
    }
    0
}

// ---- 6. memory ------------------------------------------------------------------------------------

fn memory(args: &Args, workloads: &Value, report: &mut Report) -> Result<()> {
    eprintln!("helios-bench: 6. memory");
    let w = &workloads["tool_denylist"];
    let config = config_of(w);
    let req: GuardRequest = serde_json::from_value(w["input"].clone())?;
    let wasm = read_guest("tool_denylist.wasm")?;
    let rt = Runtime::new(RuntimeConfig::default())?;
    let base = rss_kib();

    // Distinct modules: the 8 first-party plugins (each compiled).
    let real = load_real_chain(&rt, args.guest_dir.as_deref())?;
    let after_real = rss_kib();
    let per_real = real.as_ref().map(|v| (after_real - base) as f64 / v.len() as f64);

    // The same module under 200 names: per plugin without compiling, then one warm instance each.
    const N: usize = 200;
    let before = rss_kib();
    let copies = (0..N)
        .map(|i| rt.load(&wasm, PluginConfig::new(format!("copy-{i}")).config_map(config.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    let loaded = rss_kib();
    for p in &copies {
        p.evaluate(&req);
    }
    let live = rss_kib();
    let per_plugin = (loaded - before) as f64 / N as f64;
    let per_instance = (live - loaded) as f64 / N as f64;
    drop(copies);

    // Create/call/destroy cycles: a fresh-instance plugin.
    let fresh = rt.load(&wasm, PluginConfig::new("cycles").config_map(config).mode(InstanceMode::Fresh))?;
    for _ in 0..10_000 {
        fresh.evaluate(&req);
    }
    let rss_before = rss_kib();
    let t = Instant::now();
    for _ in 0..args.cycles {
        std::hint::black_box(fresh.evaluate(&req));
    }
    let secs = t.elapsed().as_secs_f64();
    let rss_after = rss_kib();
    let stats = fresh.stats();
    drop(real);
    report.memory(
        per_real,
        per_plugin,
        per_instance,
        args.cycles,
        rss_before,
        rss_after,
        secs,
        stats.instances_created,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_sql_has_the_requested_size_and_passes_the_guardrail_as_ai_traffic() {
        let w: Value = serde_json::from_str(WORKLOADS).expect("workloads.json");
        let mut ctx: QueryContext =
            serde_json::from_value(w["llm_guardrail"]["input"].clone()).expect("a QueryContext");
        set_native_config(&config_of(&w["llm_guardrail"]));
        for size in [100usize, 10_000] {
            ctx.query = sql_of_size(size);
            assert!(ctx.query.len() <= size && ctx.query.len() + 12 >= size, "{size}: got {} bytes", ctx.query.len());
            assert_eq!(llm_guardrail::guard(&ctx), PreQueryResult::Continue, "{size}");
        }
        // The same context with a destructive statement is judged, so the input really is AI traffic.
        ctx.query = "DROP TABLE users".into();
        assert!(matches!(llm_guardrail::guard(&ctx), PreQueryResult::Block { .. }));
    }

    #[test]
    fn the_guard_workload_is_allowed_and_a_listed_tool_is_denied() {
        let w: Value = serde_json::from_str(WORKLOADS).expect("workloads.json");
        let mut req: GuardRequest =
            serde_json::from_value(w["tool_denylist"]["input"].clone()).expect("a GuardRequest");
        set_native_config(&config_of(&w["tool_denylist"]));
        assert!(tool_denylist::evaluate(&req).is_allow());
        req.tool_name = "curl".into();
        assert!(!tool_denylist::evaluate(&req).is_allow());
    }

    #[test]
    fn the_light_plugin_answers_continue_through_the_host() {
        let rt = Runtime::new(RuntimeConfig::default()).expect("runtime");
        let p = rt.load(light_plugin_wat().as_bytes(), PluginConfig::new("light")).expect("the light plugin loads");
        assert_eq!(p.call::<PreQuery>(&QueryContext::default()).expect("call"), PreQueryResult::Continue);
    }
}
