-- ARGV: P, ino...  ->  {0, record or nil, ...}
local out = { 0 }
for i = 2, #ARGV do out[i] = rec(tonumber(ARGV[i])) end
return out
