//! The [`Runtime`]: one shared wasmtime `Engine` (pooling allocator, fuel, epoch interruption), one
//! linker with the import surface, and the services plugins share.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use wasmtime::{Config, Engine, InstanceAllocationStrategy, Linker, Module, PoolingAllocationConfig};

use crate::{
    bundle::BundleStore,
    component,
    error::LoadError,
    observe::PluginObserver,
    services::{Clock, KvBackend, LogSink, MemoryKv, SystemClock},
    wasm::{cache::ModuleCache, imports, state::HostState},
};

/// Live instances across all plugins of a runtime. Default: 1000.
pub const DEFAULT_MAX_INSTANCES: u32 = 1000;
/// The largest memory cap any plugin of the runtime may be given. Default: 256 MiB.
pub const DEFAULT_MAX_PLUGIN_MEMORY_BYTES: u64 = 256 << 20;
/// Resolution of wall-clock deadlines. Default: 1 ms.
pub const DEFAULT_EPOCH_TICK: Duration = Duration::from_millis(1);
/// Native stack wasm may use before a stack-overflow trap. Default: 512 KiB.
pub const DEFAULT_MAX_WASM_STACK: usize = 512 << 10;
/// Bytes of a pooled linear memory kept resident (zeroed with `memset`, not `madvise`) when an
/// instance is recycled. Default: 64 KiB (see ARCHITECTURE.md, "Performance defaults").
pub const DEFAULT_LINEAR_MEMORY_KEEP_RESIDENT: usize = 64 << 10;

/// How a [`Runtime`] is built. Every field has a named default.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub(crate) kv: Arc<dyn KvBackend>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) log_sink: Option<Arc<dyn LogSink>>,
    pub(crate) bundle_store: Option<Arc<dyn BundleStore>>,
    pub(crate) observer: Option<Arc<dyn PluginObserver>>,
    max_instances: u32,
    pub(crate) max_plugin_memory_bytes: u64,
    epoch_tick: Duration,
    max_wasm_stack: usize,
    pooling: bool,
    pub(crate) fuel: bool,
    epoch: bool,
    memory_init_cow: bool,
    linear_memory_keep_resident: usize,
    module_cache_dir: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            kv: MemoryKv::new(),
            clock: Arc::new(SystemClock),
            log_sink: None,
            bundle_store: None,
            observer: None,
            max_instances: DEFAULT_MAX_INSTANCES,
            max_plugin_memory_bytes: DEFAULT_MAX_PLUGIN_MEMORY_BYTES,
            epoch_tick: DEFAULT_EPOCH_TICK,
            max_wasm_stack: DEFAULT_MAX_WASM_STACK,
            pooling: true,
            fuel: true,
            epoch: true,
            memory_init_cow: true,
            linear_memory_keep_resident: DEFAULT_LINEAR_MEMORY_KEEP_RESIDENT,
            module_cache_dir: None,
        }
    }
}

impl RuntimeConfig {
    /// The KV backend. Default: [`MemoryKv`].
    pub fn kv(mut self, kv: Arc<dyn KvBackend>) -> Self {
        self.kv = kv;
        self
    }
    /// The clock behind `get_time_unix_secs`. Default: [`SystemClock`].
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
    /// Where guest log lines go besides `tracing`. Default: none.
    pub fn log_sink(mut self, sink: Arc<dyn LogSink>) -> Self {
        self.log_sink = Some(sink);
        self
    }
    /// Where plugins read the content bundles their manifests declare. Default: none (opening a
    /// bundle fails naming the missing store).
    pub fn bundle_store(mut self, store: Arc<dyn BundleStore>) -> Self {
        self.bundle_store = Some(store);
        self
    }
    /// Told about every call of every plugin (metrics). Default: none, and then nothing is timed.
    pub fn observer(mut self, observer: Arc<dyn PluginObserver>) -> Self {
        self.observer = Some(observer);
        self
    }
    /// Default: [`DEFAULT_MAX_INSTANCES`].
    pub fn max_instances(mut self, n: u32) -> Self {
        self.max_instances = n;
        self
    }
    /// Default: [`DEFAULT_MAX_PLUGIN_MEMORY_BYTES`].
    pub fn max_plugin_memory_bytes(mut self, bytes: u64) -> Self {
        self.max_plugin_memory_bytes = bytes;
        self
    }
    /// Default: [`DEFAULT_EPOCH_TICK`].
    pub fn epoch_tick(mut self, tick: Duration) -> Self {
        self.epoch_tick = tick.max(Duration::from_micros(100));
        self
    }
    /// Default: [`DEFAULT_MAX_WASM_STACK`].
    pub fn max_wasm_stack(mut self, bytes: usize) -> Self {
        self.max_wasm_stack = bytes;
        self
    }
    /// Use wasmtime's pooling instance allocator. Default: on.
    pub fn pooling(mut self, on: bool) -> Self {
        self.pooling = on;
        self
    }
    /// Meter fuel at all (a runtime-wide switch; per-plugin budgets are in `Limits`). Default: on.
    pub fn fuel(mut self, on: bool) -> Self {
        self.fuel = on;
        self
    }
    /// Enforce wall-clock deadlines with epoch interruption (a ticker thread and a check in every
    /// loop and function entry). Off, a plugin's `deadline` is not enforced: benchmarks only.
    /// Default: on.
    pub fn epoch_interruption(mut self, on: bool) -> Self {
        self.epoch = on;
        self
    }
    /// Map data segments copy-on-write from the compiled module instead of copying them into each
    /// new instance. Default: on.
    pub fn memory_init_cow(mut self, on: bool) -> Self {
        self.memory_init_cow = on;
        self
    }
    /// Pooling allocator only. Default: [`DEFAULT_LINEAR_MEMORY_KEEP_RESIDENT`].
    pub fn linear_memory_keep_resident(mut self, bytes: usize) -> Self {
        self.linear_memory_keep_resident = bytes;
        self
    }
    /// Keep compiled modules under `dir` so later runtimes (a restart) load them without
    /// compiling. Entries are keyed by the module's SHA-256 and the engine's settings; each image
    /// is checked against a BLAKE3 digest and length recorded beside it, then mapped (not copied);
    /// a damaged entry is ignored and rewritten. The directory must be writable only by the host's
    /// user: code in it runs in the host, and an image changed in place while a plugin runs from it
    /// changes that plugin's code. Default: none.
    pub fn module_cache_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.module_cache_dir = Some(dir.as_ref().to_path_buf());
        self
    }
}

#[derive(Debug)]
pub(crate) struct RuntimeInner {
    pub engine: Engine,
    pub linker: Linker<HostState>,
    /// The component linker: `chio:guard@0.2.0` and the deny-all WASI 0.2 surface.
    pub component_linker: component::ComponentLinker,
    /// `linker` plus WASI preview 1, for modules that import it (`wasm::wasi`).
    pub wasi_linker: Linker<HostState>,
    pub cfg: RuntimeConfig,
    /// Compiled modules by SHA-256, held weakly: the same bytes compile once while a plugin uses
    /// them, and a module no plugin uses any more is freed (hot reload does not leak).
    pub modules: Mutex<HashMap<[u8; 32], Weak<Module>>>,
    /// Compiled modules on disk, across runtimes.
    pub disk_cache: Option<ModuleCache>,
}

/// A plugin runtime: cheap to clone, `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<RuntimeInner>,
}

impl Runtime {
    /// Builds the engine and starts the epoch ticker that enforces deadlines.
    pub fn new(cfg: RuntimeConfig) -> Result<Runtime, LoadError> {
        let mut wc = Config::new();
        wc.consume_fuel(cfg.fuel);
        wc.epoch_interruption(cfg.epoch);
        wc.max_wasm_stack(cfg.max_wasm_stack);
        wc.memory_init_cow(cfg.memory_init_cow);
        if cfg.pooling {
            let mut pool = PoolingAllocationConfig::new();
            pool.total_core_instances(cfg.max_instances)
                .total_memories(cfg.max_instances)
                .total_tables(cfg.max_instances)
                .max_memory_size(cfg.max_plugin_memory_bytes as usize)
                .table_elements(helios_plugin_schema::limits::DEFAULT_MAX_TABLE_ELEMENTS as usize * 2)
                .max_unused_warm_slots(cfg.max_instances.min(100))
                .linear_memory_keep_resident(cfg.linear_memory_keep_resident)
                .table_keep_resident(16 << 10);
            wc.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&wc).map_err(|e| LoadError::Runtime(format!("engine: {e:#}")))?;
        let mut linker = Linker::new(&engine);
        imports::link(&mut linker).map_err(|e| LoadError::Runtime(format!("linker: {e:#}")))?;
        let component_linker =
            component::linker(&engine).map_err(|e| LoadError::Runtime(format!("component linker: {e:#}")))?;
        let mut wasi_linker = linker.clone();
        crate::wasm::wasi::link(&mut wasi_linker).map_err(|e| LoadError::Runtime(format!("WASI linker: {e:#}")))?;
        if cfg.epoch {
            start_epoch_ticker(&engine, cfg.epoch_tick).map_err(|e| {
                LoadError::Runtime(format!("cannot start the epoch ticker that enforces deadlines: {e}"))
            })?;
        }
        let disk_cache = cfg.module_cache_dir.as_deref().map(|dir| ModuleCache::new(dir, &engine));
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                wasi_linker,
                component_linker,
                cfg,
                modules: Mutex::default(),
                disk_cache,
            }),
        })
    }

    /// The KV backend plugins of this runtime use.
    pub fn kv(&self) -> &Arc<dyn KvBackend> {
        &self.inner.cfg.kv
    }

    /// The clock plugins of this runtime see.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.cfg.clock
    }

    pub(crate) fn epoch_ticks(&self, deadline: Duration) -> u64 {
        let tick = self.inner.cfg.epoch_tick.as_nanos().max(1);
        (deadline.as_nanos().div_ceil(tick) as u64).max(1) + 1
    }
}

/// One thread per runtime bumps the engine's epoch; it ends when the engine is gone.
fn start_epoch_ticker(engine: &Engine, tick: Duration) -> std::io::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new().name("helios-epoch".into()).spawn(move || {
        loop {
            std::thread::sleep(tick);
            match weak.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => break,
            }
        }
    })?;
    Ok(())
}
