-- ARGV: P, sid, src_parent, src_name, dst_parent, dst_name, flags (1 noreplace, 2 exchange), ts
--   ->  {0, orphaned_ino or 0, moved_ino, replaced_ino or 0}
local sp, dp = tonumber(ARGV[3]), tonumber(ARGV[5])
local sname, dname, flags, ts = ARGV[4], ARGV[6], tonumber(ARGV[7]), ARGV[8]
local _, err = live_dir(sp)
if err then return { err } end
_, err = live_dir(dp)
if err then return { err } end
local sdir, ddir = dir_key(sp), dir_key(dp)
local se = redis.call('HGET', sdir, sname)
if not se then return { E.NOENT } end
local skind, sino = split_entry(se)
local de = redis.call('HGET', ddir, dname)
local dkind, dino
if de then dkind, dino = split_entry(de) end

-- Is directory `dir` the directory `ancestor` or below it?
local function inside(dir, ancestor)
  local cur = dir
  for _ = 1, 100000 do
    if cur == ancestor then return true end
    if cur == 1 then return false end
    local r = rec(cur)
    if not r then return false end
    cur = parent_of(r)
  end
  return true
end
local function add_links(ino, n) update(ino, function(r) return set_nlink(r, nlink(r) + n) end) end
local function stamp_parents()
  update(sp, function(r) return touch_mc(r, ts) end)
  update(dp, function(r) return touch_mc(r, ts) end)
end

if flags == 2 then
  if not de then return { E.NOENT } end
  if sino == dino then return { 0, 0, sino, dino } end
  if sp ~= dp then
    if skind == 'd' and inside(dp, sino) then return { E.INVAL } end
    if dkind == 'd' and inside(sp, dino) then return { E.INVAL } end
  end
  redis.call('HSET', sdir, sname, de)
  redis.call('HSET', ddir, dname, se)
  entry_changed(sp, sname)
  entry_changed(dp, dname)
  if sp ~= dp then
    if skind == 'd' then
      update(sino, function(r) return set_parent(r, dp) end)
      add_links(sp, -1); add_links(dp, 1)
    end
    if dkind == 'd' then
      update(dino, function(r) return set_parent(r, sp) end)
      add_links(dp, -1); add_links(sp, 1)
    end
  end
  update(sino, function(r) return touch_c(r, ts) end)
  update(dino, function(r) return touch_c(r, ts) end)
  stamp_parents()
  save()
  return { 0, 0, sino, dino }
end

if de then
  if flags == 1 then return { E.EXIST } end
  if dino == sino then return { 0, 0, sino, dino } end
  if skind == 'd' then
    if dkind ~= 'd' then return { E.NOTDIR } end
    unleased(dino)
    if redis.call('EXISTS', dir_key(dino)) == 1 then return { E.NOTEMPTY } end
  elseif dkind == 'd' then
    return { E.ISDIR }
  end
end
if skind == 'd' and sp ~= dp and inside(dp, sino) then return { E.INVAL } end
redis.call('HDEL', sdir, sname)
redis.call('HSET', ddir, dname, se)
entry_changed(sp, sname)
entry_changed(dp, dname)
local orphaned = 0
if de then
  update(dino, function(r)
    local left = 0
    if dkind ~= 'd' then left = nlink(r) - 1 end
    return touch_c(set_nlink(r, left), ts)
  end)
  local victim = rec(dino)
  if victim and nlink(victim) == 0 then orphan(dino); orphaned = dino end
  if dkind == 'd' then add_links(dp, -1) end
end
if skind == 'd' and sp ~= dp then
  update(sino, function(r) return set_parent(r, dp) end)
  add_links(sp, -1); add_links(dp, 1)
end
update(sino, function(r) return touch_c(r, ts) end)
stamp_parents()
save()
return { 0, orphaned, sino, dino or 0 }
