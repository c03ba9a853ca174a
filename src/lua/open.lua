-- An open of inode ino by a mount that did not have it open (register 1: counted in its
-- session's open files, see prelude), or its registration alone, for a file it has open.
-- ARGV: P, sid, ino, register (0/1)  ->  {0, record} or {NOENT}
local ino = tonumber(ARGV[3])
local r = rec(ino)
if not r then return { E.NOENT } end
if ARGV[4] == '1' then count_open(ino, 1) end
return { 0, r }
