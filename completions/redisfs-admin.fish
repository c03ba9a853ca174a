# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_redisfs_admin_global_optspecs
    string join \n h/help V/version
end

function __fish_redisfs_admin_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_redisfs_admin_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_redisfs_admin_using_subcommand
    set -l cmd (__fish_redisfs_admin_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c redisfs-admin -n "__fish_redisfs_admin_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c redisfs-admin -n "__fish_redisfs_admin_needs_command" -s V -l version -d 'Print version'
complete -c redisfs-admin -n "__fish_redisfs_admin_needs_command" -f -a "list" -d 'The filesystems on this Redis, with their files and blocks'
complete -c redisfs-admin -n "__fish_redisfs_admin_needs_command" -f -a "status" -d 'A filesystem\'s settings, usage, and every mount of it (host, pid, mount point, version, start, last heartbeat, metrics address, leases, locks and held files)'
complete -c redisfs-admin -n "__fish_redisfs_admin_needs_command" -f -a "config" -d 'Change a setting of an existing filesystem (mounts started afterwards use it)'
complete -c redisfs-admin -n "__fish_redisfs_admin_needs_command" -f -a "stats" -d 'A live view of a mount on this machine: requests, bytes and Redis round trips per second, from the metrics it serves'
complete -c redisfs-admin -n "__fish_redisfs_admin_needs_command" -f -a "upgrade" -d 'Convert a filesystem made before format 2 (metadata keys `<prefix>:…`) to the current key layout (`{<prefix>}:…`, one hash slot on a Redis Cluster); blocks keep their names. Refused while it is mounted; safe to run again after an interruption'
complete -c redisfs-admin -n "__fish_redisfs_admin_needs_command" -f -a "destroy" -d 'Delete every key of a filesystem (refused while it is mounted)'
complete -c redisfs-admin -n "__fish_redisfs_admin_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand list" -l redis -d 'Redis URL: redis://[user[:password]@]host[:port][/db], rediss:// for TLS, redis://host:port,host:port.../0 for nodes of a Redis Cluster (any one node\'s URL finds the cluster too), redis+unix:///path/to/socket?db=N, or redis+sentinel://[user[:password]@]host[:port][,host[:port]...]/MASTER[/db] for the primary that sentinels name (rediss+sentinel:// for TLS; sentinels\' password from REDISFS_SENTINEL_PASSWORD). Overrides --host/--port/--db' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand list" -l host -l redis-host -d 'Redis host [default: 127.0.0.1]' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand list" -l port -l redis-port -d 'Redis port [default: 6379]' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand list" -l db -l redis-db -d 'Redis database number [default: 0]' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand list" -l tls-ca-cert -d 'PEM file of the certificate authorities Redis\'s certificate must chain to (a private CA) [default: the system\'s CA store]. Implies TLS' -r -F
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand list" -l tls-cert -d 'PEM file of this client\'s certificate, for a Redis that asks for one (`tls-auth-clients`); needs --tls-key. Implies TLS' -r -F
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand list" -l tls-key -d 'PEM file of the private key of --tls-cert' -r -F
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand list" -l io-timeout -d 'How long to wait for a lost Redis to come back before giving up' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand list" -l json -d 'Print a machine-readable summary (JSON) on stdout instead of text'
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand list" -s q -l quiet -d 'Print nothing but errors (no progress, no summary)'
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand list" -s h -l help -d 'Print help'
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand status" -l redis -d 'Redis URL: redis://[user[:password]@]host[:port][/db], rediss:// for TLS, redis://host:port,host:port.../0 for nodes of a Redis Cluster (any one node\'s URL finds the cluster too), redis+unix:///path/to/socket?db=N, or redis+sentinel://[user[:password]@]host[:port][,host[:port]...]/MASTER[/db] for the primary that sentinels name (rediss+sentinel:// for TLS; sentinels\' password from REDISFS_SENTINEL_PASSWORD). Overrides --host/--port/--db' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand status" -l host -l redis-host -d 'Redis host [default: 127.0.0.1]' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand status" -l port -l redis-port -d 'Redis port [default: 6379]' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand status" -l db -l redis-db -d 'Redis database number [default: 0]' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand status" -l tls-ca-cert -d 'PEM file of the certificate authorities Redis\'s certificate must chain to (a private CA) [default: the system\'s CA store]. Implies TLS' -r -F
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand status" -l tls-cert -d 'PEM file of this client\'s certificate, for a Redis that asks for one (`tls-auth-clients`); needs --tls-key. Implies TLS' -r -F
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand status" -l tls-key -d 'PEM file of the private key of --tls-cert' -r -F
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand status" -l io-timeout -d 'How long to wait for a lost Redis to come back before giving up' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand status" -l prefix -d 'Prefix of the filesystem' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand status" -l session-timeout -d 'A mount silent for this long counts as dead' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand status" -l json -d 'Print a machine-readable summary (JSON) on stdout instead of text'
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand status" -s q -l quiet -d 'Print nothing but errors (no progress, no summary)'
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand status" -s h -l help -d 'Print help'
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand config" -l redis -d 'Redis URL: redis://[user[:password]@]host[:port][/db], rediss:// for TLS, redis://host:port,host:port.../0 for nodes of a Redis Cluster (any one node\'s URL finds the cluster too), redis+unix:///path/to/socket?db=N, or redis+sentinel://[user[:password]@]host[:port][,host[:port]...]/MASTER[/db] for the primary that sentinels name (rediss+sentinel:// for TLS; sentinels\' password from REDISFS_SENTINEL_PASSWORD). Overrides --host/--port/--db' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand config" -l host -l redis-host -d 'Redis host [default: 127.0.0.1]' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand config" -l port -l redis-port -d 'Redis port [default: 6379]' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand config" -l db -l redis-db -d 'Redis database number [default: 0]' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand config" -l tls-ca-cert -d 'PEM file of the certificate authorities Redis\'s certificate must chain to (a private CA) [default: the system\'s CA store]. Implies TLS' -r -F
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand config" -l tls-cert -d 'PEM file of this client\'s certificate, for a Redis that asks for one (`tls-auth-clients`); needs --tls-key. Implies TLS' -r -F
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand config" -l tls-key -d 'PEM file of the private key of --tls-cert' -r -F
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand config" -l io-timeout -d 'How long to wait for a lost Redis to come back before giving up' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand config" -l prefix -d 'Prefix of the filesystem' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand config" -l compression -d 'Compression of blocks written from now on (none, lz4, zstd, zlib); blocks already stored keep theirs and stay readable' -r -f -a "none\t'Store bytes as they are'
lz4\t'LZ4: fastest, about 2x on text'
zstd\t'Zstandard level 1: fast, better ratio than LZ4'
zlib\t'zlib level 6: the slowest, kept for compatibility'"
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand config" -l block-size -d 'Refused: every block map is cut at the block size the filesystem was made with' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand config" -l acl -d 'Refused: files\' ACLs would start or stop being enforced without their owners\' knowledge; dump and restore into a filesystem made with --acl instead' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand config" -l json -d 'Print a machine-readable summary (JSON) on stdout instead of text'
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand config" -s q -l quiet -d 'Print nothing but errors (no progress, no summary)'
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand config" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand stats" -l redis -d 'Redis URL: redis://[user[:password]@]host[:port][/db], rediss:// for TLS, redis://host:port,host:port.../0 for nodes of a Redis Cluster (any one node\'s URL finds the cluster too), redis+unix:///path/to/socket?db=N, or redis+sentinel://[user[:password]@]host[:port][,host[:port]...]/MASTER[/db] for the primary that sentinels name (rediss+sentinel:// for TLS; sentinels\' password from REDISFS_SENTINEL_PASSWORD). Overrides --host/--port/--db' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand stats" -l host -l redis-host -d 'Redis host [default: 127.0.0.1]' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand stats" -l port -l redis-port -d 'Redis port [default: 6379]' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand stats" -l db -l redis-db -d 'Redis database number [default: 0]' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand stats" -l tls-ca-cert -d 'PEM file of the certificate authorities Redis\'s certificate must chain to (a private CA) [default: the system\'s CA store]. Implies TLS' -r -F
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand stats" -l tls-cert -d 'PEM file of this client\'s certificate, for a Redis that asks for one (`tls-auth-clients`); needs --tls-key. Implies TLS' -r -F
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand stats" -l tls-key -d 'PEM file of the private key of --tls-cert' -r -F
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand stats" -l io-timeout -d 'How long to wait for a lost Redis to come back before giving up' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand stats" -l prefix -d 'Prefix of the filesystem' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand stats" -l interval -d 'Seconds between lines' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand stats" -l count -d 'Stop after this many lines [default: until interrupted]' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand stats" -l json -d 'Print a machine-readable summary (JSON) on stdout instead of text'
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand stats" -s q -l quiet -d 'Print nothing but errors (no progress, no summary)'
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand stats" -s h -l help -d 'Print help'
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand upgrade" -l redis -d 'Redis URL: redis://[user[:password]@]host[:port][/db], rediss:// for TLS, redis://host:port,host:port.../0 for nodes of a Redis Cluster (any one node\'s URL finds the cluster too), redis+unix:///path/to/socket?db=N, or redis+sentinel://[user[:password]@]host[:port][,host[:port]...]/MASTER[/db] for the primary that sentinels name (rediss+sentinel:// for TLS; sentinels\' password from REDISFS_SENTINEL_PASSWORD). Overrides --host/--port/--db' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand upgrade" -l host -l redis-host -d 'Redis host [default: 127.0.0.1]' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand upgrade" -l port -l redis-port -d 'Redis port [default: 6379]' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand upgrade" -l db -l redis-db -d 'Redis database number [default: 0]' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand upgrade" -l tls-ca-cert -d 'PEM file of the certificate authorities Redis\'s certificate must chain to (a private CA) [default: the system\'s CA store]. Implies TLS' -r -F
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand upgrade" -l tls-cert -d 'PEM file of this client\'s certificate, for a Redis that asks for one (`tls-auth-clients`); needs --tls-key. Implies TLS' -r -F
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand upgrade" -l tls-key -d 'PEM file of the private key of --tls-cert' -r -F
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand upgrade" -l io-timeout -d 'How long to wait for a lost Redis to come back before giving up' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand upgrade" -l prefix -d 'Prefix of the filesystem' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand upgrade" -l session-timeout -d 'A mount silent for this long counts as dead' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand upgrade" -l json -d 'Print a machine-readable summary (JSON) on stdout instead of text'
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand upgrade" -s q -l quiet -d 'Print nothing but errors (no progress, no summary)'
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand upgrade" -s h -l help -d 'Print help'
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand destroy" -l redis -d 'Redis URL: redis://[user[:password]@]host[:port][/db], rediss:// for TLS, redis://host:port,host:port.../0 for nodes of a Redis Cluster (any one node\'s URL finds the cluster too), redis+unix:///path/to/socket?db=N, or redis+sentinel://[user[:password]@]host[:port][,host[:port]...]/MASTER[/db] for the primary that sentinels name (rediss+sentinel:// for TLS; sentinels\' password from REDISFS_SENTINEL_PASSWORD). Overrides --host/--port/--db' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand destroy" -l host -l redis-host -d 'Redis host [default: 127.0.0.1]' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand destroy" -l port -l redis-port -d 'Redis port [default: 6379]' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand destroy" -l db -l redis-db -d 'Redis database number [default: 0]' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand destroy" -l tls-ca-cert -d 'PEM file of the certificate authorities Redis\'s certificate must chain to (a private CA) [default: the system\'s CA store]. Implies TLS' -r -F
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand destroy" -l tls-cert -d 'PEM file of this client\'s certificate, for a Redis that asks for one (`tls-auth-clients`); needs --tls-key. Implies TLS' -r -F
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand destroy" -l tls-key -d 'PEM file of the private key of --tls-cert' -r -F
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand destroy" -l io-timeout -d 'How long to wait for a lost Redis to come back before giving up' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand destroy" -l prefix -d 'Prefix of the filesystem' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand destroy" -l session-timeout -d 'A mount silent for this long counts as dead' -r
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand destroy" -l json -d 'Print a machine-readable summary (JSON) on stdout instead of text'
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand destroy" -s q -l quiet -d 'Print nothing but errors (no progress, no summary)'
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand destroy" -l yes -d 'Confirm: the filesystem and all its files are gone for good'
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand destroy" -s h -l help -d 'Print help'
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand help; and not __fish_seen_subcommand_from list status config stats upgrade destroy help" -f -a "list" -d 'The filesystems on this Redis, with their files and blocks'
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand help; and not __fish_seen_subcommand_from list status config stats upgrade destroy help" -f -a "status" -d 'A filesystem\'s settings, usage, and every mount of it (host, pid, mount point, version, start, last heartbeat, metrics address, leases, locks and held files)'
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand help; and not __fish_seen_subcommand_from list status config stats upgrade destroy help" -f -a "config" -d 'Change a setting of an existing filesystem (mounts started afterwards use it)'
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand help; and not __fish_seen_subcommand_from list status config stats upgrade destroy help" -f -a "stats" -d 'A live view of a mount on this machine: requests, bytes and Redis round trips per second, from the metrics it serves'
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand help; and not __fish_seen_subcommand_from list status config stats upgrade destroy help" -f -a "upgrade" -d 'Convert a filesystem made before format 2 (metadata keys `<prefix>:…`) to the current key layout (`{<prefix>}:…`, one hash slot on a Redis Cluster); blocks keep their names. Refused while it is mounted; safe to run again after an interruption'
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand help; and not __fish_seen_subcommand_from list status config stats upgrade destroy help" -f -a "destroy" -d 'Delete every key of a filesystem (refused while it is mounted)'
complete -c redisfs-admin -n "__fish_redisfs_admin_using_subcommand help; and not __fish_seen_subcommand_from list status config stats upgrade destroy help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
