//! One client session: the statement loop that runs the hooks, picks a node per statement and
//! relays messages in order. Startup and authentication are in [`crate::startup`]; the
//! Sync/ReadyForQuery bookkeeping is the pure [`Pipeline`]; what happens to a statement (a simple
//! Query or an extended-protocol Parse) is decided once, by [`Session::plan`], and every refusal
//! goes through [`Session::refuse`].
//!
//! **Ordering invariant:** responses reach the client in the order of its messages. The proxy only
//! answers by itself (a refusal, a cached result, `SET helios.*`) once everything before is
//! answered: inside an extended-protocol batch it sends a Flush and waits until the batch is
//! *settled* (never a Sync of its own, which would commit the batch's implicit transaction early).
//!
//! **Refusals behave like server errors.** A refusal while upstream state is open (a batch, a
//! transaction, answers still due) goes upstream as a *fence* (see [`crate::pipeline`]): the server
//! fails at that point, rolls back the batch's implicit transaction or fails the explicit one (the
//! client then gets 25P02, as from PostgreSQL), and the fence's error is replaced by the proxy's.
//!
//! **Transaction invariant:** the node only changes while the server reports the session idle and no
//! batch is open; inside a transaction or a batch every statement goes to the same node. (Bind or
//! Execute of statements prepared on two different nodes inside one batch splits it with a Sync.)

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use helios_plugin_schema::{HookContext, PostQueryEnvelope, PreQueryResult, QueryContext, QueryOutcome, RouteResult};
use postgres_protocol::message::frontend;
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::attrs::{self, HeliosSet};
use crate::codec::{self, Conn, Frame, Reader, Severity};
use crate::config::{ClientAuth, PoolMode};
use crate::error::{ProtocolError, UpstreamError};
use crate::pipeline::{Pipeline, Relay, Statement, Step, TxStatus};
use crate::pool::Pooled;
use crate::server::{CancelSlot, Shared};
use crate::sqlstate;
use crate::startup::{self, Login, send_error};
use crate::upstream::{PoolKey, Target};

/// SQLSTATE of a statement a plugin refused.
pub const SQLSTATE_BLOCKED: &str = sqlstate::BLOCKED;

/// Client output is flushed once this much is buffered, even if more server data is waiting.
const CLIENT_FLUSH_BYTES: usize = 64 << 10;

/// A statement prepared by the client.
#[derive(Debug, Clone)]
struct Prepared {
    node: usize,
    ctx: Option<Arc<QueryContext>>,
    /// Set when the proxy answers it itself (a plugin's cache, `SET helios.*`): the backend
    /// messages to replay.
    cached: Option<Arc<Vec<u8>>>,
    /// Transaction mode: the server-side statement behind the client's name.
    tracked: Option<Tracked>,
}

/// A named prepared statement tracked in transaction mode (as PgBouncer's
/// `max_prepared_statements`): the server holds it under a name derived from its SQL and parameter
/// types, so any pooled connection can hold it for any client; before a Bind or Describe on a
/// connection that lacks it, the proxy re-prepares it there (its ParseComplete swallowed).
#[derive(Debug, Clone)]
struct Tracked {
    server_name: Arc<str>,
    /// The Parse message under `server_name`.
    parse: bytes::Bytes,
}

/// The server-side name of a tracked statement: `helios_` and a hash of what was parsed.
fn tracked_name(sql: &str, types_raw: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(sql.as_bytes());
    h.update([0]);
    h.update(types_raw);
    let d = h.finalize();
    let hex: String = d[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("helios_{hex}")
}

/// A frontend message `tag` with `body`.
fn message(tag: u8, body: &[&[u8]]) -> bytes::Bytes {
    let len: usize = body.iter().map(|p| p.len()).sum::<usize>() + 4;
    let mut b = BytesMut::with_capacity(len + 1);
    b.extend_from_slice(&[tag]);
    b.extend_from_slice(&(len as i32).to_be_bytes());
    for p in body {
        b.extend_from_slice(p);
    }
    b.freeze()
}

/// `DEALLOCATE [PREPARE] name|ALL` and `DISCARD ALL`, which change tracked statements.
#[derive(Debug, PartialEq, Eq)]
enum Dealloc {
    One(String),
    All,
}

fn parse_dealloc(sql: &str) -> Option<Dealloc> {
    let s = sql.trim().trim_end_matches(';').trim_end();
    let words: Vec<&str> = s.split_whitespace().collect();
    let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
    match lower.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["discard", "all"] | ["deallocate", "all"] | ["deallocate", "prepare", "all"] => Some(Dealloc::All),
        ["deallocate", _] | ["deallocate", "prepare", _] => {
            let raw = words[words.len() - 1];
            let name = match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
                Some(q) => q.replace("\"\"", "\""),
                None => raw.to_ascii_lowercase(),
            };
            Some(Dealloc::One(name))
        }
        _ => None,
    }
}

/// What happens to one statement: decided once for Query and Parse alike.
#[derive(Debug)]
enum Plan {
    /// `SET/RESET helios.*`: answered by the proxy.
    HeliosSet(HeliosSet),
    /// A plugin answered from its cache (validated backend messages).
    Cached { ctx: Option<Arc<QueryContext>>, bytes: Vec<u8> },
    /// Sent to `node`, rewritten when `rewritten` is set.
    Forward { ctx: Option<Arc<QueryContext>>, rewritten: Option<String>, node: usize },
    /// Refused; see [`Session::refuse`].
    Refuse(Refusal),
}

/// A statement the proxy refuses, and why.
#[derive(Debug)]
struct Refusal {
    code: String,
    message: String,
    /// For `post_query`; `None` for messages no plugin saw.
    ctx: Option<Arc<QueryContext>>,
}

impl Refusal {
    fn new(code: &str, message: impl Into<String>, ctx: Option<Arc<QueryContext>>) -> Refusal {
        Refusal { code: code.to_string(), message: message.into(), ctx }
    }
}

/// Which protocol a refused message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    /// A Query or FunctionCall: ends with ReadyForQuery.
    Simple,
    /// Parse, Bind, …: the client skips to its Sync.
    Extended,
}

enum Flow {
    Continue,
    Stop,
}

/// Entry point for an accepted socket.
pub async fn run(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr, auth: ClientAuth, listen: Arc<str>) {
    let id = shared.next_session_id();
    let span = tracing::info_span!("session", id, client = %peer);
    let fut = async move {
        let mut client = Conn::new(stream, shared.config.max_message_bytes, format!("client {peer}"));
        // Over max_client_conn: answer the StartupMessage with 53300 (cancel requests still pass).
        let client_slot = ClientSlot::take(&shared);
        let too_many = match &client_slot {
            Some(_) => None,
            None => {
                let max = shared.config.max_client_conn;
                warn!(max_client_conn = max, "client refused: too many clients");
                Some(format!("sorry, too many clients already (max_client_conn = {max})"))
            }
        };
        let refuse = too_many.as_deref().map(|m| (sqlstate::TOO_MANY_CONNECTIONS, m));
        let limit = shared.config.client_login_timeout();
        let login = match tokio::time::timeout(
            limit,
            startup::login(&shared, &mut client, auth, shared.tls.get(&*listen), refuse),
        )
        .await
        {
            Ok(Ok(Some(l))) => l,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                debug!(error = %e, "connection ended during startup");
                return;
            }
            Err(_) => {
                let ms = limit.as_millis();
                info!(client_login_timeout_ms = ms as u64, "client did not log in in time");
                let msg = format!("login not completed within {ms} ms (client_login_timeout_ms)");
                send_error(&mut client, Severity::Fatal, sqlstate::PROTOCOL_VIOLATION, &msg).await;
                return;
            }
        };
        let Some(mut s) = Session::open(&shared, client, peer, login, id).await else { return };
        let r = s.serve().await;
        match &r {
            Ok(()) => debug!("session ended"),
            Err(ProtocolError::Closed { .. }) => debug!("client closed the connection"),
            Err(e) => info!(error = %e, "session ended by an error"),
        }
        s.finish().await;
    };
    tracing::Instrument::instrument(fut, span).await;
}

/// One of `max_client_conn` client places, given back on drop.
struct ClientSlot(Arc<Shared>);

impl ClientSlot {
    fn take(shared: &Arc<Shared>) -> Option<ClientSlot> {
        use std::sync::atomic::Ordering;
        let max = shared.config.max_client_conn;
        shared.clients.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        Some(ClientSlot(shared.clone()))
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
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
    /// Bookkeeping of the current connection (or of none: then quiet and idle).
    pipe: Pipeline,
    /// After an error in the extended protocol: the client's messages are discarded until Sync.
    skipping: bool,
    statements: HashMap<String, Prepared>,
    portals: HashMap<String, Prepared>,
    seq: u64,
    cancel: Arc<CancelSlot>,
    backend_key: (i32, i32),
    /// ParameterStatus values the client was told, re-synced when another connection serves it.
    client_params: Vec<(String, String)>,
    /// A FATAL error was queued: flush it and end the session.
    closing: bool,
}

impl Session {
    /// Builds the session after login: the first connection to the default node proves the node is
    /// reachable with these credentials and gives the server's parameters to report.
    async fn open(shared: &Arc<Shared>, client: Conn, peer: SocketAddr, login: Login, id: u64) -> Option<Session> {
        let Login { user, database, params } = login;
        let mut pool_params: Vec<(String, String)> =
            params.iter().filter(|(k, _)| k != "user" && k != "database" && k != "replication").cloned().collect();
        pool_params.sort();
        let mut attrs = attrs::from_startup(&params);
        let bound = shared.config.user(&user).map(|u| u.attributes.clone()).unwrap_or_default();
        if let Some((k, v)) = bound.iter().find(|(k, v)| attrs.get(*k).is_some_and(|c| c != *v)) {
            let mut client = client;
            info!(%user, attribute = %k, "login refused: the client set an attribute bound to its user");
            let msg = bound_message(k, &user, v);
            send_error(&mut client, Severity::Fatal, sqlstate::INSUFFICIENT_PRIVILEGE, &msg).await;
            return None;
        }
        attrs.extend(bound);
        let (pid, secret) = shared.new_backend_key();
        let cancel = shared.register_cancel(pid, secret);
        let mut out = BytesMut::new();
        codec::auth_ok(&mut out);
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
            conns: (0..shared.nodes.len()).map(|_| None).collect(),
            current: None,
            pipe: Pipeline::new(shared.fence_portal.clone()),
            skipping: false,
            statements: HashMap::new(),
            portals: HashMap::new(),
            seq: 0,
            cancel,
            backend_key: (pid, secret),
            client_params: Vec::new(),
            closing: false,
        };
        if let Err(e) = s.ensure_node(shared.default_node).await {
            warn!(error = %e, "cannot open a session upstream");
            s.cout.clear();
            codec::error_response(&mut s.cout, Severity::Fatal, e.sqlstate(), &e.to_string(), None);
            let _ = s.flush_client().await;
            shared.unregister_cancel(s.backend_key);
            return None;
        }
        codec::backend_key_data(&mut s.cout, pid, secret);
        codec::ready_for_query(&mut s.cout, b'I');
        if s.flush_client().await.is_err() {
            s.finish().await;
            return None;
        }
        info!(user = %s.user, database = %s.database, "session started");
        Some(s)
    }

    fn tx(&self) -> TxStatus {
        self.pipe.tx()
    }

    fn idle(&self) -> bool {
        self.pipe.quiet() && self.tx() == TxStatus::Idle && !self.skipping
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
            // Waiting for the client inside a transaction: bounded by idle_in_transaction_timeout_ms.
            let idle_in_tx = self
                .shared
                .config
                .idle_in_transaction_timeout()
                .filter(|_| self.pipe.quiet() && self.tx() != TxStatus::Idle && !self.client.has_buffered());
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
                _ = sleep_opt(idle_in_tx) => {
                    let ms = idle_in_tx.map_or(0, |d| d.as_millis());
                    info!(idle_in_transaction_timeout_ms = ms as u64, "closing a session idle in a transaction");
                    let msg = format!(
                        "terminating connection due to idle-in-transaction timeout ({ms} ms, idle_in_transaction_timeout_ms)"
                    );
                    codec::error_response(&mut self.cout, Severity::Fatal, sqlstate::IDLE_IN_TRANSACTION_TIMEOUT, &msg, None);
                    self.flush_client().await?;
                    return Ok(());
                }
            }
        }
    }

    async fn check_client(&mut self, r: Result<Frame, ProtocolError>) -> Result<Frame, ProtocolError> {
        match r {
            Ok(f) => Ok(f),
            Err(e @ (ProtocolError::TooLarge { .. } | ProtocolError::BadLength { .. })) => {
                warn!(error = %e, "closing the connection: protocol violation");
                let _ = self.flush_client().await;
                send_error(&mut self.client, Severity::Fatal, sqlstate::PROTOCOL_VIOLATION, &e.to_string()).await;
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
            sqlstate::ADMIN_SHUTDOWN,
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
        let Some(p) = self.current.and_then(|c| self.conns[c].as_mut()) else {
            self.sout.clear();
            return;
        };
        let r = p.server.conn.write_all(&self.sout).await;
        self.sout.clear();
        if let Err(e) = r {
            self.upstream_lost(e.to_string());
        }
    }

    /// Queues `raw` for the current connection and records what the server will answer.
    fn forward(&mut self, raw: &[u8], step: Option<Step>, stmt: Option<Statement>) {
        self.sout.extend_from_slice(raw);
        if let Some(step) = step {
            self.pipe.sent(step, stmt);
        }
    }

    fn forward_sync(&mut self, synthetic: bool) {
        let mut b = BytesMut::new();
        frontend::sync(&mut b);
        self.forward(&b, Some(Step::Sync { synthetic }), None);
    }

    fn forward_flush(&mut self) {
        let mut b = BytesMut::new();
        frontend::flush(&mut b);
        self.forward(&b, None, None);
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

    /// Relays server messages until `done` holds for the bookkeeping (or the connection is lost).
    async fn drain_until(&mut self, done: fn(&Pipeline) -> bool) -> Result<(), ProtocolError> {
        self.flush_server().await;
        while !done(&self.pipe) {
            let Some(p) = self.current.and_then(|c| self.conns[c].as_mut()) else { break };
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

    /// Makes the current connection quiet, closing an open batch with a Sync of the proxy's own.
    /// Used before the node changes and before the proxy answers a simple Query itself (a Query
    /// ends an open batch on the server too).
    async fn make_quiet(&mut self) -> Result<(), ProtocolError> {
        if self.current.is_some() && self.pipe.unsynced() {
            self.forward_sync(true);
        }
        self.drain_until(Pipeline::quiet).await
    }

    /// Waits until everything forwarded is answered without closing the open batch (a Flush, not a
    /// Sync). False when the server failed the batch: PostgreSQL would skip this message, so the
    /// session skips to the client's Sync instead of answering.
    async fn make_settled(&mut self) -> Result<bool, ProtocolError> {
        if self.current.is_some() && !self.pipe.settled() {
            if self.pipe.unsynced() {
                self.forward_flush();
            }
            self.drain_until(Pipeline::settled).await?;
        }
        if self.pipe.batch_failed() {
            self.skipping = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn on_server(&mut self, f: Frame) {
        let step = self.pipe.on_server(f.tag, f.body(), f.raw.len());
        for o in step.done {
            self.report(o.stmt, o.error);
        }
        if f.tag == b'S' {
            let mut r = Reader::new(f.body(), "ParameterStatus");
            if let (Ok(k), Ok(v)) = (r.cstr(""), r.cstr("")) {
                if let Some(p) = self.current.and_then(|c| self.conns[c].as_mut()) {
                    p.server.set_param(k.to_string(), v.to_string());
                }
                set_param(&mut self.client_params, k, v);
            }
        }
        match step.relay {
            Relay::Forward => {
                if f.tag == b'E' && crate::ops::metering() {
                    crate::ops::client_error(&codec::parse_error_fields(f.body()).code);
                }
                self.cout.extend_from_slice(&f.raw)
            }
            Relay::Swallow => {}
            Relay::Replace(b) => {
                if crate::ops::metering() {
                    crate::ops::client_error(&codec::parse_error_fields(b.get(5..).unwrap_or_default()).code);
                }
                self.cout.extend_from_slice(&b)
            }
        }
    }

    /// The current connection failed: tell the client once, in order, and carry on without it.
    fn upstream_lost(&mut self, why: String) {
        let Some(cur) = self.current.take() else { return };
        let node = self.shared.nodes[cur].name.clone();
        warn!(node = %node, error = %why, "lost the upstream connection");
        self.conns[cur] = None;
        self.cancel.set(None);
        self.sout.clear();
        let in_tx = self.tx() != TxStatus::Idle;
        let msg = format!("lost the connection to node \"{node}\": {why}");
        let (clients, was_unsynced, done) = self.pipe.lost(&msg);
        for o in done {
            self.report(o.stmt, o.error);
        }
        self.statements.retain(|_, p| p.node != cur);
        self.portals.retain(|_, p| p.node != cur);
        if in_tx {
            // The transaction is gone with the connection: end the session rather than let the
            // client believe a later COMMIT committed anything.
            let msg = format!("{msg}; the open transaction is lost");
            codec::error_response(&mut self.cout, Severity::Fatal, sqlstate::CONNECTION_FAILURE, &msg, None);
            self.closing = true;
            return;
        }
        if clients > 0 || was_unsynced {
            codec::error_response(&mut self.cout, Severity::Error, sqlstate::CONNECTION_FAILURE, &msg, None);
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
                if self.tx() != TxStatus::Idle {
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
                tls: node.tls,
                tls_connector: node.tls_connector.as_ref(),
            };
            let mut p = self.shared.pool.checkout(target).await?;
            self.hand_over(&mut p).await?;
            self.resync_params(&p);
            self.conns[want] = Some(p);
        }
        self.current = Some(want);
        if let Some(p) = &self.conns[want] {
            self.cancel.set(Some((p.server.addr, p.server.backend_pid, p.server.backend_secret)));
        }
        Ok(want)
    }

    /// In transaction mode, resets a connection that last served another session
    /// ([`crate::upstream::TRANSACTION_RESET_QUERY`]), so no session state of one client reaches
    /// the next; a connection that cannot be reset is closed and the statement fails naming it.
    async fn hand_over(&mut self, p: &mut Pooled) -> Result<(), UpstreamError> {
        let previous = std::mem::replace(&mut p.server.last_session, self.id);
        let transaction_mode = self.shared.config.pool_mode == PoolMode::Transaction;
        if !transaction_mode || previous == 0 || previous == self.id {
            return Ok(());
        }
        if p.server.run_quietly(crate::upstream::TRANSACTION_RESET_QUERY).await {
            return Ok(());
        }
        // Dropping the connection frees its place for the next waiter.
        Err(UpstreamError::Protocol {
            node: p.server.key.node.to_string(),
            addr: p.server.addr.to_string(),
            message: "resetting a pooled connection for the next client failed (the connection was closed)".into(),
        })
    }

    /// Tells the client every server parameter of a newly handed-over connection that differs from
    /// what it was told (a pooled connection may carry another client's `SET application_name`, or
    /// another node's `server_version`).
    fn resync_params(&mut self, p: &Pooled) {
        for (k, v) in &p.server.params {
            if self.client_params.iter().any(|(n, old)| n == k && old == v) {
                continue;
            }
            codec::parameter_status(&mut self.cout, k, v);
            set_param(&mut self.client_params, k, v);
        }
    }

    /// Returns the current connection to the pool (transaction mode, idle only).
    fn release_current(&mut self) {
        let Some(cur) = self.current.take() else { return };
        if let Some(p) = self.conns[cur].take() {
            self.shared.pool.checkin(p);
        }
        self.cancel.set(None);
    }

    /// The node a transaction or an open batch is pinned to. (Answers still due do not pin: a
    /// switch waits for them and re-checks the transaction status.)
    fn pinned(&self) -> Option<usize> {
        if self.tx() != TxStatus::Idle || self.pipe.unsynced() { self.current } else { None }
    }

    /// The node for a statement: the pinned one, else the `route` hooks' choice.
    async fn route(&mut self, ctx: Option<&QueryContext>) -> Result<usize, Refusal> {
        if let Some(cur) = self.pinned() {
            return Ok(cur);
        }
        let Some(ctx) = ctx else { return Ok(self.shared.default_node) };
        let d = self.call_hook("route", |h| h.route(ctx)).await?;
        let by = d.decided_by.as_deref().unwrap_or("route");
        match d.result {
            RouteResult::Default | RouteResult::Primary => Ok(self.shared.default_node),
            RouteResult::Standby => Ok(self.shared.pick_standby()),
            RouteResult::Node { target } | RouteResult::Branch { target } => {
                self.shared.node_index(&target).ok_or_else(|| {
                    let known: Vec<&str> = self.shared.nodes.iter().map(|n| &*n.name).collect();
                    Refusal::new(
                        sqlstate::CANNOT_CONNECT,
                        format!(
                            "plugin \"{by}\" routed to node \"{target}\", which is not configured (nodes: {})",
                            known.join(", ")
                        ),
                        None,
                    )
                })
            }
            RouteResult::Block { reason } => {
                info!(plugin = by, %reason, "statement blocked by route");
                Err(Refusal::new(sqlstate::BLOCKED, reason, None))
            }
        }
    }

    // ---------------------------------------------------------------- hooks

    /// The one place a statement's [`QueryContext`] is built (`None` when no plugin is loaded).
    /// The statement facts (PostgreSQL's parser, cached by text and by shape) fill `facts`, `normalized`, `tables`
    /// and `is_read_only`.
    fn query_context(&mut self, sql: &str) -> Option<QueryContext> {
        if self.shared.hooks.is_empty() {
            return None;
        }
        self.seq += 1;
        let facts = self.shared.facts.get(sql);
        Some(QueryContext {
            query: sql.to_string(),
            normalized: facts.normalized.clone(),
            tables: facts.tables(),
            is_read_only: facts.is_read_only,
            facts: Some((*facts).clone()),
            hook_context: HookContext {
                request_id: format!("{:08x}-{}-{}", self.shared.boot_id, self.id, self.seq),
                client_id: Some(self.peer.to_string()),
                identity: Some(self.user.to_string()),
                database: Some(self.database.to_string()),
                branch: None,
                attributes: self.attrs.clone(),
                sql: String::new(),
            },
        })
    }

    /// Decides what happens to a statement (Query or Parse): the single plan of both protocols.
    async fn plan(&mut self, sql: &str) -> Plan {
        if let Some(set) = attrs::parse_helios_set(sql) {
            return Plan::HeliosSet(set);
        }
        let mut ctx = self.query_context(sql);
        let mut rewritten = None;
        if let Some(c) = &ctx {
            let d = match self.call_hook("pre_query", |h| h.pre_query(c)).await {
                Ok(d) => d,
                Err(r) => return Plan::Refuse(Refusal { ctx: ctx.map(Arc::new), ..r }),
            };
            let by = d.decided_by.as_deref().unwrap_or("?");
            match d.result {
                PreQueryResult::Continue => {}
                PreQueryResult::Rewrite { sql: new } => {
                    debug!(from = %sql, to = %new, "statement rewritten");
                    if new.contains('\0') {
                        let msg = format!("plugin \"{by}\" rewrote the statement into SQL containing a NUL byte");
                        return Plan::Refuse(Refusal::new(sqlstate::INTERNAL_ERROR, msg, ctx.map(Arc::new)));
                    }
                    rewritten = Some(new);
                }
                PreQueryResult::Block { reason } => {
                    info!(plugin = by, %reason, "statement blocked");
                    return Plan::Refuse(Refusal::new(sqlstate::BLOCKED, reason, ctx.map(Arc::new)));
                }
                PreQueryResult::Cached { bytes } => {
                    let ok = codec::split_messages(&bytes).is_some_and(|m| m.iter().all(|(t, _)| *t != b'Z'));
                    if !ok {
                        let msg = format!("plugin \"{by}\" answered from cache with malformed protocol bytes");
                        return Plan::Refuse(Refusal::new(sqlstate::INTERNAL_ERROR, msg, ctx.map(Arc::new)));
                    }
                    return Plan::Cached { ctx: ctx.map(Arc::new), bytes };
                }
            }
        }
        if let (Some(c), Some(new)) = (ctx.as_mut(), &rewritten) {
            c.query = new.clone();
        }
        let ctx = ctx.map(Arc::new);
        match self.route(ctx.as_deref()).await {
            Ok(node) => Plan::Forward { ctx, rewritten, node },
            Err(r) => Plan::Refuse(Refusal { ctx, ..r }),
        }
    }

    fn report(&self, s: Statement, error: Option<String>) {
        let env = PostQueryEnvelope {
            query_context: (*s.ctx).clone(),
            outcome: QueryOutcome {
                success: error.is_none(),
                target_node: Some(self.shared.nodes[s.node].name.to_string()),
                elapsed_us: s.start.elapsed().as_micros() as u64,
                response_bytes: s.bytes,
                rows: s.rows,
                error,
            },
        };
        let hooks = &*self.shared.hooks;
        self.shared.hook_cost.run(hooks.bounded_call_time(), || hooks.post_query(&env));
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
        let hooks = &*self.shared.hooks;
        self.shared.hook_cost.run(hooks.bounded_call_time(), || hooks.post_query(&env));
    }

    /// Runs a `pre_query` or `route` call off the async workers, on one of `plugin_workers` places
    /// (waiting up to `plugin_wait_timeout_ms` for one), so a slow plugin stalls its own statement
    /// only: accept, cancel and other sessions go on.
    async fn call_hook<R>(&self, what: &str, f: impl FnOnce(&dyn crate::StatementHooks) -> R) -> Result<R, Refusal> {
        let wait = self.shared.config.plugin_wait_timeout();
        let permit = match tokio::time::timeout(wait, self.shared.plugin_slots.acquire()).await {
            Ok(Ok(p)) => p,
            _ => {
                let n = self.shared.config.plugin_workers;
                warn!(plugin_workers = n, hook = what, "no plugin worker free; statement refused");
                let msg = format!(
                    "all {n} plugin workers were busy for {} ms (plugin_workers, plugin_wait_timeout_ms): the {what} \
                     hook could not run, so the statement is refused",
                    wait.as_millis()
                );
                return Err(Refusal::new(sqlstate::INSUFFICIENT_RESOURCES, msg, None));
            }
        };
        let hooks = &*self.shared.hooks;
        let r = self.shared.hook_cost.run(hooks.bounded_call_time(), || f(hooks));
        drop(permit);
        Ok(r)
    }

    // ---------------------------------------------------------------- refusals

    /// The single refusal path: `post_query` hears of it, and the client sees an ErrorResponse
    /// exactly where a server error would be. With upstream state open the refusal goes upstream as
    /// a fence (so the server rolls back the batch or fails the transaction as PostgreSQL would);
    /// otherwise the proxy answers. In a failed transaction the client gets 25P02, as from the
    /// server, with the refusal as detail.
    async fn refuse(&mut self, r: Refusal, proto: Proto) -> Result<(), ProtocolError> {
        if let Some(c) = &r.ctx {
            self.report_local(c, Some(r.message.clone()), 0);
        }
        // Counted when it reaches the client: here, or where it replaces the fence's error.
        let mut err = BytesMut::new();
        let code = if self.tx() == TxStatus::Failed {
            let detail = format!("helios-proxy also refused the statement: {}", r.message);
            codec::error_message(
                &mut err,
                Severity::Error,
                sqlstate::IN_FAILED_SQL_TRANSACTION,
                sqlstate::IN_FAILED_SQL_TRANSACTION_MESSAGE,
                Some(&detail),
            );
            sqlstate::IN_FAILED_SQL_TRANSACTION
        } else {
            codec::error_message(&mut err, Severity::Error, &r.code, &r.message, None);
            r.code.as_str()
        };
        let open_upstream = self.current.is_some() && !(self.pipe.quiet() && self.tx() == TxStatus::Idle);
        if open_upstream {
            let fence = self.pipe.fence_message();
            self.forward(&fence, Some(Step::Fence { replacement: err.freeze() }), None);
            match proto {
                Proto::Simple => self.forward_sync(false),
                Proto::Extended => {
                    self.forward_flush();
                    self.skipping = true;
                }
            }
            return Ok(());
        }
        crate::ops::client_error(code);
        self.cout.extend_from_slice(&err);
        match proto {
            Proto::Simple => codec::ready_for_query(&mut self.cout, self.pipe.tx().byte()),
            Proto::Extended => self.skipping = true,
        }
        Ok(())
    }

    // ---------------------------------------------------------------- client side

    async fn on_client(&mut self, f: Frame) -> Result<Flow, ProtocolError> {
        if self.closing {
            return Ok(Flow::Continue);
        }
        if self.skipping && !matches!(f.tag, b'S' | b'X' | b'H') {
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
                if self.current.is_some() && self.pipe.unsynced() {
                    self.forward(&f.raw, None, None);
                    self.flush_server().await;
                }
            }
            b'd' | b'c' | b'f' => {
                if self.current.is_some() {
                    self.forward(&f.raw, None, None);
                }
            }
            b'F' => self.on_function_call(f).await?,
            b'X' => return Ok(Flow::Stop),
            other => {
                let e = ProtocolError::Malformed {
                    peer: self.client.peer().to_string(),
                    what: "frontend",
                    message: format!("unknown message type '{}'", other as char),
                };
                warn!(error = %e, "closing the connection: protocol violation");
                self.flush_client().await?;
                send_error(&mut self.client, Severity::Fatal, sqlstate::PROTOCOL_VIOLATION, &e.to_string()).await;
                return Err(e);
            }
        }
        Ok(Flow::Continue)
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

    /// A `SET/RESET helios.*` of an attribute bound to the user: the refusal, if it is one.
    fn bound_refusal(&self, set: &HeliosSet) -> Option<Refusal> {
        let name = match set {
            HeliosSet::Set { name, .. } | HeliosSet::Reset { name } => name,
        };
        let user = self.shared.config.user(&self.user)?;
        let value = user.attributes.get(name)?;
        info!(user = %self.user, attribute = %name, "refused a SET of a bound attribute");
        Some(Refusal::new(sqlstate::INSUFFICIENT_PRIVILEGE, bound_message(name, &self.user, value), None))
    }

    async fn on_query(&mut self, f: Frame) -> Result<(), ProtocolError> {
        let peer = self.client.peer().to_string();
        let sql = Reader::new(f.body(), "Query").cstr(&peer)?.to_string();
        match self.plan(&sql).await {
            Plan::HeliosSet(set) => {
                if let Some(r) = self.bound_refusal(&set) {
                    return self.refuse(r, Proto::Simple).await;
                }
                self.make_quiet().await?;
                let tag = self.apply_helios_set(set);
                codec::command_complete(&mut self.cout, tag);
                codec::ready_for_query(&mut self.cout, self.pipe.tx().byte());
            }
            Plan::Cached { ctx, bytes } => {
                self.make_quiet().await?;
                self.cout.extend_from_slice(&bytes);
                codec::ready_for_query(&mut self.cout, self.pipe.tx().byte());
                if let Some(c) = ctx {
                    self.report_local(&c, None, bytes.len() as u64);
                }
            }
            Plan::Refuse(r) => self.refuse(r, Proto::Simple).await?,
            Plan::Forward { ctx, rewritten, node } => {
                let node = match self.ensure_node(node).await {
                    Ok(n) => n,
                    Err(e) => {
                        warn!(error = %e, "no upstream connection for a statement");
                        return self.refuse(Refusal::new(e.sqlstate(), e.to_string(), ctx), Proto::Simple).await;
                    }
                };
                if self.tracking()
                    && let Some(d) = parse_dealloc(rewritten.as_deref().unwrap_or(&sql))
                    && self.deallocate_tracked(d, ctx.as_deref()).await?
                {
                    return Ok(());
                }
                let stmt = ctx.map(|c| Statement::new(c, node));
                match &rewritten {
                    Some(new) => {
                        let mut b = BytesMut::new();
                        // NUL bytes were refused by the plan.
                        let _ = frontend::query(new, &mut b);
                        self.forward(&b, Some(Step::Query), stmt);
                    }
                    None => self.forward(&f.raw, Some(Step::Query), stmt),
                }
            }
        }
        Ok(())
    }

    async fn on_parse(&mut self, f: Frame) -> Result<(), ProtocolError> {
        let peer = self.client.peer().to_string();
        let mut r = Reader::new(f.body(), "Parse");
        let name = r.cstr(&peer)?.to_string();
        let sql = r.cstr(&peer)?.to_string();
        let types_raw = r.rest();
        match self.plan(&sql).await {
            Plan::HeliosSet(set) => {
                if let Some(r) = self.bound_refusal(&set) {
                    return self.refuse(r, Proto::Extended).await;
                }
                // Answered by the proxy like the simple-protocol form; applied when parsed.
                if !self.make_settled().await? {
                    return Ok(());
                }
                let tag = self.apply_helios_set(set);
                let mut done = BytesMut::new();
                codec::command_complete(&mut done, tag);
                codec::parse_complete(&mut self.cout);
                let node = self.current.unwrap_or(self.shared.default_node);
                self.statements
                    .insert(name, Prepared { node, ctx: None, cached: Some(Arc::new(done.to_vec())), tracked: None });
            }
            Plan::Cached { ctx, bytes } => {
                if !self.make_settled().await? {
                    return Ok(());
                }
                codec::parse_complete(&mut self.cout);
                let node = self.current.unwrap_or(self.shared.default_node);
                self.statements.insert(name, Prepared { node, ctx, cached: Some(Arc::new(bytes)), tracked: None });
            }
            Plan::Refuse(r) => self.refuse(r, Proto::Extended).await?,
            Plan::Forward { ctx, rewritten, node } => {
                let node = match self.ensure_node(node).await {
                    Ok(n) => n,
                    Err(e) => {
                        return self.refuse(Refusal::new(e.sqlstate(), e.to_string(), ctx), Proto::Extended).await;
                    }
                };
                let stmt = ctx.clone().map(|c| Statement::new(c, node));
                if self.tracking() && !name.is_empty() {
                    return self
                        .parse_tracked(name, rewritten.as_deref().unwrap_or(&sql), types_raw, node, ctx, stmt)
                        .await;
                }
                match &rewritten {
                    Some(new) => {
                        let mut tr = Reader::new(types_raw, "Parse");
                        let n = tr.i16(&peer)?.max(0) as usize;
                        let mut oids = Vec::with_capacity(n);
                        for _ in 0..n {
                            oids.push(tr.i32(&peer)? as u32);
                        }
                        let mut b = BytesMut::new();
                        // NUL bytes were refused by the plan.
                        let _ = frontend::parse(&name, new, oids, &mut b);
                        self.forward(&b, Some(Step::Parse), stmt);
                    }
                    None => self.forward(&f.raw, Some(Step::Parse), stmt),
                }
                self.statements.insert(name, Prepared { node, ctx, cached: None, tracked: None });
            }
        }
        Ok(())
    }

    /// Named statements are tracked (renamed and re-prepared per connection) in transaction mode.
    fn tracking(&self) -> bool {
        self.shared.config.pool_mode == PoolMode::Transaction
    }

    /// Prepares a named statement in transaction mode under its server-side name (see [`Tracked`]).
    async fn parse_tracked(
        &mut self,
        name: String,
        sql: &str,
        types_raw: &[u8],
        node: usize,
        ctx: Option<Arc<QueryContext>>,
        stmt: Option<Statement>,
    ) -> Result<(), ProtocolError> {
        if self.statements.get(&name).is_some_and(|p| p.tracked.is_some()) {
            let msg = format!("prepared statement \"{name}\" already exists");
            return self.refuse(Refusal::new(sqlstate::DUPLICATE_PREPARED_STATEMENT, msg, ctx), Proto::Extended).await;
        }
        let server_name: Arc<str> = Arc::from(tracked_name(sql, types_raw));
        let parse = message(b'P', &[server_name.as_bytes(), b"\0", sql.as_bytes(), b"\0", types_raw]);
        // The connection may hold the name already (another client prepared the same SQL there):
        // close it first, which is no error when it does not.
        let close = message(b'C', &[b"S", server_name.as_bytes(), b"\0"]);
        self.forward(&close, Some(Step::Hidden), None);
        self.forward(&parse, Some(Step::Parse), stmt);
        if let Some(p) = self.current.and_then(|c| self.conns[c].as_mut()) {
            p.server.prepared.insert(server_name.clone());
        }
        let tracked = Some(Tracked { server_name, parse });
        self.statements.insert(name, Prepared { node, ctx, cached: None, tracked });
        Ok(())
    }

    /// Re-prepares a tracked statement on the current connection if it does not hold it.
    fn ensure_prepared(&mut self, t: &Tracked) {
        let Some(p) = self.current.and_then(|c| self.conns[c].as_mut()) else { return };
        if p.server.prepared.insert(t.server_name.clone()) {
            debug!(statement = %t.server_name, "re-preparing a tracked statement on this connection");
            self.forward(&t.parse, Some(Step::Hidden), None);
        }
    }

    /// `DEALLOCATE`/`DISCARD ALL` in transaction mode. True when answered here (a tracked name);
    /// for `ALL` the statement still goes upstream, and the tracking forgets what it drops.
    async fn deallocate_tracked(&mut self, d: Dealloc, ctx: Option<&QueryContext>) -> Result<bool, ProtocolError> {
        match d {
            Dealloc::One(name) => {
                if self.statements.get(&name).is_none_or(|p| p.tracked.is_none()) {
                    return Ok(false);
                }
                self.statements.remove(&name);
                self.make_quiet().await?;
                codec::command_complete(&mut self.cout, "DEALLOCATE");
                codec::ready_for_query(&mut self.cout, self.pipe.tx().byte());
                if let Some(c) = ctx {
                    self.report_local(c, None, 0);
                }
                Ok(true)
            }
            Dealloc::All => {
                self.statements.retain(|_, p| p.tracked.is_none());
                if let Some(p) = self.current.and_then(|c| self.conns[c].as_mut()) {
                    p.server.prepared.clear();
                }
                Ok(false)
            }
        }
    }

    /// The node a prepared statement or portal lives on, made current. False when it could not be
    /// (the client was told).
    async fn goto(&mut self, node: Option<usize>) -> Result<bool, ProtocolError> {
        let node = match (node, self.current) {
            (Some(n), _) => n,
            (None, Some(c)) => c,
            (None, None) => self.shared.default_node,
        };
        match self.ensure_node(node).await {
            Ok(_) => Ok(true),
            Err(e) => {
                self.refuse(Refusal::new(e.sqlstate(), e.to_string(), None), Proto::Extended).await?;
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
            if self.make_settled().await? {
                codec::bind_complete(&mut self.cout);
                self.portals.insert(portal, p.clone());
            }
            return Ok(());
        }
        if !self.goto(prepared.as_ref().map(|p| p.node)).await? {
            return Ok(());
        }
        let node = self.current.unwrap_or(self.shared.default_node);
        let s = prepared.as_ref().and_then(|p| p.ctx.clone()).map(|c| Statement::new(c, node));
        match prepared.as_ref().and_then(|p| p.tracked.as_ref()) {
            Some(t) => {
                self.ensure_prepared(t);
                let m = message(b'B', &[portal.as_bytes(), b"\0", t.server_name.as_bytes(), b"\0", r.rest()]);
                self.forward(&m, Some(Step::Bind), s);
            }
            None => self.forward(&f.raw, Some(Step::Bind), s),
        }
        let p = prepared.unwrap_or(Prepared { node, ctx: None, cached: None, tracked: None });
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
            if !self.make_settled().await? {
                return Ok(());
            }
            if kind == b'S' {
                codec::empty_parameter_description(&mut self.cout);
            }
            match codec::split_messages(bytes).and_then(|m| m.into_iter().find(|(t, _)| *t == b'T')) {
                Some((_, raw)) => self.cout.extend_from_slice(raw),
                None => codec::no_data(&mut self.cout),
            }
            return Ok(());
        }
        let tracked = if kind == b'S' { prepared.as_ref().and_then(|p| p.tracked.clone()) } else { None };
        if !self.goto(prepared.map(|p| p.node)).await? {
            return Ok(());
        }
        match tracked {
            Some(t) => {
                self.ensure_prepared(&t);
                let m = message(b'D', &[b"S", t.server_name.as_bytes(), b"\0"]);
                self.forward(&m, Some(Step::Describe), None);
            }
            None => self.forward(&f.raw, Some(Step::Describe), None),
        }
        Ok(())
    }

    async fn on_execute(&mut self, f: Frame) -> Result<(), ProtocolError> {
        let peer = self.client.peer().to_string();
        let portal = Reader::new(f.body(), "Execute").cstr(&peer)?.to_string();
        let prepared = self.portals.get(&portal).cloned();
        if let Some(Prepared { cached: Some(bytes), ctx, .. }) = &prepared {
            if !self.make_settled().await? {
                return Ok(());
            }
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
        let node = self.current.unwrap_or(self.shared.default_node);
        let s = prepared.and_then(|p| p.ctx).map(|c| Statement::new(c, node));
        self.forward(&f.raw, Some(Step::Execute), s);
        Ok(())
    }

    async fn on_close(&mut self, f: Frame) -> Result<(), ProtocolError> {
        let peer = self.client.peer().to_string();
        let mut r = Reader::new(f.body(), "Close");
        let kind = r.u8(&peer)?;
        let name = r.cstr(&peer)?.to_string();
        let prepared = if kind == b'S' { self.statements.remove(&name) } else { self.portals.remove(&name) };
        if prepared.as_ref().is_some_and(|p| p.cached.is_some()) || (prepared.is_none() && self.current.is_none()) {
            if self.make_settled().await? {
                codec::close_complete(&mut self.cout);
            }
            return Ok(());
        }
        let tracked = prepared.as_ref().and_then(|p| p.tracked.clone());
        if !self.goto(prepared.map(|p| p.node)).await? {
            return Ok(());
        }
        match tracked {
            Some(t) => {
                if let Some(p) = self.current.and_then(|c| self.conns[c].as_mut()) {
                    p.server.prepared.remove(&t.server_name);
                }
                let m = message(b'C', &[b"S", t.server_name.as_bytes(), b"\0"]);
                self.forward(&m, Some(Step::Close), None);
            }
            None => self.forward(&f.raw, Some(Step::Close), None),
        }
        Ok(())
    }

    async fn on_sync(&mut self) -> Result<(), ProtocolError> {
        self.skipping = false;
        if self.current.is_some() && (self.pipe.unsynced() || !self.pipe.is_empty()) {
            self.forward_sync(false);
        } else {
            codec::ready_for_query(&mut self.cout, self.pipe.tx().byte());
        }
        Ok(())
    }

    /// FunctionCall ('F') calls a function by OID with no SQL text a plugin could judge: refused
    /// while any `pre_query` plugin is loaded (a guardrail must not be bypassable), relayed
    /// otherwise. `post_query` hears of it either way.
    async fn on_function_call(&mut self, f: Frame) -> Result<(), ProtocolError> {
        let oid = Reader::new(f.body(), "FunctionCall").i32(self.client.peer())?;
        let ctx = self.query_context(&format!("-- FunctionCall message, function oid {oid}")).map(Arc::new);
        if self.shared.hooks.has_pre_query() {
            let msg = format!(
                "FunctionCall messages (function oid {oid}) are refused while a pre_query plugin is loaded: \
                 plugins cannot inspect them; call the function with SELECT instead"
            );
            info!(oid, "FunctionCall refused");
            return self.refuse(Refusal::new(sqlstate::BLOCKED, msg, ctx), Proto::Simple).await;
        }
        let node = self.pinned().unwrap_or(self.shared.default_node);
        match self.ensure_node(node).await {
            Ok(n) => {
                let s = ctx.map(|c| Statement::new(c, n));
                self.forward(&f.raw, Some(Step::Query), s);
                Ok(())
            }
            Err(e) => self.refuse(Refusal::new(e.sqlstate(), e.to_string(), ctx), Proto::Simple).await,
        }
    }

    /// End of session: cancel what is still running upstream, return clean connections.
    async fn finish(mut self) {
        self.shared.unregister_cancel(self.backend_key);
        let busy = !self.pipe.quiet() || self.tx() != TxStatus::Idle;
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
                    p.server.prepared.clear();
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

/// The error for a client changing an operator-bound attribute.
fn bound_message(name: &str, user: &str, value: &str) -> String {
    format!(
        "attribute \"{name}\" is bound to user \"{user}\" by the operator (= \"{value}\" in proxy.toml [[users]] \
         attributes) and cannot be set by the client"
    )
}

fn set_param(params: &mut Vec<(String, String)>, k: &str, v: &str) {
    match params.iter_mut().find(|(n, _)| n == k) {
        Some(p) => p.1 = v.to_string(),
        None => params.push((k.to_string(), v.to_string())),
    }
}

/// A hook call whose recent cost is under this runs on the async worker itself: moving the worker's
/// other tasks to another thread first (`block_in_place`) wakes a thread and switches context twice,
/// which costs more than a call of a few µs (measured: pgbench -S through one trivial plugin fell
/// from 16.6k to 6.7k TPS with every call moved). Slower calls are moved, so a slow plugin stalls
/// only its own statement.
pub const INLINE_HOOK_BUDGET: std::time::Duration = std::time::Duration::from_micros(200);

/// Calls run inline only when something bounds them ([`StatementHooks::bounded_call_time`]: the
/// plugins' deadlines, 100 ms each by default) to at most this: the worst a misbehaving plugin can
/// do is hold one worker until its deadline once, after which its calls are moved off the worker.
pub const INLINE_MAX_STALL: std::time::Duration = std::time::Duration::from_secs(1);

/// The recent cost of the proxy's hook calls: a moving average (1/8 weight) that any call at or
/// over [`INLINE_HOOK_BUDGET`] raises to its own duration at once, so after one slow call the
/// following calls run off the worker until the average has come back under the budget.
#[derive(Debug, Default)]
pub struct HookCost {
    recent_ns: std::sync::atomic::AtomicU64,
}

impl HookCost {
    /// Runs `f` inline while recent calls were cheap and `bound` (the longest a call can take)
    /// is at most [`INLINE_MAX_STALL`], else off the async worker; records its cost.
    pub fn run<R>(&self, bound: Option<std::time::Duration>, f: impl FnOnce() -> R) -> R {
        use std::sync::atomic::Ordering;
        let budget = INLINE_HOOK_BUDGET.as_nanos() as u64;
        let recent = self.recent_ns.load(Ordering::Relaxed);
        let inline = recent < budget && bound.is_some_and(|b| b <= INLINE_MAX_STALL);
        let start = std::time::Instant::now();
        let r = if inline { f() } else { off_worker(f) };
        let ns = start.elapsed().as_nanos() as u64;
        let next = if ns >= budget { ns.max(recent) } else { recent - recent / 8 + ns / 8 };
        self.recent_ns.store(next, Ordering::Relaxed);
        r
    }

    /// Whether the next bounded call would run inline.
    #[cfg(test)]
    fn inline_now(&self) -> bool {
        self.recent_ns.load(std::sync::atomic::Ordering::Relaxed) < INLINE_HOOK_BUDGET.as_nanos() as u64
    }
}

#[cfg(test)]
mod hook_cost_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_slow_call_moves_the_following_ones_off_the_worker_until_the_average_recovers() {
        let cost = HookCost::default();
        let bound = Some(Duration::from_millis(100));
        assert!(cost.inline_now());
        cost.run(bound, || ());
        assert!(cost.inline_now(), "cheap calls stay inline");
        cost.run(bound, || std::thread::sleep(Duration::from_millis(2)));
        assert!(!cost.inline_now(), "one slow call is enough to move the next ones");
        let mut fast_calls = 0;
        while !cost.inline_now() {
            cost.run(bound, || ());
            fast_calls += 1;
            assert!(fast_calls < 100, "the average never recovered");
        }
        // 2 ms decays under 200 µs by 7/8 per cheap call: ~18 calls, never fewer than 17.
        assert!(fast_calls >= 17, "recovered after {fast_calls} cheap calls");
    }
}

/// Runs `f` where blocking is allowed: on a multi-threaded runtime the worker hands its other tasks
/// to another thread first (`block_in_place`); elsewhere (a current-thread runtime) it just runs.
fn off_worker<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Sleeps for `d`, or forever when `None`.
async fn sleep_opt(d: Option<std::time::Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Reads a frame from `c`, or waits forever when there is no connection.
async fn read_opt(c: Option<&mut Conn>) -> Result<Frame, ProtocolError> {
    match c {
        Some(c) => c.read_frame().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deallocate_and_discard_are_recognised_in_their_spellings() {
        assert_eq!(parse_dealloc("DEALLOCATE s1"), Some(Dealloc::One("s1".into())));
        assert_eq!(
            parse_dealloc("deallocate prepare \"__asyncpg_stmt_3__\";"),
            Some(Dealloc::One("__asyncpg_stmt_3__".into()))
        );
        assert_eq!(parse_dealloc("DEALLOCATE ALL"), Some(Dealloc::All));
        assert_eq!(parse_dealloc(" discard all ; "), Some(Dealloc::All));
        assert_eq!(parse_dealloc("DISCARD PLANS"), None);
        assert_eq!(parse_dealloc("SELECT 'deallocate x'"), None);
    }

    #[test]
    fn tracked_names_depend_on_sql_and_parameter_types_only() {
        let a = tracked_name("SELECT $1", &[0, 1, 0, 0, 0, 23]);
        assert_eq!(a, tracked_name("SELECT $1", &[0, 1, 0, 0, 0, 23]));
        assert_ne!(a, tracked_name("SELECT $1", &[0, 1, 0, 0, 0, 25]));
        assert_ne!(a, tracked_name("SELECT $2", &[0, 1, 0, 0, 0, 23]));
        assert!(a.starts_with("helios_") && a.len() < 64, "{a}");
    }
}
