complete -c redisfs-restore -l prefix -d 'Prefix to restore into; must hold no keys' -r
complete -c redisfs-restore -l from-dir -d 'Import the local directory tree DIR instead' -r -F
complete -c redisfs-restore -l compression -d 'Compression of the restored blocks [default: the dump\'s; lz4 for --from-dir]' -r -f -a "none\t'Store bytes as they are'
lz4\t'LZ4: fastest, about 2x on text'
zstd\t'Zstandard level 1: fast, better ratio than LZ4'
zlib\t'zlib level 6: the slowest, kept for compatibility'"
complete -c redisfs-restore -l block-size -d 'Block size (Redis value size) of a filesystem imported with --from-dir' -r
complete -c redisfs-restore -l acl -d 'Whether a filesystem imported with --from-dir keeps POSIX ACLs' -r -f -a "on\t''
off\t''"
complete -c redisfs-restore -l redis -d 'Redis URL: redis://[user[:password]@]host[:port][/db], rediss:// for TLS, redis://host:port,host:port.../0 for nodes of a Redis Cluster (any one node\'s URL finds the cluster too), redis+unix:///path/to/socket?db=N, or redis+sentinel://[user[:password]@]host[:port][,host[:port]...]/MASTER[/db] for the primary that sentinels name (rediss+sentinel:// for TLS; sentinels\' password from REDISFS_SENTINEL_PASSWORD). Overrides --host/--port/--db' -r
complete -c redisfs-restore -l host -l redis-host -d 'Redis host [default: 127.0.0.1]' -r
complete -c redisfs-restore -l port -l redis-port -d 'Redis port [default: 6379]' -r
complete -c redisfs-restore -l db -l redis-db -d 'Redis database number [default: 0]' -r
complete -c redisfs-restore -l tls-ca-cert -d 'PEM file of the certificate authorities Redis\'s certificate must chain to (a private CA) [default: the system\'s CA store]. Implies TLS' -r -F
complete -c redisfs-restore -l tls-cert -d 'PEM file of this client\'s certificate, for a Redis that asks for one (`tls-auth-clients`); needs --tls-key. Implies TLS' -r -F
complete -c redisfs-restore -l tls-key -d 'PEM file of the private key of --tls-cert' -r -F
complete -c redisfs-restore -l io-timeout -d 'How long to wait for a lost Redis to come back before giving up' -r
complete -c redisfs-restore -l json -d 'Print a machine-readable summary (JSON) on stdout instead of text'
complete -c redisfs-restore -s q -l quiet -d 'Print nothing but errors (no progress, no summary)'
complete -c redisfs-restore -s h -l help -d 'Print help (see more with \'--help\')'
complete -c redisfs-restore -s V -l version -d 'Print version'
