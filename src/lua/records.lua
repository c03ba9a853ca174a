-- ARGV: P, sid, ino...  ->  {0, record or nil, ...}
local out = { 0 }
for i = 3, #ARGV do
  local ino = tonumber(ARGV[i])
  local r = rec(ino)
  if r and is_dir(r) then unleased(ino) end
  out[i - 1] = r
end
return out
