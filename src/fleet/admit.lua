-- One strict admission, all-or-nothing (switchyard admit v1).
-- KEYS[i]: one limit. ARGV[1]: lease id, ARGV[2]: lease ttl (ms); then per
-- key three values: kind ('r' requests, 't' tokens, 'c' concurrency),
-- limit, amount.
-- 'r' and 't': a hash of one-second buckets (field: Redis second) summed
-- over the last 60 seconds. 'c': a sorted set of leases scored by expiry.
-- Times are Redis's (TIME): the instances' clocks never matter.
-- Returns {0, second, left1, reset1, left2, reset2, ...} when admitted,
-- {i, wait_ms} when KEYS[i] is full, {i, -1} when it asks more than its limit.
local t = redis.call('TIME')
local sec = tonumber(t[1])
local now = sec * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease, ttl = ARGV[1], tonumber(ARGV[2])
local used, resets = {}, {}
for i, key in ipairs(KEYS) do
  local kind = ARGV[3 * i]
  local limit = tonumber(ARGV[3 * i + 1])
  local amount = tonumber(ARGV[3 * i + 2])
  if kind == 'c' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    local held = redis.call('ZCARD', key)
    if held + amount > limit then
      if held > 0 then redis.call('PEXPIRE', key, ttl * 2) end
      return {i, 0}
    end
    used[i], resets[i] = held, 0
  else
    if amount > limit then return {i, -1} end
    local all = redis.call('HGETALL', key)
    local sum, old, buckets = 0, {}, {}
    for j = 1, #all, 2 do
      local b, n = tonumber(all[j]), tonumber(all[j + 1]) or 0
      if b == nil or b <= sec - 60 then
        old[#old + 1] = all[j]
      else
        sum = sum + n
        buckets[#buckets + 1] = {b, n}
      end
    end
    if #old > 0 then redis.call('HDEL', key, unpack(old)) end
    table.sort(buckets, function(a, b) return a[1] < b[1] end)
    if sum + amount > limit then
      local left, wait = sum, 1000
      for _, bn in ipairs(buckets) do
        left = left - bn[2]
        if left + amount <= limit then
          wait = (bn[1] + 60) * 1000 - now
          break
        end
      end
      return {i, math.max(wait, 1)}
    end
    local first = buckets[1] and buckets[1][1] or sec
    used[i], resets[i] = sum, math.max((first + 60) * 1000 - now, 0)
  end
end
local out = {0, sec}
for i, key in ipairs(KEYS) do
  local kind = ARGV[3 * i]
  local limit = tonumber(ARGV[3 * i + 1])
  local amount = tonumber(ARGV[3 * i + 2])
  if kind == 'c' then
    redis.call('ZADD', key, now + ttl, lease)
    redis.call('PEXPIRE', key, ttl * 2)
  else
    redis.call('HINCRBY', key, t[1], ARGV[3 * i + 2])
    redis.call('PEXPIRE', key, 61000)
  end
  out[#out + 1] = limit - used[i] - amount
  out[#out + 1] = resets[i]
end
return out
