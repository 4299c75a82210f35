"""The Lua scripts the cluster runs in Redis, and the key names they use (as data).

Every script reads the time from Redis ``TIME``, never from a node, so nodes with skewed
clocks agree on the minute. Keys live under one prefix (``tickerd:`` by default).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    """Key and channel names under ``prefix``."""

    prefix: str = "tickerd:"

    def weight(self, ip: str) -> str:
        """Per-IP weight windows: ``<this>:<window start ms>`` holds the weight granted."""
        return f"{self.prefix}w:{ip}"

    def ban(self, ip: str) -> str:
        """A ban: present (with its TTL) while ``ip`` is banned."""
        return f"{self.prefix}ban:{ip}"

    @property
    def snapshot(self) -> str:
        """Hash: symbol → ``"<price> <time_ms>"``, the book every node can reload."""
        return f"{self.prefix}book"

    @property
    def seq(self) -> str:
        """The book's sequence number, raised by one per published batch."""
        return f"{self.prefix}book:seq"

    @property
    def book_channel(self) -> str:
        return f"{self.prefix}book"

    @property
    def ban_channel(self) -> str:
        return f"{self.prefix}bans"

    @property
    def ops_channel(self) -> str:
        return f"{self.prefix}ops"

    @property
    def feed_lease(self) -> str:
        """Who runs the feeds: the member id, with the lease's TTL."""
        return f"{self.prefix}feeds:owner"


#: Grant weight to one worker. KEYS: weight base, ban key. ARGV: ask, limit, divisor,
#: window_ms. Returns {grant, granted_total, now_ms, window_start, ban_pttl}. The grant is
#: (limit - granted) / divisor, at least the ask, never past the limit: 0 when the ask does
#: not fit (the minute is spent).
LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[4])
local start = now - now % window
local ban = redis.call('PTTL', KEYS[2])
if ban > 0 then return {0, 0, now, start, ban} end
local key = KEYS[1] .. ':' .. start
local used = tonumber(redis.call('GET', key) or '0')
local ask = tonumber(ARGV[1])
local left = tonumber(ARGV[2]) - used
local grant = math.max(ask, math.floor(left / tonumber(ARGV[3])))
if grant > left then grant = left end
if grant < ask then return {0, used, now, start, 0} end
used = redis.call('INCRBY', key, grant)
redis.call('PEXPIRE', key, window * 2)
return {grant, used, now, start, 0}
"""

#: Add weight admitted while Redis was unreachable to the current window. KEYS: weight
#: base. ARGV: weight, window_ms. Returns the window's new total.
REGISTER = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
local key = KEYS[1] .. ':' .. (now - now % window)
local used = redis.call('INCRBY', key, tonumber(ARGV[1]))
redis.call('PEXPIRE', key, window * 2)
return used
"""

#: Publish a batch of ticks. KEYS: snapshot, seq. ARGV: channel, origin, payload (a JSON
#: array of [symbol, price, time_ms]). Snapshot, sequence number and message change in one
#: call; the payload is decoded here so the caller sends three arguments, not 2 per tick.
PUBLISH = """
local rows = cjson.decode(ARGV[3])
local fields = {}
for i, r in ipairs(rows) do
  fields[2 * i - 1] = r[1]
  fields[2 * i] = r[2] .. ' ' .. string.format('%.0f', r[3])
end
local seq = redis.call('INCR', KEYS[2])
if #fields > 0 then redis.call('HSET', KEYS[1], unpack(fields)) end
redis.call('PUBLISH', ARGV[1], seq .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])
return seq
"""

#: The snapshot with the sequence number it matches. KEYS: snapshot, seq.
SNAPSHOT = """
return {tonumber(redis.call('GET', KEYS[2]) or '0'), redis.call('HGETALL', KEYS[1])}
"""

#: Take or keep the feed lease. KEYS: lease. ARGV: member, ttl_ms. Returns 1 when the
#: member holds the lease afterwards.
LEASE_FEEDS = """
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return 1
end
if owner then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
return 1
"""

#: Give the feed lease up if held. KEYS: lease. ARGV: member.
RELEASE_FEEDS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

#: Ban an IP cluster-wide. KEYS: ban key. ARGV: duration_ms, ban channel, ip.
BAN = """
redis.call('SET', KEYS[1], '1', 'PX', tonumber(ARGV[1]))
redis.call('PUBLISH', ARGV[2], ARGV[3] .. ' ' .. ARGV[1])
return 1
"""
