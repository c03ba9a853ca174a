-- A mount that has not heartbeaten since the cutoff is dead: delete the unlinked inodes it
-- held or had open (unless another mount still has them open), release its locks and the
-- directories leased to it (what it had not sent of their changes is lost, as a crashed disk
-- loses what was not written) and forget the session. Re-checked here, so a late heartbeat wins the race. A mount ending cleanly expires
-- itself the same way.
-- The ring of replies is kept for ARGV[5] ms more (0: deleted): a mount that was only cut off
-- may still be retrying requests that ran, and must find their replies rather than run them
-- again.
-- ARGV: P, sid, dead_sid, cutoff_ms, keep_replies_ms
--   ->  {0, inodes deleted} or {0, -1} if it lives after all
local dead = ARGV[3]
local beat = redis.call('ZSCORE', SESSIONS_KEY, dead)
if beat and tonumber(beat) >= tonumber(ARGV[4]) then return { 0, -1 } end
local held, opened = session_held_key(dead), session_open_key(dead)
local deleted = 0
local function release(member)
  local ino = tonumber(member)
  local r = rec(ino)
  if r and nlink(r) == 0 and not kept_open(ino, dead) then
    delete_inode(ino)
    deleted = deleted + 1
  end
end
for _, member in ipairs(redis.call('SMEMBERS', held)) do release(member) end
for _, member in ipairs(redis.call('HKEYS', opened)) do release(member) end
local locks = session_locks_key(dead)
for _, ino in ipairs(redis.call('SMEMBERS', locks)) do
  local key = locks_key(ino)
  local all = redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, #dead + 1) == dead .. ':' then redis.call('HDEL', key, all[i]) end
  end
end
local leases = session_leases_key(dead)
for _, dir in ipairs(redis.call('SMEMBERS', leases)) do
  if redis.call('HGET', LEASE_KEY, dir) == dead then redis.call('HDEL', LEASE_KEY, dir) end
end
redis.call('DEL', held, opened, locks, leases, session_key(dead))
local replies = session_replies_key(dead)
if ARGV[5] == '0' then redis.call('DEL', replies) else redis.call('PEXPIRE', replies, ARGV[5]) end
redis.call('ZREM', SESSIONS_KEY, dead)
flush_stats()
return { 0, deleted }
