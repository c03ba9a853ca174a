-- unlink and rmdir. ARGV: P, sid, parent, name, want_dir (0/1), ts, closed  ->  {0, ino, orphaned}
-- closed: an inode the calling mount does not have open (0: none). If the removal takes the
-- last link of that very inode, it is deleted here; otherwise the mount's session holds it
-- (orphaned) until its last close.
local parent = tonumber(ARGV[3])
local _, err = live_dir(parent)
if err then return { err } end
local e = redis.call('HGET', dir_key(parent), ARGV[4])
if not e then return { E.NOENT } end
local kind, ino = split_entry(e)
if ARGV[5] == '1' then
  if kind ~= 'd' then return { E.NOTDIR } end
  unleased(ino)
  if redis.call('EXISTS', dir_key(ino)) == 1 then return { E.NOTEMPTY } end
elseif kind == 'd' then
  return { E.ISDIR }
end
local orphaned = drop_child(parent, ARGV[4], kind, ino, ARGV[6], tonumber(ARGV[7]))
save()
return { 0, ino, orphaned }
