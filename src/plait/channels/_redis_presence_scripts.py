"""The Lua scripts of presence in Redis: each write is one of them, so a channel's hash,
its change number and what is published agree, and each sweep of a dead process's
entries is decided by one script (whoever removes an entry publishes its leave).

Keys and the published frame are described in ``_redis_presence.py``. Times come from
Redis's clock (``TIME``), so the processes' clocks play no part.
"""

from __future__ import annotations

__all__ = ("BEAT", "DEAD", "FORGET", "SWEEP", "WRITE")

_NOW = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
"""

# Number the change, publish it, and let a hash with no entry left expire. Expects the
# hash in KEYS[1], the topic in ARGV[1], ms to keep an empty hash in `keep`, and the
# tables `joins` and `leaves`.
_PUBLISH = """
local seq = 0
if #joins + #leaves > 0 then
  seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
  if redis.call('HLEN', KEYS[1]) == 1 then
    redis.call('PEXPIRE', KEYS[1], keep)
  else
    redis.call('PERSIST', KEYS[1])
  end
  redis.call('PUBLISH', ARGV[1], cjson.encode({seq, joins, leaves}))
end
"""

# KEYS: the channel's hash, this process's channels, the deadlines. ARGV: topic,
# channel, process, ttl ms, ms to keep an empty hash, "1" to remove every other entry of
# this process (reconcile), "1" if the process keeps entries here, n, then n pairs
# (ref, entry) to set, then refs to remove. Returns 1 if the process's deadline had
# passed (it may have been swept: reconcile everything), else 0.
WRITE = (
    _NOW
    + """
local deadline = redis.call('ZSCORE', KEYS[3], ARGV[3])
local lapsed = (not deadline) or tonumber(deadline) < ms
redis.call('ZADD', KEYS[3], ms + tonumber(ARGV[4]), ARGV[3])
local keep = ARGV[5]
local joins, leaves, adding = {}, {}, {}
local n = tonumber(ARGV[8])
local i = 9
for _ = 1, n do
  local ref, entry = ARGV[i], ARGV[i + 1]
  i = i + 2
  adding[ref] = true
  local old = redis.call('HGET', KEYS[1], ref)
  if old ~= entry then
    redis.call('HSET', KEYS[1], ref, entry)
    if old then leaves[#leaves + 1] = {ref, old} end
    joins[#joins + 1] = {ref, entry}
  end
end
for j = i, #ARGV do
  local ref = ARGV[j]
  local old = redis.call('HGET', KEYS[1], ref)
  if old and not adding[ref] then
    redis.call('HDEL', KEYS[1], ref)
    leaves[#leaves + 1] = {ref, old}
  end
end
if ARGV[6] == '1' then
  local prefix = ARGV[3] .. ':'
  for _, ref in ipairs(redis.call('HKEYS', KEYS[1])) do
    if not adding[ref] and string.sub(ref, 1, #prefix) == prefix then
      leaves[#leaves + 1] = {ref, redis.call('HGET', KEYS[1], ref)}
      redis.call('HDEL', KEYS[1], ref)
    end
  end
end
if ARGV[7] == '1' then
  redis.call('SADD', KEYS[2], ARGV[2])
else
  redis.call('SREM', KEYS[2], ARGV[2])
end
"""
    + _PUBLISH
    + """
if lapsed then return 1 end
return 0
"""
)

# KEYS: the deadlines. ARGV: process, ttl ms. Returns 1 if the deadline had passed.
BEAT = (
    _NOW
    + """
local deadline = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], ms + tonumber(ARGV[2]), ARGV[1])
if (not deadline) or tonumber(deadline) < ms then return 1 end
return 0
"""
)

# KEYS: the deadlines. The processes whose deadline passed.
DEAD = (
    _NOW
    + """
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('(%d', ms))
"""
)

# KEYS: the channel's hash, the dead process's channels, the deadlines. ARGV: topic,
# channel, the dead process, ms to keep an empty hash. Removes the process's entries
# from the channel unless its deadline moved on (it came back); returns how many.
SWEEP = (
    _NOW
    + """
local deadline = redis.call('ZSCORE', KEYS[3], ARGV[3])
if deadline and tonumber(deadline) >= ms then return -1 end
local keep = ARGV[4]
local prefix = ARGV[3] .. ':'
local joins, leaves = {}, {}
for _, ref in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(ref, 1, #prefix) == prefix then
    leaves[#leaves + 1] = {ref, redis.call('HGET', KEYS[1], ref)}
    redis.call('HDEL', KEYS[1], ref)
  end
end
redis.call('SREM', KEYS[2], ARGV[2])
"""
    + _PUBLISH
    + """
return #leaves
"""
)

# KEYS: the deadlines, the dead process's channels. ARGV: the dead process. Forgets it
# once it has no channel left, unless it came back.
FORGET = (
    _NOW
    + """
local deadline = redis.call('ZSCORE', KEYS[1], ARGV[1])
if deadline and tonumber(deadline) >= ms then return 0 end
if redis.call('SCARD', KEYS[2]) > 0 then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"""
)
