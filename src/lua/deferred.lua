-- Applies a batch of a mount's deferred changes in leased directories (see src/meta/deferred.rs),
-- in order, all checked before any is applied (a script is not rolled back), then hands back
-- the directories other mounts recalled.
-- ARGV: P, sid, recalled dirs (space-separated), then per change: op, parent, name, ino,
-- record, ts; op is a kind letter (create), 'u' (unlink of a file this mount does not have
-- open), 'h' (unlink of a file it has open: its session holds the file until its last close)
-- 'r' (rmdir of an empty directory leased here) or 'a' (a change of attributes of the leased
-- directory `parent`, which is `ino`; no name; the record is the change, see `attr_change`).
--   ->  {0, 1 if Redis is over its maxmemory} or {errno, index of the change at fault}
-- Run with allow-oom (src/scripts.rs): these changes were answered already, and must land even
-- when Redis is full; the mount then stops deferring creates.
local FIRST, WIDTH = 4, 6
local n = (#ARGV - FIRST + 1) / WIDTH
-- What the batch has done so far to names and leases, seen by the later checks, and the
-- parents already found live and leased here (nothing before the batch's end changes that).
local names, born, kinds, added, held, moot = {}, {}, {}, {}, {}, {}
local function count(dir, n) added[dir] = (added[dir] or 0) + n end
-- A change of attributes as Delegation::change_dir packs it: setattr.lua's mask, the mode bits,
-- uid and gid (each 4 bytes, little-endian), then the access, modification and change times
-- and the access time an access saw.
local function attr_change(r, ts, packed)
  local mask, perm, uid, gid = struct.unpack('<I4I4I4I4', packed)
  local width = (#packed - 16) / 4
  local function time(k) return string.sub(packed, 17 + k * width, 16 + (k + 1) * width) end
  return change_attrs(r, ts, mask, perm, uid, gid, time(0), time(1), time(2), time(3))
end
local function entry_now(parent, name)
  local e = names[decimal(parent) .. '/' .. name]
  if e == nil then e = redis.call('HGET', dir_key(parent), name) or false end
  return e
end
for i = 0, n - 1 do
  local at = FIRST + i * WIDTH
  local op, parent, name, ino = ARGV[at], tonumber(ARGV[at + 1]), ARGV[at + 2], tonumber(ARGV[at + 3])
  if op == 'a' then
    -- A directory removed since (its lease went with it): the change has nothing to change.
    if not born[ino] and (redis.call('HGET', LEASE_KEY, ino) ~= SID or not rec(ino)) then moot[i] = true end
  elseif not born[parent] and not held[parent] then
    if redis.call('HGET', LEASE_KEY, parent) ~= SID then return { E.PERM, i } end
    local _, err = live_dir(parent)
    if err then return { err, i } end
    held[parent] = true
  end
  local e = op ~= 'a' and entry_now(parent, name)
  if op == 'u' or op == 'h' or op == 'r' then
    if not e then return { E.NOENT, i } end
    local kind, named = split_entry(e)
    if (kind == 'd') ~= (op == 'r') or named ~= ino then return { E.NOENT, i } end
    if op == 'r' then
      if not born[ino] and redis.call('HGET', LEASE_KEY, ino) ~= SID then return { E.PERM, i } end
      if redis.call('HLEN', dir_key(ino)) + (added[ino] or 0) ~= 0 then return { E.NOTEMPTY, i } end
    end
    kinds[i] = kind
    names[decimal(parent) .. '/' .. name] = false
    count(parent, -1)
  elseif op ~= 'a' then
    if e then return { E.EXIST, i } end
    if rec(ino) then return { E.EXIST, i } end
    names[decimal(parent) .. '/' .. name] = op .. decimal(ino)
    count(parent, 1)
    if op == 'd' then born[ino] = true end
  end
end
for i = 0, n - 1 do
  local at = FIRST + i * WIDTH
  local op, parent, name, ino, ts = ARGV[at], tonumber(ARGV[at + 1]), ARGV[at + 2], tonumber(ARGV[at + 3]), ARGV[at + 5]
  if op == 'a' then
    if not moot[i] then put(ino, attr_change(rec(ino), ts, ARGV[at + 4])) end
  elseif op == 'u' or op == 'h' or op == 'r' then
    local closed = ino
    if op == 'h' then closed = 0 end
    drop_child(parent, name, kinds[i], ino, ts, closed)
  else
    add_child(parent, name, op, ino, ARGV[at + 4], ts, '')
    if op == 'd' then lease(ino) end
  end
end
for dir in string.gmatch(ARGV[3], '%d+') do
  if redis.call('HGET', LEASE_KEY, dir) == SID then
    redis.call('HDEL', LEASE_KEY, dir)
    redis.call('SREM', session_leases_key(SID), dir)
  end
end
save()
local memory = redis.call('INFO', 'memory')
local used = tonumber(string.match(memory, 'used_memory:(%d+)'))
local limit = tonumber(string.match(memory, 'maxmemory:(%d+)'))
if limit and limit > 0 and used >= limit then return { 0, 1 } end
return { 0, 0 }
