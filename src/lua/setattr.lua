-- ARGV: P, sid, ino, ts, mask, mode, uid, gid, atime, mtime, ctime, size, block_size,
--       tail_index, tail_old, tail_new, tail_new's length in Redis, seen   ->  {0, record}
-- mask bits: 1 mode, 2 uid, 4 gid, 8 size, 16 atime, 32 mtime, 64 ctime, 128 an access recorded
-- (atime is set only if it still is `seen`, the one the access saw; ctime stays).
-- On a size cut that ends inside a block, the caller passes that block re-written with zeros
-- past the new end (tail_new, stored before on this node) in place of tail_old; a lost race
-- answers EAGAIN.
local ino, ts, mask = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local function drop_new_tail() if ARGV[16] ~= '0' then discard_block(ARGV[16]) end end
local r = rec(ino)
if not r then drop_new_tail(); return { E.NOENT } end
if is_dir(r) then unleased(ino) end
local function has(b) return bit.band(mask, b) ~= 0 end
if has(8) then
  if is_dir(r) then drop_new_tail(); return { E.ISDIR } end
  local new, bs, map = tonumber(ARGV[12]), tonumber(ARGV[13]), map_key(ino)
  if new < size(r) then
    if ARGV[14] ~= '' then
      local cur = redis.call('HGET', map, ARGV[14]) or '0'
      if cur ~= ARGV[15] then drop_new_tail(); return { E.AGAIN } end
      if ARGV[16] ~= '0' then
        redis.call('HSET', map, ARGV[14], ARGV[16])
        adopt_block(ARGV[16], ARGV[17])
      else
        redis.call('HDEL', map, ARGV[14])
      end
      if cur ~= '0' then delete_blocks({ cur }) end
    end
    if new == 0 then
      free_data(ino, r)
    else
      local keep = math.ceil(new / bs)
      local all = redis.call('HGETALL', map)
      local fields, ids = {}, {}
      for i = 1, #all, 2 do
        if tonumber(all[i]) >= keep then fields[#fields + 1] = all[i]; ids[#ids + 1] = all[i + 1] end
      end
      for i = 1, #fields, 500 do
        redis.call('HDEL', map, unpack(fields, i, math.min(i + 499, #fields)))
      end
      delete_blocks(ids)
    end
    r = count_blocks(ino, r)
  else
    drop_new_tail()
  end
  -- A size change is a change of the data: mtime too (an explicit one, below, wins).
  if new ~= size(r) then data_changed(ino); r = touch_mc(r, ts) end
  r = set_size(r, new)
end
local before = r
r = change_attrs(r, ts, mask, tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9], ARGV[10], ARGV[11], ARGV[18])
-- An access whose time was changed since it saw it changes nothing: nothing to write or tell.
if mask == 16 + 128 and r == before then return { 0, r } end
put(ino, r)
save()
return { 0, records[ino] }
