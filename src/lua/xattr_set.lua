-- ARGV: P, sid, ino, name, value, flags (1 create only, 2 replace only), ts  ->  {0}
local ino = tonumber(ARGV[3])
local r = rec(ino)
if not r then return { E.NOENT } end
local key = xattrs_key(ino)
local exists = redis.call('HEXISTS', key, ARGV[4]) == 1
if ARGV[6] == '1' and exists then return { E.EXIST } end
if ARGV[6] == '2' and not exists then return { E.NODATA } end
redis.call('HSET', key, ARGV[4], ARGV[5])
put(ino, touch_c(r, ARGV[7]))
xattrs_changed(ino)
save()
return { 0 }
