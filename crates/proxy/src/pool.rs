//! Upstream connection pools, one per [`PoolKey`] (node, user, database, startup parameters).
//!
//! A key's pool holds at most `pool_size` connections (checked out or idle). An idle connection is
//! checked for a closed socket before reuse, so a node restart costs at most the statements that
//! were in flight, never a stale connection handed to the next client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::UpstreamError;
use crate::upstream::{PoolKey, ServerConn, Target};

/// A checked-out connection; its permit returns to the pool when it is dropped or checked in.
#[derive(Debug)]
pub struct Pooled {
    pub server: ServerConn,
    permit: OwnedSemaphorePermit,
}

#[derive(Debug)]
struct Entry {
    slots_total: usize,
    /// Idle connections with the time they were checked in.
    idle: Vec<(ServerConn, OwnedSemaphorePermit, Instant)>,
    slots: Arc<Semaphore>,
}

/// All pools of a proxy.
#[derive(Debug)]
pub struct Pool {
    entries: Mutex<HashMap<PoolKey, Entry>>,
    size: usize,
    timeout: Duration,
}

impl Pool {
    pub fn new(size: usize, timeout: Duration) -> Pool {
        Pool { entries: Mutex::new(HashMap::new()), size, timeout }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PoolKey, Entry>> {
        // A panic while holding the lock leaves only plain data behind: keep going.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection for `target.key`, or a new one.
    pub async fn checkout(&self, target: Target<'_>) -> Result<Pooled, UpstreamError> {
        let slots = {
            let mut map = self.lock();
            let entry = map.entry(target.key.clone()).or_insert_with(|| Entry {
                slots_total: self.size,
                idle: Vec::new(),
                slots: Arc::new(Semaphore::new(self.size)),
            });
            while let Some((server, permit, _)) = entry.idle.pop() {
                if !server.conn.looks_closed() {
                    return Ok(Pooled { server, permit });
                }
                tracing::debug!(node = %target.key.node, "dropping a pooled connection the server closed");
            }
            entry.slots.clone()
        };
        let permit = match tokio::time::timeout(self.timeout, slots.acquire_owned()).await {
            Ok(Ok(p)) => p,
            _ => {
                return Err(UpstreamError::PoolTimeout {
                    node: target.key.node.to_string(),
                    waited_ms: self.timeout.as_millis() as u64,
                    pool_size: self.size,
                });
            }
        };
        // A connection may have come back while we waited for a slot.
        if let Some(p) = self.take_idle(target.key) {
            drop(permit);
            return Ok(p);
        }
        let server = ServerConn::connect(target).await?;
        Ok(Pooled { server, permit })
    }

    fn take_idle(&self, key: &PoolKey) -> Option<Pooled> {
        let mut map = self.lock();
        let entry = map.get_mut(key)?;
        while let Some((server, permit, _)) = entry.idle.pop() {
            if !server.conn.looks_closed() {
                return Some(Pooled { server, permit });
            }
        }
        None
    }

    /// Returns an idle, clean connection (ReadyForQuery 'I', nothing pending) for reuse.
    pub fn checkin(&self, p: Pooled) {
        let mut map = self.lock();
        if let Some(entry) = map.get_mut(&p.server.key) {
            entry.idle.push((p.server, p.permit, Instant::now()));
        }
    }

    /// Closes connections idle for longer than `max_idle`; returns how many.
    pub fn reap(&self, max_idle: Duration) -> usize {
        let mut map = self.lock();
        let mut closed = 0;
        for entry in map.values_mut() {
            let before = entry.idle.len();
            entry.idle.retain(|(_, _, since)| since.elapsed() < max_idle);
            closed += before - entry.idle.len();
        }
        map.retain(|_, e| !e.idle.is_empty() || e.slots.available_permits() < e.slots_total);
        closed
    }

    /// Idle connections per node, for tests and logs.
    pub fn idle_count(&self) -> usize {
        self.lock().values().map(|e| e.idle.len()).sum()
    }
}
