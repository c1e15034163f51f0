-- Per-model pacing across the fleet (switchyard pace v1).
-- KEYS[1]: the model's next free start (Redis ms). ARGV[1]: interval (ms),
-- ARGV[2]: the longest wait the caller takes (ms).
-- Returns the wait (ms) booked, or -(wait) when it is longer: nothing booked.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2])
local start = math.max(tonumber(redis.call('GET', KEYS[1]) or 0) or 0, now)
local wait = start - now
if wait > max_wait then return -wait - 1 end
redis.call('SET', KEYS[1], start + interval, 'PX', wait + interval + 1000)
return wait
