//! Upstream connection pools, one per [`PoolKey`] (node, user, database, startup parameters).
//!
//! A key's pool holds at most `pool_size` connections (checked out, idle or being opened). A client
//! that finds none free waits in a FIFO queue, up to `pool_timeout_ms`: a connection checked in goes
//! straight to the oldest waiter, and a slot freed by a closed connection lets the oldest waiter
//! open a new one (as PgBouncer does). An idle connection is checked for a closed socket before
//! reuse, so a node restart costs at most the statements that were in flight, never a stale
//! connection handed to the next client.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::error::UpstreamError;
use crate::upstream::{PoolKey, ServerConn, Target};

/// What a waiter is handed.
#[derive(Debug)]
enum Handoff {
    /// A connection just checked in.
    Conn(Box<ServerConn>),
    /// A free slot: open a new connection.
    Slot,
}

#[derive(Debug, Default)]
struct Entry {
    /// Connections counted against the cap: checked out, idle, or being opened.
    open: usize,
    /// Idle connections with the time they were checked in.
    idle: Vec<(ServerConn, Instant)>,
    /// Clients waiting for a connection, oldest first.
    waiters: VecDeque<oneshot::Sender<Handoff>>,
}

type Entries = Arc<Mutex<HashMap<PoolKey, Entry>>>;

fn lock(entries: &Entries) -> std::sync::MutexGuard<'_, HashMap<PoolKey, Entry>> {
    // A panic while holding the lock leaves only plain data behind: keep going.
    entries.lock().unwrap_or_else(|p| p.into_inner())
}

/// Gives a freed slot to the oldest live waiter, or returns it to the pool.
fn release_slot(entries: &Entries, key: &PoolKey) {
    let mut map = lock(entries);
    let Some(entry) = map.get_mut(key) else { return };
    while let Some(w) = entry.waiters.pop_front() {
        if w.send(Handoff::Slot).is_ok() {
            return;
        }
    }
    entry.open = entry.open.saturating_sub(1);
}

/// A slot of a key's pool; freed (and passed on) when dropped while armed.
#[derive(Debug)]
struct Slot {
    entries: Entries,
    key: PoolKey,
    armed: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.armed {
            release_slot(&self.entries, &self.key);
        }
    }
}

/// A checked-out connection; its slot returns to the pool when it is checked in or dropped.
#[derive(Debug)]
pub struct Pooled {
    pub server: ServerConn,
    slot: Slot,
}

/// All pools of a proxy.
#[derive(Debug)]
pub struct Pool {
    entries: Entries,
    size: usize,
    timeout: Duration,
}

impl Pool {
    pub fn new(size: usize, timeout: Duration) -> Pool {
        Pool { entries: Arc::new(Mutex::new(HashMap::new())), size, timeout }
    }

    fn slot(&self, key: &PoolKey) -> Slot {
        Slot { entries: self.entries.clone(), key: key.clone(), armed: true }
    }

    /// An idle connection for `target.key`, a new one if the pool has room, or the next one freed
    /// (FIFO among waiters) within `pool_timeout_ms`.
    pub async fn checkout(&self, target: Target<'_>) -> Result<Pooled, UpstreamError> {
        let key = target.key;
        let rx = {
            let mut map = lock(&self.entries);
            let entry = map.entry(key.clone()).or_default();
            while let Some((server, _)) = entry.idle.pop() {
                if !server.conn.looks_closed() {
                    drop(map);
                    return Ok(Pooled { server, slot: self.slot(key) });
                }
                tracing::debug!(node = %key.node, "dropping a pooled connection the server closed");
                entry.open = entry.open.saturating_sub(1);
            }
            if entry.open < self.size {
                entry.open += 1;
                None
            } else {
                let (tx, rx) = oneshot::channel();
                entry.waiters.push_back(tx);
                Some(rx)
            }
        };
        let handoff = match rx {
            None => Handoff::Slot,
            Some(mut rx) => match tokio::time::timeout(self.timeout, &mut rx).await {
                Ok(Ok(h)) => h,
                _ => {
                    // A hand-off may have raced the deadline: take it rather than lose it.
                    rx.close();
                    match rx.try_recv() {
                        Ok(h) => h,
                        Err(_) => {
                            return Err(UpstreamError::PoolTimeout {
                                node: key.node.to_string(),
                                waited_ms: self.timeout.as_millis() as u64,
                                pool_size: self.size,
                            });
                        }
                    }
                }
            },
        };
        let slot = self.slot(key);
        match handoff {
            Handoff::Conn(server) => Ok(Pooled { server: *server, slot }),
            // On failure the slot is dropped, which passes it to the next waiter.
            Handoff::Slot => Ok(Pooled { server: ServerConn::connect(target).await?, slot }),
        }
    }

    /// Returns an idle, clean connection (ReadyForQuery 'I', nothing pending): to the oldest waiter,
    /// or to the idle list.
    pub fn checkin(&self, p: Pooled) {
        let Pooled { server, mut slot } = p;
        slot.armed = false;
        let mut map = lock(&self.entries);
        let Some(entry) = map.get_mut(&server.key) else { return };
        let mut server = server;
        while let Some(w) = entry.waiters.pop_front() {
            match w.send(Handoff::Conn(Box::new(server))) {
                Ok(()) => return,
                // The waiter gave up: try the next one.
                Err(Handoff::Conn(s)) => server = *s,
                Err(Handoff::Slot) => return,
            }
        }
        entry.idle.push((server, Instant::now()));
    }

    /// Closes connections idle for longer than `max_idle`; returns how many.
    pub fn reap(&self, max_idle: Duration) -> usize {
        let mut map = lock(&self.entries);
        let mut closed = 0;
        for entry in map.values_mut() {
            let before = entry.idle.len();
            entry.idle.retain(|(_, since)| since.elapsed() < max_idle);
            let n = before - entry.idle.len();
            entry.open = entry.open.saturating_sub(n);
            closed += n;
        }
        map.retain(|_, e| e.open > 0 || !e.waiters.is_empty());
        closed
    }

    /// Idle connections over all keys, for tests and logs.
    pub fn idle_count(&self) -> usize {
        lock(&self.entries).values().map(|e| e.idle.len()).sum()
    }

    /// Clients waiting for a connection over all keys.
    pub fn waiting_count(&self) -> usize {
        lock(&self.entries).values().map(|e| e.waiters.len()).sum()
    }
}
