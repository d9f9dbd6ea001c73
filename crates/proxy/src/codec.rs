//! Framing of protocol v3 messages on a socket, the few backend messages the proxy writes itself, and
//! parsers for the frontend messages it inspects.
//!
//! Frontend messages the proxy *sends* upstream (startup, Parse, Query, Sync, SASL, cancel) are built
//! with `postgres_protocol::message::frontend`; authentication math uses
//! `postgres_protocol::authentication`. This module only frames bytes (with a length cap) and writes
//! the handful of backend messages no client library needs to write.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::ProtocolError;

/// Largest startup packet accepted (PostgreSQL's own limit is 10,000 bytes).
pub const MAX_STARTUP_PACKET_BYTES: usize = 10_000;
/// Protocol 3.0, the only one spoken.
pub const PROTOCOL_3_0: i32 = 196_608;
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;

/// One framed message: its type byte and the whole message (type, length, body) for relaying.
#[derive(Debug, Clone)]
pub struct Frame {
    pub tag: u8,
    pub raw: Bytes,
}

impl Frame {
    /// The body (after the type byte and length).
    pub fn body(&self) -> &[u8] {
        &self.raw[5..]
    }
}

/// A connection's transport: plain TCP, or TLS after an SSLRequest the proxy accepted.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// TLS to a node.
    TlsClient(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// Only during the TLS handshake.
    Closed,
}

impl tokio::io::AsyncRead for Stream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Stream::TlsClient(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Stream::Closed => std::task::Poll::Ready(Ok(())),
        }
    }
}

impl tokio::io::AsyncWrite for Stream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Stream::TlsClient(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Stream::Closed => std::task::Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => std::pin::Pin::new(s).poll_flush(cx),
            Stream::TlsClient(s) => std::pin::Pin::new(s).poll_flush(cx),
            Stream::Closed => std::task::Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Stream::TlsClient(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Stream::Closed => std::task::Poll::Ready(Ok(())),
        }
    }
}

/// A connection read as protocol frames into one buffer.
#[derive(Debug)]
pub struct Conn {
    pub stream: Stream,
    rbuf: BytesMut,
    max: usize,
    peer: String,
}

impl Conn {
    pub fn new(stream: TcpStream, max_message_bytes: usize, peer: String) -> Conn {
        let _ = stream.set_nodelay(true);
        Conn { stream: Stream::Plain(stream), rbuf: BytesMut::with_capacity(16 << 10), max: max_message_bytes, peer }
    }

    /// A connection over an already established transport (TLS to a node).
    pub fn with_stream(stream: Stream, max_message_bytes: usize, peer: String) -> Conn {
        Conn { stream, rbuf: BytesMut::with_capacity(16 << 10), max: max_message_bytes, peer }
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Whether bytes are already buffered (a frame may be complete without reading the socket).
    pub fn has_buffered(&self) -> bool {
        !self.rbuf.is_empty()
    }

    /// A complete frame from the buffer, if there is one.
    pub fn try_frame(&mut self) -> Result<Option<Frame>, ProtocolError> {
        if self.rbuf.len() < 5 {
            return Ok(None);
        }
        let len = i32::from_be_bytes([self.rbuf[1], self.rbuf[2], self.rbuf[3], self.rbuf[4]]);
        if len < 4 {
            return Err(ProtocolError::BadLength { peer: self.peer.clone(), found: len as i64 });
        }
        let total = len as usize + 1;
        if total > self.max {
            return Err(ProtocolError::TooLarge { peer: self.peer.clone(), found: total, limit: self.max });
        }
        if self.rbuf.len() < total {
            self.rbuf.reserve(total - self.rbuf.len());
            return Ok(None);
        }
        let raw = self.rbuf.split_to(total).freeze();
        Ok(Some(Frame { tag: raw[0], raw }))
    }

    /// The next frame. Cancel-safe: a partial frame stays buffered.
    pub async fn read_frame(&mut self) -> Result<Frame, ProtocolError> {
        loop {
            if let Some(f) = self.try_frame()? {
                return Ok(f);
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> Result<(), ProtocolError> {
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(16 << 10);
        }
        let n = self.stream.read_buf(&mut self.rbuf).await.map_err(|e| self.io(e))?;
        if n == 0 {
            return Err(ProtocolError::Closed { peer: self.peer.clone() });
        }
        Ok(())
    }

    /// A startup-phase packet (length, then body; no type byte), capped at
    /// [`MAX_STARTUP_PACKET_BYTES`]. Returns the body.
    pub async fn read_startup(&mut self) -> Result<Bytes, ProtocolError> {
        loop {
            if self.rbuf.len() >= 4 {
                let len = i32::from_be_bytes([self.rbuf[0], self.rbuf[1], self.rbuf[2], self.rbuf[3]]);
                if len < 8 {
                    return Err(ProtocolError::BadLength { peer: self.peer.clone(), found: len as i64 });
                }
                let len = len as usize;
                if len > MAX_STARTUP_PACKET_BYTES {
                    return Err(ProtocolError::TooLarge {
                        peer: self.peer.clone(),
                        found: len,
                        limit: MAX_STARTUP_PACKET_BYTES,
                    });
                }
                if self.rbuf.len() >= len {
                    let mut p = self.rbuf.split_to(len);
                    p.advance(4);
                    return Ok(p.freeze());
                }
            }
            self.fill().await?;
        }
    }

    pub async fn write_all(&mut self, buf: &[u8]) -> Result<(), ProtocolError> {
        self.stream.write_all(buf).await.map_err(|e| self.io(e))
    }

    /// True when the peer closed the socket or sent something while we expected silence. Used to
    /// weed out dead pooled connections before reuse; never blocks.
    pub fn looks_closed(&self) -> bool {
        if !self.rbuf.is_empty() {
            return true;
        }
        let mut b = [0u8; 1];
        // Under TLS this reads the socket beneath: any byte (or EOF) while idle means the
        // connection is dropped anyway, so consuming it does no harm.
        let tcp = match &self.stream {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
            Stream::TlsClient(s) => s.get_ref().0,
            Stream::Closed => return true,
        };
        !matches!(tcp.try_read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// The `tls-server-end-point` data of a TLS connection to a node (its certificate).
    pub fn peer_end_point(&self) -> Option<Vec<u8>> {
        match &self.stream {
            Stream::TlsClient(s) => {
                s.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| crate::scram::tls_server_end_point(c))
            }
            _ => None,
        }
    }

    /// Whether the client talks TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// Performs the server side of a TLS handshake after answering an SSLRequest with 'S'. Bytes
    /// the client sent before the handshake (plaintext a man in the middle could have injected)
    /// are a protocol violation.
    pub async fn accept_tls(&mut self, acceptor: &tokio_rustls::TlsAcceptor) -> Result<(), ProtocolError> {
        if !self.rbuf.is_empty() {
            return Err(ProtocolError::Malformed {
                peer: self.peer.clone(),
                what: "SSLRequest",
                message: "data received before the TLS handshake".into(),
            });
        }
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            return Err(ProtocolError::Malformed {
                peer: self.peer.clone(),
                what: "SSLRequest",
                message: "TLS requested twice".into(),
            });
        };
        let tls = acceptor.accept(tcp).await.map_err(|e| self.io(e))?;
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }

    fn io(&self, e: std::io::Error) -> ProtocolError {
        ProtocolError::Io { peer: self.peer.clone(), source: e }
    }
}

// ---- backend messages written by the proxy ----

fn put_msg(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_i32(0);
    body(buf);
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(buf: &mut BytesMut, s: &str) {
    // A NUL inside would end the string early on the client's side: drop it.
    for b in s.bytes().filter(|&b| b != 0) {
        buf.put_u8(b);
    }
    buf.put_u8(0);
}

pub fn auth_ok(buf: &mut BytesMut) {
    put_msg(buf, b'R', |b| b.put_i32(0));
}

pub fn auth_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    put_msg(buf, b'R', |b| {
        b.put_i32(10);
        for m in mechanisms {
            put_cstr(b, m);
        }
        b.put_u8(0);
    });
}

pub fn auth_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    put_msg(buf, b'R', |b| {
        b.put_i32(11);
        b.put_slice(data);
    });
}

pub fn auth_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    put_msg(buf, b'R', |b| {
        b.put_i32(12);
        b.put_slice(data);
    });
}

pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    put_msg(buf, b'S', |b| {
        put_cstr(b, name);
        put_cstr(b, value);
    });
}

pub fn backend_key_data(buf: &mut BytesMut, pid: i32, key: i32) {
    put_msg(buf, b'K', |b| {
        b.put_i32(pid);
        b.put_i32(key);
    });
}

pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    put_msg(buf, b'Z', |b| b.put_u8(status));
}

pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    put_msg(buf, b'C', |b| put_cstr(b, tag));
}

pub fn parse_complete(buf: &mut BytesMut) {
    put_msg(buf, b'1', |_| {});
}
pub fn bind_complete(buf: &mut BytesMut) {
    put_msg(buf, b'2', |_| {});
}
pub fn close_complete(buf: &mut BytesMut) {
    put_msg(buf, b'3', |_| {});
}
pub fn no_data(buf: &mut BytesMut) {
    put_msg(buf, b'n', |_| {});
}
pub fn empty_parameter_description(buf: &mut BytesMut) {
    put_msg(buf, b't', |b| b.put_i16(0));
}

/// Severity of an ErrorResponse the proxy writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session goes on.
    Error,
    /// The session ends after this message.
    Fatal,
}

/// Writes an ErrorResponse the client receives now, and counts it (`helios_proxy_errors`).
pub fn error_response(buf: &mut BytesMut, severity: Severity, code: &str, message: &str, detail: Option<&str>) {
    error_message(buf, severity, code, message, detail);
    crate::ops::client_error(code);
}

/// Writes an ErrorResponse without counting it: a message that may never be sent (a refusal
/// fence's replacement, counted when it replaces the server's answer).
pub fn error_message(buf: &mut BytesMut, severity: Severity, code: &str, message: &str, detail: Option<&str>) {
    let sev = match severity {
        Severity::Error => "ERROR",
        Severity::Fatal => "FATAL",
    };
    put_msg(buf, b'E', |b| {
        b.put_u8(b'S');
        put_cstr(b, sev);
        b.put_u8(b'V');
        put_cstr(b, sev);
        b.put_u8(b'C');
        put_cstr(b, code);
        b.put_u8(b'M');
        put_cstr(b, message);
        if let Some(d) = detail {
            b.put_u8(b'D');
            put_cstr(b, d);
        }
        b.put_u8(0);
    });
}

// ---- parsing ----

/// Reads NUL-terminated strings and integers from a message body.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }

    fn err(&self, peer: &str, message: &str) -> ProtocolError {
        ProtocolError::Malformed { peer: peer.to_string(), what: self.what, message: message.to_string() }
    }

    pub fn cstr(&mut self, peer: &str) -> Result<&'a str, ProtocolError> {
        let end =
            self.buf.iter().position(|&b| b == 0).ok_or_else(|| self.err(peer, "string without a NUL terminator"))?;
        let s = std::str::from_utf8(&self.buf[..end]).map_err(|_| self.err(peer, "string is not UTF-8"))?;
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }

    pub fn u8(&mut self, peer: &str) -> Result<u8, ProtocolError> {
        let (&b, rest) = self.buf.split_first().ok_or_else(|| self.err(peer, "message ends early"))?;
        self.buf = rest;
        Ok(b)
    }

    pub fn i16(&mut self, peer: &str) -> Result<i16, ProtocolError> {
        if self.buf.len() < 2 {
            return Err(self.err(peer, "message ends early"));
        }
        let v = i16::from_be_bytes([self.buf[0], self.buf[1]]);
        self.buf = &self.buf[2..];
        Ok(v)
    }

    pub fn i32(&mut self, peer: &str) -> Result<i32, ProtocolError> {
        if self.buf.len() < 4 {
            return Err(self.err(peer, "message ends early"));
        }
        let v = i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        self.buf = &self.buf[4..];
        Ok(v)
    }

    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }
}

/// The fields of a backend ErrorResponse (or NoticeResponse) the proxy cares about.
#[derive(Debug, Clone, Default)]
pub struct ServerError {
    pub severity: String,
    pub code: String,
    pub message: String,
}

pub fn parse_error_fields(body: &[u8]) -> ServerError {
    let mut e = ServerError::default();
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        let v = String::from_utf8_lossy(&tail[..end]).into_owned();
        match field {
            b'S' if e.severity.is_empty() => e.severity = v,
            b'V' => e.severity = v,
            b'C' => e.code = v,
            b'M' => e.message = v,
            _ => {}
        }
        rest = tail.get(end + 1..).unwrap_or(&[]);
    }
    e
}

/// Rows affected or returned, from a CommandComplete tag (`SELECT 5`, `INSERT 0 1`, `COPY 3`).
pub fn rows_from_tag(body: &[u8]) -> Option<u64> {
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    let tag = std::str::from_utf8(&body[..end]).ok()?;
    tag.rsplit(' ').next()?.parse().ok()
}

/// Splits `bytes` into complete backend messages; `None` if they do not frame exactly.
pub fn split_messages(bytes: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        if rest.len() < 5 {
            return None;
        }
        let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
        if len < 4 || len as usize + 1 > rest.len() {
            return None;
        }
        let total = len as usize + 1;
        out.push((rest[0], &rest[..total]));
        rest = &rest[total..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_carries_sqlstate_and_message() {
        let mut b = BytesMut::new();
        error_response(&mut b, Severity::Error, "42000", "blocked: DROP TABLE", None);
        assert_eq!(b[0], b'E');
        let e = parse_error_fields(&b[5..]);
        assert_eq!(
            (e.severity.as_str(), e.code.as_str(), e.message.as_str()),
            ("ERROR", "42000", "blocked: DROP TABLE")
        );
    }

    #[test]
    fn command_tags_give_row_counts() {
        assert_eq!(rows_from_tag(b"SELECT 5\0"), Some(5));
        assert_eq!(rows_from_tag(b"INSERT 0 3\0"), Some(3));
        assert_eq!(rows_from_tag(b"CREATE TABLE\0"), None);
    }

    #[test]
    fn split_messages_refuses_a_truncated_tail() {
        let mut b = BytesMut::new();
        command_complete(&mut b, "SELECT 1");
        assert_eq!(split_messages(&b).unwrap().len(), 1);
        assert!(split_messages(&b[..b.len() - 1]).is_none());
    }
}
