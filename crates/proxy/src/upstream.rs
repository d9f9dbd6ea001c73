//! One authenticated connection to a node: startup, authentication (trust, cleartext, md5,
//! SCRAM-SHA-256 with `postgres-protocol`), and the parameters and cancel key the server reported.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, SCRAM_SHA_256_PLUS, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::net::TcpStream;

use crate::codec::{self, Conn, Reader};
use crate::config::UpstreamTls;
use crate::error::UpstreamError;

/// Where a connection goes and as whom. Connections with equal keys are interchangeable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub node: Arc<str>,
    pub user: Arc<str>,
    pub database: Arc<str>,
    /// Startup parameters other than user and database, sorted.
    pub params: Arc<[(String, String)]>,
}

/// An authenticated upstream connection, ready for queries.
#[derive(Debug)]
pub struct ServerConn {
    pub conn: Conn,
    pub key: PoolKey,
    pub addr: SocketAddr,
    /// The server's backend process id and secret (for cancel requests).
    pub backend_pid: i32,
    pub backend_secret: i32,
    /// ParameterStatus values from startup (and later changes).
    pub params: Vec<(String, String)>,
    /// Server-side names of the tracked prepared statements this connection holds (transaction
    /// mode; see `session`).
    pub prepared: std::collections::HashSet<Arc<str>>,
    /// The session this connection last served (0: none yet), so a hand-over to another session
    /// is reset first (see [`TRANSACTION_RESET_QUERY`]).
    pub last_session: u64,
}

/// What a connection forgets before it serves another client in transaction mode: what
/// `DISCARD ALL` (PgBouncer's `server_reset_query`) does, except `DEALLOCATE ALL` and `DISCARD
/// PLANS` — the proxy's tracked prepared statements live per connection under proxy-chosen names
/// and stay usable by every client. So a `SET`, `SET ROLE`, `SET SESSION AUTHORIZATION`, a temporary
/// table, a cursor `WITH HOLD`, `LISTEN`, a session advisory lock or a sequence's `currval` of one
/// client never reach the next.
pub const TRANSACTION_RESET_QUERY: &str = "SET SESSION AUTHORIZATION DEFAULT; RESET ALL; CLOSE ALL; UNLISTEN *; \
                                           SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES";

/// Everything needed to open a connection.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub key: &'a PoolKey,
    pub host: &'a str,
    pub port: u16,
    pub password: Option<&'a str>,
    pub connect_timeout: Duration,
    pub max_message_bytes: usize,
    /// TLS to the node and its connector (none when `Disable`).
    pub tls: UpstreamTls,
    pub tls_connector: Option<&'a crate::tls::Connector>,
}

impl ServerConn {
    /// Connects and authenticates, within `connect_timeout`.
    pub async fn connect(t: Target<'_>) -> Result<ServerConn, UpstreamError> {
        let addr_s = format!("{}:{}", t.host, t.port);
        let node = t.key.node.to_string();
        match tokio::time::timeout(t.connect_timeout, Self::connect_inner(&t, &addr_s)).await {
            Ok(r) => r,
            Err(_) => Err(UpstreamError::Connect {
                node,
                addr: addr_s,
                message: format!("no ready connection within {} ms", t.connect_timeout.as_millis()),
            }),
        }
    }

    async fn connect_inner(t: &Target<'_>, addr_s: &str) -> Result<ServerConn, UpstreamError> {
        let node = t.key.node.to_string();
        let connect_err =
            |m: String| UpstreamError::Connect { node: node.clone(), addr: addr_s.to_string(), message: m };
        let proto = |m: String| UpstreamError::Protocol { node: node.clone(), addr: addr_s.to_string(), message: m };
        let auth = |m: String| UpstreamError::Auth { node: node.clone(), addr: addr_s.to_string(), message: m };
        let stream = TcpStream::connect(addr_s).await.map_err(|e| connect_err(e.to_string()))?;
        let addr = stream.peer_addr().map_err(|e| connect_err(e.to_string()))?;
        let peer = format!("node {node} ({addr_s})");
        let mut conn = match t.tls {
            UpstreamTls::Disable => Conn::new(stream, t.max_message_bytes, peer),
            mode => {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut stream = stream;
                let _ = stream.set_nodelay(true);
                let mut req = BytesMut::new();
                frontend::ssl_request(&mut req);
                stream.write_all(&req).await.map_err(|e| connect_err(e.to_string()))?;
                let mut answer = [0u8; 1];
                stream.read_exact(&mut answer).await.map_err(|e| connect_err(e.to_string()))?;
                match (answer[0], t.tls_connector) {
                    (b'S', Some(connector)) => {
                        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(t.host.to_string())
                            .map_err(|e| connect_err(format!("TLS: host {:?} is no server name: {e}", t.host)))?;
                        let tls = connector
                            .0
                            .connect(name, stream)
                            .await
                            .map_err(|e| connect_err(format!("TLS ({mode:?}): {e}")))?;
                        Conn::with_stream(crate::codec::Stream::TlsClient(Box::new(tls)), t.max_message_bytes, peer)
                    }
                    (b'N', _) if mode == UpstreamTls::Prefer => Conn::new(stream, t.max_message_bytes, peer),
                    (b'N', _) => {
                        return Err(connect_err(format!(
                            "the server does not offer TLS and the node's tls is {mode:?} (use prefer or disable)"
                        )));
                    }
                    (other, _) => {
                        return Err(proto(format!("unexpected answer {other:#04x} to SSLRequest")));
                    }
                }
            }
        };
        let mut buf = BytesMut::new();
        let mut params: Vec<(&str, &str)> = vec![("user", &t.key.user), ("database", &t.key.database)];
        params.extend(t.key.params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        frontend::startup_message(params.iter().copied(), &mut buf).map_err(|e| proto(e.to_string()))?;
        conn.write_all(&buf).await.map_err(|e| connect_err(e.to_string()))?;

        let mut scram: Option<ScramSha256> = None;
        let mut server = ServerConn {
            conn,
            key: t.key.clone(),
            addr,
            backend_pid: 0,
            backend_secret: 0,
            params: Vec::new(),
            prepared: Default::default(),
            last_session: 0,
        };
        loop {
            let f = server.conn.read_frame().await.map_err(|e| connect_err(e.to_string()))?;
            let peer = server.conn.peer().to_string();
            match f.tag {
                b'R' => {
                    let mut r = Reader::new(f.body(), "Authentication");
                    let code = r.i32(&peer).map_err(|e| proto(e.to_string()))?;
                    buf.clear();
                    let need_pw = || {
                        t.password.ok_or_else(|| {
                            auth(format!(
                                "the server asks for a password and user \"{}\" has none configured",
                                t.key.user
                            ))
                        })
                    };
                    match code {
                        0 => continue,
                        3 => frontend::password_message(need_pw()?.as_bytes(), &mut buf)
                            .map_err(|e| proto(e.to_string()))?,
                        5 => {
                            let salt: [u8; 4] = r
                                .rest()
                                .get(..4)
                                .and_then(|s| s.try_into().ok())
                                .ok_or_else(|| proto("md5 request without salt".into()))?;
                            let hash = postgres_protocol::authentication::md5_hash(
                                t.key.user.as_bytes(),
                                need_pw()?.as_bytes(),
                                salt,
                            );
                            frontend::password_message(hash.as_bytes(), &mut buf).map_err(|e| proto(e.to_string()))?;
                        }
                        10 => {
                            let mechs = r.rest();
                            if !mechs.split(|&b| b == 0).any(|m| m == SCRAM_SHA_256.as_bytes()) {
                                return Err(auth(format!(
                                    "server offers SASL mechanisms {:?}, expected {SCRAM_SHA_256}",
                                    String::from_utf8_lossy(mechs)
                                )));
                            }
                            // Over TLS, bind the exchange to the node's certificate when it offers PLUS.
                            let plus = mechs.split(|&b| b == 0).any(|m| m == SCRAM_SHA_256_PLUS.as_bytes());
                            let (mech, binding) = match server.conn.peer_end_point() {
                                Some(ep) if plus => (SCRAM_SHA_256_PLUS, ChannelBinding::tls_server_end_point(ep)),
                                Some(_) => (SCRAM_SHA_256, ChannelBinding::unrequested()),
                                None => (SCRAM_SHA_256, ChannelBinding::unsupported()),
                            };
                            let s = ScramSha256::new(need_pw()?.as_bytes(), binding);
                            frontend::sasl_initial_response(mech, s.message(), &mut buf)
                                .map_err(|e| proto(e.to_string()))?;
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram.as_mut().ok_or_else(|| proto("SASLContinue before SASL".into()))?;
                            s.update(r.rest()).map_err(|e| auth(format!("SCRAM: {e}")))?;
                            frontend::sasl_response(s.message(), &mut buf).map_err(|e| proto(e.to_string()))?;
                        }
                        12 => {
                            let mut s = scram.take().ok_or_else(|| proto("SASLFinal before SASL".into()))?;
                            s.finish(r.rest()).map_err(|e| auth(format!("SCRAM: server signature: {e}")))?;
                            continue;
                        }
                        other => return Err(auth(format!("unsupported authentication request {other}"))),
                    }
                    server.conn.write_all(&buf).await.map_err(|e| connect_err(e.to_string()))?;
                }
                b'S' => {
                    let mut r = Reader::new(f.body(), "ParameterStatus");
                    let k = r.cstr(&peer).map_err(|e| proto(e.to_string()))?.to_string();
                    let v = r.cstr(&peer).map_err(|e| proto(e.to_string()))?.to_string();
                    server.set_param(k, v);
                }
                b'K' => {
                    let mut r = Reader::new(f.body(), "BackendKeyData");
                    server.backend_pid = r.i32(&peer).map_err(|e| proto(e.to_string()))?;
                    server.backend_secret = r.i32(&peer).map_err(|e| proto(e.to_string()))?;
                }
                b'Z' => return Ok(server),
                b'E' => {
                    let e = codec::parse_error_fields(f.body());
                    return Err(UpstreamError::Server {
                        node,
                        addr: addr_s.to_string(),
                        severity: e.severity,
                        code: e.code,
                        message: e.message,
                    });
                }
                b'N' | b'v' => {}
                other => return Err(proto(format!("unexpected message '{}' during startup", other as char))),
            }
        }
    }

    /// Records a ParameterStatus value.
    pub fn set_param(&mut self, k: String, v: String) {
        match self.params.iter_mut().find(|(n, _)| *n == k) {
            Some(p) => p.1 = v,
            None => self.params.push((k, v)),
        }
    }

    /// Sends `sql` as a simple query and waits for ReadyForQuery; true if it ended idle and without
    /// error. Used for the reset query before a connection goes back to the pool.
    pub async fn run_quietly(&mut self, sql: &str) -> bool {
        let mut buf = BytesMut::new();
        if frontend::query(sql, &mut buf).is_err() || self.conn.write_all(&buf).await.is_err() {
            return false;
        }
        let mut ok = true;
        loop {
            match self.conn.read_frame().await {
                Ok(f) if f.tag == b'E' => ok = false,
                Ok(f) if f.tag == b'Z' => return ok && f.body().first() == Some(&b'I'),
                Ok(f) if f.tag == b'S' => {
                    // RESET ALL reports what it changed back: keep the recorded values true.
                    let peer = self.conn.peer().to_string();
                    let mut r = Reader::new(f.body(), "ParameterStatus");
                    if let (Ok(k), Ok(v)) = (r.cstr(&peer).map(str::to_string), r.cstr(&peer).map(str::to_string)) {
                        self.set_param(k, v);
                    }
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }
}

/// Sends a CancelRequest for (pid, secret) to `addr`.
pub async fn send_cancel(addr: SocketAddr, pid: i32, secret: i32) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut buf = BytesMut::new();
    frontend::cancel_request(pid, secret, &mut buf);
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(&buf).await?;
    s.shutdown().await
}
