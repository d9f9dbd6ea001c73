//! The Redis backend: state shared by every replica pointing at one server.
//!
//! A namespace is one Redis hash, `<prefix>:{<namespace in hex>}:kv`, whose fields are the plugin's
//! keys, plus a byte counter `<prefix>:{<namespace in hex>}:bytes`. The key bytes only ever become
//! hash *fields*, never Redis key names, so no key can name another plugin's hash; the namespace is
//! hex-encoded so no plugin name can either. Every write is one Lua script that checks the caps and
//! writes atomically on the server, so the caps and the atomic operations hold across replicas.
//!
//! Connections come from a bounded pool; connecting, reading and writing have timeouts, so an
//! unreachable server costs a call at most the timeout and gives [`StateError::Redis`]. After a
//! connection error the idle connections are dropped too (they point at the same dead server), so
//! the first call after the server returns reconnects. A write returns `Ok` only once the server
//! acknowledged it; whether an acknowledged write survives a *server* restart is the server's
//! persistence setting (`appendonly yes`, `appendfsync always` for no loss).

use std::{
    sync::{Condvar, Mutex, MutexGuard},
    time::Duration,
};

use redis::{Client, Connection, ConnectionLike, Script};

use crate::{Caps, Entries, StateError, counter};

/// Connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// Connections kept open and the most in use at once. Default: 16.
    pub pool_size: usize,
    /// Default: 1 s.
    pub connect_timeout: Duration,
    /// Each command's read and write. Default: 1 s.
    pub timeout: Duration,
    /// Prefix of every key, so several fleets can share a server. Default: `"helios"`.
    pub key_prefix: String,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            pool_size: 16,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            key_prefix: "helios".into(),
        }
    }
}

/// The cap check and write shared by the write scripts. KEYS[1] the hash, KEYS[2] the byte count;
/// ARGV[1] the field; `put(value)` returns `{0}` or a refusal `{-1, limit}` / `{-2, would, limit}`.
const PUT: &str = r#"
local max_keys, max_bytes = tonumber(ARGV[#ARGV - 1]), tonumber(ARGV[#ARGV])
local function put(value)
  local old = 0
  if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
    old = #ARGV[1] + redis.call('HSTRLEN', KEYS[1], ARGV[1])
  elseif redis.call('HLEN', KEYS[1]) >= max_keys then
    return {-1, max_keys}
  end
  local would = tonumber(redis.call('GET', KEYS[2]) or '0') - old + #ARGV[1] + #value
  if would > max_bytes then return {-2, would, max_bytes} end
  redis.call('HSET', KEYS[1], ARGV[1], value)
  redis.call('SET', KEYS[2], would)
  return {0}
end
"#;

/// Connection pool state: idle connections and how many exist in all.
#[derive(Default)]
struct Pool {
    idle: Vec<Connection>,
    open: usize,
}

/// Plugin state on a Redis server.
pub struct RedisKv {
    client: Client,
    addr: String,
    opts: RedisOptions,
    pub(crate) caps: Caps,
    pool: Mutex<Pool>,
    freed: Condvar,
    /// Whether the last command reached the server; a change is logged once, not per command.
    reachable: std::sync::atomic::AtomicBool,
    set: Script,
    cas: Script,
    add: Script,
    del: Script,
}

impl std::fmt::Debug for RedisKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisKv").field("addr", &self.addr).field("opts", &self.opts).finish_non_exhaustive()
    }
}

/// A pooled connection; returned to the pool on drop unless it failed.
struct Conn<'a> {
    kv: &'a RedisKv,
    con: Option<Connection>,
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        let mut pool = self.kv.lock_pool();
        match self.con.take() {
            Some(c) if c.is_open() => pool.idle.push(c),
            _ => pool.open -= 1,
        }
        self.kv.freed.notify_one();
    }
}

impl RedisKv {
    /// Connects to `url` (`redis://[user:password@]host:port[/db]`) and checks the server answers.
    pub fn connect(url: &str, caps: Caps, opts: RedisOptions) -> Result<RedisKv, StateError> {
        let client = Client::open(url).map_err(|e| StateError::Config(format!("redis url: {e}")))?;
        let info = client.get_connection_info();
        let addr = format!("{}/{}", info.addr, info.redis.db);
        if opts.pool_size == 0 {
            return Err(StateError::Config("redis pool_size must be at least 1".into()));
        }
        if opts.key_prefix.is_empty()
            || !opts.key_prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            return Err(StateError::Config(format!(
                "redis key_prefix {:?}: expected letters, digits, '_', '.' or '-'",
                opts.key_prefix
            )));
        }
        let kv = RedisKv {
            client,
            addr,
            opts,
            caps,
            pool: Mutex::new(Pool::default()),
            freed: Condvar::new(),
            reachable: std::sync::atomic::AtomicBool::new(true),
            set: Script::new(&format!("{PUT}\nreturn put(ARGV[2])")),
            cas: Script::new(&format!(
                "{PUT}
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '0' then
  if cur then return {{1}} end
elseif (not cur) or cur ~= ARGV[3] then
  return {{1}}
end
return put(ARGV[4])"
            )),
            add: Script::new(&format!(
                "{PUT}
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (not cur) and redis.call('HLEN', KEYS[1]) >= max_keys then return {{-1, max_keys}} end
local r = redis.pcall('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if type(r) == 'table' and r.err then
  if string.find(r.err, 'overflow') then return {{-4}} end
  return {{-3}}
end
local new = redis.call('HGET', KEYS[1], ARGV[1])
local would = tonumber(redis.call('GET', KEYS[2]) or '0') - (cur and (#ARGV[1] + #cur) or 0) + #ARGV[1] + #new
if would > max_bytes then
  if cur then redis.call('HSET', KEYS[1], ARGV[1], cur) else redis.call('HDEL', KEYS[1], ARGV[1]) end
  return {{-2, would, max_bytes}}
end
redis.call('SET', KEYS[2], would)
return new"
            )),
            del: Script::new(
                "local n = redis.call('HSTRLEN', KEYS[1], ARGV[1])
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
  if redis.call('DECRBY', KEYS[2], #ARGV[1] + n) <= 0 then redis.call('DEL', KEYS[2]) end
end
return 0",
            ),
        };
        kv.health()?;
        Ok(kv)
    }

    /// `redis <host:port/db> (pool N, timeout T ms)`, for logs; never the password.
    pub fn describe(&self) -> String {
        format!(
            "redis {} (pool {}, timeout {} ms, prefix {:?})",
            self.addr,
            self.opts.pool_size,
            self.opts.timeout.as_millis(),
            self.opts.key_prefix
        )
    }

    fn lock_pool(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn err(&self, e: impl std::fmt::Display) -> StateError {
        StateError::Redis { addr: self.addr.clone(), detail: e.to_string() }
    }

    /// A connection from the pool, or a new one while fewer than `pool_size` exist; waits at most the
    /// command timeout for one to be returned.
    fn conn(&self) -> Result<Conn<'_>, StateError> {
        let mut pool = self.lock_pool();
        loop {
            if let Some(con) = pool.idle.pop() {
                return Ok(Conn { kv: self, con: Some(con) });
            }
            if pool.open < self.opts.pool_size {
                pool.open += 1;
                drop(pool);
                let mut guard = Conn { kv: self, con: None };
                let con =
                    self.client.get_connection_with_timeout(self.opts.connect_timeout).map_err(|e| self.err(e))?;
                con.set_read_timeout(Some(self.opts.timeout)).map_err(|e| self.err(e))?;
                con.set_write_timeout(Some(self.opts.timeout)).map_err(|e| self.err(e))?;
                guard.con = Some(con);
                return Ok(guard);
            }
            let (p, timeout) = self.freed.wait_timeout(pool, self.opts.timeout).unwrap_or_else(|p| p.into_inner());
            pool = p;
            if timeout.timed_out() && pool.idle.is_empty() && pool.open >= self.opts.pool_size {
                return Err(self.err(format!("all {} pooled connections busy", self.opts.pool_size)));
            }
        }
    }

    /// Runs `f` on a pooled connection. A connection or I/O error drops this connection and every
    /// idle one (they point at the same server) and names the server. The server becoming
    /// unreachable, and reachable again, is logged once each.
    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> redis::RedisResult<T>) -> Result<T, StateError> {
        let r = self.with_conn(f);
        match &r {
            Ok(_) => self.reached(true, None),
            Err((true, e)) => self.reached(false, Some(e)),
            Err((false, _)) => {}
        }
        r.map_err(|(_, e)| e)
    }

    /// Logs a change of reachability.
    fn reached(&self, now: bool, error: Option<&StateError>) {
        use std::sync::atomic::Ordering;
        if self.reachable.swap(now, Ordering::AcqRel) == now {
            return;
        }
        match error {
            Some(e) => tracing::warn!(
                backend = %self.describe(),
                error = %e,
                "plugin state store unreachable: plugin calls that need it fail (budgets fail closed)"
            ),
            None => tracing::info!(backend = %self.describe(), "plugin state store reachable again"),
        }
    }

    /// [`RedisKv::with`] without the logging; an error says whether the server could not be reached.
    fn with_conn<T>(&self, f: impl FnOnce(&mut Connection) -> redis::RedisResult<T>) -> Result<T, (bool, StateError)> {
        let mut c = self.conn().map_err(|e| (true, e))?;
        let Some(con) = c.con.as_mut() else {
            return Err((true, self.err("no connection")));
        };
        match f(con) {
            Ok(v) => Ok(v),
            Err(e) => {
                let unreachable =
                    e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_unrecoverable_error();
                if unreachable {
                    c.con = None;
                    let stale = std::mem::take(&mut self.lock_pool().idle);
                    self.lock_pool().open -= stale.len();
                }
                Err((unreachable, self.err(e)))
            }
        }
    }

    fn keys(&self, ns: &str) -> (String, String) {
        let hex: String = ns.bytes().map(|b| format!("{b:02x}")).collect();
        let p = &self.opts.key_prefix;
        (format!("{p}:{{{hex}}}:kv"), format!("{p}:{{{hex}}}:bytes"))
    }

    /// `PING`.
    pub fn health(&self) -> Result<(), StateError> {
        self.with(|c| redis::cmd("PING").query::<String>(c)).map(drop)
    }

    /// The value under `key` in `ns`.
    pub fn read(&self, ns: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        let (hash, _) = self.keys(ns);
        self.with(|c| redis::cmd("HGET").arg(&hash).arg(key).query(c))
    }

    /// Maps a write script's reply (`{0}`, `{1}` mismatch, or a refusal) to whether it wrote.
    fn written(&self, reply: &[i64]) -> Result<bool, StateError> {
        match reply {
            [0] => Ok(true),
            [1] => Ok(false),
            [-1, limit] => Err(StateError::TooManyKeys { limit: *limit as usize }),
            [-2, would, limit] => Err(StateError::TooManyBytes { would: *would as usize, limit: *limit as usize }),
            other => Err(self.err(format!("unexpected script reply {other:?}"))),
        }
    }

    /// Stores `value` under `key`, within the caps.
    pub fn write(&self, ns: &str, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        self.write_within(ns, key, value, self.caps)
    }

    /// Stores `value` under `key` within `caps` (a plugin's own caps) instead of the store's.
    pub fn write_within(&self, ns: &str, key: &[u8], value: &[u8], caps: Caps) -> Result<(), StateError> {
        caps.check_value(value.len())?;
        let (hash, bytes) = self.keys(ns);
        let reply: Vec<i64> = self.with(|c| {
            self.set.key(&hash).key(&bytes).arg(key).arg(value).arg(caps.max_keys).arg(caps.max_bytes).invoke(c)
        })?;
        self.written(&reply).map(drop)
    }

    /// Replaces the value under `key` with `new` if it is `expected` (`None`: if the key is missing).
    pub fn compare_and_swap(
        &self,
        ns: &str,
        key: &[u8],
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StateError> {
        self.caps.check_value(new.len())?;
        let (hash, bytes) = self.keys(ns);
        let reply: Vec<i64> = self.with(|c| {
            self.cas
                .key(&hash)
                .key(&bytes)
                .arg(key)
                .arg(if expected.is_some() { "1" } else { "0" })
                .arg(expected.unwrap_or_default())
                .arg(new)
                .arg(self.caps.max_keys)
                .arg(self.caps.max_bytes)
                .invoke(c)
        })?;
        self.written(&reply)
    }

    /// Adds `delta` to the counter under `key` (missing counts as 0) and returns the new value.
    ///
    /// One script around `HINCRBY` (which accepts exactly the canonical decimal text and refuses
    /// overflow); the new value comes back as text because Lua numbers are doubles.
    pub fn add(&self, ns: &str, key: &[u8], delta: i64) -> Result<i64, StateError> {
        let (hash, bytes) = self.keys(ns);
        let reply: redis::Value = self.with(|c| {
            self.add
                .key(&hash)
                .key(&bytes)
                .arg(key)
                .arg(delta)
                .arg(self.caps.max_keys)
                .arg(self.caps.max_bytes)
                .invoke(c)
        })?;
        match reply {
            redis::Value::BulkString(text) => counter::parse(&text),
            redis::Value::Array(items) => {
                let codes: Vec<i64> = items.iter().map(|v| redis::from_redis_value(v).unwrap_or(0)).collect();
                match codes.as_slice() {
                    [-3] => Err(StateError::NotACounter),
                    [-4] => Err(StateError::Overflow),
                    other => {
                        self.written(other).and_then(|_| Err(self.err(format!("unexpected script reply {other:?}"))))
                    }
                }
            }
            other => Err(self.err(format!("unexpected script reply {other:?}"))),
        }
    }

    /// Removes `key`; a missing key is not an error.
    pub fn remove(&self, ns: &str, key: &[u8]) -> Result<(), StateError> {
        let (hash, bytes) = self.keys(ns);
        self.with(|c| self.del.key(&hash).key(&bytes).arg(key).invoke::<i64>(c)).map(drop)
    }

    /// Every (key, value) of `ns`, sorted by key.
    pub fn list(&self, ns: &str) -> Result<Entries, StateError> {
        let (hash, _) = self.keys(ns);
        let mut out: Entries = self.with(|c| redis::cmd("HGETALL").arg(&hash).query(c))?;
        out.sort();
        Ok(out)
    }

    /// Every namespace under this prefix that holds keys, sorted.
    pub fn namespaces(&self) -> Result<Vec<String>, StateError> {
        let pattern = format!("{}:{{*}}:kv", self.opts.key_prefix);
        let names: Vec<String> = self.with(|c| {
            let iter = redis::cmd("SCAN").cursor_arg(0).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000).clone();
            iter.iter::<String>(c).map(|i| i.collect())
        })?;
        let mut out: Vec<String> = names
            .iter()
            .filter_map(|k| {
                let hex = k.strip_prefix(&self.opts.key_prefix)?.strip_prefix(":{")?.strip_suffix("}:kv")?;
                let bytes: Option<Vec<u8>> = (0..hex.len())
                    .step_by(2)
                    .map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
                    .collect();
                String::from_utf8(bytes?).ok()
            })
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }
}
