-- ARGV: P, sid, parent, name, record, letter, ts, symlink_target, lease, opened, ino
--   ->  {0, ino, the parent's record after the change}
-- lease (1): a directory created leased to the calling session (see src/meta/deferred.rs).
-- opened (1): a file the calling mount opens (its open is registered, see prelude).
-- ino: a number from the range the mount reserved (reserve.lua).
local parent = tonumber(ARGV[3])
local _, err = live_dir(parent)
if err then return { err } end
if redis.call('HEXISTS', dir_key(parent), ARGV[4]) == 1 then return { E.EXIST } end
local ino = tonumber(ARGV[11])
-- (Numbers are reserved, never handed out twice: one in use means the counter went wrong.)
if rec(ino) then return { E.IO } end
add_child(parent, ARGV[4], ARGV[6], ino, ARGV[5], ARGV[7], ARGV[8])
if ARGV[6] == 'd' and ARGV[9] == '1' then lease(ino) end
if ARGV[10] == '1' then count_open(ino, 1) end
save()
return { 0, ino, rec(parent) }
