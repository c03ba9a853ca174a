-- ARGV: P, sid, parent, name, record, letter, ts, symlink_target  ->  {0, ino}
local parent = tonumber(ARGV[3])
local pr, err = live_dir(parent)
if not pr then return { err } end
local dir = P .. 'd:' .. parent
if redis.call('HEXISTS', dir, ARGV[4]) == 1 then return { E.EXIST } end
local ino = redis.call('INCR', P .. 'next:ino')
local kind = ARGV[6]
put(ino, ARGV[5])
redis.call('HSET', dir, ARGV[4], kind .. ino)
entry_changed(parent, ARGV[4])
if kind == 'l' then redis.call('SET', P .. 'l:' .. ino, ARGV[8]) end
pr = touch_mc(pr, ARGV[7])
if kind == 'd' then pr = set_nlink(pr, nlink(pr) + 1) end
put(parent, pr)
save()
stat_add('inodes', 1)
return { 0, ino }
