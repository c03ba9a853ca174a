-- Reserves `count` numbers of a counter for the caller: inode numbers for deferred creates,
-- block ids, a session id (see `issue` in the prelude).
-- ARGV: P, sid, counter ('inode', 'block' or 'session'), count  ->  {0, the last number}
if not COUNTERS[ARGV[3]] then return { E.INVAL } end
return { 0, issue(ARGV[3], tonumber(ARGV[4])) }
