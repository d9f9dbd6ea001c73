//! Upstream connection pools, one per [`PoolKey`] (node, user, database, startup parameters), under
//! two shared caps as PgBouncer has them: `max_db_connections` per (node, database) and
//! `max_user_connections` per (node, user), over every key that shares that database or user.
//!
//! A key's pool holds at most `pool_size` connections (checked out, idle or being opened). A client
//! that finds none free waits in a FIFO queue, up to `pool_timeout_ms`: a connection checked in goes
//! straight to the oldest waiter of its key, and a freed place (a closed connection) goes to the
//! oldest waiter, over all keys, that it lets open a new one (as PgBouncer does). When a shared cap
//! is what keeps a client waiting, an idle connection of another key under that cap is closed to
//! make room, as PgBouncer evicts one. A client that waits too long gets an error naming the cap
//! that was full. An idle connection is checked for a closed socket before reuse, so a node restart
//! costs at most the statements that were in flight, never a stale connection handed to the next
//! client.

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
    /// A free place (already counted for the waiter): open a new connection.
    Slot,
}

/// The caps of all pools of a proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolLimits {
    /// Connections per key (`pool_size`).
    pub pool_size: usize,
    /// Connections per (node, database) over all users; 0 is no cap (`max_db_connections`).
    pub max_db_connections: usize,
    /// Connections per (node, user) over all databases; 0 is no cap (`max_user_connections`),
    /// unless `user_caps` has the user.
    pub max_user_connections: usize,
    /// Per-user overrides of `max_user_connections` (`[[users]] max_user_connections`).
    pub user_caps: HashMap<String, usize>,
    /// How long a client waits for a connection (`pool_timeout_ms`).
    pub timeout: Duration,
}

impl PoolLimits {
    /// Only `pool_size` and the timeout; no shared caps.
    pub fn per_key(pool_size: usize, timeout: Duration) -> PoolLimits {
        PoolLimits { pool_size, max_db_connections: 0, max_user_connections: 0, user_caps: HashMap::new(), timeout }
    }

    fn user_cap(&self, user: &str) -> usize {
        self.user_caps.get(user).copied().unwrap_or(self.max_user_connections)
    }
}

/// The cap that keeps a client from opening a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Full {
    Key,
    Db,
    User,
}

#[derive(Debug, Default)]
struct Entry {
    /// Connections counted against the caps: checked out, idle, or being opened.
    open: usize,
    /// Idle connections with the time they were checked in.
    idle: Vec<(ServerConn, Instant)>,
    /// Clients waiting for a connection, oldest first, with their arrival number.
    waiters: VecDeque<(u64, oneshot::Sender<Handoff>)>,
}

type Group = (Arc<str>, Arc<str>);

#[derive(Debug, Default)]
struct Inner {
    keys: HashMap<PoolKey, Entry>,
    /// Open connections per (node, database).
    dbs: HashMap<Group, usize>,
    /// Open connections per (node, user).
    users: HashMap<Group, usize>,
    arrivals: u64,
    /// A pool a reload replaced: it no longer reports to the metrics (the new one does).
    retired: bool,
}

fn db_of(k: &PoolKey) -> Group {
    (k.node.clone(), k.database.clone())
}
fn user_of(k: &PoolKey) -> Group {
    (k.node.clone(), k.user.clone())
}

impl Inner {
    /// Reports `node`'s connections (idle, and checked out or being opened) to the metrics.
    fn report(&self, node: &str) {
        if self.retired || !crate::ops::metering() {
            return;
        }
        let (mut idle, mut open) = (0, 0);
        for e in self.keys.iter().filter(|(k, _)| &*k.node == node).map(|(_, e)| e) {
            idle += e.idle.len();
            open += e.open;
        }
        crate::ops::pool_size(node, idle, open);
    }

    fn count(&mut self, key: &PoolKey) {
        self.keys.entry(key.clone()).or_default().open += 1;
        *self.dbs.entry(db_of(key)).or_default() += 1;
        *self.users.entry(user_of(key)).or_default() += 1;
    }

    fn uncount(&mut self, key: &PoolKey) {
        if let Some(e) = self.keys.get_mut(key) {
            e.open = e.open.saturating_sub(1);
        }
        for (map, g) in [(&mut self.dbs, db_of(key)), (&mut self.users, user_of(key))] {
            if let Some(n) = map.get_mut(&g) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&g);
                }
            }
        }
    }

    /// Which cap, if any, keeps `key` from opening one more connection now.
    fn full(&self, key: &PoolKey, limits: &PoolLimits) -> Option<Full> {
        if self.keys.get(key).map_or(0, |e| e.open) >= limits.pool_size {
            return Some(Full::Key);
        }
        let db_cap = limits.max_db_connections;
        if db_cap > 0 && self.dbs.get(&db_of(key)).copied().unwrap_or(0) >= db_cap {
            return Some(Full::Db);
        }
        let user_cap = limits.user_cap(&key.user);
        if user_cap > 0 && self.users.get(&user_of(key)).copied().unwrap_or(0) >= user_cap {
            return Some(Full::User);
        }
        None
    }

    /// Closes one idle connection of another key under the cap that is full for `key`; false if
    /// there is none.
    fn evict_for(&mut self, key: &PoolKey, full: Full) -> bool {
        let same = |k: &PoolKey| match full {
            Full::Db => db_of(k) == db_of(key),
            Full::User => user_of(k) == user_of(key),
            Full::Key => false,
        };
        let victim = self
            .keys
            .iter_mut()
            .filter(|(k, e)| *k != key && !e.idle.is_empty() && same(k))
            .min_by_key(|(_, e)| e.idle.iter().map(|(_, t)| *t).min())
            .map(|(k, e)| {
                let oldest = e.idle.iter().enumerate().min_by_key(|(_, (_, t))| *t).map(|(i, _)| i).unwrap_or(0);
                (k.clone(), e.idle.swap_remove(oldest).0)
            });
        let Some((k, conn)) = victim else { return false };
        tracing::debug!(node = %k.node, database = %k.database, user = %k.user, "closing an idle connection to make room under a shared cap");
        drop(conn);
        self.uncount(&k);
        true
    }

    /// Makes room for one more connection of `key`, closing idle connections of other keys under a
    /// full shared cap; the cap still full if that is not possible.
    fn make_room(&mut self, key: &PoolKey, limits: &PoolLimits) -> Result<(), Full> {
        loop {
            match self.full(key, limits) {
                None => return Ok(()),
                Some(Full::Key) => return Err(Full::Key),
                Some(cap) => {
                    if !self.evict_for(key, cap) {
                        return Err(cap);
                    }
                }
            }
        }
    }

    /// Gives free places to the oldest waiters that can use them, over all keys.
    fn dispatch(&mut self, limits: &PoolLimits) {
        loop {
            let mut fronts: Vec<(u64, PoolKey)> =
                self.keys.iter().filter_map(|(k, e)| e.waiters.front().map(|(seq, _)| (*seq, k.clone()))).collect();
            fronts.sort_by_key(|(seq, _)| *seq);
            let Some(key) = fronts.into_iter().map(|(_, k)| k).find(|k| self.make_room(k, limits).is_ok()) else {
                return;
            };
            let Some((_, w)) = self.keys.get_mut(&key).and_then(|e| e.waiters.pop_front()) else { return };
            self.count(&key);
            if w.send(Handoff::Slot).is_err() {
                // The waiter gave up: the place is free again.
                self.uncount(&key);
            }
        }
    }
}

type Shared = Arc<Mutex<Inner>>;

fn lock(inner: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    // A panic while holding the lock leaves only plain data behind: keep going.
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

/// A place in a key's pool; freed (and passed on) when dropped while armed.
#[derive(Debug)]
struct Slot {
    inner: Shared,
    limits: Arc<PoolLimits>,
    key: PoolKey,
    armed: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.armed {
            let mut inner = lock(&self.inner);
            inner.uncount(&self.key);
            inner.dispatch(&self.limits);
            inner.report(&self.key.node);
        }
    }
}

/// A checked-out connection; its place returns to the pool when it is checked in or dropped.
#[derive(Debug)]
pub struct Pooled {
    pub server: ServerConn,
    slot: Slot,
}

/// All pools of a proxy.
#[derive(Debug)]
pub struct Pool {
    inner: Shared,
    limits: Arc<PoolLimits>,
}

impl Pool {
    pub fn new(limits: PoolLimits) -> Pool {
        Pool { inner: Arc::new(Mutex::new(Inner::default())), limits: Arc::new(limits) }
    }

    fn slot(&self, key: &PoolKey) -> Slot {
        Slot { inner: self.inner.clone(), limits: self.limits.clone(), key: key.clone(), armed: true }
    }

    fn timeout_error(&self, key: &PoolKey, full: Full) -> UpstreamError {
        let l = &self.limits;
        let cap = match full {
            Full::Key => {
                format!("pool_size = {} reached for user \"{}\", database \"{}\"", l.pool_size, key.user, key.database)
            }
            Full::Db => {
                format!("max_db_connections = {} reached for database \"{}\"", l.max_db_connections, key.database)
            }
            Full::User => format!("max_user_connections = {} reached for user \"{}\"", l.user_cap(&key.user), key.user),
        };
        UpstreamError::PoolTimeout { node: key.node.to_string(), waited_ms: l.timeout.as_millis() as u64, cap }
    }

    /// An idle connection for `target.key`, a new one if the caps leave room, or the next one
    /// freed (FIFO among waiters) within `pool_timeout_ms`.
    pub async fn checkout(&self, target: Target<'_>) -> Result<Pooled, UpstreamError> {
        let key = target.key;
        let (rx, blocked_by) = {
            let mut inner = lock(&self.inner);
            let mut closed = 0;
            let mut found = None;
            {
                let entry = inner.keys.entry(key.clone()).or_default();
                // Waiters that gave up do not hold the queue.
                entry.waiters.retain(|(_, tx)| !tx.is_closed());
                while let Some((server, _)) = entry.idle.pop() {
                    if !server.conn.looks_closed() {
                        found = Some(server);
                        break;
                    }
                    tracing::debug!(node = %key.node, "dropping a pooled connection the server closed");
                    closed += 1;
                }
            }
            for _ in 0..closed {
                inner.uncount(key);
            }
            if let Some(server) = found {
                if closed > 0 {
                    inner.dispatch(&self.limits);
                }
                inner.report(&key.node);
                drop(inner);
                return Ok(Pooled { server, slot: self.slot(key) });
            }
            let queued = inner.keys.get(key).is_some_and(|e| !e.waiters.is_empty());
            let room = if queued { Err(Full::Key) } else { inner.make_room(key, &self.limits) };
            let waiting = match room {
                Ok(()) => {
                    inner.count(key);
                    (None, None)
                }
                Err(full) => {
                    let (tx, rx) = oneshot::channel();
                    inner.arrivals += 1;
                    let seq = inner.arrivals;
                    inner.keys.entry(key.clone()).or_default().waiters.push_back((seq, tx));
                    // Places freed by the connections found closed above go to older waiters.
                    inner.dispatch(&self.limits);
                    (Some(rx), Some(full))
                }
            };
            inner.report(&key.node);
            waiting
        };
        let handoff = match rx {
            None => Handoff::Slot,
            Some(mut rx) => {
                let since = Instant::now();
                let got = match tokio::time::timeout(self.limits.timeout, &mut rx).await {
                    Ok(Ok(h)) => Some(h),
                    _ => {
                        // A hand-off may have raced the deadline: take it rather than lose it.
                        rx.close();
                        rx.try_recv().ok()
                    }
                };
                crate::ops::pool_waited(&key.node, since.elapsed());
                match got {
                    Some(h) => h,
                    None => {
                        let now = lock(&self.inner).full(key, &self.limits);
                        return Err(self.timeout_error(key, now.or(blocked_by).unwrap_or(Full::Key)));
                    }
                }
            }
        };
        let slot = self.slot(key);
        match handoff {
            Handoff::Conn(server) => Ok(Pooled { server: *server, slot }),
            // On failure the slot is dropped, which passes the place to the next waiter.
            Handoff::Slot => Ok(Pooled { server: ServerConn::connect(target).await?, slot }),
        }
    }

    /// Returns an idle, clean connection (ReadyForQuery 'I', nothing pending): to the oldest waiter
    /// of its key, else (when a client of another key waits on a shared cap this connection
    /// counts against) it is closed to make room, else to the idle list.
    pub fn checkin(&self, p: Pooled) {
        let Pooled { server, mut slot } = p;
        slot.armed = false;
        let mut inner = lock(&self.inner);
        let key = server.key.clone();
        let Some(entry) = inner.keys.get_mut(&key) else { return };
        let mut server = server;
        while let Some((_, w)) = entry.waiters.pop_front() {
            match w.send(Handoff::Conn(Box::new(server))) {
                Ok(()) => return,
                // The waiter gave up: try the next one.
                Err(Handoff::Conn(s)) => server = *s,
                Err(Handoff::Slot) => return,
            }
        }
        entry.idle.push((server, Instant::now()));
        let others_wait = inner.keys.iter().any(|(k, e)| {
            k != &key && !e.waiters.is_empty() && (db_of(k) == db_of(&key) || user_of(k) == user_of(&key))
        });
        if others_wait {
            inner.dispatch(&self.limits);
        }
        inner.report(&key.node);
    }

    /// Closes connections idle for longer than `max_idle`; returns how many.
    pub fn reap(&self, max_idle: Duration) -> usize {
        let mut inner = lock(&self.inner);
        let mut gone = Vec::new();
        for (k, entry) in inner.keys.iter_mut() {
            let before = entry.idle.len();
            entry.idle.retain(|(_, since)| since.elapsed() < max_idle);
            gone.extend(std::iter::repeat_n(k.clone(), before - entry.idle.len()));
        }
        for k in &gone {
            inner.uncount(k);
        }
        if !gone.is_empty() {
            inner.dispatch(&self.limits);
        }
        let mut nodes: Vec<Arc<str>> = gone.iter().map(|k| k.node.clone()).collect();
        nodes.sort();
        nodes.dedup();
        for n in &nodes {
            inner.report(n);
        }
        inner.keys.retain(|_, e| e.open > 0 || !e.waiters.is_empty());
        gone.len()
    }

    /// A reload replaced this pool: its connections stop counting in the metrics (the new pool's
    /// do); checked-out ones still return here and close with their sessions.
    pub fn retire(&self) {
        lock(&self.inner).retired = true;
    }

    /// Idle connections over all keys, for tests and logs.
    pub fn idle_count(&self) -> usize {
        lock(&self.inner).keys.values().map(|e| e.idle.len()).sum()
    }

    /// Clients waiting for a connection over all keys.
    pub fn waiting_count(&self) -> usize {
        lock(&self.inner).keys.values().map(|e| e.waiters.len()).sum()
    }
}
