-- ARGV: P, ino, name, value, flags (1 create only, 2 replace only), ts  ->  {0}
local ino = tonumber(ARGV[2])
local r = rec(ino)
if not r then return { E.NOENT } end
local key = P .. 'x:' .. ino
local exists = redis.call('HEXISTS', key, ARGV[3]) == 1
if ARGV[5] == '1' and exists then return { E.EXIST } end
if ARGV[5] == '2' and not exists then return { E.NODATA } end
redis.call('HSET', key, ARGV[3], ARGV[4])
put(ino, touch_c(r, ARGV[6]))
save()
return { 0 }
