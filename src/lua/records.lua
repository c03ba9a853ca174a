-- ARGV: P, sid, flags, ino...  ->  {0, record or nil, ..., xattrs}
-- flags '1': xattrs follows, one character per inode, '1' if it has extended attributes, so
-- that a listing tells the mount which inodes have none (`ls -l` asks each entry for its ACL
-- where the filesystem keeps ACLs); '0': it does not (an EXISTS per inode saved).
local inos = {}
for i = 4, #ARGV do inos[#inos + 1] = tonumber(ARGV[i]) end
local out = { 0 }
local xattrs = read_records(inos, ARGV[3] == '1', out)
if ARGV[3] == '1' then out[#out + 1] = xattrs end
return out
