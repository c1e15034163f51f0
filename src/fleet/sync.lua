-- Local mode: this instance's counts in, the others' out (switchyard sync v1).
-- KEYS[i]: one limit's hash (field: instance, value: "count:Redis ms").
-- ARGV[1]: instance, ARGV[2]: a count older than this (ms) is gone,
-- ARGV[2 + i]: this instance's count for KEYS[i].
-- Returns, per key, the sum of the other instances' fresh counts.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local me, stale = ARGV[1], tonumber(ARGV[2])
local out = {}
for i, key in ipairs(KEYS) do
  redis.call('HSET', key, me, ARGV[2 + i] .. ':' .. now)
  redis.call('PEXPIRE', key, 120000)
  local all = redis.call('HGETALL', key)
  local others, gone = 0, {}
  for j = 1, #all, 2 do
    if all[j] ~= me then
      local n, at = string.match(all[j + 1], '^(%d+):(%d+)$')
      if n == nil or now - tonumber(at) > stale then
        gone[#gone + 1] = all[j]
      else
        others = others + tonumber(n)
      end
    end
  end
  if #gone > 0 then redis.call('HDEL', key, unpack(gone)) end
  out[i] = others
end
return out
