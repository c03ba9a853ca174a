complete -c redisfs-fsck -l prefix -d 'Prefix of the filesystem to check' -r
complete -c redisfs-fsck -l session-timeout -d 'A mount silent for this long is dead (its session is expired on repair)' -r
complete -c redisfs-fsck -l redis -d 'Redis URL: redis://[user[:password]@]host[:port][/db], rediss:// for TLS, redis://host:port,host:port.../0 for nodes of a Redis Cluster (any one node\'s URL finds the cluster too), redis+unix:///path/to/socket?db=N, or redis+sentinel://[user[:password]@]host[:port][,host[:port]...]/MASTER[/db] for the primary that sentinels name (rediss+sentinel:// for TLS; sentinels\' password from REDISFS_SENTINEL_PASSWORD). Overrides --host/--port/--db' -r
complete -c redisfs-fsck -l host -l redis-host -d 'Redis host [default: 127.0.0.1]' -r
complete -c redisfs-fsck -l port -l redis-port -d 'Redis port [default: 6379]' -r
complete -c redisfs-fsck -l db -l redis-db -d 'Redis database number [default: 0]' -r
complete -c redisfs-fsck -l tls-ca-cert -d 'PEM file of the certificate authorities Redis\'s certificate must chain to (a private CA) [default: the system\'s CA store]. Implies TLS' -r -F
complete -c redisfs-fsck -l tls-cert -d 'PEM file of this client\'s certificate, for a Redis that asks for one (`tls-auth-clients`); needs --tls-key. Implies TLS' -r -F
complete -c redisfs-fsck -l tls-key -d 'PEM file of the private key of --tls-cert' -r -F
complete -c redisfs-fsck -l io-timeout -d 'How long to wait for a lost Redis to come back before giving up' -r
complete -c redisfs-fsck -l repair -d 'Fix what is found (refused while the filesystem is mounted, unless --force)'
complete -c redisfs-fsck -l force -d 'Repair even though mounts are live (they may be changing what is being fixed)'
complete -c redisfs-fsck -l verify-data -d 'Also read and decode every block'
complete -c redisfs-fsck -l json -d 'Print a machine-readable summary (JSON) on stdout instead of text'
complete -c redisfs-fsck -s q -l quiet -d 'Print nothing but errors (no progress, no summary)'
complete -c redisfs-fsck -s h -l help -d 'Print help (see more with \'--help\')'
complete -c redisfs-fsck -s V -l version -d 'Print version'
