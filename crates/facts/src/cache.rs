//! A bounded LRU cache of facts by statement text, for hosts that see the same statements again
//! (prepared statements, ORMs, pgbench). Keyed by the exact text: facts depend on literal values
//! (a `LIKE` pattern, `LIMIT ALL` vs `LIMIT 5`, a routine body is a string literal), so texts that
//! differ only in literals are different entries.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use crate::StatementFacts;

/// Texts longer than this are analysed every time and never cached (they would evict many small
/// entries and are rarely repeated).
pub const MAX_CACHED_TEXT: usize = 16 * 1024;

/// A thread-safe, bounded cache of [`crate::pg::extract`] results.
#[derive(Debug)]
pub struct FactsCache {
    inner: Mutex<lru::LruCache<String, Arc<StatementFacts>>>,
}

impl FactsCache {
    /// A cache holding at most `capacity` statements (at least 1).
    pub fn new(capacity: usize) -> FactsCache {
        let cap = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        FactsCache { inner: Mutex::new(lru::LruCache::new(cap)) }
    }

    /// The facts of `sql`, from the cache or freshly extracted (and then cached).
    pub fn get(&self, sql: &str) -> Arc<StatementFacts> {
        if sql.len() > MAX_CACHED_TEXT {
            return Arc::new(crate::pg::extract(sql));
        }
        if let Some(f) = self.lock().get(sql) {
            return f.clone();
        }
        // Extract outside the lock: other sessions keep hitting the cache meanwhile.
        let facts = Arc::new(crate::pg::extract(sql));
        self.lock().put(sql.to_owned(), facts.clone());
        facts
    }

    /// How many statements are cached.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<String, Arc<StatementFacts>>> {
        // A panic while holding the lock cannot leave the LRU inconsistent for our use (get/put).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_is_bounded_and_returns_the_same_facts() {
        let c = FactsCache::new(2);
        let a = c.get("SELECT 1");
        assert!(Arc::ptr_eq(&a, &c.get("SELECT 1")), "second lookup is a hit");
        c.get("SELECT 2");
        c.get("SELECT 3");
        assert_eq!(c.len(), 2);
        assert!(!Arc::ptr_eq(&a, &c.get("SELECT 1")), "the oldest entry was evicted");
    }
}
