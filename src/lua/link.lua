-- ARGV: P, ino, new_parent, new_name, ts  ->  {0, record}
local ino, parent = tonumber(ARGV[2]), tonumber(ARGV[3])
local r = rec(ino)
if not r or nlink(r) == 0 then return { E.NOENT } end
if is_dir(r) then return { E.PERM } end
if nlink(r) >= 4294967295 then return { E.MLINK } end
local pr, err = live_dir(parent)
if not pr then return { err } end
local dir = P .. 'd:' .. parent
if redis.call('HEXISTS', dir, ARGV[4]) == 1 then return { E.EXIST } end
redis.call('HSET', dir, ARGV[4], letter(r) .. ino)
put(ino, touch_c(set_nlink(r, nlink(r) + 1), ARGV[5]))
put(parent, touch_mc(pr, ARGV[5]))
save()
return { 0, records[ino] }
