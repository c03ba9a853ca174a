-- Shared by every script (prepended by src/scripts.rs, after the layout it generates from the
-- Rust declarations: PREFIX, the filesystem's prefix, from ARGV[1]; a builder of every key
-- name, see src/keys.rs; E, errno values; S_IFMT, S_IFDIR, S_IFREG and LETTER, the file type bits and
-- their entry letters; PER_BUCKET, inode records per hash; AT, where each field of a record
-- begins, see src/attr.rs).
-- ARGV[2] is 'session:request:deadline:slot:uuid': the session id of the mount running the
-- script (0 for tools), the request's id (0: none), the same for every attempt of one request,
-- the time on this server's clock (ms) after which the request must not run, because its
-- caller gave up on it (0: none), on a Redis Cluster the hash slot of the metadata (else
-- empty), and the identity of the filesystem the mount serves (empty for tools).
-- Numbers are written into names and events by `decimal` (see src/keys.rs), never by `..`.
-- Inode records are packed as described in src/attr.rs; these helpers read and patch them
-- without unpacking the timestamps, which Lua's doubles could not hold exactly.
local SID, REQ, DEADLINE, META_SLOT, SERVING =
  string.match(ARGV[2], '^(%d+):(%d+):(%d+):(%d*):(.*)$')

-- While the metadata's slot moves to another node of a cluster (`redis-cli --cluster reshard`),
-- its keys are some here, some there: a script would read the ones gone as missing and write
-- beside them. Only the key a script declares is checked by Redis, so the script itself
-- refuses to run while the slot is being moved out of or into this node (CLUSTER NODES marks
-- it so on this node's own line), before it reads anything; the mount sends it again.
if META_SLOT ~= '' then
  local nodes = redis.call('CLUSTER', 'NODES')
  if string.find(nodes, '[' .. META_SLOT .. '->-', 1, true)
    or string.find(nodes, '[' .. META_SLOT .. '-<-', 1, true) then
    return redis.error_reply('TRYAGAIN the slot of the metadata (' .. META_SLOT ..
      ') is moving; if no resharding runs, redis-cli --cluster fix ends the move')
  end
end

-- A mount's filesystem can leave Redis under it (Redis restarted without its data, flushed),
-- and another mount may then make a new one under the same prefix: a script of the old mount
-- must not write into it, nor take what is missing for empty.
if SERVING ~= '' and redis.call('HGET', META_KEY, 'uuid') ~= SERVING then
  return redis.error_reply('GONE the filesystem served is no longer here')
end

local records, changed, events = {}, {}, {}

-- Change events, published on P..'events' by save() as one message: the session id, then
-- records separated by NUL bytes (names never contain NUL): 'a<ino>' attributes changed,
-- 'D<ino>:<record>' a directory's record changed, to these 64 bytes (which may hold NULs),
-- 'x<ino>' extended attributes changed, 'e<dir>/<name>' an entry changed, 'd<ino>' data
-- changed, 'd<ino>:<lo>:<hi>' blocks lo..hi.
local function entry_changed(dir, name) events[#events + 1] = 'e' .. decimal(dir) .. '/' .. name end
local function xattrs_changed(ino) events[#events + 1] = 'x' .. decimal(ino) end
local function data_changed(ino, lo, hi)
  if lo then events[#events + 1] = 'd' .. decimal(ino) .. ':' .. decimal(lo) .. ':' .. decimal(hi)
  else events[#events + 1] = 'd' .. decimal(ino) end
end

local function bucket(ino) return inodes_key(math.floor(ino / PER_BUCKET)) end
local function rec(ino)
  local r = records[ino]
  if r == nil then
    r = redis.call('HGET', bucket(ino), ino % PER_BUCKET)
    records[ino] = r
  end
  return r
end
local function put(ino, r) records[ino] = r; changed[ino] = true end
local function update(ino, f) local r = rec(ino); if r then put(ino, f(r)) end end
-- Counter changes are summed over the script and written once, by save() or flush_stats()
-- (a batch of unlinks would otherwise write each counter once per file).
-- The byte counters came after the first filesystems: one made before them has none until
-- redisfs-fsck counts its bytes, since counting on from nothing would give a wrong figure.
local stats = {}
local COUNTED_SINCE_FSCK = { stored_bytes = true, file_bytes = true }
local function stat_add(field, n) stats[field] = (stats[field] or 0) + n end
local function flush_stats()
  for field, n in pairs(stats) do
    if n ~= 0 and (not COUNTED_SINCE_FSCK[field] or redis.call('HEXISTS', STAT_KEY, field) == 1) then
      redis.call('HINCRBY', STAT_KEY, field, n)
    end
  end
  stats = {}
end

-- The server running the script, as its replication id: new at every promotion and restart
-- (see reserve.lua).
local function this_server()
  return string.match(redis.call('INFO', 'replication'), 'master_replid:(%x+)') or 'unknown'
end

local function splice(r, off, bytes) return string.sub(r, 1, off) .. bytes .. string.sub(r, off + #bytes + 1) end
local function mode(r) return (struct.unpack('<I2', r, AT.MODE + 1)) end
local function is_dir(r) return bit.band(mode(r), S_IFMT) == S_IFDIR end
-- A directory's record with its version counted one up; 0 means "not yet
-- counted" and is skipped when the count goes round (see src/attr.rs).
local function counted(r)
  local version = 0
  if #r >= AT.VERSION + 4 then version = struct.unpack('<I4', r, AT.VERSION + 1) end
  return string.sub(r, 1, AT.VERSION) .. struct.pack('<I4', version % 4294967295 + 1)
end
local function save()
  flush_stats()
  for ino in pairs(changed) do
    local r = records[ino]
    if is_dir(r) then
      r = counted(r)
      records[ino] = r
      events[#events + 1] = 'D' .. decimal(ino) .. ':' .. r
    else
      events[#events + 1] = 'a' .. decimal(ino)
    end
    redis.call('HSET', bucket(ino), ino % PER_BUCKET, r)
  end
  if #events > 0 then
    redis.call('PUBLISH', EVENTS_KEY, SID .. '\0' .. table.concat(events, '\0'))
  end
end
local function letter(r) return LETTER[bit.band(mode(r), S_IFMT)] end
local function nlink(r) return (struct.unpack('<I4', r, AT.NLINK + 1)) end
local function set_nlink(r, n) return splice(r, AT.NLINK, struct.pack('<I4', n)) end
local function size(r) return (struct.unpack('<I8', r, AT.SIZE + 1)) end
-- Sets a regular file's size (the only kind whose size is set), counted in `file_bytes`.
local function set_size(r, s)
  stat_add('file_bytes', s - size(r))
  return splice(r, AT.SIZE, struct.pack('<I8', s))
end
local function touch_mc(r, ts) return splice(r, AT.MTIME, ts .. ts) end
local function touch_c(r, ts) return splice(r, AT.CTIME, ts) end
-- Applies a change of attributes other than the size to record `r` (`mask` as setattr.lua's;
-- `ts` is the change time unless one is given, or unless only an access is recorded: then the
-- access time moves only if it still is `seen`, the one the access saw).
local function change_attrs(r, ts, mask, perm, uid, gid, atime, mtime, ctime, seen)
  local function has(b) return bit.band(mask, b) ~= 0 end
  if has(1) then
    r = splice(r, AT.MODE, struct.pack('<I2', bit.bor(bit.band(mode(r), S_IFMT), bit.band(perm, 4095))))
  end
  if has(2) then r = splice(r, AT.UID, struct.pack('<I4', uid)) end
  if has(4) then r = splice(r, AT.GID, struct.pack('<I4', gid)) end
  if has(16) and (not has(128) or string.sub(r, AT.ATIME + 1, AT.ATIME + #seen) == seen) then
    r = splice(r, AT.ATIME, atime)
  end
  if has(32) then r = splice(r, AT.MTIME, mtime) end
  if has(64) then r = splice(r, AT.CTIME, ctime) elseif not has(128) then r = touch_c(r, ts) end
  return r
end
-- A regular file's record ends with the number of blocks its map names (src/attr.rs): called
-- after every change of the map, it counts them there (a record without the count gains it).
local function count_blocks(ino, r)
  if bit.band(mode(r), S_IFMT) ~= S_IFREG then return r end
  return string.sub(r, 1, AT.TAIL) .. struct.pack('<I8', redis.call('HLEN', map_key(ino)))
end
local function parent_of(r) return (struct.unpack('<I8', r, AT.TAIL + 1)) end
local function set_parent(r, p) return splice(r, AT.TAIL, struct.pack('<I8', p)) end

local function split_entry(e) return string.sub(e, 1, 1), tonumber(string.sub(e, 2)) end
-- A directory leased to another mount may have changes that mount has not sent yet (see
-- src/meta/deferred.rs): the script stops before changing anything and names the holder, whose
-- caller asks it to hand the directory back and tries again. Tools and read-only mounts
-- (session 0) cannot ask, and read what Redis has.
local function unleased(dir)
  local holder = redis.call('HGET', LEASE_KEY, dir)
  if holder and holder ~= SID and SID ~= '0' then error({ err = 'LEASED ' .. decimal(dir) .. ' ' .. holder }) end
end
-- Reads the records of inodes `inos` (numbers) into `out`, false where there is none; with
-- `with_xattrs`, returns one character per inode, '1' if it has extended attributes (an
-- EXISTS each). A run of inodes sharing a bucket is read with one HMGET: listings ask in
-- inode order, and a directory's entries were mostly made one after another.
local function read_records(inos, with_xattrs, out)
  local xattrs, i, n = {}, 1, #inos
  while i <= n do
    local b = math.floor(inos[i] / PER_BUCKET)
    local fields, j = {}, i
    repeat
      if math.floor(inos[j] / PER_BUCKET) ~= b then break end
      fields[#fields + 1] = tostring(inos[j] % PER_BUCKET)
      j = j + 1
    until j > n
    local got = redis.call('HMGET', inodes_key(b), unpack(fields))
    for k = 1, #fields do
      local ino, r = inos[i + k - 1], got[k]
      if r and is_dir(r) then unleased(ino) end
      out[#out + 1] = r
      if with_xattrs then xattrs[#xattrs + 1] = tostring(redis.call('EXISTS', xattrs_key(ino))) end
    end
    i = j
  end
  return table.concat(xattrs)
end
local function live_dir(ino)
  unleased(ino)
  local r = rec(ino)
  if not r then return nil, E.NOENT end
  if not is_dir(r) then return nil, E.NOTDIR end
  if nlink(r) == 0 then return nil, E.NOENT end
  return r
end
-- The last link is gone: the removing session reclaims the inode once nothing holds it open.
local function orphan(ino) redis.call('SADD', session_held_key(SID), ino) end
-- Files open on each mount: 'session:<sid>:open' counts, per inode, the opens that mount
-- registered (one per inode it has open; a count may dip below zero for a moment, as its
-- changes may land out of order). A file removed while open on any mount keeps its data until
-- its last close there, or until that mount's session expires.
local function count_open(ino, n)
  -- A session that ended (unmounted, or expired) has nothing open any more.
  if not redis.call('ZSCORE', SESSIONS_KEY, SID) then return end
  if redis.call('HINCRBY', session_open_key(SID), ino, n) == 0 then redis.call('HDEL', session_open_key(SID), ino) end
end
-- Whether a mount (other than session `except`) has `ino` open or holds it until its last close.
local function kept_open(ino, except)
  for _, sid in ipairs(redis.call('ZRANGE', SESSIONS_KEY, 0, -1)) do
    if sid ~= except and (redis.call('HEXISTS', session_open_key(sid), ino) == 1
        or redis.call('SISMEMBER', session_held_key(sid), ino) == 1) then
      return true
    end
  end
  return false
end
-- A block stored by a mount (`bytes` long in Redis, as the mount that stored it says) becomes
-- the filesystem's: it is counted.
local function adopt_block(id, bytes)
  stat_add('blocks', 1)
  stat_add('stored_bytes', tonumber(bytes))
end
-- Scripts never touch a block: on a cluster blocks live on other nodes (see src/keys.rs). A
-- block no map names any more is queued in GARBAGE_KEY, 'c' if it was counted (the
-- filesystem's: its bytes leave `stored_bytes` when it is deleted) or 'u' if not (stored by a
-- call that lost a race); the mounts delete queued blocks in the background (garbage.lua).
-- A block queued already keeps its state (a run of a request replayed after its slot of the
-- ring was overwritten must not count a weighed block again, nor forget a counted one).
local function queue_garbage(ids, state)
  for _, id in ipairs(ids) do redis.call('HSETNX', GARBAGE_KEY, id, state) end
end
local function discard_block(id) queue_garbage({ id }, 'u') end
-- Deletes the blocks `ids` (counted: the filesystem's) and the keys `also`.
local function delete_blocks(ids, also)
  local keys = also or {}
  stat_add('blocks', -#ids)
  queue_garbage(ids, 'c')
  for i = 1, #keys, 500 do redis.call('DEL', unpack(keys, i, math.min(i + 499, #keys))) end
end
-- Frees the data of `ino` (record `r`, if it has one) and deletes the keys `also` with it. Small maps are
-- freed at once; large ones are queued so that no script runs for long. A file of at most
-- 512 KiB has at most 512 blocks whatever the block size, so its map is not counted first.
local function free_data(ino, r, also)
  local map = map_key(ino)
  if (not r or size(r) > 524288) and redis.call('HLEN', map) > 512 then
    redis.call('RENAME', map, freed_map_key(ino))
    redis.call('SADD', FREEING_KEY, ino)
    delete_blocks({}, also)
    return
  end
  local ids = redis.call('HVALS', map)
  if #ids > 0 then
    also = also or {}
    also[#also + 1] = map
  end
  delete_blocks(ids, also)
end
-- Deletes an inode whose last link is gone and that nothing holds open any more.
local function delete_inode(ino)
  local r = rec(ino)
  if r and is_dir(r) then
    local holder = redis.call('HGET', LEASE_KEY, ino)
    if holder then
      redis.call('HDEL', LEASE_KEY, ino)
      redis.call('SREM', session_leases_key(holder), ino)
    end
  end
  if r and bit.band(mode(r), S_IFMT) == S_IFREG then stat_add('file_bytes', -size(r)) end
  free_data(ino, r, { dir_key(ino), xattrs_key(ino), symlink_key(ino) })
  redis.call('HDEL', bucket(ino), ino % PER_BUCKET)
  records[ino], changed[ino] = false, nil
  stat_add('inodes', -1)
end
-- Enters a new inode `ino` (record, kind letter) as `name` in directory `parent`.
local function add_child(parent, name, kind, ino, record, ts, target)
  put(ino, record)
  redis.call('HSET', dir_key(parent), name, kind .. decimal(ino))
  entry_changed(parent, name)
  if kind == 'l' then redis.call('SET', symlink_key(ino), target) end
  local pr = touch_mc(rec(parent), ts)
  if kind == 'd' then pr = set_nlink(pr, nlink(pr) + 1) end
  put(parent, pr)
  stat_add('inodes', 1)
end
-- Leases a directory this session just created to it (see src/meta/deferred.rs).
local function lease(dir)
  redis.call('HSET', LEASE_KEY, dir, SID)
  redis.call('SADD', session_leases_key(SID), dir)
end
-- Removes the entry `name` (kind letter, inode) from `parent`. If that takes the inode's last
-- link and `closed` names it (the caller does not have it open), the inode is deleted, unless
-- another mount has it open (its last close there deletes it); if the caller has it open, a
-- last link gone leaves it held by this session. Returns 1 if it is held.
local function drop_child(parent, name, kind, ino, ts, closed)
  redis.call('HDEL', dir_key(parent), name)
  entry_changed(parent, name)
  local pr = touch_mc(rec(parent), ts)
  if kind == 'd' then pr = set_nlink(pr, nlink(pr) - 1) end
  put(parent, pr)
  local r = rec(ino)
  if not r then return 0 end
  local left = 0
  if kind ~= 'd' then left = nlink(r) - 1 end
  if left == 0 and closed == ino and not kept_open(ino, '') then
    delete_inode(ino)
    events[#events + 1] = 'a' .. decimal(ino)
    return 0
  end
  put(ino, touch_c(set_nlink(r, left), ts))
  if left == 0 and closed ~= ino then orphan(ino); return 1 end
  return 0
end
