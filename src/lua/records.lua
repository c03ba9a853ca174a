-- ARGV: P, sid, ino...  ->  {0, record or nil, ...}
local out = { 0 }
for i = 3, #ARGV do out[i - 1] = rec(tonumber(ARGV[i])) end
return out
