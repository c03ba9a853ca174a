-- Reserves `count` numbers of a counter for the caller: inode numbers for deferred creates,
-- block ids, a session id (see `issue` in the prelude).
-- ARGV: P, sid, counter ('inode', 'block' or 'session'), count  ->  {0, the last number}
local counter = ({ inode = NEXT_INODE_KEY, block = NEXT_BLOCK_KEY, session = NEXT_SESSION_KEY })[ARGV[3]]
return { 0, issue(counter, tonumber(ARGV[4])) }
