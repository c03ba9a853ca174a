-- ARGV: P, sid, count. Free up to count blocks of one queued large map.  ->  {0, freed}
local ino = redis.call('SRANDMEMBER', FREEING_KEY)
if not ino then return { 0, 0 } end
local map = freed_map_key(ino)
local want = tonumber(ARGV[3])
local fields, ids, cursor = {}, {}, '0'
repeat
  local res = redis.call('HSCAN', map, cursor, 'COUNT', want)
  cursor = res[1]
  for i = 1, #res[2], 2 do fields[#fields + 1] = res[2][i]; ids[#ids + 1] = res[2][i + 1] end
until cursor == '0' or #fields >= want
if #fields > 0 then
  for i = 1, #fields, 500 do redis.call('HDEL', map, unpack(fields, i, math.min(i + 499, #fields))) end
  delete_blocks(ids)
end
if redis.call('EXISTS', map) == 0 then redis.call('SREM', FREEING_KEY, ino) end
flush_stats()
return { 0, #fields }
