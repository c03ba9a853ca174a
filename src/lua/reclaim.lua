-- Delete unlinked inodes once nothing holds them open. ARGV: P, sid, ino...  ->  {0, deleted}
local held = P .. 'session:' .. ARGV[2] .. ':held'
local deleted = 0
for i = 3, #ARGV do
  local ino = tonumber(ARGV[i])
  local r = rec(ino)
  if r and nlink(r) == 0 then
    free_data(ino)
    redis.call('DEL', P .. 'd:' .. ino, P .. 'x:' .. ino, P .. 'l:' .. ino)
    redis.call('HDEL', bucket(ino), ino % PER_BUCKET)
    stat_add('inodes', -1)
    deleted = deleted + 1
  end
  redis.call('SREM', held, ino)
end
return { 0, deleted }
