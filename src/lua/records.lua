-- ARGV: P, sid, flags, ino...  ->  {0, record or nil, ..., xattrs}
-- flags '1': xattrs follows, one character per inode, '1' if it has extended attributes, so
-- that a listing tells the mount which inodes have none (`ls -l` asks each entry for its ACL
-- where the filesystem keeps ACLs); '0': it does not (an EXISTS per inode saved).
-- Records are read a bucket at a time: a listing asks for its entries in inode order, and a
-- directory's entries were mostly made one after another, so neighbours share a bucket.
local FIELDS = {}
for f = 0, PER_BUCKET - 1 do FIELDS[f] = tostring(f) end
local out, xattrs, n = { 0 }, {}, #ARGV
local with_xattrs = ARGV[3] == '1'
local i = 4
while i <= n do
  local b = math.floor(tonumber(ARGV[i]) / PER_BUCKET)
  local fields, j = {}, i
  repeat
    local ino = tonumber(ARGV[j])
    if math.floor(ino / PER_BUCKET) ~= b then break end
    fields[#fields + 1] = FIELDS[ino % PER_BUCKET]
    j = j + 1
  until j > n
  local got = redis.call('HMGET', P .. 'i:' .. b, unpack(fields))
  for k = 1, #fields do
    local at, r = i + k - 1, got[k]
    if r and is_dir(r) then unleased(tonumber(ARGV[at])) end
    out[at - 2] = r
    if with_xattrs then xattrs[at - 3] = tostring(redis.call('EXISTS', P .. 'x:' .. ARGV[at])) end
  end
  i = j
end
if with_xattrs then out[n - 1] = table.concat(xattrs) end
return out
