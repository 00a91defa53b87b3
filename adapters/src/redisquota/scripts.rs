//! The Lua scripts that count quota in Redis, and the arguments they take.
//!
//! Each call runs one script atomically (Redis runs scripts one at a time), so any number
//! of servers sharing a Redis never grant more than the limit between them. Scripts are
//! sent with `EVALSHA` and loaded on `NOSCRIPT` (`redis::Script`), so a restarted Redis
//! is reloaded on first use.
//!
//! Redis' Lua numbers are doubles: integers are exact only up to 2^53, and Unix times
//! in nanoseconds (~1.7·10^18) are not. Mixer did its time arithmetic in Lua and lost a
//! few hundred nanoseconds at window edges. Here the caller does all time arithmetic in
//! 64-bit integers and passes:
//!
//! * times as 20-digit zero-padded decimal strings, which the scripts only compare (as
//!   two exact 10-digit halves) and store;
//! * bucket indexes (`floor(now / bucket)`), which stay below 2^53 for buckets of 1 µs
//!   or more;
//! * amounts, which validation keeps at or below 2^53 − 1.
//!
//! Scripts return `{amount, valid_until, remaining}`: `amount > 0` units granted, valid
//! until the time `valid_until`; `0` nothing granted; `amount < 0` that many units
//! released. `remaining` (the units the counter has left) comes with grants and refusals
//! counted now, not with releases or with the replay of a remembered result.
//!
//! Keys (as Mixer): `<key>.meta` (hash), `<key>.data` (sorted set, rolling window only),
//! `<dedup id>-<key>.meta` (hash: the result of a request, for retries).

use redis::Script;

use crate::memquota::window::WindowSpec;

/// Largest integer Lua counts exactly.
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// Extra lifetime given to keys beyond the time they are needed, so that a key never
/// disappears (Redis measures its TTL on its own clock) while a server still counts on it.
const TTL_MARGIN_MS: i64 = 1_000;

/// Helpers shared by both scripts.
const PRELUDE: &str = r#"
-- An integer as exact decimal text (tostring would use "%.14g").
local function int(n)
  return string.format('%d', n)
end

-- Whether s is a time as the caller writes it: 20 decimal digits.
local function is_time(s)
  return type(s) == 'string' and string.len(s) == 20 and string.find(s, '^%d+$') ~= nil
end

-- a < b for two times, compared as two 10-digit halves (each exact in a double).
local function before(a, b)
  local ah, bh = tonumber(string.sub(a, 1, 10)), tonumber(string.sub(b, 1, 10))
  if ah ~= bh then
    return ah < bh
  end
  return tonumber(string.sub(a, 11)) < tonumber(string.sub(b, 11))
end

-- A result remembered for retries of the same request, until `expire`.
local function remember(key, amount, expire, ttl)
  if key then
    redis.call('HSET', key, 'token', int(amount), 'expire', expire)
    redis.call('PEXPIRE', key, ttl)
  end
end

-- The remembered result of this request, if any and still valid at `now`.
local function replay(key, now)
  if not key then
    return nil
  end
  local prev = redis.call('HMGET', key, 'token', 'expire')
  local amount = tonumber(prev[1])
  if amount and is_time(prev[2]) and before(now, prev[2]) then
    return {amount, prev[2]}
  end
  return nil
end
"#;

/// FIXED_WINDOW. `KEYS`: meta, [dedup]. `ARGV`: max, amount, best effort (`1`/`0`),
/// now, now + window, key TTL (ms).
///
/// A window starts with the first request after the previous one ended (not aligned to
/// the clock) and lasts `validDuration`; it grants at most `max` units.
const FIXED_WINDOW_BODY: &str = r#"
local meta, dedup = KEYS[1], KEYS[2]
local max = tonumber(ARGV[1])
local amount = tonumber(ARGV[2])
local best_effort = ARGV[3] == '1'
local now, new_expire, ttl = ARGV[4], ARGV[5], ARGV[6]

local previous = replay(dedup, now)
if previous then
  return previous
end

local state = redis.call('HMGET', meta, 'token', 'expire')
local used = tonumber(state[1])
local expire = state[2]
local live = used ~= nil and is_time(expire) and before(now, expire)

if amount < 0 then
  -- Release (not in Mixer): give back up to -amount units of the live window.
  local released = 0
  if live then
    released = math.min(-amount, used)
    if released > 0 then
      redis.call('HSET', meta, 'token', int(used - released))
    end
  else
    expire = new_expire
  end
  remember(dedup, -released, expire, ttl)
  return {-released, '0'}
end

if not live then
  used = 0
  expire = new_expire
  redis.call('HSET', meta, 'token', '0', 'expire', expire)
  redis.call('PEXPIRE', meta, ttl)
end

local available = max - used
local granted
if amount <= available then
  granted = amount
elseif best_effort and available > 0 then
  granted = available
else
  -- Denials are not remembered (Mixer): a retry is evaluated again.
  return {0, '0', math.max(available, 0)}
end
redis.call('HSET', meta, 'token', int(used + granted))
remember(dedup, granted, expire, ttl)
return {granted, expire, math.max(available - granted, 0)}
"#;

/// ROLLING_WINDOW. `KEYS`: meta, data, [dedup]. `ARGV`: max, amount, best effort,
/// now, now + window, key TTL (ms), current bucket index, newest expired bucket index.
///
/// The same algorithm and state as [`crate::memquota::window::RollingWindow`]: `token`
/// (units counted), `bucket` / `bucket.token` (the bucket new units are charged to) in
/// the meta hash, and older buckets in the sorted set (score: bucket index, member:
/// `<index>:<units>`).
const ROLLING_WINDOW_BODY: &str = r#"
local meta, data, dedup = KEYS[1], KEYS[2], KEYS[3]
local max = tonumber(ARGV[1])
local amount = tonumber(ARGV[2])
local best_effort = ARGV[3] == '1'
local now, grant_expire, ttl = ARGV[4], ARGV[5], ARGV[6]
local current, expired = tonumber(ARGV[7]), tonumber(ARGV[8])

local previous = replay(dedup, now)
if previous then
  return previous
end

local function units(member)
  return tonumber(string.sub(member, string.find(member, ':', 1, true) + 1))
end
local function index(member)
  return string.sub(member, 1, string.find(member, ':', 1, true) - 1)
end

local state = redis.call('HMGET', meta, 'token', 'bucket', 'bucket.token')
local used, bucket, bucket_units = tonumber(state[1]), tonumber(state[2]), tonumber(state[3])
if not used or not bucket or not bucket_units then
  -- No state (first use, expired, or evicted): older buckets whose total is gone
  -- cannot be accounted for, so they go too.
  redis.call('DEL', data)
  used, bucket, bucket_units = 0, current, 0
end

-- A newer bucket: the current one joins the older ones. (A clock behind the newest
-- bucket keeps charging the newest bucket, so nothing is freed early.)
if current > bucket then
  if bucket_units > 0 then
    redis.call('ZADD', data, int(bucket), int(bucket) .. ':' .. int(bucket_units))
  end
  bucket, bucket_units = current, 0
end

-- Units of expired buckets are returned.
local gone = redis.call('ZRANGEBYSCORE', data, '-inf', int(expired))
if #gone > 0 then
  for _, member in ipairs(gone) do
    used = used - units(member)
  end
  redis.call('ZREMRANGEBYSCORE', data, '-inf', int(expired))
  if used < 0 then
    used = 0
  end
end

local result, valid_until
if amount < 0 then
  -- Release (not in Mixer's script; as memquota): newest units first.
  local wanted = -amount
  local released = math.min(wanted, bucket_units)
  bucket_units = bucket_units - released
  if released < wanted then
    local older = redis.call('ZREVRANGE', data, 0, -1)
    for _, member in ipairs(older) do
      if released >= wanted then
        break
      end
      local n = units(member)
      local take = math.min(wanted - released, n)
      redis.call('ZREM', data, member)
      if n > take then
        redis.call('ZADD', data, index(member), index(member) .. ':' .. int(n - take))
      end
      released = released + take
    end
  end
  used = used - released
  result, valid_until = -released, '0'
else
  local available = max - used
  local granted = 0
  if amount <= available then
    granted = amount
  elseif best_effort and available > 0 then
    granted = available
  end
  used = used + granted
  bucket_units = bucket_units + granted
  if granted > 0 then
    result, valid_until = granted, grant_expire
  else
    result, valid_until = 0, '0'
  end
end

redis.call('HSET', meta, 'token', int(used), 'bucket', int(bucket), 'bucket.token', int(bucket_units))
redis.call('PEXPIRE', meta, ttl)
redis.call('PEXPIRE', data, ttl)
-- Denials are not remembered (Mixer): a retry is evaluated again.
if result ~= 0 or amount < 0 then
  remember(dedup, result, grant_expire, ttl)
end
if amount < 0 then
  return {result, valid_until}
end
return {result, valid_until, math.max(max - used, 0)}
"#;

/// Both scripts, compiled once per handler (hashing the source).
pub struct Scripts {
    pub fixed: Script,
    pub rolling: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            fixed: Script::new(&format!("{PRELUDE}{FIXED_WINDOW_BODY}")),
            rolling: Script::new(&format!("{PRELUDE}{ROLLING_WINDOW_BODY}")),
        }
    }
}

/// How one quota counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    Fixed { window: i64 },
    Rolling(WindowSpec),
}

impl Window {
    pub fn length(&self) -> i64 {
        match self {
            Window::Fixed { window } => *window,
            Window::Rolling(spec) => spec.window,
        }
    }
}

/// One script call, fully computed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub keys: Vec<Vec<u8>>,
    pub args: Vec<String>,
    pub rolling: bool,
    /// The limit counted against, and its window's length (ns), for the answer's budget.
    pub max: i64,
    pub window: i64,
}

/// A time as the scripts take it.
pub fn time_arg(unix_nanos: i64) -> String {
    format!("{:020}", unix_nanos.max(0))
}

impl Call {
    /// The call for `requested` units (non-zero) of a counter `key` with limit `max`.
    pub fn new(
        key: &[u8],
        dedup_id: &str,
        window: Window,
        max: i64,
        requested: i64,
        best_effort: bool,
        now: i64,
    ) -> Call {
        let mut meta = key.to_vec();
        meta.extend_from_slice(b".meta");
        // Scripts count exactly below 2^53. Nothing above `max` can be granted anyway, so
        // a larger request is the same as `max + 1`; releases are capped likewise.
        let amount = if requested > 0 {
            requested.min(max.saturating_add(1)).min(MAX_SAFE_INTEGER)
        } else {
            requested.max(-MAX_SAFE_INTEGER)
        };
        let length = window.length();
        let ttl_ms = length / 1_000_000 + i64::from(length % 1_000_000 != 0) + TTL_MARGIN_MS;
        let mut args = vec![
            max.to_string(),
            amount.to_string(),
            if best_effort { "1" } else { "0" }.to_owned(),
            time_arg(now),
            time_arg(now.saturating_add(length)),
            ttl_ms.to_string(),
        ];
        let mut keys = vec![meta.clone()];
        let rolling = match window {
            Window::Fixed { .. } => false,
            Window::Rolling(spec) => {
                let mut data = key.to_vec();
                data.extend_from_slice(b".data");
                keys.push(data);
                let (current, expired) = spec.indexes(now.max(0));
                args.push(current.to_string());
                args.push(expired.to_string());
                true
            }
        };
        // Mixer's scripts skipped deduplication for an empty id.
        if !dedup_id.is_empty() {
            let mut dedup = Vec::with_capacity(dedup_id.len() + 1 + meta.len());
            dedup.extend_from_slice(dedup_id.as_bytes());
            dedup.push(b'-');
            dedup.extend_from_slice(&meta);
            keys.push(dedup);
        }
        Call {
            keys,
            args,
            rolling,
            max,
            window: length,
        }
    }
}

/// A script's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// > 0 granted, 0 nothing, < 0 released.
    pub amount: i64,
    /// When a grant stops being valid (Unix ns); 0 when not a grant.
    pub valid_until: i64,
    /// Units the counter has left, when the script counted this request.
    pub remaining: Option<i64>,
}

/// Reads a script's reply; `Err` describes an unexpected one.
pub fn parse_answer(value: &redis::Value) -> Result<Answer, String> {
    let redis::Value::Array(items) = value else {
        return Err(format!("expected a two-element array, got {value:?}"));
    };
    let (amount, until, remaining) = match items.as_slice() {
        [redis::Value::Int(amount), until] => (amount, until, None),
        [redis::Value::Int(amount), until, redis::Value::Int(left)] => (amount, until, Some(*left)),
        _ => {
            return Err(format!(
                "expected [amount, valid_until] or [amount, valid_until, remaining], got {value:?}"
            ));
        }
    };
    let until = match until {
        redis::Value::BulkString(b) => std::str::from_utf8(b).ok(),
        redis::Value::SimpleString(s) => Some(s.as_str()),
        _ => None,
    }
    .and_then(|s| s.parse::<i64>().ok())
    .ok_or_else(|| format!("expected a time as text, got {until:?}"))?;
    Ok(Answer {
        amount: *amount,
        valid_until: until,
        remaining,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_call_arguments() {
        let spec = WindowSpec {
            window: 2_000_000_000,
            bucket: 500_000_000,
        };
        let now = 1_700_000_000_250_000_000;
        let c = Call::new(b"q;d=x", "req1q", Window::Rolling(spec), 10, 3, true, now);
        assert_eq!(
            c.keys,
            vec![
                b"q;d=x.meta".to_vec(),
                b"q;d=x.data".to_vec(),
                b"req1q-q;d=x.meta".to_vec()
            ]
        );
        assert_eq!(
            c.args,
            [
                "10",
                "3",
                "1",
                "01700000000250000000",
                "01700000002250000000",
                "3000",
                "3400000000",
                "3399999996"
            ]
        );
        assert!(c.rolling);
        // Fixed window, no dedup id, an oversized request and a sub-millisecond window.
        let c = Call::new(
            b"k",
            "",
            Window::Fixed { window: 1_500_001 },
            7,
            i64::MAX,
            false,
            now,
        );
        assert_eq!(c.keys, vec![b"k.meta".to_vec()]);
        assert_eq!(c.args[1], "8");
        assert_eq!(c.args[5], "1002");
        let c = Call::new(
            b"k",
            "",
            Window::Fixed { window: 1 },
            7,
            i64::MIN,
            false,
            now,
        );
        assert_eq!(c.args[1], (-MAX_SAFE_INTEGER).to_string());
    }

    #[test]
    fn quota_script_replies() {
        use redis::Value;
        let ok = Value::Array(vec![
            Value::Int(3),
            Value::BulkString(b"01700000002250000000".to_vec()),
        ]);
        assert_eq!(
            parse_answer(&ok),
            Ok(Answer {
                amount: 3,
                valid_until: 1_700_000_002_250_000_000,
                remaining: None,
            })
        );
        let counted = Value::Array(vec![
            Value::Int(0),
            Value::BulkString(b"0".to_vec()),
            Value::Int(4),
        ]);
        assert_eq!(
            parse_answer(&counted),
            Ok(Answer {
                amount: 0,
                valid_until: 0,
                remaining: Some(4),
            })
        );
        assert!(
            parse_answer(&Value::Array(vec![
                Value::Int(1),
                Value::BulkString(b"0".to_vec()),
                Value::BulkString(b"4".to_vec())
            ]))
            .is_err()
        );
        assert!(parse_answer(&Value::Int(1)).is_err());
        assert!(parse_answer(&Value::Array(vec![Value::Int(1)])).is_err());
        assert!(
            parse_answer(&Value::Array(vec![
                Value::Int(1),
                Value::BulkString(b"soon".to_vec())
            ]))
            .is_err()
        );
    }
}
