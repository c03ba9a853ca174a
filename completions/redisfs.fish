complete -c redisfs -l mount -d 'Directory to mount on (alternative to the positional argument)' -r -F
complete -c redisfs -l redis -d 'Redis URL: redis://[user[:password]@]host[:port][/db], rediss:// for TLS, redis://host:port,host:port.../0 for nodes of a Redis Cluster (any one node\'s URL finds the cluster too), redis+unix:///path/to/socket?db=N, or redis+sentinel://[user[:password]@]host[:port][,host[:port]...]/MASTER[/db] for the primary that sentinels name (rediss+sentinel:// for TLS; sentinels\' password from REDISFS_SENTINEL_PASSWORD). Overrides --host/--port/--db' -r
complete -c redisfs -l host -l redis-host -d 'Redis host [default: 127.0.0.1]' -r
complete -c redisfs -l port -l redis-port -d 'Redis port [default: 6379]' -r
complete -c redisfs -l db -l redis-db -d 'Redis database number [default: 0]' -r
complete -c redisfs -l tls-ca-cert -d 'PEM file of the certificate authorities Redis\'s certificate must chain to (a private CA) [default: the system\'s CA store]. Implies TLS' -r -F
complete -c redisfs -l tls-cert -d 'PEM file of this client\'s certificate, for a Redis that asks for one (`tls-auth-clients`); needs --tls-key. Implies TLS' -r -F
complete -c redisfs -l tls-key -d 'PEM file of the private key of --tls-cert' -r -F
complete -c redisfs -l prefix -d 'Key prefix of the filesystem (no \':\'); many filesystems can share one Redis' -r
complete -c redisfs -l block-size -d 'Block size of a new filesystem: the size of one Redis value; a block holds 64 bytes less than this so that a value fits its allocator size class exactly [default: 64K]. An existing filesystem keeps its own (a different one is warned about)' -r
complete -c redisfs -l compression -d 'Compression of a new filesystem\'s blocks: none, lz4, zstd or zlib [default: lz4]. An existing filesystem keeps its own (see redisfs-admin config)' -r -f -a "none\t'Store bytes as they are'
lz4\t'LZ4: fastest, about 2x on text'
zstd\t'Zstandard level 1: fast, better ratio than LZ4'
zlib\t'zlib level 6: the slowest, kept for compatibility'"
complete -c redisfs -l acl -d 'Whether a new filesystem keeps and enforces POSIX ACLs [default: on]. Without them `ls -l` and friends cost a round trip per file less (they ask every file for its ACL)' -r -f -a "on\t''
off\t''"
complete -c redisfs -s o -d 'Mount options, comma separated: any option above as NAME=VALUE or NAME, and the kernel\'s (allow_other, default_permissions, ro, relatime (the default), strictatime, noatime, nosuid, nodev, noexec, …)' -r
complete -c redisfs -l log-file -d 'Write logs to FILE instead of stderr [default with --daemon: /var/log/redisfs/PREFIX.log as root, else PREFIX.log in the state directory (see --state-dir)]' -r -F
complete -c redisfs -l io-timeout -d 'How long an operation waits for a lost Redis to come back before failing with EIO' -r
complete -c redisfs -l session-timeout -d 'A mount silent for this long is dead: its locks are released, the unlinked files it held open are deleted and the directories leased to it are given back' -r
complete -c redisfs -l cache-size -d 'Memory for cached blocks' -r
complete -c redisfs -l write-buffer -d 'Memory for written bytes not yet stored, across all files. Whole blocks are stored as soon as they fill; partial ones wait (up to 5 seconds, or until close or fsync), so that random writes into one block are stored once' -r
complete -c redisfs -l metrics -d 'Serve Prometheus metrics on ADDR [default: 127.0.0.1:9567, or the next free port]' -r
complete -c redisfs -l state-dir -d 'Directory for the private redis-server\'s data [default: /var/lib/redisfs as root, else $XDG_STATE_HOME/redisfs]' -r -F
complete -c redisfs -l read-only -l ro -d 'Mount read-only: every write fails with EROFS'
complete -c redisfs -s d -l daemon -d 'Return once the filesystem is mounted and keep serving it in the background (logging to --log-file)'
complete -c redisfs -l debug -d 'Log every operation (tracing at debug level)'
complete -c redisfs -l writeback -d 'Let the kernel cache writes and file sizes (faster small writes). Only for a filesystem mounted once: with it the kernel ignores size and time changes made by other mounts to files it caches'
complete -c redisfs -l no-delegation -d 'Have every create and removal in Redis before it is answered. By default a directory this mount creates is leased to it until another mount looks into it, and creates and removals in it are answered at once and sent within 20 ms (a crash loses those 20 ms, as a local disk loses what it had not written)'
complete -c redisfs -l force -d 'Mount even if Redis may evict keys (maxmemory-policy allkeys-*), which destroys files'
complete -c redisfs -l no-metrics -d 'Serve no metrics'
complete -c redisfs -s h -l help -d 'Print help (see more with \'--help\')'
complete -c redisfs -s V -l version -d 'Print version'
