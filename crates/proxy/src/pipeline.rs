//! The Sync/ReadyForQuery bookkeeping of one upstream connection, as a pure struct (no I/O).
//!
//! Every message the session forwards upstream that the server answers is recorded as a [`Step`] in
//! order; every backend message is fed to [`Pipeline::on_server`], which says whether to relay,
//! swallow or replace it, and returns the statements whose outcome is now known (for `post_query`).
//! From the queue the session learns:
//! - [`Pipeline::quiet`]: nothing forwarded is unanswered (the node may change, the proxy may answer
//!   a simple Query by itself);
//! - [`Pipeline::settled`]: no ReadyForQuery is outstanding and every extended-protocol message sent
//!   since the last Sync is answered (or the server failed that batch and skips to its Sync). The
//!   proxy can then write its own answer into an open pipeline without a Sync of its own, which
//!   would commit the pipeline's implicit transaction early.
//!
//! A statement the proxy refuses in the middle of a pipeline becomes a *fence*: an Execute of a
//! portal that does not exist ([`Step::Fence`]). The server fails there exactly as if the refused
//! statement had failed (rolling back the implicit transaction at the next Sync, or failing an
//! explicit one), and the fence's ErrorResponse is replaced by the proxy's own. When the batch had
//! already failed before the fence, the server skips it, and the client sees no second error: as
//! PostgreSQL skips every message after an error until Sync.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use helios_plugin_schema::QueryContext;

use crate::codec;
use crate::sqlstate;

/// A transaction status as ReadyForQuery reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TxStatus {
    /// `I`: not in a transaction block.
    #[default]
    Idle,
    /// `T`: in a transaction block.
    InBlock,
    /// `E`: in a failed transaction block (statements are refused with 25P02 until it ends).
    Failed,
}

impl TxStatus {
    /// From ReadyForQuery's status byte; anything unknown counts as failed (the safe reading).
    pub fn from_byte(b: u8) -> TxStatus {
        match b {
            b'I' => TxStatus::Idle,
            b'T' => TxStatus::InBlock,
            _ => TxStatus::Failed,
        }
    }

    /// The status byte for ReadyForQuery.
    pub fn byte(self) -> u8 {
        match self {
            TxStatus::Idle => b'I',
            TxStatus::InBlock => b'T',
            TxStatus::Failed => b'E',
        }
    }
}

/// A statement whose outcome `post_query` will report.
#[derive(Debug, Clone)]
pub struct Statement {
    pub ctx: Arc<QueryContext>,
    /// Index of the node it was sent to.
    pub node: usize,
    pub start: Instant,
    pub bytes: u64,
    pub rows: Option<u64>,
    pub error: Option<String>,
}

impl Statement {
    pub fn new(ctx: Arc<QueryContext>, node: usize) -> Statement {
        Statement { ctx, node, start: Instant::now(), bytes: 0, rows: None, error: None }
    }
}

/// A forwarded message that the server answers.
#[derive(Debug, Clone)]
pub enum Step {
    /// A simple Query (or FunctionCall): answered up to its ReadyForQuery.
    Query,
    /// A Sync; `synthetic` when the proxy sent it (its ReadyForQuery is swallowed).
    Sync {
        synthetic: bool,
    },
    Parse,
    Bind,
    Describe,
    Execute,
    Close,
    /// The proxy's own Parse or Close (re-preparing a tracked statement on another connection): its
    /// ParseComplete or CloseComplete is swallowed; an error is the client's to see.
    Hidden,
    /// The proxy's stand-in for a refused statement; its ErrorResponse becomes `replacement`.
    Fence {
        replacement: Bytes,
    },
}

impl Step {
    fn ends_batch(&self) -> bool {
        matches!(self, Step::Query | Step::Sync { .. })
    }
}

#[derive(Debug)]
struct Entry {
    step: Step,
    stmt: Option<Statement>,
}

/// What to do with one backend message.
#[derive(Debug, PartialEq, Eq)]
pub enum Relay {
    /// Send it to the client as is.
    Forward,
    /// Drop it (the proxy's own Sync).
    Swallow,
    /// Send these bytes instead (a fence's error becomes the refusal).
    Replace(Bytes),
}

/// A statement whose outcome is known: `error` is `None` on success.
#[derive(Debug)]
pub struct Outcome {
    pub stmt: Statement,
    pub error: Option<String>,
}

/// The result of one backend message.
#[derive(Debug)]
pub struct ServerStep {
    pub relay: Relay,
    pub done: Vec<Outcome>,
}

/// The portal name of fences: never a client's (clients cannot know the per-process suffix).
pub fn fence_portal(nonce: u32) -> String {
    format!("helios_proxy_refused_{nonce:08x}")
}

/// Why a skipped statement did not run.
pub const NOT_EXECUTED: &str = "not executed: an earlier message of its batch failed";

/// The bookkeeping of one upstream connection.
#[derive(Debug)]
pub struct Pipeline {
    queue: VecDeque<Entry>,
    /// Extended-protocol messages were forwarded since the last Sync.
    unsynced: bool,
    /// The server reported an error since the last Sync: it skips messages until the next one.
    batch_failed: bool,
    /// The statement whose failure was already reported in the failed batch.
    failed_ctx: Option<Arc<QueryContext>>,
    tx: TxStatus,
    fence_portal: String,
}

impl Pipeline {
    pub fn new(fence_portal: String) -> Pipeline {
        Pipeline {
            queue: VecDeque::new(),
            unsynced: false,
            batch_failed: false,
            failed_ctx: None,
            tx: TxStatus::Idle,
            fence_portal,
        }
    }

    /// The transaction status of the last ReadyForQuery.
    pub fn tx(&self) -> TxStatus {
        self.tx
    }

    /// Extended-protocol messages went upstream since the last Sync (an implicit transaction or a
    /// failed batch may be open there).
    pub fn unsynced(&self) -> bool {
        self.unsynced
    }

    /// Nothing forwarded is unanswered and no batch is open.
    pub fn quiet(&self) -> bool {
        self.queue.is_empty() && !self.unsynced
    }

    /// No ReadyForQuery outstanding and every message of the open batch answered (or skipped by the
    /// server after an error).
    pub fn settled(&self) -> bool {
        !self.queue.iter().any(|e| e.step.ends_batch()) && (self.queue.is_empty() || self.batch_failed)
    }

    /// The open batch failed on the server: it ignores everything until the next Sync.
    pub fn batch_failed(&self) -> bool {
        self.batch_failed
    }

    /// ReadyForQuery messages the client waits for (its Syncs and Queries still unanswered).
    pub fn client_syncs_pending(&self) -> usize {
        self.queue.iter().filter(|e| matches!(e.step, Step::Query | Step::Sync { synthetic: false })).count()
    }

    /// Nothing forwarded awaits an answer (a batch may still be open: see [`Pipeline::unsynced`]).
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The Execute message of a fence (the refused statement's stand-in).
    pub fn fence_message(&self) -> Bytes {
        let mut b = bytes::BytesMut::new();
        let portal = &self.fence_portal;
        // Execute: 'E', length, portal, max rows.
        let len = 4 + portal.len() + 1 + 4;
        b.extend_from_slice(b"E");
        b.extend_from_slice(&(len as i32).to_be_bytes());
        b.extend_from_slice(portal.as_bytes());
        b.extend_from_slice(&[0]);
        b.extend_from_slice(&0i32.to_be_bytes());
        b.freeze()
    }

    /// Records a forwarded message the server answers.
    pub fn sent(&mut self, step: Step, stmt: Option<Statement>) {
        match step {
            Step::Query | Step::Sync { .. } => self.unsynced = false,
            _ => self.unsynced = true,
        }
        self.queue.push_back(Entry { step, stmt });
    }

    /// One backend message.
    pub fn on_server(&mut self, tag: u8, body: &[u8], len: usize) -> ServerStep {
        let mut done = Vec::new();
        if let Some(s) = self.queue.front_mut().and_then(|e| e.stmt.as_mut()) {
            s.bytes += len as u64;
        }
        let mut relay = Relay::Forward;
        match tag {
            b'Z' => {
                self.tx = TxStatus::from_byte(body.first().copied().unwrap_or(b'E'));
                while let Some(e) = self.queue.pop_front() {
                    if e.step.ends_batch() {
                        if let Some(s) = e.stmt {
                            let err = s.error.clone();
                            done.push(Outcome { stmt: s, error: err });
                        }
                        if matches!(e.step, Step::Sync { synthetic: true }) {
                            relay = Relay::Swallow;
                        }
                        break;
                    }
                    // Skipped by the server after an error in its batch.
                    if let (Step::Execute, Some(s)) = (&e.step, e.stmt)
                        && !self.failed_ctx.as_ref().is_some_and(|f| Arc::ptr_eq(f, &s.ctx))
                    {
                        done.push(Outcome { stmt: s, error: Some(NOT_EXECUTED.to_string()) });
                    }
                }
                self.batch_failed = false;
                self.failed_ctx = None;
            }
            b'E' => {
                let e = codec::parse_error_fields(body);
                let text = format!("{} {}: {}", e.severity, e.code, e.message);
                match self.queue.front().map(|e| &e.step) {
                    Some(Step::Query) => {
                        if let Some(s) = self.queue.front_mut().and_then(|e| e.stmt.as_mut()) {
                            s.error = Some(text);
                        }
                    }
                    Some(Step::Sync { .. }) | None => {}
                    Some(Step::Fence { replacement }) => {
                        if e.code == sqlstate::INVALID_CURSOR_NAME && e.message.contains(&self.fence_portal) {
                            relay = Relay::Replace(replacement.clone());
                        }
                        self.queue.pop_front();
                        self.batch_failed = true;
                    }
                    Some(_) => {
                        let entry = self.queue.pop_front().expect("front exists");
                        self.batch_failed = true;
                        if let Some(s) = entry.stmt {
                            self.failed_ctx = Some(s.ctx.clone());
                            done.push(Outcome { stmt: s, error: Some(text) });
                        }
                    }
                }
            }
            b'1' | b'3' if matches!(self.queue.front(), Some(Entry { step: Step::Hidden, .. })) => {
                self.queue.pop_front();
                relay = Relay::Swallow;
            }
            b'1' | b'2' | b'3' => {
                self.pop_extended(|s| matches!(s, Step::Parse | Step::Bind | Step::Close), None);
            }
            b'T' | b'n' => {
                self.pop_extended(|s| matches!(s, Step::Describe), None);
            }
            b'C' | b'I' | b's' => {
                let rows = if tag == b'C' { codec::rows_from_tag(body) } else { None };
                if let Some(Entry { step: Step::Query, stmt: Some(s) }) = self.queue.front_mut()
                    && let Some(r) = rows
                {
                    s.rows = Some(s.rows.unwrap_or(0) + r);
                }
                if let Some(s) = self.pop_extended(|s| matches!(s, Step::Execute), rows) {
                    done.push(Outcome { stmt: s, error: None });
                }
            }
            _ => {}
        }
        ServerStep { relay, done }
    }

    /// Pops the front entry when `is` matches it, returning its statement (for an Execute).
    fn pop_extended(&mut self, is: impl Fn(&Step) -> bool, rows: Option<u64>) -> Option<Statement> {
        if !self.queue.front().is_some_and(|e| is(&e.step)) {
            return None;
        }
        let e = self.queue.pop_front()?;
        match e.step {
            Step::Execute => e.stmt.map(|mut s| {
                if let Some(r) = rows {
                    s.rows = Some(s.rows.unwrap_or(0) + r);
                }
                s
            }),
            _ => None,
        }
    }

    /// The connection is gone: every unanswered statement fails with `why`. Returns how many
    /// ReadyForQuery the client still waits for, whether a batch was open, and the outcomes.
    pub fn lost(&mut self, why: &str) -> (usize, bool, Vec<Outcome>) {
        let clients = self.client_syncs_pending();
        let was_unsynced = self.unsynced;
        let mut done = Vec::new();
        for e in self.queue.drain(..) {
            if let Some(s) = e.stmt
                && matches!(e.step, Step::Query | Step::Execute)
            {
                done.push(Outcome { stmt: s, error: Some(why.to_string()) });
            }
        }
        *self = Pipeline::new(std::mem::take(&mut self.fence_portal));
        (clients, was_unsynced, done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn ctx(q: &str) -> Arc<QueryContext> {
        Arc::new(QueryContext { query: q.into(), ..Default::default() })
    }

    fn stmt(q: &str) -> Option<Statement> {
        Some(Statement::new(ctx(q), 0))
    }

    fn msg(f: impl FnOnce(&mut BytesMut)) -> (u8, Vec<u8>) {
        let mut b = BytesMut::new();
        f(&mut b);
        (b[0], b[5..].to_vec())
    }

    fn feed(p: &mut Pipeline, m: &(u8, Vec<u8>)) -> ServerStep {
        p.on_server(m.0, &m.1, m.1.len() + 5)
    }

    fn z(s: u8) -> (u8, Vec<u8>) {
        msg(|b| codec::ready_for_query(b, s))
    }

    #[test]
    fn tx_status_round_trips_and_unknown_bytes_count_as_failed() {
        for s in [TxStatus::Idle, TxStatus::InBlock, TxStatus::Failed] {
            assert_eq!(TxStatus::from_byte(s.byte()), s);
        }
        assert_eq!(TxStatus::from_byte(b'?'), TxStatus::Failed);
    }

    #[test]
    fn a_parse_bind_execute_sync_batch_reports_its_statement_once_and_relays_ready() {
        let mut p = Pipeline::new(fence_portal(1));
        p.sent(Step::Parse, None);
        p.sent(Step::Bind, None);
        p.sent(Step::Execute, stmt("INSERT"));
        assert!(p.unsynced() && !p.quiet() && !p.settled());
        p.sent(Step::Sync { synthetic: false }, None);
        assert!(!p.unsynced() && !p.settled());
        feed(&mut p, &msg(codec::parse_complete));
        feed(&mut p, &msg(codec::bind_complete));
        let s = feed(&mut p, &msg(|b| codec::command_complete(b, "INSERT 0 3")));
        assert_eq!(s.done.len(), 1);
        assert_eq!(s.done[0].stmt.rows, Some(3));
        assert!(s.done[0].error.is_none());
        let s = feed(&mut p, &z(b'I'));
        assert_eq!(s.relay, Relay::Forward);
        assert!(s.done.is_empty());
        assert!(p.quiet() && p.settled());
    }

    #[test]
    fn an_open_batch_is_settled_once_every_message_is_answered() {
        let mut p = Pipeline::new(fence_portal(1));
        p.sent(Step::Parse, None);
        p.sent(Step::Describe, None);
        assert!(!p.settled());
        feed(&mut p, &msg(codec::parse_complete));
        feed(&mut p, &msg(codec::empty_parameter_description));
        assert!(!p.settled(), "ParameterDescription does not complete a Describe");
        feed(&mut p, &msg(codec::no_data));
        assert!(p.settled() && !p.quiet(), "answered but the batch is still open");
    }

    #[test]
    fn an_error_skips_the_rest_of_the_batch_and_reports_skipped_executes() {
        let mut p = Pipeline::new(fence_portal(1));
        p.sent(Step::Parse, None);
        // The session gives a statement's Bind and Execute the same context.
        let bad = ctx("bad");
        p.sent(Step::Bind, Some(Statement::new(bad.clone(), 0)));
        p.sent(Step::Execute, Some(Statement::new(bad, 0)));
        p.sent(Step::Parse, None);
        p.sent(Step::Bind, None);
        p.sent(Step::Execute, stmt("later"));
        feed(&mut p, &msg(codec::parse_complete));
        let s = feed(&mut p, &msg(|b| codec::error_response(b, codec::Severity::Error, "22P02", "bad input", None)));
        assert_eq!(s.done.len(), 1);
        assert!(s.done[0].error.as_deref().unwrap().contains("22P02"));
        assert!(p.batch_failed() && p.settled());
        p.sent(Step::Sync { synthetic: false }, None);
        let s = feed(&mut p, &z(b'I'));
        // "bad" was reported with its error; only "later" is reported as not executed.
        assert_eq!(s.done.len(), 1);
        assert_eq!(s.done[0].stmt.ctx.query, "later");
        assert_eq!(s.done[0].error.as_deref(), Some(NOT_EXECUTED));
        assert!(!p.batch_failed() && p.quiet());
    }

    #[test]
    fn a_fence_error_becomes_the_refusal_and_a_synthetic_ready_is_swallowed() {
        let portal = fence_portal(0xabc);
        let mut p = Pipeline::new(portal.clone());
        let refusal = Bytes::from_static(b"refusal");
        p.sent(Step::Execute, stmt("INSERT"));
        p.sent(Step::Fence { replacement: refusal.clone() }, None);
        feed(&mut p, &msg(|b| codec::command_complete(b, "INSERT 0 1")));
        let e = msg(|b| {
            codec::error_response(
                b,
                codec::Severity::Error,
                "34000",
                &format!("portal \"{portal}\" does not exist"),
                None,
            )
        });
        assert_eq!(feed(&mut p, &e).relay, Relay::Replace(refusal));
        assert!(p.batch_failed());
        p.sent(Step::Sync { synthetic: true }, None);
        assert_eq!(feed(&mut p, &z(b'I')).relay, Relay::Swallow);
    }

    #[test]
    fn a_fence_after_a_failed_statement_is_skipped_and_the_first_error_stands() {
        let mut p = Pipeline::new(fence_portal(7));
        p.sent(Step::Execute, stmt("fails"));
        p.sent(Step::Fence { replacement: Bytes::from_static(b"x") }, None);
        let e = msg(|b| codec::error_response(b, codec::Severity::Error, "23505", "duplicate key", None));
        assert_eq!(feed(&mut p, &e).relay, Relay::Forward);
        p.sent(Step::Sync { synthetic: false }, None);
        let s = feed(&mut p, &z(b'E'));
        assert_eq!(s.relay, Relay::Forward);
        assert_eq!(p.tx(), TxStatus::Failed);
    }

    #[test]
    fn the_proxys_own_parse_is_swallowed_and_the_clients_is_relayed() {
        let mut p = Pipeline::new(fence_portal(1));
        p.sent(Step::Hidden, None);
        p.sent(Step::Parse, None);
        assert_eq!(feed(&mut p, &msg(codec::close_complete)).relay, Relay::Swallow);
        assert_eq!(feed(&mut p, &msg(codec::parse_complete)).relay, Relay::Forward);
        assert!(p.settled());
    }

    #[test]
    fn a_simple_query_collects_rows_and_its_error_until_ready() {
        let mut p = Pipeline::new(fence_portal(1));
        p.sent(Step::Query, stmt("SELECT 1; SELECT 2"));
        assert!(!p.unsynced() && !p.settled());
        assert!(feed(&mut p, &msg(|b| codec::command_complete(b, "SELECT 1"))).done.is_empty());
        feed(&mut p, &msg(|b| codec::error_response(b, codec::Severity::Error, "42P01", "no table", None)));
        let s = feed(&mut p, &z(b'T'));
        assert_eq!(s.done.len(), 1);
        assert_eq!(s.done[0].stmt.rows, Some(1));
        assert!(s.done[0].error.as_deref().unwrap().contains("42P01"));
        assert_eq!(p.tx(), TxStatus::InBlock);
    }

    #[test]
    fn a_lost_connection_fails_what_was_unanswered() {
        let mut p = Pipeline::new(fence_portal(1));
        p.sent(Step::Query, stmt("a"));
        p.sent(Step::Parse, None);
        p.sent(Step::Execute, stmt("b"));
        let (clients, unsynced, done) = p.lost("gone");
        assert_eq!((clients, unsynced, done.len()), (1, true, 2));
        assert!(p.quiet() && p.tx() == TxStatus::Idle);
    }
}
