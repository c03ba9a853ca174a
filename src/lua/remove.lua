-- unlink and rmdir. ARGV: P, sid, parent, name, want_dir (0/1), ts, closed  ->  {0, ino, orphaned}
-- closed: an inode the calling mount does not have open (0: none). If the removal takes the
-- last link of that very inode, it is deleted here; otherwise the mount's session holds it
-- (orphaned) until its last close.
local parent = tonumber(ARGV[3])
local pr, err = live_dir(parent)
if not pr then return { err } end
local e = redis.call('HGET', P .. 'd:' .. parent, ARGV[4])
if not e then return { E.NOENT } end
local kind, ino = split_entry(e)
if ARGV[5] == '1' then
  if kind ~= 'd' then return { E.NOTDIR } end
  if redis.call('EXISTS', P .. 'd:' .. ino) == 1 then return { E.NOTEMPTY } end
elseif kind == 'd' then
  return { E.ISDIR }
end
redis.call('HDEL', P .. 'd:' .. parent, ARGV[4])
entry_changed(parent, ARGV[4])
pr = touch_mc(pr, ARGV[6])
if kind == 'd' then pr = set_nlink(pr, nlink(pr) - 1) end
put(parent, pr)
local orphaned = 0
local r = rec(ino)
if r then
  local left = 0
  if kind ~= 'd' then left = nlink(r) - 1 end
  if left == 0 and tonumber(ARGV[7]) == ino then
    delete_inode(ino)
    events[#events + 1] = 'a' .. ino
  else
    put(ino, touch_c(set_nlink(r, left), ARGV[6]))
    if left == 0 then orphan(ino); orphaned = 1 end
  end
end
save()
return { 0, ino, orphaned }
