//! Loading a script, running its top level under a budget, and calling its hooks.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use starlark::any::ProvidesStaticType;
use starlark::codemap::FileSpanRef;
use starlark::environment::{FrozenModule, Globals, GlobalsBuilder, LibraryExtension, Module};
use starlark::eval::{BeforeStmtFunc, BeforeStmtFuncDyn, Evaluator};
use starlark::starlark_module;
use starlark::syntax::{AstModule, Dialect};
use starlark::values::dict::{DictMut, DictRef};
use starlark::values::none::NoneType;
use starlark::values::structs::AllocStruct;
use starlark::values::{Heap, OwnedFrozenValue, Value};

use crate::catalogue::{HookPoint, HostHooks, Phase, phase_name};
use crate::config::{OnError, PluginEntry};
use crate::state::{KvStore, MemoryStore, PluginStore, Scope, StateRegistry};
use crate::value::StateValue;

/// Heap a single call (or the top level) may grow to before it is stopped.
pub const MAX_HEAP_BYTES: usize = 64 << 20;
/// Wall-clock deadline of a single call (or the top level).
pub const CALL_DEADLINE: Duration = Duration::from_secs(5);
/// Starlark call-stack depth.
pub const MAX_CALL_DEPTH: usize = 200;
/// Size of a script file.
pub const MAX_SCRIPT_BYTES: u64 = 1 << 20;

/// What a hook asked the host to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Go on (also what `None` and `"CONTINUE"` mean).
    Continue,
    /// Drop the message (HTTP: close without answering; connection: refuse it).
    Drop,
    /// Answer with this response instead of the upstream's.
    Respond(Respond),
}

/// A response made by a plugin with `action.respond(...)`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Respond {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// Why a script failed, as the host reports and counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Reading, parsing or running the top level, or a bad `register_hook`.
    Load,
    /// The `max_steps` budget ran out.
    Steps,
    /// The heap grew past [`MAX_HEAP_BYTES`].
    Memory,
    /// The call ran past [`CALL_DEADLINE`].
    Deadline,
    /// Too deep a call stack.
    Stack,
    /// Any other Starlark error (fail(), a type error, a state cap).
    Runtime,
    /// The hook returned something that is not an action, or left `msg` not JSON-shaped.
    BadResult,
}

/// A script failure naming the plugin, the hook and the cause.
#[derive(Debug, Clone, thiserror::Error)]
#[error("starlark plugin \"{plugin}\"{}: {message}", hook.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
pub struct ScriptError {
    pub plugin: String,
    pub hook: Option<String>,
    pub cause: Cause,
    pub message: String,
}

/// Services a plugin is loaded with.
#[derive(Debug, Clone)]
pub struct Services {
    /// What the host fires.
    pub hooks: HostHooks,
    /// Volatile per-plugin state (share one registry across reloads).
    pub state: StateRegistry,
    /// The persistent store; `None` keeps `store` in memory for this process.
    pub store: Option<Arc<dyn KvStore>>,
}

impl Services {
    /// Services for `hooks` with a fresh state registry and an in-memory store.
    pub fn new(hooks: HostHooks) -> Services {
        Services { hooks, state: StateRegistry::new(), store: None }
    }
}

/// The per-invocation context a hook sees as `ctx`.
#[derive(Debug, Clone, Default)]
pub struct HookContext {
    /// `ctx.transaction_state`: one request/response.
    pub transaction_state: Scope,
    /// `ctx.stream_state`: one connection/stream.
    pub stream_state: Scope,
    /// `ctx.client`: the client's address.
    pub client: String,
    /// `ctx.conn_id`: the connection's number.
    pub conn_id: u64,
}

/// One registration: the hook point and the function's index.
#[derive(Debug, Clone)]
pub struct Registration {
    pub point: HookPoint,
    func: OwnedFrozenValue,
}

/// A loaded script plugin.
#[derive(Debug)]
pub struct ScriptPlugin {
    name: String,
    path: PathBuf,
    entry: PluginEntry,
    registrations: Vec<Registration>,
    _module: FrozenModule,
}

// What `eval.extra` carries while the top level runs or a hook is called.
#[derive(ProvidesStaticType)]
struct EvalCtx {
    plugin: String,
    hooks: Option<HostHooks>,
    points: RefCell<Vec<HookPoint>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Trip {
    Steps,
    Memory,
    Deadline,
}

// Runs before every statement: counts steps, checks the heap and the deadline.
struct Budget {
    steps: u64,
    max_steps: u64,
    deadline: Instant,
    trip: Rc<Cell<Option<Trip>>>,
}

use std::rc::Rc;

impl<'e> BeforeStmtFuncDyn<'e> for Budget {
    fn call<'v>(
        &mut self,
        _span: FileSpanRef,
        _continued: bool,
        eval: &mut Evaluator<'v, '_, 'e>,
    ) -> starlark::Result<()> {
        self.steps += 1;
        let trip = if self.steps > self.max_steps {
            Some(Trip::Steps)
        } else if eval.heap().allocated_bytes() > MAX_HEAP_BYTES {
            Some(Trip::Memory)
        } else if self.steps.is_multiple_of(256) && Instant::now() > self.deadline {
            Some(Trip::Deadline)
        } else {
            None
        };
        match trip {
            None => Ok(()),
            Some(t) => {
                self.trip.set(Some(t));
                Err(starlark::Error::new_other(anyhow::anyhow!("budget exceeded")))
            }
        }
    }
}

// Arms every limit on an evaluator. Steps are statements (counted before each one) and ticks
// (function calls and loop back-edges, which also bound comprehensions); the heap and deadline
// are checked before each statement and every 1,000 ticks.
fn arm<'a>(eval: &mut Evaluator<'_, 'a, '_>, max_steps: u64, trip: Rc<Cell<Option<Trip>>>) -> anyhow::Result<()> {
    let deadline = Instant::now() + CALL_DEADLINE;
    eval.before_stmt_for_dap(BeforeStmtFunc::from_dyn(Box::new(Budget {
        steps: 0,
        max_steps,
        deadline,
        trip: trip.clone(),
    })));
    eval.set_max_tick_count(max_steps)?;
    eval.set_max_heap_size(MAX_HEAP_BYTES)?;
    eval.set_max_callstack_size(MAX_CALL_DEPTH)?;
    eval.set_check_cancelled(Box::new(move || {
        let late = Instant::now() > deadline;
        if late {
            trip.set(Some(Trip::Deadline));
        }
        late
    }));
    Ok(())
}

fn classify(err: &starlark::Error, trip: Option<Trip>, max_steps: u64) -> (Cause, String) {
    let text = format!("{err:#}");
    match trip {
        Some(Trip::Steps) => (Cause::Steps, format!("step budget of {max_steps} steps exhausted (max_steps)")),
        Some(Trip::Memory) => (Cause::Memory, format!("heap grew past {} MiB", MAX_HEAP_BYTES >> 20)),
        Some(Trip::Deadline) => (Cause::Deadline, format!("ran past its {} ms deadline", CALL_DEADLINE.as_millis())),
        None if text.contains("Tick limit") || text.contains("tick limit") => {
            (Cause::Steps, format!("step budget of {max_steps} steps exhausted (max_steps)"))
        }
        None if text.contains("eap limit") || text.contains("eap size") => {
            (Cause::Memory, format!("heap grew past {} MiB", MAX_HEAP_BYTES >> 20))
        }
        None if text.contains("Starlark call stack overflow")
            || text.contains("stack overflow")
            || text.contains("ecursion") =>
        {
            (Cause::Stack, format!("call stack deeper than {MAX_CALL_DEPTH} frames: {}", first_line(&text)))
        }
        None => (Cause::Runtime, text),
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

#[starlark_module]
fn helios_builtins(builder: &mut GlobalsBuilder) {
    /// Subscribes `fn(msg, ctx)` to (protocol, event[, phase]). Only at a script's top level.
    fn register_hook<'v>(
        #[starlark(require = pos)] protocol: &str,
        #[starlark(require = pos)] event: &str,
        #[starlark(require = pos)] func: Value<'v>,
        #[starlark(require = named)] phase: Option<&str>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        let ctx = eval
            .extra
            .and_then(|e| e.downcast_ref::<EvalCtx>())
            .ok_or_else(|| anyhow::anyhow!("register_hook: no plugin context"))?;
        let hooks = ctx.hooks.as_ref().ok_or_else(|| {
            anyhow::anyhow!("register_hook() is only allowed at a script's top level, not inside a hook")
        })?;
        if !matches!(func.get_type(), "function" | "native_function") {
            anyhow::bail!(
                "register_hook(\"{protocol}\", \"{event}\", ...): the third argument must be a function, got {}",
                func.get_type()
            );
        }
        let point = hooks.resolve(protocol, event, phase).map_err(|e| anyhow::anyhow!("register_hook: {e}"))?;
        let table = eval.module().extra_value().ok_or_else(|| anyhow::anyhow!("register_hook: no hook table"))?;
        let mut dict = DictMut::from_value(table)?;
        let index = ctx.points.borrow().len() as i32;
        let key = eval.heap().alloc(index).get_hashed().map_err(|e| anyhow::anyhow!("register_hook: {e}"))?;
        dict.aref.insert_hashed(key, func);
        ctx.points.borrow_mut().push(point);
        Ok(NoneType)
    }
}

#[starlark_module]
fn action_members(builder: &mut GlobalsBuilder) {
    const CONTINUE: &str = "CONTINUE";
    const DROP: &str = "DROP";

    /// A response made by the plugin: `action.respond(status=403, headers={...}, body="...")`.
    fn respond<'v>(
        #[starlark(require = named, default = 200)] status: i32,
        #[starlark(require = named)] headers: Option<Value<'v>>,
        #[starlark(require = named, default = "")] body: &str,
        heap: Heap<'v>,
    ) -> anyhow::Result<Value<'v>> {
        if !(100..=999).contains(&status) {
            anyhow::bail!("action.respond: status {status} is not an HTTP status code");
        }
        let headers = match headers {
            None => Json::Object(Default::default()),
            Some(h) => h.to_json_value()?,
        };
        if !headers.is_object() {
            anyhow::bail!("action.respond: headers must be a dict of strings");
        }
        Ok(heap.alloc(serde_json::json!({"action": "RESPOND", "status": status, "headers": headers, "body": body})))
    }
}

#[starlark_module]
fn crypto_members(builder: &mut GlobalsBuilder) {
    /// Hex SHA-256 of the UTF-8 bytes of `data`.
    fn sha256_hex(#[starlark(require = pos)] data: &str) -> anyhow::Result<String> {
        use sha2::Digest;
        Ok(hex::encode(sha2::Sha256::digest(data.as_bytes())))
    }

    /// Hex HMAC-SHA-256 of `data` under `key`.
    fn hmac_sha256_hex(
        #[starlark(require = pos)] key: &str,
        #[starlark(require = pos)] data: &str,
    ) -> anyhow::Result<String> {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes())?;
        mac.update(data.as_bytes());
        Ok(hex::encode(mac.finalize().into_bytes()))
    }

    /// Standard base64 of the UTF-8 bytes of `data`.
    fn base64_encode(#[starlark(require = pos)] data: &str) -> anyhow::Result<String> {
        use base64::Engine;
        Ok(base64::engine::general_purpose::STANDARD.encode(data))
    }

    /// Decodes standard base64 into a UTF-8 string.
    fn base64_decode(#[starlark(require = pos)] data: &str) -> anyhow::Result<String> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD.decode(data)?;
        Ok(String::from_utf8(bytes)?)
    }
}

#[starlark_module]
fn proxy_members(builder: &mut GlobalsBuilder) {
    /// Logs `message` through the host's log with the plugin's name (level: debug, info, warn, error).
    fn log<'v>(
        #[starlark(require = pos)] message: &str,
        #[starlark(require = named, default = "info")] level: &str,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        let plugin = eval.extra.and_then(|e| e.downcast_ref::<EvalCtx>()).map(|c| c.plugin.as_str()).unwrap_or("?");
        let message: String = message.chars().take(4096).collect();
        match level {
            "debug" => tracing::debug!(plugin, "{message}"),
            "info" => tracing::info!(plugin, "{message}"),
            "warn" => tracing::warn!(plugin, "{message}"),
            "error" => tracing::error!(plugin, "{message}"),
            other => anyhow::bail!("proxy.log: unknown level \"{other}\" (debug, info, warn, error)"),
        }
        Ok(NoneType)
    }
}

/// The predeclared names every script sees, besides its own `state`, `store` and `config`:
/// the Starlark builtins (no `load`, no I/O), `json`, `register_hook`, `action`, `crypto`, `proxy`.
pub fn globals() -> &'static Globals {
    static G: OnceLock<Globals> = OnceLock::new();
    G.get_or_init(|| {
        GlobalsBuilder::extended_by(&[LibraryExtension::Json, LibraryExtension::Print, LibraryExtension::StructType])
            .with(helios_builtins)
            .with(|b| b.namespace("action", action_members))
            .with(|b| b.namespace("crypto", crypto_members))
            .with(|b| b.namespace("proxy", proxy_members))
            .build()
    })
}

struct LogPrint(String);

impl starlark::PrintHandler for LogPrint {
    fn println(&self, text: &str) -> starlark::Result<()> {
        tracing::info!(plugin = %self.0, "print: {text}");
        Ok(())
    }
}

impl ScriptPlugin {
    /// Reads, parses and runs the top level of `entry.path` under the plugin's budget, collecting
    /// its `register_hook` calls. Every failure names the plugin and the file.
    pub fn load(entry: &PluginEntry, services: &Services) -> Result<ScriptPlugin, ScriptError> {
        let name = entry.effective_name();
        let fail = |cause, message: String| ScriptError { plugin: name.clone(), hook: None, cause, message };
        let path_text = entry.path.display().to_string();
        let meta =
            std::fs::metadata(&entry.path).map_err(|e| fail(Cause::Load, format!("cannot read {path_text}: {e}")))?;
        if meta.len() > MAX_SCRIPT_BYTES {
            return Err(fail(
                Cause::Load,
                format!("{path_text} is {} bytes; the cap is {MAX_SCRIPT_BYTES}", meta.len()),
            ));
        }
        let source = std::fs::read_to_string(&entry.path)
            .map_err(|e| fail(Cause::Load, format!("cannot read {path_text}: {e}")))?;
        let dialect = Dialect { enable_load: false, ..Dialect::Standard };
        let ast = AstModule::parse(&path_text, source, &dialect).map_err(|e| fail(Cause::Load, format!("{e:#}")))?;

        let state = services.state.scope(&name);
        let kv: Arc<dyn KvStore> = services.store.clone().unwrap_or_else(|| Arc::new(MemoryStore::default()));
        let store = PluginStore::new(kv, &name);
        let vars = Json::Object(entry.vars.clone());
        let max_steps = entry.effective_max_steps();
        let ctx =
            EvalCtx { plugin: name.clone(), hooks: Some(services.hooks.clone()), points: RefCell::new(Vec::new()) };
        let trip = Rc::new(Cell::new(None));

        let result: Result<FrozenModule, ScriptError> = Module::with_temp_heap(|module| {
            let heap = module.heap();
            module.set("state", heap.alloc(StateValue::memory(state, "state")));
            module.set("store", heap.alloc(StateValue::store(store)));
            let frozen_vars = module.frozen_heap().alloc(&vars);
            module.set("config", frozen_vars.to_value());
            module.set_extra_value(heap.alloc(starlark::values::dict::AllocDict::<[(i32, i32); 0]>([])));
            let print = LogPrint(name.clone());
            {
                let mut eval = Evaluator::new(&module);
                eval.extra = Some(&ctx);
                eval.set_print_handler(&print);
                arm(&mut eval, max_steps, trip.clone()).map_err(|e| fail(Cause::Load, e.to_string()))?;
                if let Err(e) = eval.eval_module(ast, globals()) {
                    let (cause, message) = classify(&e, trip.get(), max_steps);
                    let cause = if cause == Cause::Runtime { Cause::Load } else { cause };
                    return Err(fail(cause, format!("top level of {path_text}: {message}")));
                }
            }
            module.freeze().map_err(|e| fail(Cause::Load, format!("{e:?}")))
        });
        let module = result?;
        let points = ctx.points.into_inner();
        if points.is_empty() {
            return Err(fail(
                Cause::Load,
                format!("{path_text} registers no hook (call register_hook at its top level)"),
            ));
        }
        let table = module.owned_extra_value().ok_or_else(|| fail(Cause::Load, "hook table lost".into()))?;
        let mut registrations = Vec::with_capacity(points.len());
        for (i, point) in points.into_iter().enumerate() {
            let lookup = |d: starlark::values::FrozenValue| -> Result<starlark::values::FrozenValue, ()> {
                let dict = DictRef::from_value(d.to_value()).ok_or(())?;
                let found = dict.iter().find(|(k, _)| k.unpack_i32() == Some(i as i32)).map(|(_, v)| v);
                found.and_then(|v| v.unpack_frozen()).ok_or(())
            };
            let f = table.try_map(lookup).map_err(|()| fail(Cause::Load, format!("hook {i} lost")))?;
            registrations.push(Registration { point, func: f });
        }
        Ok(ScriptPlugin { name, path: entry.path.clone(), entry: entry.clone(), registrations, _module: module })
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The script's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The config entry it was loaded from.
    pub fn entry(&self) -> &PluginEntry {
        &self.entry
    }

    /// `skip` or `abort`.
    pub fn on_error(&self) -> OnError {
        self.entry.on_error
    }

    /// Its registrations, in `register_hook` order.
    pub fn registrations(&self) -> &[Registration] {
        &self.registrations
    }

    /// Calls registration `index` with `msg` (mutated in place: the hook's changes to the dict
    /// are written back) under the plugin's step budget, heap cap and deadline.
    pub fn call(&self, index: usize, msg: &mut Json, ctx: &HookContext) -> Result<Verdict, ScriptError> {
        let reg = &self.registrations[index];
        let hook = reg.point.to_string();
        let fail = |cause, message: String| ScriptError {
            plugin: self.name.clone(),
            hook: Some(hook.clone()),
            cause,
            message,
        };
        let max_steps = self.entry.effective_max_steps();
        let run = || -> Result<Verdict, ScriptError> {
            let extra = EvalCtx { plugin: self.name.clone(), hooks: None, points: RefCell::new(Vec::new()) };
            let trip = Rc::new(Cell::new(None));
            Module::with_temp_heap(|module| {
                let heap = module.heap();
                let msg_value = heap.alloc(&*msg);
                let ctx_value = heap.alloc(AllocStruct([
                    (
                        "transaction_state",
                        heap.alloc(StateValue::memory(ctx.transaction_state.clone(), "transaction_state")),
                    ),
                    ("stream_state", heap.alloc(StateValue::memory(ctx.stream_state.clone(), "stream_state"))),
                    ("client", heap.alloc(ctx.client.as_str())),
                    ("conn_id", heap.alloc(ctx.conn_id)),
                    ("plugin", heap.alloc(self.name.as_str())),
                    ("protocol", heap.alloc(reg.point.protocol.as_str())),
                    ("event", heap.alloc(reg.point.event.as_str())),
                    ("phase", heap.alloc(phase_name(reg.point.phase))),
                ]));
                let print = LogPrint(self.name.clone());
                let mut eval = Evaluator::new(&module);
                eval.extra = Some(&extra);
                eval.set_print_handler(&print);
                arm(&mut eval, max_steps, trip.clone()).map_err(|e| fail(Cause::Runtime, e.to_string()))?;
                module.frozen_heap().add_reference(reg.func.owner());
                // SAFETY: the module's frozen heap now holds a reference to the heap that owns the
                // function, so the frozen value outlives every use of this evaluation.
                let func = unsafe { reg.func.unchecked_frozen_value() }.to_value();
                let ret = eval.eval_function(func, &[msg_value, ctx_value], &[]).map_err(|e| {
                    let (cause, message) = classify(&e, trip.get(), max_steps);
                    fail(cause, message)
                })?;
                let verdict = verdict(ret).map_err(|m| fail(Cause::BadResult, m))?;
                *msg = msg_value
                    .to_json_value()
                    .map_err(|e| fail(Cause::BadResult, format!("msg is no longer JSON-shaped: {e:#}")))?;
                Ok(verdict)
            })
        };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
            Ok(r) => r,
            Err(p) => {
                let what =
                    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
                Err(fail(Cause::Runtime, format!("interpreter panicked: {}", what.unwrap_or_default())))
            }
        }
    }
}

fn verdict(ret: Value) -> Result<Verdict, String> {
    if ret.is_none() {
        return Ok(Verdict::Continue);
    }
    if let Some(s) = ret.unpack_str() {
        return match s.to_ascii_uppercase().as_str() {
            "CONTINUE" => Ok(Verdict::Continue),
            "DROP" => Ok(Verdict::Drop),
            _ => Err(format!("returned \"{s}\"; expected None, action.CONTINUE, action.DROP or action.respond(...)")),
        };
    }
    let json = ret.to_json_value().map_err(|e| format!("returned a {}: {e:#}", ret.get_type()))?;
    if json.get("action").and_then(Json::as_str) == Some("RESPOND") {
        let status = json.get("status").and_then(Json::as_u64).unwrap_or(200) as u16;
        let mut headers = Vec::new();
        if let Some(h) = json.get("headers").and_then(Json::as_object) {
            for (k, v) in h {
                let v = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
                headers.push((k.clone(), v));
            }
        }
        let body = json.get("body").and_then(Json::as_str).unwrap_or("").to_string();
        return Ok(Verdict::Respond(Respond { status, headers, body }));
    }
    Err(format!("returned a {}; expected None, action.CONTINUE, action.DROP or action.respond(...)", ret.get_type()))
}

#[allow(dead_code)]
fn phase_is_none(p: Phase) -> bool {
    p == Phase::None
}
