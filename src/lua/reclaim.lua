-- Delete unlinked inodes once nothing holds them open.
-- ARGV: P, sid, holder (the session that recorded them), ino...  ->  {0, deleted}
local held = P .. 'session:' .. ARGV[3] .. ':held'
local deleted = 0
for i = 4, #ARGV do
  local ino = tonumber(ARGV[i])
  local r = rec(ino)
  if r and nlink(r) == 0 then
    delete_inode(ino)
    deleted = deleted + 1
  end
  redis.call('SREM', held, ino)
end
flush_stats()
return { 0, deleted }
