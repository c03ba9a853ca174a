-- A mount closed files, or no longer holds unlinked ones: delete each inode that has no link
-- left and that no mount has open or holds any more.
-- ARGV: P, sid, holder (the session whose held set recorded them), then per inode 'r<ino>'
-- (the calling mount's last handle of it closed: its registered open ends) or '<ino>' (held)
--   ->  {0, deleted}
local held = session_held_key(ARGV[3])
local deleted = 0
for i = 4, #ARGV do
  local closing = string.sub(ARGV[i], 1, 1) == 'r'
  local ino = tonumber(closing and string.sub(ARGV[i], 2) or ARGV[i])
  if closing then count_open(ino, -1) end
  redis.call('SREM', held, ino)
  local r = rec(ino)
  if r and nlink(r) == 0 and not kept_open(ino, '') then
    delete_inode(ino)
    deleted = deleted + 1
  end
end
flush_stats()
return { 0, deleted }
