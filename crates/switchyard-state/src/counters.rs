//! The counters admission control shares: sliding-window rate counters,
//! concurrency slots and spend totals, in process or in Redis.
//!
//! Rate limits are exact sliding windows (a log of charges per window),
//! not GCRA or token buckets: a key sold as "60 requests per minute" must
//! never see 61 in any minute, where a bucket that refills continuously
//! admits up to twice the limit in the minute after an idle one. Token
//! limits also need a charge to be corrected after the fact (the estimate
//! made before the call, replaced by the real usage after it), which
//! governor's limiters cannot do. The Redis version runs the same
//! algorithm in one Lua script, so several instances together admit what
//! one would.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use redis::Script;
use redis::aio::ConnectionManager;

use crate::StateError;

/// One limit a request must fit in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowCharge {
    /// Names the counter (scope, id, what is counted).
    pub key: String,
    /// Most units admitted in any window.
    pub limit: u64,
    /// Units this request takes (1 for requests; estimated tokens).
    pub amount: u64,
    /// The window's length.
    pub window: Duration,
}

/// A counter's state after a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowState {
    /// The limit.
    pub limit: u64,
    /// Units still available now.
    pub remaining: u64,
    /// Until the window holds no charge made so far (when the counter is
    /// full again).
    pub reset: Duration,
}

/// The answer to a set of charges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowDecision {
    /// Every charge fit and was made; states in the order of the charges.
    Admitted(Vec<WindowState>),
    /// Charge `index` did not fit; nothing was charged.
    Refused {
        /// Which charge.
        index: usize,
        /// When it would fit, if it ever can (None: larger than the limit).
        retry_after: Option<Duration>,
        /// States in the order of the charges.
        states: Vec<WindowState>,
    },
}

/// Sliding-window counters.
pub trait WindowCounters: Send + Sync {
    /// Makes all `charges` under `id` (unique per request), or none.
    fn charge<'a>(
        &'a self,
        id: &'a str,
        charges: &'a [WindowCharge],
    ) -> BoxFuture<'a, Result<WindowDecision, StateError>>;

    /// Replaces the amount charged under `id` to `key` (an estimate,
    /// corrected by the real usage). A charge already out of its window
    /// is left alone.
    fn adjust<'a>(
        &'a self,
        id: &'a str,
        key: &'a str,
        charged: u64,
        actual: u64,
    ) -> BoxFuture<'a, Result<(), StateError>>;
}

/// Concurrency slots: a request holds one per limited scope while in flight.
pub trait ConcurrencySlots: Send + Sync {
    /// Takes a slot of each `(key, limit)` for `id`, or none; `Some(i)`
    /// names the first key that was full.
    fn acquire<'a>(
        &'a self,
        id: &'a str,
        keys: &'a [(String, u64)],
    ) -> BoxFuture<'a, Result<Option<usize>, StateError>>;

    /// Gives back `id`'s slots.
    fn release<'a>(
        &'a self,
        id: &'a str,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<(), StateError>>;
}

/// Running spend totals (US dollars), one per scope and budget period.
pub trait SpendTotals: Send + Sync {
    /// The totals of `keys`; `None` for a key never seeded.
    fn get<'a>(&'a self, keys: &'a [String])
    -> BoxFuture<'a, Result<Vec<Option<f64>>, StateError>>;

    /// Sets a key's total unless it is already set (by another request or
    /// instance), keeping it for `ttl`.
    fn seed<'a>(
        &'a self,
        key: &'a str,
        total: f64,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StateError>>;

    /// Adds `amount` to each key that is set; returns the new totals.
    fn add<'a>(
        &'a self,
        keys: &'a [String],
        amount: f64,
    ) -> BoxFuture<'a, Result<Vec<Option<f64>>, StateError>>;

    /// Adds `amount` that could not be added at `owed_at` (Unix ms) to
    /// each key that is set and was not seeded since: a total seeded
    /// after the debt was read from a ledger that holds it already.
    /// Totals of this process are never seeded behind a debt (they are
    /// never lost), so by default this is `add`.
    fn add_owed<'a>(
        &'a self,
        keys: &'a [String],
        amount: f64,
        owed_at: i64,
    ) -> BoxFuture<'a, Result<Vec<Option<f64>>, StateError>> {
        let _ = owed_at;
        self.add(keys, amount)
    }
}

// ---------------------------------------------------------------------
// In process
// ---------------------------------------------------------------------

#[derive(Default)]
struct Window {
    /// (when, request id, amount), oldest first.
    entries: VecDeque<(Instant, String, u64)>,
    sum: u64,
    length: Duration,
}

impl Window {
    fn expire(&mut self, now: Instant) {
        while let Some((at, _, amount)) = self.entries.front() {
            if now.duration_since(*at) < self.length {
                break;
            }
            self.sum -= *amount;
            self.entries.pop_front();
        }
    }

    fn state(&self, limit: u64, now: Instant) -> WindowState {
        let reset = self.entries.back().map_or(Duration::ZERO, |(at, _, _)| {
            self.length.saturating_sub(now.duration_since(*at))
        });
        WindowState {
            limit,
            remaining: limit.saturating_sub(self.sum),
            reset,
        }
    }

    /// When `amount` more would fit, as old charges leave the window.
    fn fits_after(&self, amount: u64, limit: u64, now: Instant) -> Option<Duration> {
        if amount > limit {
            return None;
        }
        let mut sum = self.sum;
        for (at, _, charged) in &self.entries {
            sum -= charged;
            if sum + amount <= limit {
                return Some(self.length.saturating_sub(now.duration_since(*at)));
            }
        }
        Some(Duration::ZERO)
    }
}

/// Counters in this process: exact, and lost on restart.
#[derive(Default)]
pub struct MemoryWindows {
    windows: Mutex<HashMap<String, Window>>,
    calls: AtomicU64,
}

impl MemoryWindows {
    /// Empty counters.
    pub fn new() -> Self {
        Self::default()
    }

    fn charge_now(&self, id: &str, charges: &[WindowCharge], now: Instant) -> WindowDecision {
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Idle counters are dropped now and then so that keys seen once
        // do not stay in memory forever.
        if self
            .calls
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(4096)
        {
            windows.retain(|_, window| {
                window.expire(now);
                !window.entries.is_empty()
            });
        }
        let mut refused = None;
        for (index, charge) in charges.iter().enumerate() {
            let window = windows.entry(charge.key.clone()).or_default();
            window.length = charge.window;
            window.expire(now);
            if refused.is_none() && window.sum + charge.amount > charge.limit {
                refused = Some((index, window.fits_after(charge.amount, charge.limit, now)));
            }
        }
        if let Some((index, retry_after)) = refused {
            let states = charges
                .iter()
                .map(|c| {
                    windows.get(&c.key).map_or_else(
                        || Window::default().state(c.limit, now),
                        |w| w.state(c.limit, now),
                    )
                })
                .collect();
            return WindowDecision::Refused {
                index,
                retry_after,
                states,
            };
        }
        let states = charges
            .iter()
            .map(|charge| {
                let window = windows.entry(charge.key.clone()).or_default();
                window
                    .entries
                    .push_back((now, id.to_owned(), charge.amount));
                window.sum += charge.amount;
                window.state(charge.limit, now)
            })
            .collect();
        WindowDecision::Admitted(states)
    }
}

impl WindowCounters for MemoryWindows {
    fn charge<'a>(
        &'a self,
        id: &'a str,
        charges: &'a [WindowCharge],
    ) -> BoxFuture<'a, Result<WindowDecision, StateError>> {
        let decision = self.charge_now(id, charges, Instant::now());
        Box::pin(std::future::ready(Ok(decision)))
    }

    fn adjust<'a>(
        &'a self,
        id: &'a str,
        key: &'a str,
        charged: u64,
        actual: u64,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(window) = windows.get_mut(key)
            && let Some(entry) = window
                .entries
                .iter_mut()
                .find(|(_, entry_id, amount)| entry_id == id && *amount == charged)
        {
            entry.2 = actual;
            window.sum = window.sum - charged + actual;
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Concurrency slots in this process.
#[derive(Default)]
pub struct MemorySlots {
    held: Mutex<HashMap<String, u64>>,
}

impl MemorySlots {
    /// No slot held.
    pub fn new() -> Self {
        Self::default()
    }
}

impl ConcurrencySlots for MemorySlots {
    fn acquire<'a>(
        &'a self,
        _id: &'a str,
        keys: &'a [(String, u64)],
    ) -> BoxFuture<'a, Result<Option<usize>, StateError>> {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let full = keys
            .iter()
            .position(|(key, limit)| held.get(key).copied().unwrap_or(0) >= *limit);
        if full.is_none() {
            for (key, _) in keys {
                *held.entry(key.clone()).or_default() += 1;
            }
        }
        Box::pin(std::future::ready(Ok(full)))
    }

    fn release<'a>(
        &'a self,
        _id: &'a str,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<(), StateError>> {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for key in keys {
            if let Some(count) = held.get_mut(key) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    held.remove(key);
                }
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Spend totals in this process.
#[derive(Default)]
pub struct MemorySpend {
    totals: Mutex<HashMap<String, (f64, Instant)>>,
}

impl MemorySpend {
    /// No total seeded.
    pub fn new() -> Self {
        Self::default()
    }
}

impl SpendTotals for MemorySpend {
    fn get<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Option<f64>>, StateError>> {
        let now = Instant::now();
        let totals = self
            .totals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let values = keys
            .iter()
            .map(|key| {
                totals
                    .get(key)
                    .filter(|(_, expires)| *expires > now)
                    .map(|(total, _)| *total)
            })
            .collect();
        Box::pin(std::future::ready(Ok(values)))
    }

    fn seed<'a>(
        &'a self,
        key: &'a str,
        total: f64,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        let now = Instant::now();
        let mut totals = self
            .totals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match totals.get(key) {
            Some((_, expires)) if *expires > now => {}
            _ => {
                totals.insert(key.to_owned(), (total, now + ttl));
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn add<'a>(
        &'a self,
        keys: &'a [String],
        amount: f64,
    ) -> BoxFuture<'a, Result<Vec<Option<f64>>, StateError>> {
        let now = Instant::now();
        let mut totals = self
            .totals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let values = keys
            .iter()
            .map(|key| match totals.get_mut(key) {
                Some((total, expires)) if *expires > now => {
                    *total += amount;
                    Some(*total)
                }
                _ => None,
            })
            .collect();
        Box::pin(std::future::ready(Ok(values)))
    }
}

// ---------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------

/// The sliding windows of one request, checked and charged atomically.
/// KEYS come in pairs: a sorted set of charges (score: time in ms,
/// member: "id:amount") and the running sum of its amounts. ARGV: the
/// request id, then per pair: window ms, limit, amount. Time is Redis's
/// own, so instances with skewed clocks still agree.
const CHARGE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = ARGV[1]
local n = #KEYS / 2
local sums = {}
local refused = 0
local retry = -1
for i = 1, n do
  local zkey, skey = KEYS[2 * i - 1], KEYS[2 * i]
  local window = tonumber(ARGV[3 * i - 1])
  local limit = tonumber(ARGV[3 * i])
  local amount = tonumber(ARGV[3 * i + 1])
  local expired = redis.call('ZRANGEBYSCORE', zkey, '-inf', now - window)
  local sum = tonumber(redis.call('GET', skey) or '0')
  for _, member in ipairs(expired) do
    sum = sum - tonumber(string.match(member, ':(%d+)$'))
  end
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', zkey, '-inf', now - window)
    if sum < 0 then sum = 0 end
    redis.call('SET', skey, sum, 'PX', window)
  end
  sums[i] = sum
  if refused == 0 and sum + amount > limit then
    refused = i
    if amount <= limit then
      local left = sum
      local entries = redis.call('ZRANGE', zkey, 0, -1, 'WITHSCORES')
      retry = 0
      for j = 1, #entries, 2 do
        left = left - tonumber(string.match(entries[j], ':(%d+)$'))
        if left + amount <= limit then
          retry = tonumber(entries[j + 1]) + window - now
          break
        end
      end
    end
  end
end
local out = {refused, retry}
for i = 1, n do
  local zkey, skey = KEYS[2 * i - 1], KEYS[2 * i]
  local window = tonumber(ARGV[3 * i - 1])
  local amount = tonumber(ARGV[3 * i + 1])
  local sum = sums[i]
  if refused == 0 then
    redis.call('ZADD', zkey, now, id .. ':' .. amount)
    sum = sum + amount
    redis.call('SET', skey, sum, 'PX', window)
    redis.call('PEXPIRE', zkey, window)
  end
  local newest = redis.call('ZRANGE', zkey, -1, -1, 'WITHSCORES')
  local reset = 0
  if #newest == 2 then reset = tonumber(newest[2]) + window - now end
  table.insert(out, sum)
  table.insert(out, reset)
end
return out
";

/// Replaces one charge's amount. KEYS: the sorted set and its sum.
/// ARGV: request id, charged amount, actual amount.
const ADJUST_SCRIPT: &str = r"
local old = ARGV[1] .. ':' .. ARGV[2]
local score = redis.call('ZSCORE', KEYS[1], old)
if not score then return 0 end
redis.call('ZREM', KEYS[1], old)
redis.call('ZADD', KEYS[1], score, ARGV[1] .. ':' .. ARGV[3])
local ttl = redis.call('PTTL', KEYS[1])
local sum = tonumber(redis.call('GET', KEYS[2]) or '0') - tonumber(ARGV[2]) + tonumber(ARGV[3])
if sum < 0 then sum = 0 end
if ttl > 0 then redis.call('SET', KEYS[2], sum, 'PX', ttl) else redis.call('SET', KEYS[2], sum) end
return 1
";

/// Takes one slot per key, or none. KEYS: sorted sets of holders (score:
/// lease expiry ms). ARGV: request id, lease ms, then each key's limit.
/// A lease bounds how long a crashed instance's slots stay taken.
const ACQUIRE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  if redis.call('ZCARD', KEYS[i]) >= tonumber(ARGV[2 + i]) then return i end
end
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], now + lease, ARGV[1])
  redis.call('PEXPIRE', KEYS[i], lease)
end
return 0
";

/// Sets a total unless it is set, noting when it was seeded (the caller's
/// clock, Unix ms) beside it.
const SPEND_SEED_SCRIPT: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
end
return 1
";

/// Adds an amount to each total (KEYS in pairs: total, its seed time)
/// that is set and was seeded before ARGV[2] (Unix ms; a plain add passes
/// the largest time there is).
const SPEND_ADD_OWED_SCRIPT: &str = r"
local out = {}
for i = 1, #KEYS, 2 do
  local seeded = tonumber(redis.call('GET', KEYS[i + 1]) or '0')
  if redis.call('EXISTS', KEYS[i]) == 1 and seeded < tonumber(ARGV[2]) then
    table.insert(out, redis.call('INCRBYFLOAT', KEYS[i], ARGV[1]))
  else
    table.insert(out, false)
  end
end
return out
";

/// Counters, slots and totals in Redis, shared by every instance that
/// points at the same server. Keys live under `prefix`.
#[derive(Clone)]
pub struct RedisCounters {
    connection: ConnectionManager,
    prefix: String,
    charge: std::sync::Arc<Script>,
    adjust: std::sync::Arc<Script>,
    acquire: std::sync::Arc<Script>,
    spend_seed: std::sync::Arc<Script>,
    spend_add_owed: std::sync::Arc<Script>,
    /// Longest a slot is held when its holder never gives it back.
    lease: Duration,
}

impl RedisCounters {
    /// Connects to `url`.
    pub async fn connect(url: &str, prefix: &str, lease: Duration) -> Result<Self, StateError> {
        let client = redis::Client::open(url)?;
        let connection = ConnectionManager::new_with_config(client, fail_fast()).await?;
        Ok(Self {
            connection,
            prefix: prefix.to_owned(),
            charge: std::sync::Arc::new(Script::new(CHARGE_SCRIPT)),
            adjust: std::sync::Arc::new(Script::new(ADJUST_SCRIPT)),
            acquire: std::sync::Arc::new(Script::new(ACQUIRE_SCRIPT)),
            spend_seed: std::sync::Arc::new(Script::new(SPEND_SEED_SCRIPT)),
            spend_add_owed: std::sync::Arc::new(Script::new(SPEND_ADD_OWED_SCRIPT)),
            lease,
        })
    }

    fn name(&self, key: &str, part: &str) -> String {
        format!("{}{key}{part}", self.prefix)
    }
}

/// While Redis is gone every request is refused (fail closed), so each
/// refusal must come at once: the client's defaults retry a lost
/// connection six times with growing pauses, about ten seconds a request.
/// One quick attempt per command; the manager reconnects on the next one.
fn fail_fast() -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(200))
        .set_connection_timeout(Some(Duration::from_millis(250)))
        .set_response_timeout(Some(Duration::from_millis(500)))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

fn duration_ms(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

impl WindowCounters for RedisCounters {
    fn charge<'a>(
        &'a self,
        id: &'a str,
        charges: &'a [WindowCharge],
    ) -> BoxFuture<'a, Result<WindowDecision, StateError>> {
        Box::pin(async move {
            let mut invocation = self.charge.prepare_invoke();
            invocation.arg(id);
            for charge in charges {
                invocation
                    .key(self.name(&charge.key, ":log"))
                    .key(self.name(&charge.key, ":sum"));
                invocation
                    .arg(millis(charge.window))
                    .arg(charge.limit)
                    .arg(charge.amount);
            }
            let mut connection = self.connection.clone();
            let out: Vec<i64> = invocation.invoke_async(&mut connection).await?;
            let refused = out.first().copied().unwrap_or(0);
            let retry = out.get(1).copied().unwrap_or(-1);
            let states = charges
                .iter()
                .enumerate()
                .map(|(i, charge)| {
                    let sum = out.get(2 + 2 * i).copied().unwrap_or(0);
                    let reset = out.get(3 + 2 * i).copied().unwrap_or(0);
                    WindowState {
                        limit: charge.limit,
                        remaining: charge.limit.saturating_sub(u64::try_from(sum).unwrap_or(0)),
                        reset: duration_ms(reset),
                    }
                })
                .collect();
            if refused == 0 {
                Ok(WindowDecision::Admitted(states))
            } else {
                Ok(WindowDecision::Refused {
                    index: usize::try_from(refused - 1).unwrap_or(0),
                    retry_after: (retry >= 0).then(|| duration_ms(retry)),
                    states,
                })
            }
        })
    }

    fn adjust<'a>(
        &'a self,
        id: &'a str,
        key: &'a str,
        charged: u64,
        actual: u64,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let _: i64 = self
                .adjust
                .key(self.name(key, ":log"))
                .key(self.name(key, ":sum"))
                .arg(id)
                .arg(charged)
                .arg(actual)
                .invoke_async(&mut connection)
                .await?;
            Ok(())
        })
    }
}

impl ConcurrencySlots for RedisCounters {
    fn acquire<'a>(
        &'a self,
        id: &'a str,
        keys: &'a [(String, u64)],
    ) -> BoxFuture<'a, Result<Option<usize>, StateError>> {
        Box::pin(async move {
            let mut invocation = self.acquire.prepare_invoke();
            invocation.arg(id).arg(millis(self.lease));
            for (key, limit) in keys {
                invocation.key(self.name(key, ":slots")).arg(*limit);
            }
            let mut connection = self.connection.clone();
            let full: i64 = invocation.invoke_async(&mut connection).await?;
            Ok((full > 0).then(|| usize::try_from(full - 1).unwrap_or(0)))
        })
    }

    fn release<'a>(
        &'a self,
        id: &'a str,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            for key in keys {
                pipe.zrem(self.name(key, ":slots"), id).ignore();
            }
            let mut connection = self.connection.clone();
            let () = pipe.query_async(&mut connection).await?;
            Ok(())
        })
    }
}

impl SpendTotals for RedisCounters {
    fn get<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Option<f64>>, StateError>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let names: Vec<String> = keys.iter().map(|k| self.name(k, ":spend")).collect();
            let mut connection = self.connection.clone();
            let values: Vec<Option<f64>> = redis::cmd("MGET")
                .arg(&names)
                .query_async(&mut connection)
                .await?;
            Ok(values)
        })
    }

    fn seed<'a>(
        &'a self,
        key: &'a str,
        total: f64,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            let seeded_at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            let mut invocation = self.spend_seed.prepare_invoke();
            invocation
                .key(self.name(key, ":spend"))
                .key(self.name(key, ":spend_seeded"))
                .arg(total)
                .arg(millis(ttl))
                .arg(seeded_at);
            let mut connection = self.connection.clone();
            let _: i64 = invocation.invoke_async(&mut connection).await?;
            Ok(())
        })
    }

    fn add<'a>(
        &'a self,
        keys: &'a [String],
        amount: f64,
    ) -> BoxFuture<'a, Result<Vec<Option<f64>>, StateError>> {
        // Every seed is older than a debt from the end of time.
        self.add_owed(keys, amount, i64::MAX)
    }

    fn add_owed<'a>(
        &'a self,
        keys: &'a [String],
        amount: f64,
        owed_at: i64,
    ) -> BoxFuture<'a, Result<Vec<Option<f64>>, StateError>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let mut invocation = self.spend_add_owed.prepare_invoke();
            for key in keys {
                invocation
                    .key(self.name(key, ":spend"))
                    .key(self.name(key, ":spend_seeded"));
            }
            invocation.arg(amount).arg(owed_at);
            let mut connection = self.connection.clone();
            let values: Vec<Option<f64>> = invocation.invoke_async(&mut connection).await?;
            Ok(values)
        })
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    fn charge(key: &str, limit: u64, amount: u64) -> WindowCharge {
        WindowCharge {
            key: key.into(),
            limit,
            amount,
            window: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_window_admits_exactly_its_limit_then_frees_as_charges_age() {
        let windows = MemoryWindows::new();
        let start = Instant::now();
        for i in 0..3 {
            let decision = windows.charge_now(&format!("r{i}"), &[charge("k", 3, 1)], start);
            assert!(matches!(decision, WindowDecision::Admitted(_)), "{i}");
        }
        let refused =
            windows.charge_now("r3", &[charge("k", 3, 1)], start + Duration::from_secs(59));
        let WindowDecision::Refused { retry_after, .. } = refused else {
            panic!("the fourth request in a minute must be refused");
        };
        assert_eq!(retry_after, Some(Duration::from_secs(1)));
        let later = windows.charge_now("r4", &[charge("k", 3, 1)], start + Duration::from_secs(60));
        assert!(matches!(later, WindowDecision::Admitted(_)));
    }

    #[test]
    fn charges_are_all_or_nothing() {
        let windows = MemoryWindows::new();
        let now = Instant::now();
        let both = [charge("key", 10, 1), charge("tenant", 1, 1)];
        assert!(matches!(
            windows.charge_now("a", &both, now),
            WindowDecision::Admitted(_)
        ));
        let decision = windows.charge_now("b", &both, now);
        let WindowDecision::Refused { index, states, .. } = decision else {
            panic!("the tenant window is full");
        };
        assert_eq!(index, 1);
        // The key's window was not charged for the refused request.
        assert_eq!(states[0].remaining, 9);
    }

    #[test]
    fn an_estimate_is_corrected_by_the_real_usage() {
        let windows = MemoryWindows::new();
        let now = Instant::now();
        let _ = windows.charge_now("a", &[charge("tpm", 1000, 900)], now);
        assert!(matches!(
            windows.charge_now("b", &[charge("tpm", 1000, 200)], now),
            WindowDecision::Refused { .. }
        ));
        windows.adjust("a", "tpm", 900, 100).now_or_never();
        let WindowDecision::Admitted(states) =
            windows.charge_now("b", &[charge("tpm", 1000, 200)], now)
        else {
            panic!("room was given back");
        };
        assert_eq!(states[0].remaining, 700);
    }

    #[test]
    fn a_charge_larger_than_the_limit_never_fits() {
        let windows = MemoryWindows::new();
        let decision = windows.charge_now("a", &[charge("tpm", 10, 11)], Instant::now());
        assert!(matches!(
            decision,
            WindowDecision::Refused {
                retry_after: None,
                ..
            }
        ));
    }

    #[test]
    fn slots_are_taken_and_given_back() {
        let slots = MemorySlots::new();
        let keys = [("k".to_owned(), 2)];
        let take = || {
            slots
                .acquire("x", &keys)
                .now_or_never()
                .and_then(Result::ok)
                .flatten()
        };
        assert_eq!(take(), None);
        assert_eq!(take(), None);
        assert_eq!(take(), Some(0));
        slots.release("x", &["k".to_owned()]).now_or_never();
        assert_eq!(take(), None);
    }
}
