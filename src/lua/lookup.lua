-- ARGV: P, sid, parent, name  ->  {0, ino, record}
local pr, err = live_dir(tonumber(ARGV[3]))
if not pr then return { err } end
local e = redis.call('HGET', dir_key(ARGV[3]), ARGV[4])
if not e then return { E.NOENT } end
local _, ino = split_entry(e)
if not ino then return { E.IO } end
local r = rec(ino)
if not r then return { E.NOENT } end
return { 0, ino, r }
