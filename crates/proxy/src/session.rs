//! One client session: startup, authentication, then the statement loop that runs the hooks, picks
//! a node per statement and relays messages in order.
//!
//! **Ordering invariant:** responses reach the client in the order of its messages. The proxy only
//! answers by itself (a block, a cached result, `SET helios.*`) or switches nodes once the current
//! upstream connection is *quiet*: every Sync/Query sent has its ReadyForQuery back. When extended-
//! protocol messages were forwarded without a Sync yet, the proxy sends its own Sync first and
//! swallows that ReadyForQuery.
//!
//! **Transaction invariant:** the node only changes while the server reports the session idle
//! (ReadyForQuery 'I'); inside a transaction ('T' or 'E') every statement goes to the same node.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use helios_plugin_schema::{HookContext, PostQueryEnvelope, PreQueryResult, QueryContext, QueryOutcome, RouteResult};
use postgres_protocol::message::frontend;
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::attrs::{self, HeliosSet};
use crate::codec::{self, Conn, Frame, Reader, Severity};
use crate::config::{ClientAuth, PoolMode};
use crate::error::{ProtocolError, UpstreamError};
use crate::pool::Pooled;
use crate::scram;
use crate::server::{CancelSlot, Shared};
use crate::upstream::{PoolKey, Target};

/// SQLSTATE of a statement a plugin refused.
pub const SQLSTATE_BLOCKED: &str = "42000";

/// Client output is flushed once this much is buffered, even if more server data is waiting.
const CLIENT_FLUSH_BYTES: usize = 64 << 10;

/// What a pending ReadyForQuery belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// The client's Sync, Query or FunctionCall: relayed.
    Client,
    /// The proxy's own Sync (to make the connection quiet): swallowed.
    Synthetic,
    /// The proxy's own statement that fails the open transaction: everything up to its
    /// ReadyForQuery is swallowed.
    Abort,
}

/// Run inside a transaction after the proxy refused a statement there, so that the server's
/// transaction fails exactly as if the server had refused it (the client then sees 'E' and 25P02).
const ABORT_TRANSACTION_SQL: &str =
    "DO $helios$BEGIN RAISE EXCEPTION 'helios-proxy: a statement of this transaction was refused'; END$helios$";

/// A statement whose outcome `post_query` will report.
#[derive(Debug)]
struct Inflight {
    ctx: Arc<QueryContext>,
    /// Ends at ReadyForQuery (simple Query) or at the Execute's completion.
    simple: bool,
    /// The Sync/Query sequence number whose ReadyForQuery closes it at the latest.
    seq: u64,
    node: usize,
    start: Instant,
    bytes: u64,
    rows: Option<u64>,
    error: Option<String>,
}

/// A statement prepared by the client.
#[derive(Debug, Clone)]
struct Prepared {
    node: usize,
    ctx: Option<Arc<QueryContext>>,
    /// Set when a plugin answered the statement from its cache: the backend messages to replay.
    cached: Option<Arc<Vec<u8>>>,
}

enum Flow {
    Continue,
    Stop,
}

/// Entry point for an accepted socket.
pub async fn run(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr, auth: ClientAuth) {
    let id = shared.next_session_id();
    let span = tracing::info_span!("session", id, client = %peer);
    let fut = async move {
        let client = Conn::new(stream, shared.config.max_message_bytes, format!("client {peer}"));
        match startup(&shared, client, peer, auth, id).await {
            Ok(Some(mut s)) => {
                let r = s.serve().await;
                match &r {
                    Ok(()) => debug!("session ended"),
                    Err(ProtocolError::Closed { .. }) => debug!("client closed the connection"),
                    Err(e) => info!(error = %e, "session ended by an error"),
                }
                s.finish().await;
            }
            Ok(None) => {}
            Err(e) => debug!(error = %e, "connection ended during startup"),
        }
    };
    tracing::Instrument::instrument(fut, span).await;
}

/// Writes an ErrorResponse and flushes; errors writing are ignored (the client may be gone).
async fn send_error(client: &mut Conn, severity: Severity, code: &str, message: &str) {
    let mut b = BytesMut::new();
    codec::error_response(&mut b, severity, code, message, None);
    let _ = client.write_all(&b).await;
}

async fn startup(
    shared: &Arc<Shared>,
    mut client: Conn,
    peer: SocketAddr,
    auth: ClientAuth,
    id: u64,
) -> Result<Option<Session>, ProtocolError> {
    let params = loop {
        let body = match client.read_startup().await {
            Ok(b) => b,
            Err(e @ (ProtocolError::TooLarge { .. } | ProtocolError::BadLength { .. })) => {
                send_error(&mut client, Severity::Fatal, "08P01", &format!("invalid startup packet: {e}")).await;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let mut r = Reader::new(&body, "startup");
        let code = r.i32(client.peer())?;
        match code {
            codec::SSL_REQUEST_CODE | codec::GSSENC_REQUEST_CODE => client.write_all(b"N").await?,
            codec::CANCEL_REQUEST_CODE => {
                let pid = r.i32(client.peer())?;
                let secret = r.i32(client.peer())?;
                shared.forward_cancel(pid, secret).await;
                return Ok(None);
            }
            codec::PROTOCOL_3_0 => {
                let mut params = Vec::new();
                loop {
                    let k = r.cstr(client.peer())?;
                    if k.is_empty() {
                        break;
                    }
                    let v = r.cstr(client.peer())?;
                    params.push((k.to_string(), v.to_string()));
                }
                break params;
            }
            other => {
                let msg = format!(
                    "unsupported frontend protocol {}.{}: helios-proxy speaks 3.0",
                    other >> 16,
                    other & 0xffff
                );
                send_error(&mut client, Severity::Fatal, "0A000", &msg).await;
                return Ok(None);
            }
        }
    };
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let Some(user) = get("user") else {
        send_error(&mut client, Severity::Fatal, "28000", "no PostgreSQL user name specified in startup packet").await;
        return Ok(None);
    };
    let database = get("database").unwrap_or_else(|| user.clone());

    if auth == ClientAuth::ScramSha256 && !authenticate_scram(shared, &mut client, &user).await? {
        info!(%user, "client authentication failed");
        send_error(
            &mut client,
            Severity::Fatal,
            "28P01",
            &format!("password authentication failed for user \"{user}\""),
        )
        .await;
        return Ok(None);
    }
    let mut out = BytesMut::new();
    codec::auth_ok(&mut out);

    let mut pool_params: Vec<(String, String)> =
        params.iter().filter(|(k, _)| k != "user" && k != "database" && k != "replication").cloned().collect();
    pool_params.sort();
    let attrs = attrs::from_startup(&params);
    let (pid, secret) = shared.new_backend_key();
    let cancel = shared.register_cancel(pid, secret);
    let nodes = shared.nodes.len();
    let mut s = Session {
        shared: shared.clone(),
        id,
        client,
        peer,
        user: Arc::from(user.as_str()),
        database: Arc::from(database.as_str()),
        pool_params: pool_params.into(),
        attrs,
        cout: out,
        sout: BytesMut::new(),
        conns: (0..nodes).map(|_| None).collect(),
        current: None,
        tx_status: b'I',
        pending: VecDeque::new(),
        unsynced: false,
        skipping: false,
        syncs_sent: 0,
        syncs_done: 0,
        statements: HashMap::new(),
        portals: HashMap::new(),
        inflight: VecDeque::new(),
        seq: 0,
        cancel,
        backend_key: (pid, secret),
        closing: false,
    };
    // The first connection to the default node proves the node is reachable with these credentials
    // and gives the server's parameters to report.
    let default = shared.default_node;
    if let Err(e) = s.ensure_node(default).await {
        warn!(error = %e, "cannot open a session upstream");
        s.cout.clear();
        codec::error_response(&mut s.cout, Severity::Fatal, e.sqlstate(), &e.to_string(), None);
        let _ = s.flush_client().await;
        return Ok(None);
    }
    if let Some(p) = &s.conns[default] {
        for (k, v) in &p.server.params {
            codec::parameter_status(&mut s.cout, k, v);
        }
    }
    codec::backend_key_data(&mut s.cout, pid, secret);
    codec::ready_for_query(&mut s.cout, b'I');
    s.flush_client().await?;
    info!(user = %s.user, database = %s.database, "session started");
    Ok(Some(s))
}

/// SCRAM-SHA-256 with the client; false if it failed (the caller reports it).
async fn authenticate_scram(shared: &Shared, client: &mut Conn, user: &str) -> Result<bool, ProtocolError> {
    let Some(verifier) = shared.verifiers.get(user) else {
        return Ok(false);
    };
    let mut out = BytesMut::new();
    codec::auth_sasl(&mut out, scram::MECHANISM);
    client.write_all(&out).await?;
    let f = client.read_frame().await?;
    if f.tag != b'p' {
        return Ok(false);
    }
    let mut r = Reader::new(f.body(), "SASLInitialResponse");
    let mech = r.cstr(client.peer())?;
    let len = r.i32(client.peer())?;
    if mech != scram::MECHANISM || len < 0 {
        return Ok(false);
    }
    let (ex, server_first) = match scram::Exchange::start(verifier, r.rest()) {
        Ok(x) => x,
        Err(e) => {
            debug!(error = %e.0, "SCRAM client-first refused");
            return Ok(false);
        }
    };
    out.clear();
    codec::auth_sasl_continue(&mut out, server_first.as_bytes());
    client.write_all(&out).await?;
    let f = client.read_frame().await?;
    if f.tag != b'p' {
        return Ok(false);
    }
    match ex.finish(f.body()) {
        Ok(server_final) => {
            out.clear();
            codec::auth_sasl_final(&mut out, server_final.as_bytes());
            client.write_all(&out).await?;
            Ok(true)
        }
        Err(e) => {
            debug!(error = %e.0, "SCRAM proof refused");
            Ok(false)
        }
    }
}

struct Session {
    shared: Arc<Shared>,
    id: u64,
    client: Conn,
    peer: SocketAddr,
    user: Arc<str>,
    database: Arc<str>,
    pool_params: Arc<[(String, String)]>,
    attrs: BTreeMap<String, String>,
    /// Bytes for the client, flushed at natural pauses.
    cout: BytesMut,
    /// Bytes for the current upstream connection.
    sout: BytesMut,
    /// Held upstream connections, by node index.
    conns: Vec<Option<Pooled>>,
    current: Option<usize>,
    tx_status: u8,
    pending: VecDeque<Pending>,
    /// Extended-protocol messages were forwarded since the last Sync.
    unsynced: bool,
    /// After an error the proxy raised in the extended protocol: discard until Sync.
    skipping: bool,
    syncs_sent: u64,
    syncs_done: u64,
    statements: HashMap<String, Prepared>,
    portals: HashMap<String, Prepared>,
    inflight: VecDeque<Inflight>,
    seq: u64,
    cancel: Arc<CancelSlot>,
    backend_key: (i32, i32),
    /// A FATAL error was queued: flush it and end the session.
    closing: bool,
}

impl Session {
    fn quiet(&self) -> bool {
        self.pending.is_empty() && !self.unsynced
    }

    fn idle(&self) -> bool {
        self.quiet() && self.tx_status == b'I' && !self.skipping
    }

    async fn serve(&mut self) -> Result<(), ProtocolError> {
        let mut shutdown = self.shared.shutdown.clone();
        loop {
            loop {
                let f = match self.client.try_frame() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => return self.check_client(Err(e)).await.map(|_| ()),
                };
                if let Flow::Stop = self.on_client(f).await? {
                    return Ok(());
                }
                if self.closing {
                    break;
                }
            }
            self.flush_server().await;
            self.flush_client().await?;
            if self.closing {
                return Ok(());
            }
            if self.idle() {
                if *shutdown.borrow() {
                    return self.shutdown_notice().await;
                }
                if self.shared.config.pool_mode == PoolMode::Transaction {
                    self.release_current();
                }
            }
            let idle = self.idle();
            let cur = self.current;
            let server = cur.and_then(|i| self.conns[i].as_mut()).map(|p| &mut p.server.conn);
            tokio::select! {
                biased;
                r = read_opt(server) => match r {
                    Ok(f) => {
                        self.on_server(f);
                        self.pump_server().await?;
                    }
                    Err(e) => self.upstream_lost(e.to_string()),
                },
                r = self.client.read_frame() => {
                    let f = self.check_client(r).await?;
                    if let Flow::Stop = self.on_client(f).await? {
                        return Ok(());
                    }
                }
                _ = shutdown.changed(), if idle => {}
            }
        }
    }

    async fn check_client(&mut self, r: Result<Frame, ProtocolError>) -> Result<Frame, ProtocolError> {
        match r {
            Ok(f) => Ok(f),
            Err(e @ (ProtocolError::TooLarge { .. } | ProtocolError::BadLength { .. })) => {
                warn!(error = %e, "closing the connection: protocol violation");
                let _ = self.flush_client().await;
                send_error(&mut self.client, Severity::Fatal, "08P01", &e.to_string()).await;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    async fn shutdown_notice(&mut self) -> Result<(), ProtocolError> {
        info!("closing an idle session: the proxy is shutting down");
        codec::error_response(
            &mut self.cout,
            Severity::Fatal,
            "57P01",
            "terminating connection: helios-proxy is shutting down",
            None,
        );
        self.flush_client().await
    }

    // ---------------------------------------------------------------- output

    async fn flush_client(&mut self) -> Result<(), ProtocolError> {
        if self.cout.is_empty() {
            return Ok(());
        }
        let r = self.client.write_all(&self.cout).await;
        self.cout.clear();
        r
    }

    /// Sends buffered upstream bytes; a failure marks the node lost.
    async fn flush_server(&mut self) {
        if self.sout.is_empty() {
            return;
        }
        let Some(cur) = self.current else {
            self.sout.clear();
            return;
        };
        let Some(p) = self.conns[cur].as_mut() else {
            self.sout.clear();
            return;
        };
        let r = p.server.conn.write_all(&self.sout).await;
        self.sout.clear();
        if let Err(e) = r {
            self.upstream_lost(e.to_string());
        }
    }

    fn send_server(&mut self, raw: &[u8]) {
        self.sout.extend_from_slice(raw);
    }

    // ---------------------------------------------------------------- server side

    /// Handles further frames already buffered from the server, flushing the client at pauses.
    async fn pump_server(&mut self) -> Result<(), ProtocolError> {
        while let Some(p) = self.current.and_then(|cur| self.conns[cur].as_mut()) {
            match p.server.conn.try_frame() {
                Ok(Some(f)) => {
                    self.on_server(f);
                    if self.cout.len() >= CLIENT_FLUSH_BYTES {
                        self.flush_client().await?;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.upstream_lost(e.to_string());
                    break;
                }
            }
        }
        self.flush_client().await
    }

    /// Waits until every pending ReadyForQuery of the current connection is back.
    async fn drain(&mut self) -> Result<(), ProtocolError> {
        self.flush_server().await;
        while !self.pending.is_empty() {
            let Some(cur) = self.current else { break };
            let Some(p) = self.conns[cur].as_mut() else { break };
            match p.server.conn.read_frame().await {
                Ok(f) => {
                    self.on_server(f);
                    if self.cout.len() >= CLIENT_FLUSH_BYTES {
                        self.flush_client().await?;
                    }
                }
                Err(e) => self.upstream_lost(e.to_string()),
            }
        }
        Ok(())
    }

    /// Makes the current connection quiet (see the module's ordering invariant).
    async fn make_quiet(&mut self) -> Result<(), ProtocolError> {
        if self.current.is_some() && self.unsynced {
            let mut b = BytesMut::new();
            frontend::sync(&mut b);
            self.send_server(&b);
            self.pending.push_back(Pending::Synthetic);
            self.syncs_sent += 1;
            self.unsynced = false;
        }
        self.drain().await
    }

    fn on_server(&mut self, f: Frame) {
        if self.pending.front() == Some(&Pending::Abort) {
            if f.tag == b'Z' {
                self.tx_status = f.body().first().copied().unwrap_or(b'E');
                self.syncs_done += 1;
                self.pending.pop_front();
            }
            return;
        }
        let len = f.raw.len() as u64;
        if let Some(front) = self.inflight.front_mut() {
            front.bytes += len;
        }
        match f.tag {
            b'Z' => {
                let status = f.body().first().copied().unwrap_or(b'I');
                self.tx_status = status;
                let seq = self.syncs_done;
                self.syncs_done += 1;
                while self.inflight.front().is_some_and(|i| i.seq <= seq) {
                    let i = self.inflight.pop_front().expect("front exists");
                    let err = i.error.clone().or_else(|| {
                        (!i.simple).then(|| "not executed: an earlier message of its batch failed".to_string())
                    });
                    self.report(i, err);
                }
                if self.pending.pop_front() == Some(Pending::Synthetic) {
                    return;
                }
            }
            b'C' => {
                let rows = codec::rows_from_tag(f.body());
                if let Some(front) = self.inflight.front_mut() {
                    if let Some(r) = rows {
                        front.rows = Some(front.rows.unwrap_or(0) + r);
                    }
                    if !front.simple {
                        let i = self.inflight.pop_front().expect("front exists");
                        self.report(i, None);
                    }
                }
            }
            b'I' | b's' if self.inflight.front().is_some_and(|i| !i.simple) => {
                let i = self.inflight.pop_front().expect("front exists");
                self.report(i, None);
            }
            b'E' => {
                let e = codec::parse_error_fields(f.body());
                if let Some(front) = self.inflight.front_mut() {
                    front.error = Some(format!("{} {}: {}", e.severity, e.code, e.message));
                    if !front.simple {
                        let i = self.inflight.pop_front().expect("front exists");
                        let err = i.error.clone();
                        self.report(i, err);
                    }
                }
            }
            b'S' => {
                let mut r = Reader::new(f.body(), "ParameterStatus");
                if let (Ok(k), Ok(v)) = (r.cstr(""), r.cstr(""))
                    && let Some(p) = self.current.and_then(|c| self.conns[c].as_mut())
                {
                    p.server.set_param(k.to_string(), v.to_string());
                }
            }
            _ => {}
        }
        self.cout.extend_from_slice(&f.raw);
    }

    /// The current connection failed: tell the client once, in order, and carry on without it.
    fn upstream_lost(&mut self, why: String) {
        let Some(cur) = self.current.take() else { return };
        let node = self.shared.nodes[cur].name.clone();
        warn!(node = %node, error = %why, "lost the upstream connection");
        self.conns[cur] = None;
        self.cancel.set(None);
        self.sout.clear();
        let clients = self.pending.iter().filter(|p| **p == Pending::Client).count();
        self.pending.clear();
        let was_unsynced = std::mem::replace(&mut self.unsynced, false);
        let in_tx = self.tx_status != b'I';
        self.tx_status = b'I';
        self.syncs_done = self.syncs_sent;
        let msg = format!("lost the connection to node \"{node}\": {why}");
        for i in std::mem::take(&mut self.inflight) {
            self.report(i, Some(msg.clone()));
        }
        self.statements.retain(|_, p| p.node != cur);
        self.portals.retain(|_, p| p.node != cur);
        if in_tx {
            // The transaction is gone with the connection: end the session rather than let the
            // client believe a later COMMIT committed anything.
            let msg = format!("{msg}; the open transaction is lost");
            codec::error_response(&mut self.cout, Severity::Fatal, "08006", &msg, None);
            self.closing = true;
            return;
        }
        if clients > 0 || was_unsynced {
            codec::error_response(&mut self.cout, Severity::Error, "08006", &msg, None);
            for _ in 0..clients {
                codec::ready_for_query(&mut self.cout, b'I');
            }
            if was_unsynced && clients == 0 {
                self.skipping = true;
            }
        }
    }

    // ---------------------------------------------------------------- nodes

    /// Makes `want` the current node, respecting the transaction invariant. Returns the node used.
    async fn ensure_node(&mut self, want: usize) -> Result<usize, UpstreamError> {
        if let Some(cur) = self.current {
            if cur == want {
                return Ok(cur);
            }
            // Switching needs a quiet connection; draining may reveal a transaction just begun.
            if self.make_quiet().await.is_err() {
                return Err(UpstreamError::Protocol {
                    node: self.shared.nodes[cur].name.to_string(),
                    addr: String::new(),
                    message: "client gone".into(),
                });
            }
            if let Some(cur) = self.current {
                if self.tx_status != b'I' {
                    return Ok(cur);
                }
                if self.shared.config.pool_mode == PoolMode::Transaction {
                    self.release_current();
                }
            }
        }
        if self.conns[want].is_none() {
            let node = &self.shared.nodes[want];
            let key = PoolKey {
                node: node.name.clone(),
                user: self.user.clone(),
                database: self.database.clone(),
                params: self.pool_params.clone(),
            };
            let password = self.shared.config.user(&self.user).and_then(|u| u.upstream_password()).map(str::to_string);
            let target = Target {
                key: &key,
                host: &node.host,
                port: node.port,
                password: password.as_deref(),
                connect_timeout: self.shared.config.connect_timeout(),
                max_message_bytes: self.shared.config.max_message_bytes,
            };
            let p = self.shared.pool.checkout(target).await?;
            self.conns[want] = Some(p);
        }
        self.current = Some(want);
        if let Some(p) = &self.conns[want] {
            self.cancel.set(Some((p.server.addr, p.server.backend_pid, p.server.backend_secret)));
        }
        Ok(want)
    }

    /// Returns the current connection to the pool (transaction mode, idle only).
    fn release_current(&mut self) {
        let Some(cur) = self.current.take() else { return };
        if let Some(p) = self.conns[cur].take() {
            self.shared.pool.checkin(p);
        }
        self.cancel.set(None);
    }

    /// The node for a statement outside any pinned transaction.
    fn route(&mut self, ctx: Option<&QueryContext>) -> Result<usize, (String, String)> {
        if self.tx_status != b'I'
            && let Some(cur) = self.current
        {
            return Ok(cur);
        }
        let Some(ctx) = ctx else { return Ok(self.shared.default_node) };
        let d = self.shared.hooks.route(ctx);
        let by = d.decided_by.as_deref().unwrap_or("route");
        match d.result {
            RouteResult::Default | RouteResult::Primary => Ok(self.shared.default_node),
            RouteResult::Standby => Ok(self.shared.pick_standby()),
            RouteResult::Node { target } | RouteResult::Branch { target } => {
                self.shared.node_index(&target).ok_or_else(|| {
                    let known: Vec<&str> = self.shared.nodes.iter().map(|n| &*n.name).collect();
                    (
                        "08001".to_string(),
                        format!(
                            "plugin \"{by}\" routed to node \"{target}\", which is not configured (nodes: {})",
                            known.join(", ")
                        ),
                    )
                })
            }
            RouteResult::Block { reason } => Err((SQLSTATE_BLOCKED.to_string(), reason)),
        }
    }

    // ---------------------------------------------------------------- hooks

    fn context(&mut self, sql: &str) -> Option<QueryContext> {
        if self.shared.hooks.is_empty() {
            return None;
        }
        self.seq += 1;
        let head =
            sql.trim_start().split(|c: char| c.is_whitespace() || c == '(').next().unwrap_or("").to_ascii_lowercase();
        let is_read_only = matches!(head.as_str(), "select" | "show" | "explain" | "values" | "table")
            && !sql.to_ascii_lowercase().contains(" into ");
        Some(QueryContext {
            query: sql.to_string(),
            normalized: String::new(),
            tables: Vec::new(),
            is_read_only,
            hook_context: HookContext {
                request_id: format!("{:08x}-{}-{}", self.shared.boot_id, self.id, self.seq),
                client_id: Some(self.peer.to_string()),
                identity: Some(self.user.to_string()),
                database: Some(self.database.to_string()),
                branch: None,
                attributes: self.attrs.clone(),
            },
        })
    }

    fn report(&self, i: Inflight, error: Option<String>) {
        let env = PostQueryEnvelope {
            query_context: (*i.ctx).clone(),
            outcome: QueryOutcome {
                success: error.is_none(),
                target_node: Some(self.shared.nodes[i.node].name.to_string()),
                elapsed_us: i.start.elapsed().as_micros() as u64,
                response_bytes: i.bytes,
                rows: i.rows,
                error,
            },
        };
        self.shared.hooks.post_query(&env);
    }

    /// `post_query` for a statement that never reached a node.
    fn report_local(&self, ctx: &QueryContext, error: Option<String>, bytes: u64) {
        let env = PostQueryEnvelope {
            query_context: ctx.clone(),
            outcome: QueryOutcome {
                success: error.is_none(),
                target_node: None,
                elapsed_us: 0,
                response_bytes: bytes,
                rows: None,
                error,
            },
        };
        self.shared.hooks.post_query(&env);
    }

    fn blocked_message(&self, reason: &str, by: Option<&str>) -> String {
        match by {
            Some(p) => {
                info!(plugin = p, %reason, "statement blocked");
                reason.to_string()
            }
            None => reason.to_string(),
        }
    }

    // ---------------------------------------------------------------- client side

    async fn on_client(&mut self, f: Frame) -> Result<Flow, ProtocolError> {
        if self.closing {
            return Ok(Flow::Continue);
        }
        if self.skipping && !matches!(f.tag, b'S' | b'X') {
            return Ok(Flow::Continue);
        }
        match f.tag {
            b'Q' => self.on_query(f).await?,
            b'P' => self.on_parse(f).await?,
            b'B' => self.on_bind(f).await?,
            b'D' => self.on_describe(f).await?,
            b'E' => self.on_execute(f).await?,
            b'C' => self.on_close(f).await?,
            b'S' => self.on_sync().await?,
            b'H' => {
                if self.current.is_some() && self.unsynced {
                    self.send_server(&f.raw);
                    self.flush_server().await;
                }
            }
            b'd' | b'c' | b'f' => {
                if self.current.is_some() {
                    self.send_server(&f.raw);
                }
            }
            b'F' => {
                let node = self.route(None).unwrap_or(self.shared.default_node);
                match self.ensure_node(node).await {
                    Ok(_) => {
                        self.send_server(&f.raw);
                        self.pending.push_back(Pending::Client);
                        self.syncs_sent += 1;
                    }
                    Err(e) => self.local_error(e.sqlstate(), &e.to_string(), true).await?,
                }
            }
            b'X' => return Ok(Flow::Stop),
            other => {
                let e = ProtocolError::Malformed {
                    peer: self.client.peer().to_string(),
                    what: "frontend",
                    message: format!("unknown message type '{}'", other as char),
                };
                warn!(error = %e, "closing the connection: protocol violation");
                self.flush_client().await?;
                send_error(&mut self.client, Severity::Fatal, "08P01", &e.to_string()).await;
                return Err(e);
            }
        }
        Ok(Flow::Continue)
    }

    /// Answers with an error by the proxy itself, in order. For a simple Query (`ready`), a
    /// ReadyForQuery follows; in the extended protocol the session skips to the next Sync. Inside a
    /// transaction the server's transaction is failed too, as PostgreSQL itself would.
    async fn local_error(&mut self, code: &str, message: &str, ready: bool) -> Result<(), ProtocolError> {
        self.make_quiet().await?;
        if self.tx_status == b'T' && self.current.is_some() {
            let mut b = BytesMut::new();
            if frontend::query(ABORT_TRANSACTION_SQL, &mut b).is_ok() {
                self.send_server(&b);
                self.pending.push_back(Pending::Abort);
                self.syncs_sent += 1;
                self.drain().await?;
            }
        }
        codec::error_response(&mut self.cout, Severity::Error, code, message, None);
        if ready {
            codec::ready_for_query(&mut self.cout, self.tx_status);
        } else {
            self.skipping = true;
        }
        Ok(())
    }

    async fn on_query(&mut self, f: Frame) -> Result<(), ProtocolError> {
        let peer = self.client.peer().to_string();
        let sql = Reader::new(f.body(), "Query").cstr(&peer)?.to_string();
        if let Some(set) = attrs::parse_helios_set(&sql) {
            self.make_quiet().await?;
            let tag = self.apply_helios_set(set);
            codec::command_complete(&mut self.cout, tag);
            codec::ready_for_query(&mut self.cout, self.tx_status);
            return Ok(());
        }
        let mut ctx = self.context(&sql);
        let mut rewritten: Option<String> = None;
        if let Some(c) = &ctx {
            let d = self.shared.hooks.pre_query(c);
            match d.result {
                PreQueryResult::Continue => {}
                PreQueryResult::Rewrite { sql: new } => {
                    debug!(from = %sql, to = %new, "statement rewritten");
                    rewritten = Some(new);
                }
                PreQueryResult::Block { reason } => {
                    let msg = self.blocked_message(&reason, d.decided_by.as_deref());
                    self.report_local(c, Some(msg.clone()), 0);
                    return self.local_error(SQLSTATE_BLOCKED, &msg, true).await;
                }
                PreQueryResult::Cached { bytes } => {
                    let ok = codec::split_messages(&bytes).is_some_and(|m| m.iter().all(|(t, _)| *t != b'Z'));
                    if !ok {
                        let msg = format!(
                            "plugin \"{}\" answered from cache with malformed protocol bytes",
                            d.decided_by.as_deref().unwrap_or("?")
                        );
                        self.report_local(c, Some(msg.clone()), 0);
                        return self.local_error("XX000", &msg, true).await;
                    }
                    self.make_quiet().await?;
                    self.cout.extend_from_slice(&bytes);
                    codec::ready_for_query(&mut self.cout, self.tx_status);
                    self.report_local(c, None, bytes.len() as u64);
                    return Ok(());
                }
            }
        }
        if let (Some(c), Some(new)) = (ctx.as_mut(), &rewritten) {
            c.query = new.clone();
        }
        let node = match self.route(ctx.as_ref()) {
            Ok(n) => n,
            Err((code, msg)) => {
                if let Some(c) = &ctx {
                    self.report_local(c, Some(msg.clone()), 0);
                }
                return self.local_error(&code, &msg, true).await;
            }
        };
        let node = match self.ensure_node(node).await {
            Ok(n) => n,
            Err(e) => {
                warn!(error = %e, "no upstream connection for a statement");
                if let Some(c) = &ctx {
                    self.report_local(c, Some(e.to_string()), 0);
                }
                return self.local_error(e.sqlstate(), &e.to_string(), true).await;
            }
        };
        match &rewritten {
            Some(new) => {
                let mut b = BytesMut::new();
                if frontend::query(new, &mut b).is_err() {
                    return self.local_error("XX000", "rewritten SQL contains a NUL byte", true).await;
                }
                self.send_server(&b);
            }
            None => self.send_server(&f.raw),
        }
        if let Some(c) = ctx {
            self.inflight.push_back(Inflight {
                ctx: Arc::new(c),
                simple: true,
                seq: self.syncs_sent,
                node,
                start: Instant::now(),
                bytes: 0,
                rows: None,
                error: None,
            });
        }
        self.pending.push_back(Pending::Client);
        self.syncs_sent += 1;
        Ok(())
    }

    /// Applies `SET/RESET helios.*`; returns the command tag.
    fn apply_helios_set(&mut self, set: HeliosSet) -> &'static str {
        match set {
            HeliosSet::Set { name, value } => {
                debug!(%name, %value, "session attribute set");
                self.attrs.insert(name, value);
                "SET"
            }
            HeliosSet::Reset { name } => {
                self.attrs.remove(&name);
                "RESET"
            }
        }
    }

    async fn on_parse(&mut self, f: Frame) -> Result<(), ProtocolError> {
        let peer = self.client.peer().to_string();
        let mut r = Reader::new(f.body(), "Parse");
        let name = r.cstr(&peer)?.to_string();
        let sql = r.cstr(&peer)?.to_string();
        let types_raw = r.rest();
        if let Some(set) = attrs::parse_helios_set(&sql) {
            // Answered by the proxy like the simple-protocol form; applied when parsed.
            self.make_quiet().await?;
            let tag = self.apply_helios_set(set);
            let mut done = BytesMut::new();
            codec::command_complete(&mut done, tag);
            codec::parse_complete(&mut self.cout);
            let node = self.current.unwrap_or(self.shared.default_node);
            self.statements.insert(name, Prepared { node, ctx: None, cached: Some(Arc::new(done.to_vec())) });
            return Ok(());
        }
        let mut ctx = self.context(&sql);
        let mut rewritten: Option<String> = None;
        if let Some(c) = &ctx {
            let d = self.shared.hooks.pre_query(c);
            match d.result {
                PreQueryResult::Continue => {}
                PreQueryResult::Rewrite { sql: new } => rewritten = Some(new),
                PreQueryResult::Block { reason } => {
                    let msg = self.blocked_message(&reason, d.decided_by.as_deref());
                    self.report_local(c, Some(msg.clone()), 0);
                    return self.local_error(SQLSTATE_BLOCKED, &msg, false).await;
                }
                PreQueryResult::Cached { bytes } => {
                    let ok = codec::split_messages(&bytes).is_some_and(|m| m.iter().all(|(t, _)| *t != b'Z'));
                    if !ok {
                        let msg = format!(
                            "plugin \"{}\" answered from cache with malformed protocol bytes",
                            d.decided_by.as_deref().unwrap_or("?")
                        );
                        return self.local_error("XX000", &msg, false).await;
                    }
                    self.make_quiet().await?;
                    codec::parse_complete(&mut self.cout);
                    let node = self.current.unwrap_or(self.shared.default_node);
                    self.statements
                        .insert(name, Prepared { node, ctx: Some(Arc::new(c.clone())), cached: Some(Arc::new(bytes)) });
                    return Ok(());
                }
            }
        }
        if let (Some(c), Some(new)) = (ctx.as_mut(), &rewritten) {
            c.query = new.clone();
        }
        let node = match self.route(ctx.as_ref()) {
            Ok(n) => n,
            Err((code, msg)) => return self.local_error(&code, &msg, false).await,
        };
        let node = match self.ensure_node(node).await {
            Ok(n) => n,
            Err(e) => return self.local_error(e.sqlstate(), &e.to_string(), false).await,
        };
        match &rewritten {
            Some(new) => {
                let mut tr = Reader::new(types_raw, "Parse");
                let n = tr.i16(&peer)?.max(0) as usize;
                let mut oids = Vec::with_capacity(n);
                for _ in 0..n {
                    oids.push(tr.i32(&peer)? as u32);
                }
                let mut b = BytesMut::new();
                if frontend::parse(&name, new, oids, &mut b).is_err() {
                    return self.local_error("XX000", "rewritten SQL contains a NUL byte", false).await;
                }
                self.send_server(&b);
            }
            None => self.send_server(&f.raw),
        }
        self.unsynced = true;
        self.statements.insert(name, Prepared { node, ctx: ctx.map(Arc::new), cached: None });
        Ok(())
    }

    /// The node a prepared statement or portal lives on, made current.
    async fn goto(&mut self, node: Option<usize>) -> Result<bool, ProtocolError> {
        let node = match (node, self.current) {
            (Some(n), _) => n,
            (None, Some(c)) => c,
            (None, None) => self.shared.default_node,
        };
        match self.ensure_node(node).await {
            Ok(_) => Ok(true),
            Err(e) => {
                self.local_error(e.sqlstate(), &e.to_string(), false).await?;
                Ok(false)
            }
        }
    }

    async fn on_bind(&mut self, f: Frame) -> Result<(), ProtocolError> {
        let peer = self.client.peer().to_string();
        let mut r = Reader::new(f.body(), "Bind");
        let portal = r.cstr(&peer)?.to_string();
        let stmt = r.cstr(&peer)?.to_string();
        let prepared = self.statements.get(&stmt).cloned();
        if let Some(p) = &prepared
            && p.cached.is_some()
        {
            self.make_quiet().await?;
            codec::bind_complete(&mut self.cout);
            self.portals.insert(portal, p.clone());
            return Ok(());
        }
        if !self.goto(prepared.as_ref().map(|p| p.node)).await? {
            return Ok(());
        }
        self.send_server(&f.raw);
        self.unsynced = true;
        let node = self.current.unwrap_or(self.shared.default_node);
        let p = prepared.unwrap_or(Prepared { node, ctx: None, cached: None });
        self.portals.insert(portal, Prepared { node, ..p });
        Ok(())
    }

    async fn on_describe(&mut self, f: Frame) -> Result<(), ProtocolError> {
        let peer = self.client.peer().to_string();
        let mut r = Reader::new(f.body(), "Describe");
        let kind = r.u8(&peer)?;
        let name = r.cstr(&peer)?;
        let prepared = if kind == b'S' { self.statements.get(name) } else { self.portals.get(name) }.cloned();
        if let Some(Prepared { cached: Some(bytes), .. }) = &prepared {
            self.make_quiet().await?;
            if kind == b'S' {
                codec::empty_parameter_description(&mut self.cout);
            }
            match codec::split_messages(bytes).and_then(|m| m.into_iter().find(|(t, _)| *t == b'T')) {
                Some((_, raw)) => self.cout.extend_from_slice(raw),
                None => codec::no_data(&mut self.cout),
            }
            return Ok(());
        }
        if !self.goto(prepared.map(|p| p.node)).await? {
            return Ok(());
        }
        self.send_server(&f.raw);
        self.unsynced = true;
        Ok(())
    }

    async fn on_execute(&mut self, f: Frame) -> Result<(), ProtocolError> {
        let peer = self.client.peer().to_string();
        let portal = Reader::new(f.body(), "Execute").cstr(&peer)?.to_string();
        let prepared = self.portals.get(&portal).cloned();
        if let Some(Prepared { cached: Some(bytes), ctx, .. }) = &prepared {
            self.make_quiet().await?;
            let mut sent = 0u64;
            for (tag, raw) in codec::split_messages(bytes).unwrap_or_default() {
                if tag != b'T' {
                    self.cout.extend_from_slice(raw);
                    sent += raw.len() as u64;
                }
            }
            if let Some(c) = ctx {
                self.report_local(c, None, sent);
            }
            return Ok(());
        }
        if !self.goto(prepared.as_ref().map(|p| p.node)).await? {
            return Ok(());
        }
        self.send_server(&f.raw);
        self.unsynced = true;
        if let Some(Prepared { ctx: Some(ctx), .. }) = prepared {
            let node = self.current.unwrap_or(self.shared.default_node);
            self.inflight.push_back(Inflight {
                ctx,
                simple: false,
                seq: self.syncs_sent,
                node,
                start: Instant::now(),
                bytes: 0,
                rows: None,
                error: None,
            });
        }
        Ok(())
    }

    async fn on_close(&mut self, f: Frame) -> Result<(), ProtocolError> {
        let peer = self.client.peer().to_string();
        let mut r = Reader::new(f.body(), "Close");
        let kind = r.u8(&peer)?;
        let name = r.cstr(&peer)?.to_string();
        let prepared = if kind == b'S' { self.statements.remove(&name) } else { self.portals.remove(&name) };
        if prepared.as_ref().is_some_and(|p| p.cached.is_some()) || (prepared.is_none() && self.current.is_none()) {
            self.make_quiet().await?;
            codec::close_complete(&mut self.cout);
            return Ok(());
        }
        if !self.goto(prepared.map(|p| p.node)).await? {
            return Ok(());
        }
        self.send_server(&f.raw);
        self.unsynced = true;
        Ok(())
    }

    async fn on_sync(&mut self) -> Result<(), ProtocolError> {
        if self.skipping {
            self.skipping = false;
            self.make_quiet().await?;
            codec::ready_for_query(&mut self.cout, self.tx_status);
            return Ok(());
        }
        if self.current.is_some() && (self.unsynced || !self.pending.is_empty()) {
            let mut b = BytesMut::new();
            frontend::sync(&mut b);
            self.send_server(&b);
            self.pending.push_back(Pending::Client);
            self.syncs_sent += 1;
            self.unsynced = false;
        } else {
            codec::ready_for_query(&mut self.cout, self.tx_status);
        }
        Ok(())
    }

    /// End of session: cancel what is still running upstream, return clean connections.
    async fn finish(mut self) {
        self.shared.unregister_cancel(self.backend_key);
        let busy = !self.quiet() || self.tx_status != b'I';
        if busy
            && let Some(cur) = self.current
            && let Some(p) = self.conns[cur].take()
        {
            let (addr, pid, secret) = (p.server.addr, p.server.backend_pid, p.server.backend_secret);
            debug!("cancelling the running statement of a departed client");
            tokio::spawn(async move {
                let _ = crate::upstream::send_cancel(addr, pid, secret).await;
                drop(p);
            });
        }
        let session_mode = self.shared.config.pool_mode == PoolMode::Session;
        for slot in self.conns.iter_mut() {
            let Some(mut p) = slot.take() else { continue };
            let pool = self.shared.clone();
            if session_mode {
                tokio::spawn(async move {
                    if p.server.run_quietly("DISCARD ALL").await {
                        pool.pool.checkin(p);
                    }
                });
            } else {
                pool.pool.checkin(p);
            }
        }
    }
}

/// Reads a frame from `c`, or waits forever when there is no connection.
async fn read_opt(c: Option<&mut Conn>) -> Result<Frame, ProtocolError> {
    match c {
        Some(c) => c.read_frame().await,
        None => std::future::pending().await,
    }
}
