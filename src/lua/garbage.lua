-- Deleting queued blocks (see queue_garbage in the prelude), in three steps so that their bytes
-- leave `stored_bytes` exactly once whoever deletes them and wherever one stops: the caller
-- reads a batch of the queue and the blocks' lengths (on their nodes), this script weighs them
-- (takes a counted block's length from `stored_bytes`, marking it 'w'), the caller deletes the
-- blocks and then their entries. A block weighed already, or gone from the queue, is skipped.
-- ARGV: P, sid, then pairs (block id, its length in Redis)  ->  {0}
for i = 3, #ARGV, 2 do
  local state = redis.call('HGET', GARBAGE_KEY, ARGV[i])
  if state == 'c' then stat_add('stored_bytes', -tonumber(ARGV[i + 1])) end
  if state == 'c' or state == 'u' then redis.call('HSET', GARBAGE_KEY, ARGV[i], 'w') end
end
flush_stats()
return { 0 }
