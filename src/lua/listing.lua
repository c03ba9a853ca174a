-- ARGV: P, sid, dir, whole, most, flags  ->  {0, record, entries[, records, xattrs]}
--                                          or {0, record, count}
-- A directory's record and its entries (name, value pairs, as HGETALL gives them); past
-- `whole` entries, only how many there are (the mount then reads them in pieces, HSCAN, so
-- that no reply holds a huge directory at once). If it has at most `most` entries, they come
-- in inode order, followed by their records in that order and, with flags '1', by their
-- extended-attribute marks (see records.lua): a small directory's listing with the
-- attributes readdirplus needs costs one round trip. Not if an entry does not parse: the
-- mount then reads what it can by itself.
local dir = tonumber(ARGV[3])
unleased(dir)
local r = rec(dir)
if not r then return { E.NOENT } end
if not is_dir(r) then return { E.NOTDIR } end
local count = redis.call('HLEN', dir_key(dir))
if count > tonumber(ARGV[4]) then return { 0, r, count } end
local flat = redis.call('HGETALL', dir_key(dir))
local n = #flat / 2
if n == 0 or n > tonumber(ARGV[5]) then return { 0, r, flat } end
local order = {}
for k = 1, n do
  local _, ino = split_entry(flat[2 * k])
  if not ino then return { 0, r, flat } end
  order[k] = { ino, k }
end
table.sort(order, function(a, b) return a[1] < b[1] end)
local sorted, inos = {}, {}
for k = 1, n do
  local at = order[k][2]
  sorted[2 * k - 1], sorted[2 * k] = flat[2 * at - 1], flat[2 * at]
  inos[k] = order[k][1]
end
local records = {}
local xattrs = read_records(inos, ARGV[6] == '1', records)
return { 0, r, sorted, records, xattrs }
