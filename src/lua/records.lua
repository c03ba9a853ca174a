-- ARGV: P, sid, ino...  ->  {0, record or nil, ..., xattrs}
-- xattrs: one character per inode, '1' if it has extended attributes, so that a listing tells
-- the mount which inodes have none (`ls -l` asks each entry for two).
local out, xattrs = { 0 }, {}
for i = 3, #ARGV do
  local ino = tonumber(ARGV[i])
  local r = rec(ino)
  if r and is_dir(r) then unleased(ino) end
  out[i - 1] = r
  xattrs[i - 2] = tostring(redis.call('EXISTS', P .. 'x:' .. ino))
end
out[#ARGV] = table.concat(xattrs)
return out
