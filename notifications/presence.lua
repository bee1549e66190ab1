-- Presence (notifications/presence.py): write this instance's counts, return the feeds' totals.
-- ARGV: key prefix, instance id, ttl (s), number of (feed id, count) pairs to write (-1: read
-- only), the pairs, then the feed ids to total. Returns the totals in the order asked.
-- Instances are listed in <prefix>instances, scored by expiry on Redis's own clock.
local prefix, me, ttl, nwrite = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local index = prefix .. 'instances'
local i = 5
if nwrite >= 0 then
  local key = prefix .. me
  redis.call('DEL', key)
  if nwrite > 0 then
    for _ = 1, nwrite do
      redis.call('HSET', key, ARGV[i], ARGV[i + 1])
      i = i + 2
    end
    redis.call('EXPIRE', key, ttl)
    redis.call('ZADD', index, now + ttl, me)
    redis.call('EXPIRE', index, ttl)
  else
    redis.call('ZREM', index, me)
  end
end
redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
local n = #ARGV - i + 1
local totals = {}
for k = 1, n do totals[k] = 0 end
if n > 0 then
  for _, id in ipairs(redis.call('ZRANGE', index, 0, -1)) do
    local counts = redis.call('HMGET', prefix .. id, unpack(ARGV, i))
    for k = 1, n do
      if counts[k] then totals[k] = totals[k] + tonumber(counts[k]) end
    end
  end
end
return totals
