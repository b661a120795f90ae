-- A replica says it is alive and learns who else is: one hash field per replica, with its
-- expiry (on the server's clock) in front of its description. Expired ones are dropped.
-- KEYS[1]: the replicas hash; ARGV[1]: this replica's id; ARGV[2]: its description (JSON);
-- ARGV[3]: how long it counts as alive without another announce, in milliseconds.
-- Returns the descriptions of every live replica.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], (now + ttl) .. ' ' .. ARGV[2])
local live = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local space = string.find(all[i + 1], ' ', 1, true)
  local expires = space and tonumber(string.sub(all[i + 1], 1, space - 1))
  if expires and expires >= now then
    table.insert(live, string.sub(all[i + 1], space + 1))
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
redis.call('PEXPIRE', KEYS[1], ttl * 10)
return live
