-- A mount that has not heartbeaten since the cutoff is dead: delete the unlinked inodes it
-- held open and forget the session. Re-checked here, so a late heartbeat wins the race.
-- ARGV: P, sid, dead_sid, cutoff_ms  ->  {0, inodes deleted} or {0, -1} if it lives after all
local dead = ARGV[3]
local beat = redis.call('ZSCORE', P .. 'sessions', dead)
if beat and tonumber(beat) >= tonumber(ARGV[4]) then return { 0, -1 } end
local held = P .. 'session:' .. dead .. ':held'
local deleted = 0
for _, member in ipairs(redis.call('SMEMBERS', held)) do
  local ino = tonumber(member)
  local r = rec(ino)
  if r and nlink(r) == 0 then
    delete_inode(ino)
    deleted = deleted + 1
  end
end
redis.call('DEL', held, P .. 'session:' .. dead, P .. 'session:' .. dead .. ':replies')
redis.call('ZREM', P .. 'sessions', dead)
return { 0, deleted }
