//! A raw protocol client over a blocking socket, for sending what real drivers never send.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::message::frontend;

/// One backend message: type byte and body.
pub type Msg = (u8, Vec<u8>);

#[derive(Debug)]
pub struct RawClient {
    pub sock: TcpStream,
}

impl RawClient {
    /// Connects and completes a trust startup as `user`, up to the first ReadyForQuery.
    pub fn connect(port: u16, user: &str) -> RawClient {
        let sock = TcpStream::connect(("127.0.0.1", port)).expect("connect to the proxy");
        sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut c = RawClient { sock };
        let mut b = BytesMut::new();
        frontend::startup_message([("user", user), ("database", "postgres")], &mut b).unwrap();
        c.send(&b);
        c.read_until_ready();
        c
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).expect("write to the proxy");
    }

    pub fn query(&mut self, sql: &str) {
        let mut b = BytesMut::new();
        frontend::query(sql, &mut b).unwrap();
        self.send(&b);
    }

    /// The next message, or None at end of stream.
    pub fn read(&mut self) -> Option<Msg> {
        let mut head = [0u8; 5];
        self.sock.read_exact(&mut head).ok()?;
        let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        self.sock.read_exact(&mut body).ok()?;
        Some((head[0], body))
    }

    /// Messages up to and including ReadyForQuery.
    pub fn read_until_ready(&mut self) -> Vec<Msg> {
        let mut out = Vec::new();
        while let Some(m) = self.read() {
            let done = m.0 == b'Z';
            out.push(m);
            if done {
                break;
            }
        }
        out
    }

    /// True when the proxy closed the connection (EOF, or a reset because our unread bytes were
    /// discarded) within the read timeout.
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        match self.sock.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        }
    }
}

/// The SQLSTATE field of an ErrorResponse body.
pub fn sqlstate(body: &[u8]) -> String {
    field(body, b'C')
}

/// A field of an ErrorResponse body.
pub fn field(body: &[u8], code: u8) -> String {
    let mut rest = body;
    while let Some((&f, tail)) = rest.split_first() {
        if f == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        if f == code {
            return String::from_utf8_lossy(&tail[..end]).into_owned();
        }
        rest = &tail[(end + 1).min(tail.len())..];
    }
    String::new()
}
