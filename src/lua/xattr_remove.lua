-- ARGV: P, ino, name, ts  ->  {0}
local ino = tonumber(ARGV[2])
local r = rec(ino)
if not r then return { E.NOENT } end
if redis.call('HDEL', P .. 'x:' .. ino, ARGV[3]) == 0 then return { E.NODATA } end
put(ino, touch_c(r, ARGV[4]))
save()
return { 0 }
