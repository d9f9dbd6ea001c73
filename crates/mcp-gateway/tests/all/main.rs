//! The gateway's integration tests: the real binary between real MCP clients (rmcp's and the `mcp`
//! Python SDK's) and a real upstream MCP server written with the Python SDK
//! (`tests/fixtures/upstream_server.py`), with real wasm guards verified from `guard-manifest.yaml`.

mod admin;
mod config;
mod forwarding;
mod listen;
mod operations;
mod support;
mod tool_calls;
mod upstreams;
