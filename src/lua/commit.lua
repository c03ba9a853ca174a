-- Swap block-map entries written by a mount. ARGV: P, sid, ino, ts, end_size, then quadruples
-- (index, expected_old_id, new_id, the new block's length in Redis); id 0 means "no block" (a
-- hole).  ->  {0, record, lost...}
-- The new blocks are stored before (see Store::script_after_blocks): a script never touches a
-- block. An entry that no longer holds expected_old_id is not touched; its index is returned so
-- the writer re-reads it and tries again, and its new block is queued for deletion here.
local ino = tonumber(ARGV[3])
local r = rec(ino)
local map = map_key(ino)
local lost, won, lo, hi = {}, 0, nil, nil
for i = 6, #ARGV, 4 do
  local idx, old, new = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local cur = r and (redis.call('HGET', map, idx) or '0')
  if cur == new and cur ~= old then
    -- A run of this same request that happened already (its reply lost with its session's
    -- ring) left the entry as this one would: done. Not reported lost, so that the caller,
    -- which deletes the new blocks of lost entries, never deletes one the map names.
  elseif cur ~= old then
    if new ~= '0' then discard_block(new) end
    lost[#lost + 1] = idx
  else
    if new == '0' then redis.call('HDEL', map, idx) else redis.call('HSET', map, idx, new) end
    if old ~= '0' then delete_blocks({ old }) end
    if new ~= '0' then adopt_block(new, ARGV[i + 3]) end
    won = won + 1
    local n = tonumber(idx)
    if lo == nil or n < lo then lo = n end
    if hi == nil or n > hi then hi = n end
  end
end
if not r then return { E.NOENT } end
if won > 0 then
  local target = tonumber(ARGV[5])
  if target > size(r) then r = set_size(r, target) end
  if ARGV[4] ~= '' then r = touch_mc(r, ARGV[4]) end
  r = count_blocks(ino, r)
  put(ino, r)
  data_changed(ino, lo, hi)
  save()
end
local out = { 0, r }
for i = 1, #lost do out[#out + 1] = lost[i] end
return out
