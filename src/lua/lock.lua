-- Byte-range locks of one inode, shared by every mount (fcntl locks, and flock as whole-file
-- locks). Each holder '<sid>:<owner>' keeps a list 'type start end pid;' (end -1: no end).
-- ARGV: P, sid, ino, owner, type (0 read, 1 write, 2 unlock), start, end, pid, test (1: F_GETLK)
--   ->  {0} done, {EAGAIN} held by another; with test: {0, type, start, end, pid}, type 2: free
local ino, owner = ARGV[3], ARGV[4]
local key = P .. 'lk:' .. ino
local me = SID .. ':' .. owner
local want, from, to, pid = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
local test = ARGV[9] == '1'
local function parse(v)
  local out = {}
  for t, s, e, p in string.gmatch(v, '(%d+) (%d+) (%-?%d+) (%d+);') do
    out[#out + 1] = { tonumber(t), tonumber(s), tonumber(e), p }
  end
  return out
end
local function overlap(s1, e1, s2, e2) return (e1 < 0 or s2 <= e1) and (e2 < 0 or s1 <= e2) end

local all = redis.call('HGETALL', key)
if want ~= 2 then
  for i = 1, #all, 2 do
    if all[i] ~= me then
      for _, l in ipairs(parse(all[i + 1])) do
        if overlap(l[2], l[3], from, to) and (l[1] == 1 or want == 1) then
          if test then return { 0, l[1], l[2], l[3], tonumber(l[4]) } end
          return { E.AGAIN }
        end
      end
    end
  end
end
if test then return { 0, 2, 0, 0, 0 } end

-- The new lock replaces whatever this holder had over the range (POSIX semantics).
local kept = {}
for i = 1, #all, 2 do
  if all[i] == me then
    for _, l in ipairs(parse(all[i + 1])) do
      if not overlap(l[2], l[3], from, to) then
        kept[#kept + 1] = l
      else
        if l[2] < from then kept[#kept + 1] = { l[1], l[2], from - 1, l[4] } end
        if to >= 0 and (l[3] < 0 or l[3] > to) then kept[#kept + 1] = { l[1], to + 1, l[3], l[4] } end
      end
    end
  end
end
if want ~= 2 then kept[#kept + 1] = { want, from, to, pid } end
if #kept == 0 then
  redis.call('HDEL', key, me)
else
  local parts = {}
  for _, l in ipairs(kept) do parts[#parts + 1] = string.format('%d %d %d %s;', l[1], l[2], l[3], l[4]) end
  redis.call('HSET', key, me, table.concat(parts))
  redis.call('SADD', P .. 'session:' .. SID .. ':locks', ino)
end
return { 0 }
