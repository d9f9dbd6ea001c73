//! Warm instances of one plugin and the policy that recycles them.
//!
//! **Invariant:** an instance whose call failed never comes back here (the caller drops it); a
//! checked-in instance is discarded when the plugin runs fresh, after `recycle_after_calls` calls, or
//! when its memory grew past `recycle_memory_bytes`; at most `max_idle` wait.

use std::sync::{
    Mutex,
    atomic::{AtomicU64, Ordering},
};

use crate::{backend::BackendInstance, plugin::InstanceMode};

/// One instance with its call count.
pub(crate) struct Pooled {
    pub instance: Box<dyn BackendInstance>,
    calls: u64,
}

/// When instances go back to the pool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecyclePolicy {
    pub mode: InstanceMode,
    pub after_calls: u64,
    pub memory_bytes: u64,
    pub max_idle: usize,
}

pub(crate) struct Pool {
    policy: RecyclePolicy,
    idle: Mutex<Vec<Pooled>>,
    pub created: AtomicU64,
    pub recycled: AtomicU64,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("policy", &self.policy).field("idle", &self.idle_len()).finish_non_exhaustive()
    }
}

impl Pool {
    pub fn new(policy: RecyclePolicy) -> Pool {
        Pool { policy, idle: Mutex::new(Vec::new()), created: AtomicU64::new(0), recycled: AtomicU64::new(0) }
    }

    /// A warm instance, or a new one from `create`.
    pub fn checkout<E>(&self, create: impl FnOnce() -> Result<Box<dyn BackendInstance>, E>) -> Result<Pooled, E> {
        if self.policy.mode == InstanceMode::Pooled
            && let Some(p) = self.idle.lock().ok().and_then(|mut v| v.pop())
        {
            return Ok(p);
        }
        let instance = create()?;
        self.created.fetch_add(1, Ordering::Relaxed);
        Ok(Pooled { instance, calls: 0 })
    }

    /// Returns an instance after a successful call, or discards it by policy.
    pub fn checkin(&self, mut p: Pooled) {
        p.calls += 1;
        let recycle = self.policy.mode == InstanceMode::Fresh
            || p.calls >= self.policy.after_calls
            || p.instance.memory_bytes() > self.policy.memory_bytes;
        if recycle {
            self.recycled.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.policy.max_idle
        {
            idle.push(p);
        }
    }

    pub fn idle_len(&self) -> usize {
        self.idle.lock().map(|v| v.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use helios_plugin_schema::{GuardVerdict, Hook};

    use super::*;
    use crate::FailureKind;

    /// An instance that only reports a memory size.
    struct Fake(u64);

    impl BackendInstance for Fake {
        fn arm(&mut self) {}
        fn call_hook(
            &mut self,
            _: Hook,
            _: &[u8],
            _: &mut dyn FnMut(&[u8]) -> Result<(), String>,
        ) -> Result<(), FailureKind> {
            Ok(())
        }
        fn evaluate(&mut self, _: &[u8]) -> Result<GuardVerdict, FailureKind> {
            Ok(GuardVerdict::Allow)
        }
        fn memory_bytes(&self) -> u64 {
            self.0
        }
        fn dropped_logs(&self) -> u32 {
            0
        }
    }

    fn policy(mode: InstanceMode) -> RecyclePolicy {
        RecyclePolicy { mode, after_calls: 3, memory_bytes: 100, max_idle: 1 }
    }

    fn make(mem: u64) -> impl FnOnce() -> Result<Box<dyn BackendInstance>, ()> {
        move || Ok(Box::new(Fake(mem)))
    }

    #[test]
    fn a_pooled_instance_is_reused_until_its_call_budget_is_spent() {
        let pool = Pool::new(policy(InstanceMode::Pooled));
        for _ in 0..3 {
            let p = pool.checkout(make(10)).unwrap();
            pool.checkin(p);
        }
        assert_eq!(pool.created.load(Ordering::Relaxed), 1, "one instance served three calls");
        assert_eq!(pool.recycled.load(Ordering::Relaxed), 1, "and was recycled after the third");
        assert_eq!(pool.idle_len(), 0);
    }

    #[test]
    fn memory_growth_fresh_mode_and_the_idle_cap_each_discard_an_instance() {
        let pool = Pool::new(policy(InstanceMode::Pooled));
        pool.checkin(pool.checkout(make(101)).unwrap());
        assert_eq!((pool.idle_len(), pool.recycled.load(Ordering::Relaxed)), (0, 1), "grew past the threshold");
        let (a, b) = (pool.checkout(make(1)).unwrap(), pool.checkout(make(1)).unwrap());
        pool.checkin(a);
        pool.checkin(b);
        assert_eq!(pool.idle_len(), 1, "max_idle = 1");

        let fresh = Pool::new(policy(InstanceMode::Fresh));
        fresh.checkin(fresh.checkout(make(1)).unwrap());
        fresh.checkin(fresh.checkout(make(1)).unwrap());
        assert_eq!(fresh.created.load(Ordering::Relaxed), 2, "fresh mode never reuses");
        assert_eq!(fresh.idle_len(), 0);
    }
}
