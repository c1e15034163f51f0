-- One change of a key's shared state, all-or-nothing.
-- KEYS[1]: the key's state (JSON). ARGV: op (cool | park | reset),
-- until_ms, model ('' = the whole key), reason, park_until_ms (0 = none),
-- channel, instance.
-- Cooldowns only move later; a park is taken over; a reset clears both and
-- marks itself (`resets`) so every instance applies it once. `seq` orders
-- every change. Both only grow and are at least Redis's clock in ms, so
-- they keep growing across a Redis restart that lost the state. Model
-- cooldowns already over are dropped (Redis TIME).
local raw = redis.call('GET', KEYS[1])
local s = {cool = 0, models = {}, resets = 0, seq = 0}
if raw then
  local ok, d = pcall(cjson.decode, raw)
  if ok and type(d) == 'table' then s = d end
end
if type(s.models) ~= 'table' then s.models = {} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op = ARGV[1]
local until_ms = tonumber(ARGV[2]) or 0
if op == 'cool' then
  if ARGV[3] == '' then
    if until_ms > (tonumber(s.cool) or 0) then s.cool = until_ms end
  elseif until_ms > (tonumber(s.models[ARGV[3]]) or 0) then
    s.models[ARGV[3]] = until_ms
  end
  s.reason = ARGV[4]
elseif op == 'park' then
  local park_until = tonumber(ARGV[5]) or 0
  s.park = {reason = ARGV[4]}
  if park_until > 0 then s.park.until_ms = park_until end
elseif op == 'reset' then
  s.cool = 0
  s.models = {}
  s.park = nil
  s.reason = nil
  s.resets = math.max((tonumber(s.resets) or 0) + 1, now)
else
  return redis.error_reply('unknown op')
end
if type(s.park) == 'table' and (tonumber(s.park.until_ms) or now + 1) <= now then
  s.park = nil -- its time is over
end
local kept = {}
for m, u in pairs(s.models) do
  if (tonumber(u) or 0) > now then kept[m] = u end
end
s.models = kept
s.seq = math.max((tonumber(s.seq) or 0) + 1, now)
redis.call('SET', KEYS[1], cjson.encode(s))
redis.call('PUBLISH', ARGV[6], KEYS[1] .. '\n' .. ARGV[7])
return {s.seq, s.resets}
