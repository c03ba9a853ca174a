-- ARGV: P, sid, ino, new_parent, new_name, ts, unnamed  ->  {0, record}
-- unnamed (1): ino is an unnamed file (O_TMPFILE) the caller holds; linking names it, and it is
-- held no more. Any other inode without a link cannot be linked again.
local ino, parent = tonumber(ARGV[3]), tonumber(ARGV[4])
local r = rec(ino)
if not r or nlink(r) == 0 and ARGV[7] ~= '1' then return { E.NOENT } end
if is_dir(r) then return { E.PERM } end
if nlink(r) >= 4294967295 then return { E.MLINK } end
local pr, err = live_dir(parent)
if not pr then return { err } end
local dir = dir_key(parent)
if redis.call('HEXISTS', dir, ARGV[5]) == 1 then return { E.EXIST } end
redis.call('HSET', dir, ARGV[5], letter(r) .. decimal(ino))
if nlink(r) == 0 then redis.call('SREM', session_held_key(SID), ino) end
entry_changed(parent, ARGV[5])
put(ino, touch_c(set_nlink(r, nlink(r) + 1), ARGV[6]))
put(parent, touch_mc(pr, ARGV[6]))
save()
return { 0, records[ino] }
