//! Support code for the output of `#[hook]` and `#[chio_guard]`. Not a public API: the macros refer
//! to it by absolute path (`::helios_plugin_abi::__private::...`) and it may change in any release.

use std::cell::RefCell;

use helios_plugin_schema::abi;
use helios_plugin_schema::guard::DenyReason;

pub use helios_plugin_schema::hooks::{HookSpec, spec};
pub use helios_plugin_schema::{GuardRequest, GuardVerdict, HookContext, QueryContext};

/// Implemented by `()` only: a hook function without a return type must serve a hook whose output is
/// `()`, and the message says what to declare otherwise.
#[diagnostic::on_unimplemented(
    message = "this hook must return `{Self}`: add `-> {Self}` to the function",
    label = "the hook's output is `{Self}`, not `()`"
)]
pub trait UnitOutput {}
impl UnitOutput for () {}

/// Compiles only when `O` (the output of hook `S`) is `()`. Generated for hook functions declared
/// without a return type.
pub const fn declared_output<S: HookSpec<Output = O>, O: UnitOutput>() {}

/// How a hook function's argument is made from the hook's input: the input itself, or, for the
/// hooks whose input is a [`QueryContext`], the HeliosProxy page's [`HookContext`] with `sql` set
/// (`fn check_query(ctx: &HookContext) -> PreQueryResult` reading `ctx.sql`).
#[diagnostic::on_unimplemented(
    message = "this hook cannot take `{Self}`: it takes its input `<{S} as HookSpec>::Input`",
    label = "not the hook's input"
)]
pub trait HookArg<S: HookSpec>: Sized {
    fn from_input(input: S::Input) -> Self;
}

// The hooks whose input already is a `HookContext` take it as it is.
impl HookArg<spec::OnConnect> for HookContext {
    fn from_input(input: HookContext) -> Self {
        input
    }
}

impl HookArg<spec::OnDisconnect> for HookContext {
    fn from_input(input: HookContext) -> Self {
        input
    }
}

/// The page's form of a statement hook's context: the session's context with the statement in `sql`.
fn page_context(q: QueryContext) -> HookContext {
    HookContext { sql: q.query, ..q.hook_context }
}

impl HookArg<spec::PreQuery> for HookContext {
    fn from_input(input: QueryContext) -> Self {
        page_context(input)
    }
}

impl HookArg<spec::Route> for HookContext {
    fn from_input(input: QueryContext) -> Self {
        page_context(input)
    }
}

impl HookArg<spec::Rewrite> for HookContext {
    fn from_input(input: QueryContext) -> Self {
        page_context(input)
    }
}

/// The version of this SDK, written into the `helios.plugin` section as `sdk=`.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The keys of the `helios.plugin` section lines (read by `helios_plugin_schema::section::parse`).
pub const SECTION_KEY_SDK: &str = "sdk";
pub const SECTION_KEY_HOOK: &str = "hook";
pub const SECTION_KEY_GUARD: &str = "guard";

/// The section line [`crate::without_statement_facts!`] writes.
pub const FACTS_NONE_LINE: &[u8; 11] = b"facts=none\n";

/// The keys of the plugin's own name and version lines.
pub const SECTION_KEY_NAME: &str = "name";
pub const SECTION_KEY_VERSION: &str = "version";

/// Length of the section entry [`section_entry`] builds.
pub const fn section_entry_len(key: &str, value: &str, name: &str, version: &str) -> usize {
    line_len(SECTION_KEY_SDK, SDK_VERSION)
        + line_len(SECTION_KEY_NAME, name)
        + line_len(SECTION_KEY_VERSION, version)
        + line_len(key, value)
}

const fn line_len(key: &str, value: &str) -> usize {
    key.len() + 1 + value.len() + 1
}

/// The section entry `sdk=<SDK_VERSION>\nname=<name>\nversion=<version>\n<key>=<value>\n` as a
/// byte array of length `N = section_entry_len(..)` (a `static` in a link section needs a fixed-size
/// array). The macros pass the plugin crate's `CARGO_PKG_NAME` and `CARGO_PKG_VERSION`, so `sign`
/// and `pack` find the plugin's name and version in the module itself.
pub const fn section_entry<const N: usize>(key: &str, value: &str, name: &str, version: &str) -> [u8; N] {
    assert!(N == section_entry_len(key, value, name, version), "section entry length mismatch");
    let mut out = [0u8; N];
    let mut at = 0;
    at = put_line(&mut out, at, SECTION_KEY_SDK, SDK_VERSION);
    at = put_line(&mut out, at, SECTION_KEY_NAME, name);
    at = put_line(&mut out, at, SECTION_KEY_VERSION, version);
    put_line(&mut out, at, key, value);
    out
}

const fn put_line<const N: usize>(out: &mut [u8; N], mut at: usize, key: &str, value: &str) -> usize {
    at = put(out, at, key.as_bytes());
    at = put(out, at, b"=");
    at = put(out, at, value.as_bytes());
    put(out, at, b"\n")
}

const fn put<const N: usize>(out: &mut [u8; N], mut at: usize, bytes: &[u8]) -> usize {
    let mut i = 0;
    while i < bytes.len() {
        out[at] = bytes[i];
        at += 1;
        i += 1;
    }
    at
}

/// Installs, once, a panic hook that sends the panic message and location to the host log at
/// `LOG_ERROR`, prefixed with [`abi::PANIC_LOG_PREFIX`], so the trap that follows has a cause.
/// Every generated export calls this first. On native targets it does nothing (the test harness
/// reports panics itself).
pub fn init() {
    #[cfg(target_arch = "wasm32")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| std::panic::set_hook(std::boxed::Box::new(panic_hook)));
    }
}

#[cfg(target_arch = "wasm32")]
fn panic_hook(info: &std::panic::PanicHookInfo<'_>) {
    crate::log(crate::Level::Error, &panic_message(info));
}

/// The line the panic hook logs: prefix, message, location.
pub fn panic_message(info: &std::panic::PanicHookInfo<'_>) -> String {
    let msg = info.payload_as_str().unwrap_or("Box<dyn Any>");
    match info.location() {
        Some(l) => format!("{}{msg} at {}:{}:{}", abi::PANIC_LOG_PREFIX, l.file(), l.line(), l.column()),
        None => format!("{}{msg}", abi::PANIC_LOG_PREFIX),
    }
}

/// The bytes the host wrote at `ptr..ptr + len`.
///
/// # Safety
/// The host must have written `len` bytes at `ptr` in this module's memory (through `alloc`), and
/// they must stay untouched while the returned slice lives.
unsafe fn input<'a>(ptr: i32, len: i32) -> Option<&'a [u8]> {
    if len == 0 {
        return Some(&[]);
    }
    if ptr == 0 || len < 0 {
        return None;
    }
    // SAFETY: per this function's contract; ptr is non-null and the range lies in linear memory.
    Some(unsafe { std::slice::from_raw_parts(ptr as u32 as usize as *const u8, len as usize) })
}

/// Body of a generated hook export: reads the JSON input at `ptr..ptr + len` (leaving the buffer to
/// the host, which frees it), calls the plugin's function and returns its JSON output as a leaked
/// exact-size buffer packed with `abi::pack_ptr_len`. The host copies it out and frees it with
/// `dealloc(result_ptr, result_len)`.
///
/// Malformed input panics with a message naming the hook: the panic hook logs it and the host sees a
/// trap, which its error policy handles.
///
/// # Safety
/// As for the inputs of a hook export: the host wrote `len` bytes at `ptr`.
pub unsafe fn run_hook<S: HookSpec>(export: &str, ptr: i32, len: i32, f: impl FnOnce(S::Input) -> S::Output) -> i64 {
    init();
    // SAFETY: forwarded from the caller.
    let Some(bytes) = (unsafe { input(ptr, len) }) else {
        panic!("hook {export}: input buffer ({ptr}, {len}) is not a valid range");
    };
    let input: S::Input = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => panic!("hook {export}: malformed input JSON: {e}"),
    };
    let output = f(input);
    let json = match serde_json::to_vec(&output) {
        Ok(j) => j,
        Err(e) => panic!("hook {export}: could not serialise the result: {e}"),
    };
    let json = json.into_boxed_slice();
    let len = json.len() as u32;
    let ptr = Box::into_raw(json) as *mut u8 as usize as u32;
    abi::pack_ptr_len(ptr, len)
}

thread_local! {
    /// The reason of the last deny, read by `chio_deny_reason`. Cleared by every evaluation.
    static DENY_REASON: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Body of a generated `evaluate` export: parses the request, calls the guard and remembers the deny
/// reason. A malformed request denies with `malformed request: ...` (fail closed) without calling the
/// guard.
///
/// # Safety
/// The host wrote `len` bytes at `ptr` (through `chio_alloc`).
pub unsafe fn run_guard(ptr: i32, len: i32, f: impl FnOnce(GuardRequest) -> GuardVerdict) -> i32 {
    init();
    // SAFETY: forwarded from the caller.
    let verdict = match unsafe { input(ptr, len) } {
        None => GuardVerdict::deny(format!("malformed request: buffer ({ptr}, {len}) is not a valid range")),
        Some(bytes) => match serde_json::from_slice::<GuardRequest>(bytes) {
            Ok(req) => f(req),
            Err(e) => GuardVerdict::deny(format!("malformed request: {e}")),
        },
    };
    verdict_code(verdict)
}

/// Records a verdict for `chio_deny_reason` and returns its wire code.
pub fn verdict_code(verdict: GuardVerdict) -> i32 {
    let (code, reason) = match verdict {
        GuardVerdict::Allow => (abi::VERDICT_ALLOW, None),
        GuardVerdict::Deny { reason } => (abi::VERDICT_DENY, Some(reason)),
    };
    DENY_REASON.with(|r| *r.borrow_mut() = reason);
    code
}

/// Body of the generated `chio_deny_reason` export.
///
/// # Safety
/// `buf_ptr..buf_ptr + buf_len` must be writable memory of this module that nothing else uses during
/// the call (the host chose it for the reason).
pub unsafe fn write_deny_reason(buf_ptr: i32, buf_len: i32) -> i32 {
    init();
    if buf_ptr == 0 || buf_len <= 0 {
        return abi::DENY_REASON_NONE;
    }
    let Some(json) = pending_deny_reason(buf_len as usize) else {
        return abi::DENY_REASON_NONE;
    };
    // SAFETY: per this function's contract; `json.len() <= buf_len`.
    unsafe { std::ptr::copy_nonoverlapping(json.as_ptr(), buf_ptr as u32 as usize as *mut u8, json.len()) };
    json.len() as i32
}

/// The JSON `chio_deny_reason` writes for the last verdict into a buffer of `max` bytes, or `None`
/// after an allow (or when not even `{"reason":""}` fits).
pub fn pending_deny_reason(max: usize) -> Option<Vec<u8>> {
    DENY_REASON.with(|r| r.borrow().as_deref().and_then(|s| deny_reason_json(s, max)))
}

/// `{"reason":"..."}` for `reason`, cut at a char boundary so the JSON stays valid and is at most
/// `max` bytes; `None` when even an empty reason does not fit.
pub fn deny_reason_json(reason: &str, max: usize) -> Option<Vec<u8>> {
    let encode = |end: usize| serde_json::to_vec(&DenyReason { reason: reason[..end].to_owned() }).ok();
    let full = encode(reason.len())?;
    if full.len() <= max {
        return Some(full);
    }
    // The encoded length grows with the prefix: binary-search the longest prefix that fits.
    let cuts: Vec<usize> = reason.char_indices().map(|(i, _)| i).collect();
    let (mut lo, mut hi) = (0usize, cuts.len()); // cuts[lo] fits (cuts[0] == 0, the empty reason)
    if encode(0)?.len() > max {
        return None;
    }
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if encode(cuts[mid])?.len() <= max {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    encode(cuts[lo])
}

/// Expands to its `core` block (a core-module build; the `component` feature has its own version in
/// `crate::component`).
#[cfg(not(all(target_arch = "wasm32", feature = "component")))]
#[doc(hidden)]
#[macro_export]
macro_rules! __helios_guard_exports {
    (core: { $($core:tt)* } component: { $($component:tt)* }) => { $($core)* };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_facts_none_line_is_what_the_section_parser_reads() {
        use helios_plugin_schema::section::{FACTS_NONE, KEY_FACTS, parse};
        assert_eq!(&FACTS_NONE_LINE[..], format!("{KEY_FACTS}={FACTS_NONE}\n").as_bytes());
        assert!(parse(FACTS_NONE_LINE).unwrap().without_facts);
    }

    #[test]
    fn section_entry_is_the_documented_line_pair() {
        const N: usize = section_entry_len("hook", "pre_query", "my-plugin", "1.0.0");
        let e: [u8; N] = section_entry("hook", "pre_query", "my-plugin", "1.0.0");
        let expected = format!("sdk={SDK_VERSION}\nname=my-plugin\nversion=1.0.0\nhook=pre_query\n");
        assert_eq!(std::str::from_utf8(&e).unwrap(), expected);
        let d = helios_plugin_schema::section::parse(&e).unwrap();
        assert_eq!(d.hooks, vec![helios_plugin_schema::Hook::PreQuery]);
        assert_eq!(d.sdk.as_deref(), Some(SDK_VERSION));
        assert_eq!((d.name.as_deref(), d.version.as_deref()), (Some("my-plugin"), Some("1.0.0")));
    }

    #[test]
    fn a_short_deny_reason_is_written_whole() {
        let j = deny_reason_json("tool rm is denied", 4096).unwrap();
        assert_eq!(j, br#"{"reason":"tool rm is denied"}"#);
    }

    #[test]
    fn a_long_deny_reason_is_cut_at_a_char_boundary_and_stays_valid_json() {
        let reason = "é\"\n".repeat(100) + "ü";
        for max in [13, 14, 15, 16, 17, 18, 40, 101, 255] {
            let j = deny_reason_json(&reason, max).unwrap();
            assert!(j.len() <= max, "{} > {max}", j.len());
            let back: DenyReason = serde_json::from_slice(&j).unwrap();
            assert!(reason.starts_with(&back.reason));
            // Nothing longer would have fitted: one more char overflows.
            let next = reason[back.reason.len()..].chars().next().unwrap();
            let longer = format!("{}{next}", back.reason);
            assert!(serde_json::to_vec(&DenyReason { reason: longer }).unwrap().len() > max);
        }
    }

    #[test]
    fn a_buffer_too_small_for_any_json_gives_no_reason() {
        assert_eq!(deny_reason_json("x", 12), None);
    }

    #[test]
    fn the_deny_reason_follows_the_last_verdict() {
        assert_eq!(verdict_code(GuardVerdict::deny("no")), abi::VERDICT_DENY);
        assert_eq!(pending_deny_reason(64).as_deref(), Some(&br#"{"reason":"no"}"#[..]));
        assert_eq!(verdict_code(GuardVerdict::Allow), abi::VERDICT_ALLOW);
        assert_eq!(pending_deny_reason(64), None);
    }
}
