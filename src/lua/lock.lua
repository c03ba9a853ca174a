-- Locks of one inode, shared by every mount: fcntl byte-range locks, and flock locks (whole
-- file), which are independent of each other as on Linux: each conflicts only with its own
-- kind. Each holder keeps a list 'type start end pid;' (end -1: no end) under its field:
-- '<sid>:<owner>' for fcntl locks, '<sid>:<owner>:f' for flock.
-- ARGV: P, sid, ino, owner, type (0 read, 1 write, 2 unlock), start, end, pid, test (1: F_GETLK),
--       kinds ('p' fcntl, 'f' flock; 'pf' with an unlock: both, as at a last close)
--   ->  {0} done, {EAGAIN} held by another; with test: {0, type, start, end, pid}, type 2: free
local ino, owner = ARGV[3], ARGV[4]
local key = locks_key(ino)
local want, from, to, pid = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
local test, kinds = ARGV[9] == '1', ARGV[10]
local function holder(kind)
  if kind == 'f' then return SID .. ':' .. owner .. ':f' end
  return SID .. ':' .. owner
end
local function of_kind(field, kind) return (string.sub(field, -2) == ':f') == (kind == 'f') end
if #kinds ~= 1 and want ~= 2 then return { E.INVAL } end
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
  local me = holder(kinds)
  for i = 1, #all, 2 do
    if all[i] ~= me and of_kind(all[i], kinds) then
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

-- The new lock replaces whatever this holder had over the range (POSIX semantics; a flock
-- converts the holder's whole-file lock).
local function place(me)
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
    redis.call('SADD', session_locks_key(SID), ino)
  end
end
for kind in string.gmatch(kinds, '.') do place(holder(kind)) end
return { 0 }
