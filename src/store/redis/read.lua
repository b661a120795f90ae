-- The stored version, and the document only when it is newer than the caller's.
-- KEYS[1]: the state (a hash: version, doc); ARGV[1]: the version the caller applied.
-- Returns {version or nil, document or nil, the server's clock in milliseconds}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local version = redis.call('HGET', KEYS[1], 'version')
if version and tonumber(version) > tonumber(ARGV[1]) then
  return {version, redis.call('HGET', KEYS[1], 'doc'), now}
end
return {version, false, now}
