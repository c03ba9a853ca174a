-- ARGV: P, version, block_size, codec, uuid, created, root_record
if redis.call('EXISTS', P .. 'meta') == 1 then return { E.EXIST } end
redis.call('HSET', P .. 'meta', 'version', ARGV[2], 'block_size', ARGV[3], 'codec', ARGV[4],
  'uuid', ARGV[5], 'created', ARGV[6], 'state', 'ready')
redis.call('SET', P .. 'next:ino', 1)
put(1, ARGV[7])
save()
redis.call('HSET', P .. 'stat', 'inodes', 1, 'blocks', 0)
return { 0 }
