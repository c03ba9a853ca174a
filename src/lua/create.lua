-- ARGV: P, parent, name, record, letter, ts, symlink_target  ->  {0, ino}
local parent = tonumber(ARGV[2])
local pr, err = live_dir(parent)
if not pr then return { err } end
local dir = P .. 'd:' .. parent
if redis.call('HEXISTS', dir, ARGV[3]) == 1 then return { E.EXIST } end
local ino = redis.call('INCR', P .. 'next:ino')
local kind = ARGV[5]
put(ino, ARGV[4])
redis.call('HSET', dir, ARGV[3], kind .. ino)
if kind == 'l' then redis.call('SET', P .. 'l:' .. ino, ARGV[7]) end
pr = touch_mc(pr, ARGV[6])
if kind == 'd' then pr = set_nlink(pr, nlink(pr) + 1) end
put(parent, pr)
save()
stat_add('inodes', 1)
return { 0, ino }
