#!/usr/bin/env python3
"""What waiting for a replica costs: `fsync` and `close` with Redis alone, then with a replica.

Usage (as root): bench/replica-wait.py [REDISFS_BINARY] (default target/release/redisfs).
Measures appends with `fsync` from one thread and from eight at once, and small files closed.
Runs each setting three times, alternating, each on fresh redis-server processes and a fresh
mount, and prints the rates. The replica is used only once its primary reports it `online`:
a replica still syncing answers WAIT many times slower.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

BINARY = sys.argv[1] if len(sys.argv) > 1 else "target/release/redisfs"
FSYNCS, CLOSES, REPETITIONS = 2000, 1000, 3
THREADS = 8


def redis_server(port, directory, extra=()):
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--dir", directory, *extra],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.3)
    return server


def replica_online(port):
    info = subprocess.run(["redis-cli", "-p", str(port), "INFO", "replication"], capture_output=True)
    return b"state=online" in info.stdout


def measure(name, with_replica, port):
    work = tempfile.mkdtemp(prefix="replica-wait-")
    servers = [redis_server(port, work)]
    if with_replica:
        replica_dir = os.path.join(work, "replica")
        os.mkdir(replica_dir)
        servers.append(redis_server(port + 1000, replica_dir, ("--replicaof", "127.0.0.1", str(port))))
        while not replica_online(port):
            time.sleep(0.1)
    mount_point = os.path.join(work, "mnt")
    os.mkdir(mount_point)
    subprocess.check_call(
        [BINARY, "--port", str(port), "--prefix", "bench", "--no-metrics", "-d", mount_point],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        block = os.urandom(4096)
        journal = os.open(f"{mount_point}/journal", os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
        started = time.time()
        for _ in range(FSYNCS):
            os.write(journal, block)
            os.fsync(journal)
        fsyncs = FSYNCS / (time.time() - started)
        os.close(journal)

        # THREADS appenders at once, each on its own file: concurrent fsyncs share their waits.
        def append(n):
            fd = os.open(f"{mount_point}/journal{n}", os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
            for _ in range(FSYNCS // THREADS):
                os.write(fd, block)
                os.fsync(fd)
            os.close(fd)

        appenders = [threading.Thread(target=append, args=(n,)) for n in range(THREADS)]
        started = time.time()
        for t in appenders:
            t.start()
        for t in appenders:
            t.join()
        parallel = FSYNCS // THREADS * THREADS / (time.time() - started)
        # In the root directory: files made in a directory leased to the mount close without
        # waiting (see the README's consistency model).
        started = time.time()
        for i in range(CLOSES):
            with open(f"{mount_point}/f{i}", "wb") as f:
                f.write(block)
        closes = CLOSES / (time.time() - started)
    finally:
        subprocess.call(["umount", mount_point])
        time.sleep(0.5)
        for server in servers:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"{name:8} 4 KiB append + fsync {fsyncs:7.0f}/s   {THREADS} threads at once {parallel:7.0f}/s"
        f"   create + 4 KiB + close {closes:7.0f}/s",
        flush=True,
    )


port = 17600
for repetition in range(REPETITIONS):
    settings = [("alone", False), ("replica", True)]
    for name, with_replica in settings if repetition % 2 == 0 else reversed(settings):
        port += 1
        measure(name, with_replica, port)
