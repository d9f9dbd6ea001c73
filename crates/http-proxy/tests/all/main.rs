//! The HTTP host's integration tests, one binary: real clients (curl, httpx) through the proxy to a
//! real upstream (`proxy`), a chain mixing WASM and Starlark plugins (`mixed`), and
//! `plugin_introspect` over MCP (`mcp`).

mod mcp;
mod mixed;
mod proxy;
mod support;
