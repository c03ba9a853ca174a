-- An unnamed regular file in directory parent (O_TMPFILE): no entry and no link; held by the
-- calling session until its last close deletes it, unless a link (linkat) names it first.
-- ARGV: P, sid, parent, record, ino (reserved by the mount, see reserve.lua)  ->  {0, ino}
local parent = tonumber(ARGV[3])
local _, err = live_dir(parent)
if err then return { err } end
local ino = tonumber(ARGV[5])
if rec(ino) then return { E.IO } end
put(ino, set_nlink(ARGV[4], 0))
stat_add('inodes', 1)
orphan(ino)
save()
return { 0, ino }
