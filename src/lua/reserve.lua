-- Reserves `count` numbers of a counter for the caller: inode numbers for its creates, block
-- ids, a session id. The only script that counts (format.lua starts the counters).
-- ARGV: P, sid, counter ('inode', 'block' or 'session'), count  ->  {0, the last number}
--
-- Numbers handed out by a counter (inodes, blocks, sessions) must never be handed out twice,
-- yet a primary that dies, or a server restarted from its files, can have handed out numbers
-- that its successor never heard of while mounts still hold and use them. The first count on
-- a server other than the one that counted last (a replication id changes with every
-- promotion and restart) therefore moves the counter on: to where the server's clock says a
-- counter handing out at most `per_ms` numbers a millisecond since 2026 would be, and at least
-- a second's worth past where it is. A successor that lost even that move (its predecessor
-- died before passing anything on) moves from a later time, past what the predecessor can have
-- handed out in its life. A filesystem made before the record of issuers moves on once.
local EPOCH_MS = 1767225600000
local COUNTERS = {
  inode = { key = NEXT_INODE_KEY, per_ms = 1024 },
  block = { key = NEXT_BLOCK_KEY, per_ms = 1024 },
  session = { key = NEXT_SESSION_KEY, per_ms = 1 },
}
local function issue(name, n)
  local counter, server = COUNTERS[name], this_server()
  if redis.call('HGET', ISSUERS_KEY, name) ~= server then
    local t = redis.call('TIME')
    local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - EPOCH_MS
    local at = tonumber(redis.call('GET', counter.key) or '0')
    local moved = math.max(ms * counter.per_ms, at + 1000 * counter.per_ms)
    redis.call('SET', counter.key, string.format('%.0f', moved))
    redis.call('HSET', ISSUERS_KEY, name, server)
  end
  return redis.call('INCRBY', counter.key, n)
end
if not COUNTERS[ARGV[3]] then return { E.INVAL } end
return { 0, issue(ARGV[3], tonumber(ARGV[4])) }
