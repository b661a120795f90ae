-- Compare-and-set of the guard state with its audit records and a change notice, in one
-- atomic step: nothing is stored unless everything is.
-- KEYS[1]: the state (a hash: version, doc); KEYS[2]: the audit stream.
-- ARGV[1]: the new version; ARGV[2]: the new document; ARGV[3]: the change channel;
-- ARGV[4]: about how many audit records the stream keeps; ARGV[5]: the latest moment the
-- change may be stored, in milliseconds on the server's clock (past it, the caller gave up and
-- told its sender that nothing changed); ARGV[6..]: audit records (JSON).
-- Returns {1, version, ''} when stored, {0, stored version, stored document} when the stored
-- version is not lower than the new one, {2, '', ''} when too late.
local t = redis.call('TIME')
if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(ARGV[5]) then
  return {2, '', ''}
end
local stored = redis.call('HGET', KEYS[1], 'version')
if stored and tonumber(stored) >= tonumber(ARGV[1]) then
  return {0, stored, redis.call('HGET', KEYS[1], 'doc') or ''}
end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'doc', ARGV[2])
for i = 6, #ARGV do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'record', ARGV[i])
end
redis.call('PUBLISH', ARGV[3], ARGV[1])
return {1, ARGV[1], ''}
