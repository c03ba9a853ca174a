-- ARGV: P, sid, ino, name, ts  ->  {0}
local ino = tonumber(ARGV[3])
local r = rec(ino)
if not r then return { E.NOENT } end
if redis.call('HDEL', xattrs_key(ino), ARGV[4]) == 0 then return { E.NODATA } end
put(ino, touch_c(r, ARGV[5]))
xattrs_changed(ino)
save()
return { 0 }
