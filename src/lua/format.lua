-- ARGV: P, sid, version, block_size, codec, uuid, created, root_record, acl (on or off)
if redis.call('EXISTS', META_KEY) == 1 then return { E.EXIST } end
redis.call('HSET', META_KEY, 'version', ARGV[3], 'block_size', ARGV[4], 'codec', ARGV[5],
  'uuid', ARGV[6], 'created', ARGV[7], 'acl', ARGV[9], 'state', 'ready')
-- The counters start counting on this server (see reserve.lua). Block ids start where the
-- clock puts them instead (the first reservation moves the counter there, as after a
-- failover), past every id an earlier filesystem under this prefix can have handed out: a
-- mount of one that Redis lost may still send a block under an id it had reserved before it
-- notices, and that must not be a block of this one.
local server = this_server()
redis.call('SET', NEXT_INODE_KEY, 1)
redis.call('SET', NEXT_BLOCK_KEY, 0)
redis.call('SET', NEXT_SESSION_KEY, 0)
redis.call('HSET', ISSUERS_KEY, 'inode', server, 'session', server)
put(1, ARGV[8])
save()
redis.call('HSET', STAT_KEY, 'inodes', 1, 'blocks', 0, 'stored_bytes', 0, 'file_bytes', 0)
return { 0 }
