//! The deny-all WASI 0.2 context a `wasm32-wasip2` guard runs with: no preopened directories, no
//! environment, no arguments, an empty stdin, every socket address refused and name lookup off.
//! stdout and stderr are captured per call and forwarded to the plugin log line by line (info and
//! warn) under the same per-call caps as `host.log`.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use crate::{backend::PluginContext, services::Level, wasm::state::CallFacts};
use wasmtime_wasi::{
    WasiCtx, WasiCtxBuilder,
    cli::{IsTerminal, StdoutStream},
    p2::{OutputStream, Pollable, StreamResult},
};

/// Bytes of stdout (and of stderr) kept per call; the rest is dropped (counted as dropped log
/// lines). Enough for the per-call line cap at a typical line length.
pub(crate) const CAPTURE_MAX_BYTES: usize = 64 << 10;

/// One captured output stream, shared by every handle the guest opens on it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Capture {
    inner: Arc<Mutex<CaptureBuf>>,
}

#[derive(Debug, Default)]
struct CaptureBuf {
    bytes: Vec<u8>,
    dropped: bool,
}

impl Capture {
    fn push(&self, bytes: &[u8]) {
        let mut buf = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let room = CAPTURE_MAX_BYTES.saturating_sub(buf.bytes.len());
        if bytes.len() > room {
            buf.dropped = true;
        }
        buf.bytes.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// What the guest wrote since the last take, and whether some of it was dropped.
    pub(crate) fn take(&self) -> (Vec<u8>, bool) {
        let mut buf = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (std::mem::take(&mut buf.bytes), std::mem::take(&mut buf.dropped))
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for Capture {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        // Always ready: what does not fit the capture is dropped, never blocks the guest.
        Ok(4096)
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A deny-all context whose stdout and stderr go to `stdout` and `stderr`.
pub(crate) fn deny_all(stdout: &Capture, stderr: &Capture) -> WasiCtx {
    deny_all_builder(stdout, stderr).build()
}

/// The builder of [`deny_all`]; WASI preview 1 modules (`wasm::wasi`) build their context from it.
pub(crate) fn deny_all_builder(stdout: &Capture, stderr: &Capture) -> WasiCtxBuilder {
    let mut b = WasiCtxBuilder::new();
    b.stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    b
}

/// Forwards what the guest wrote to stdout (info) and stderr (warn) during the call to the plugin
/// log, one entry per line, under the per-call log caps; a capture that overflowed counts as a
/// dropped line. Shared by components and WASI preview 1 modules.
pub(crate) fn forward(stdout: &Capture, stderr: &Capture, call: &mut CallFacts, ctx: &PluginContext) {
    for (capture, level) in [(stdout, Level::Info), (stderr, Level::Warn)] {
        let (bytes, dropped) = capture.take();
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            call.log(ctx, level, line);
        }
        if dropped {
            call.dropped_logs += 1;
        }
    }
}
